"""How the slow-start-fast-decay defaults were chosen: a sweep of its shape on the quickstart problem.

Adversarial fine-tuning (AFT) of the quickstart's clean digits CNN for a fixed budget (3 epochs of PGD-10, eps 0.2,
peak LR 3e-3), varying the slow-start fraction and the decay, against transformers' own schedules at the same
budget. Each cell is the mean over seeds of the PGD-20 accuracy on the held-out split.

    python benchmarks/schedule_defaults.py            # ~4 minutes on 2 idle cores (84 fine-tuning runs)
    python benchmarks/schedule_defaults.py --seeds 0 --warmup_ratios 0.5
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "recipes"))

import torch  # noqa: E402
from quickstart import (  # noqa: E402
    DigitsCNN,
    adv_kwargs,
    evaluate_pgd20,
    load_digits_split,
    quiet,
    trainer_kwargs,
)
from transformers import Trainer, TrainingArguments  # noqa: E402

from hf_advft import AdvTrainer, AdvTrainingArguments  # noqa: E402
from hf_advft.environment import hardware  # noqa: E402


def run(opts):
    import logging

    logging.getLogger("transformers").setLevel(logging.ERROR)
    # The full grid for exponential decay; the other decays at the middle of it, to compare shapes.
    configs = [("slow_start_fast_decay", {"warmup_ratio": w, "decay": "exponential", "min_lr_ratio": m})
               for w in opts.warmup_ratios for m in opts.min_lr_ratios]
    configs += [("slow_start_fast_decay", {"warmup_ratio": opts.compare_warmup_ratio, "decay": d, "min_lr_ratio": 0.01})
                for d in opts.compare_decays]
    configs += [(name, {}) for name in opts.baselines]
    results = {json.dumps([n, k], sort_keys=True): [] for n, k in configs}
    qs = argparse.Namespace(epsilon=opts.epsilon, train_steps=10, batch_size=64, seed=0)
    for seed in opts.seeds:
        qs.seed = seed
        train_ds, eval_ds = load_digits_split(seed)
        torch.manual_seed(seed)
        clean = DigitsCNN()
        quiet(Trainer(model=clean, args=TrainingArguments(**trainer_kwargs(f"{opts.output_dir}/clean", seed, 10, 3e-3,
                                                                            64, "linear")),
                      train_dataset=train_ds)).train()
        for name, kwargs in configs:
            model = copy.deepcopy(clean)
            args = AdvTrainingArguments(**trainer_kwargs(f"{opts.output_dir}/aft", seed, opts.epochs, opts.lr, 64, name),
                                        lr_scheduler_kwargs=kwargs, **adv_kwargs(qs, 10))
            quiet(AdvTrainer(model=model, args=args, train_dataset=train_ds)).train()
            clean_acc, robust_acc = evaluate_pgd20(model, qs, f"{opts.output_dir}/eval", eval_ds)
            results[json.dumps([name, kwargs], sort_keys=True)].append({"seed": seed, "clean": clean_acc,
                                                                          "pgd20": robust_acc})
            print(f"seed {seed} {name} {kwargs}: clean {clean_acc:.3f} pgd20 {robust_acc:.3f}", flush=True)
    rows = []
    for key, runs in results.items():
        name, kwargs = json.loads(key)
        rows.append({"schedule": name, "kwargs": kwargs,
                     "clean_mean": statistics.mean(r["clean"] for r in runs),
                     "pgd20_mean": statistics.mean(r["pgd20"] for r in runs),
                     "pgd20_min": min(r["pgd20"] for r in runs), "runs": runs})
    return rows


def to_markdown(rows, opts) -> str:
    lines = ["| schedule | lr_scheduler_kwargs | clean acc (mean) | PGD-20 acc (mean) | PGD-20 acc (worst seed) |",
             "|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r["pgd20_mean"]):
        kw = ", ".join(f"{k}={v}" for k, v in r["kwargs"].items()) or "(transformers default, no warm-up)"
        lines.append(f"| {r['schedule']} | {kw} | {r['clean_mean']:.3f} | {r['pgd20_mean']:.3f} | "
                     f"{r['pgd20_min']:.3f} |")
    return "\n".join(lines)


def make_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--warmup_ratios", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7])
    p.add_argument("--min_lr_ratios", type=float, nargs="+", default=[0.01, 0.1, 0.2, 0.5])
    p.add_argument("--compare_decays", nargs="*", default=["linear", "cosine"])
    p.add_argument("--compare_warmup_ratio", type=float, default=0.5)
    p.add_argument("--baselines", nargs="*", default=["constant", "linear", "cosine"])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--epsilon", type=float, default=0.2)
    p.add_argument("--output_dir", default="outputs/schedule_defaults")
    p.add_argument("--json", default="benchmarks/results/schedule_defaults.json")
    return p


if __name__ == "__main__":
    opts = make_parser().parse_args()
    start = time.time()
    rows = run(opts)
    meta = {"command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"),
            "hardware": f"{hardware('cpu')}, torch {torch.__version__}", "seconds": round(time.time() - start, 1)}
    os.makedirs(os.path.dirname(opts.json), exist_ok=True)
    with open(opts.json, "w") as f:
        json.dump({"meta": meta, "settings": vars(opts), "rows": rows}, f, indent=2)
    print(json.dumps(meta))
    print(to_markdown(rows, opts))
