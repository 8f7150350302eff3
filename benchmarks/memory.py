"""Peak memory of one AdvTrainer training step with PGD-k: PGD-10 must stay within 1.3x of PGD-1 on the same batch.

The attack asks for the gradient w.r.t. the input only, with the weights' `requires_grad` off, and drops each
iteration's graph before the next (`torch.autograd.grad`, then a detached update), so the step's peak is that of the
weight update's forward+backward, whatever the number of PGD steps. A graph kept across iterations would make
PGD-10's peak about 10x PGD-1's.

What is measured: `AdvTrainer.training_step` (attack + forward + backward, exactly what `Trainer.train()` runs per
micro-batch) on one fixed batch, after a warm-up step, with `.grad` freed before each measured step; the number is the
peak of memory allocated *during* the step above what was allocated when it began (activations, attack tensors,
gradients), so the weights and optimizer state that every step holds alike do not dilute the ratio.

- `--device cpu`: `torch.profiler.profile(profile_memory=True)` records every CPU allocation and free made by torch
  (size and time); the peak is the maximum of their running sum. (`tracemalloc` does not see torch's allocator and the
  process RSS keeps freed pages, so neither is used.)
- `--device cuda`: `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`, minus
  `memory_allocated()` at the start of the step.

    python benchmarks/memory.py                          # CPU: small ViT + small ResNet, about a minute on 2 cores
    python benchmarks/memory.py --device cuda --image-size 224 --batch 64 --vit-width 384 --vit-depth 12

Writes `benchmarks/results/memory_<device>.json` (override with `--json`) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile


os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from hf_advft import AdvTrainer, AdvTrainingArguments  # noqa: E402
from hf_advft.environment import hardware  # noqa: E402


GOAL = 1.3
MIB = 2**20


def build_model(name: str, image_size: int, vit_width: int, vit_depth: int, num_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    if name == "vit":
        from transformers import ViTConfig, ViTForImageClassification

        config = ViTConfig(image_size=image_size, patch_size=max(4, image_size // 14), num_channels=3,
                           hidden_size=vit_width, num_hidden_layers=vit_depth,
                           num_attention_heads=max(1, vit_width // 64), intermediate_size=4 * vit_width,
                           num_labels=num_classes)
        return ViTForImageClassification(config)
    if name == "resnet":
        import timm

        return timm.create_model("resnet18", pretrained=False, num_classes=num_classes)
    raise ValueError(f"Unknown model {name!r}: use 'vit' or 'resnet'.")


def _cpu_peak(fn) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak


def _cuda_peak(fn) -> int:
    torch.cuda.synchronize()
    start = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - start


@contextlib.contextmanager
def graphs_kept():
    """The failure this benchmark guards against, for the control row: every PGD iteration's graph stays alive."""
    original, kept = torch.autograd.grad, []

    def grad_keeping_graph(outputs, inputs, **kwargs):
        kept.append(outputs)
        return original(outputs, inputs, retain_graph=True)

    torch.autograd.grad = grad_keeping_graph
    try:
        yield
    finally:
        torch.autograd.grad = original
        kept.clear()


def step_peak(model: nn.Module, batch: dict, steps: int, device: str, output_dir: str, control=False) -> int:
    """Peak bytes allocated during one `AdvTrainer.training_step` with PGD-`steps`, above the step's starting point."""
    eps = 8 / 255
    # adv_free_grads="after_step": the step starts with no gradients alive, on CPU too (there "auto" keeps the last
    # step's gradients, one weights-sized set, until the update's backward: memory allocated before the step).
    args = AdvTrainingArguments(output_dir=output_dir, adv_steps=steps, adv_step_size=min(eps, 2.5 * eps / steps),
                                use_cpu=device == "cpu", report_to="none", adv_eval_steps=0, disable_tqdm=True,
                                adv_free_grads="after_step")
    trainer = AdvTrainer(model=model, args=args)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop; training_step reads it

    def run():
        with graphs_kept() if control else contextlib.nullcontext():
            trainer.training_step(trainer.model, dict(batch))

    run()  # warm-up: lazy initialisations, allocator caches
    model.zero_grad(set_to_none=True)
    peak = (_cuda_peak if device == "cuda" else _cpu_peak)(run)
    model.zero_grad(set_to_none=True)
    return peak


def measure(model_name: str, *, steps=(1, 10), batch_size=32, image_size=32, vit_width=64, vit_depth=4,
            device="cpu", control=False) -> dict:
    model = build_model(model_name, image_size, vit_width, vit_depth).to(device)
    g = torch.Generator().manual_seed(0)
    batch = {"pixel_values": torch.rand(batch_size, 3, image_size, image_size, generator=g).to(device),
             "labels": torch.randint(0, 10, (batch_size,), generator=g).to(device)}
    with tempfile.TemporaryDirectory() as out:
        peaks = {k: step_peak(model, batch, k, device, out, control) for k in steps}
    static = sum(p.numel() * p.element_size() for p in model.parameters())
    name = f"{model_name} (control: graphs kept)" if control else model_name
    return {"model": name, "parameters_mib": round(static / MIB, 2), "batch": batch_size,
            "image_size": image_size, "peak_step_mib": {k: round(v / MIB, 2) for k, v in peaks.items()},
            "ratio_to_pgd1": {k: round(v / peaks[steps[0]], 3) for k, v in peaks.items()}}


def verdict(row: dict, ratio: float) -> str:
    if "control" in row["model"]:
        return "control (expected to miss)"
    return f"{'met' if ratio <= GOAL else 'MISSED'} (<= {GOAL})"


def markdown(results: dict) -> str:
    steps = list(results["rows"][0]["peak_step_mib"])
    head = "| model | batch x size | weights (MiB) | " + " | ".join(f"PGD-{k} peak (MiB)" for k in steps)
    head += f" | PGD-{steps[-1]} / PGD-{steps[0]} | goal |"
    lines = [head, "|" + "---|" * (len(steps) + 5)]
    for r in results["rows"]:
        ratio = r["ratio_to_pgd1"][steps[-1]]
        lines.append(f"| {r['model']} | {r['batch']} x {r['image_size']}px | {r['parameters_mib']} | "
                     + " | ".join(str(r["peak_step_mib"][k]) for k in steps)
                     + f" | {ratio} | {verdict(r, ratio)} |")
    return "\n".join(lines)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--models", nargs="+", default=["vit", "resnet"], choices=("vit", "resnet"))
    p.add_argument("--steps", nargs="+", type=int, default=[1, 3, 10], help="PGD steps; the first is the reference")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--vit-width", type=int, default=64)
    p.add_argument("--vit-depth", type=int, default=4)
    p.add_argument("--no-control", action="store_true", help="skip the control row (first model, graphs kept)")
    p.add_argument("--json", default=None, help="default: benchmarks/results/memory_<device>.json")
    return p


def main(argv=None) -> dict:
    a = make_parser().parse_args(argv)
    rows = [measure(m, steps=tuple(a.steps), batch_size=a.batch, image_size=a.image_size, vit_width=a.vit_width,
                    vit_depth=a.vit_depth, device=a.device) for m in a.models]
    if not a.no_control:
        # Shows that the method sees a graph kept across attack iterations: there the peak grows with the steps.
        rows.append(measure(a.models[0], steps=tuple(a.steps), batch_size=a.batch, image_size=a.image_size,
                            vit_width=a.vit_width, vit_depth=a.vit_depth, device=a.device, control=True))
    method = ("torch.profiler CPU allocation events, peak of the running sum" if a.device == "cpu"
              else "torch.cuda.max_memory_allocated minus memory_allocated at the step's start")
    device_name = hardware(a.device)
    results = {"device": a.device, "device_name": device_name, "torch": torch.__version__, "method": method,
               "goal": f"PGD-{a.steps[-1]} peak <= {GOAL} x PGD-{a.steps[0]} peak", "rows": rows}
    path = a.json or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"memory_{a.device}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(markdown(results))  # noqa: T201 - a benchmark script's output
    print(f"\n{method}; {device_name}, torch {torch.__version__}; written to {path}")  # noqa: T201
    return results


if __name__ == "__main__":
    main()
