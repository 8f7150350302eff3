"""Saving a robust checkpoint with its card: `save_robust_model`, and what every `AdvTrainer` save writes.

Split from `hf_advft.hub` (the public home of these names, which re-exports them; pushing is in `hf_advft.hub_push`,
loading in `hf_advft.loading`). A folder written here loads with the plain libraries: a transformers model, or a timm
model in timm's Hub format; beside it `adv_config.json`, `adv_results.json` and the README model card rendered from
those two files (`hf_advft.model_card`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from .evaluation_utils import base_model_of_adapter, is_adapter_model  # noqa: F401 (also public here)
from .loading import SAFE_WEIGHTS, _read_json, detect_library
from .model_card import (
    ADV_CONFIG_NAME,
    ADV_RESULTS_NAME,
    CARD_FIELDS,
    MODEL_CARD_MARKER,
    README_NAME,
    EvaluationRecord,
    base_model_of,
    card_results,
    compute_from_logs,
    evaluation_from_logs,
    hardware_name,
    input_shape_of,
    library_of,
    render_model_card,
    summarize_evaluation,
    write_model_card,
)
from .modeling import save_timm_config
from .pixel_space import PixelSpace, resolve_pixel_space
from .weights_hash import folder_weights_sha256


logger = logging.get_logger(__name__)

CURVE_IMAGE_NAME = "robustness_curve.png"
GALLERY_IMAGE_NAME = "adversarial_gallery.png"  # hf_advft.gallery.GALLERY_PNG
# Trainer.create_model_card's argument names, mapped to the card's fields (`None`: accepted and not shown).
TRAINER_CARD_ARGS = {"finetuned_from": "base_model", "dataset_tags": "datasets", "dataset": "dataset_name",
                     "language": None, "tasks": None, "dataset_args": None}

__all__ = ["save_robust_model"]


# ----------------------------------------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------------------------------------
# Writing
def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _save_safetensors(model, folder: Path) -> None:
    """The model's state dict as `model.safetensors` (timm's Hub format, and any other torch module)."""
    import safetensors.torch

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(state, str(folder / SAFE_WEIGHTS[0]), metadata={"format": "pt"})


def _as_adv_config(adv_config) -> dict | None:
    if adv_config is None or isinstance(adv_config, dict):
        return adv_config
    if hasattr(adv_config, "adv_config"):  # AdvTrainingArguments
        return adv_config.adv_config()
    raise TypeError(f"adv_config must be a dict or AdvTrainingArguments, got {type(adv_config).__name__}.")


def _card_fields(fields: dict) -> dict:
    """Map `Trainer.create_model_card`'s argument names onto the card's, refusing unknown ones."""
    out = {}
    for key, value in fields.items():
        key = TRAINER_CARD_ARGS.get(key, key)
        if key is None or value is None:
            continue
        if key not in CARD_FIELDS:
            raise TypeError(f"Unknown model card argument {key!r}: use {CARD_FIELDS + tuple(TRAINER_CARD_ARGS)}.")
        if key in ("datasets", "tags") and isinstance(value, str):
            value = [value]
        if key == "dataset_name" and isinstance(value, (list, tuple)):
            value = ", ".join(value)
        out[key] = value
    return out


def _write_card(folder: Path, adv_config: dict | None, results: dict, *, repo_id: str | None, curve_image,
                gallery_image=None) -> bool:
    """Write `adv_results.json` and render the card from it (and `adv_config`); the curve is shown only when given.

    The card states only an evaluation of the weights now in `folder` (`hf_advft.weights_hash`).
    """
    results["weights_sha256"] = folder_weights_sha256(folder)
    results["gallery_image"] = None
    if gallery_image is not None:  # the adversarial-example gallery (hf_advft.gallery), copied beside the card
        if not Path(gallery_image).is_file():
            raise FileNotFoundError(f"gallery_image={str(gallery_image)!r} does not exist: pass the PNG written by "
                                    f"hf_advft.gallery.plot_adversarial_gallery.")
        if Path(gallery_image).resolve() != (folder / GALLERY_IMAGE_NAME).resolve():
            shutil.copyfile(gallery_image, folder / GALLERY_IMAGE_NAME)
        results["gallery_image"] = GALLERY_IMAGE_NAME
    results["curve_image"] = None
    if curve_image is not None and results.get("evaluation") is not None:
        if not Path(curve_image).is_file():
            raise FileNotFoundError(f"curve_image={str(curve_image)!r} does not exist: pass the PNG written by "
                                    f"hf_advft.evaluation.plot_robustness_curve.")
        if Path(curve_image).resolve() != (folder / CURVE_IMAGE_NAME).resolve():
            shutil.copyfile(curve_image, folder / CURVE_IMAGE_NAME)
        results["curve_image"] = CURVE_IMAGE_NAME
    _write_json(folder / ADV_RESULTS_NAME, results)
    card = render_model_card(adv_config, results, repo_id=repo_id, local_path=str(folder),
                             weights_sha256=results["weights_sha256"])
    return write_model_card(card, folder)


def save_robust_model(
    model: torch.nn.Module,
    save_directory: str | os.PathLike,
    *,
    processor: Any = None,
    adv_config: Any = None,
    evaluation: Any = None,
    curve_image: str | os.PathLike | None = None,
    gallery_image: str | os.PathLike | None = None,
    training: dict | None = None,
    compute: dict | None = None,
    eval_data: dict | None = None,
    repo_id: str | None = None,
    **card: Any,
) -> Path:
    """Save a robust model as a checkpoint the plain libraries load, with `adv_config.json` and its model card.

    Args:
        model (`torch.nn.Module`): A transformers model (saved with `save_pretrained`), a timm model (saved in timm's
            Hub format: `model.safetensors` + `config.json` with `pretrained_cfg`), or any module (its state dict
            only, loadable with `load_robust_model(path, model=MyNet())`).
        save_directory (`str` or `os.PathLike`): The folder to write.
        processor (*optional*): The image processor, saved beside a transformers model; it also gives the
            normalization.
        adv_config (`dict` or [`AdvTrainingArguments`], *optional*): How the model was trained. Without it the card
            says that nothing is known of the model's robustness.
        evaluation (*optional*): The numbers for the card: a [`~hf_advft.evaluation.RobustnessResult`], an
            `EvaluationRecord` (`hf_advft.model_card_record`) or its JSON form. It is the card's only source of
            numbers, and is shown only if it measured the weights saved here: a `RobustnessResult` carries the SHA-256
            of the weights it measured (`weights_sha256`); a result of other weights is left out, with a line saying
            why.
        curve_image (`str`, *optional*): A robustness-curve PNG (`plot_robustness_curve`), copied and shown.
        gallery_image (`str`, *optional*): An adversarial-example gallery PNG
            ([`~hf_advft.gallery.plot_adversarial_gallery`]), copied beside the card and shown.
        training (`dict`, *optional*): How long it trained, for the recipe table: `epochs`, `num_train_epochs`,
            `steps`, `batch_size`, `learning_rate`, `warmup_steps`.
        compute (`dict`, *optional*): What training cost: `attack_passes`, `update_passes` (example
            forward+backward passes), `train_runtime_s`, `hardware`.
        eval_data (`dict`, *optional*): The exact eval examples (`ImageClassificationData.eval_source`), kept in
            `adv_results.json` so that `hf-advft evaluate` measures the same ones.
        repo_id (`str`, *optional*): The Hub repo the folder is meant for (named in the card's usage snippet).
        card: Card metadata: `model_name`, `base_model`, `license`, `datasets`, `dataset_name`, `dataset_split`,
            `tags`.

    Returns:
        `Path`: the folder.

    Example:

    ```python
    >>> from hf_advft import save_robust_model
    >>> save_robust_model(model, "vit-robust", processor=processor, adv_config=args,
    ...                   evaluation=result, base_model="google/vit-base-patch16-224")  # doctest: +SKIP
    ```
    """
    folder = Path(save_directory)
    folder.mkdir(parents=True, exist_ok=True)
    adv_config = _as_adv_config(adv_config)
    if adv_config is None:
        logger.warning("save_robust_model: no adv_config given; the card will say nothing is known of how the model "
                       "was made robust.")
    mean, std = (adv_config or {}).get("adv_image_mean"), (adv_config or {}).get("adv_image_std")
    pixel_space = resolve_pixel_space(mean, std, processor, model)
    library = library_of(model)
    if library == "transformers":
        model.save_pretrained(folder)
    elif library == "timm":  # timm's Hub format: the weights and timm's config.json (the one writer, in modeling)
        _save_safetensors(model, folder)
        save_timm_config(model, folder, pixel_space)
    else:
        _save_safetensors(model, folder)
        logger.warning(f"{type(model).__name__} is neither a transformers nor a timm model: only its weights are "
                       f"saved; load them into the same class with load_robust_model(path, model=...).")
    if processor is not None:
        processor.save_pretrained(folder)
    if adv_config is not None:
        _write_json(folder / ADV_CONFIG_NAME, adv_config)
    card = _card_fields(card)
    card.setdefault("base_model", base_model_of(model))
    if repo_id is not None:
        card["repo_id"] = repo_id
    record = summarize_evaluation(evaluation, dataset=card.get("dataset_name")) if evaluation is not None else None
    results = card_results(library=library, step=None, training=dict(training or {}), pixel_space=pixel_space,
                           input_shape=input_shape_of(model), evaluation=record, compute=dict(compute or {}),
                           card=card)
    results["has_processor"] = processor is not None
    results["eval_data"] = eval_data
    _write_card(folder, adv_config, results, repo_id=repo_id, curve_image=curve_image, gallery_image=gallery_image)
    return folder


# ----------------------------------------------------------------------------------------------------------------------
# AdvTrainer's saves
def _weights_step(trainer, output_dir: str) -> int:
    """The optimizer step whose weights are being saved: a checkpoint's own step, else the weights in the model (the
    best step once `load_best_model_at_end` loaded it, early stopping or not: `AdvTrainer.weights_step`)."""
    if Path(output_dir).name.startswith(f"{PREFIX_CHECKPOINT_DIR}-"):
        return trainer.state.global_step
    return getattr(trainer, "weights_step", trainer.state.global_step)


def save_trainer_files(trainer, output_dir: str, **card) -> None:
    """Write the timm config (for a timm model), `adv_results.json` and the model card of an AdvTrainer save.

    `card` takes `Trainer.create_model_card`'s arguments (`finetuned_from`, `license`, `dataset`, `dataset_tags`,
    `tags`, `model_name`) plus `evaluation=` (a result for the current weights, which then replaces the trainer's
    own numbers on the card) and `curve_image=`; they are kept in `trainer.model_card_fields` for every later save.
    """
    folder, args, state = Path(output_dir), trainer.args, trainer.state
    model = base_model_of_adapter(trainer.accelerator.unwrap_model(trainer.model))  # a LoRA card describes its base
    library = library_of(model)
    if library == "timm":
        save_timm_config(model, folder, trainer.pixel_space)
    step = _weights_step(trainer, output_dir)
    fields = trainer.model_card_fields
    evaluation, curve_image = card.pop("evaluation", None), card.pop("curve_image", None)
    if card.get("gallery_image") is not None:  # a gallery of the current weights, kept for their later saves
        fields["gallery"] = {"step": step, "path": card.pop("gallery_image")}
    card.pop("gallery_image", None)
    gallery = fields.get("gallery")
    gallery_image = gallery["path"] if gallery is not None and gallery["step"] == step else None
    if card.get("eval_data") is not None:
        fields["eval_data"] = card.pop("eval_data")
    if evaluation is not None:
        fields["evaluation"] = {"step": step, "record": summarize_evaluation(evaluation), "curve_image": curve_image}
    fields.update(_card_fields(card))
    explicit = fields.get("evaluation")
    if explicit is not None and explicit["step"] == step:  # one source of numbers: never mixed with the logs
        evaluation, curve_image = explicit["record"], explicit["curve_image"]
    else:
        evaluation, curve_image = evaluation_from_logs(state.log_history, args, step), None
        if evaluation is not None and any(row.name.startswith("AutoAttack") for row in evaluation.rows):
            evaluation, curve_image = _with_autoattack_curve(evaluation, Path(args.output_dir))
    if evaluation is not None and fields.get("dataset_name") and not evaluation.dataset:
        evaluation = dataclasses.replace(evaluation, dataset=fields["dataset_name"])
    start = getattr(trainer, "_train_start_time", None)
    elapsed = time.time() - start if start is not None and step == state.global_step else None
    compute = compute_from_logs(state.log_history, step, elapsed=elapsed,
                                hardware=hardware_name(args.device, args.world_size))
    epoch = state.epoch if step == state.global_step else next(
        (h["epoch"] for h in reversed(state.log_history) if h.get("step") == step and "epoch" in h), None)
    training = {"epochs": epoch, "num_train_epochs": args.num_train_epochs, "steps": step,
                "max_steps": state.max_steps, "batch_size": args.per_device_train_batch_size,
                "gradient_accumulation_steps": args.gradient_accumulation_steps, "world_size": args.world_size,
                "learning_rate": args.learning_rate, "warmup_steps": args.warmup_steps}
    card_meta = {k: v for k, v in fields.items() if k in CARD_FIELDS}
    card_meta.setdefault("base_model", base_model_of(model))
    repo_id = getattr(trainer, "hub_model_id", None) or args.hub_model_id
    if repo_id:
        card_meta["repo_id"] = repo_id
    card_meta.setdefault("model_name", (repo_id or str(Path(args.output_dir).resolve())).rstrip("/").split("/")[-1])
    results = card_results(library=library, step=step, training=training, pixel_space=trainer.pixel_space,
                           input_shape=input_shape_of(model), evaluation=evaluation, compute=compute, card=card_meta)
    results["has_processor"] = (folder / "preprocessor_config.json").is_file()
    # A LoRA save holds only the adapter: the card's usage loads it onto its base model, not as a whole model.
    results["adapter"] = is_adapter_model(trainer.accelerator.unwrap_model(trainer.model))
    results["eval_data"] = fields.get("eval_data")
    _write_card(folder, args.adv_config(), results, repo_id=repo_id, curve_image=curve_image,
                gallery_image=gallery_image)


def _with_autoattack_curve(evaluation: EvaluationRecord, run_dir: Path) -> tuple[EvaluationRecord, Path | None]:
    """Add the robustness curve that the end-of-training AutoAttack wrote into `output_dir` (single process)."""
    from .evaluation import ROBUSTNESS_JSON, ROBUSTNESS_PNG

    result = _read_json(run_dir / ROBUSTNESS_JSON)
    if not isinstance(result, dict) or not result.get("curve_epsilons"):
        return evaluation, None
    curve = [[e, a] for e, a in zip(result["curve_epsilons"], result.get("curve_accuracy") or [])]
    evaluation = dataclasses.replace(evaluation, curve=curve, expected_robustness=result.get("expected_robustness"))
    png = run_dir / ROBUSTNESS_PNG
    return evaluation, png if png.is_file() else None


def copy_card_files(checkpoint_folder: str, output_dir: str) -> None:
    """Before the Trainer pushes `output_dir` from a checkpoint, bring the checkpoint's card and its sources along."""
    src, dst = Path(checkpoint_folder), Path(output_dir)
    for name in (ADV_CONFIG_NAME, ADV_RESULTS_NAME, CURVE_IMAGE_NAME, GALLERY_IMAGE_NAME):
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    readme = dst / README_NAME
    if (src / README_NAME).is_file():
        if not readme.is_file() or MODEL_CARD_MARKER in readme.read_text(encoding="utf-8", errors="replace"):
            shutil.copyfile(src / README_NAME, readme)


def folder_results(folder: str | os.PathLike) -> tuple[dict | None, dict]:
    """`(adv_config, results)` of a saved folder: its `adv_results.json`, or a bare record built from its files."""
    folder = Path(folder)
    adv_config, results = _read_json(folder / ADV_CONFIG_NAME), _read_json(folder / ADV_RESULTS_NAME)
    if results is None:
        mean, std = (adv_config or {}).get("adv_image_mean"), (adv_config or {}).get("adv_image_std")
        results = card_results(library=detect_library(folder), step=None, training={},
                               pixel_space=PixelSpace(mean, std, source="adv_config.json") if mean else PixelSpace(),
                               input_shape=None, evaluation=None, compute={}, card={})
        results["has_processor"] = (folder / "preprocessor_config.json").is_file()
    results.setdefault("adapter", (folder / "adapter_config.json").is_file())  # files written before the flag
    return adv_config, results


def render_folder_card(folder: str | os.PathLike, repo_id: str | None = None):
    """The card of a saved folder, rendered again from its `adv_config.json` and `adv_results.json` alone.

    The evaluation is checked against the folder's weights as they are now (their SHA-256): numbers of other weights
    are left out, with a line in the card saying why.
    """
    adv_config, results = folder_results(folder)
    return render_model_card(adv_config, results, repo_id=repo_id, local_path=str(folder),
                             weights_sha256=folder_weights_sha256(folder))
