"""One place for normalization, so that `epsilon` always means pixel units of images in [0, 1].

Models expect normalized inputs `(pixels - mean) / std`; attacks run on pixels in [0, 1]. `PixelSpace` converts
between the two. Mean and std are resolved, in this order, from explicit arguments, the image processor passed to
the trainer as `processing_class` (`image_mean`, `image_std`, `do_normalize`), or a timm model's `pretrained_cfg`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


# Pixels that leave [0, 1] by more than this after de-normalization mean the guessed normalization is wrong.
RANGE_TOLERANCE = 1e-3
# A batch of at least this many images whose de-normalized pixels all lie within [mean, mean + std] (give or take
# RAW_MARGIN) in every channel is taken for raw [0, 1] pixels that were never normalized.
RAW_CHECK_MIN_IMAGES = 4
RAW_MARGIN = 0.01


@dataclass(frozen=True)
class PixelSpace:
    """Maps model inputs to pixels in [0, 1] and back.

    Args:
        mean (`Sequence[float]`, *optional*): Per-channel mean used to normalize the model's inputs.
        std (`Sequence[float]`, *optional*): Per-channel std. With neither, model inputs *are* pixels in [0, 1].
        source (`str`): Where mean/std came from (shown in error messages).

    Example:

    ```python
    >>> import torch
    >>> from hf_advft.pixel_space import PixelSpace
    >>> space = PixelSpace(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), source="explicit")
    >>> space.to_pixels(torch.zeros(1, 3, 2, 2)).unique().item()
    0.5
    ```
    """

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    source: str = "none"
    _stats_cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        if (self.mean is None) != (self.std is None):
            raise ValueError("Pass both mean and std, or neither.")
        if self.mean is not None:
            object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
            object.__setattr__(self, "std", tuple(float(s) for s in self.std))
            if len(self.mean) != len(self.std):
                raise ValueError(f"mean has {len(self.mean)} channels but std has {len(self.std)}.")
            if any(s <= 0 for s in self.std):
                raise ValueError(f"std must be positive, got {self.std}.")

    @property
    def is_identity(self) -> bool:
        return self.mean is None or (all(m == 0 for m in self.mean) and all(s == 1 for s in self.std))

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() < 3 or x.shape[-3] != len(self.mean):
            raise ValueError(
                f"Normalization from {self.source} has {len(self.mean)} channels but the input has shape "
                f"{tuple(x.shape)} (expected (batch, {len(self.mean)}, height, width))."
            )
        # Cached per device and dtype: the attack normalizes on every step, and a new tensor on a GPU is a
        # host-to-device copy each time.
        key = (x.device, x.dtype)
        if key not in self._stats_cache:
            shape = (len(self.mean), 1, 1)
            self._stats_cache[key] = (torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(shape),
                                      torch.tensor(self.std, device=x.device, dtype=x.dtype).view(shape))
        return self._stats_cache[key]

    def to_pixels(self, x: torch.Tensor, *, check: bool = False) -> torch.Tensor:
        """Model inputs to pixels in [0, 1].

        With `check=True`, raise if they fall outside [0, 1], or if a batch of images looks un-normalized: raw pixels
        in [0, 1] fed to a model that expects normalized inputs land, once de-normalized, in [mean, mean + std] per
        channel, inside [0, 1], and the attack's real radius would be `epsilon / std`.
        """
        if not self.is_identity:
            mean, std = self._stats(x)
            x = x * std + mean
        if check:
            per_channel = x.movedim(-3, 0).flatten(1) if x.dim() >= 4 and not self.is_identity else x.reshape(1, -1)
            lo, hi = (v.tolist() for v in torch.aminmax(per_channel, dim=1))  # one device sync for all channels
            if min(lo) < -RANGE_TOLERANCE or max(hi) > 1 + RANGE_TOLERANCE:
                raise ValueError(self._range_message(min(lo), max(hi)))
            if x.dim() >= 4 and x.shape[0] >= RAW_CHECK_MIN_IMAGES and self._looks_raw(lo, hi):
                raise ValueError(self._raw_message(lo, hi, x.shape[0]))
        return x.clamp(0.0, 1.0)

    def _looks_raw(self, lo: list[float], hi: list[float]) -> bool:
        if self.is_identity:
            return False
        # Real images reach dark pixels (below the mean) in some channel of a batch; raw [0, 1] inputs never do.
        return all(lo_c >= m - RAW_MARGIN and hi_c <= m + s + RAW_MARGIN
                   for lo_c, hi_c, m, s in zip(lo, hi, self.mean, self.std))

    def _raw_message(self, lo: list[float], hi: list[float], n: int) -> str:
        ranges = ", ".join(f"[{a:.3f}, {b:.3f}]" for a, b in zip(lo, hi))
        return (
            f"The inputs look un-normalized: after undoing the normalization from {self.source} (mean={self.mean}, "
            f"std={self.std}), all {n} images of this batch lie per channel in {ranges}, within [mean, mean + std]: "
            f"exactly where raw [0, 1] pixels land. The attack would then move pixels by epsilon / std, not epsilon. "
            f"Normalize the inputs the way the model expects (its image processor, or Normalize(mean, std) in your "
            f"transforms); if the model really takes raw pixels in [0, 1], declare it with adv_image_mean=[0, 0, 0] "
            f"and adv_image_std=[1, 1, 1] (evaluate_robustness: mean=[0, 0, 0], std=[1, 1, 1])."
        )

    def to_model(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] to the model's normalized inputs."""
        if self.is_identity:
            return pixels
        mean, std = self._stats(pixels)
        return (pixels - mean) / std

    def wrap(self, model_logits_fn):
        """Turn `f(normalized inputs) -> logits` into `f(pixels in [0, 1]) -> logits`, for the attacks."""
        if self.is_identity:
            return model_logits_fn
        return lambda pixels: model_logits_fn(self.to_model(pixels))

    def _range_message(self, lo: float, hi: float) -> str:
        if self.mean is None:
            return (
                f"Inputs range over [{lo:.3f}, {hi:.3f}], outside [0, 1], and no normalization is known, so epsilon "
                f"cannot be measured in pixel units. Pass the normalization your transforms apply: "
                f"AdvTrainingArguments(adv_image_mean=[...], adv_image_std=[...]) or an image processor as "
                f"`processing_class`; or feed pixels in [0, 1]."
            )
        return (
            f"After undoing the normalization from {self.source} (mean={self.mean}, std={self.std}) the inputs range "
            f"over [{lo:.3f}, {hi:.3f}], outside [0, 1]: your transforms normalize differently. Pass the mean/std "
            f"they use as adv_image_mean/adv_image_std (use [0, 0, 0] and [1, 1, 1] for raw pixels in [0, 1])."
        )


def resolve_pixel_space(
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    processor: Any = None,
    model: Any = None,
) -> PixelSpace:
    """Find the normalization: explicit `mean`/`std`, then the image `processor`, then timm's `pretrained_cfg`.

    Returns an identity `PixelSpace` when none is known (inputs are then required to lie in [0, 1]).
    """
    if mean is not None or std is not None:
        if mean is None or std is None:
            raise ValueError("Pass both adv_image_mean and adv_image_std, or neither.")
        return PixelSpace(tuple(mean), tuple(std), source="explicit mean/std")
    if processor is not None:
        # A processor wrapping an image processor (e.g. AutoProcessor) keeps it as `.image_processor`.
        image_processor = getattr(processor, "image_processor", processor)
        p_mean, p_std = getattr(image_processor, "image_mean", None), getattr(image_processor, "image_std", None)
        if p_mean is not None and p_std is not None:
            if not getattr(image_processor, "do_normalize", True):
                return PixelSpace(source=f"{type(image_processor).__name__} (do_normalize=False)")
            return PixelSpace(_per_channel(p_mean), _per_channel(p_std), source=type(image_processor).__name__)
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("mean") is not None and cfg.get("std") is not None:
        return PixelSpace(tuple(cfg["mean"]), tuple(cfg["std"]), source="timm pretrained_cfg")
    return PixelSpace()


def _per_channel(value) -> tuple[float, ...]:
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    return tuple(float(v) for v in value)
