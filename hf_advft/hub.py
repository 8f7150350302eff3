"""Robust checkpoints on the Hub: save them with their card, push them, load them back.

A robust checkpoint is a folder the plain libraries load: a transformers model (`config.json`, `model.safetensors`,
`preprocessor_config.json`) or a timm model in timm's Hub format (`model.safetensors` and a `config.json` holding
`architecture` and `pretrained_cfg`, so `timm.create_model("hf-hub:...")` loads it), plus `adv_config.json` (how it was
trained), `adv_results.json` (what was measured) and the README model card rendered from those two files
(`hf_advft.model_card`). `AdvTrainer` writes all of it on every save; `save_robust_model` / `push_robust_model` do it
for a model trained elsewhere; `load_robust_model` (in `hf_advft.loading`, re-exported here) reads any of them back,
safetensors only unless told otherwise.

The code lives in three modules, one per seam, and every name is importable from here: saving
(`hf_advft.hub_save`), pushing (`hf_advft.hub_push`) and loading (`hf_advft.loading`).
"""

# The public home of the save, push and load names: they are re-exported from the modules of each seam.
from .hub_push import (  # noqa: F401
    GENERATED_FILE_MARKER,
    PUSH_IGNORE,
    PUSH_PATTERNS,
    push_checkpoint,
    push_robust_model,
    require_token,
)
from .hub_save import (  # noqa: F401
    CURVE_IMAGE_NAME,
    GALLERY_IMAGE_NAME,
    TRAINER_CARD_ARGS,
    base_model_of_adapter,
    copy_card_files,
    folder_results,
    is_adapter_model,
    render_folder_card,
    save_robust_model,
    save_trainer_files,
)
from .loading import RobustModel, detect_library, load_robust_model  # noqa: F401


__all__ = ["RobustModel", "load_robust_model", "push_checkpoint", "push_robust_model", "save_robust_model"]
