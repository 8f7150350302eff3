"""Speed options of AdvTrainer (issue 14): torch.compile without per-step recompiles, channels_last, and the per-step
host work it caches. Speed itself is measured by benchmarks/throughput.py and benchmarks/step_overhead.py, never
here."""

import pytest
import torch
from conftest import DictDataset, SmallCNN
from transformers import TrainerCallback

from hf_advft import AdvTrainer, AdvTrainingArguments
from hf_advft.pixel_space import PixelSpace


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, max_steps=4, learning_rate=1e-2,
                optim="sgd", adv_steps=2, adv_eval_steps=0, logging_steps=2, save_strategy="no", report_to="none",
                use_cpu=True, seed=0, disable_tqdm=True)
    base.update(kw)
    return AdvTrainingArguments(**base)


def _data(n=64, size=8):
    gen = torch.Generator().manual_seed(0)
    return DictDataset(torch.rand(n, 3, size, size, generator=gen), torch.randint(0, 10, (n,), generator=gen))


class GraphCount(TrainerCallback):
    """Dynamo's count of compiled graphs after every optimizer step."""

    def __init__(self):
        self.after_step = []

    def on_step_end(self, args, state, control, **kwargs):
        from torch._dynamo.utils import counters

        self.after_step.append(counters["stats"]["unique_graphs"])


@pytest.mark.slow
@pytest.mark.parametrize("attack_mode", ["eval", "train"])
def test_torch_compile_compiles_once_not_per_step(tmp_path, attack_mode):
    """The attack runs through the compiled model with the weights' requires_grad switched off and (in eval mode)
    BatchNorm frozen: that costs one graph per (mode, flags) pair in the first step, never a recompile per step."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    counter = GraphCount()
    # The "eager" backend keeps the test fast: recompiles are decided by Dynamo's guards, whatever the backend.
    args = _args(tmp_path, max_steps=6, torch_compile=True, torch_compile_backend="eager", adv_attack_mode=attack_mode,
                 adv_epsilon_schedule="linear", adv_epsilon_warmup_ratio=1.0)  # a new epsilon on every step
    model = SmallCNN()
    trainer = AdvTrainer(model=model, args=args, train_dataset=_data(), callbacks=[counter])
    trainer.train()
    assert isinstance(trainer.model_wrapped, torch._dynamo.eval_frame.OptimizedModule)
    graphs = counter.after_step
    assert len(graphs) == 6 and graphs[0] >= 1  # the attack and the update did go through Dynamo
    assert graphs[1:] == [graphs[1]] * 5, graphs  # nothing compiled after the second step
    assert counters["stats"]["unique_graphs"] <= 3
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_channels_last_option(tmp_path):
    model = SmallCNN()
    seen = []
    model.register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous(memory_format=torch.channels_last)))
    before = [p.detach().clone() for p in model.parameters()]
    trainer = AdvTrainer(model=model, args=_args(tmp_path, adv_channels_last=True, max_steps=2), train_dataset=_data())
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    trainer.train()
    assert len(seen) == 2 * (2 + 1) and all(seen)  # every attack pass and the update see channels_last images
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with pytest.raises(TypeError, match="adv_channels_last must be True or False"):
        _args(tmp_path, adv_channels_last="yes")


def test_channels_last_warns_without_convolutions(tmp_path, caplog):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    from transformers.utils import logging as hf_logging

    hf_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            AdvTrainer(model=model, args=_args(tmp_path, adv_channels_last=True), train_dataset=_data())
    finally:
        hf_logging.disable_propagation()
    assert "adv_channels_last=True has no effect" in caplog.text


def test_attack_model_is_unwrapped_once_per_run(tmp_path):
    """`unwrap_model` and the parameter walk are cached per wrapper, not redone on every training step."""
    calls = []

    def count(trainer):
        original = trainer.accelerator.unwrap_model

        def spy(model, *a, **kw):
            import traceback

            if any(f.name == "_attack_target" for f in traceback.extract_stack()):
                calls.append(1)
            return original(model, *a, **kw)

        trainer.accelerator.unwrap_model = spy

    for steps in (1, 5):
        calls.clear()
        trainer = AdvTrainer(model=SmallCNN(), args=_args(tmp_path, max_steps=steps), train_dataset=_data())
        count(trainer)
        trainer.train()
        assert len(calls) == 1, (steps, len(calls))


def test_pixel_space_reuses_its_mean_and_std():
    space = PixelSpace((0.5, 0.4, 0.3), (0.2, 0.2, 0.2), source="explicit")
    x = torch.rand(2, 3, 4, 4)
    first, again = space._stats(x), space._stats(x.clone())
    assert first[0] is again[0] and first[1] is again[1]
    assert space._stats(x.double())[0].dtype == torch.float64  # one copy per dtype (and device)
    assert torch.allclose(space.to_pixels(space.to_model(x)), x, atol=1e-6)
    assert space == PixelSpace((0.5, 0.4, 0.3), (0.2, 0.2, 0.2), source="explicit")  # the cache is not compared


class LogRecorder(TrainerCallback):
    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.logs.append((state.global_step, dict(logs)))


@pytest.mark.parametrize(("policy", "max_grad_norm", "first", "calls"),
                         [("when_logged", 0.0, False, 2), ("when_logged", 0.0, True, 3), ("every_step", 0.0, False, 6),
                          ("when_logged", 1.0, False, 6)])
def test_grad_norm_only_on_logged_steps(tmp_path, monkeypatch, policy, max_grad_norm, first, calls):
    """Without clipping, adv_grad_norm="when_logged" computes the gradient norm only on the steps that log it
    (logging_steps=3 of 6 steps: 2, plus step 1 with logging_first_step); the logs are those of "every_step";
    clipping (max_grad_norm > 0) still happens on every step."""
    from accelerate import Accelerator

    norms = []
    real = Accelerator.clip_grad_norm_
    monkeypatch.setattr(Accelerator, "clip_grad_norm_", lambda self, *a, **k: norms.append(1) or real(self, *a, **k))

    def run(grad_norm_policy):
        recorder = LogRecorder()
        args = _args(tmp_path, max_steps=6, logging_steps=3, max_grad_norm=max_grad_norm, logging_first_step=first,
                     adv_grad_norm=grad_norm_policy)
        torch.manual_seed(0)
        AdvTrainer(model=SmallCNN(), args=args, train_dataset=_data(), callbacks=[recorder]).train()
        return recorder.logs

    logs = run(policy)
    assert len(norms) == calls
    assert [step for step, _ in logs] == ([1, 3, 6] if first else [3, 6])
    assert all("grad_norm" in entry and entry["grad_norm"] > 0 for _, entry in logs)
    norms.clear()
    reference = run("every_step")
    assert len(norms) == 6
    assert [(s, e["grad_norm"], e["loss"]) for s, e in logs] == [(s, e["grad_norm"], e["loss"]) for s, e in reference]


def test_grad_norm_policy_is_checked(tmp_path):
    with pytest.raises(ValueError, match="adv_grad_norm must be one of"):
        _args(tmp_path, adv_grad_norm="never")


class HeldAtStepEnd(TrainerCallback):
    """After the Trainer's model.zero_grad() (step end): are the parameters' gradients gone, how many are held?"""

    def __init__(self):
        self.trainer, self.seen = None, []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        held = self.trainer._held_grads
        self.seen.append((all(p.grad is None for p in model.parameters()), None if held is None else len(held)))


@pytest.mark.parametrize("accumulation", [1, 2])
def test_free_grads_before_backward_keeps_gradients_until_the_backward_and_changes_no_number(tmp_path, accumulation):
    """adv_free_grads="before_backward" (what "auto" is on CPU) keeps the previous step's gradients past the
    Trainer's model.zero_grad(), through the next attack, and drops them right before the update's backward;
    "after_step" leaves the Trainer's order. The weights and losses are the same either way (also with gradient
    accumulation). Whether the allocator then reuses the memory is measured by benchmarks/step_phases.py, not here."""

    def run(policy):
        recorder, held = HeldAtStepEnd(), {"attack": [], "backward": []}
        torch.manual_seed(0)
        args = _args(tmp_path, max_steps=3, logging_steps=1, adv_free_grads=policy,
                     gradient_accumulation_steps=accumulation)
        trainer = AdvTrainer(model=SmallCNN(), args=args, train_dataset=_data(), callbacks=[recorder, LogRecorder()])
        recorder.trainer = held["trainer"] = trainer
        craft, backward = trainer.craft_adversarial, trainer.accelerator.backward
        trainer.craft_adversarial = lambda *a, **k: held["attack"].append(trainer._held_grads is not None) or \
            craft(*a, **k)
        trainer.accelerator.backward = lambda *a, **k: held["backward"].append(trainer._held_grads) or \
            backward(*a, **k)
        trainer.train()
        logs = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        return recorder.seen, held, logs, [p.detach().clone() for p in trainer.model.parameters()]

    n_params = len(list(SmallCNN().parameters()))
    seen, held, logs, weights = run("before_backward")
    assert seen == [(True, n_params)] * 3  # the Trainer dropped its references; ours keep the memory alive
    assert held["trainer"]._held_grads is None  # and none are kept past train()
    # The first attack has nothing to hold; every later one runs with the last backward's gradients still alive (within
    # an accumulation they are the parameters' own, which the Trainer keeps as well).
    assert held["attack"] == [False] + [True] * (3 * accumulation - 1)
    assert held["backward"] == [None] * (3 * accumulation)  # dropped after the forward, before every backward
    after_seen, after_held, after_logs, after_weights = run("after_step")
    assert after_seen == [(True, None)] * 3 and after_held["attack"] == [False] * (3 * accumulation)
    assert logs == after_logs and len(logs) == 3
    assert all(torch.equal(a, b) for a, b in zip(weights, after_weights))
    auto = AdvTrainer(model=SmallCNN(), args=_args(tmp_path), train_dataset=_data())
    assert auto.args.adv_free_grads == "auto" and auto._hold_grads  # CPU
    with pytest.raises(ValueError, match="adv_free_grads must be one of"):
        _args(tmp_path, adv_free_grads="never")
