"""Training throughput at real sizes: how close a PGD-k step of AdvTrainer comes to the physical limit.

ViT-B/16 (transformers `ViTForImageClassification`, built from its config) and ResNet-50 (timm, `pretrained=False`),
10 classes, SGD, the same initial weights and in-memory data for every implementation. Images/s of:

- `clean`: plain training, one forward+backward per batch;
- `hand loop`: a minimal hand-written PGD-k AT loop (`step_overhead.HandLoop`);
- `AdvTrainer`: the whole `Trainer.train()` loop;
- `torchattacks`: a loop built on `torchattacks.PGD` (skipped when not installed; `make bench` installs it).

They run interleaved inside AdvTrainer's own training run, with `step_overhead.InterleavedTimer`, so all see the same
machine load. The limit is `clean images/s / (k + 1)`: a PGD-k step costs k + 1 forward+backward passes (the k attack
passes skip the weight gradients, so they can be cheaper still, and the ratio can exceed 1). Each (model, precision,
variant) is one run; the variants change AdvTrainer only, the other rows stay as written:

- `default`: AdvTrainer as configured by default;
- `compile`: `AdvTrainingArguments(torch_compile=True)` (the Trainer's own flag; the attack runs through the compiled
  model), compared with the uncompiled hand loop;
- `channels_last`: `AdvTrainingArguments(adv_channels_last=True)`;
- `grad_norm_every_step`: `AdvTrainingArguments(adv_grad_norm="every_step")`, transformers' own behaviour (the
  gradient norm on every step, for the logs, even without clipping); `default` computes it only on logged steps, and
  these timed runs log nothing;
- `free_grads_after_step`: `AdvTrainingArguments(adv_free_grads="after_step")`, the Trainer's own order (gradients
  freed at the end of each step); `default` keeps them until right before the next backward on CPU (`"auto"`).

`bf16` runs every implementation under bfloat16 autocast (AdvTrainer through `bf16=True`).

    python benchmarks/throughput.py --device cuda                      # ViT-B/16 + ResNet-50, 224 px, batch 128
    OMP_NUM_THREADS=1 python benchmarks/throughput.py --image_size 64 --batch_size 8 --dtypes fp32   # 2 CPU cores
    python benchmarks/throughput.py --quick                            # smoke run: tiny models, 16 px, PGD-2

Writes `benchmarks/results/throughput[_quick].json` (override with `--json`) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import sys
import time


os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_common, step_overhead

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from bench_common import DictDataset, allocator_env, hardware  # noqa: E402
from step_overhead import (  # noqa: E402
    PEER_CLASSES,
    HandLoop,
    InterleavedTimer,
    build_peers,
    sync,
    timed_rows,
    trainer_args,
)
from step_overhead import build_model as build_tiny_model  # noqa: E402
from torch import nn  # noqa: E402
from transformers import PrinterCallback  # noqa: E402

from hf_advft import AdvTrainer  # noqa: E402


MODELS = ("vit_b16", "resnet50")
DTYPES = ("fp32", "bf16")
VARIANTS = {"default": {}, "compile": {"torch_compile": True}, "channels_last": {"adv_channels_last": True},
            "grad_norm_every_step": {"adv_grad_norm": "every_step"},
            "free_grads_after_step": {"adv_free_grads": "after_step"}}
DEFAULT_VARIANTS = ["default", "compile", "channels_last", "grad_norm_every_step"]
PEERS = ("clean", "hand loop", "torchattacks")


class CleanLoop(HandLoop):
    """Plain training on the clean batch: the (k + 1)-th of a PGD-k step, and the unit of the limit."""

    name = "clean"

    def run(self, n: int) -> None:
        for _ in range(n):
            x, y = self._next_batch()
            loss = F.cross_entropy(self.model(x), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()


class Autocast:
    """Runs a peer under bfloat16 autocast, as the Trainer's `bf16=True` runs AdvTrainer."""

    def __init__(self, peer, device_type: str):
        self.peer, self.name, self.device_type = peer, peer.name, device_type

    def run(self, n: int) -> None:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            self.peer.run(n)


def build_model(name: str, image_size: int, quick: bool) -> nn.Module:
    if quick:  # the step-overhead benchmark's tiny stand-ins
        return build_tiny_model("vit" if name == "vit_b16" else "resnet", image_size, quick=True)
    if name == "vit_b16":
        from transformers import ViTConfig, ViTForImageClassification

        return ViTForImageClassification(ViTConfig(
            image_size=image_size, patch_size=16, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, num_labels=10))
    if name == "resnet50":
        import timm

        return timm.create_model("resnet50", pretrained=False, num_classes=10)
    raise ValueError(f"Unknown model {name!r}: use one of {MODELS}.")


def measure(model_name: str, dtype: str, variant: str, opts) -> dict:
    device = torch.device(opts.device)
    torch.manual_seed(opts.seed)
    base = build_model(model_name, opts.image_size, opts.quick)
    n_examples = opts.batch_size * 4
    gen = torch.Generator().manual_seed(opts.seed)
    x = torch.rand(n_examples, 3, opts.image_size, opts.image_size, generator=gen)
    y = torch.randint(0, 10, (n_examples,), generator=gen)

    peers, skipped = build_peers(base, opts.peers, x, y, opts, device, classes={**PEER_CLASSES, "clean": CleanLoop})
    if dtype == "bf16":
        peers = [Autocast(p, device.type) for p in peers]
    timer = InterleavedTimer(peers, opts, device)
    overrides = dict(VARIANTS[variant], bf16=dtype == "bf16")
    if variant == "compile":
        overrides["torch_compile_backend"] = opts.compile_backend
    args = trainer_args(opts, os.path.join(opts.output_dir, f"{model_name}_{dtype}_{variant}"), **overrides)
    trainer = AdvTrainer(model=copy.deepcopy(base), args=args, train_dataset=DictDataset(x, y), callbacks=[timer])
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    sync(device)

    rows = timed_rows(trainer, timer, opts.batch_size)
    return {"model": model_name, "model_class": type(base).__name__, "dtype": dtype, "variant": variant,
            "parameters": sum(p.numel() for p in base.parameters()), "image_size": opts.image_size,
            "batch_size": opts.batch_size, "attack_steps": opts.steps, "rows": rows,
            "ratios": ratios(rows, opts.steps), "skipped": skipped}


def ratios(rows: dict, k: int) -> dict:
    """AdvTrainer's images/s over the limit `clean / (k + 1)` and over every other row (above 1: AdvTrainer faster)."""
    ours = rows["AdvTrainer"]["images_per_s"]
    out = {f"AdvTrainer / {name}": ours / row["images_per_s"] for name, row in rows.items()
           if name not in ("AdvTrainer", "clean")}
    if "clean" in rows:
        out["AdvTrainer / limit"] = ours / (rows["clean"]["images_per_s"] / (k + 1))
    # Block by block: each peer's block i ran right after AdvTrainer's block i, under nearly the same load.
    for name, row in rows.items():
        if name != "AdvTrainer":
            pairs = [b / a for a, b in zip(rows["AdvTrainer"]["block_means_s"], row["block_means_s"])]
            out[f"AdvTrainer / {name}, median of paired blocks"] = statistics.median(pairs)
    return out


def to_markdown(results: list[dict]) -> str:
    lines = ["| model | precision | AdvTrainer variant | clean img/s | limit img/s | hand loop img/s | AdvTrainer img/s "
             "| torchattacks img/s | AdvTrainer / limit | AdvTrainer / hand loop (paired blocks) |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def ips(res, name):
        row = res["rows"].get(name)
        if not row:
            return "skipped"
        return f"{row['images_per_s']:.1f}" if row["images_per_s"] >= 10 else f"{row['images_per_s']:.3g}"

    for res in results:
        r = res["ratios"]
        limit = res["rows"]["clean"]["images_per_s"] / (res["attack_steps"] + 1) if "clean" in res["rows"] else None
        label = f"{res['model']} ({res['parameters'] / 1e6:.1f}M, {res['image_size']}px, batch {res['batch_size']})"
        lines.append(
            f"| {label} | {res['dtype']} | {res['variant']} | {ips(res, 'clean')} | "
            f"{'' if limit is None else f'{limit:.3g}'} | {ips(res, 'hand loop')} | {ips(res, 'AdvTrainer')} | "
            f"{ips(res, 'torchattacks')} | {r.get('AdvTrainer / limit', float('nan')):.3f} | "
            f"{r.get('AdvTrainer / hand loop', float('nan')):.3f} "
            f"({r.get('AdvTrainer / hand loop, median of paired blocks', float('nan')):.3f}) |")
    return "\n".join(lines)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS),
                   help="AdvTrainer's settings, one run each (the other rows are the same in every run). Default: "
                        f"{' '.join(DEFAULT_VARIANTS)} (free_grads_after_step is the default's order on a GPU).")
    p.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS))
    p.add_argument("--device", default="cpu", help="'cpu' or 'cuda' (a GPU is optional).")
    p.add_argument("--image_size", type=int, default=None, help="Default: 224 (16 with --quick).")
    p.add_argument("--batch_size", type=int, default=None,
                   help="Default: 128 on a GPU (fits ViT-B/16 and ResNet-50 PGD-AT in fp32 on 80 GB), 8 on CPU, "
                        "4 with --quick.")
    p.add_argument("--steps", type=int, default=None, help="PGD steps k. Default: 10 (2 with --quick).")
    p.add_argument("--epsilon", type=float, default=8 / 255)
    p.add_argument("--step_size", type=float, default=2 / 255)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=None,
                   help="Untimed steps of each implementation first (compilation happens here). Default: 3 (1 with "
                        "--quick).")
    p.add_argument("--block", type=int, default=None, help="Optimizer steps per timed block. Default: 2 (1 with --quick).")
    p.add_argument("--reps", type=int, default=None, help="Interleaved timed blocks. Default: 5 (2 with --quick).")
    p.add_argument("--compile_backend", default="inductor", help="torch.compile backend of the 'compile' variant.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="Smoke run: tiny stand-in models, 16 px, PGD-2.")
    p.add_argument("--output_dir", default="outputs/throughput")
    p.add_argument("--json", default=None, help="Defaults to benchmarks/results/throughput[_quick].json.")
    return p


def main(opts) -> dict:
    gpu = opts.device.startswith("cuda")
    defaults = dict(image_size=16, batch_size=4, steps=2, warmup=1, block=1, reps=2) if opts.quick else dict(
        image_size=224, batch_size=128 if gpu else 8, steps=10, warmup=3, block=2, reps=5)
    for name, value in defaults.items():  # explicit flags win over the (quick) defaults
        if getattr(opts, name) is None:
            setattr(opts, name, value)
    if gpu and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch.cuda.is_available() is False: use --device cpu.")
    if min(opts.warmup, opts.block, opts.reps) < 1:
        raise ValueError("--warmup, --block and --reps must all be >= 1.")
    if opts.json is None:
        opts.json = f"benchmarks/results/throughput{'_quick' if opts.quick else ''}.json"
    logging.getLogger("transformers").setLevel(logging.ERROR)
    start, load_at_start = time.time(), os.getloadavg()[0]  # other work on the machine shows here
    os.makedirs(os.path.dirname(opts.json) or ".", exist_ok=True)
    results = []
    for m in opts.models:
        for d in opts.dtypes:
            for v in opts.variants:
                results.append(measure(m, d, v, opts))
                # Written after every run, so that a run stopped part-way (a GPU lease ending) keeps what it measured.
                meta = {"command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"),
                        "hardware": hardware(opts.device), "torch": torch.__version__,
                        "load_average_at_start_and_end": [load_at_start, os.getloadavg()[0]],
                        "seconds": round(time.time() - start, 1),
                        "allocator_env": allocator_env()}
                report = {"meta": meta, "settings": vars(opts), "results": results}
                with open(opts.json, "w") as f:
                    json.dump(report, f, indent=2)
    print(json.dumps(meta))
    print(to_markdown(results))
    return report


if __name__ == "__main__":
    main(make_parser().parse_args())
