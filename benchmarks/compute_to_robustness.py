"""Compute to robustness on Fashion-MNIST: PGD-AT from scratch against adversarial fine-tuning (AFT).

One small CNN (2 conv + 2 dense layers), L-inf eps 0.1 in pixel units, PGD-7 training attacks (step 2.5 * eps / 7),
SGD with momentum, on a 5,000-image training subset; every model is evaluated on the same 1,000 held-out test images
with PGD-20 (step 2.5 * eps / 20) and, with `--autoattack_examples N` (default on a GPU only: on CPU AutoAttack costs
~50x PGD-20 per image), standard AutoAttack through `hf_advft.evaluation.evaluate_robustness`. Rows:

  (a)  PGD-AT from scratch with a piecewise LR schedule (x0.1 at 50% and 75% of the steps) for N epochs;
  (a') the same PGD-AT from scratch for only B epochs (the adversarial budget of the AFT rows);
  clean training for C epochs (the starting point of every AFT row);
  (b)  AFT of the clean model with slow-start-fast-decay for B epochs (default B = N / 8);
  (c)  the same AFT with constant, piecewise and cosine schedules;
  (d)  (b) with epsilon scheduling (`adv_epsilon_schedule="linear"`).

Compute is counted in example forward+backward passes: AdvTrainer logs the cumulative `adv_attack_passes` (PGD-k
costs k per example) and `adv_update_passes` (1 per example); clean training costs 1 per example and epoch. (a)'s
PGD-20 accuracy is also traced during training, which gives the robust-accuracy-against-compute curve of the plot.

    python benchmarks/compute_to_robustness.py            # Fashion-MNIST, ~10 minutes on 2 idle CPU cores
    python benchmarks/compute_to_robustness.py --quick    # smoke run on 512 Fashion-MNIST images
    python benchmarks/compute_to_robustness.py --quick --dataset digits   # no Debian package needed (the test)
    python benchmarks/compute_to_robustness.py --device cuda     # + AutoAttack on 1,000 test images

Fashion-MNIST is read offline from the IDX files of the Debian package `dataset-fashion-mnist`
(`apt-get install -y dataset-fashion-mnist`; `make bench` installs it). Writes
`benchmarks/results/compute_to_robustness.json` and `.png` (override with `--json` / `--plot`) and prints the table.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import sys
import time
from functools import partial


os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_common

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_common import DictDataset, hardware  # noqa: E402
from torch import nn  # noqa: E402
from torch.optim.lr_scheduler import LambdaLR  # noqa: E402
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments  # noqa: E402
from transformers.modeling_outputs import ImageClassifierOutput  # noqa: E402

from hf_advft import AdvTrainer, AdvTrainingArguments  # noqa: E402
from hf_advft.attacks import robust_under_pgd  # noqa: E402
from hf_advft.data import FASHION_MNIST_DIR  # noqa: E402
from hf_advft.evaluation_utils import PixelModel  # noqa: E402
from hf_advft.pixel_space import PixelSpace  # noqa: E402


class SmallCNN(nn.Module):
    """Two 3x3 conv layers (32, 64 channels, each followed by 2x2 max-pooling) and two dense layers."""

    def __init__(self, image_size: int = 28, num_classes: int = 10):
        super().__init__()
        side = image_size // 4
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * side * side, 128), nn.ReLU(), nn.Linear(128, num_classes),
        )

    def forward(self, pixel_values, labels=None):
        logits = self.body(pixel_values)
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return ImageClassifierOutput(loss=loss, logits=logits)



# --------------------------------------------------------------------------------------------------------------------
# Data
def _fashion_mnist_split(data_dir: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels in [0, 1] of shape (n, 1, 28, 28) and int64 labels, read by the library's one IDX reader."""
    from hf_advft.data import load_fashion_mnist_arrays

    try:
        images, labels = load_fashion_mnist_arrays(data_dir, split)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err} Here: `make bench` installs the package, --data_dir points at the files, "
                                f"--dataset digits needs none.") from err
    return torch.from_numpy(images.copy()).float()[:, None] / 255.0, torch.from_numpy(labels.astype(np.int64))


def load_data(opts):
    """(train x, train y, test x, test y): pixels in [0, 1] of shape (n, 1, H, W), subsets drawn with `opts.seed`."""
    gen = torch.Generator().manual_seed(opts.seed)
    if opts.dataset == "fashion_mnist":
        x_tr, y_tr = _fashion_mnist_split(opts.data_dir, "train")
        x_te, y_te = _fashion_mnist_split(opts.data_dir, "test")
    elif opts.dataset == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
        y = torch.tensor(d.target, dtype=torch.long)
        perm = torch.randperm(len(y), generator=gen)
        x_te, y_te, x_tr, y_tr = x[perm[:360]], y[perm[:360]], x[perm[360:]], y[perm[360:]]
    else:
        raise ValueError(f"Unknown dataset {opts.dataset!r}: use 'fashion_mnist' or 'digits'.")
    tr = torch.randperm(len(y_tr), generator=gen)[:opts.n_train]
    te = torch.randperm(len(y_te), generator=gen)[:opts.n_test]
    return x_tr[tr], y_tr[tr], x_te[te], y_te[te]


# --------------------------------------------------------------------------------------------------------------------
# Schedules: transformers has no piecewise schedule, so it is a LambdaLR handed to the Trainer through `optimizers=`.
def piecewise_lambda(step: int, *, num_training_steps: int, milestones=(0.5, 0.75), gamma: float = 0.1) -> float:
    """The piecewise-constant schedule of PGD-AT (Madry et al., Rice et al.): x`gamma` at each milestone fraction."""
    return gamma ** sum(step >= round(m * num_training_steps) for m in milestones)


def make_optimizer(model, lr: float, opts) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=opts.weight_decay)


class RobustCurve(TrainerCallback):
    """Evaluates PGD-20 at chosen optimizer steps of a run (the compute-to-robustness curve of the plot).

    Its own time is recorded so that it can be taken out of the run's wall time.
    """

    def __init__(self, steps, x, y, opts):
        self.steps, self.x, self.y, self.opts = set(steps), x, y, opts
        self.trainer = None  # set once the trainer exists: its `compute_spent` gives the passes so far
        self.points, self.seconds = [], 0.0

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.steps:
            start = time.perf_counter()
            trainer = self.trainer
            clean, robust = pgd20_accuracy(model, self.x, self.y, self.opts)
            self.points.append({"step": state.global_step, "epoch": round(state.epoch, 3),
                                "attack_passes": trainer.compute_spent["attack"],
                                "total_passes": trainer.compute_spent["attack"] + trainer.compute_spent["update"],
                                "clean_accuracy": clean, "pgd20_accuracy": robust})
            self.seconds += time.perf_counter() - start


def train(model, x, y, opts, *, adversarial: bool, epochs: float, lr: float, schedule: str,
          epsilon_schedule: str = "constant", curve_at: tuple[float, ...] = (), curve_data=None,
          adv_overrides: dict | None = None) -> dict:
    """Train `model` in place; return wall time, passes and (when asked) the robust-accuracy curve.

    `adv_overrides`: AdvTrainingArguments of a technique row (attack, objective, EMA, AWP, epsilon delay).
    """
    steps_per_epoch = math.ceil(len(y) / opts.batch_size)
    max_steps = max(1, round(epochs * steps_per_epoch))
    optimizer = make_optimizer(model, lr, opts)
    scheduler = None
    if schedule == "piecewise":
        scheduler = LambdaLR(optimizer, partial(piecewise_lambda, num_training_steps=max_steps))
    common = dict(
        output_dir=os.path.join(opts.output_dir, "run"), max_steps=max_steps, per_device_train_batch_size=opts.batch_size,
        learning_rate=lr, lr_scheduler_type="constant" if schedule == "piecewise" else schedule,
        logging_strategy="steps", logging_steps=max_steps, save_strategy="no", report_to="none", disable_tqdm=True,
        seed=opts.seed, use_cpu=opts.device == "cpu", dataloader_num_workers=0,
    )
    if adversarial:
        k = opts.train_steps
        adv = dict(adv_epsilon=opts.epsilon, adv_step_size=2.5 * opts.epsilon / k, adv_steps=k,
                   adv_epsilon_schedule=epsilon_schedule, adv_eval_steps=0)
        adv.update(adv_overrides or {})
        if adv.get("adv_attack", "pgd") != "pgd":
            adv.pop("adv_step_size")  # FGSM-RS and N-FGSM set their own step (1.25 eps, eps)
        args = AdvTrainingArguments(**common, **adv)
        trainer_cls = AdvTrainer
    else:
        args, trainer_cls = TrainingArguments(**common), Trainer
    callbacks = []
    if curve_at:
        curve_steps = sorted({max(1, round(f * max_steps)) for f in curve_at})
        callbacks.append(RobustCurve(curve_steps, *curve_data, opts))
    trainer = trainer_cls(model=model, args=args, train_dataset=DictDataset(x, y), optimizers=(optimizer, scheduler),
                          callbacks=callbacks)
    for cb in callbacks:
        cb.trainer = trainer
    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start - sum(cb.seconds for cb in callbacks)
    if adversarial:
        logged = [h for h in trainer.state.log_history if "adv_attack_passes" in h][-1]
        attack, update = logged["adv_attack_passes"], logged["adv_update_passes"]
    else:
        full_epochs, rest = divmod(max_steps, steps_per_epoch)
        attack, update = 0, full_epochs * len(y) + min(rest * opts.batch_size, len(y))
    out = {"steps": max_steps, "epochs": epochs, "attack_passes": int(attack), "update_passes": int(update),
           "train_seconds": round(seconds, 1), "train_images_per_s": round(update / seconds, 1)}
    if curve_at:
        out["curve"] = callbacks[0].points
    return out


# --------------------------------------------------------------------------------------------------------------------
# Evaluation
def pgd20_accuracy(model, x, y, opts, steps: int = 20) -> tuple[float, float]:
    """Clean and PGD-`steps` accuracy (step 2.5 * eps / steps, random start) in eval mode; the mode is restored.

    Counted by `hf_advft.attacks.robust_under_pgd`, the rule of `evaluate_robustness` and `AdvTrainer`'s
    `eval_robust_accuracy`: only correct examples are attacked, and the first iterate that fools one breaks it.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    clean = robust = 0
    gen = torch.Generator(device=device).manual_seed(opts.seed)
    net = PixelModel(model, PixelSpace())  # the model takes pixels in [0, 1]; the one model-call adapter
    try:
        for i in range(0, len(y), 500):
            xb, yb = x[i:i + 500].to(device), y[i:i + 500].to(device)
            with torch.no_grad():
                correct = net(xb).argmax(-1) == yb
            flags, _ = robust_under_pgd(net, xb, yb, epsilon=opts.epsilon,
                                        step_size=2.5 * opts.epsilon / steps, steps=steps, generator=gen,
                                        correct=correct)
            clean, robust = clean + int(correct.sum()), robust + int(flags.sum())
    finally:
        model.train(was_training)
    return clean / len(y), robust / len(y)


def autoattack_accuracy(model, x, y, opts) -> tuple[float | None, str]:
    """Standard AutoAttack through `hf_advft.evaluation.evaluate_robustness`, or (None, why) when unavailable."""
    if opts.autoattack_examples <= 0:
        return None, "disabled (--autoattack_examples 0)"
    try:
        from hf_advft.evaluation import evaluate_robustness

        result = evaluate_robustness(model, (x[:opts.autoattack_examples], y[:opts.autoattack_examples]),
                                     epsilon=opts.epsilon, attacks=("autoattack",), curve_epsilons=(),
                                     masking_checks=False, seed=opts.seed, batch_size=500)
    except (ImportError, TypeError) as err:  # the evaluation module or pyautoattack is missing or older
        return None, f"unavailable: {err}"
    return result.autoattack_accuracy, "ok"


# --------------------------------------------------------------------------------------------------------------------
def main(opts) -> dict:
    if opts.quick:
        opts.n_train, opts.n_test = min(opts.n_train, 512), min(opts.n_test, 100)
        opts.autoattack_examples = opts.autoattack_examples or 0
        opts.curve_examples, opts.batch_size = min(opts.curve_examples, 50), 64
        opts.at_epochs, opts.aft_epochs, opts.clean_epochs, opts.train_steps = 2, 0.25, 1, 3
    if opts.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch.cuda.is_available() is False: use --device cpu.")
    if opts.autoattack_examples is None:
        opts.autoattack_examples = 1000 if opts.device.startswith("cuda") else 0
    for name in ("json", "plot"):
        if getattr(opts, name) is None:
            ext = "json" if name == "json" else "png"
            setattr(opts, name, f"benchmarks/results/compute_to_robustness{'_quick' if opts.quick else ''}.{ext}")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    start, load_at_start = time.time(), os.getloadavg()[0]  # other work on the machine shows here
    device = torch.device(opts.device)
    x_tr, y_tr, x_te, y_te = load_data(opts)
    size = x_tr.shape[-1]
    curve_data = (x_te[:opts.curve_examples], y_te[:opts.curve_examples])
    rows = []

    def new_model():
        torch.manual_seed(opts.seed)
        return SmallCNN(size).to(device)

    def record(name, model, run, kind, **extra):
        clean, robust = pgd20_accuracy(model, x_te, y_te, opts)
        aa, aa_note = autoattack_accuracy(model, x_te, y_te, opts) if kind != "clean" else (None, "not run")
        row = {"name": name, "kind": kind, "clean_accuracy": clean, "pgd20_accuracy": robust,
               "autoattack_accuracy": aa, "autoattack_note": aa_note, **run, **extra}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)
        return row

    # (a) PGD-AT from scratch, piecewise, N epochs; PGD-20 traced along the way for the plot.
    scratch = new_model()
    run = train(scratch, x_tr, y_tr, opts, adversarial=True, epochs=opts.at_epochs, lr=opts.at_lr,
                schedule="piecewise", curve_at=(0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875), curve_data=curve_data)
    record(f"(a) PGD-AT from scratch, piecewise, {opts.at_epochs:g} ep", scratch, run, "scratch")

    # (a') the same at the AFT budget: what the AFT rows' adversarial compute buys without pre-training.
    short = new_model()
    run = train(short, x_tr, y_tr, opts, adversarial=True, epochs=opts.aft_epochs, lr=opts.at_lr, schedule="piecewise")
    record(f"(a') PGD-AT from scratch, piecewise, {opts.aft_epochs:g} ep", short, run, "scratch_short")

    # Clean training: the starting point of every AFT row.
    clean_model = new_model()
    clean_run = train(clean_model, x_tr, y_tr, opts, adversarial=False, epochs=opts.clean_epochs, lr=opts.clean_lr,
                      schedule="cosine")
    record(f"clean training, {opts.clean_epochs:g} ep", clean_model, clean_run, "clean")

    aft_rows = [("(b) AFT, slow-start-fast-decay", "slow_start_fast_decay", "constant"),
                ("(c) AFT, constant", "constant", "constant"),
                ("(c) AFT, piecewise", "piecewise", "constant"),
                ("(c) AFT, cosine", "cosine", "constant"),
                ("(d) AFT, slow-start-fast-decay + linear eps schedule", "slow_start_fast_decay", "linear")]
    k = opts.train_steps
    if opts.technique_rows:  # issue 12's toolkit, each on top of (b), at the same adversarial passes
        aft_rows += [(name, "slow_start_fast_decay", "constant", overrides, factor)
                     for key, (name, overrides, factor) in TECHNIQUE_ROWS.items()]
    for name, schedule, eps_schedule, *extra in aft_rows:
        overrides, factor = extra if extra else ({}, 1)
        epochs = opts.aft_epochs * (k if factor == "k" else factor)  # single-step rows: k x the epochs, same passes
        model = copy.deepcopy(clean_model)
        run = train(model, x_tr, y_tr, opts, adversarial=True, epochs=epochs, lr=opts.aft_lr,
                    schedule=schedule, epsilon_schedule=eps_schedule, adv_overrides=overrides)
        record(f"{name}, {epochs:g} ep", model, run, "aft",
               pretrain_passes=clean_run["update_passes"], pretrain_seconds=clean_run["train_seconds"])

    meta = {"command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"),
            "hardware": hardware(opts.device),
            "load_average_at_start_and_end": [load_at_start, os.getloadavg()[0]],
            "torch": torch.__version__, "seconds": round(time.time() - start, 1)}
    report = {"meta": meta, "settings": vars(opts), "n_train": len(y_tr), "n_test": len(y_te), "rows": rows,
              "verdict": verdict(rows)}
    os.makedirs(os.path.dirname(opts.json) or ".", exist_ok=True)
    with open(opts.json, "w") as f:
        json.dump(report, f, indent=2)
    report["plot"] = plot(rows, opts)
    print(json.dumps(meta))
    print(to_markdown(rows, opts))
    print(report["verdict"]["text"])
    return report


# Issue 12's techniques as AFT rows of the same budget as (b): name, AdvTrainingArguments, epoch factor ("k": single-step
# attacks cost 1 pass per example, so they train k times the epochs for (b)'s adversarial passes).
TECHNIQUE_ROWS = {
    "delay": ("(t) AFT, ssfd + delayed eps ramp", {"adv_epsilon_schedule": "linear", "adv_epsilon_delay_ratio": 0.2,
                                                  "adv_epsilon_warmup_ratio": 0.5}, 1),
    "fgsm_rs": ("(t) AFT, FGSM-RS", {"adv_attack": "fgsm_rs"}, "k"),
    "n_fgsm": ("(t) AFT, N-FGSM", {"adv_attack": "n_fgsm"}, "k"),
    "trades": ("(t) AFT, TRADES (beta 6)", {"adv_objective": "trades"}, 1),
    "mart": ("(t) AFT, MART (beta 6)", {"adv_objective": "mart"}, 1),
    "ema": ("(t) AFT, weight EMA (0.99)", {"adv_ema_decay": 0.99}, 1),
    "awp": ("(t) AFT, AWP (gamma 5e-3)", {"adv_awp_gamma": 5e-3}, 1),
}


def _total(row) -> int:
    return row["attack_passes"] + row["update_passes"] + row.get("pretrain_passes", 0)


def _seconds(row) -> float:
    return round(row["train_seconds"] + row.get("pretrain_seconds", 0.0), 1)


def verdict(rows) -> dict:
    """Does (b) reach (a)'s PGD-20 accuracy at <= 1/8 of (a)'s adversarial compute?"""
    a = next(r for r in rows if r["kind"] == "scratch")
    b = next(r for r in rows if r["name"].startswith("(b)"))
    adv_ratio = b["attack_passes"] / a["attack_passes"]
    total_ratio = _total(b) / _total(a)
    reaches = b["pgd20_accuracy"] >= a["pgd20_accuracy"]
    within = adv_ratio <= 1 / 8 + 1e-9
    yes = reaches and within
    text = (f"(b) spends {adv_ratio:.3f}x (1/{1 / adv_ratio:.1f}) of (a)'s adversarial compute ({total_ratio:.3f}x of "
            f"its total compute, clean pre-training included) and reaches PGD-20 accuracy {b['pgd20_accuracy']:.3f} "
            f"against (a)'s {a['pgd20_accuracy']:.3f}: "
            f"{'YES' if yes else 'NO'}, (b) {'reaches' if reaches else 'does not reach'} (a)'s robust accuracy"
            f"{' at <= 1/8 of its adversarial compute' if within else ''} here.")
    return {"adversarial_compute_ratio": adv_ratio, "total_compute_ratio": total_ratio,
            "pgd20_gap": b["pgd20_accuracy"] - a["pgd20_accuracy"], "reaches_at_one_eighth": yes, "text": text}


def to_markdown(rows, opts) -> str:
    lines = ["| run | clean acc | PGD-20 acc | AutoAttack acc | adversarial fwd+bwd | total fwd+bwd | wall time (s) | "
             "train images/s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        aa = f"{r['autoattack_accuracy']:.3f}" if r["autoattack_accuracy"] is not None else "–"
        lines.append(f"| {r['name']} | {r['clean_accuracy']:.3f} | {r['pgd20_accuracy']:.3f} | {aa} | "
                     f"{r['attack_passes']:,} | {_total(r):,} | {_seconds(r)} | {r['train_images_per_s']:,.0f} |")
    return "\n".join(lines)


def plot(rows, opts) -> str | None:
    """Robust (PGD-20) accuracy against total forward+backward passes; returns the PNG path (None without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logging.getLogger(__name__).warning("matplotlib is not installed: no plot (pip install matplotlib).")
        return None
    fig, ax = plt.subplots(figsize=(11, 5))
    a = next(r for r in rows if r["kind"] == "scratch")
    curve = a.get("curve", [])
    ax.plot([p["total_passes"] for p in curve] + [_total(a)],
            [p["pgd20_accuracy"] for p in curve] + [a["pgd20_accuracy"]], "o-", color="tab:gray",
            label=f"(a) during training (PGD-20 on the first {opts.curve_examples} test images)")
    markers = {"scratch": ("s", "black"), "scratch_short": ("s", "tab:gray"), "clean": ("x", "tab:red")}
    aft_markers = "*PDXvp^<>hd"  # one marker and color pair per AFT row: 12 rows, 10 colors
    for i, r in enumerate(rows):
        marker, color = markers.get(r["kind"], (aft_markers[i % len(aft_markers)], f"C{i % 10}"))
        ax.scatter([_total(r)], [r["pgd20_accuracy"]], marker=marker, s=80, color=color, zorder=3, label=r["name"])
    ax.set_xscale("log")
    ax.set_xlabel("example forward+backward passes (attack + update + clean pre-training)")
    ax.set_ylabel(f"PGD-20 accuracy, L-inf eps={opts.epsilon:g}")
    ax.set_title(f"Compute to robustness, {opts.dataset} ({opts.n_train:,} train / {opts.n_test:,} test images)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: the points stay visible
    fig.tight_layout()
    os.makedirs(os.path.dirname(opts.plot) or ".", exist_ok=True)
    fig.savefig(opts.plot, dpi=110)
    plt.close(fig)
    return opts.plot



def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion_mnist", choices=["fashion_mnist", "digits"])
    p.add_argument("--data_dir", default=FASHION_MNIST_DIR, help="Folder holding the Fashion-MNIST IDX files.")
    p.add_argument("--n_train", type=int, default=5000, help="Training subset size (all rows train on it).")
    p.add_argument("--n_test", type=int, default=1000, help="Test subset for clean and PGD-20 accuracy.")
    p.add_argument("--curve_examples", type=int, default=500, help="Test images behind (a)'s PGD-20 curve.")
    p.add_argument("--autoattack_examples", type=int, default=None,
                   help="Test images for standard AutoAttack, on every row but the clean one (0 disables it). "
                        "Default: 0 on CPU, where AutoAttack costs ~50x PGD-20 per image; 1000 on a GPU.")
    p.add_argument("--epsilon", type=float, default=0.1, help="L-inf radius in pixel units of [0, 1] images.")
    p.add_argument("--train_steps", type=int, default=7, help="PGD steps of the training attack.")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--at_epochs", type=float, default=10, help="N: epochs of PGD-AT from scratch.")
    p.add_argument("--aft_epochs", type=float, default=1.25, help="B: epochs of each AFT row (default N / 8).")
    p.add_argument("--clean_epochs", type=float, default=5, help="Epochs of the clean pre-training.")
    p.add_argument("--at_lr", type=float, default=0.05)
    p.add_argument("--aft_lr", type=float, default=0.05, help="Peak learning rate of every AFT row.")
    p.add_argument("--clean_lr", type=float, default=0.05)
    p.add_argument("--weight_decay", type=float, default=5e-4)
    p.add_argument("--technique_rows", type=int, default=1,
                   help="1: also run issue 12's techniques as AFT rows at (b)'s adversarial passes (delayed eps ramp, "
                        "FGSM-RS, N-FGSM, TRADES, MART, weight EMA, AWP); 0: the original rows only.")
    p.add_argument("--device", default="cpu", help="'cpu' or 'cuda' (a GPU is optional).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="Smoke run: at most 512 train / 100 test images, batch 64, PGD-3, 2 + 1 + 0.25 epochs, "
                        "no AutoAttack.")
    p.add_argument("--output_dir", default="outputs/compute_to_robustness")
    p.add_argument("--json", default=None, help="Defaults to benchmarks/results/compute_to_robustness[_quick].json.")
    p.add_argument("--plot", default=None, help="Defaults to benchmarks/results/compute_to_robustness[_quick].png.")
    return p


if __name__ == "__main__":
    main(make_parser().parse_args())
