"""`lr_multipliers`: per-parameter LR multipliers, and the 1-channel stem that trains as the 3-copy one with x3."""

import json

import pytest
import torch
from conftest import DictDataset, SmallCNN, digits_tensors

from hf_advft import AdvTrainer, AdvTrainingArguments
from hf_advft.lr_multipliers import CleanTrainingArguments, apply_lr_multipliers, parse_lr_multipliers


pytestmark = pytest.mark.usefixtures("one_thread")

STEM = r"^features\.0\.weight$"


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=32, num_train_epochs=1, max_steps=6,
                learning_rate=1e-2, lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0,
                adv_epsilon=0.1, adv_step_size=0.05, adv_steps=2, adv_eval_steps=0, logging_steps=1,
                save_strategy="no", report_to="none", use_cpu=True, seed=0, disable_tqdm=True)
    base.update(kw)
    return AdvTrainingArguments(**base)


class GrayRepeated(torch.nn.Module):
    """A 3-channel network fed a gray image repeated into its three channels (the AFT study's `GrayLite0`)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x.repeat(1, 3, 1, 1))


def _gray_pair():
    """The same function twice: a 3-channel SmallCNN fed gray repeated, and a 1-channel one with its stem summed."""
    torch.manual_seed(0)
    three = SmallCNN(channels=3)
    one = SmallCNN(channels=1)
    state = dict(three.state_dict())
    state["features.0.weight"] = state["features.0.weight"].sum(1, keepdim=True)
    one.load_state_dict(state)
    return GrayRepeated(three), one


def _train(tmp_path, model, name, **kw):
    x, y = digits_tensors(16, channels=1, n=256)
    trainer = AdvTrainer(model=model, args=_args(tmp_path / name, **kw), train_dataset=DictDataset(x, y))
    trainer.train()
    return trainer


def test_x3_on_a_1_channel_stem_trains_exactly_as_three_copies(tmp_path):
    repeated, one = _gray_pair()
    x, _ = digits_tensors(16, channels=1, n=64)
    with torch.no_grad():
        torch.testing.assert_close(one(x), repeated(x), atol=1e-5, rtol=0)  # the same function before training
    _train(tmp_path, repeated, "three")
    plain = _gray_pair()[1]
    _train(tmp_path, plain, "plain")
    trainer = _train(tmp_path, one, "x3", lr_multipliers=json.dumps({STEM: 3}))
    # AdvTrainer's own optimizer carries the multiplier: the stem's group at 3x the LR, nothing else moved.
    groups = trainer.optimizer.param_groups
    stem = one.features[0].weight
    assert [g["lr"] for g in groups if any(p is stem for p in g["params"])] == [pytest.approx(3e-2)]
    assert sum(len(g["params"]) for g in groups) == len(list(one.parameters()))
    summed = repeated.net.features[0].weight.sum(1, keepdim=True)
    torch.testing.assert_close(stem, summed, atol=2e-5, rtol=0)
    torch.testing.assert_close(one.head.weight, repeated.net.head.weight, atol=2e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(one(x), repeated(x), atol=1e-4, rtol=0)
        # Without the multiplier the 1-channel stem moves a third as far: the check above can fail.
        assert (plain.features[0].weight - summed).abs().max() > 20 * (stem - summed).abs().max()
        assert (plain(x) - repeated(x)).abs().max() > 1e-3


def test_groups_keep_their_weight_decay_and_the_schedule_scales_them_alike(tmp_path):
    model = SmallCNN(channels=1)
    args = _args(tmp_path, weight_decay=0.05, lr_scheduler_type="slow_start_fast_decay",
                 lr_multipliers={STEM: 3.0, r"\.bias$": 0.5})
    trainer = AdvTrainer(model=model, args=args, train_dataset=DictDataset(*digits_tensors(16, 1, n=64)))
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    by_param = {id(p): g for g in trainer.optimizer.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    stem, head_w, head_b = (by_param[id(names[n])] for n in ("features.0.weight", "head.weight", "head.bias"))
    assert (stem["initial_lr"], head_w["initial_lr"], head_b["initial_lr"]) == pytest.approx((3e-2, 1e-2, 5e-3))
    assert (stem["weight_decay"], head_w["weight_decay"], head_b["weight_decay"]) == (0.05, 0.05, 0.0)
    for _ in range(4):
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        lrs = {id(g): lr for g, lr in zip(trainer.optimizer.param_groups, trainer.lr_scheduler.get_last_lr())}
        assert lrs[id(stem)] == pytest.approx(3 * lrs[id(head_w)]) and lrs[id(head_b)] == pytest.approx(
            lrs[id(head_w)] / 2)
    assert args.adv_config()["lr_multipliers"] == {STEM: 3.0, r"\.bias$": 0.5}


def test_logged_learning_rate_stays_the_base_lr_when_every_parameter_is_scaled(tmp_path):
    """The Trainer logs the first param group's LR: that group stays (empty) when every parameter leaves it."""
    trainer = _train(tmp_path, SmallCNN(channels=1), "all", lr_multipliers={".": 3.0})
    groups = trainer.optimizer.param_groups
    assert groups[0]["params"] == [] and groups[0]["lr"] == pytest.approx(1e-2)
    assert all(g["lr"] == pytest.approx(3e-2) for g in groups[1:]) and len(groups) > 1
    logged = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    assert logged and logged == pytest.approx([1e-2] * len(logged))


def test_resume_restores_the_split_optimizer(tmp_path):
    kw = dict(lr_multipliers={STEM: 3.0}, save_strategy="steps", save_steps=3)
    _train(tmp_path, SmallCNN(channels=1), "run", **kw)
    checkpoint = tmp_path / "run" / "out" / "checkpoint-3"
    saved = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    assert [g["lr"] for g in saved["param_groups"]][-1] == pytest.approx(3e-2)
    assert json.loads((checkpoint / "adv_config.json").read_text())["lr_multipliers"] == {STEM: 3.0}
    assert "| Peak learning rate | 0.01; x3 for the parameters matching `^features\\.0\\.weight$` |" in (
        checkpoint / "README.md").read_text()
    x, y = digits_tensors(16, channels=1, n=256)
    trainer = AdvTrainer(model=SmallCNN(channels=1), args=_args(tmp_path / "run", **kw), train_dataset=DictDataset(x, y))
    trainer.train(resume_from_checkpoint=str(checkpoint))  # load_state_dict fails on a different group layout
    assert trainer.state.global_step == 6
    assert [g["lr"] for g in trainer.optimizer.param_groups][-1] == pytest.approx(3e-2)


def test_parse_lr_multipliers_accepts_json_and_mappings():
    assert parse_lr_multipliers('{"conv_stem": 3}') == {"conv_stem": 3.0}
    assert parse_lr_multipliers({"a": 1, "b\\.": 0.25}) == {"a": 1.0, "b\\.": 0.25}
    assert parse_lr_multipliers(None) is None and parse_lr_multipliers({}) is None


@pytest.mark.parametrize("value, error, match", [
    ("conv_stem=3", ValueError, "JSON mapping"),
    ([3], TypeError, "must map parameter-name patterns"),
    ({"conv_stem": 0}, ValueError, "positive number"),
    ({"conv_stem": -1.0}, ValueError, "positive number"),
    ({"conv_stem": True}, ValueError, "positive number"),
    ({"conv_stem": float("nan")}, ValueError, "positive number"),
    ({"conv_stem": "3"}, ValueError, "positive number"),
    ({"(": 3}, ValueError, "not a valid regular expression"),
    ({"": 3}, ValueError, "non-empty regular expression"),
])
def test_bad_lr_multipliers_say_what_to_do(tmp_path, value, error, match):
    with pytest.raises(error, match=match):
        _args(tmp_path, lr_multipliers=value)
    with pytest.raises(error, match=match):
        CleanTrainingArguments(output_dir=str(tmp_path), lr_multipliers=value, report_to="none")


def test_a_pattern_that_matches_nothing_is_refused_before_training(tmp_path):
    model = SmallCNN(channels=1)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"\['conv_stem'\] match no parameter.*features\.0\.weight"):
        _train(tmp_path, model, "typo", lr_multipliers={"conv_stem": 3.0})
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # A frozen parameter is not the optimizer's: a pattern that only matches it is refused too.
    frozen = SmallCNN(channels=1)
    frozen.features[0].weight.requires_grad_(False)
    with pytest.raises(ValueError, match="match no parameter the optimizer trains"):
        _train(tmp_path, frozen, "frozen", lr_multipliers={STEM: 3.0})


def test_flattened_fsdp_names_get_the_setting_that_keeps_them():
    """FSDP1 without `use_orig_params` trains one `_flat_param` per wrapped module (torch's FlatParameter name): the
    error says which setting keeps the parameter names, instead of "fix the pattern"."""
    class Flat(torch.nn.Module):  # the names FSDP1 gives: `_fsdp_wrapped_module._flat_param`
        def __init__(self):
            super().__init__()
            self._fsdp_wrapped_module = torch.nn.Module()
            self._fsdp_wrapped_module._flat_param = torch.nn.Parameter(torch.zeros(10))

    flat = Flat()
    with pytest.raises(ValueError, match=r"FSDP flattened the parameters.*fsdp_use_orig_params: true.*FSDP2"):
        apply_lr_multipliers(torch.optim.AdamW(flat.parameters()), flat, {"conv_stem": 3.0})
    model = SmallCNN(channels=1)
    with pytest.raises(ValueError, match="Fix the pattern") as err:
        apply_lr_multipliers(torch.optim.AdamW(model.parameters()), model, {"conv_stem": 3.0})
    assert "FSDP" not in str(err.value)


def test_own_optimizer_with_lr_multipliers_is_refused(tmp_path):
    model = SmallCNN(channels=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="build its param groups"):
        AdvTrainer(model=model, args=_args(tmp_path, lr_multipliers={STEM: 3.0}), optimizers=(optimizer, None),
                   train_dataset=DictDataset(*digits_tensors(16, 1, n=32)))
    model(torch.rand(2, 1, 16, 16)).sum().backward()
    stepped = torch.optim.Adam(model.parameters())
    stepped.step()  # a stepped optimizer has state
    with pytest.raises(ValueError, match="fresh optimizer"):
        apply_lr_multipliers(stepped, model, {STEM: 3.0})
