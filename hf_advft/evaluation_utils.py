"""The machinery behind `hf_advft.evaluation.evaluate_robustness`: model calls, data, the attack runners.

Kept apart so that `evaluation.py` reads as the public API (settings, result, checks, curve). Nothing here is public.
"""

from __future__ import annotations

import functools
import inspect
import logging as std_logging
import time
from contextlib import contextmanager

import numpy as np
import torch
from transformers.utils import logging

from .attacks import robust_under_pgd


logger = logging.get_logger("hf_advft.evaluation")  # one logger for the whole evaluation, as users see it

AUTOATTACK_INSTALL_HINT = 'AutoAttack needs the optional extra: pip install "hf-advft[autoattack]" (or pyautoattack).'


def fraction(flags: torch.Tensor) -> float:
    """The share of True flags, as an exact count ratio (a float32 mean would print 0.7699999809)."""
    return int(flags.sum()) / max(1, flags.numel())


# ------------------------------------------------------------------------------------------------------------------
# Model calls, data and pixel space
def logits_of(out) -> torch.Tensor:
    """The logits of a model's output: a tensor (timm), or `.logits` / `["logits"]` (transformers ModelOutput)."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, dict):
        logits = out.get("logits")
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"The model returned {type(out).__name__} with no `logits`: hf-advft needs a logits tensor or "
                        f"an output with a `.logits` attribute (like transformers' ImageClassifierOutput).")
    return logits


def is_adapter_model(model) -> bool:
    """Whether `model` is a peft `PeftModel` (adapters, e.g. LoRA, over a base model)."""
    return type(model).__module__.startswith("peft.") and hasattr(model, "get_base_model")


def base_model_of_adapter(model):
    """The base model under a peft `PeftModel`, or `model` itself."""
    return model.get_base_model() if is_adapter_model(model) else model


def takes_pixel_key(model, pixel_key: str = "pixel_values") -> bool:
    """Whether `model` is called as `model(pixel_values=x)` (transformers) rather than `model(x)` (timm, torch).

    A peft `PeftModel` forwards `*args, **kwargs`, so its base model's signature decides.
    """
    return pixel_key in inspect.signature(base_model_of_adapter(model).forward).parameters


def model_logits(model, inputs: torch.Tensor, pixel_key: str = "pixel_values", kwarg_call: bool | None = None):
    """The one model-call adapter: call `model` on its (normalized) inputs the transformers or timm way, return logits.

    `kwarg_call` is `takes_pixel_key(model, pixel_key)` when not given; callers that call the same model on every step
    (`AdvTrainer`, [`PixelModel`]) compute it once, since `model` may be a DDP/FSDP wrapper by then.
    """
    if kwarg_call is None:
        kwarg_call = takes_pixel_key(model, pixel_key)
    return logits_of(model(**{pixel_key: inputs}) if kwarg_call else model(inputs))


class PixelModel(torch.nn.Module):
    """`model` seen from pixels in [0, 1]: normalizes, calls it the transformers or timm way, returns float logits.

    AutoAttack expects an `nn.Module` mapping its inputs to logits, so the attacks all go through this one module.
    With `pixel_space=PixelSpace()` (no normalization) it is also the plain `x -> logits` classifier that other
    attack libraries (torchattacks, ART) expect, which the benchmarks hand them.
    """

    def __init__(self, model: torch.nn.Module, pixel_space, pixel_key: str = "pixel_values"):
        super().__init__()
        self.model, self.pixel_space, self.pixel_key = model, pixel_space, pixel_key
        self.kwarg_call = takes_pixel_key(model, pixel_key)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return model_logits(self.model, self.pixel_space.to_model(pixels), self.pixel_key, self.kwarg_call).float()


def _example(item, pixel_key, label_key):
    if isinstance(item, dict):
        missing = [k for k in (pixel_key, label_key) if k not in item]
        if missing:
            raise ValueError(f"The data has no {missing} (its keys are {sorted(item)}): pass pixel_key=/label_key= or "
                             f"(pixels, labels) tensors.")
        return item[pixel_key], item[label_key]
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], item[1]
    raise TypeError(f"Cannot read an image and a label from a {type(item).__name__}: use dicts with "
                    f"{pixel_key!r}/{label_key!r}, (image, label) pairs, or pass (pixels, labels) tensors.")


def _as_tensor(value, what: str) -> torch.Tensor:
    try:
        return torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"The {what} are {type(value).__name__}, not tensors: apply your image processor first "
                        f"(e.g. `dataset.with_transform(...)`) or pass (pixels, labels) tensors.") from err


def collect_examples(data, n: int | None, pixel_key: str, label_key: str):
    """First `n` (all when None) examples of `data` as (inputs, labels) tensors, and whether the data ran out first."""
    xs, ys, count = [], [], 0
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        batches = [tuple(data)]
    elif isinstance(data, torch.utils.data.DataLoader) or not hasattr(data, "__getitem__"):
        batches = (_example(b, pixel_key, label_key) for b in data)  # an iterable of batches
    else:
        size = len(data) if n is None else min(n, len(data))
        items = [_example(data[i], pixel_key, label_key) for i in range(size)]
        batches = [(torch.stack([_as_tensor(x, "images") for x, _ in items]),
                    _as_tensor([int(y) for _, y in items], "labels"))] if items else []
    for x, y in batches:
        x, y = _as_tensor(x, "images"), _as_tensor(y, "labels").long().view(-1)
        if n is not None:
            x, y = x[: n - count], y[: n - count]
        xs.append(x.float())
        ys.append(y)
        count += len(y)
        if n is not None and count >= n:
            break
    if count == 0:
        raise ValueError("The evaluation data is empty.")
    return torch.cat(xs), torch.cat(ys)


def to_pixels(space, x: torch.Tensor) -> torch.Tensor:
    try:
        return space.to_pixels(x, check=True)
    except ValueError as err:
        raise ValueError(f"{err} For evaluate_robustness pass mean=[...], std=[...] or processor=<image processor>."
                         ) from None


@contextmanager
def original_forward(model: torch.nn.Module):
    """Call `model`'s own forward, without the mixed-precision autocast accelerate patched into it; then put it back.

    With `bf16`/`fp16`, `accelerator.prepare` replaces `model.forward` by an autocast wrapper that stays on the model
    (`unwrap_model` keeps it). Robustness is measured in full precision, as `hf-advft evaluate` measures a saved
    checkpoint; unlike `unwrap_model(keep_fp32_wrapper=False)`, training's autocast is restored on exit.
    """
    patched = model.__dict__.get("forward")
    original = model.__dict__.get("_original_forward")
    device_type = next((p.device.type for p in model.parameters()), "cpu")
    try:
        if patched is not None and original is not None:
            model.forward = original
        with torch.autocast(device_type, enabled=False):  # nor an autocast the caller may have entered
            yield model
    finally:
        if patched is not None and original is not None:
            model.forward = patched


def evaluation_precision(model: torch.nn.Module) -> str:
    """The precision an evaluation of `model` computes in (outside autocast): its floating parameters' dtype."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}.get(
        dtype, str(dtype).replace("torch.", ""))


@contextmanager
def evaluation_mode(model: torch.nn.Module, device):
    """Eval mode, frozen parameters, full precision and `device` for the attacks; everything restored afterwards."""
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    was_training = model.training
    home = params[0].device if params else torch.device("cpu")
    target = torch.device(device) if device is not None else home
    try:
        model.eval()
        for p in params:  # attacks need input gradients only: no weight .grad, no activations kept for it
            p.requires_grad_(False)
        if target != home:
            model.to(target)
        with original_forward(model):
            yield target
    finally:
        if target != home:
            model.to(home)
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        model.train(was_training)


def progress(iterable, show: bool, desc: str, total: int | None = None):
    if not show:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False)


def to_device(tensor: torch.Tensor, device) -> torch.Tensor:
    """One batch to the attack device: the evaluation set stays on the CPU (50,000 images would not fit a GPU)."""
    return tensor.to(device, non_blocking=True)


@torch.no_grad()
def predict(net, pixels, batch_size, device) -> torch.Tensor:
    """Predicted classes of `pixels` (kept where they are), batch by batch on `device`; returned on the CPU."""
    return torch.cat([net(to_device(chunk, device)).argmax(-1).cpu() for chunk in pixels.split(batch_size)])


def perturbation_norm(x_adv, x, norm) -> float:
    d = (x_adv - x).flatten(1)
    if d.numel() == 0:
        return 0.0
    return float(d.abs().max() if norm == "linf" else d.norm(dim=1).max())


# ------------------------------------------------------------------------------------------------------------------
# Attacks on the initially-correct points
def pgd_robust_flags(net, pixels, labels, correct, *, epsilon, step_size, steps, restarts, cfg, show, desc, device):
    """Per-example robustness under PGD, by `hf_advft.attacks.robust_under_pgd` batch by batch on `device`.

    Flags stay on the CPU beside `pixels`; returns them and the largest perturbation norm of the attacked examples.
    """
    robust = correct.clone()
    worst = 0.0
    if epsilon == 0:
        return robust, worst
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    label = desc if restarts == 1 else f"{desc}, {restarts} restarts"
    for chunk in progress(correct.nonzero().flatten().split(cfg.batch_size), show, label):
        x, y = to_device(pixels[chunk], device), to_device(labels[chunk], device)
        flags, x_adv = robust_under_pgd(net, x, y, epsilon=epsilon, step_size=step_size, steps=steps, norm=cfg.norm,
                                        restarts=restarts, generator=generator,
                                        correct=torch.ones_like(y, dtype=torch.bool))
        robust[chunk] = flags.cpu()
        worst = max(worst, perturbation_norm(x_adv, x, cfg.norm))
    return robust, worst


def import_autoattack():
    try:
        from pyautoattack import AutoAttack
    except ImportError as err:
        raise ImportError(AUTOATTACK_INSTALL_HINT) from err
    return AutoAttack


class _CaptureLog(std_logging.Handler):
    def __init__(self):
        super().__init__(std_logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        message = record.getMessage()
        if message not in self.messages:
            self.messages.append(message)


def autoattack_robust_flags(net, pixels, labels, correct, *, cfg, components, show, notes, device):
    """Run AutoAttack components one after another on the points still robust, as `run_standard_evaluation` does.

    Calling pyautoattack once per component (with its own standard settings) is what gives the per-component trace.
    Returns the robust flags, {component: cumulative accuracy}, {component: points it broke}, the largest
    perturbation norm of a successful adversarial example, and {component: seconds}.
    """
    AutoAttack = import_autoattack()
    norm = {"linf": "Linf", "l2": "L2"}[cfg.norm]
    if components is None:
        attack = AutoAttack(net, norm=norm, eps=cfg.epsilon, version=cfg.autoattack_version, seed=cfg.seed,
                            device=device)
    else:  # the stand-alone Square attack, with AutoAttack's Square settings and our query budget
        attack = AutoAttack(net, norm=norm, eps=cfg.epsilon, version="custom", attacks=list(components),
                            seed=cfg.seed, device=device)
        attack.square.n_queries = cfg.square_queries
    attack.verbose = False
    with torch.no_grad():
        n_classes = net(to_device(pixels[:1], device)).shape[-1]
    # AutoAttack targets the 9 runner-up classes: fewer classes leave fewer targets (RobustBench does the same).
    targets = max(1, min(9, n_classes - 1))
    attack.apgd_targeted.n_target_classes, attack.fab.n_target_classes = targets, targets
    components = list(attack.attacks_to_run)
    if components_only := getattr(cfg, "autoattack_components", None):  # a subset of the version, its settings kept
        components = [c for c in components if c in components_only]
    if n_classes < 4 and "apgd-t" in components:
        components.remove("apgd-t")
        notes.append(f"APGD-T skipped: its targeted DLR loss needs at least 4 classes, the model has {n_classes}.")
    robust, trace, broke, worst, times = correct.clone(), {}, {}, 0.0, {}
    capture = _CaptureLog()
    aa_logger = std_logging.getLogger("auto-attack")
    aa_logger.addHandler(capture)
    # pyautoattack reseeds the global RNGs: keep the caller's random state untouched.
    devices = [device] if torch.device(device).type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            for name in components:
                attack.attacks_to_run = [name]
                idx = robust.nonzero().flatten()
                fooled_here = torch.zeros_like(robust)
                tic = time.perf_counter()
                if idx.numel() == 0:  # nothing left to attack; recorded so the trace shows every component
                    trace[name], broke[name], times[name] = 0.0, fooled_here, 0.0
                    continue
                for chunk in progress(idx.split(cfg.batch_size), show, f"AutoAttack {name}"):
                    x, y = to_device(pixels[chunk], device), to_device(labels[chunk], device)
                    x_adv, _ = attack.run_standard_evaluation(x, y, batch_size=cfg.batch_size)
                    with torch.no_grad():
                        fooled = net(x_adv.to(device)).argmax(-1) != y
                    robust[chunk[fooled.cpu()]] = False
                    fooled_here[chunk[fooled.cpu()]] = True
                    worst = max(worst, perturbation_norm(x_adv[fooled].to(device), x[fooled], cfg.norm))
                trace[name], broke[name] = fraction(robust), fooled_here
                times[name] = round(time.perf_counter() - tic, 3)
    finally:
        aa_logger.removeHandler(capture)
    for message in capture.messages:
        logger.warning(f"AutoAttack: {message}")
        notes.append(f"AutoAttack: {message}")
    return robust, trace, broke, worst, times


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    # Reading package metadata scans site-packages (milliseconds): once per process is enough.
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("hf-advft", "torch", "pyautoattack"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out
