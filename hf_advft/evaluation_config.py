"""The settings and the result of a robust evaluation: [`RobustEvalConfig`] in, [`RobustnessResult`] out.

Split from `hf_advft.evaluation` (which runs the attacks and re-exports every name here, its public home): the two
dataclasses, the epsilon grid of the robustness curve and its normalized area, the *expected robustness*.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .attacks import check_attack_args
from .masking_checks import WHITE_BOX_COMPONENTS, MaskingCheck


KNOWN_ATTACKS = ("pgd", "autoattack", "square")
AUTOATTACK_VERSIONS = ("standard", "plus", "rand")
# What `hf-advft evaluate` and the end-of-training AutoAttack (`hf_advft.trainer_autoattack`) write beside a model.
ROBUSTNESS_JSON, ROBUSTNESS_PNG = "robustness.json", "robustness.png"

__all__ = ["RobustEvalConfig", "RobustnessResult", "expected_robustness"]


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
        # The one validation of epsilon and steps (hf_advft.attacks), shared with the training arguments.
        check_attack_args(epsilon=self.epsilon, steps=self.pgd_steps, norm=self.norm, step_size=self.pgd_step_size,
                          restarts=self.pgd_restarts, allow_zero_epsilon=False,
                          names={"steps": "pgd_steps", "step_size": "pgd_step_size", "restarts": "pgd_restarts"})
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

