"""Framework overhead of one PGD-AT optimizer step: AdvTrainer against a hand-written loop and two peers.

Median wall time per optimizer step (PGD-10 L-inf, same initial weights, batch, optimizer and data held in memory)
of four implementations, run side by side in one process:

- `AdvTrainer`: the whole `Trainer.train()` loop (dataloader and collation, `training_step`, optimizer, scheduler,
  callbacks), timed by a callback from the end of one block of steps to the end of the next (it synchronizes the
  device only there);
- `hand loop`: a minimal hand-written PyTorch PGD-AT loop, the floor;
- `ART`: IBM ART's `AdversarialTrainerMadryPGD` (`adversarial-robustness-toolbox`) on NumPy arrays, its native input;
- `torchattacks`: a training loop built on `torchattacks.PGD`.

The peers run *inside* AdvTrainer's training run: after every block of `--block` AdvTrainer steps, a callback runs one
block of each peer (in a rotating order), so every implementation sees the same machine load at the same time. All
read their batches from the same tensors in CPU memory and copy them to the device.
Warm-up steps are excluded; each row is the median over `--reps` interleaved blocks of the mean time per step.
Ratios below 1 mean AdvTrainer is faster. Goals: AdvTrainer / hand loop <= 1.05; AdvTrainer / each peer <= 1.0.

    python benchmarks/step_overhead.py                  # small ViT + ResNet-18, CPU, a few minutes on 2 cores
    python benchmarks/step_overhead.py --quick          # smoke run (tiny models, PGD-2), seconds
    python benchmarks/step_overhead.py --device cuda    # the same on a GPU
    python benchmarks/step_overhead.py --models linear --block 20 --reps 5 --warmup 5   # framework cost alone

Peers that are not installed are reported as skipped; `make bench` installs them (torchattacks with `--no-deps`).
Writes `benchmarks/results/step_overhead.json` (override with `--json`) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import logging
import os
import statistics
import sys
import time


os.environ.setdefault("TQDM_DISABLE", "1")  # ART draws progress bars on every fit()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_common

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from bench_common import DictDataset, allocator_env, hardware  # noqa: E402
from torch import nn  # noqa: E402
from transformers import PreTrainedModel, PrinterCallback, TrainerCallback  # noqa: E402

from hf_advft import AdvTrainer, AdvTrainingArguments  # noqa: E402
from hf_advft.evaluation_utils import PixelModel  # noqa: E402
from hf_advft.pixel_space import PixelSpace  # noqa: E402


PEERS = ("hand loop", "ART", "torchattacks")
PEER_PACKAGES = {"ART": ("art", "adversarial-robustness-toolbox"), "torchattacks": ("torchattacks", "torchattacks")}



def build_model(name: str, image_size: int, quick: bool) -> nn.Module:
    if name == "vit":
        from transformers import ViTConfig, ViTForImageClassification

        width, depth = (32, 1) if quick else (64, 4)
        return ViTForImageClassification(ViTConfig(
            image_size=image_size, patch_size=4, num_channels=3, hidden_size=width, num_hidden_layers=depth,
            num_attention_heads=4, intermediate_size=2 * width, num_labels=10))
    if name == "resnet":
        import timm

        if quick:
            return timm.create_model("resnet10t", pretrained=False, num_classes=10, channels=(8, 16, 32, 64),
                                     stem_width=8)
        return timm.create_model("resnet18", pretrained=False, num_classes=10)
    if name == "linear":  # almost no compute: the step time is the framework's own per-step cost
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * image_size * image_size, 10))
    raise ValueError(f"Unknown model {name!r}: use 'vit', 'resnet' or 'linear'.")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------------------------------------
# The peers. Each owns a copy of the same initial weights and an SGD optimizer with the same learning rate, and
# exposes `run(n)`: n optimizer steps of PGD-AT on batches of the same in-memory data.
class HandLoop:
    """The floor: PGD written inline (eval mode, weights frozen during the attack), then one SGD update."""

    name = "hand loop"

    def __init__(self, model, x, y, opts):
        self.model, self.x, self.y, self.opts = model, x, y, opts
        self.device = next(model.parameters()).device
        self.opt = torch.optim.SGD(model.parameters(), lr=opts.lr)
        self.params = list(model.parameters())
        self.cursor = 0

    def _next_batch(self):
        b = self.opts.batch_size
        if self.cursor + b > len(self.y):
            self.cursor = 0
        idx = slice(self.cursor, self.cursor + b)
        self.cursor += b
        # Batches come from CPU memory, as from a DataLoader (the Trainer and ART copy theirs to the device too).
        return self.x[idx].to(self.device), self.y[idx].to(self.device)

    def run(self, n: int) -> None:
        for _ in range(n):
            self.step()

    def step(self, marks: list | None = None) -> None:
        """One optimizer step; with `marks`, the perf_counter at its start and after the attack, the update's forward,
        its backward and the optimizer step (`step_phases.py` times the phases from them)."""
        eps, alpha = self.opts.epsilon, self.opts.step_size
        mark = marks.append if marks is not None else (lambda _: None)
        x, y = self._next_batch()
        mark(time.perf_counter())
        self.model.eval()
        for p in self.params:
            p.requires_grad_(False)
        x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
        for _ in range(self.opts.steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(self.model(x_adv), y), x_adv)
            x_adv = (x + (x_adv.detach() + alpha * grad.sign() - x).clamp(-eps, eps)).clamp(0, 1)
        for p in self.params:
            p.requires_grad_(True)
        self.model.train()
        mark(time.perf_counter())
        loss = F.cross_entropy(self.model(x_adv), y)
        mark(time.perf_counter())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        mark(time.perf_counter())
        self.opt.step()
        mark(time.perf_counter())


class TorchattacksLoop(HandLoop):
    """The same loop with the attack delegated to `torchattacks.PGD` (which switches the model to eval itself)."""

    name = "torchattacks"

    def __init__(self, model, x, y, opts):
        import torchattacks

        super().__init__(model, x, y, opts)
        self.attack = torchattacks.PGD(model, eps=opts.epsilon, alpha=opts.step_size, steps=opts.steps,
                                       random_start=True)

    def run(self, n: int) -> None:
        for _ in range(n):
            x, y = self._next_batch()
            x_adv = self.attack(x, y)
            self.model.train()
            loss = F.cross_entropy(self.model(x_adv), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()


class ArtLoop:
    """ART's `AdversarialTrainerMadryPGD.fit` over exactly `n` batches of NumPy data per call."""

    name = "ART"

    def __init__(self, model, x, y, opts):
        from art.defences.trainer import AdversarialTrainerMadryPGD
        from art.estimators.classification import PyTorchClassifier

        logging.getLogger("art").setLevel(logging.ERROR)
        self.opts = opts
        self.x, self.y = x.cpu().numpy(), y.cpu().numpy()
        classifier = PyTorchClassifier(
            model=model, loss=nn.CrossEntropyLoss(), optimizer=torch.optim.SGD(model.parameters(), lr=opts.lr),
            input_shape=tuple(x.shape[1:]), nb_classes=10, clip_values=(0.0, 1.0),
            device_type="gpu" if opts.device == "cuda" else "cpu")
        self.trainer = AdversarialTrainerMadryPGD(classifier, nb_epochs=1, batch_size=opts.batch_size,
                                                  eps=opts.epsilon, eps_step=opts.step_size, max_iter=opts.steps,
                                                  num_random_init=1)
        self.trainer.attack.set_params(batch_size=opts.batch_size)  # one attack call per training batch

    def run(self, n: int) -> None:
        count = n * self.opts.batch_size
        self.trainer.fit(self.x[:count], self.y[:count], nb_epochs=1, batch_size=self.opts.batch_size)


PEER_CLASSES = {"hand loop": HandLoop, "ART": ArtLoop, "torchattacks": TorchattacksLoop}


class InterleavedTimer(TrainerCallback):
    """Times AdvTrainer's steps in blocks and runs one block of every peer between two AdvTrainer blocks."""

    def __init__(self, peers, opts, device):
        self.peers, self.opts, self.device = peers, opts, device
        self.times = {"AdvTrainer": [], **{p.name: [] for p in peers}}
        # Steps run and steps inside timed blocks, per implementation: every one must do the same work.
        self.steps_run = {p.name: 0 for p in peers}
        self.steps_timed = {"AdvTrainer": 0, **{p.name: 0 for p in peers}}
        self.block_start, self.block_start_step = None, None

    def _time_block(self, peer) -> float:
        sync(self.device)
        start = time.perf_counter()
        peer.run(self.opts.block)
        sync(self.device)
        self.steps_run[peer.name] += self.opts.block
        self.steps_timed[peer.name] += self.opts.block
        return (time.perf_counter() - start) / self.opts.block

    def _start_block(self, step: int) -> None:
        sync(self.device)
        self.block_start, self.block_start_step = time.perf_counter(), step

    def on_step_end(self, args, state, control, **kwargs):
        done = state.global_step - self.opts.warmup
        if done < 0 or (done > 0 and done % self.opts.block):
            return  # no synchronization inside a block: AdvTrainer runs as it would without the timer
        sync(self.device)
        now = time.perf_counter()
        if done == 0:
            for peer in self.peers:  # the peers' own warm-up, outside any timed block
                peer.run(self.opts.warmup)
                self.steps_run[peer.name] += self.opts.warmup
            self._start_block(state.global_step)
        else:
            steps = state.global_step - self.block_start_step
            self.times["AdvTrainer"].append((now - self.block_start) / steps)
            self.steps_timed["AdvTrainer"] += steps
            rep = done // self.opts.block
            for i in range(len(self.peers)):  # rotate the order so that no peer always runs first
                peer = self.peers[(i + rep) % len(self.peers)]
                self.times[peer.name].append(self._time_block(peer))
            self._start_block(state.global_step)


def build_peers(base: nn.Module, names, x, y, opts, device, classes=None) -> tuple[list, dict]:
    """One peer per name, each on its own copy of `base`; peers whose package is missing go to `skipped`."""
    classes = PEER_CLASSES if classes is None else classes
    peers, skipped = [], {}
    for name in names:
        package = PEER_PACKAGES.get(name)
        if package is not None and importlib.util.find_spec(package[0]) is None:
            skipped[name] = f"not installed (pip install {package[1]})"
            continue
        model = copy.deepcopy(base)
        if isinstance(model, PreTrainedModel):  # the peers need a module that returns logits
            model = PixelModel(model, PixelSpace())  # the peers expect `x -> logits`: the one adapter
        peers.append(classes[name](model.to(device), x, y, opts))
    return peers, skipped


def trainer_args(opts, output_dir: str, **overrides) -> AdvTrainingArguments:
    """AdvTrainer's settings for a timed run: the peers' SGD, batch and attack; no logging, saving or eval."""
    settings = dict(
        output_dir=output_dir, max_steps=opts.warmup + opts.reps * opts.block,
        per_device_train_batch_size=opts.batch_size, learning_rate=opts.lr, optim="sgd", lr_scheduler_type="constant",
        max_grad_norm=0.0,  # the peers do not clip (transformers 5 still computes the norm every step, for its logs)
        adv_epsilon=opts.epsilon, adv_step_size=opts.step_size, adv_steps=opts.steps, adv_eval_steps=0,
        # The images are raw pixels in [0, 1], fed to the model as they are (as the peers feed them): say so, or the
        # timm model's ImageNet mean/std would be undone on them (AdvTrainer stops on such un-normalized inputs).
        adv_image_mean=[0.0, 0.0, 0.0], adv_image_std=[1.0, 1.0, 1.0],
        logging_strategy="no", save_strategy="no", report_to="none", disable_tqdm=True, seed=opts.seed,
        use_cpu=opts.device == "cpu", dataloader_num_workers=0,
    )
    return AdvTrainingArguments(**{**settings, **overrides})


def timed_rows(trainer, timer, batch_size: int) -> dict:
    """Median step time, images/s and the raw block means of every implementation timed by `timer`."""
    steps_run = {"AdvTrainer": trainer.state.global_step, **timer.steps_run}
    rows = {}
    for name, times in timer.times.items():
        median = statistics.median(times)
        rows[name] = {"median_step_s": median, "images_per_s": batch_size / median, "block_means_s": times,
                      "steps_run": steps_run[name], "steps_timed": timer.steps_timed[name]}
    return rows


def measure(model_name: str, opts) -> dict:
    device = torch.device(opts.device)
    size = 16 if opts.quick else 32
    torch.manual_seed(opts.seed)
    base = build_model(model_name, size, opts.quick)
    n_examples = opts.batch_size * 8
    gen = torch.Generator().manual_seed(opts.seed)
    x = torch.rand(n_examples, 3, size, size, generator=gen)
    y = torch.randint(0, 10, (n_examples,), generator=gen)

    peers, skipped = build_peers(base, opts.peers, x, y, opts, device)
    timer = InterleavedTimer(peers, opts, device)
    args = trainer_args(opts, os.path.join(opts.output_dir, model_name))
    trainer = AdvTrainer(model=copy.deepcopy(base), args=args, train_dataset=DictDataset(x, y), callbacks=[timer])
    trainer.remove_callback(PrinterCallback)
    trainer.train()

    rows = timed_rows(trainer, timer, opts.batch_size)
    ratios = {f"AdvTrainer / {name}": rows["AdvTrainer"]["median_step_s"] / rows[name]["median_step_s"]
              for name in rows if name != "AdvTrainer"}
    params = sum(p.numel() for p in base.parameters())
    return {"model": model_name, "model_class": type(base).__name__, "parameters": params, "image_size": size,
            "rows": rows, "ratios": ratios, "skipped": skipped}


def to_markdown(results: list[dict], opts) -> str:
    lines = ["| model | implementation | median s / step | images / s | AdvTrainer / this |",
             "|---|---|---|---|---|"]
    for res in results:
        label = f"{res['model']} ({res['model_class']}, {res['parameters'] / 1e6:.2f}M params, {res['image_size']}px)"
        for name, row in res["rows"].items():
            ratio = "" if name == "AdvTrainer" else f"{res['ratios'][f'AdvTrainer / {name}']:.3f}"
            lines.append(f"| {label} | {name} | {row['median_step_s']:.4f} | {row['images_per_s']:.1f} | {ratio} |")
        for name, why in res["skipped"].items():
            lines.append(f"| {label} | {name} | skipped: {why} | | |")
    return "\n".join(lines)


def verdicts(results: list[dict], opts) -> list[str]:
    out = []
    for res in results:
        for key, ratio in res["ratios"].items():
            goal = 1.05 if key.endswith("hand loop") else 1.0
            out.append(f"{res['model']}: {key} = {ratio:.3f} (goal <= {goal}: {'met' if ratio <= goal else 'MISSED'})")
    return out



def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["vit", "resnet"], choices=["vit", "resnet", "linear"],
                   help="'linear' (one Linear layer) isolates the per-step framework overhead.")
    p.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS))
    p.add_argument("--device", default="cpu", help="'cpu' or 'cuda' (a GPU is optional).")
    p.add_argument("--batch_size", type=int, default=None, help="Default: 32 (8 with --quick).")
    p.add_argument("--steps", type=int, default=None, help="PGD steps per optimizer step. Default: 10 (2 with --quick).")
    p.add_argument("--epsilon", type=float, default=8 / 255)
    p.add_argument("--step_size", type=float, default=2 / 255)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=None,
                   help="Untimed steps of each implementation before the first block. Default: 2 (1 with --quick).")
    p.add_argument("--block", type=int, default=None, help="Optimizer steps per timed block. Default: 2 (1 with --quick).")
    p.add_argument("--reps", type=int, default=None,
                   help="Interleaved timed blocks per implementation. Default: 7 (2 with --quick).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="Smoke run: tiny models on 16px images; defaults batch 8, PGD-2, 2 blocks of 1 step.")
    p.add_argument("--output_dir", default="outputs/step_overhead")
    p.add_argument("--json", default=None, help="Defaults to benchmarks/results/step_overhead[_quick].json.")
    return p


def main(opts) -> dict:
    defaults = dict(batch_size=8, steps=2, warmup=1, block=1, reps=2) if opts.quick else dict(
        batch_size=32, steps=10, warmup=2, block=2, reps=7)
    for name, value in defaults.items():  # explicit flags win over the (quick) defaults
        if getattr(opts, name) is None:
            setattr(opts, name, value)
    if opts.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch.cuda.is_available() is False: use --device cpu.")
    if min(opts.warmup, opts.block, opts.reps) < 1:
        raise ValueError("--warmup, --block and --reps must all be >= 1.")
    if opts.json is None:
        opts.json = f"benchmarks/results/step_overhead{'_quick' if opts.quick else ''}.json"
    logging.getLogger("transformers").setLevel(logging.ERROR)
    start, load_at_start = time.time(), os.getloadavg()[0]  # other work on the machine shows here
    results = [measure(name, opts) for name in opts.models]
    meta = {"command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"),
            "hardware": hardware(opts.device),
            "load_average_at_start_and_end": [load_at_start, os.getloadavg()[0]],
            "torch": torch.__version__, "seconds": round(time.time() - start, 1),
            "allocator_env": allocator_env()}
    report = {"meta": meta, "settings": vars(opts), "results": results}
    os.makedirs(os.path.dirname(opts.json) or ".", exist_ok=True)
    with open(opts.json, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(meta))
    print(to_markdown(results, opts))
    print("\n".join(verdicts(results, opts)))
    return report


if __name__ == "__main__":
    main(make_parser().parse_args())
