"""The card's evaluation record: every accepted result becomes one checked record, the only source of the card's numbers.

Split from `hf_advft.model_card` (which re-exports `summarize_evaluation`, its public home). A record comes from a
[`~hf_advft.evaluation.RobustnessResult`], from a record already in this form (`adv_results.json`'s `evaluation`), or
from an `AdvTrainer`'s log history (`evaluation_from_logs`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from typing import Any

from .attacks import NORMS


# The log key prefix of the accuracy after each AutoAttack component (`hf_advft.trainer_autoattack.autoattack_metrics`).
AUTOATTACK_AFTER = "_autoattack_after_"

__all__ = ["evaluation_from_logs", "summarize_evaluation"]


def summarize_evaluation(result: Any, *, dataset: str | None = None) -> dict[str, Any]:
    """Turn an evaluation result into the card's evaluation record (checked, JSON-ready).

    Accepts a [`~hf_advft.evaluation.RobustnessResult`] (from `evaluate_robustness`), its `to_dict()`, or a record
    already in this form: `{"norm", "epsilon", "n_examples", "source", "rows": [{"name", "accuracy", "n_examples",
    "details"}, ...]}` with the clean row named `"Clean"`.

    Raises:
        `TypeError` for anything else; `ValueError` for an accuracy outside [0, 1], a non-positive epsilon or example
        count, an unknown norm or two rows with one name.

    Example:

    ```python
    >>> from hf_advft.model_card import summarize_evaluation
    >>> record = summarize_evaluation({"norm": "linf", "epsilon": 8 / 255, "n_examples": 100, "source": "my eval",
    ...                                "rows": [{"name": "Clean", "accuracy": 0.9, "n_examples": 100},
    ...                                         {"name": "PGD-20", "accuracy": 0.4, "n_examples": 100}]})
    >>> [row["name"] for row in record["rows"]]
    ['Clean', 'PGD-20']
    ```
    """
    data = result.to_dict() if hasattr(result, "to_dict") else asdict(result) if is_dataclass(result) else result
    if not isinstance(data, Mapping):
        raise TypeError(f"Cannot read an evaluation from a {type(result).__name__}: pass the RobustnessResult of "
                        f"hf_advft.evaluation.evaluate_robustness, or a dict with norm, epsilon, n_examples and rows.")
    if "rows" in data:
        record = {key: data[key] for key in ("norm", "epsilon", "n_examples", "source", "rows") if key in data}
        record.update({k: data.get(k) for k in ("dataset", "curve", "expected_robustness", "warnings", "precision",
                                                 "weights_sha256")})
        record["rows"] = [dict(row) for row in data["rows"]]
    elif {"clean_accuracy", "attack_accuracy", "n_examples"} <= set(data):
        record = _from_robustness_result(data)
    else:
        raise TypeError(f"The evaluation has keys {sorted(data)}: expected a RobustnessResult (clean_accuracy, "
                        f"attack_accuracy, n_examples, ...) or a record with norm, epsilon, n_examples and rows.")
    if dataset is not None:
        record["dataset"] = dataset
    record["curve"] = [[float(e), float(a)] for e, a in (record.get("curve") or [])]
    record["warnings"] = list(record.get("warnings") or [])
    _check_evaluation(record)
    return record


def _from_robustness_result(data: Mapping) -> dict[str, Any]:
    n, config = data["n_examples"], data.get("config") or {}
    rows = [{"name": "Clean", "accuracy": data["clean_accuracy"], "n_examples": n, "details": "no attack"}]
    attacks = data["attack_accuracy"]
    if "pgd" in attacks:
        rows.append({"name": f"PGD-{data['pgd_steps']}", "accuracy": attacks["pgd"], "n_examples": n,
                     "details": f"{data['pgd_steps']} steps of {data['pgd_step_size']:.4g}, "
                                f"{data['pgd_restarts']} restart(s), random start"})
    if "autoattack" in attacks:
        version = config.get("autoattack_version", "standard")
        parts = autoattack_components(data.get("autoattack_trace") or {})
        rows.append({"name": f"AutoAttack ({version})", "accuracy": attacks["autoattack"], "n_examples": n,
                     "details": parts})
    if "square" in attacks:
        rows.append({"name": "Square", "accuracy": attacks["square"], "n_examples": n,
                     "details": f"black-box, {config.get('square_queries', '?')} queries"})
    if len(rows) > 2:
        rows.append({"name": "Worst case over the attacks", "accuracy": data["robust_accuracy"], "n_examples": n,
                     "details": "an example counts as robust only if every attack fails on it"})
    warnings = [f"gradient-masking check `{c['name']}` failed: {c['detail']}" for c in data.get("checks") or []
                if c.get("passed") is False]
    return {"norm": data["norm"], "epsilon": data["epsilon"], "n_examples": n,
            "source": f"hf_advft.evaluation.evaluate_robustness (seed {data.get('seed', 0)}, on {data.get('device')})",
            "rows": rows, "curve": list(zip(data.get("curve_epsilons") or [], data.get("curve_accuracy") or [])),
            "expected_robustness": data.get("expected_robustness"), "warnings": warnings,
            "precision": data.get("precision"), "weights_sha256": data.get("weights_sha256")}


def autoattack_components(names) -> str:
    """`"APGD-CE, FAB-T, Square"` for AutoAttack's component ids (`apgd-ce`, `fab-t`, `square`), as they ran."""
    return ", ".join("Square" if n == "square" else n.upper() for n in names) or "components not recorded"


def _check_evaluation(record: dict) -> None:
    if record.get("norm") not in NORMS:
        raise ValueError(f"The evaluation's norm is {record.get('norm')!r}: use one of {NORMS}.")
    epsilon = record.get("epsilon")
    if not isinstance(epsilon, (int, float)) or not math.isfinite(epsilon) or epsilon <= 0:
        raise ValueError(f"The evaluation's epsilon must be a positive number (pixel units), got {epsilon!r}.")
    rows = record.get("rows") or []
    if not rows:
        raise ValueError("The evaluation has no rows: give at least the clean accuracy.")
    names = [row.get("name") for row in rows]
    if len(set(names)) != len(names) or not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"Evaluation rows need distinct, non-empty names, got {names}.")
    for row in [record, *rows]:
        n = row.get("n_examples")
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise ValueError(f"n_examples must be a positive integer or None, got {n!r}.")
    for row in rows:
        acc = row.get("accuracy")
        if not isinstance(acc, (int, float)) or not 0 <= acc <= 1:
            raise ValueError(f"The accuracy of {row['name']!r} must be a fraction in [0, 1], got {acc!r}.")


def evaluation_from_logs(log_history: list[dict], args, step: int) -> dict[str, Any] | None:
    """The trainer's evaluation of the weights of `step`, or `None` if there is none.

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
    return summarize_evaluation({"norm": args.adv_norm, "epsilon": args.eval_epsilon, "n_examples": n,
                                 "source": f"AdvTrainer evaluation at step {step}", "rows": rows,
                                 "warnings": warnings, "precision": precision, "weights_sha256": weights_sha256})
