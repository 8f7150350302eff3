"""Weight EMA (`adv_ema_decay`) and AWP (`adv_awp_gamma`): what is averaged, evaluated, saved, resumed, perturbed."""

import json
import subprocess

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from conftest import DictDataset, SmallCNN, tiny_timm
from test_distributed import SCRIPTS, _check, _env, _result, _train_tiny_in_process, launch_two
from transformers import TrainerCallback

from hf_advft import AdvTrainer, AdvTrainingArguments
from hf_advft.training_extras import NON_EMA_WEIGHTS_NAME


pytestmark = pytest.mark.usefixtures("one_thread")


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=16, num_train_epochs=1,
                learning_rate=0.05, optim="sgd", adv_steps=2, adv_eval_steps=0, logging_steps=1, save_strategy="no",
                report_to="none", use_cpu=True, seed=0, disable_tqdm=True)
    base.update(kw)
    return AdvTrainingArguments(**base)


def _flat(tensors):
    return torch.cat([t.detach().float().flatten() for t in tensors])


class LiveWeights(TrainerCallback):
    """The live (trained, not averaged) weights after every optimizer step."""

    def __init__(self):
        self.after_step = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.after_step[state.global_step] = [t.detach().clone() for t in model.state_dict().values()]


# ---------------------------------------------------------------------------------------------------------------------
# Weight EMA
def test_ema_is_the_average_that_evaluation_and_saving_use(tmp_path, digits16):
    x, y = digits16
    model, live = SmallCNN(), LiveWeights()
    initial = [t.detach().clone() for t in model.state_dict().values()]
    args = _args(tmp_path, adv_ema_decay=0.5, save_strategy="steps", save_steps=2, eval_strategy="steps",
                 eval_steps=2)
    trainer = AdvTrainer(model=model, args=args, train_dataset=DictDataset(x[:64], y[:64]),
                         eval_dataset=DictDataset(x[-16:], y[-16:]), callbacks=[live])
    seen_in_eval = []
    real_loop = trainer.evaluation_loop

    def loop(*a, **k):
        seen_in_eval.append(_flat(model.state_dict().values()))
        return real_loop(*a, **k)

    trainer.evaluation_loop = loop
    trainer.train()
    # The average by hand: e_0 = the initial weights, e_k = 0.5 e_{k-1} + 0.5 w_k.
    expected = {0: _flat(initial)}
    for step in range(1, 5):
        expected[step] = 0.5 * expected[step - 1] + 0.5 * _flat(live.after_step[step])
    assert not torch.allclose(expected[4], _flat(live.after_step[4]), atol=1e-4)  # the average is not the last
    assert torch.allclose(seen_in_eval[0], expected[2], atol=1e-6)  # evaluate() at step 2 saw the average
    assert torch.allclose(seen_in_eval[1], expected[4], atol=1e-6)
    assert torch.allclose(_flat(model.state_dict().values()), expected[4], atol=1e-6)  # after train(): the average
    for step in (2, 4):
        ckpt = tmp_path / "out" / f"checkpoint-{step}"
        saved = safetensors.torch.load_file(str(ckpt / "model.safetensors"))
        assert torch.allclose(_flat(saved[k] for k in model.state_dict()), expected[step], atol=1e-6)
        non_ema = safetensors.torch.load_file(str(ckpt / NON_EMA_WEIGHTS_NAME))
        assert torch.equal(_flat(non_ema[k] for k in model.state_dict()), _flat(live.after_step[step]))
        assert json.loads((ckpt / "adv_config.json").read_text())["adv_ema_decay"] == 0.5
    assert "| Weights | EMA (decay 0.5) of the trained weights |" in (tmp_path / "out" / "checkpoint-4" / "README.md").read_text()


def test_ema_resume_continues_exactly(tmp_path, digits16):
    x, y = digits16
    ds = DictDataset(x[:96], y[:96])
    args = _args(tmp_path, adv_ema_decay=0.7, save_strategy="steps", save_steps=3, optim="adamw_torch",
                 learning_rate=1e-2)
    ref = AdvTrainer(model=SmallCNN(), args=args, train_dataset=ds)
    ref.train()
    ref_ema = _flat(ref.model.state_dict().values())
    ref_live = _flat(safetensors.torch.load_file(str(tmp_path / "out" / "checkpoint-6" / NON_EMA_WEIGHTS_NAME))
                     .values())
    resumed = AdvTrainer(model=SmallCNN(), args=args, train_dataset=ds)
    resumed.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-3"))
    assert resumed.state.global_step == 6
    assert torch.equal(_flat(resumed.model.state_dict().values()), ref_ema)  # the final average, bitwise
    live = safetensors.torch.load_file(str(tmp_path / "out" / "checkpoint-6" / NON_EMA_WEIGHTS_NAME))
    assert torch.equal(_flat(live.values()), ref_live)  # and the live weights it came from


@pytest.mark.parametrize("option", [dict(adv_ema_decay=0.99), dict(adv_awp_gamma=0.01)])
def test_ema_and_awp_refuse_sharded_training(tmp_path, digits16, monkeypatch, option):
    x, y = digits16
    trainer = AdvTrainer(model=SmallCNN(), args=_args(tmp_path, **option), train_dataset=DictDataset(x[:32], y[:32]))
    monkeypatch.setattr(trainer, "is_fsdp_enabled", True)
    with pytest.raises(ValueError, match="not supported under FSDP or DeepSpeed ZeRO-3"):
        trainer.train()


# ---------------------------------------------------------------------------------------------------------------------
# AWP
def _record_forwards(model, calls):
    def hook(module, inputs):
        if module.training and torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters()):
            calls.append((inputs[0].detach().clone(), {k: v.detach().clone() for k, v in module.state_dict().items()}))
    return model.register_forward_pre_hook(hook)


def test_awp_perturbs_along_the_layerwise_gradient_and_restores_all_but_the_update(tmp_path, digits16):
    x, y = digits16
    model, gamma, lr = SmallCNN(), 0.02, 0.05
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    calls = []
    _record_forwards(model, calls)
    args = _args(tmp_path, adv_awp_gamma=gamma, learning_rate=lr, lr_scheduler_type="constant", max_steps=1,
                 max_grad_norm=0.0)
    trainer = AdvTrainer(model=model, args=args, train_dataset=DictDataset(x[:16], y[:16]))
    seen_labels, real_objective = [], trainer._objective
    trainer._objective = lambda m, a, c, labels: seen_labels.append(labels) or real_objective(m, a, c, labels)
    trainer.train()
    assert len(calls) == 2  # the AWP ascent forward, then the update's forward (the attack runs in eval mode)
    (x_awp, w_awp), (x_upd, w_upd) = calls
    assert torch.equal(x_awp, x_upd) and all(torch.equal(w_awp[k], original[k]) for k in original)
    # The perturbation by hand: the gradient of the adversarial cross-entropy at the original weights, scaled per
    # weight tensor (dim > 1 only) to gamma * ||w||.
    labels = seen_labels[1]
    assert torch.equal(seen_labels[0], labels)
    final = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k in params:
            params[k].copy_(original[k])
    grads = dict(zip(params, torch.autograd.grad(F.cross_entropy(model(x_upd), labels), list(params.values()))))
    for k, w in original.items():
        delta = gamma * w.norm() / grads[k].norm() * grads[k] if w.dim() > 1 else torch.zeros_like(w)
        assert torch.allclose(w_upd[k], w + delta, atol=1e-6), k
    # After the step: the update (SGD, its gradient taken at the perturbed weights), without the perturbation.
    with torch.no_grad():
        for k in params:
            params[k].copy_(w_upd[k])
    g_pert = dict(zip(params, torch.autograd.grad(F.cross_entropy(model(x_upd), labels), list(params.values()))))
    for k, w in original.items():
        assert torch.allclose(final[k], w - lr * g_pert[k], atol=1e-6), k
    assert not torch.allclose(g_pert["head.weight"], grads["head.weight"], atol=1e-4)  # the perturbation mattered
    assert [h for h in trainer.state.log_history if "loss" in h][-1]["adv_update_passes"] == 2 * 16


def test_awp_with_zero_learning_rate_restores_the_weights_bitwise_and_keeps_bn_stats(tmp_path, digits16):
    x, y = digits16
    model = tiny_timm()
    original = {k: v.detach().clone() for k, v in model.state_dict().items() if "running" not in k and "num_b" not in k}
    args = _args(tmp_path, adv_awp_gamma=0.01, learning_rate=0.0, max_steps=2, adv_image_mean=[0.0] * 3,
                 adv_image_std=[1.0] * 3)
    AdvTrainer(model=model, args=args, train_dataset=DictDataset(x[:32], y[:32])).train()
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in original.items())
    # One running-statistics update per step (the update's forward), none from the AWP forward.
    assert {int(v) for k, v in state.items() if k.endswith("num_batches_tracked")} == {2}


def test_awp_warmup_delays_it(tmp_path, digits16):
    x, y = digits16
    trainer = AdvTrainer(model=SmallCNN(), args=_args(tmp_path, adv_awp_gamma=0.01, adv_awp_warmup_ratio=0.5),
                         train_dataset=DictDataset(x[:64], y[:64]))
    trainer.train()
    passes = [h["adv_update_passes"] for h in trainer.state.log_history if "loss" in h]
    assert passes == [16, 32, 64, 96]  # steps 3 and 4 add AWP's forward+backward


@pytest.mark.multiprocess
def test_ema_and_awp_under_ddp_match_one_process(tmp_path):
    common = ["--n-train", 64, "--epochs", 1, "--adv-steps", 2, "--random-start", 0, "--optim", "sgd", "--lr", 0.2,
              "--ema-decay", 0.6, "--awp-gamma", 0.02]
    one, two = tmp_path / "one" / "r", tmp_path / "two" / "r"
    proc = subprocess.Popen(launch_two(SCRIPTS / "train_tiny.py", "--output-dir", two.parent, "--result", two,
                                       "--batch", 8, *common),
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    one.parent.mkdir()
    _train_tiny_in_process(["--output-dir", one.parent, "--result", one, "--batch", 16, *common])
    _check(proc, "accelerate launch")
    ref, r0, r1 = _result(one, 0), _result(two, 0), _result(two, 1)
    assert r0["world_size"] == 2 and ref["global_step"] == r0["global_step"] == 4
    # Both ranks end with the same averaged weights, which are those of one process with the whole batch.
    assert torch.equal(torch.tensor(r0["params"]), torch.tensor(r1["params"]))
    assert torch.allclose(torch.tensor(r0["params"]), torch.tensor(ref["params"]), atol=1e-4, rtol=0)
    assert [h["adv_update_passes"] for h in r0["log_history"] if "loss" in h][-1] == 2 * 64
