"""Optional training-time helpers of `AdvTrainer`, each behind an `AdvTrainingArguments` option.

- `freeze_batchnorm_stats` (`adv_freeze_bn`): BatchNorm layers normalise with their running statistics and stop
  updating them, while their affine weights still train.
"""

from __future__ import annotations

from torch import nn


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
