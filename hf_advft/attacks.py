"""Adversarial attacks as pure functions over a `logits_fn` and pixels in [0, 1].

The trainer, the evaluation code and the benchmarks only *call* these functions. Normalization lives in
`hf_advft.pixel_space`, so `epsilon` is always measured in pixel units of images in [0, 1].
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
import torch.nn.functional as F


LogitsFn = Callable[[torch.Tensor], torch.Tensor]
# loss_fn(logits, target) -> per-example loss of shape (batch,); the attack *maximises* it.
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

NORMS = ("linf", "l2")
# Training attacks selectable by name (`AdvTrainingArguments.adv_attack`); the last two take one step (1 pass).
TRAINING_ATTACKS = ("pgd", "fgsm_rs", "n_fgsm")
SINGLE_STEP_ATTACKS = ("fgsm_rs", "n_fgsm")
# `random_start="normal"` starts at x + NORMAL_START_STD * N(0, I): the TRADES reference start (Zhang et al. 2019).
NORMAL_START_STD = 0.001


def cross_entropy_per_example(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The default attack loss: cross-entropy, one value per example (needed to keep the worst restart)."""
    return F.cross_entropy(logits.float(), target, reduction="none")


def check_attack_args(
    *, epsilon: float, steps: int | None = None, norm: str = "linf", step_size: float | None = None,
    restarts: int = 1, prefix: str = "", names: dict[str, str] | None = None, allow_zero_epsilon: bool = True,
) -> None:
    """The one place that validates an attack's epsilon and steps, with messages that say what to do.

    Every entry point calls it: the attacks (`pgd`, `robust_under_pgd`), [`AdvTrainingArguments`] (`adv_epsilon`,
    `adv_eval_epsilon`), [`RobustEvalConfig`] (`epsilon`, `pgd_steps`, so `hf-advft evaluate` too), `hf-advft train`
    and the app. A bad value raises the same `ValueError` everywhere; only the argument's name differs.

    Args:
        epsilon (`float`): The radius, in pixel units of images in [0, 1]: a number >= 0 (> 0 unless
            `allow_zero_epsilon`), at most 1 under `"linf"` (a larger one is a radius written in 0-255 units).
        steps (`int`, *optional*): The iterations, an integer >= 1 (not checked when `None`).
        norm (`str`, defaults to `"linf"`): `"linf"` or `"l2"`.
        step_size (`float`, *optional*): The step, > 0 (not checked when `None`).
        restarts (`int`, defaults to 1): The random restarts, an integer >= 1.
        prefix (`str`): Names the arguments as the caller knows them (`"adv_"` gives `adv_epsilon`, `adv_steps`).
        names (`dict`, *optional*): Names that the prefix does not give, e.g. `{"steps": "pgd_steps"}`.
        allow_zero_epsilon (`bool`, defaults to `True`): An attack with epsilon 0 returns its input; settings refuse 0.

    Example:

    ```python
    >>> from hf_advft.attacks import check_attack_args
    >>> check_attack_args(epsilon=8, steps=10, prefix="adv_")
    Traceback (most recent call last):
    ...
    ValueError: adv_epsilon=8 is larger than the whole [0, 1] pixel range: epsilon is in pixel units of images in [0, 1], so write 8/255 (= 0.0314), not 8.
    ```
    """
    names = names or {}

    def name(arg: str) -> str:
        return names.get(arg, prefix + arg)

    if norm not in NORMS:
        raise ValueError(f"{name('norm')}={norm!r} is unknown: use one of {NORMS}.")
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not math.isfinite(epsilon):
        raise ValueError(f"{name('epsilon')} must be a number in pixel units of images in [0, 1] (e.g. 8/255), got "
                         f"{epsilon!r}.")
    if epsilon < 0 or (epsilon == 0 and not allow_zero_epsilon):
        raise ValueError(f"{name('epsilon')} must be {'>= 0' if allow_zero_epsilon else '> 0'}, got {epsilon:g}: it "
                         f"is in pixel units of images in [0, 1], e.g. 8/255 (= {8 / 255:.4f}).")
    if norm == "linf" and epsilon > 1:
        raise ValueError(f"{name('epsilon')}={epsilon:g} is larger than the whole [0, 1] pixel range: epsilon is in "
                         f"pixel units of images in [0, 1], so write 8/255 (= {8 / 255:.4f}), not {epsilon:g}.")
    if steps is not None and (not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or steps < 1):
        raise ValueError(f"{name('steps')} must be an integer >= 1, got {steps!r} (steps=1 with a random start is "
                         f"FGSM/Fast-AT).")
    if not isinstance(restarts, numbers.Integral) or isinstance(restarts, bool) or restarts < 1:
        raise ValueError(f"{name('restarts')} must be an integer >= 1, got {restarts!r}.")
    if step_size is not None and not step_size > 0:
        raise ValueError(f"{name('step_size')} must be > 0, got {step_size}.")


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.dim() - 1)))


def _project(delta: torch.Tensor, epsilon: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return delta.clamp(-epsilon, epsilon)
    factor = (epsilon / _flat_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
    return delta * factor


def _random_delta(x: torch.Tensor, epsilon: float, norm: str, generator: torch.Generator | None) -> torch.Tensor:
    if norm == "linf":  # one in-place fill, as a hand-written loop does (rand + scale + shift cost more, per step)
        return torch.empty_like(x).uniform_(-epsilon, epsilon, generator=generator)
    # Uniform in the L2 ball: a random direction times a radius drawn as U^(1/d).
    direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    direction = direction / _flat_norm(direction).clamp_min(1e-12)
    d = x[0].numel()
    radius = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype) ** (1.0 / d)
    return direction * radius.view(-1, *([1] * (x.dim() - 1))) * epsilon


def _step(grad: torch.Tensor, step_size: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return step_size * grad.sign()
    return step_size * grad / _flat_norm(grad).clamp_min(1e-12)


def _start(x, epsilon, norm, random_start, generator):
    if random_start == "normal":
        delta = NORMAL_START_STD * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    elif random_start:
        delta = _random_delta(x, epsilon, norm, generator)  # inside the ball already
        return (x + delta).clamp(0.0, 1.0)
    else:
        delta = torch.zeros_like(x)
    # Clamping x + delta to [0, 1] keeps delta inside the ball: both sets are convex and contain x.
    return (x + _project(delta, epsilon, norm)).clamp(0.0, 1.0)


def _one_run(logits_fn, x, target, epsilon, step_size, steps, norm, random_start, loss_fn, generator):
    x_adv = _start(x, epsilon, norm, random_start, generator)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = loss_fn(logits_fn(x_adv), target).sum()
        # Gradient w.r.t. the input only: parameter .grad is never touched, and no graph outlives the step.
        (grad,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            delta = _project(x_adv + _step(grad.float(), step_size, norm) - x, epsilon, norm)
            x_adv = (x + delta).clamp(0.0, 1.0)
    return x_adv.detach()


def _early_stop_run(logits_fn, x, labels, x_adv, epsilon, step_size, steps, norm, loss_fn, fixed_shapes=False):
    # The same loop, over the examples still classified correctly: one that an iterate fools keeps that iterate, and
    # that in-loop prediction is what counts it as broken (predicting it again in another batch can flip it back at
    # the decision boundary). The last iterate is predicted too, so `fooled` is final. With `fixed_shapes` every
    # forward sees the whole batch (the fooled examples frozen): the same iterates, with as many forwards on every
    # process, as sharded models (FSDP, ZeRO-3) need.
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    everyone = active = torch.arange(x.shape[0], device=x.device)
    for step in range(steps + 1):
        rows = everyone if fixed_shapes else active
        xa = x_adv[rows]
        if step < steps:
            xa.requires_grad_(True)
            logits = logits_fn(xa)
            (grad,) = torch.autograd.grad(loss_fn(logits, labels[rows]).sum(), xa)
        else:
            with torch.no_grad():
                logits = logits_fn(xa)
        with torch.no_grad():
            fooled[rows] |= logits.argmax(-1) != labels[rows]
            going = ~fooled[rows]
            active = rows[going]
            if step == steps or (active.numel() == 0 and not fixed_shapes):
                break
            delta = _project(xa.detach()[going] + _step(grad[going].float(), step_size, norm) - x[active], epsilon,
                             norm)
            x_adv[active] = (x[active] + delta).clamp(0.0, 1.0)
    return x_adv.detach(), fooled


def pgd(
    logits_fn: LogitsFn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epsilon: float,
    step_size: float,
    steps: int,
    norm: str = "linf",
    random_start: bool | str = True,
    restarts: int = 1,
    loss_fn: LossFn | None = None,
    generator: torch.Generator | None = None,
    early_stop: bool = False,
) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2018) in the L-inf or L2 ball, on pixels in [0, 1].

    Args:
        logits_fn (`Callable[[torch.Tensor], torch.Tensor]`):
            Maps pixels in [0, 1] of shape `(B, C, H, W)` to logits `(B, num_classes)`. Put normalization inside it
            (see `hf_advft.pixel_space.PixelSpace.wrap`).
        x (`torch.Tensor`): Clean images in [0, 1].
        y (`torch.Tensor`): The target passed to `loss_fn`: labels for cross-entropy, clean probabilities for TRADES.
        epsilon (`float`): Radius of the ball in pixel units (`8/255`, not `8`). `0` returns `x` unchanged.
        step_size (`float`): Step length per iteration (signed gradient for L-inf, normalized gradient for L2).
        steps (`int`): Number of iterations; each costs one forward and one backward pass.
        norm (`str`, defaults to `"linf"`): `"linf"` or `"l2"`.
        random_start (`bool` or `"normal"`, defaults to `True`): Start from a uniform point in the ball. With
            `steps=1` this is FGSM with random start (Fast-AT, Wong et al. 2020). `"normal"` starts at
            `x + 0.001 * N(0, I)`, as the TRADES reference does: its KL loss has a zero gradient at `x` itself.
        restarts (`int`, defaults to `1`): Independent runs; the per-example worst case (highest loss) is kept.
            Each restart after the first adds `steps` forward+backward passes and one forward pass to score it.
        loss_fn (`Callable`, *optional*): `loss_fn(logits, y) -> (B,)` per-example loss to maximise; defaults to
            cross-entropy.
        generator (`torch.Generator`, *optional*): Source of randomness for the random start.
        early_stop (`bool`, defaults to `False`): For evaluation, with `y` the class labels: an example stops moving
            at the first iterate that is misclassified (that iterate is returned: an adversarial example in the
            ball), and later steps attack only the others, so a step costs one pass per example still classified
            correctly. Not combined with `restarts > 1` (rerun on the examples still robust instead).

    Returns:
        `torch.Tensor`: `x_adv`, detached, with `x_adv - x` inside the ball and `x_adv` in [0, 1].

    Example:

    ```python
    >>> import torch
    >>> from hf_advft.attacks import pgd
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    >>> x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> x_adv = pgd(model, x, y, epsilon=8 / 255, step_size=2 / 255, steps=10)
    >>> bool((x_adv - x).abs().max() <= 8 / 255 + 1e-6)
    True
    ```
    """
    check_attack_args(epsilon=epsilon, step_size=step_size, steps=steps, norm=norm, restarts=restarts)
    if isinstance(random_start, str) and random_start != "normal":
        raise ValueError(f"random_start={random_start!r}: use True (uniform in the ball), False or 'normal'.")
    if early_stop and restarts > 1:
        raise ValueError("early_stop keeps the first fooling iterate, restarts the highest-loss one: use restarts=1 "
                         "and rerun on the examples still classified correctly.")
    x = x.detach()
    if x.numel() == 0 or epsilon == 0:
        return x.clone()
    loss_fn = cross_entropy_per_example if loss_fn is None else loss_fn
    run = (logits_fn, x, y, epsilon, step_size, steps, norm, random_start, loss_fn, generator)
    with torch.enable_grad():
        if early_stop:
            return _early_stop_run(logits_fn, x, y, _start(x, epsilon, norm, random_start, generator), epsilon,
                                   step_size, steps, norm, loss_fn)[0]
        best = _one_run(*run)
        if restarts == 1:
            return best
        with torch.no_grad():
            best_loss = loss_fn(logits_fn(best), y)
        for _ in range(restarts - 1):
            candidate = _one_run(*run)
            with torch.no_grad():
                cand_loss = loss_fn(logits_fn(candidate), y)
            better = cand_loss > best_loss
            best = torch.where(better.view(-1, *([1] * (x.dim() - 1))), candidate, best)
            best_loss = torch.where(better, cand_loss, best_loss)
    return best


def robust_under_pgd(
    logits_fn: LogitsFn,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    epsilon: float,
    step_size: float,
    steps: int,
    norm: str = "linf",
    restarts: int = 1,
    generator: torch.Generator | None = None,
    correct: torch.Tensor | None = None,
    fixed_shapes: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which examples PGD fails to break: the one rule behind every PGD robust accuracy hf-advft reports.

    An example is robust when it is classified correctly and no iterate of any restart fools the model. Each restart
    starts at a uniform random point of the ball and attacks only the examples every earlier restart missed; an
    example stops at the first iterate that fools the model (an adversarial example in the ball), and that in-loop
    prediction counts it as broken. `AdvTrainer`'s `eval_robust_accuracy`, `evaluate_robustness` and the benchmarks
    all count this way.

    Args:
        logits_fn (`Callable[[torch.Tensor], torch.Tensor]`): Pixels in [0, 1] to logits, as for [`pgd`].
        x (`torch.Tensor`): Clean images in [0, 1]. labels (`torch.Tensor`): Class labels.
        epsilon (`float`), step_size (`float`), steps (`int`), norm (`str`, defaults to `"linf"`): As for [`pgd`].
        restarts (`int`, defaults to `1`): Random restarts, each on the examples still robust.
        generator (`torch.Generator`, *optional*): Source of the random starts.
        correct (`torch.Tensor`, *optional*): Whether each clean example is classified correctly; predicted here
            (one forward pass) when not given. Examples classified wrongly are not attacked.
        fixed_shapes (`bool`, defaults to `False`): Give every forward the whole batch (the broken examples frozen),
            so that every process runs the same passes, as sharded models (FSDP, DeepSpeed ZeRO-3) need.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: the robust flags `(B,)` and `x_adv`: the fooling iterate of each broken
        example, the last iterate of a robust one (`x` itself for an example never attacked).

    Example:

    ```python
    >>> import torch
    >>> from hf_advft.attacks import robust_under_pgd
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    >>> x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> robust, x_adv = robust_under_pgd(model, x, y, epsilon=8 / 255, step_size=2 / 255, steps=10)
    >>> robust.shape, bool((x_adv - x).abs().max() <= 8 / 255 + 1e-6)
    (torch.Size([4]), True)
    ```
    """
    check_attack_args(epsilon=epsilon, step_size=step_size, steps=steps, norm=norm, restarts=restarts)
    x = x.detach()
    if correct is None:
        with torch.no_grad():
            correct = logits_fn(x).argmax(-1) == labels
    robust, x_adv = correct.clone().bool(), x.clone()
    if x.numel() == 0 or epsilon == 0:
        return robust, x_adv
    with torch.enable_grad():
        for _ in range(restarts):
            rows = torch.arange(x.shape[0], device=x.device) if fixed_shapes else robust.nonzero().flatten()
            if rows.numel() == 0:
                break
            xs, attacked = x[rows], robust[rows]
            start = _start(xs, epsilon, norm, True, generator)
            candidate, fooled = _early_stop_run(logits_fn, xs, labels[rows], start, epsilon, step_size, steps, norm,
                                                cross_entropy_per_example, fixed_shapes)
            x_adv[rows[attacked]] = candidate[attacked]
            robust[rows[attacked & fooled]] = False
    return robust, x_adv


def fgsm(logits_fn: LogitsFn, x: torch.Tensor, y: torch.Tensor, *, epsilon: float, step_size: float | None = None,
         random_start: bool = True, norm: str = "linf", loss_fn: LossFn | None = None,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """FGSM with random start (Fast-AT, Wong et al. 2020): one PGD step of `step_size` (default `1.25 * epsilon`)."""
    step_size = 1.25 * epsilon if step_size is None else step_size
    return pgd(logits_fn, x, y, epsilon=epsilon, step_size=step_size, steps=1, norm=norm,
               random_start=random_start, loss_fn=loss_fn, generator=generator)


def n_fgsm(logits_fn: LogitsFn, x: torch.Tensor, y: torch.Tensor, *, epsilon: float, noise_factor: float = 2.0,
           step_size: float | None = None, norm: str = "linf", loss_fn: LossFn | None = None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """N-FGSM (de Jorge et al., NeurIPS 2022): strong noise, one step, and no projection back to the eps-ball.

    Draws noise uniformly in the ball of radius `noise_factor * epsilon` (k = 2 in the paper), takes one gradient step
    of `step_size` (default `epsilon`) from the noisy point, and clamps only to [0, 1]. So `x_adv - x` can reach
    `(noise_factor + 1) * epsilon` (3 eps): the larger perturbation is what keeps single-step training from
    catastrophic overfitting without clipping. One forward and one backward pass.

    Args:
        logits_fn (`Callable[[torch.Tensor], torch.Tensor]`): Maps pixels in [0, 1] to logits.
        x (`torch.Tensor`): Clean images in [0, 1].
        y (`torch.Tensor`): Target of `loss_fn` (labels for cross-entropy).
        epsilon (`float`): The training radius in pixel units; `0` returns `x` unchanged.
        noise_factor (`float`, defaults to `2.0`): Radius of the noise, in units of `epsilon`.
        step_size (`float`, *optional*): Step length; defaults to `epsilon`.
        norm (`str`, defaults to `"linf"`): `"linf"` (the paper's) or `"l2"` (the same recipe in the L2 ball).
        loss_fn (`Callable`, *optional*): Per-example loss to maximise; defaults to cross-entropy.
        generator (`torch.Generator`, *optional*): Source of randomness for the noise.

    Returns:
        `torch.Tensor`: `x_adv` in [0, 1], detached.

    Example:

    ```python
    >>> import torch
    >>> from hf_advft.attacks import n_fgsm
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    >>> x, y = torch.rand(4, 3, 8, 8) * 0.5 + 0.25, torch.tensor([0, 1, 2, 3])
    >>> x_adv = n_fgsm(model, x, y, epsilon=8 / 255)
    >>> bool((x_adv - x).abs().max() <= 3 * 8 / 255 + 1e-6)
    True
    ```
    """
    check_attack_args(epsilon=epsilon, norm=norm)
    step_size = epsilon if step_size is None else step_size
    if noise_factor < 0 or step_size < 0:
        raise ValueError(f"noise_factor and step_size must be >= 0, got {noise_factor} and {step_size}.")
    x = x.detach()
    if x.numel() == 0 or epsilon == 0:
        return x.clone()
    loss_fn = cross_entropy_per_example if loss_fn is None else loss_fn
    with torch.enable_grad():
        x_noisy = (x + _random_delta(x, noise_factor * epsilon, norm, generator)).clamp(0.0, 1.0).requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(logits_fn(x_noisy), y).sum(), x_noisy)
    with torch.no_grad():
        return (x_noisy + _step(grad.float(), step_size, norm)).clamp(0.0, 1.0).detach()
