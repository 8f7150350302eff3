"""Robust checkpoints on the Hub: save them with their card, push them, load them back.

A robust checkpoint is a folder the plain libraries load: a transformers model (`config.json`, `model.safetensors`,
`preprocessor_config.json`) or a timm model in timm's Hub format (`model.safetensors` and a `config.json` holding
`architecture` and `pretrained_cfg`, so `timm.create_model("hf-hub:...")` loads it), plus `adv_config.json` (how it was
trained), `adv_results.json` (what was measured) and the README model card rendered from those two files
(`hf_advft.model_card`). `AdvTrainer` writes all of it on every save; `save_robust_model` / `push_robust_model` do it
for a model trained elsewhere; `load_robust_model` reads any of them back, safetensors only unless told otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import HfApi, get_token, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, LocalTokenNotFoundError, RepositoryNotFoundError
from huggingface_hub.utils import build_hf_headers
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from .model_card import (
    ADV_CONFIG_NAME,
    ADV_RESULTS_NAME,
    CARD_FIELDS,
    MODEL_CARD_MARKER,
    README_NAME,
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
from .pixel_space import PixelSpace, resolve_pixel_space


logger = logging.get_logger(__name__)

CURVE_IMAGE_NAME = "robustness_curve.png"
GALLERY_IMAGE_NAME = "adversarial_gallery.png"  # hf_advft.gallery.GALLERY_PNG
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model.pth", "model.pth")
# What a push uploads from a folder: weights, model and preprocessing configs, the card and its two sources. Never
# the optimizer, scheduler, RNG or trainer state of a checkpoint.
PUSH_PATTERNS = ["*.safetensors", "model.safetensors.index.json", "config.json", "preprocessor_config.json",
                 "processor_config.json", ADV_CONFIG_NAME, ADV_RESULTS_NAME, CURVE_IMAGE_NAME,
                 GALLERY_IMAGE_NAME]
# Trainer.create_model_card's argument names, mapped to the card's fields (`None`: accepted and not shown).
TRAINER_CARD_ARGS = {"finetuned_from": "base_model", "dataset_tags": "datasets", "dataset": "dataset_name",
                     "language": None, "tasks": None, "dataset_args": None}

__all__ = ["RobustModel", "load_robust_model", "push_checkpoint", "push_robust_model", "save_robust_model"]


# ----------------------------------------------------------------------------------------------------------------------
# Tokens
def require_token(token: str | bool | None = None) -> None:
    """Fail early, before any upload, when no Hub token is available; say how to get one."""
    if isinstance(token, str) and token:
        return
    if token is False:
        raise ValueError("Pushing to the Hub needs a token, but token=False disables it.")
    if get_token() is not None:
        return
    try:
        build_hf_headers(token=True)
    except LocalTokenNotFoundError as err:
        raise LocalTokenNotFoundError(
            f"{err} To push, log in once with `huggingface-cli login` (or `hf auth login`), set the HF_TOKEN "
            f"environment variable, or pass a token (`token=...`, `--hub_token`)."
        ) from err


# ----------------------------------------------------------------------------------------------------------------------
# Writing
def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _save_timm_config(model, folder: Path, pixel_space: PixelSpace) -> None:
    # timm's own exporter, so that `timm.create_model("hf-hub:...")` rebuilds the model; it lives in a private module
    # because timm's public `save_for_hf` would write the weights a second time.
    from timm.models._hub import save_config_for_hf

    channels = model.pretrained_cfg.get("input_size", (3,))[0]
    mean = list(pixel_space.mean) if pixel_space.mean is not None else [0.0] * channels
    std = list(pixel_space.std) if pixel_space.std is not None else [1.0] * channels
    save_config_for_hf(model, str(folder / "config.json"), model_config={"pretrained_cfg": {"mean": mean, "std": std}})


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
    """Write `adv_results.json` and render the card from it (and `adv_config`); the curve is shown only when given."""
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
    card = render_model_card(adv_config, results, repo_id=repo_id, local_path=str(folder))
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
        evaluation (*optional*): The numbers for the card: a [`~hf_advft.evaluation.RobustnessResult`] or a record
            accepted by [`~hf_advft.model_card.summarize_evaluation`]. It is the card's only source of numbers.
        curve_image (`str`, *optional*): A robustness-curve PNG (`plot_robustness_curve`), copied and shown.
        gallery_image (`str`, *optional*): An adversarial-example gallery PNG
            ([`~hf_advft.gallery.plot_adversarial_gallery`]), copied beside the card and shown.
        training (`dict`, *optional*): How long it trained, for the recipe table: `epochs`, `num_train_epochs`,
            `steps`, `batch_size`, `learning_rate`, `warmup_steps`.
        compute (`dict`, *optional*): What training cost: `attack_passes`, `update_passes` (example
            forward+backward passes), `train_runtime_s`, `hardware`.
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
    elif library == "timm":
        from timm.models import save_for_hf

        save_for_hf(model, str(folder), safe_serialization=True,
                    model_config={"pretrained_cfg": {"mean": list(pixel_space.mean or [0.0] * 3),
                                                     "std": list(pixel_space.std or [1.0] * 3)}})
    else:
        import safetensors.torch

        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        safetensors.torch.save_file(state, str(folder / SAFE_WEIGHTS[0]), metadata={"format": "pt"})
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
    _write_card(folder, adv_config, results, repo_id=repo_id, curve_image=curve_image, gallery_image=gallery_image)
    return folder


# ----------------------------------------------------------------------------------------------------------------------
# AdvTrainer's saves
def _weights_step(trainer, output_dir: str) -> int:
    """The optimizer step whose weights are being saved: a checkpoint's own step, or the best one once loaded."""
    state, args = trainer.state, trainer.args
    if Path(output_dir).name.startswith(f"{PREFIX_CHECKPOINT_DIR}-"):
        return state.global_step
    done = state.max_steps and state.global_step >= state.max_steps
    if args.load_best_model_at_end and done and getattr(state, "best_global_step", None):
        return state.best_global_step
    return state.global_step


def save_trainer_files(trainer, output_dir: str, **card) -> None:
    """Write the timm config (for a timm model), `adv_results.json` and the model card of an AdvTrainer save.

    `card` takes `Trainer.create_model_card`'s arguments (`finetuned_from`, `license`, `dataset`, `dataset_tags`,
    `tags`, `model_name`) plus `evaluation=` (a result for the current weights, which then replaces the trainer's
    own numbers on the card) and `curve_image=`; they are kept in `trainer.model_card_fields` for every later save.
    """
    folder, args, state = Path(output_dir), trainer.args, trainer.state
    model = trainer.accelerator.unwrap_model(trainer.model)
    library = library_of(model)
    if library == "timm":
        _save_timm_config(model, folder, trainer.pixel_space)
    step = _weights_step(trainer, output_dir)
    fields = trainer.model_card_fields
    evaluation, curve_image = card.pop("evaluation", None), card.pop("curve_image", None)
    if card.get("gallery_image") is not None:  # a gallery of the current weights, kept for their later saves
        fields["gallery"] = {"step": step, "path": card.pop("gallery_image")}
    card.pop("gallery_image", None)
    gallery = fields.get("gallery")
    gallery_image = gallery["path"] if gallery is not None and gallery["step"] == step else None
    if evaluation is not None:
        fields["evaluation"] = {"step": step, "record": summarize_evaluation(evaluation), "curve_image": curve_image}
    fields.update(_card_fields(card))
    explicit = fields.get("evaluation")
    if explicit is not None and explicit["step"] == step:  # one source of numbers: never mixed with the logs
        evaluation, curve_image = explicit["record"], explicit["curve_image"]
    else:
        evaluation, curve_image = evaluation_from_logs(state.log_history, args, step), None
        if evaluation is not None and any(row["name"].startswith("AutoAttack") for row in evaluation["rows"]):
            evaluation, curve_image = _with_autoattack_curve(evaluation, Path(args.output_dir))
    if evaluation is not None and fields.get("dataset_name") and not evaluation.get("dataset"):
        evaluation = {**evaluation, "dataset": fields["dataset_name"]}
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
    _write_card(folder, args.adv_config(), results, repo_id=repo_id, curve_image=curve_image,
                gallery_image=gallery_image)


def _with_autoattack_curve(evaluation: dict, run_dir: Path) -> tuple[dict, Path | None]:
    """Add the robustness curve that the end-of-training AutoAttack wrote into `output_dir` (single process)."""
    from .evaluation import ROBUSTNESS_JSON, ROBUSTNESS_PNG

    result = _read_json(run_dir / ROBUSTNESS_JSON)
    if not isinstance(result, dict) or not result.get("curve_epsilons"):
        return evaluation, None
    curve = [[e, a] for e, a in zip(result["curve_epsilons"], result.get("curve_accuracy") or [])]
    evaluation = {**evaluation, "curve": curve, "expected_robustness": result.get("expected_robustness")}
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


# ----------------------------------------------------------------------------------------------------------------------
# Reading a folder
def _weights_in(folder: Path) -> tuple[list[str], list[str]]:
    """(safetensors weight files, pickle weight files) present in `folder`."""
    return ([n for n in SAFE_WEIGHTS if (folder / n).is_file()], [n for n in PICKLE_WEIGHTS if (folder / n).is_file()])


def _check_weights(folder: Path, where: str, allow_pickle: bool) -> None:
    safe, pickled = _weights_in(folder)
    if safe or (pickled and allow_pickle):
        return
    if pickled:
        raise ValueError(
            f"{where} only has pickle weights ({', '.join(pickled)}). hf-advft loads safetensors only by default, "
            f"because unpickling a file can run any code. If you trust its author, pass allow_pickle=True "
            f"(command line: --allow-pickle); better, ask for (or save) a model.safetensors."
        )
    found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    raise ValueError(
        f"No weights in {where}: expected {' or '.join(SAFE_WEIGHTS)} (or, with allow_pickle=True, "
        f"{' or '.join(PICKLE_WEIGHTS)}). Files found: {found or 'none'}."
    )


def detect_library(folder: Path) -> str:
    """`"timm"` (config.json with `architecture` + `pretrained_cfg`), `"transformers"` (`model_type`), or `"torch"`."""
    config = _read_json(folder / "config.json")
    if isinstance(config, dict) and "architecture" in config and "pretrained_cfg" in config:
        return "timm"
    if isinstance(config, dict) and "model_type" in config:
        return "transformers"
    return "torch"


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
    return adv_config, results


def render_folder_card(folder: str | os.PathLike, repo_id: str | None = None):
    """The card of a saved folder, rendered again from its `adv_config.json` and `adv_results.json` alone."""
    adv_config, results = folder_results(folder)
    return render_model_card(adv_config, results, repo_id=repo_id, local_path=str(folder))


# ----------------------------------------------------------------------------------------------------------------------
# Pushing
def push_checkpoint(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    allow_pickle: bool = False,
):
    """Upload a saved robust checkpoint folder (what `hf-advft push PATH --repo-id ...` does).

    Uploads the weights, `config.json`, `preprocessor_config.json`, `adv_config.json`, `adv_results.json`, the
    robustness curve and the model card, re-rendered for `repo_id`, and nothing else (no optimizer, RNG or trainer
    state). A README the user wrote, in the folder or already in the repo, is never overwritten.

    Returns:
        `huggingface_hub.CommitInfo`
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "no such directory"
        raise ValueError(f"{str(folder)!r}: {what}. Pass the directory a model was saved to.")
    _check_weights(folder, str(folder), allow_pickle)
    require_token(token)
    api = HfApi()
    repo_id = api.create_repo(repo_id, token=token, private=private, exist_ok=True).repo_id
    patterns = list(PUSH_PATTERNS)
    if allow_pickle:
        patterns += list(PICKLE_WEIGHTS)
    if _remote_readme_is_ours(api, repo_id, revision, token):
        adv_config, results = folder_results(folder)
        results.setdefault("card", {})["repo_id"] = repo_id
        _write_json(folder / ADV_RESULTS_NAME, results)
        # Our card is rendered again so that its usage snippet names the repo; a user's README is pushed as it is.
        write_model_card(render_model_card(adv_config, results, repo_id=repo_id), folder)
        patterns.append(README_NAME)
    else:
        logger.warning(f"{repo_id} already has a README that hf-advft did not write: it is left as it is.")
    return api.upload_folder(repo_id=repo_id, folder_path=str(folder), token=token, revision=revision,
                             commit_message=commit_message or "Upload robust model with hf-advft",
                             create_pr=create_pr, allow_patterns=patterns)


def _remote_readme_is_ours(api: HfApi, repo_id: str, revision: str | None, token) -> bool:
    """True when the repo has no README yet, or one written by hf-advft."""
    try:
        path = api.hf_hub_download(repo_id, README_NAME, revision=revision, token=token)
    except (EntryNotFoundError, RepositoryNotFoundError):  # covers LocalEntryNotFoundError (offline, not cached)
        return True
    return MODEL_CARD_MARKER in Path(path).read_text(encoding="utf-8", errors="replace")


def push_robust_model(
    model: torch.nn.Module,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    **kwargs: Any,
):
    """Save `model` with [`save_robust_model`] into a temporary folder and push it to `repo_id`.

    timm models go up in timm's Hub format, so `timm.create_model("hf-hub:<repo_id>", pretrained=True)` loads them;
    transformers models load with `AutoModelForImageClassification.from_pretrained("<repo_id>")`. `kwargs` are
    [`save_robust_model`]'s (`processor`, `adv_config`, `evaluation`, `curve_image`, card metadata). The token is
    checked before anything is written.

    Returns:
        `huggingface_hub.CommitInfo`

    Example:

    ```python
    >>> from hf_advft import push_robust_model
    >>> push_robust_model(model, "me/resnet50-robust", adv_config=args, evaluation=result,
    ...                   base_model="timm/resnet50.a1_in1k", license="apache-2.0")  # doctest: +SKIP
    ```
    """
    require_token(token)
    with tempfile.TemporaryDirectory() as tmp:
        save_robust_model(model, tmp, repo_id=repo_id, **kwargs)
        return push_checkpoint(tmp, repo_id, token=token, private=private, revision=revision,
                               commit_message=commit_message, create_pr=create_pr)


# ----------------------------------------------------------------------------------------------------------------------
# Loading
@dataclass
class RobustModel:
    """What [`load_robust_model`] returns.

    Attributes:
        model (`torch.nn.Module`): The model, in eval mode.
        pixel_space ([`PixelSpace`]): Its normalization: `pixel_space.to_model(pixels)` turns images in [0, 1] into its
            inputs, and `pixel_space.wrap(logits_fn)` gives attacks a function of pixels.
        preprocess: The transformers image processor, or timm's eval transform for PIL images; `None` if unknown.
        adv_config (`dict`, *optional*): Every adversarial training setting (`adv_config.json`); `None` if absent.
        results (`dict`, *optional*): What the card was rendered from (`adv_results.json`): evaluation, compute.
        library (`str`): `"transformers"`, `"timm"` or `"torch"`.
        path (`str`): The local folder the files were read from.
    """

    model: torch.nn.Module
    pixel_space: PixelSpace
    preprocess: Any
    adv_config: dict | None
    results: dict | None
    library: str
    path: str


def _local_folder(repo_id_or_path: str, revision, token, cache_dir, allow_pickle) -> Path:
    if os.path.isdir(repo_id_or_path):
        return Path(repo_id_or_path)
    if os.path.exists(repo_id_or_path):
        raise ValueError(f"{repo_id_or_path!r} is a file: pass the folder holding the model, or a Hub repo id.")
    from .modeling import _looks_like_path

    if _looks_like_path(repo_id_or_path) or repo_id_or_path.count("/") > 1:  # no Hub id: do not ask the Hub
        raise FileNotFoundError(f"{repo_id_or_path!r}: no such directory. Pass the folder a model was saved to, or a "
                                f"Hub repo id (org/name).")
    patterns = ["*.json", "*.safetensors", README_NAME] + (list(PICKLE_WEIGHTS) if allow_pickle else [])
    try:
        return Path(snapshot_download(repo_id_or_path, revision=revision, token=token, cache_dir=cache_dir,
                                      allow_patterns=patterns))
    except (RepositoryNotFoundError, EntryNotFoundError) as err:
        raise OSError(f"{repo_id_or_path!r}: no such directory, and no Hub repo of that name could be read ({err}). "
                      f"Pass the folder a model was saved to, or an existing Hub repo id.") from err


def load_robust_model(
    repo_id_or_path: str | os.PathLike,
    *,
    model: torch.nn.Module | None = None,
    revision: str | None = None,
    token: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    allow_pickle: bool = False,
) -> RobustModel:
    """Load a robust checkpoint, its normalization and its adversarial settings, from the Hub or a folder.

    The kind is read from the files: a timm `config.json` (`architecture` + `pretrained_cfg`) is built with
    `timm.create_model`, a transformers one with `AutoModelForImageClassification` (`trust_remote_code=False`);
    weights alone (a plain `nn.Module`) load into the `model` you pass. Only safetensors are read unless
    `allow_pickle=True`.

    Args:
        repo_id_or_path (`str`): A Hub repo id (`"me/vit-robust"`) or a local folder.
        model (`torch.nn.Module`, *optional*): A module to load the weights into (needed for plain modules).
        revision (`str`, *optional*), token (`str`, *optional*), cache_dir (`str`, *optional*): Hub download options.
        allow_pickle (`bool`, defaults to `False`): Also accept `pytorch_model.bin` (unpickling can run code: only
            for checkpoints you trust).

    Returns:
        [`RobustModel`]

    Raises:
        ValueError: When there are no weights (the expected files are named) or only pickle weights without
            `allow_pickle=True`. A checkpoint without `adv_config.json` loads, with a `UserWarning`.

    Example:

    ```python
    >>> from hf_advft import load_robust_model
    >>> robust = load_robust_model("me/vit-robust")  # doctest: +SKIP
    >>> logits = robust.model(robust.pixel_space.to_model(pixels)).logits  # pixels in [0, 1]  # doctest: +SKIP
    ```
    """
    where = str(repo_id_or_path)
    folder = _local_folder(where, revision, token, cache_dir, allow_pickle)
    _check_weights(folder, where, allow_pickle)
    adv_config, results = _read_json(folder / ADV_CONFIG_NAME), _read_json(folder / ADV_RESULTS_NAME)
    if adv_config is None:
        warnings.warn(f"{where} has no {ADV_CONFIG_NAME}: nothing is known of this model's robustness (it may not be "
                      f"adversarially trained at all).", UserWarning, stacklevel=2)
    library = detect_library(folder)
    preprocess = None
    if model is not None:
        _load_state_dict(model, folder, allow_pickle)
        library = library_of(model)
    elif library == "transformers":
        from transformers import AutoModelForImageClassification

        model = AutoModelForImageClassification.from_pretrained(
            folder, use_safetensors=None if allow_pickle else True, trust_remote_code=False)
        if (folder / "preprocessor_config.json").is_file():
            from transformers import AutoImageProcessor

            preprocess = AutoImageProcessor.from_pretrained(folder, trust_remote_code=False)
    elif library == "timm":
        import timm

        model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    else:
        raise ValueError(f"{where} holds weights but no model config (no config.json with `model_type` or timm's "
                         f"`architecture`): it was saved from a plain nn.Module. Build that module and pass it: "
                         f"load_robust_model({where!r}, model=MyNet()).")
    if library == "timm" and preprocess is None:
        import timm

        preprocess = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    model.eval()
    mean, std = (adv_config or {}).get("adv_image_mean"), (adv_config or {}).get("adv_image_std")
    pixel_space = resolve_pixel_space(mean, std, preprocess if library == "transformers" else None, model)
    return RobustModel(model=model, pixel_space=pixel_space, preprocess=preprocess, adv_config=adv_config,
                       results=results, library=library, path=str(folder))


def _load_state_dict(model: torch.nn.Module, folder: Path, allow_pickle: bool) -> None:
    safe, pickled = _weights_in(folder)
    if "model.safetensors" in safe:
        import safetensors.torch

        state = safetensors.torch.load_file(str(folder / "model.safetensors"), device="cpu")
    elif pickled and allow_pickle and pickled[0].endswith((".bin", ".pth")):
        state = torch.load(folder / pickled[0], map_location="cpu", weights_only=True)
    else:
        raise ValueError(f"Loading into a given model needs a single-file model.safetensors in {folder} "
                         f"(found {safe + pickled}).")
    model.load_state_dict(state)
