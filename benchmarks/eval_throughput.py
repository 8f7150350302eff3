"""Robust-evaluation throughput: PGD-k examples per second of `evaluate_robustness` against `torchattacks.PGD`.

Both evaluate the same model on the same batches with the same PGD (L-inf, k steps, step 2.5 * eps / k, random
start, one restart): a clean forward pass, the k-step attack, a forward pass on the adversarial examples. Labels are
the model's own clean predictions, so every example is initially correct and both attack all of them (by default
`evaluate_robustness` skips initially-wrong examples, which would flatter it); its robustness curve and
gradient-masking checks are switched off, so this times the PGD evaluation alone. The two run in interleaved
repetitions (order alternating), after one warm-up each; each row reports the median examples/s. Goal: ratio >= 1.

    python benchmarks/eval_throughput.py                  # small ResNet-18 + small ViT, CPU, a few minutes
    python benchmarks/eval_throughput.py --quick          # smoke run (tiny models, PGD-2), seconds
    python benchmarks/eval_throughput.py --device cuda    # the same on a GPU

torchattacks pins an old `requests`: install it with `pip install --no-deps torchattacks` (`make bench` does).
Writes `benchmarks/results/eval_throughput[_quick].json` (override with `--json`) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import date


os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from hf_advft.environment import hardware  # noqa: E402
from hf_advft.evaluation import evaluate_robustness  # noqa: E402
from hf_advft.evaluation_utils import PixelModel  # noqa: E402
from hf_advft.pixel_space import PixelSpace  # noqa: E402


def logits_only(model) -> nn.Module:
    """`pixels -> logits` for torchattacks, which needs a plain classifier: hf-advft's one model-call adapter."""
    return PixelModel(model, PixelSpace())


def build_model(name: str, quick: bool, num_classes: int = 10) -> tuple[nn.Module, int]:
    """The model and its input size: timm's ResNet-18 (CIFAR-sized input) or a small transformers ViT."""
    torch.manual_seed(0)
    if name == "resnet18":
        import timm

        arch = "resnet10t" if quick else "resnet18"
        return timm.create_model(arch, pretrained=False, num_classes=num_classes), 32
    from transformers import ViTConfig, ViTForImageClassification

    width, depth = (32, 1) if quick else (192, 6)
    config = ViTConfig(image_size=32, patch_size=4, num_channels=3, hidden_size=width, num_hidden_layers=depth,
                       num_attention_heads=4, intermediate_size=4 * width, num_labels=num_classes)
    return ViTForImageClassification(config), 32


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_ours(model, x, y, *, eps, steps, batch, device):
    # Identity normalization (the inputs are pixels), no curve, no checks: the PGD evaluation alone.
    result = evaluate_robustness(model, (x, y), epsilon=eps, attacks="pgd", pgd_steps=steps, batch_size=batch,
                                 masking_checks=False, curve_epsilons=(), mean=(0.0,), std=(1.0,), device=device)
    return result.pgd_accuracy


def run_torchattacks(model, x, y, *, eps, steps, batch, device):
    import torchattacks

    # eval(): torchattacks puts the model back in the mode it found it in, and a new wrapper starts in train mode.
    net = logits_only(model).eval()
    attack = torchattacks.PGD(net, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=True)
    hits = 0
    for xb, yb in zip(x.split(batch), y.split(batch)):
        xb, yb = xb.to(device), yb.to(device)
        with torch.no_grad():
            correct = net(xb).argmax(-1) == yb  # the clean pass evaluate_robustness makes too
        x_adv = attack(xb, yb)
        with torch.no_grad():
            hits += int(((net(x_adv).argmax(-1) == yb) & correct).sum())
    return hits / len(y)


RUNNERS = {"evaluate_robustness": run_ours, "torchattacks.PGD": run_torchattacks}


def bench_model(name, args, device) -> dict:
    model, size = build_model(name, args.quick)
    model.to(device).eval()
    n = args.batch * args.batches
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, size, size, generator=g)
    with torch.no_grad():
        y = torch.cat([logits_only(model).eval()(xb.to(device)).argmax(-1).cpu() for xb in x.split(args.batch)])
    kw = dict(eps=args.epsilon, steps=args.steps, batch=args.batch, device=device)
    x, y = x.to(device), y.to(device)
    for runner in RUNNERS.values():  # warm-up: allocator, kernels, lazy imports
        runner(model, x[: args.batch], y[: args.batch], **kw)
    rates = {key: [] for key in RUNNERS}
    accuracy = {}
    for rep in range(args.reps):
        order = list(RUNNERS) if rep % 2 == 0 else list(reversed(RUNNERS))
        for key in order:
            _sync(device)
            tic = time.perf_counter()
            accuracy[key] = RUNNERS[key](model, x, y, **kw)
            _sync(device)
            rates[key].append(n / (time.perf_counter() - tic))
    med = {key: statistics.median(v) for key, v in rates.items()}
    # Each repetition runs both sides back to back, so their ratio cancels most of the machine's load drift.
    paired = [a / b for a, b in zip(rates["evaluate_robustness"], rates["torchattacks.PGD"])]
    return {
        "model": name, "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "input": f"3x{size}x{size}", "batch": args.batch, "examples": n, "steps": args.steps,
        "median_examples_per_s": {k: round(v, 2) for k, v in med.items()},
        "all_examples_per_s": {k: [round(r, 2) for r in v] for k, v in rates.items()},
        "ratio": round(med["evaluate_robustness"] / med["torchattacks.PGD"], 3),
        "paired_ratio_median": round(statistics.median(paired), 3),
        "paired_ratio_range": [round(min(paired), 3), round(max(paired), 3)],
        "pgd_accuracy": accuracy,
    }


def markdown(rows) -> str:
    lines = ["| model | input | batch | PGD steps | evaluate_robustness (ex/s) | torchattacks.PGD (ex/s) | ratio of "
             "medians | median paired ratio [min, max] | robust acc. (ours / theirs) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m, a, (lo, hi) = r["median_examples_per_s"], r["pgd_accuracy"], r["paired_ratio_range"]
        lines.append(f"| {r['model']} ({r['params_m']}M) | {r['input']} | {r['batch']} | {r['steps']} | "
                     f"{m['evaluate_robustness']:.1f} | {m['torchattacks.PGD']:.1f} | {r['ratio']:.2f} | "
                     f"{r['paired_ratio_median']:.2f} [{lo:.2f}, {hi:.2f}] | "
                     f"{a['evaluate_robustness']:.3f} / {a['torchattacks.PGD']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="'cpu' (default) or 'cuda'.")
    parser.add_argument("--models", default="resnet18,vit", help="Comma-separated: resnet18, vit.")
    parser.add_argument("--batch", type=int, default=None, help="Batch size (default 64; 16 with --quick).")
    parser.add_argument("--batches", type=int, default=2, help="Batches per timed repetition.")
    parser.add_argument("--steps", type=int, default=None, help="PGD steps k (default 10; 2 with --quick).")
    parser.add_argument("--epsilon", type=float, default=8 / 255)
    parser.add_argument("--reps", type=int, default=None, help="Timed repetitions per side (default 7; 3 quick).")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's). On a CPU shared with other jobs, 1 avoids "
                             "oversubscription stalls that swamp the comparison.")
    parser.add_argument("--quick", action="store_true", help="Tiny models, few steps: a smoke run.")
    parser.add_argument("--json", default=None, help="Output path (default benchmarks/results/eval_throughput*.json).")
    args = parser.parse_args(argv)
    args.batch = args.batch or (16 if args.quick else 64)
    args.steps = args.steps or (2 if args.quick else 10)
    args.reps = args.reps or (3 if args.quick else 7)
    try:
        import torchattacks  # noqa: F401
    except ImportError:
        sys.exit("torchattacks is missing: pip install --no-deps torchattacks (it pins an old requests).")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [bench_model(name.strip(), args, device) for name in args.models.split(",") if name.strip()]
    command = "python benchmarks/eval_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {"command": command.strip(), "date": date.today().isoformat(), "hardware": hardware(device),
              "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "epsilon": args.epsilon, "reps": args.reps, "rows": rows}
    here = os.path.dirname(os.path.abspath(__file__))
    path = args.json or os.path.join(here, "results", f"eval_throughput{'_quick' if args.quick else ''}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(f"{report['command']}  ({report['date']}, {report['hardware']}, {report['torch_threads']} threads)")
    print(markdown(rows))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
