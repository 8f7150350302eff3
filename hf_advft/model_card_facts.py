"""The facts a model card states besides its evaluation: library, input shape, base model, compute, hardware.

Split from `hf_advft.model_card`. `card_results` assembles them into `adv_results.json`, the record the card is
rendered from (with `adv_config.json`).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from .environment import hardware
from .model_card_record import EvaluationRecord


# Metadata the card accepts beside the measured facts (the YAML header, the title, the dataset names).
CARD_FIELDS = ("model_name", "base_model", "license", "datasets", "dataset_name", "dataset_split", "tags")


def hardware_name(device: torch.device, world_size: int = 1) -> str:
    """The card's hardware line, `"1 x <GPU name>"` or `"1 x <CPU model>, <n> cores"` (`hf_advft.environment`)."""
    return hardware(device, world_size=world_size)


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
        # The JSON form of the EvaluationRecord (hf_advft.model_card_record), the keys hf-advft always wrote.
        "evaluation": None if evaluation is None else EvaluationRecord.coerce(evaluation).to_dict(),
        "compute": compute,
        "card": {k: v for k, v in card.items() if v is not None},
        "has_processor": False,  # set by the caller: a preprocessor_config.json is saved beside the weights
        "curve_image": None,  # set by the caller: the robustness-curve PNG beside the card
        "gallery_image": None,  # set by the caller: the adversarial-example gallery PNG beside the card
    }
