"""Loading robust checkpoints back: `load_robust_model`, and what it reads of a saved folder.

Split from `hf_advft.hub` (which saves and pushes, and re-exports these names): which weight files a folder holds
(safetensors only, unless told otherwise), which library wrote it (timm, transformers, or a plain state dict), and the
model, normalization and adversarial settings it describes.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import snapshot_download
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError
from transformers.utils import logging

from .model_card import ADV_CONFIG_NAME, ADV_RESULTS_NAME, README_NAME, library_of
from .pixel_space import PixelSpace, resolve_pixel_space


logger = logging.get_logger(__name__)

__all__ = ["RobustModel", "detect_library", "load_robust_model"]

ADAPTER_CONFIG_NAME = "adapter_config.json"  # a peft adapter (LoRA) folder
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model.pth", "model.pth")


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None



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


# ----------------------------------------------------------------------------------------------------------------------
# Loading
@dataclass
class RobustModel:
    """What [`load_robust_model`] returns.

    Attributes:
        model (`torch.nn.Module`): The model, in eval mode.
        pixel_space ([`PixelSpace`]): Its normalization: `pixel_space.to_model(pixels)` turns images in [0, 1] into its
            inputs, and `pixel_space.wrap(logits_fn)` gives attacks a function of pixels.
        preprocess: For a transformers model its image processor; for a timm model an [`ImageTransform`] (PIL image
            -> normalized input tensor) with timm's eval resize, crop and interpolation (`resolve_data_config`) and
            `pixel_space`'s normalization. Either gives exactly the inputs training evaluated on (the recipes' and
            `hf-advft train`'s eval transform) and `hf-advft evaluate` uses. `None` if unknown.
        adv_config (`dict`, *optional*): Every adversarial training setting (`adv_config.json`); `None` if absent.
        results (`dict`, *optional*): What the card was rendered from (`adv_results.json`): evaluation (with the
            `weights_sha256` it measured), compute, the normalization resolved at training and, from the recipes,
            `eval_data` (the exact eval examples: `hf_advft.data.load_eval_source(results["eval_data"])` loads them).
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

    The normalization is the one the model was trained with: `adv_config.json`'s explicit mean/std, else the one
    resolved at save time (`adv_results.json`), else the image processor's or timm's `pretrained_cfg`.

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
    if (folder / ADAPTER_CONFIG_NAME).is_file():
        return _load_adapter(folder, where, model=model, revision=revision, token=token, cache_dir=cache_dir,
                             allow_pickle=allow_pickle)
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
    pixel_space = saved_pixel_space(adv_config, results, preprocess if library == "transformers" else None, model)
    if library == "timm" and preprocess is None:
        from .image_transforms import model_image_transform

        # The eval transform hf-advft trained and evaluates with: timm's resize, crop and interpolation, then the
        # normalization the model was trained with (which may not be `pretrained_cfg`'s).
        preprocess = model_image_transform(model, pixel_space=pixel_space)
    model.eval()
    return RobustModel(model=model, pixel_space=pixel_space, preprocess=preprocess, adv_config=adv_config,
                       results=results, library=library, path=str(folder))


def _load_adapter(folder: Path, where: str, *, model, revision, token, cache_dir, allow_pickle) -> RobustModel:
    """A peft adapter folder (LoRA): load its base model (a Hub id or a folder, with `load_robust_model`), put the
    adapter on it, and keep the adapter folder's normalization and adversarial settings."""
    try:
        from peft import PeftConfig, PeftModel
    except ImportError as err:
        raise ImportError(f"{where} holds a peft adapter ({ADAPTER_CONFIG_NAME}): pip install 'hf-advft[peft]'."
                          ) from err
    base_path = PeftConfig.from_pretrained(str(folder)).base_model_name_or_path
    if not base_path:
        raise ValueError(f"{where}/{ADAPTER_CONFIG_NAME} names no base_model_name_or_path, so the model under the "
                         f"adapter is unknown: set it there to the base model's Hub id or folder.")
    with warnings.catch_warnings():  # the base is not the robust model: its missing adv_config.json is expected
        warnings.simplefilter("ignore", UserWarning)
        base = load_robust_model(base_path, model=model, revision=None if os.path.isdir(base_path) else revision,
                                 token=token, cache_dir=cache_dir, allow_pickle=allow_pickle)
    adapted = PeftModel.from_pretrained(base.model, str(folder))
    adapted.eval()
    adv_config, results = _read_json(folder / ADV_CONFIG_NAME), _read_json(folder / ADV_RESULTS_NAME)
    if adv_config is None:
        warnings.warn(f"{where} has no {ADV_CONFIG_NAME}: nothing is known of this model's robustness (it may not be "
                      f"adversarially trained at all).", UserWarning, stacklevel=3)
    mean, std = (adv_config or {}).get("adv_image_mean"), (adv_config or {}).get("adv_image_std")
    pixel_space = base.pixel_space if mean is None else resolve_pixel_space(mean, std, None, base.model)
    preprocess = base.preprocess
    if base.library == "timm" and pixel_space != base.pixel_space:  # the adapter was trained with its own mean/std
        from .image_transforms import model_image_transform

        preprocess = model_image_transform(base.model, pixel_space=pixel_space)
    return RobustModel(model=adapted, pixel_space=pixel_space, preprocess=preprocess, adv_config=adv_config,
                       results=results, library=base.library, path=str(folder))


def saved_pixel_space(adv_config: dict | None, results: dict | None, processor, model) -> PixelSpace:
    """The normalization the model was trained and evaluated with: `adv_config.json`'s explicit mean/std, else the
    one resolved at save time (`adv_results.json` `normalization`), else the processor's or timm's."""
    mean, std = (adv_config or {}).get("adv_image_mean"), (adv_config or {}).get("adv_image_std")
    saved = (results or {}).get("normalization") or {}
    if mean is None and std is None and saved.get("mean") is not None:
        return PixelSpace(tuple(saved["mean"]), tuple(saved["std"]),
                          source=f"{ADV_RESULTS_NAME} (resolved at save time from {saved.get('source')})")
    return resolve_pixel_space(mean, std, processor, model)


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
