"""Optional training-time helpers of `AdvTrainer`, each behind an `AdvTrainingArguments` option.

- `freeze_batchnorm_stats` (`adv_freeze_bn`): BatchNorm layers normalise with their running statistics and stop
  updating them, while their affine weights still train.
- `AdversarialWeightPerturbation` (`adv_awp_gamma`): AWP, a `TrainerCallback` that takes its perturbation back after
  each optimizer step.
- `WeightEma` (`adv_ema_decay`): the weight EMA, through `timm.utils.ModelEmaV3`, swapped in for evaluation and saving.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import nn
from transformers import TrainerCallback
from transformers.utils import logging

from .hub import PUSH_IGNORE


logger = logging.get_logger(__name__)

# In a checkpoint of a run with adv_ema_decay, `model.safetensors` holds the EMA; training resumes from these.
NON_EMA_WEIGHTS_NAME = PUSH_IGNORE[0]


def batchnorm_modules(model: nn.Module) -> list[nn.Module]:
    """Every BatchNorm layer of `model` (`torch.nn` BatchNorm1d/2d/3d, SyncBatchNorm, and subclasses like timm's
    `BatchNormAct2d`)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def freeze_batchnorm_stats(model: nn.Module) -> int:
    """Put every BatchNorm layer of `model` in eval mode, so its running statistics are used and not updated.

    `Trainer.training_step` calls `model.train()` before every step, so `AdvTrainer` calls this after it, in
    `compute_loss`. Parameters keep `requires_grad`: the BatchNorm affine weights still train. Returns the number of
    layers frozen.
    """
    layers = batchnorm_modules(model)
    for m in layers:
        m.eval()
    return len(layers)


@contextmanager
def batchnorm_stats_kept(model: nn.Module):
    """Run a block in which normalization layers may normalise with batch statistics, then put their running
    statistics back as they were: the AWP ascent step and a train-mode attack must not count as updates of them.

    Covers every layer that tracks running statistics (BatchNorm, SyncBatchNorm, InstanceNorm with
    `track_running_stats=True`).
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats]
    saved = [[b.detach().clone() if b is not None else None for b in (m.running_mean, m.running_var,
                                                                       m.num_batches_tracked)] for m in layers]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, values in zip(layers, saved):
                for buf, value in zip((m.running_mean, m.running_var, m.num_batches_tracked), values):
                    if buf is not None:
                        buf.copy_(value)


class AdversarialWeightPerturbation(TrainerCallback):
    """AWP (Wu et al., NeurIPS 2020, "Adversarial Weight Perturbation Helps Robust Generalization"): `adv_awp_gamma`.

    Before the update, every trainable weight matrix / kernel `w` (biases and normalization weights, `dim <= 1`, are
    left alone, as in the authors' code) is moved by `gamma * ||w|| * g / ||g||`, with `g` the gradient of the
    training loss on the adversarial batch: one ascent step, layer-wise relative to the weight's norm. The update's
    gradient is then taken at the perturbed weights and, right after the optimizer step (`on_optimizer_step`), the
    perturbation is taken back: each weight ends at `w + u`, `u` being the optimizer's update, exactly (with `u = 0`
    the weights come back bitwise). The authors' code takes the same direction through a proxy model and one SGD
    step; the normalization makes its learning rate irrelevant. With gradient accumulation the perturbation is made
    on the first micro-batch of each optimizer step and kept for the others.
    """

    def __init__(self, gamma: float):
        self.gamma = gamma
        self._saved: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None

    @property
    def perturbed(self) -> bool:
        return self._saved is not None

    def perturb(self, model: nn.Module, loss: torch.Tensor, reduce: Callable[[torch.Tensor], torch.Tensor] | None
                = None) -> None:
        """Perturb `model`'s weights along the gradient of `loss` (a graph over them); `reduce` averages the
        gradient over processes, so every DDP rank applies the same perturbation."""
        params = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        pairs = [(p, g) for p, g in zip(params, grads) if g is not None]
        if reduce is not None and pairs:
            flat = reduce(torch.cat([g.detach().float().flatten() for _, g in pairs]))
            grads = torch.split(flat, [g.numel() for _, g in pairs])
            pairs = [(p, g.view_as(p)) for (p, _), g in zip(pairs, grads)]
        saved = []
        with torch.no_grad():
            for p, g in pairs:
                g = g.to(p.dtype)
                delta = self.gamma * p.norm() / (g.norm() + 1e-20) * g
                original = p.detach().clone()
                p.add_(delta)
                saved.append((p, original, delta))
        self._saved = saved

    def restore(self) -> None:
        """Take the perturbation back, keeping what the optimizer changed since `perturb`."""
        if self._saved is None:
            return
        with torch.no_grad():
            for p, original, delta in self._saved:
                p.copy_(original + (p - (original + delta)))
        self._saved = None

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.restore()


class WeightEma(TrainerCallback):
    """The exponential moving average of the weights (`adv_ema_decay`), kept by `timm.utils.ModelEmaV3`.

    Holds a copy of the unwrapped model (every DDP rank updates its own copy from identical weights, so the copies
    agree) and updates it after every optimizer step (`on_step_end`). `applied()` swaps the averaged weights into the
    model for a block (evaluation, saving) and back; `AdvTrainer` does that for `evaluate`, `predict` and every save.
    """

    def __init__(self, model: nn.Module, decay: float):
        from timm.utils import ModelEmaV3

        self.model = model
        self.ema = ModelEmaV3(model, decay=decay)

    def on_step_end(self, args, state, control, **kwargs):
        self.ema.update(self.model)

    def _pairs(self):
        seen = set()
        for live, avg in zip(self.model.state_dict().values(), self.ema.module.state_dict().values()):
            if live.data_ptr() not in seen:  # tied weights appear twice in a state dict: swap them once
                seen.add(live.data_ptr())
                yield live, avg

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the live weights and the averaged ones."""
        for live, avg in self._pairs():
            tmp = live.clone()
            live.copy_(avg)
            avg.copy_(tmp)

    @contextmanager
    def applied(self):
        self.swap()
        try:
            yield
        finally:
            self.swap()

    def save_live_weights(self, folder: str) -> None:
        """Write the live (non-averaged) weights into a checkpoint folder, whose model weights are the EMA."""
        import safetensors.torch

        os.makedirs(folder, exist_ok=True)
        safetensors.torch.save_model(self.model, os.path.join(folder, NON_EMA_WEIGHTS_NAME))

    def resume_from(self, folder: str) -> None:
        """After the Trainer loaded a checkpoint's (EMA) weights into the model: they become the average again, and
        the live weights saved beside them go back into the model."""
        import safetensors.torch

        self.copy_from_model()
        path = os.path.join(folder, NON_EMA_WEIGHTS_NAME)
        if not os.path.isfile(path):
            logger.warning(f"{folder} has no {NON_EMA_WEIGHTS_NAME} (saved without adv_ema_decay?): training "
                           f"resumes from its model weights, and the average starts from them.")
            return
        safetensors.torch.load_model(self.model, path, device=str(next(self.model.parameters()).device))

    @torch.no_grad()
    def copy_to_model(self) -> None:
        for live, avg in self._pairs():
            live.copy_(avg)

    @torch.no_grad()
    def copy_from_model(self) -> None:
        for live, avg in self._pairs():
            avg.copy_(live)
