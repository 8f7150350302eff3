"""The robust model card, rendered from one record of facts through `model_cards/robust_model_card.md`.

Everything the card says comes from two JSON files written beside the weights: `adv_config.json` (every adversarial
setting) and `adv_results.json` (what was measured, what it cost, what the model was trained from). The README is
rendered from them with `huggingface_hub.ModelCard.from_template`; its model-index and its evaluation table come from
the same list of rows, so the card cannot contradict the numbers it was rendered from, and `hf-advft card PATH`
renders the same card again from the files alone.

Three modules, one per seam: the evaluation record (`hf_advft.model_card_record`), the other facts gathered at save
time (`hf_advft.model_card_facts`) and the rendering (here). Every public name of the three is importable from here.
"""

from __future__ import annotations

import datetime
import inspect
import math
import os
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers.utils import logging

from .model_card_facts import (  # noqa: F401 (the facts' helpers: `hf_advft.model_card` is their home too)
    CARD_FIELDS,
    base_model_of,
    card_results,
    compute_from_logs,
    hardware_name,
    input_shape_of,
    library_of,
)
from .model_card_record import (  # noqa: F401 (summarize_evaluation, EvaluationRecord: public here too)
    AUTOATTACK_AFTER,
    EvaluationRecord,
    EvaluationRow,
    autoattack_components,
    evaluation_from_logs,
    summarize_evaluation,
)
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
NORM_NAMES = {"linf": "L∞", "l2": "L2"}
NORM_IDS = {"linf": "Linf", "l2": "L2"}

__all__ = [
    "ADV_CONFIG_NAME",
    "ADV_RESULTS_NAME",
    "EvaluationRecord",
    "EvaluationRow",
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
    rows = evaluation.rows if evaluation is not None else []
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
        adapter=bool(results.get("adapter")),
        input_shape=", ".join(str(s) for s in (results.get("input_shape") or [3, 224, 224])),
        mean=[round(m, 6) for m in mean],
        std=[round(s, 6) for s in std],
        limitations=_limitations(evaluation),
        year=datetime.date.today().year,
    )


def _eval_result(row: EvaluationRow, evaluation: EvaluationRecord, card: dict) -> EvalResult:
    clean = row.name == "Clean"
    norm, eps = NORM_IDS[evaluation.norm], format_epsilon(evaluation.epsilon, evaluation.norm)
    return EvalResult(
        task_type="image-classification",
        task_name="Image Classification",
        dataset_type=(card.get("datasets") or ["custom"])[0],
        dataset_name=evaluation.dataset or card.get("dataset_name") or "evaluation set",
        dataset_split=card.get("dataset_split"),
        metric_type="accuracy" if clean else "robust_accuracy",
        metric_value=round(float(row.accuracy), 6),
        metric_name="Clean accuracy" if clean else f"{row.name} robust accuracy ({norm}, eps={eps})",
        metric_config=None if clean else f"{row.name}, {norm}, eps={eps}",
        metric_args=None if clean else {"attack": row.name, "norm": evaluation.norm,
                                        "epsilon": float(evaluation.epsilon), "n_examples": row.n_examples},
    )


def _threat_view(adv_config, evaluation, normalization) -> dict:
    if evaluation is not None:
        norm, eps = evaluation.norm, evaluation.epsilon
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
    learning_rate = training.get("learning_rate", "not recorded")
    if adv_config.get("lr_multipliers"):
        learning_rate = f"{learning_rate}; " + ", ".join(
            f"x{m:g} for the parameters matching `{p}`" for p, m in adv_config["lr_multipliers"].items())
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
        "learning_rate": learning_rate,
        "dataset": card.get("dataset_name") or ", ".join(card.get("datasets") or []) or "not recorded",
    }


def _evaluation_view(evaluation: EvaluationRecord, card: dict, binding_note: str | None) -> dict:
    rows = []
    for row in evaluation.rows:
        n, acc = row.n_examples, float(row.accuracy)
        ci = f"{196 * math.sqrt(acc * (1 - acc) / n):.1f}" if n else "?"
        rows.append({"name": row.name, "percent": f"{100 * acc:.1f}%", "ci95": ci,
                     "n_examples": n or "not recorded", "details": row.details or ""})
    curve = [{"epsilon": format_epsilon(e, evaluation.norm) if e else "0", "percent": f"{100 * a:.1f}%"}
             for e, a in evaluation.curve]
    er = evaluation.expected_robustness
    return {"norm": NORM_NAMES[evaluation.norm], "epsilon": format_epsilon(evaluation.epsilon, evaluation.norm),
            "n_examples": evaluation.n_examples or "an unrecorded number of",
            "dataset": evaluation.dataset or card.get("dataset_name") or "the evaluation set",
            "source": evaluation.source or "not recorded", "rows": rows, "curve": curve,
            "weights": short(evaluation.weights_sha256) if evaluation.weights_sha256 else None,
            "expected_robustness": None if er is None else f"{er:.4f}",
            "warnings": evaluation.warnings + ([binding_note] if binding_note else []),
            "precision": evaluation.precision}


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


def _limitations(evaluation: EvaluationRecord | None) -> list[str]:
    notes = []
    if evaluation is None:
        return ["No robustness of these weights was measured: treat any robustness claim as unverified."]
    names = " ".join(row.name for row in evaluation.rows)
    if "AutoAttack" not in names:
        notes.append("Evaluated without AutoAttack: run `hf_advft.evaluation.evaluate_robustness(..., "
                     "attacks=(\"pgd\", \"autoattack\"))` for a stronger estimate.")
    n = evaluation.n_examples
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
