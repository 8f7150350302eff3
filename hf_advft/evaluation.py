"""Robust evaluation: every robustness number hf-advft prints, logs or writes into a model card comes from here.

`evaluate_robustness` attacks the initially-correct examples with PGD (restarts), AutoAttack (Croce & Hein 2020,
through the optional `pyautoattack` package) and/or the black-box Square attack, traces accuracy against epsilon
(the robustness curve and its normalized area, the *expected robustness*), and runs the cheap part of Carlini et al.
(2019)'s checklist for gradient masking, warning when a check fails. All attacks see pixels in [0, 1]
(`hf_advft.pixel_space`), so `epsilon` is in pixel units whatever normalization the model expects.

This module runs the evaluation and is the public home of every name in `__all__`; the settings and the result
live in `hf_advft.evaluation_config`, the curve's plot in `hf_advft.evaluation_plot`, the attack runners in
`hf_advft.evaluation_utils` and the gradient-masking checks in `hf_advft.masking_checks`.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, fields, replace
from typing import Any

import numpy as np
import torch
from transformers.utils import logging

from .evaluation_config import (  # noqa: F401 (KNOWN_ATTACKS, ...: public here too, `hf_advft.evaluation` is their home)
    AUTOATTACK_VERSIONS,
    KNOWN_ATTACKS,
    ROBUSTNESS_JSON,
    ROBUSTNESS_PNG,
    RobustEvalConfig,
    RobustnessResult,
    expected_robustness,
)
from .evaluation_plot import plot_robustness_curve
from .evaluation_utils import (
    PixelModel,
    autoattack_robust_flags,
    collect_examples,
    evaluation_mode,
    evaluation_precision,
    fraction,
    import_autoattack,
    package_versions,
    pgd_robust_flags,
    predict,
    to_pixels,
)
from .masking_checks import (  # noqa: F401  (GradientMaskingWarning, MaskingCheck: public here too)
    CHECK_SLACK,
    GradientMaskingWarning,
    MaskingCheck,
    run_masking_checks,
)
from .pixel_space import PixelSpace, resolve_pixel_space
from .weights_hash import model_weights_sha256


logger = logging.get_logger(__name__)

__all__ = [
    "GradientMaskingWarning",
    "MaskingCheck",
    "RobustEvalConfig",
    "RobustnessResult",
    "compute_accuracy",
    "evaluate_robustness",
    "expected_robustness",
    "plot_robustness_curve",
]


def compute_accuracy(eval_pred) -> dict[str, float]:
    """`compute_metrics` for `Trainer`: top-1 accuracy from logits, reported as `eval_accuracy`."""
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    return {"accuracy": float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())}



# ------------------------------------------------------------------------------------------------------------------
def evaluate_robustness(
    model: torch.nn.Module,
    data,
    config: RobustEvalConfig | None = None,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    processor: Any = None,
    pixel_space: PixelSpace | None = None,
    device: str | torch.device | None = None,
    pixel_key: str = "pixel_values",
    label_key: str = "labels",
    show_progress: bool = False,
    **settings,
) -> RobustnessResult:
    """Measure a classifier's robust accuracy the trustworthy way, with gradient-masking sanity checks.

    Only the initially-correct examples are attacked (as AutoAttack does); an example counts as robust under an
    attack when the attack fails on it, and `robust_accuracy` keeps the per-example worst case over all attacks.

    Args:
        model (`torch.nn.Module`): A transformers image classifier (called as `model(pixel_values=x)`, `.logits`
            read) or any module returning logits (timm). It is evaluated in eval mode with frozen parameters on
            `device`; its mode, `requires_grad` flags and device are restored afterwards.
        data: `(inputs, labels)` tensors; a dataset of `{"pixel_values", "labels"}` dicts or `(image, label)` pairs
            holding tensors; or a `DataLoader` / iterable of such batches. Inputs are what the model takes: pixels
            in [0, 1], or normalized with `mean`/`std` (or the `processor`'s, or a timm model's `pretrained_cfg`).
        config ([`RobustEvalConfig`], *optional*): The settings; `**settings` override its fields, e.g.
            `epsilon=8/255, attacks=("pgd", "autoattack"), n_examples=1000, batch_size=128, seed=0`.
        mean (`Sequence[float]`, *optional*), std (`Sequence[float]`, *optional*), processor (*optional*):
            The normalization of the inputs (explicit > image processor > timm `pretrained_cfg` > none).
        pixel_space ([`PixelSpace`], *optional*): The normalization, already resolved (wins over the three above).
        device (`str` or `torch.device`, *optional*): Where to run; defaults to the model's device.
        pixel_key (`str`, defaults to `"pixel_values"`), label_key (`str`, defaults to `"labels"`): Keys of dict data.
        show_progress (`bool`, defaults to `False`): tqdm progress bars per attack.

    Returns:
        [`RobustnessResult`]

    Raises:
        ValueError: For an epsilon above 1 under linf (write `8/255`), an unknown attack (the known ones are listed)
            or inputs outside [0, 1] after undoing the normalization, or that look un-normalized (raw [0, 1] pixels
            given with a normalizing mean/std: every de-normalized pixel in [mean, mean + std]).
        ImportError: With the install hint, when AutoAttack or Square is asked for without the `autoattack` extra.

    Example:

    ```python
    >>> import torch
    >>> from hf_advft.evaluation import evaluate_robustness
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    >>> x, y = torch.rand(16, 3, 8, 8), torch.randint(0, 10, (16,))
    >>> result = evaluate_robustness(model, (x, y), epsilon=8 / 255, attacks="pgd", masking_checks=False)
    >>> result.robust_accuracy <= result.clean_accuracy
    True
    ```
    """
    start = time.perf_counter()
    try:
        cfg = replace(config, **settings) if config is not None else RobustEvalConfig(**settings)
    except TypeError as err:
        names = ", ".join(f.name for f in fields(RobustEvalConfig))
        raise TypeError(f"{err}. evaluate_robustness settings are the RobustEvalConfig fields: {names}.") from None
    if cfg.needs_autoattack_package():
        import_autoattack()  # fail before any work
    notes: list[str] = []
    inputs, labels = collect_examples(data, cfg.n_examples, pixel_key, label_key)
    if cfg.n_examples is not None and len(labels) < cfg.n_examples:
        message = f"n_examples={cfg.n_examples} but the data holds {len(labels)}: evaluating all {len(labels)}."
        logger.warning(message)
        notes.append(message)
    space = pixel_space if pixel_space is not None else resolve_pixel_space(mean, std, processor, model)
    weights_sha256 = model_weights_sha256(model)
    pixels = to_pixels(space, inputs)
    n = len(labels)
    slack = max(CHECK_SLACK, 1.0 / n)
    if model.training:
        notes.append("The model was in train mode: evaluated in eval mode, train mode restored afterwards.")
    times: dict[str, float] = {}
    flags: dict[str, torch.Tensor] = {}
    worst: dict[str, float] = {}
    precision = evaluation_precision(model)
    # The examples stay on the CPU; each attack batch is moved to the device on its own.
    with evaluation_mode(model, device) as dev:
        net = PixelModel(model, space, pixel_key)
        correct = predict(net, pixels, cfg.batch_size, dev) == labels
        clean = fraction(correct)

        def pgd_at(eps, steps=cfg.pgd_steps, step_size=None) -> torch.Tensor:
            tic = time.perf_counter()
            robust, largest = pgd_robust_flags(
                net, pixels, labels, correct, epsilon=eps, steps=steps, restarts=cfg.pgd_restarts,
                step_size=step_size or cfg.resolved_step_size(eps), cfg=cfg, show=show_progress,
                desc=f"PGD-{steps} eps={eps:.4g}", device=dev)
            times[f"pgd eps={eps:.4g} steps={steps}"] = round(time.perf_counter() - tic, 3)
            if eps == cfg.epsilon and steps == cfg.pgd_steps:
                worst["pgd"] = largest
            return robust

        grid = cfg.grid()
        pgd_flags = None
        if "pgd" in cfg.attacks or grid or cfg.masking_checks:
            pgd_flags = pgd_at(cfg.epsilon)
            if "pgd" in cfg.attacks:
                flags["pgd"] = pgd_flags
        curve = []
        for eps in grid:
            if eps == 0:
                curve.append((0.0, clean))
            elif math.isclose(eps, cfg.epsilon):
                curve.append((eps, fraction(pgd_flags)))
            else:
                curve.append((eps, fraction(pgd_at(eps))))
        if curve and curve[0][0] != 0:
            curve.insert(0, (0.0, clean))
        trace, broke = {}, {}
        if "autoattack" in cfg.attacks:
            tic = time.perf_counter()
            flags["autoattack"], trace, broke, worst["autoattack"], parts = autoattack_robust_flags(
                net, pixels, labels, correct, cfg=cfg, components=None, show=show_progress, notes=notes, device=dev)
            times["autoattack"] = round(time.perf_counter() - tic, 3)
            times.update({f"autoattack/{name}": t for name, t in parts.items()})
        if "square" in cfg.attacks:
            tic = time.perf_counter()
            flags["square"], _, _, worst["square"], _ = autoattack_robust_flags(
                net, pixels, labels, correct, cfg=cfg, components=("square",), show=show_progress, notes=notes,
                device=dev)
            times["square"] = round(time.perf_counter() - tic, 3)
        checks = run_masking_checks(cfg, pgd_at, pgd_flags, curve, flags, broke, slack, pixels[0].numel()) \
            if cfg.masking_checks else []
    for check in checks:
        if check.passed is False:
            warnings.warn(f"Gradient-masking check {check.name!r} failed: {check.detail}. The white-box robust "
                          f"accuracy is probably an over-estimate; trust the strongest attack, and look for "
                          f"non-differentiable or randomized parts of the model.", GradientMaskingWarning,
                          stacklevel=2)
    attack_acc = {name: fraction(f) for name, f in flags.items()}
    robust = correct.clone()
    for f in flags.values():
        robust &= f
    return RobustnessResult(
        clean_accuracy=clean,
        robust_accuracy=fraction(robust),
        attack_accuracy=attack_acc,
        pgd_accuracy=attack_acc.get("pgd"),
        autoattack_accuracy=attack_acc.get("autoattack"),
        autoattack_trace=trace,
        curve_epsilons=[e for e, _ in curve],
        curve_accuracy=[a for _, a in curve],
        expected_robustness=expected_robustness(*zip(*curve)) if len(curve) >= 2 else None,
        checks=checks,
        max_perturbation=worst,
        n_examples=n,
        epsilon=cfg.epsilon,
        norm=cfg.norm,
        seed=cfg.seed,
        pgd_steps=cfg.pgd_steps,
        pgd_restarts=cfg.pgd_restarts,
        pgd_step_size=cfg.resolved_step_size(),
        wall_time_s=round(time.perf_counter() - start, 3),
        attack_time_s=times,
        normalization=space.source,
        device=str(dev),
        precision=precision,
        config=json.loads(json.dumps(asdict(cfg))),
        notes=notes,
        versions=dict(package_versions()),
        weights_sha256=weights_sha256,
    )
