"""Where a PGD-k step's time goes: AdvTrainer and the hand loop, phase by phase, in one process.

`throughput.py` and `step_overhead.py` time whole steps; this splits one step into the attack (k forward+backward
passes to the input), the update's forward, its backward and the optimizer step, for AdvTrainer (wrapping its
`craft_adversarial`, `compute_loss`, `accelerator.backward` and optimizer `step`) and for `step_overhead.HandLoop`
(its `step(marks)` marks the same phases). After every AdvTrainer step a callback runs one hand-loop step, so both
see the same load. Medians over the steps after `--warmup`.

This is how the CPU gap of issue 14 was attributed (benchmarks/README.md, "Throughput at real sizes"): every phase
costs the same but the backward, which costs AdvTrainer more under glibc's default allocator when the Trainer frees
the gradients after each step (`--free_grads after_step`: the next backward page-faults them back), and the same
with `MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=68719476736` or with the gradients freed right before
the backward (`before_backward`, what `auto` does on CPU):

    OMP_NUM_THREADS=1 python benchmarks/step_phases.py --model vit_b16 --batch_size 4 --steps 3 --free_grads after_step
    OMP_NUM_THREADS=1 python benchmarks/step_phases.py --model vit_b16 --batch_size 4 --steps 3
    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=68719476736 OMP_NUM_THREADS=1 \\
        python benchmarks/step_phases.py --model vit_b16 --batch_size 4 --steps 3 --free_grads after_step
    python benchmarks/step_phases.py --quick                      # bookkeeping smoke run (the test)

Prints a table; `--json` writes the medians and every step's times.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import statistics
import sys
import time


os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from bench_common import DictDataset, allocator_env, hardware  # noqa: E402
from step_overhead import build_peers, trainer_args  # noqa: E402
from transformers import PrinterCallback, TrainerCallback  # noqa: E402

from hf_advft import AdvTrainer  # noqa: E402
from hf_advft.training_args import FREE_GRADS_POLICIES  # noqa: E402


PHASES = ("attack", "update forward", "update backward", "optimizer step", "whole step")
MODELS = ("vit_b16", "resnet50", "vit", "resnet", "linear")


def build(name: str, image_size: int, quick: bool):
    import step_overhead
    import throughput

    if name in ("vit_b16", "resnet50"):
        return throughput.build_model(name, image_size, quick)
    return step_overhead.build_model(name, image_size, quick)


def hand_step(hand, times: dict) -> None:
    """One step of `step_overhead.HandLoop`, its phases timed from the marks it takes."""
    marks = []
    hand.step(marks)
    for name, (a, b) in zip(PHASES, zip(marks, marks[1:])):
        times[name].append(b - a)
    times["whole step"].append(marks[-1] - marks[0])


class Phases(TrainerCallback):
    """Times AdvTrainer's whole step (step begin to step end), then runs one timed hand-loop step."""

    def __init__(self, hand, opts, adv_times, hand_times):
        self.hand, self.opts, self.adv, self.hand_times, self.begin = hand, opts, adv_times, hand_times, None

    def on_step_begin(self, args, state, control, **kwargs):
        self.begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.adv["whole step"].append(time.perf_counter() - self.begin)
        hand_step(self.hand, self.hand_times)


def _timed(times: list, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        times.append(time.perf_counter() - start)
        return out

    return wrapper


def main(opts) -> dict:
    if opts.quick:
        opts.model, opts.image_size, opts.batch_size, opts.steps, opts.train_steps, opts.warmup = "vit", 16, 4, 2, 4, 1
    torch.set_num_threads(opts.threads)
    torch.manual_seed(0)
    base = build(opts.model, opts.image_size, opts.quick)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(opts.batch_size * 4, 3, opts.image_size, opts.image_size, generator=gen)
    y = torch.randint(0, 10, (opts.batch_size * 4,), generator=gen)
    hand = build_peers(base, ["hand loop"], x, y, opts, torch.device("cpu"))[0][0]
    adv = {name: [] for name in PHASES}
    hand_times = {name: [] for name in PHASES}
    args = trainer_args(opts, opts.output_dir, max_steps=opts.train_steps, adv_free_grads=opts.free_grads)
    trainer = AdvTrainer(model=copy.deepcopy(base), args=args, train_dataset=DictDataset(x, y),
                         callbacks=[Phases(hand, opts, adv, hand_times)])
    trainer.remove_callback(PrinterCallback)
    trainer.craft_adversarial = _timed(adv["attack"], trainer.craft_adversarial)
    trainer.compute_loss = _timed(adv["update forward"], trainer.compute_loss)
    trainer.accelerator.backward = _timed(adv["update backward"], trainer.accelerator.backward)
    create_optimizer = trainer.create_optimizer

    def timed_optimizer(*a, **k):
        optimizer = create_optimizer(*a, **k)
        optimizer.step = _timed(adv["optimizer step"], optimizer.step)
        return optimizer

    trainer.create_optimizer = timed_optimizer
    trainer.train()
    rows = {}
    for impl, times in (("AdvTrainer", adv), ("hand loop", hand_times)):
        rows[impl] = {name: statistics.median(v[opts.warmup:]) for name, v in times.items()}
    report = {"meta": {"command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"),
                       "hardware": hardware("cpu"), "torch": torch.__version__, "allocator_env": allocator_env()},
              "settings": vars(opts), "median_s": rows, "every_step_s": {"AdvTrainer": adv, "hand loop": hand_times}}
    print(to_markdown(rows))
    if opts.json:
        os.makedirs(os.path.dirname(opts.json) or ".", exist_ok=True)
        with open(opts.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


def to_markdown(rows: dict) -> str:
    lines = ["| phase | AdvTrainer ms | hand loop ms | AdvTrainer / hand loop |", "|---|---|---|---|"]
    for name in PHASES:
        a, h = rows["AdvTrainer"][name] * 1000, rows["hand loop"][name] * 1000
        lines.append(f"| {name} | {a:.1f} | {h:.1f} | {a / h:.3f} |")
    return "\n".join(lines)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit_b16", choices=MODELS)
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--steps", type=int, default=3, help="k of the PGD-k attack.")
    p.add_argument("--epsilon", type=float, default=8 / 255)
    p.add_argument("--step_size", type=float, default=2 / 255)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--train_steps", type=int, default=10, help="AdvTrainer steps (each followed by a hand-loop step).")
    p.add_argument("--warmup", type=int, default=2, help="Steps left out of the medians.")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--free_grads", default="auto", choices=FREE_GRADS_POLICIES,
                   help="AdvTrainingArguments.adv_free_grads of the AdvTrainer run ('auto': before_backward on CPU).")
    p.add_argument("--quick", action="store_true", help="Tiny model, 4 steps: bookkeeping only.")
    p.add_argument("--output_dir", default="outputs/step_phases")
    p.add_argument("--json", default=None)
    p.set_defaults(reps=0, block=1)  # read by step_overhead.trainer_args; max_steps is --train_steps here
    return p


if __name__ == "__main__":
    main(make_parser().parse_args())
