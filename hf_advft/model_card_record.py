"""The card's evaluation record: one typed record, the only source of the numbers a model card states.

Split from `hf_advft.model_card` (which re-exports these names). An [`EvaluationRecord`] is made from a
[`~hf_advft.evaluation.RobustnessResult`] (`evaluate_robustness`), from an `AdvTrainer`'s log history
(`evaluation_from_logs`) or from its own JSON form (`adv_results.json`'s `evaluation`, also as written by hf-advft
versions that kept it as a plain dict: the keys are the same, so old files load). `RobustnessResult` stays the full
measurement (curve, checks, timings); the record is what a card says about it, checked on every construction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

from .attacks import NORMS


# The log key prefix of the accuracy after each AutoAttack component (`hf_advft.trainer_autoattack.autoattack_metrics`).
AUTOATTACK_AFTER = "_autoattack_after_"

__all__ = ["EvaluationRecord", "EvaluationRow", "evaluation_from_logs", "summarize_evaluation"]


@dataclass
class EvaluationRow:
    """One line of the card's evaluation table and one entry of its model-index: an attack (or `"Clean"`)."""

    name: str
    accuracy: float
    n_examples: int | None = None
    details: str = ""


@dataclass
class EvaluationRecord:
    """What a model card states about its weights' robustness, checked; `adv_results.json` stores `to_dict()`.

    Args:
        norm (`str`): `"linf"` or `"l2"`.
        epsilon (`float`): The attack radius, pixel units of images in [0, 1].
        rows (`list[EvaluationRow]`): The accuracies, the clean one named `"Clean"`; dicts are accepted.
        n_examples (`int`, *optional*): The examples evaluated.
        source (`str`, *optional*): What measured them.
        dataset (`str`, *optional*): The evaluation set's name.
        curve (`list[[float, float]]`): `[epsilon, accuracy]` points of the robustness curve.
        expected_robustness (`float`, *optional*): The curve's normalized area.
        warnings (`list[str]`): Failed gradient-masking checks and other caveats, shown on the card.
        precision (`str`, *optional*): The arithmetic of the attacked forward passes (`"fp32"`, ...).
        weights_sha256 (`str`, *optional*): The hash of the weights measured (`hf_advft.weights_hash`), so the card
            states the numbers only beside those weights.

    Raises:
        `ValueError` for an accuracy outside [0, 1], a non-positive epsilon or example count, an unknown norm or two
        rows with one name.

    Example:

    ```python
    >>> from hf_advft.model_card_record import EvaluationRecord
    >>> record = EvaluationRecord.from_dict({"norm": "linf", "epsilon": 8 / 255, "n_examples": 100, "rows": [
    ...     {"name": "Clean", "accuracy": 0.9, "n_examples": 100}, {"name": "PGD-20", "accuracy": 0.4}]})
    >>> [row.name for row in record.rows], EvaluationRecord.from_dict(record.to_dict()) == record
    (['Clean', 'PGD-20'], True)
    ```
    """

    norm: str
    epsilon: float
    rows: list[EvaluationRow]
    n_examples: int | None = None
    source: str | None = None
    dataset: str | None = None
    curve: list[list[float]] = field(default_factory=list)
    expected_robustness: float | None = None
    warnings: list[str] = field(default_factory=list)
    precision: str | None = None
    weights_sha256: str | None = None

    def __post_init__(self):
        self.rows = [row if isinstance(row, EvaluationRow) else _row(row) for row in self.rows or []]
        self.curve = [[float(e), float(a)] for e, a in (self.curve or [])]
        self.warnings = list(self.warnings or [])
        _check(self)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, as `adv_results.json` stores it (the keys hf-advft always wrote)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationRecord:
        """Read the JSON form; keys this version does not know are ignored, missing optional ones take defaults."""
        known = {f.name for f in fields(cls)}
        missing = [key for key in ("norm", "epsilon", "rows") if key not in data]
        if missing:
            raise TypeError(f"The evaluation record lacks {missing}: it needs norm, epsilon and rows.")
        return cls(**{key: value for key, value in data.items() if key in known})

    @classmethod
    def from_result(cls, result: Any) -> EvaluationRecord:
        """The record of a [`~hf_advft.evaluation.RobustnessResult`] (or its `to_dict()`): one row per attack run."""
        data = result.to_dict() if hasattr(result, "to_dict") else result
        return _from_robustness_result(data)

    @classmethod
    def coerce(cls, result: Any, *, dataset: str | None = None) -> EvaluationRecord:
        """Any accepted form (record, its JSON, a `RobustnessResult` or its JSON) as a checked record."""
        if isinstance(result, EvaluationRecord):
            record = cls(**{f.name: getattr(result, f.name) for f in fields(cls)})  # checked again, and a copy
        else:
            data = result.to_dict() if hasattr(result, "to_dict") else asdict(result) if is_dataclass(result) \
                else result
            if not isinstance(data, Mapping):
                raise TypeError(f"Cannot read an evaluation from a {type(result).__name__}: pass the RobustnessResult "
                                f"of hf_advft.evaluation.evaluate_robustness, or a dict with norm, epsilon, "
                                f"n_examples and rows.")
            if "rows" in data:
                record = cls.from_dict(data)
            elif {"clean_accuracy", "attack_accuracy", "n_examples"} <= set(data):
                record = cls.from_result(data)
            else:
                raise TypeError(f"The evaluation has keys {sorted(data)}: expected a RobustnessResult "
                                f"(clean_accuracy, attack_accuracy, n_examples, ...) or a record with norm, epsilon, "
                                f"n_examples and rows.")
        if dataset is not None:
            record.dataset = dataset
        return record


def _row(data: Any) -> EvaluationRow:
    if not isinstance(data, Mapping):
        raise TypeError(f"An evaluation row must be a dict with name and accuracy, got {type(data).__name__}.")
    known = {f.name for f in fields(EvaluationRow)}
    row = {key: value for key, value in data.items() if key in known}
    if "name" not in row or "accuracy" not in row:
        raise ValueError(f"Evaluation rows need a name and an accuracy, got {dict(data)}.")
    if row.get("details") is None:
        row["details"] = ""
    return EvaluationRow(**row)


def summarize_evaluation(result: Any, *, dataset: str | None = None) -> EvaluationRecord:
    """Turn an evaluation result into the card's [`EvaluationRecord`] (checked; `to_dict()` is its JSON).

    Accepts a [`~hf_advft.evaluation.RobustnessResult`] (from `evaluate_robustness`), its `to_dict()`, an
    `EvaluationRecord`, or a record in its JSON form: `{"norm", "epsilon", "n_examples", "source", "rows":
    [{"name", "accuracy", "n_examples", "details"}, ...]}` with the clean row named `"Clean"`. (Before the record was
    typed this returned that JSON form as a dict; `summarize_evaluation(...).to_dict()` gives it.)

    Raises:
        `TypeError` for anything else; `ValueError` for an accuracy outside [0, 1], a non-positive epsilon or example
        count, an unknown norm or two rows with one name.

    Example:

    ```python
    >>> from hf_advft.model_card import summarize_evaluation
    >>> record = summarize_evaluation({"norm": "linf", "epsilon": 8 / 255, "n_examples": 100, "source": "my eval",
    ...                                "rows": [{"name": "Clean", "accuracy": 0.9, "n_examples": 100},
    ...                                         {"name": "PGD-20", "accuracy": 0.4, "n_examples": 100}]})
    >>> [row.name for row in record.rows]
    ['Clean', 'PGD-20']
    ```
    """
    return EvaluationRecord.coerce(result, dataset=dataset)


def _from_robustness_result(data: Mapping) -> EvaluationRecord:
    n, config = data["n_examples"], data.get("config") or {}
    rows = [EvaluationRow("Clean", data["clean_accuracy"], n, "no attack")]
    attacks = data["attack_accuracy"]
    if "pgd" in attacks:
        rows.append(EvaluationRow(f"PGD-{data['pgd_steps']}", attacks["pgd"], n,
                                  f"{data['pgd_steps']} steps of {data['pgd_step_size']:.4g}, "
                                  f"{data['pgd_restarts']} restart(s), random start"))
    if "autoattack" in attacks:
        version = config.get("autoattack_version", "standard")
        rows.append(EvaluationRow(f"AutoAttack ({version})", attacks["autoattack"], n,
                                  autoattack_components(data.get("autoattack_trace") or {})))
    if "square" in attacks:
        rows.append(EvaluationRow("Square", attacks["square"], n,
                                  f"black-box, {config.get('square_queries', '?')} queries"))
    if len(rows) > 2:
        rows.append(EvaluationRow("Worst case over the attacks", data["robust_accuracy"], n,
                                  "an example counts as robust only if every attack fails on it"))
    warnings = [f"gradient-masking check `{c['name']}` failed: {c['detail']}" for c in data.get("checks") or []
                if c.get("passed") is False]
    return EvaluationRecord(
        norm=data["norm"], epsilon=data["epsilon"], n_examples=n, rows=rows,
        source=f"hf_advft.evaluation.evaluate_robustness (seed {data.get('seed', 0)}, on {data.get('device')})",
        curve=list(zip(data.get("curve_epsilons") or [], data.get("curve_accuracy") or [])),
        expected_robustness=data.get("expected_robustness"), warnings=warnings, precision=data.get("precision"),
        weights_sha256=data.get("weights_sha256"))


def autoattack_components(names) -> str:
    """`"APGD-CE, FAB-T, Square"` for AutoAttack's component ids (`apgd-ce`, `fab-t`, `square`), as they ran."""
    return ", ".join("Square" if n == "square" else n.upper() for n in names) or "components not recorded"


def _check(record: EvaluationRecord) -> None:
    if record.norm not in NORMS:
        raise ValueError(f"The evaluation's norm is {record.norm!r}: use one of {NORMS}.")
    epsilon = record.epsilon
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not math.isfinite(epsilon) \
            or epsilon <= 0:
        raise ValueError(f"The evaluation's epsilon must be a positive number (pixel units), got {epsilon!r}.")
    rows = record.rows
    if not rows:
        raise ValueError("The evaluation has no rows: give at least the clean accuracy.")
    names = [row.name for row in rows]
    if len(set(names)) != len(names) or not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"Evaluation rows need distinct, non-empty names, got {names}.")
    for n in [record.n_examples, *(row.n_examples for row in rows)]:
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise ValueError(f"n_examples must be a positive integer or None, got {n!r}.")
    for row in rows:
        acc = row.accuracy
        if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not 0 <= acc <= 1:
            raise ValueError(f"The accuracy of {row.name!r} must be a fraction in [0, 1], got {acc!r}.")


def evaluation_from_logs(log_history: list[dict], args, step: int) -> EvaluationRecord | None:
    """The trainer's evaluation of the weights of `step` as an [`EvaluationRecord`], or `None` if there is none.

    Reads the `evaluate()` logged at `step` (clean accuracy, PGD) and the AutoAttack that `AdvTrainer.train()` logs
    at its end (`adv_autoattack_examples`). `AdvTrainer` logs every evaluation under the step of the weights it
    measured (the best step once the best model is loaded) with their `weights_sha256`, which the record carries.
    Only entries logged at `step` describe these weights: an older one would put another model's numbers on this
    card; an AutoAttack of other weights than the last `evaluate()` (another hash) is left out.
    """
    at_step = [h for h in log_history if h.get("step") == step]
    evaluated = [h for h in at_step if "eval_accuracy" in h or "eval_robust_accuracy" in h]
    attacked = [h for h in at_step if "eval_autoattack_accuracy" in h]
    if evaluated:
        attacked = [h for h in attacked if h.get("weights_sha256") == evaluated[-1].get("weights_sha256")]
    if not evaluated and not attacked:
        return None
    logs = evaluated[-1] if evaluated else {}
    weights_sha256 = (evaluated or attacked)[-1].get("weights_sha256")
    rows, warnings = [], []
    if "eval_accuracy" in logs:
        rows.append({"name": "Clean", "accuracy": logs["eval_accuracy"], "n_examples": logs.get("eval_examples"),
                     "details": "no attack"})
    if "eval_robust_accuracy" in logs:
        rows.append({"name": f"PGD-{args.adv_eval_steps}", "accuracy": logs["eval_robust_accuracy"],
                     "n_examples": logs.get("eval_robust_examples"),
                     "details": f"{args.adv_eval_steps} steps of {args.eval_step_size:.4g}, "
                                f"{args.adv_eval_restarts} restart(s), "
                                f"{'random start' if args.adv_random_start else 'no random start'}"})
    if attacked:
        aa = attacked[-1]
        n_aa = aa.get("eval_autoattack_examples")
        if not rows:
            rows.append({"name": "Clean", "accuracy": aa["eval_autoattack_clean_accuracy"], "n_examples": n_aa,
                         "details": "no attack"})
        ran = [k.split(AUTOATTACK_AFTER, 1)[1] for k in aa if k.startswith(f"eval{AUTOATTACK_AFTER}")]
        rows.append({"name": "AutoAttack (standard)", "accuracy": aa["eval_autoattack_accuracy"], "n_examples": n_aa,
                     "details": f"{autoattack_components(ran)} on the first eval examples (clean accuracy "
                                f"{aa.get('eval_autoattack_clean_accuracy', float('nan')):.1%} on them)"})
        if aa.get("eval_autoattack_masking_checks_failed"):
            warnings.append(f"{aa['eval_autoattack_masking_checks_failed']} gradient-masking check(s) failed during "
                            f"the AutoAttack evaluation: the robust accuracy may be over-estimated.")
    n = next((row["n_examples"] for row in rows if row["n_examples"] is not None), None)
    precision = logs.get("eval_robust_precision") or (attacked[-1].get("eval_autoattack_precision")
                                                      if attacked else None)
    return EvaluationRecord(norm=args.adv_norm, epsilon=args.eval_epsilon, n_examples=n, rows=rows,
                            source=f"AdvTrainer evaluation at step {step}", warnings=warnings, precision=precision,
                            weights_sha256=weights_sha256)
