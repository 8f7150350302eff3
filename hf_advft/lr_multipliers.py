"""Per-parameter learning-rate multipliers: `lr_multipliers={"conv_stem": 3.0}` trains the matching parameters at 3x the LR.

The Trainer builds one optimizer over two param groups (with and without weight decay). `lr_multipliers` maps regular
expressions, searched (`re.search`) in the parameter names of `model.named_parameters()`, to a multiplier; each matching
parameter moves to a param group of its own whose LR is its old group's times the multiplier (the first pattern that
matches wins). The LR schedule then scales every group alike, so the ratio holds at every step.

The reason we ship it: a gray-image network built with one input channel (timm's `in_chans=1` sums the three RGB
filters of the first convolution into one) trains its stem at a third of the speed of the same network fed the gray
image repeated into three channels. There each of the three copies gets the same gradient, and SGD or Adam moves each
by the same step, so their sum, which is all the gray pixels see, moves 3x as far. A multiplier of 3 on the 1-channel
stem gives the same updates exactly with SGD or Adam, and with AdamW when the stem's weight decay is 0 (decoupled weight
decay scales with the LR: with a multiplier the stem decays 3x as fast), without gradient clipping (the 3-copy network
counts the stem's gradient 3 times in the norm) and up to Adam's `eps`.

Example:

```python
>>> import torch
>>> from hf_advft.lr_multipliers import apply_lr_multipliers
>>> model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
>>> optimizer = torch.optim.AdamW([p for p in model.parameters()], lr=1e-3)
>>> apply_lr_multipliers(optimizer, model, {r"^0\\.weight$": 3.0})
{'0.weight': 3.0}
>>> [group["lr"] for group in optimizer.param_groups]
[0.001, 0.003]
```
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments
from transformers.utils import logging


logger = logging.get_logger(__name__)

LR_MULTIPLIERS_HELP = (
    "Learning-rate multipliers by parameter name: a mapping (JSON on the command line, e.g. '{\"conv_stem\": 3}') of "
    "regular expressions, searched in the names of model.named_parameters(), to a multiplier of the LR (the first "
    "pattern that matches wins; each must match a trainable parameter). E.g. {\"conv_stem\": 3} for a gray network "
    "built with in_chans=1 trains its stem as fast as the 3-channel network fed the image repeated would. None: off."
)


def parse_lr_multipliers(value, name: str = "lr_multipliers") -> dict[str, float] | None:
    """Check `value` (a mapping, its JSON text, or None) and return it as `{pattern: float}`, or None when empty."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"{name} must be a JSON mapping of parameter-name patterns to LR multipliers, e.g. "
                             f"'{{\"conv_stem\": 3}}', got {value!r} ({err}).") from None
    if not isinstance(value, dict):
        raise TypeError(f"{name} must map parameter-name patterns to LR multipliers, e.g. {{'conv_stem': 3}}, got "
                        f"{type(value).__name__} {value!r}.")
    checked = {}
    for pattern, multiplier in value.items():
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"{name}: every key must be a non-empty regular expression string, got {pattern!r}.")
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(f"{name}: {pattern!r} is not a valid regular expression ({err}).") from None
        if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)) or not math.isfinite(multiplier) \
                or multiplier <= 0:
            raise ValueError(f"{name}[{pattern!r}] must be a positive number (the factor on the LR), got "
                             f"{multiplier!r}. To freeze parameters, set requires_grad=False instead.")
        checked[pattern] = float(multiplier)
    return checked or None


def apply_lr_multipliers(optimizer: torch.optim.Optimizer, model: torch.nn.Module,
                         multipliers: dict[str, float]) -> dict[str, float]:
    """Move the parameters of `model` whose names match a pattern of `multipliers` into param groups of their own.

    Each new group copies its old group's settings (weight decay, betas...) with `lr` times the multiplier; the first
    group stays, empty if every parameter left it, since the Trainer logs its LR as the run's. Call it on
    a fresh optimizer, before its LR scheduler is built and before any step. Returns `{parameter name: multiplier}`.
    Raises `ValueError` when a pattern matches no parameter of the optimizer (a typo, or names that FSDP flattened).
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"lr_multipliers needs a torch.optim.Optimizer to split into param groups, got "
                        f"{type(optimizer).__name__}: give that optimizer its param groups yourself.")
    if any(optimizer.state.values()):
        raise ValueError("lr_multipliers must be applied to a fresh optimizer, before its first step.")
    names = {}
    for name, param in model.named_parameters():
        names.setdefault(param, name)
    patterns = [(re.compile(pattern), pattern) for pattern in multipliers]
    matched = {pattern: [] for pattern in multipliers}
    plan = []  # (group, kept params, {pattern: moved params})
    for group in optimizer.param_groups:
        kept, moved = [], {}
        for param in group["params"]:
            name = names.get(param)
            pattern = next((p for regex, p in patterns if name is not None and regex.search(name)), None)
            if pattern is None:
                kept.append(param)
            else:
                moved.setdefault(pattern, []).append(param)
                matched[pattern].append(name)
        plan.append((group, kept, moved))
    unmatched = [pattern for pattern, hit in matched.items() if not hit]
    if unmatched:
        trainable = [n for group in optimizer.param_groups for n in map(names.get, group["params"]) if n]
        # FSDP1 flattens each wrapped module's parameters into one `_flat_param`, whose name no pattern can target.
        flattened = any("_flat_param" in n for n in trainable)
        hint = (" FSDP flattened the parameters, so their names are gone: set `fsdp_use_orig_params: true` (FSDP1) "
                "or use FSDP2 (`fsdp_version: 2`), which keep them." if flattened else " Fix the pattern, or drop it.")
        raise ValueError(f"lr_multipliers: {unmatched} match no parameter the optimizer trains (re.search on names "
                         f"such as {trainable[:4]}).{hint}")
    new_groups = []
    for group, kept, moved in plan:
        group["params"] = kept
        for pattern, params in moved.items():
            new_groups.append({**group, "params": params, "lr": group["lr"] * multipliers[pattern]})
    # The first group stays, even emptied: the Trainer logs its LR as `learning_rate` (the base LR, not a multiple).
    optimizer.param_groups[:] = [group for i, group in enumerate(optimizer.param_groups) if group["params"] or i == 0]
    for group in new_groups:
        optimizer.add_param_group(group)
    scaled = {name: multipliers[pattern] for pattern, hit in matched.items() for name in hit}
    logger.info("lr_multipliers: %s", ", ".join(f"{name} x{m:g}" for name, m in scaled.items()))
    return scaled


class LrMultipliersMixin:
    """A `Trainer` mixin: the optimizer the Trainer creates gets `args.lr_multipliers` (None: unchanged)."""

    def create_optimizer(self, model=None):
        created_here = self.optimizer is None
        optimizer = super().create_optimizer(model)
        multipliers = getattr(self.args, "lr_multipliers", None)
        if multipliers and created_here:
            apply_lr_multipliers(optimizer, self.model if model is None else model, multipliers)
        return optimizer

    @staticmethod
    def check_lr_multipliers_optimizer(args, optimizers) -> None:
        """Refuse `lr_multipliers` beside an optimizer passed in `optimizers=(...)`, which they would not reach."""
        if getattr(args, "lr_multipliers", None) and optimizers and optimizers[0] is not None:
            raise ValueError("lr_multipliers applies to the optimizer the Trainer creates, but optimizers=(...) passed "
                             "one: build its param groups with the LRs you want, or drop lr_multipliers.")


@dataclass(repr=False)
class CleanTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus `lr_multipliers`, for clean (non-adversarial) training with a `Trainer` that takes
    `LrMultipliersMixin` (as `recipes/pretrain_timm.py` does)."""

    lr_multipliers: dict | str | None = field(default=None, metadata={"help": LR_MULTIPLIERS_HELP})

    def __post_init__(self):
        self.lr_multipliers = parse_lr_multipliers(self.lr_multipliers)
        super().__post_init__()
