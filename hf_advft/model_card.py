"""The robust model card, rendered from one record of facts through `model_cards/robust_model_card.md`.

Everything the card says comes from two JSON files written beside the weights: `adv_config.json` (every adversarial
setting) and `adv_results.json` (what was measured, what it cost, what the model was trained from). The README is
rendered from them with `huggingface_hub.ModelCard.from_template`; its model-index and its evaluation table come from
the same list of rows, so the card cannot contradict the numbers it was rendered from, and `hf-advft card PATH`
renders the same card again from the files alone.
"""

from __future__ import annotations

import datetime
import inspect
import math
import os
import platform
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers.utils import logging

from .attacks import NORMS
from .schedules import SLOW_START_FAST_DECAY, get_slow_start_fast_decay_schedule
from .weights_hash import bind_evaluation, short


logger = logging.get_logger(__name__)

ADV_CONFIG_NAME = "adv_config.json"
ADV_RESULTS_NAME = "adv_results.json"
README_NAME = "README.md"
TEMPLATE_NAME = "robust_model_card.md"
# A README that contains this string was written by hf-advft and may be rewritten; any other README is the user's.
MODEL_CARD_MARKER = "hf-advft:model-card"
CARD_TAGS = ["adversarial-robustness", "adversarial-fine-tuning", "hf-advft", "image-classification"]
# Metadata the card accepts beside the measured facts (the YAML header, the title, the dataset names).
CARD_FIELDS = ("model_name", "base_model", "license", "datasets", "dataset_name", "dataset_split", "tags")
NORM_NAMES = {"linf": "L∞", "l2": "L2"}
NORM_IDS = {"linf": "Linf", "l2": "L2"}
# The log key prefix of the accuracy after each AutoAttack component (`hf_advft.trainer_autoattack.autoattack_metrics`).
AUTOATTACK_AFTER = "_autoattack_after_"

__all__ = [
    "ADV_CONFIG_NAME",
    "ADV_RESULTS_NAME",
    "MODEL_CARD_MARKER",
    "format_epsilon",
    "render_model_card",
    "summarize_evaluation",
    "write_model_card",
]


def template_path() -> Path:
    """The card template: inside the installed package (`hf_advft/templates`), else the repository's `model_cards/`."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates" / TEMPLATE_NAME, here.parent / "model_cards" / TEMPLATE_NAME):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"The model card template {TEMPLATE_NAME} is missing from {here / 'templates'}: "
                            f"reinstall hf-advft.")


def format_epsilon(epsilon: float, norm: str = "linf") -> str:
    """`8/255` for an L-inf radius that is a whole number of 8-bit grey levels, else the number (`0.5`)."""
    levels = epsilon * 255
    if norm == "linf" and round(levels) >= 1 and abs(levels - round(levels)) < 1e-6:
        return f"{round(levels)}/255"
    return f"{epsilon:.4g}"


# ----------------------------------------------------------------------------------------------------------------------
# Evaluation: every accepted result becomes one canonical dict, the only thing the card's numbers are read from
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


# ----------------------------------------------------------------------------------------------------------------------
# Facts gathered from a trainer at save time
def hardware_name(device: torch.device, world_size: int = 1) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        name = f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    else:
        name = device.type.upper()
    return f"{world_size} x {name}"


def compute_from_logs(log_history: list[dict], step: int, *, elapsed: float | None, hardware: str) -> dict:
    """Forward+backward passes (the latest cumulative count logged up to `step`), wall time and hardware."""
    logged = [h for h in log_history if "adv_attack_passes" in h and h.get("step", 0) <= step]
    runtime = [h["train_runtime"] for h in log_history if "train_runtime" in h and h.get("step", 0) <= step]
    compute = {"hardware": hardware, "passes_logged_at_step": logged[-1].get("step") if logged else None,
               "attack_passes": logged[-1]["adv_attack_passes"] if logged else None,
               "update_passes": logged[-1]["adv_update_passes"] if logged else None,
               "train_runtime_s": round(runtime[-1], 2) if runtime else None,
               "elapsed_s": round(elapsed, 2) if elapsed is not None and not runtime else None}
    return compute


def base_model_of(model) -> str | None:
    """A Hub id the model was loaded from (transformers' `name_or_path`), if it names a repo and not a folder."""
    name = getattr(getattr(model, "config", None), "_name_or_path", None) or getattr(model, "name_or_path", None)
    if isinstance(name, str) and name.count("/") == 1 and not os.path.exists(name) and not name.startswith("."):
        return name
    return None


def library_of(model) -> str:
    from transformers import PreTrainedModel

    if isinstance(model, PreTrainedModel):
        return "transformers"
    if type(model).__module__.startswith("timm.") and isinstance(getattr(model, "pretrained_cfg", None), dict):
        return "timm"
    return "torch"


def input_shape_of(model) -> list[int] | None:
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "image_size"):
        size = config.image_size
        size = list(size) if isinstance(size, (list, tuple)) else [size, size]
        return [getattr(config, "num_channels", 3), *size]
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("input_size"):
        return list(cfg["input_size"])
    return None


def card_results(*, library, step, training, pixel_space, input_shape, evaluation, compute, card) -> dict[str, Any]:
    """Assemble `adv_results.json` (the facts besides `adv_config.json` that the card is rendered from)."""
    from . import __version__

    unknown = set(card) - set(CARD_FIELDS) - {"repo_id"}
    if unknown:
        raise TypeError(f"Unknown model card field(s) {sorted(unknown)}: use {CARD_FIELDS}.")
    return {
        "hf_advft_version": __version__,
        "library": library,
        "step": step,
        "training": training,
        "normalization": {"mean": list(pixel_space.mean) if pixel_space.mean is not None else None,
                          "std": list(pixel_space.std) if pixel_space.std is not None else None,
                          "source": pixel_space.source},
        "input_shape": input_shape,
        "evaluation": evaluation,
        "compute": compute,
        "card": {k: v for k, v in card.items() if v is not None},
        "has_processor": False,  # set by the caller: a preprocessor_config.json is saved beside the weights
        "curve_image": None,  # set by the caller: the robustness-curve PNG beside the card
        "gallery_image": None,  # set by the caller: the adversarial-example gallery PNG beside the card
    }


# ----------------------------------------------------------------------------------------------------------------------
# Rendering
def render_model_card(adv_config: dict | None, results: dict, *, repo_id: str | None = None,
                      local_path: str | None = None, weights_sha256: str | None = None) -> ModelCard:
    """Render the robust model card from `adv_config.json` and `adv_results.json` (as dicts).

    Args:
        adv_config (`dict`, *optional*): The adversarial settings; `None` renders a card that says nothing is known.
        results (`dict`): The `adv_results.json` record (see `card_results`).
        repo_id (`str`, *optional*): The Hub repo the card will live in (used by the usage snippet).
        local_path (`str`, *optional*): The folder, for the usage snippet when there is no repo yet.
        weights_sha256 (`str`, *optional*): The hash of the weights beside the card (`hf_advft.weights_hash`). An
            evaluation that measured other weights is then left out, with a line in the card that says so.

    Returns:
        `huggingface_hub.ModelCard`

    Example:

    ```python
    >>> card = render_model_card(adv_config, results, repo_id="me/vit-robust")  # doctest: +SKIP
    >>> card.data.eval_results[0].metric_value  # doctest: +SKIP
    0.912
    ```
    """
    card = dict(results.get("card") or {})
    evaluation = results.get("evaluation")
    if evaluation is not None:
        evaluation = summarize_evaluation(evaluation)  # re-checked: a hand-edited file gets no pass
    evaluation, binding_note = bind_evaluation(evaluation, weights_sha256)
    library = results.get("library", "torch")
    location = repo_id or card.get("repo_id") or local_path or "."
    model_name = card.get("model_name") or Path(str(location).rstrip("/")).name or "robust-model"
    normalization = results.get("normalization") or {}
    channels = (results.get("input_shape") or [3])[0]
    mean = normalization.get("mean") or [0.0] * channels
    std = normalization.get("std") or [1.0] * channels
    rows = (evaluation or {}).get("rows", [])
    card_data = ModelCardData(
        license=card.get("license", "unknown"),
        library_name=library if library in ("transformers", "timm") else None,
        base_model=card.get("base_model"),
        datasets=card.get("datasets"),
        tags=CARD_TAGS + [t for t in card.get("tags") or [] if t not in CARD_TAGS],
        pipeline_tag="image-classification",
        model_name=model_name,
        eval_results=[_eval_result(row, evaluation, card) for row in rows] or None,
    )
    is_local = repo_id is None and card.get("repo_id") is None
    timm_name = f"local-dir:{location}" if is_local else f"hf-hub:{location}"
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path()),
        marker=f"{MODEL_CARD_MARKER}: written by hf-advft from adv_config.json and {ADV_RESULTS_NAME}, rewritten on "
               f"every save; delete this line to keep your own edits",
        model_name=model_name,
        base_model=card.get("base_model"),
        hf_advft_version=results.get("hf_advft_version", ""),
        adv=adv_config,
        threat=_threat_view(adv_config, evaluation, normalization),
        recipe=_recipe_view(adv_config, results.get("training") or {}, card) if adv_config else None,
        evaluation=_evaluation_view(evaluation, card, binding_note) if evaluation else None,
        left_out=binding_note if evaluation is None else None,
        curve_image=results.get("curve_image") if evaluation else None,
        gallery_image=results.get("gallery_image"),
        compute=_compute_view(results.get("compute") or {}),
        library=library,
        repo_id=location,
        timm_name=timm_name,
        has_processor=bool(results.get("has_processor")),
        input_shape=", ".join(str(s) for s in (results.get("input_shape") or [3, 224, 224])),
        mean=[round(m, 6) for m in mean],
        std=[round(s, 6) for s in std],
        limitations=_limitations(evaluation),
        year=datetime.date.today().year,
    )


def _eval_result(row: dict, evaluation: dict, card: dict) -> EvalResult:
    clean = row["name"] == "Clean"
    norm, eps = NORM_IDS[evaluation["norm"]], format_epsilon(evaluation["epsilon"], evaluation["norm"])
    return EvalResult(
        task_type="image-classification",
        task_name="Image Classification",
        dataset_type=(card.get("datasets") or ["custom"])[0],
        dataset_name=evaluation.get("dataset") or card.get("dataset_name") or "evaluation set",
        dataset_split=card.get("dataset_split"),
        metric_type="accuracy" if clean else "robust_accuracy",
        metric_value=round(float(row["accuracy"]), 6),
        metric_name="Clean accuracy" if clean else f"{row['name']} robust accuracy ({norm}, eps={eps})",
        metric_config=None if clean else f"{row['name']}, {norm}, eps={eps}",
        metric_args=None if clean else {"attack": row["name"], "norm": evaluation["norm"],
                                        "epsilon": float(evaluation["epsilon"]), "n_examples": row.get("n_examples")},
    )


def _threat_view(adv_config, evaluation, normalization) -> dict:
    if evaluation is not None:
        norm, eps = evaluation["norm"], evaluation["epsilon"]
    elif adv_config:
        norm = adv_config.get("adv_norm", "linf")
        eps = adv_config.get("adv_eval_epsilon") or adv_config.get("adv_epsilon")
    else:
        return {"norm": "unknown", "epsilon": "unknown", "epsilon_float": "-", "normalization": "unknown"}
    if normalization.get("mean") is None:
        described = "none: the model takes pixels in [0, 1]"
    else:
        described = (f"(x - mean) / std with mean {[round(m, 4) for m in normalization['mean']]}, std "
                     f"{[round(s, 4) for s in normalization['std']]} (from {normalization.get('source')})")
    return {"norm": NORM_NAMES[norm], "epsilon": format_epsilon(eps, norm), "epsilon_float": f"{eps:.6g}",
            "normalization": described}


def _schedule_text(adv_config: dict, training: dict) -> str:
    name = adv_config.get("lr_scheduler_type", "linear")
    kwargs = dict(adv_config.get("lr_scheduler_kwargs") or {})
    if name != SLOW_START_FAST_DECAY:
        return f"`{name}`" + (f" {kwargs}" if kwargs else "")
    # The schedule's own defaults (defined once, in its signature) fill what lr_scheduler_kwargs left out.
    defaults = {k: p.default for k, p in inspect.signature(get_slow_start_fast_decay_schedule).parameters.items()
                if p.kind is p.KEYWORD_ONLY and k != "last_epoch"}
    shape = {**defaults, **kwargs}
    warmup = training.get("warmup_steps")
    if not warmup:
        start = f"{shape['warmup_ratio']:.0%} of the steps"
    elif warmup < 1:  # transformers >= 5 reads a warmup_steps below 1 as a ratio of the run
        start = f"{warmup:.0%} of the steps"
    else:
        start = f"{int(warmup)} steps"
    return (f"`slow_start_fast_decay`: linear slow start over {start}, then {shape['decay']} decay to "
            f"{shape['min_lr_ratio']:g} x the peak")


def _recipe_view(adv_config: dict, training: dict, card: dict) -> dict:
    norm = adv_config.get("adv_norm", "linf")
    eps = adv_config["adv_epsilon"]
    objective = adv_config.get("adv_objective", "pgd_at")
    if objective == "trades":
        objective_text = f"TRADES (Zhang et al. 2019), beta = {adv_config.get('adv_trades_beta')}"
    elif objective == "mart":
        objective_text = f"MART (Wang et al. 2020), beta = {adv_config.get('adv_mart_beta')}"
    else:
        weight = adv_config.get("adv_clean_loss_weight") or 0
        objective_text = "PGD-AT (Madry et al.): cross-entropy on PGD examples" + (
            f", plus {weight} x clean cross-entropy" if weight else "")
    if adv_config.get("adv_awp_gamma"):
        objective_text += f", with AWP (Wu et al. 2020), gamma = {adv_config['adv_awp_gamma']}"
    ema = adv_config.get("adv_ema_decay")
    weights = f"EMA (decay {ema}) of the trained weights" if ema else "the trained weights (no EMA)"
    steps = adv_config.get("adv_steps")
    attack = (f"PGD-{steps}, step {format_epsilon(adv_config.get('adv_step_size', 0), norm)}, "
              f"{'random start' if adv_config.get('adv_random_start', True) else 'no random start'}, "
              f"{adv_config.get('adv_restarts', 1)} restart(s), model in {adv_config.get('adv_attack_mode')} mode")
    single_step = {"fgsm_rs": "FGSM with random start (Wong et al. 2020), step 1.25 x eps",
                   "n_fgsm": "N-FGSM (de Jorge et al. 2022), noise 2 x eps, step eps, not projected"}
    if adv_config.get("adv_attack") in single_step:
        attack = f"{single_step[adv_config['adv_attack']]}, model in {adv_config.get('adv_attack_mode')} mode"
    if adv_config.get("adv_freeze_bn"):
        attack += "; BatchNorm statistics frozen during training"
    eps_text = f"{format_epsilon(eps, norm)} ({NORM_NAMES.get(norm, norm)})"
    if adv_config.get("adv_epsilon_schedule") == "linear":
        eps_text += f", ramped linearly over the first {adv_config.get('adv_epsilon_warmup_ratio', 0):.0%} of the steps"
    else:
        eps_text += ", constant"
    if adv_config.get("adv_epsilon_delay_ratio"):
        eps_text += f", after {adv_config['adv_epsilon_delay_ratio']:.0%} of the steps at eps = 0"
    epochs = training.get("epochs")
    return {
        "objective": objective_text,
        "attack": attack,
        "weights": weights,
        "epsilon": eps_text,
        "schedule": _schedule_text(adv_config, training),
        "epochs": "not recorded" if epochs is None else f"{epochs:g}" + (
            f" (of {training['num_train_epochs']:g})" if training.get("num_train_epochs") is not None else ""),
        "steps": training.get("steps", "not recorded"),
        "batch_size": training.get("batch_size", "not recorded"),
        "learning_rate": training.get("learning_rate", "not recorded"),
        "dataset": card.get("dataset_name") or ", ".join(card.get("datasets") or []) or "not recorded",
    }


def _evaluation_view(evaluation: dict, card: dict, binding_note: str | None) -> dict:
    rows = []
    for row in evaluation["rows"]:
        n, acc = row.get("n_examples"), float(row["accuracy"])
        ci = f"{196 * math.sqrt(acc * (1 - acc) / n):.1f}" if n else "?"
        rows.append({"name": row["name"], "percent": f"{100 * acc:.1f}%", "ci95": ci,
                     "n_examples": n or "not recorded", "details": row.get("details") or ""})
    curve = [{"epsilon": format_epsilon(e, evaluation["norm"]) if e else "0", "percent": f"{100 * a:.1f}%"}
             for e, a in evaluation.get("curve") or []]
    er = evaluation.get("expected_robustness")
    return {"norm": NORM_NAMES[evaluation["norm"]], "epsilon": format_epsilon(evaluation["epsilon"], evaluation["norm"]),
            "n_examples": evaluation.get("n_examples") or "an unrecorded number of",
            "dataset": evaluation.get("dataset") or card.get("dataset_name") or "the evaluation set",
            "source": evaluation.get("source") or "not recorded", "rows": rows, "curve": curve,
            "weights": short(evaluation["weights_sha256"]) if evaluation.get("weights_sha256") else None,
            "expected_robustness": None if er is None else f"{er:.4f}",
            "warnings": (evaluation.get("warnings") or []) + ([binding_note] if binding_note else []),
            "precision": evaluation.get("precision")}


def _compute_view(compute: dict) -> dict:
    def passes(value):
        return "not recorded" if value is None else f"{int(value):,}"

    attack, update = compute.get("attack_passes"), compute.get("update_passes")
    total = None if attack is None or update is None else attack + update
    if compute.get("train_runtime_s") is not None:
        wall = f"{compute['train_runtime_s']:.1f} s (`train_runtime`)"
    elif compute.get("elapsed_s") is not None:
        wall = f"{compute['elapsed_s']:.1f} s so far (training still running at this checkpoint)"
    else:
        wall = "not recorded"
    at = compute.get("passes_logged_at_step")
    suffix = f" (as logged at step {at})" if at is not None else ""
    return {"attack_passes": passes(attack) + suffix, "update_passes": passes(update) + suffix,
            "total_passes": passes(total), "wall_time": wall, "hardware": compute.get("hardware", "not recorded")}


def _limitations(evaluation: dict | None) -> list[str]:
    notes = []
    if evaluation is None:
        return ["No robustness of these weights was measured: treat any robustness claim as unverified."]
    names = " ".join(row["name"] for row in evaluation["rows"])
    if "AutoAttack" not in names:
        notes.append("Evaluated without AutoAttack: run `hf_advft.evaluation.evaluate_robustness(..., "
                     "attacks=(\"pgd\", \"autoattack\"))` for a stronger estimate.")
    n = evaluation.get("n_examples")
    if n is not None and n < 1000:
        notes.append(f"Measured on only {n} examples: see the ± column for the sampling error.")
    return notes


def write_model_card(card: ModelCard, folder: str | os.PathLike) -> bool:
    """Save `card` as `folder/README.md` unless a README there was not written by hf-advft (it is left untouched).

    Returns:
        `bool`: whether the card was written.
    """
    path = Path(folder) / README_NAME
    if path.is_file() and MODEL_CARD_MARKER not in path.read_text(encoding="utf-8", errors="replace"):
        logger.warning_once(f"{path} was not written by hf-advft: it is kept as it is. `hf-advft card "
                            f"{Path(folder)}` prints the robust model card.")
        return False
    card.save(path)
    return True
