"""The slow-start-fast-decay learning-rate schedule (Jeddi, Shafiee, Wong, arXiv 2012.13628).

Written the transformers way: a pure `lr_lambda(step)` inside a `LambdaLR`, because `Trainer` calls
`scheduler.step()` with no arguments. Select it with `AdvTrainingArguments(lr_scheduler_type="slow_start_fast_decay")`
and shape it with `lr_scheduler_kwargs`, as with `"cosine"`.

The defaults (half the run spent on the slow start, exponential decay to 20% of the peak) are ours, chosen by the
sweep in `benchmarks/README.md` ("Schedule defaults"); they are not numbers from the paper.
"""

from __future__ import annotations

import math
from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


SLOW_START_FAST_DECAY = "slow_start_fast_decay"
DECAYS = ("exponential", "linear", "cosine")


def slow_start_fast_decay_lambda(
    step: int, *, num_warmup_steps: int, num_training_steps: int, decay: str, min_lr_ratio: float
) -> float:
    """The LR multiplier at `step`: linear from 0 to 1 over `num_warmup_steps`, then a decay from 1 to `min_lr_ratio`.

    `"exponential"` decays geometrically (`min_lr_ratio ** progress`): fast at first, slow near the floor.
    """
    if step < num_warmup_steps:
        return float(step) / float(max(1, num_warmup_steps))
    progress = min(1.0, (step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps)))
    if decay == "exponential":
        return min_lr_ratio**progress
    if decay == "linear":
        return 1.0 - (1.0 - min_lr_ratio) * progress
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def get_slow_start_fast_decay_schedule(
    optimizer: Optimizer,
    num_training_steps: int,
    num_warmup_steps: int | None = None,
    *,
    warmup_ratio: float = 0.5,
    decay: str = "exponential",
    min_lr_ratio: float = 0.2,
    last_epoch: int = -1,
) -> LambdaLR:
    """Slow (linear) start to the peak learning rate, then a fast decay to a floor.

    Args:
        optimizer (`torch.optim.Optimizer`): The optimizer; every param group follows the same multiplier.
        num_training_steps (`int`): Total optimizer steps.
        num_warmup_steps (`int`, *optional*): Steps of the slow start. `None` uses `warmup_ratio`.
        warmup_ratio (`float`, defaults to `0.5`): Fraction of the run spent rising to the peak when
            `num_warmup_steps` is not given. A long slow start beat a short warm-up in our measurement.
        decay (`str`, defaults to `"exponential"`): `"exponential"`, `"linear"` or `"cosine"`.
        min_lr_ratio (`float`, defaults to `0.2`): The floor, as a fraction of the peak LR, reached at the last step.
            Must be > 0 for `"exponential"`. Exponential decay to 0.01 lost 4-10 points of PGD accuracy in our sweep.
        last_epoch (`int`, defaults to `-1`): The index of the last step when resuming.

    Example:

    ```python
    >>> import torch
    >>> from hf_advft.schedules import get_slow_start_fast_decay_schedule
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    >>> sched = get_slow_start_fast_decay_schedule(opt, num_training_steps=100)
    >>> [round(sched.lr_lambdas[0](s), 3) for s in (0, 25, 50, 75, 100)]
    [0.0, 0.5, 1.0, 0.447, 0.2]
    ```
    """
    if num_training_steps < 1:
        raise ValueError(f"num_training_steps must be >= 1, got {num_training_steps}.")
    if decay not in DECAYS:
        raise ValueError(f"Unknown decay {decay!r}: use one of {DECAYS} (lr_scheduler_kwargs={{'decay': ...}}).")
    if not 0.0 <= warmup_ratio <= 1.0:
        raise ValueError(f"warmup_ratio must be in [0, 1], got {warmup_ratio}.")
    if not 0.0 <= min_lr_ratio <= 1.0 or (decay == "exponential" and min_lr_ratio == 0.0):
        raise ValueError(
            f"min_lr_ratio must be in (0, 1] for exponential decay and in [0, 1] otherwise, got {min_lr_ratio}."
        )
    if num_warmup_steps is None:
        num_warmup_steps = round(warmup_ratio * num_training_steps)
    if not 0 <= num_warmup_steps <= num_training_steps:
        raise ValueError(f"num_warmup_steps must be in [0, {num_training_steps}], got {num_warmup_steps}.")
    lr_lambda = partial(
        slow_start_fast_decay_lambda,
        num_warmup_steps=num_warmup_steps,
        num_training_steps=num_training_steps,
        decay=decay,
        min_lr_ratio=min_lr_ratio,
    )
    return LambdaLR(optimizer, lr_lambda, last_epoch)


def epsilon_factor(
    step: int, num_training_steps: int, *, schedule: str, warmup_ratio: float, delay_ratio: float = 0.0
) -> float:
    """Fraction of the full epsilon used at optimizer step `step` (0-based).

    The first `round(delay_ratio * num_training_steps)` steps use epsilon 0 (clean training: the attack does not run).
    After them, `"constant"` is 1, and `"linear"` ramps from `1 / ramp` at the first step after the delay to 1 at the
    end of the next `ramp = round(warmup_ratio * num_training_steps)` steps (Ngnawé et al., ICLR 2026, "Epsilon
    Scheduling": a non-robust model adapts badly when the full epsilon is applied from step 0). Without a delay this is
    the ramp `"linear"` always had: `1 / ramp` at step 0.

    Example:

    ```python
    >>> from hf_advft.schedules import epsilon_factor
    >>> [epsilon_factor(s, 10, schedule="linear", warmup_ratio=0.4, delay_ratio=0.2) for s in range(8)]
    [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    ```
    """
    delay = round(delay_ratio * num_training_steps)
    if step < delay:
        return 0.0
    if schedule == "constant":
        return 1.0
    ramp = max(1, round(warmup_ratio * num_training_steps))
    return min(1.0, (step - delay + 1) / ramp)
