"""The toolkit options of issue 12: the delayed epsilon schedule, single-step attacks, MART and frozen BatchNorm."""

import pytest
import torch
import torch.nn.functional as F
from conftest import DictDataset, SmallCNN, tiny_timm

from hf_advft import AdvTrainer, AdvTrainingArguments
from hf_advft.attacks import fgsm, n_fgsm
from hf_advft.objectives import compute_objective
from hf_advft.schedules import epsilon_factor


pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 8 / 255


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=16, num_train_epochs=1,
                learning_rate=1e-3, adv_steps=2, adv_eval_steps=0, logging_steps=1, save_strategy="no",
                report_to="none", use_cpu=True, seed=0, disable_tqdm=True)
    base.update(kw)
    return AdvTrainingArguments(**base)


def _logs(trainer):
    return [h for h in trainer.state.log_history if "loss" in h]


# ---------------------------------------------------------------------------------------------------------------------
# 1. Epsilon schedule with a delay
def test_epsilon_factor_with_a_delay():
    linear = [epsilon_factor(s, 20, schedule="linear", warmup_ratio=0.2, delay_ratio=0.25) for s in range(20)]
    assert linear[:5] == [0.0] * 5  # 5 steps at epsilon 0
    assert linear[5:10] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0]) and linear[-1] == 1.0
    constant = [epsilon_factor(s, 20, schedule="constant", warmup_ratio=0.2, delay_ratio=0.25) for s in range(20)]
    assert constant == [0.0] * 5 + [1.0] * 15
    # Without a delay, "linear" is the ramp it always was: eps / ramp at step 0.
    assert [epsilon_factor(s, 20, schedule="linear", warmup_ratio=0.2) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_delayed_epsilon_runs_no_attack_and_counts_none_during_the_delay(tmp_path, digits16, monkeypatch):
    import hf_advft.trainer as trainer_module

    calls = []
    real_pgd = trainer_module.pgd

    def spy(*a, **k):
        calls.append((k["epsilon"], k["step_size"]))
        return real_pgd(*a, **k)

    monkeypatch.setattr(trainer_module, "pgd", spy)
    x, y = digits16
    # 128 examples, batch 16: 8 steps; 2 at epsilon 0, then a 4-step ramp.
    args = _args(tmp_path, adv_epsilon_schedule="linear", adv_epsilon_warmup_ratio=0.5, adv_epsilon_delay_ratio=0.25,
                 adv_step_size=EPS / 4)
    trainer = AdvTrainer(model=SmallCNN(), args=args, train_dataset=DictDataset(x[:128], y[:128]))
    trainer.train()
    logs = _logs(trainer)
    factors = [0, 0, 0.25, 0.5, 0.75, 1, 1, 1]
    assert [h["adv_epsilon"] for h in logs] == pytest.approx([EPS * f for f in factors], abs=1e-6)
    assert len(calls) == 6  # no attack on the 2 delayed steps
    assert all(step == pytest.approx(eps / 4) for eps, step in calls)  # the step size follows epsilon
    assert [h["adv_attack_passes"] for h in logs] == [0, 0] + [16 * 2 * k for k in range(1, 7)]
    assert [h["adv_update_passes"] for h in logs] == [16 * k for k in range(1, 9)]


# ---------------------------------------------------------------------------------------------------------------------
# 2. Single-step attacks
@pytest.fixture
def batch(digits16):
    x, y = digits16
    return x[:64], y[:64]


def test_n_fgsm_is_noise_then_one_unprojected_step(trained_cnn, batch):
    x, y = batch
    x_adv = n_fgsm(trained_cnn, x, y, epsilon=EPS, generator=torch.Generator().manual_seed(0))
    delta = (x_adv - x).abs()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert delta.max() <= 3 * EPS + 1e-6 and delta.max() > 2 * EPS  # not projected back to the eps-ball
    # The same computation by hand: uniform noise in [-2 eps, 2 eps], clamp, one signed step of eps, clamp.
    g = torch.Generator().manual_seed(0)
    noisy = (x + (2 * torch.rand(x.shape, generator=g) - 1) * 2 * EPS).clamp(0, 1).requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(trained_cnn(noisy), y, reduction="sum"), noisy)
    assert torch.allclose(x_adv, (noisy + EPS * grad.sign()).clamp(0, 1), atol=1e-6)
    assert F.cross_entropy(trained_cnn(x_adv), y) > F.cross_entropy(trained_cnn(noisy.detach()), y)


def test_fgsm_rs_steps_one_and_a_quarter_eps_and_projects(trained_cnn, batch):
    x, y = batch
    g = torch.Generator().manual_seed(0)
    x_adv = fgsm(trained_cnn, x, y, epsilon=EPS, generator=g)
    g = torch.Generator().manual_seed(0)
    start = (x + (2 * torch.rand(x.shape, generator=g) - 1) * EPS).clamp(0, 1).requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(trained_cnn(start), y, reduction="sum"), start)
    expected = (x + (start + 1.25 * EPS * grad.sign() - x).clamp(-EPS, EPS)).clamp(0, 1)
    assert torch.allclose(x_adv, expected, atol=1e-6)
    assert (x_adv - x).abs().max() <= EPS + 1e-6


@pytest.mark.parametrize("attack,bound", [("fgsm_rs", EPS), ("n_fgsm", 3 * EPS)])
def test_single_step_attack_in_training_costs_one_pass_per_example(tmp_path, digits16, monkeypatch, attack, bound):
    import hf_advft.trainer as trainer_module

    x, y = digits16
    seen = {"pgd": 0, "deltas": []}
    monkeypatch.setattr(trainer_module, "pgd", lambda *a, **k: seen.__setitem__("pgd", seen["pgd"] + 1))
    trainer = AdvTrainer(model=SmallCNN(), args=_args(tmp_path, adv_attack=attack, adv_steps=10),
                         train_dataset=DictDataset(x[:64], y[:64]))
    real = trainer.craft_adversarial

    def record(model, pixels, labels, **k):
        out = real(model, pixels, labels, **k)
        seen["deltas"].append((out - pixels).abs().max().item())
        return out

    trainer.craft_adversarial = record
    trainer.train()
    assert seen["pgd"] == 0 and len(seen["deltas"]) == 4
    assert all(EPS / 2 < d <= bound + 1e-6 for d in seen["deltas"])
    assert _logs(trainer)[-1]["adv_attack_passes"] == 64  # adv_steps=10 is ignored: one pass per example


# ---------------------------------------------------------------------------------------------------------------------
# 3. MART
def _mart_reference(logits_adv, logits, y, beta):
    """The loss of the MART authors' code (github.com/YisenWang/MART, mart.py), verbatim but for the names."""
    kl = torch.nn.KLDivLoss(reduction="none")
    batch_size = len(y)
    adv_probs = F.softmax(logits_adv, dim=1)
    tmp1 = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(tmp1[:, -1] == y, tmp1[:, -2], tmp1[:, -1])
    loss_adv = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), new_y)
    nat_probs = F.softmax(logits, dim=1)
    true_probs = torch.gather(nat_probs, 1, (y.unsqueeze(1)).long()).squeeze()
    loss_robust = (1.0 / batch_size) * torch.sum(
        torch.sum(kl(torch.log(adv_probs + 1e-12), nat_probs), dim=1) * (1.0000001 - true_probs))
    return loss_adv + float(beta) * loss_robust, loss_adv


def test_mart_objective_matches_the_authors_loss_and_its_gradient():
    torch.manual_seed(0)
    adv, clean, y = torch.randn(16, 10, requires_grad=True), torch.randn(16, 10, requires_grad=True), \
        torch.randint(0, 10, (16,))
    out = compute_objective("mart", adv_logits=adv, labels=y, clean_logits=clean, mart_beta=5.0)
    ref, ref_adv = _mart_reference(adv, clean, y, 5.0)
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert out.adv_loss.item() == pytest.approx(ref_adv.item(), rel=1e-5)
    got = torch.autograd.grad(out.loss, (adv, clean))
    want = torch.autograd.grad(ref, (adv, clean))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, want))
    with pytest.raises(ValueError, match="clean logits"):
        compute_objective("mart", adv_logits=adv, labels=y)


def test_mart_trains_with_a_cross_entropy_attack_and_two_update_passes(tmp_path, digits16, monkeypatch):
    import hf_advft.trainer as trainer_module

    x, y = digits16
    loss_fns = []
    real_pgd = trainer_module.pgd
    monkeypatch.setattr(trainer_module, "pgd", lambda *a, **k: loss_fns.append(k["loss_fn"]) or real_pgd(*a, **k))
    model = SmallCNN()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = AdvTrainer(model=model, args=_args(tmp_path, adv_objective="mart", adv_mart_beta=3.0),
                         train_dataset=DictDataset(x[:64], y[:64]))
    trainer.train()
    assert loss_fns == [None] * 4  # cross-entropy, as PGD-AT (TRADES would pass its KL)
    logs = _logs(trainer)
    assert logs[-1]["adv_update_passes"] == 2 * 64 and logs[-1]["adv_attack_passes"] == 2 * 64
    assert all(h["loss"] > h["adv_loss"] > 0 for h in logs)  # loss = boosted CE + beta * weighted KL
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert trainer.args.adv_config()["adv_mart_beta"] == 3.0


# ---------------------------------------------------------------------------------------------------------------------
# 8. Frozen BatchNorm statistics
def _bn_state(model):
    stats, affine = {}, {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            stats[name] = [t.detach().clone() for t in (m.running_mean, m.running_var, m.num_batches_tracked)]
            affine[name] = [m.weight.detach().clone(), m.bias.detach().clone()]
    return stats, affine


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_bn_keeps_running_stats_and_trains_affine_weights(tmp_path, digits16, freeze):
    x, y = digits16
    model = tiny_timm()
    stats, affine = _bn_state(model)
    assert len(stats) > 5
    # TRADES also runs a clean forward in training mode: both forwards must leave the statistics alone.
    args = _args(tmp_path, adv_freeze_bn=freeze, adv_objective="trades", learning_rate=1e-2, adv_epsilon=0.1,
                 adv_image_mean=[0.0] * 3, adv_image_std=[1.0] * 3)
    AdvTrainer(model=model, args=args, train_dataset=DictDataset(x[:32], y[:32])).train()
    new_stats, new_affine = _bn_state(model)
    unchanged = [all(torch.equal(a, b) for a, b in zip(stats[k], new_stats[k])) for k in stats]
    assert all(unchanged) if freeze else not any(unchanged)
    assert all(not torch.equal(affine[k][0], new_affine[k][0]) for k in affine)  # the affine weights trained


def test_toolkit_arguments_are_recorded_and_validated(tmp_path):
    config = _args(tmp_path, adv_attack="n_fgsm", adv_epsilon_delay_ratio=0.1, adv_freeze_bn=True).adv_config()
    assert config["adv_attack"] == "n_fgsm" and config["adv_epsilon_delay_ratio"] == 0.1 and config["adv_freeze_bn"]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(adv_attack="apgd"), "adv_attack"),
        (dict(adv_attack="fgsm_rs", adv_restarts=3), "adv_restarts=1"),
        (dict(adv_epsilon_delay_ratio=1.0), "adv_epsilon_delay_ratio"),
        (dict(adv_epsilon_schedule="linear", adv_epsilon_warmup_ratio=0.5, adv_epsilon_delay_ratio=0.6),
         "never reach"),
        (dict(adv_objective="mart", adv_clean_loss_weight=0.5), "adv_mart_beta"),
        (dict(adv_mart_beta=-1.0), "adv_mart_beta"),
        (dict(adv_freeze_bn=True, adv_attack_mode="train"), "adv_attack_mode='eval'"),
    ],
)
def test_bad_toolkit_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _args(tmp_path, **kwargs)


def test_model_card_recipe_names_the_toolkit_options(tmp_path):
    from hf_advft.model_card import _recipe_view

    config = _args(tmp_path, adv_attack="n_fgsm", adv_objective="mart", adv_mart_beta=4.0, adv_freeze_bn=True,
                   adv_epsilon_schedule="linear", adv_epsilon_warmup_ratio=0.3,
                   adv_epsilon_delay_ratio=0.2).adv_config()
    view = _recipe_view(config, {}, {})
    assert view["objective"] == "MART (Wang et al. 2020), beta = 4.0"
    assert view["attack"].startswith("N-FGSM") and "BatchNorm statistics frozen" in view["attack"]
    assert "after 20% of the steps at eps = 0" in view["epsilon"]
    assert _recipe_view(_args(tmp_path).adv_config(), {}, {})["attack"].startswith("PGD-2")


# ---------------------------------------------------------------------------------------------------------------------
# 6. Robust early stopping with the Trainer's own callback
@pytest.mark.parametrize("ema", [None, 0.5])
def test_robust_early_stopping_keeps_the_most_robust_checkpoint(tmp_path, digits16, ema):
    import safetensors.torch
    from transformers import EarlyStoppingCallback

    x, y = digits16
    args = _args(tmp_path, max_steps=8, eval_strategy="steps", eval_steps=1, save_strategy="steps", save_steps=1,
                 metric_for_best_model="robust_accuracy", load_best_model_at_end=True, adv_eval_steps=1,
                 adv_ema_decay=ema)
    model = SmallCNN()
    trainer = AdvTrainer(model=model, args=args, train_dataset=DictDataset(x[:128], y[:128]),
                         eval_dataset=DictDataset(x[-16:], y[-16:]),
                         callbacks=[EarlyStoppingCallback(early_stopping_patience=2)])
    robust = iter([0.3, 0.8, 0.5, 0.4, 0.2, 0.1, 0.1, 0.1])  # robust overfitting: the peak comes early
    trainer._robust_accuracy = lambda dataloader: (next(robust), 16)
    trainer.train()
    assert trainer.state.global_step == 4  # two evaluations without a better robust accuracy: stopped
    assert trainer.state.best_model_checkpoint.endswith("checkpoint-2") and trainer.state.best_metric == 0.8
    best = safetensors.torch.load_file(str(tmp_path / "out" / "checkpoint-2" / "model.safetensors"))
    last = safetensors.torch.load_file(str(tmp_path / "out" / "checkpoint-4" / "model.safetensors"))
    state = model.state_dict()
    assert all(torch.equal(state[k], best[k]) for k in best)  # the model holds the best checkpoint's weights
    assert not all(torch.equal(state[k], last[k]) for k in last)
