"""Robust evaluation: every robustness number hf-advft prints, logs or writes into a model card comes from here.

`evaluate_robustness` attacks the initially-correct examples with PGD (restarts), AutoAttack (Croce & Hein 2020,
through the optional `pyautoattack` package) and/or the black-box Square attack, traces accuracy against epsilon
(the robustness curve and its normalized area, the *expected robustness*), and runs the cheap part of Carlini et al.
(2019)'s checklist for gradient masking, warning when a check fails. All attacks see pixels in [0, 1]
(`hf_advft.pixel_space`), so `epsilon` is in pixel units whatever normalization the model expects.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.utils import logging

from .attacks import NORMS, check_attack_args
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
    WHITE_BOX_COMPONENTS,
    GradientMaskingWarning,
    MaskingCheck,
    run_masking_checks,
)
from .pixel_space import PixelSpace, resolve_pixel_space
from .weights_hash import model_weights_sha256


logger = logging.get_logger(__name__)

KNOWN_ATTACKS = ("pgd", "autoattack", "square")
AUTOATTACK_VERSIONS = ("standard", "plus", "rand")

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


@dataclass
class RobustEvalConfig:
    """Settings of [`evaluate_robustness`]; every field is also a flag of `hf-advft evaluate`.

    Example:

    ```python
    >>> from hf_advft.evaluation import RobustEvalConfig
    >>> config = RobustEvalConfig(epsilon=4 / 255, attacks="pgd,square", n_examples=100)
    >>> config.attacks, config.resolved_step_size() == 2.5 * (4 / 255) / 20
    (('pgd', 'square'), True)
    ```
    """

    epsilon: float = field(
        default=8 / 255, metadata={"help": "Attack radius in pixel units of images in [0, 1] (8/255, not 8)."}
    )
    norm: str = field(default="linf", metadata={"help": "Threat model: 'linf' or 'l2'."})
    attacks: tuple[str, ...] = field(
        default=("pgd", "autoattack"),
        metadata={"help": f"Attacks to run, comma-separated or a sequence, from {KNOWN_ATTACKS}."},
    )
    n_examples: int | None = field(
        default=None, metadata={"help": "Evaluate the first n examples (None: all; more than the data: all)."}
    )
    batch_size: int = field(default=128, metadata={"help": "Examples per attack batch."})
    seed: int = field(default=0, metadata={"help": "Seed of every random start and of AutoAttack."})
    pgd_steps: int = field(default=20, metadata={"help": "PGD iterations (PGD-20, the usual evaluation setting)."})
    pgd_step_size: float | None = field(
        default=None, metadata={"help": "PGD step size, pixel units. None: 2.5 * epsilon / pgd_steps (Madry et al.)."}
    )
    pgd_restarts: int = field(
        default=1, metadata={"help": "PGD random restarts; each restart attacks the examples still robust."}
    )
    autoattack_version: str = field(
        default="standard",
        metadata={"help": f"AutoAttack version, one of {AUTOATTACK_VERSIONS}. 'standard' = APGD-CE, APGD-T, FAB-T, "
                          f"Square (5,000 queries), as RobustBench."},
    )
    autoattack_components: tuple[str, ...] | None = field(
        default=None,
        metadata={"help": f"Run only these components of the AutoAttack version, in its order, with its settings "
                          f"(e.g. 'apgd-ce,apgd-t': the white-box part of standard AutoAttack, for CPU budgets); one "
                          f"or more of {WHITE_BOX_COMPONENTS + ('square',)}. None: all of them."},
    )
    square_queries: int = field(
        default=5000, metadata={"help": "Query budget of the stand-alone 'square' attack (AutoAttack's is 5,000)."}
    )
    curve_epsilons: tuple[float, ...] | None = field(
        default=None,
        metadata={"help": "Epsilon grid of the robustness curve (PGD). None: epsilon x (0, 1/4, 1/2, 1, 3/2, 2); "
                          "an empty tuple disables the curve."},
    )
    masking_checks: bool = field(
        default=True, metadata={"help": "Run the gradient-masking sanity checks (a warning when one fails)."}
    )
    check_steps_factor: int = field(
        default=4, metadata={"help": "The 'more steps' check reruns PGD with this many times pgd_steps."}
    )
    large_epsilon: float | None = field(
        default=None,
        metadata={"help": "Radius of the 'near zero at large epsilon' check. None: 0.5 for linf (every image can reach "
                          "mid-grey), 0.5 * sqrt(pixels) for l2."},
    )

    def __post_init__(self):
        if isinstance(self.attacks, str):
            self.attacks = tuple(a.strip() for a in self.attacks.split(",") if a.strip())
        self.attacks = tuple(str(a).lower() for a in self.attacks)
        unknown = [a for a in self.attacks if a not in KNOWN_ATTACKS]
        if unknown or not self.attacks:
            raise ValueError(f"Unknown attack(s) {unknown or self.attacks}: use one or more of {KNOWN_ATTACKS}.")
        if self.norm not in NORMS:
            raise ValueError(f"norm={self.norm!r} is unknown: use one of {NORMS}.")
        if self.norm == "linf" and self.epsilon > 1:
            raise ValueError(
                f"epsilon={self.epsilon} is larger than the whole [0, 1] pixel range: epsilon is in pixel units of "
                f"images in [0, 1], so write 8/255 (= {8 / 255:.4f}), not 8."
            )
        if not self.epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {self.epsilon}.")
        if not isinstance(self.pgd_steps, int) or isinstance(self.pgd_steps, bool) or self.pgd_steps < 1:
            raise ValueError(f"pgd_steps must be an integer >= 1, got {self.pgd_steps!r}.")
        check_attack_args(epsilon=self.epsilon, step_size=self.resolved_step_size(), steps=self.pgd_steps,
                          norm=self.norm, restarts=self.pgd_restarts)
        if self.autoattack_version not in AUTOATTACK_VERSIONS:
            raise ValueError(f"autoattack_version={self.autoattack_version!r}: use one of {AUTOATTACK_VERSIONS}.")
        if self.autoattack_components is not None:
            if isinstance(self.autoattack_components, str):
                self.autoattack_components = tuple(c.strip() for c in self.autoattack_components.split(",") if c.strip())
            self.autoattack_components = tuple(str(c).lower() for c in self.autoattack_components)
            unknown = [c for c in self.autoattack_components if c not in WHITE_BOX_COMPONENTS + ("square",)]
            if unknown or not self.autoattack_components:
                raise ValueError(f"autoattack_components={self.autoattack_components!r}: use one or more of "
                                 f"{WHITE_BOX_COMPONENTS + ('square',)}, e.g. 'apgd-ce,apgd-t'.")
        for name in ("batch_size", "square_queries", "check_steps_factor"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        if self.n_examples is not None and self.n_examples < 1:
            raise ValueError(f"n_examples must be >= 1 or None (all), got {self.n_examples}.")
        if self.curve_epsilons is not None:
            self.curve_epsilons = tuple(float(e) for e in self.curve_epsilons)
            if any(e < 0 or (self.norm == "linf" and e > 1) for e in self.curve_epsilons):
                raise ValueError(f"curve_epsilons must lie in [0, 1] for linf (pixel units), got {self.curve_epsilons}.")
        if self.large_epsilon is not None and self.large_epsilon <= self.epsilon:
            raise ValueError(f"large_epsilon={self.large_epsilon} must exceed epsilon={self.epsilon}.")

    def resolved_step_size(self, epsilon: float | None = None) -> float:
        """The PGD step for `epsilon` (default: the evaluation radius); an explicit step scales with epsilon."""
        epsilon = self.epsilon if epsilon is None else epsilon
        if self.pgd_step_size is None:
            return 2.5 * epsilon / self.pgd_steps
        return self.pgd_step_size * epsilon / self.epsilon

    def grid(self) -> tuple[float, ...]:
        if self.curve_epsilons is not None:
            return tuple(sorted(set(self.curve_epsilons)))
        # Rounded so that 1.5 * 0.1 is written 0.15, not 0.15000000000000002; epsilon itself stays exact.
        grid = (round(self.epsilon * f, 12) if f != 1 else self.epsilon for f in (0.0, 0.25, 0.5, 1.0, 1.5, 2.0))
        return tuple(e for e in grid if self.norm == "l2" or e <= 1)

    def needs_autoattack_package(self) -> bool:
        return "autoattack" in self.attacks or "square" in self.attacks


@dataclass
class RobustnessResult:
    """What [`evaluate_robustness`] measured. Accuracies are fractions of all `n_examples` evaluated examples.

    `robust_accuracy` is the per-example worst case over the attacks run; `attack_accuracy` holds each attack alone;
    `autoattack_trace` the cumulative accuracy after each AutoAttack component, in the order they ran. Round-trips
    through `to_json` / `from_json`.

    Example:

    ```python
    >>> result = evaluate_robustness(model, (pixels, labels), epsilon=8 / 255, attacks="pgd")  # doctest: +SKIP
    >>> RobustnessResult.from_json(result.to_json()) == result  # doctest: +SKIP
    True
    ```
    """

    clean_accuracy: float
    robust_accuracy: float
    attack_accuracy: dict[str, float]
    pgd_accuracy: float | None
    autoattack_accuracy: float | None
    autoattack_trace: dict[str, float]
    curve_epsilons: list[float]
    curve_accuracy: list[float]
    expected_robustness: float | None
    checks: list[MaskingCheck]
    max_perturbation: dict[str, float]
    n_examples: int
    epsilon: float
    norm: str
    seed: int
    pgd_steps: int
    pgd_restarts: int
    pgd_step_size: float
    wall_time_s: float
    attack_time_s: dict[str, float]
    normalization: str
    device: str
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    # The arithmetic of the attacked forward passes ("fp32" unless the weights themselves are bf16/fp16; never
    # autocast). None in results written before hf-advft recorded it.
    precision: str | None = None
    # The weights measured (`hf_advft.weights_hash`): a card shows these numbers only beside the same weights.
    weights_sha256: str | None = None

    @property
    def failed_checks(self) -> list[MaskingCheck]:
        return [c for c in self.checks if c.passed is False]

    @property
    def masking_suspected(self) -> bool:
        return bool(self.failed_checks)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RobustnessResult:
        data = dict(data)
        data["checks"] = [MaskingCheck(**c) for c in data.get("checks", [])]
        return cls(**data)

    def to_json(self, path: str | Path | None = None) -> str:
        """The result as indented JSON; also written to `path` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> RobustnessResult:
        """Read a result from a JSON string or from a file written by `to_json`."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text()
        return cls.from_dict(json.loads(text))

    def summary(self) -> str:
        """A markdown table of the accuracies, the expected robustness and the checks."""
        unit = "/255" if self.norm == "linf" else ""
        eps = self.epsilon * 255 if self.norm == "linf" else self.epsilon
        rows = [f"| clean | {self.clean_accuracy:.4f} |"]
        if self.pgd_accuracy is not None:
            rows.append(f"| PGD-{self.pgd_steps} x{self.pgd_restarts} (step {self.pgd_step_size:.4g}) | "
                        f"{self.pgd_accuracy:.4f} |")
        for name, acc in self.autoattack_trace.items():
            rows.append(f"| AutoAttack, after {name} | {acc:.4f} |")
        if "square" in self.attack_accuracy:
            rows.append(f"| Square ({self.config.get('square_queries')} queries) | {self.attack_accuracy['square']:.4f} |")
        rows.append(f"| **robust (worst case)** | **{self.robust_accuracy:.4f}** |")
        if self.expected_robustness is not None:
            rows.append(f"| expected robustness (AUC over [0, {max(self.curve_epsilons) * (255 if unit else 1):.4g}"
                        f"{unit}]) | {self.expected_robustness:.4f} |")
        checks = "; ".join(f"{c.name}: {'pass' if c.passed else 'FAIL' if c.passed is False else 'n/a'}"
                           for c in self.checks)
        return "\n".join([
            f"{self.n_examples} examples, {self.norm} eps={eps:.4g}{unit}, seed {self.seed}, "
            f"{self.wall_time_s:.1f} s on {self.device} in {self.precision or 'an unrecorded precision'}",
            "| attack | accuracy |", "|---|---|", *rows, f"gradient-masking checks: {checks or 'off'}",
        ])


# ------------------------------------------------------------------------------------------------------------------
# Curve and expected robustness (the masking checks are in `hf_advft.masking_checks`)
def expected_robustness(epsilons: Sequence[float], accuracies: Sequence[float]) -> float:
    """Normalized area under the robustness curve over [0, eps_max] (Ngnawé et al., ICLR 2026).

    `(1 / eps_max) * integral_0^eps_max acc(eps) d eps` by the trapezoid rule over the grid, sorted by epsilon; it
    equals the clean accuracy for a perfectly robust model and tends to 0 for one broken by the smallest epsilon.

    Example:

    ```python
    >>> from hf_advft.evaluation import expected_robustness
    >>> expected_robustness([0, 0.5, 1.0], [1.0, 0.5, 0.0])
    0.5
    ```
    """
    if len(epsilons) != len(accuracies) or len(epsilons) < 2:
        raise ValueError("expected_robustness needs at least two (epsilon, accuracy) points of equal count.")
    pairs = sorted(zip(map(float, epsilons), map(float, accuracies)))
    if pairs[0][0] != 0:
        raise ValueError("The curve must start at epsilon=0 (the clean accuracy).")
    e, a = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    return float(np.sum((e[1:] - e[:-1]) * (a[1:] + a[:-1]) / 2) / e[-1])


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


def plot_robustness_curve(result: RobustnessResult, path: str | Path, title: str | None = None) -> Path:
    """Draw accuracy against epsilon (PGD), with the AutoAttack point, as a PNG at `path` (needs matplotlib)."""
    if len(result.curve_epsilons) < 2:
        raise ValueError("The result has no robustness curve (curve_epsilons was empty).")
    try:
        # A bare Figure, not pyplot: no global backend switch or figure registry in the caller's process.
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError('Plotting needs matplotlib: pip install "hf-advft[plot]".') from err
    scale, unit = (255, ", x 1/255") if result.norm == "linf" else (1, "")
    eps = [e * scale for e in result.curve_epsilons]
    fig = Figure(figsize=(5, 3.5), dpi=120)
    ax = fig.subplots()
    ax.plot(eps, result.curve_accuracy, "o-", label=f"PGD-{result.pgd_steps}")
    if result.autoattack_accuracy is not None:
        ax.plot([result.epsilon * scale], [result.autoattack_accuracy], "r*", markersize=12, label="AutoAttack")
    ax.axvline(result.epsilon * scale, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel(f"epsilon ({'L-inf' if result.norm == 'linf' else 'L2'}{unit})")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    er = "" if result.expected_robustness is None else f", expected robustness {result.expected_robustness:.3f}"
    ax.set_title(f"{title or 'Robustness curve'}\n{result.n_examples} examples{er}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return Path(path)


# ------------------------------------------------------------------------------------------------------------------
# What `hf-advft evaluate` and the end-of-training AutoAttack (`hf_advft.trainer_autoattack`) write beside a model.
ROBUSTNESS_JSON, ROBUSTNESS_PNG = "robustness.json", "robustness.png"
