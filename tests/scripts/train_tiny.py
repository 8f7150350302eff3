"""Train `SmallCNN` on a slice of sklearn digits with `AdvTrainer` and write what happened as JSON.

The subprocess tests of `tests/test_distributed.py` and `tests/test_resume.py` launch it, as one process or as two:

    python tests/scripts/train_tiny.py --output-dir /tmp/run --result /tmp/run/result
    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \
        tests/scripts/train_tiny.py --output-dir /tmp/run --result /tmp/run/result --count-comm

Each process writes `<result>_rank<k>.json`: the log history, the final parameters, per optimizer step the RNG
fingerprint and learning rate seen at `on_step_begin`, and (with `--count-comm`) how many gradient all-reduces and
Python-level collectives ran during the attacks and during the updates. `--pause-after-step N` and
`--pause-in-save-step N` make the process write `<output-dir>/paused` and sleep, so the test can SIGKILL it at a known
point: after the optimizer step N, or in the middle of writing checkpoint N (the weights written, the optimizer,
scheduler, RNG and trainer state not yet).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from transformers import TrainerCallback


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for conftest's helpers
from conftest import DictDataset, SmallCNN, digits_tensors  # noqa: E402

from hf_advft import AdvTrainer, AdvTrainingArguments  # noqa: E402


COLLECTIVES = ("all_reduce", "broadcast", "all_gather", "all_gather_into_tensor", "reduce_scatter",
               "reduce_scatter_tensor", "barrier", "reduce")


def rng_fingerprint() -> str:
    """A short hash of the torch, numpy and Python RNG states."""
    h = hashlib.sha256(torch.random.get_rng_state().numpy().tobytes())
    h.update(repr(np.random.get_state()[1][:8].tolist() + [np.random.get_state()[2]]).encode())
    h.update(repr(random.getstate()[1][:8]).encode())
    return h.hexdigest()[:16]


def flat_params(model) -> list[float]:
    tensors = [getattr(p, "full_tensor", lambda p=p: p)() for p in model.state_dict().values()]  # FSDP2: DTensors
    return torch.cat([t.detach().float().flatten().cpu() for t in tensors]).tolist()


class Recorder(TrainerCallback):
    """Record, at the start of every optimizer step, the global step, the RNG fingerprint and the learning rate; and
    the parameters after optimizer step `snapshot_step`."""

    def __init__(self, snapshot_step=None):
        self.steps, self.snapshot_step, self.snapshot = [], snapshot_step, None

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        lr = optimizer.param_groups[0]["lr"] if optimizer is not None else None
        self.steps.append({"global_step": state.global_step, "rng": rng_fingerprint(), "lr": lr})

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.snapshot_step:
            self.snapshot = flat_params(model)


class Pauser(TrainerCallback):
    """Write a marker file and sleep after optimizer step `step`, so that a test can SIGKILL the process there."""

    def __init__(self, step: int, marker: Path):
        self.step, self.marker = step, marker

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            pause(self.marker)


def pause(marker: Path):
    marker.write_text(str(os.getpid()))
    while True:
        time.sleep(0.2)


@contextlib.contextmanager
def counting_collectives(counts: dict):
    """Count Python-level torch.distributed collectives (the DDP comm hook below goes through them)."""
    originals = {name: getattr(dist, name) for name in COLLECTIVES if hasattr(dist, name)}

    def counted(name, fn):
        def wrapper(*a, **k):
            counts[name] = counts.get(name, 0) + 1
            return fn(*a, **k)
        return wrapper

    for name, fn in originals.items():
        setattr(dist, name, counted(name, fn))
    try:
        yield counts
    finally:
        for name, fn in originals.items():
            setattr(dist, name, fn)


class TinyTrainer(AdvTrainer):
    """AdvTrainer plus instrumentation: DDP gradient all-reduces and collectives counted during attack and update."""

    def __init__(self, *a, count_comm=False, pause_in_save_step=None, marker=None, **k):
        super().__init__(*a, **k)
        self.count_comm, self.pause_in_save_step, self.marker = count_comm, pause_in_save_step, marker
        self.comm = {"grad_allreduce": 0, "attack_grad_allreduce": 0, "attack_collectives": 0,
                     "update_collectives": 0, "attack_model_types": [], "attack_batch_sizes": [],
                     "attack_max_delta": 0.0}
        self._hooked = False

    def _count_bucket(self, state, bucket):
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        self.comm["grad_allreduce"] += 1
        return allreduce_hook(None, bucket)

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.count_comm and not self._hooked and isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model.register_comm_hook(None, self._count_bucket)
            self._hooked = True
        if not self.count_comm:
            return super().training_step(model, inputs, num_items_in_batch)
        counts = {}
        with counting_collectives(counts):
            loss = super().training_step(model, inputs, num_items_in_batch)
        self.comm["update_collectives"] += sum(counts.values())
        return loss

    @contextlib.contextmanager
    def _attacking(self, model, *args, **kwargs):
        # Every attack, training's (craft_adversarial) and the evaluation's (robust_under_pgd), runs inside this.
        self.comm["attack_model_types"].append(type(self._attack_model(model)).__name__)
        before, counts = self.comm["grad_allreduce"], {}
        with counting_collectives(counts), super()._attacking(model, *args, **kwargs) as logits_fn:
            yield logits_fn
        self.comm["attack_grad_allreduce"] += self.comm["grad_allreduce"] - before
        self.comm["attack_collectives"] += sum(counts.values())
        self.comm["update_collectives"] -= sum(counts.values())  # the attack runs inside training_step's count

    def craft_adversarial(self, model, pixels, labels, **kwargs):
        self.comm["attack_batch_sizes"].append(int(labels.shape[0]))
        x_adv = super().craft_adversarial(model, pixels, labels, **kwargs)
        delta = (x_adv.float() - pixels.float()).abs().max().item()  # in fp32 pixel units, whatever the precision
        self.comm["attack_max_delta"] = max(self.comm["attack_max_delta"], delta)
        return x_adv

    def _save_optimizer_and_scheduler(self, output_dir):
        if self.pause_in_save_step is not None and self.state.global_step == self.pause_in_save_step:
            pause(self.marker)
        super()._save_optimizer_and_scheduler(output_dir)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output-dir", required=True)
    p.add_argument("--result", required=True, help="prefix of the per-rank JSON results")
    p.add_argument("--n-train", type=int, default=64)
    p.add_argument("--n-eval", type=int, default=0, help="0: no evaluation at the end")
    p.add_argument("--batch", type=int, default=8, help="per-device train batch size")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--epochs", type=float, default=1)
    p.add_argument("--adv-steps", type=int, default=2)
    p.add_argument("--random-start", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--optim", default="adamw_torch")
    p.add_argument("--save-steps", type=int, default=0, help="0: no checkpoints")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--count-comm", action="store_true")
    p.add_argument("--pause-after-step", type=int, default=None)
    p.add_argument("--pause-in-save-step", type=int, default=None)
    p.add_argument("--snapshot-step", type=int, default=None, help="also record the parameters after this step")
    p.add_argument("--cuda", action="store_true", help="train on the GPU (use_cpu=False)")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--ema-decay", type=float, default=None)
    p.add_argument("--awp-gamma", type=float, default=0.0)
    return p


def main(argv=None):
    a = make_parser().parse_args(argv)
    x, y = digits_tensors(16, 3)
    train_ds = DictDataset(x[:a.n_train], y[:a.n_train])
    eval_ds = DictDataset(x[-a.n_eval:], y[-a.n_eval:]) if a.n_eval else None
    torch.manual_seed(a.seed)
    model = SmallCNN()
    args = AdvTrainingArguments(
        output_dir=a.output_dir, per_device_train_batch_size=a.batch, per_device_eval_batch_size=16,
        gradient_accumulation_steps=a.grad_accum, num_train_epochs=a.epochs, learning_rate=a.lr, optim=a.optim,
        lr_scheduler_type="slow_start_fast_decay", adv_steps=a.adv_steps, adv_step_size=2 / 255,
        adv_random_start=bool(a.random_start), adv_eval_steps=3, logging_steps=1,
        save_strategy="steps" if a.save_steps else "no", save_steps=a.save_steps or 500, report_to="none",
        use_cpu=not a.cuda, seed=a.seed, disable_tqdm=True, bf16=a.bf16, fp16=a.fp16, adv_ema_decay=a.ema_decay,
        adv_awp_gamma=a.awp_gamma,
    )
    marker = Path(a.output_dir) / "paused"
    recorder = Recorder(a.snapshot_step)
    callbacks = [recorder]
    if a.pause_after_step is not None:
        callbacks.append(Pauser(a.pause_after_step, marker))
    trainer = TinyTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, callbacks=callbacks,
                          count_comm=a.count_comm, pause_in_save_step=a.pause_in_save_step, marker=marker)
    trainer.train(resume_from_checkpoint=True if a.resume else None)
    metrics = trainer.evaluate() if eval_ds is not None else {}
    result = {
        "rank": args.process_index, "world_size": args.world_size, "global_step": trainer.state.global_step,
        "log_history": trainer.state.log_history, "steps": recorder.steps, "eval": metrics, "comm": trainer.comm,
        "params": flat_params(trainer.accelerator.unwrap_model(trainer.model)), "snapshot": recorder.snapshot,
        "distributed_type": trainer.accelerator.distributed_type.value, "fsdp": trainer.is_fsdp_enabled,
        "mixed_precision": trainer.accelerator.mixed_precision,
        "scaler": type(trainer.accelerator.scaler).__name__ if trainer.accelerator.scaler is not None else None,
    }
    with open(f"{a.result}_rank{args.process_index}.json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
