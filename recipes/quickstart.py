"""Quickstart: adversarial fine-tuning against PGD-AT from scratch, offline, on sklearn digits (run by `make demo`).

Three rows, same small CNN, same held-out split, same PGD-20 evaluation:
  (a) clean training;
  (b) adversarial fine-tuning of (a) with AdvTrainer and the slow-start-fast-decay schedule, at a fraction of (c)'s
      adversarial compute;
  (c) PGD-AT from scratch (the baseline of Madry et al.).
Prints one line per stage, then a table (clean accuracy, PGD-20 accuracy, forward+backward passes, wall time), and
writes it to `outputs/quickstart/results.json`, with the fine-tuned checkpoint, its model card (`README.md`) and the
adversarial-example gallery of (b) beside (a) (`adversarial_gallery.png`) in `outputs/quickstart/aft_model/`.

    python recipes/quickstart.py
    python recipes/quickstart.py --epsilon 0.1 --aft_epochs 4 --at_epochs 20
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from transformers import PrinterCallback, Trainer, TrainingArguments
from transformers.modeling_outputs import ImageClassifierOutput

from hf_advft import AdvTrainer, AdvTrainingArguments
from hf_advft.evaluation import compute_accuracy
from hf_advft.gallery import GALLERY_PNG, plot_adversarial_gallery


class DigitsCNN(nn.Module):
    """A small CNN for 1x8x8 digits. Returns an `ImageClassifierOutput`, with a loss when labels are given."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, num_classes),
        )

    def forward(self, pixel_values, labels=None):
        logits = self.body(pixel_values)
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return ImageClassifierOutput(loss=loss, logits=logits)


class DigitsDataset(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def load_digits_split(seed: int, eval_fraction: float = 0.2):
    """sklearn digits as 1x8x8 pixels in [0, 1], split into train/eval with a fixed permutation."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_eval = int(len(y) * eval_fraction)
    ev, tr = perm[:n_eval], perm[n_eval:]
    return DigitsDataset(x[tr], y[tr]), DigitsDataset(x[ev], y[ev])


@dataclass
class Row:
    name: str
    clean_accuracy: float
    pgd20_accuracy: float
    adversarial_passes: int  # example forward+backward passes spent inside the attack
    total_passes: int  # all example forward+backward passes, clean pre-training included
    wall_time_s: float


def trainer_kwargs(out, seed, epochs, lr, batch, scheduler, **kw):
    base = dict(output_dir=out, num_train_epochs=epochs, learning_rate=lr, per_device_train_batch_size=batch,
                per_device_eval_batch_size=256, lr_scheduler_type=scheduler, save_strategy="no", report_to="none",
                logging_strategy="no", seed=seed, use_cpu=not torch.cuda.is_available(), disable_tqdm=True)
    return {**base, **kw}


def adv_kwargs(opts, steps):
    return dict(adv_epsilon=opts.epsilon, adv_step_size=2.5 * opts.epsilon / steps, adv_steps=steps,
                adv_eval_steps=20, adv_eval_step_size=2.5 * opts.epsilon / 20)


def evaluate_pgd20(model, opts, out, eval_ds) -> tuple[float, float]:
    args = AdvTrainingArguments(**trainer_kwargs(out, opts.seed, 1, 1e-3, opts.batch_size, "constant"),
                                **adv_kwargs(opts, opts.train_steps))
    metrics = quiet(AdvTrainer(model=model, args=args, eval_dataset=eval_ds)).evaluate()
    return metrics["eval_accuracy"], metrics["eval_robust_accuracy"]


def quiet(trainer):
    trainer.remove_callback(PrinterCallback)  # the table below is the output; per-run dicts would bury it
    return trainer


# The default run uses one core for about 1 m 45 s (`time python recipes/quickstart.py`: 1m42s user + 3s sys,
# 2026-11-29, see README, Quickstart); when other jobs share the cores the wall time grows (13 minutes at load 12).
ESTIMATE = "2 minutes on an idle CPU core (longer when other jobs share the cores)"


class Stages:
    """One line per stage on stdout: what starts, then what it gave and how long it took."""

    def __init__(self, total: int):
        self.total, self.done, self.start = total, 0, time.perf_counter()

    def begin(self, text: str) -> None:
        self.done += 1
        self.t0 = time.perf_counter()
        print(f"[{self.done}/{self.total}] {text} ...", flush=True)

    def end(self, text: str) -> None:
        print(f"      {text} ({time.perf_counter() - self.t0:.0f} s)", flush=True)


def main(opts) -> list[Row]:
    logging.getLogger("transformers").setLevel(logging.ERROR)
    print(f"hf-advft quickstart: a small CNN on sklearn digits (offline), trained three ways: (a) cleanly, (b) "
          f"adversarially fine-tuned from (a) with AdvTrainer ({opts.aft_epochs} epochs, PGD-{opts.train_steps}, eps "
          f"{opts.epsilon:g}), (c) adversarially from scratch ({opts.at_epochs} epochs); then PGD-20 on the held-out "
          f"digits and a gallery of adversarial examples.\n"
          f"With the default settings this takes about {ESTIMATE}; one line per stage follows.", flush=True)
    stages = Stages(3)
    # One intra-op thread: this CNN is too small to gain from more, and on a busy 2-core machine OpenMP spin-waits
    # made it 50x slower. It also makes the table reproducible (thread count changes float summation order).
    torch.set_num_threads(opts.threads)
    out = opts.output_dir
    os.makedirs(out, exist_ok=True)
    train_ds, eval_ds = load_digits_split(opts.seed)
    n = len(train_ds)
    k = opts.train_steps
    rows = []

    # (a) clean training with the plain transformers Trainer.
    stages.begin(f"(a) clean training, {opts.clean_epochs} epochs, {n:,} digits")
    torch.manual_seed(opts.seed)
    clean_model = DigitsCNN()
    start = time.perf_counter()
    clean_args = TrainingArguments(**trainer_kwargs(f"{out}/clean", opts.seed, opts.clean_epochs, 3e-3, opts.batch_size,
                                             "linear"))
    quiet(Trainer(model=clean_model, args=clean_args, train_dataset=train_ds, compute_metrics=compute_accuracy)).train()
    clean_time = time.perf_counter() - start
    clean_passes = n * opts.clean_epochs
    rows.append(Row("(a) clean training", *evaluate_pgd20(clean_model, opts, f"{out}/eval", eval_ds), 0, clean_passes,
                    round(clean_time, 1)))
    stages.end(f"clean accuracy {rows[-1].clean_accuracy:.3f}, PGD-20 accuracy {rows[-1].pgd20_accuracy:.3f}")
    base_model = copy.deepcopy(clean_model)  # (b) fine-tunes clean_model in place; the gallery shows both

    stages.begin(f"(b) adversarial fine-tuning of (a), {opts.aft_epochs} epochs, slow-start-fast-decay; the gallery")

    # (b) adversarial fine-tuning of (a) with slow-start-fast-decay.
    aft_args = AdvTrainingArguments(
        # Logged once an epoch, so that the checkpoint's model card records the compute spent.
        **trainer_kwargs(f"{out}/aft_model", opts.seed, opts.aft_epochs, opts.aft_lr, opts.batch_size,
                         "slow_start_fast_decay", logging_strategy="epoch"),
        **adv_kwargs(opts, k),
    )
    aft = quiet(AdvTrainer(model=clean_model, args=aft_args, train_dataset=train_ds, eval_dataset=eval_ds))
    start = time.perf_counter()
    aft.train()
    aft_time = time.perf_counter() - start
    # Evaluated by the same trainer before saving, so the checkpoint's model card carries these numbers.
    metrics = aft.evaluate()
    # The gallery: the same PGD-20 attack on a few held-out digits, against (b) and, beside it, (a).
    gallery = plot_adversarial_gallery(
        clean_model, torch.stack([eval_ds[i]["pixel_values"] for i in range(opts.gallery)]), eval_ds.y[:opts.gallery],
        os.path.join(aft_args.output_dir, GALLERY_PNG), base_model=base_model, epsilon=opts.epsilon, steps=20,
        n=opts.gallery, model_name="(b) fine-tuned", base_name="(a) clean", seed=opts.seed,
    )
    aft.save_model()
    aft.create_model_card(gallery_image=gallery)  # the card shows the gallery beside it
    rows.append(Row(f"(b) AFT of (a), slow-start-fast-decay, {opts.aft_epochs} ep",
                    metrics["eval_accuracy"], metrics["eval_robust_accuracy"], n * opts.aft_epochs * k,
                    clean_passes + n * opts.aft_epochs * (k + 1), round(clean_time + aft_time, 1)))
    stages.end(f"clean accuracy {rows[-1].clean_accuracy:.3f}, PGD-20 accuracy {rows[-1].pgd20_accuracy:.3f}")

    # (c) PGD-AT from scratch, the baseline.
    stages.begin(f"(c) PGD-AT from scratch, {opts.at_epochs} epochs (the baseline)")
    torch.manual_seed(opts.seed)
    scratch = DigitsCNN()
    at_args = AdvTrainingArguments(**trainer_kwargs(f"{out}/pgd_at", opts.seed, opts.at_epochs, 3e-3, opts.batch_size,
                                             "linear"), **adv_kwargs(opts, k))
    start = time.perf_counter()
    quiet(AdvTrainer(model=scratch, args=at_args, train_dataset=train_ds)).train()
    at_time = time.perf_counter() - start
    rows.append(Row(f"(c) PGD-AT from scratch, {opts.at_epochs} ep", *evaluate_pgd20(scratch, opts, f"{out}/eval", eval_ds),
                    n * opts.at_epochs * k, n * opts.at_epochs * (k + 1), round(at_time, 1)))
    stages.end(f"clean accuracy {rows[-1].clean_accuracy:.3f}, PGD-20 accuracy {rows[-1].pgd20_accuracy:.3f}")

    result = {"settings": vars(opts), "n_train": n, "n_eval": len(eval_ds), "rows": [asdict(r) for r in rows],
              "aft_checkpoint": os.path.abspath(f"{out}/aft_model")}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nDone in {time.perf_counter() - stages.start:.0f} s.\n\n" + format_table(rows, opts))
    print(f"\nResults:         {os.path.abspath(os.path.join(out, 'results.json'))}")
    print(f"Gallery:         {os.path.abspath(gallery)}  (adversarial examples of (b), beside (a))")
    print(f"Model card:      {os.path.abspath(os.path.join(aft_args.output_dir, 'README.md'))}")
    print(f"Checkpoint:      {os.path.abspath(aft_args.output_dir)}")
    return rows


def format_table(rows: list[Row], opts) -> str:
    head = (f"sklearn digits, L-inf eps={opts.epsilon:g}, PGD-{opts.train_steps} training, PGD-20 evaluation "
            f"(step 2.5*eps/20) on the held-out split\n")
    lines = ["| run | clean acc | PGD-20 acc | adversarial fwd+bwd | total fwd+bwd | wall time (s) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.name} | {r.clean_accuracy:.3f} | {r.pgd20_accuracy:.3f} | {r.adversarial_passes:,} | "
                     f"{r.total_passes:,} | {r.wall_time_s} |")
    ratio = rows[1].adversarial_passes / max(1, rows[2].adversarial_passes)
    verdict = "reaches" if rows[1].pgd20_accuracy >= rows[2].pgd20_accuracy else "does not reach"
    lines.append(f"\n(b) spends {ratio:.2f}x the adversarial compute of (c) and {verdict} its PGD-20 accuracy "
                 f"({rows[1].pgd20_accuracy:.3f} vs {rows[2].pgd20_accuracy:.3f}).")
    return head + "\n".join(lines)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", default="outputs/quickstart")
    p.add_argument("--epsilon", type=float, default=0.2, help="L-inf radius in pixel units of [0, 1] images.")
    p.add_argument("--train_steps", type=int, default=10, help="PGD steps during training.")
    p.add_argument("--clean_epochs", type=int, default=10)
    p.add_argument("--aft_epochs", type=int, default=3)
    p.add_argument("--aft_lr", type=float, default=3e-3)
    p.add_argument("--at_epochs", type=int, default=15)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (see main).")
    p.add_argument("--gallery", type=int, default=6, help="Images in the adversarial-example gallery.")
    return p


if __name__ == "__main__":
    main(make_parser().parse_args())
