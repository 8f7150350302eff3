"""`hf-advft train`: adversarial fine-tuning of a transformers or timm image classifier, from the command line.

One entry point for both libraries (the recipes `recipes/finetune_vit.py` and `recipes/finetune_timm.py` are thin
wrappers around it). The model library is read from `--model_name_or_path` (`--model_library auto`, the default): a
local folder by its `config.json` (timm's has `architecture`, a transformers one `model_type`), `hf-hub:...`,
`timm/...` and timm model names (`resnet50.a1_in1k`) are timm, other Hub ids transformers. Every flag is a field of
`ScriptArguments` (model, data) or `AdvTrainingArguments` (training, attack); `--config file.yaml` sets them from a
file, flags given on the command line win. `--help` lists them all.

    # one process (CPU or one GPU), local checkpoint, built-in offline dataset
    hf-advft train --model_name_or_path ./my_vit --dataset_name digits --output_dir outputs/robust_vit

    # a YAML file of flags (recipes/configs/*.yaml); any flag overrides it
    hf-advft train --config recipes/configs/vit_b16_cifar10.yaml --num_train_epochs 1

    # several GPUs: accelerate starts one process per GPU (DDP; --config_file for bf16, FSDP, ...)
    accelerate launch --num_processes 8 -m hf_advft.cli train --config recipes/configs/resnet50_cifar10.yaml
    accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml $(which hf-advft) train --config ...
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .script_utils import (
    TIMM_ONLY_FIELDS,
    ScriptArguments,
    load_recipe_data,
    make_recipe_parser,
    parse_recipe_args,
    set_recipe_transforms,
    train_evaluate_save,
)


__all__ = ["MODEL_LIBRARIES", "TrainScriptArguments", "add_train_command", "detect_model_library", "make_parser",
           "train"]

MODEL_LIBRARIES = ("auto", "transformers", "timm")
DEFAULT_MODELS = {"transformers": "google/vit-base-patch16-224-in21k", "timm": "resnet50.a1_in1k"}
HOW_TO_LOAD = {
    "transformers": """\
from transformers import AutoImageProcessor, AutoModelForImageClassification
model = AutoModelForImageClassification.from_pretrained("{path}")
processor = AutoImageProcessor.from_pretrained("{path}")""",
    "timm": """\
import timm
model = timm.create_model("local-dir:{path}", pretrained=True)
# inputs: {channels}x{height}x{width}, pixels in [0, 1] normalized with model.pretrained_cfg["mean"] / ["std"]""",
}
_TIMM_PREFIXES = ("hf-hub:", "hf_hub:", "timm/", "local-dir:")


@dataclass
class TrainScriptArguments(ScriptArguments):
    """`ScriptArguments` plus the choice of model library, for `hf-advft train`.

    Example:

    ```python
    >>> from hf_advft.train_command import TrainScriptArguments
    >>> TrainScriptArguments(model_library="timm").model_library
    'timm'
    ```
    """

    model_library: str = field(
        default="auto",
        metadata={"help": f"One of {MODEL_LIBRARIES}. auto: timm for a folder with timm's config.json "
                          f"(`architecture`), 'hf-hub:'/'timm/' ids and timm model names; transformers for other "
                          f"folders and Hub ids. "
                          f"Without --model_name_or_path the default model is "
                          f"{DEFAULT_MODELS['transformers']} (transformers) or {DEFAULT_MODELS['timm']} (timm)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.model_library not in MODEL_LIBRARIES:
            raise ValueError(f"model_library={self.model_library!r} is unknown: use one of {MODEL_LIBRARIES}.")


def detect_model_library(name_or_path: str) -> str:
    """`"timm"` or `"transformers"`: which library loads `name_or_path` (a local folder, a Hub id or a timm name).

    Raises a `ValueError` for a local path that does not exist and for a folder holding neither kind of config.
    """
    from .hub import detect_library
    from .modeling import _looks_like_path

    path = os.path.expanduser(name_or_path)
    if os.path.isdir(path):
        library = detect_library(Path(path))
        if library == "torch":
            raise ValueError(f"{name_or_path!r} has no config.json of a transformers model (`model_type`) or a timm "
                             f"one (`architecture` + `pretrained_cfg`): save it with model.save_pretrained(dir) or "
                             f"timm.models.save_for_hf(model, dir), or pass --model_library.")
        return library
    if name_or_path.startswith(_TIMM_PREFIXES):
        return "timm"
    if _looks_like_path(name_or_path) or os.path.exists(path):
        raise ValueError(f"--model_name_or_path {name_or_path!r}: no such directory. Pass the folder a model was saved "
                         f"to, a Hub id (org/name) or a timm model name.")
    import timm

    return "timm" if "/" not in name_or_path and timm.is_model(name_or_path) else "transformers"


def _resolve_library(script_args, model_library: str | None) -> str:
    library = model_library or getattr(script_args, "model_library", "auto")
    if library not in MODEL_LIBRARIES:
        raise ValueError(f"model_library={library!r} is unknown: use one of {MODEL_LIBRARIES}.")
    if library != "auto":
        return library
    name = script_args.model_name_or_path
    return "transformers" if name is None else detect_model_library(name)


def train(script_args: ScriptArguments, training_args, *, model_library: str | None = None) -> dict:
    """Fine-tune adversarially, evaluate (clean and PGD accuracy), save; returns the eval metrics.

    Args:
        script_args ([`ScriptArguments`]): Model and data (a [`TrainScriptArguments`] also carries `model_library`).
        training_args ([`AdvTrainingArguments`]): Training and attack settings.
        model_library (`str`, *optional*): `"transformers"`, `"timm"` or `"auto"`; overrides
            `script_args.model_library` (the recipes pass their library here).
    """
    from .modeling import (
        describe_timm_task,
        load_timm_classifier,
        load_transformers_classifier,
        save_timm_config,
        timm_input_spec,
        transformers_input_spec,
    )
    from .trainer import AdvTrainer

    library = _resolve_library(script_args, model_library)
    if library == "transformers":
        for name, default in TIMM_ONLY_FIELDS.items():
            value = getattr(script_args, name, default)
            if value != default:
                raise ValueError(f"{name}={value!r} is for timm models; a transformers model takes its new head's "
                                 f"init, channels and resize from its config and image processor (drop --{name}).")
    data = load_recipe_data(script_args, training_args)
    model_name = script_args.model_name_or_path or DEFAULT_MODELS[library]
    path = os.path.abspath(training_args.output_dir)
    extra_save = None
    if library == "transformers":
        model, processor = load_transformers_classifier(model_name, label_names=data.label_names,
                                                        cache_dir=script_args.cache_dir)
        channels, size = transformers_input_spec(model, processor)
        if script_args.image_size is not None and (script_args.image_size,) * 2 != tuple(size):
            raise ValueError(
                f"--image_size {script_args.image_size} differs from the {size[0]}x{size[1]} inputs {model_name!r} "
                f"takes (its image processor / config.image_size); drop --image_size for transformers models."
            )
        set_recipe_transforms(data, script_args, training_args, model=model, processor=processor)
        trainer = AdvTrainer(model=model, args=training_args, train_dataset=data.train, eval_dataset=data.eval,
                             processing_class=processor)
        how_to_load = HOW_TO_LOAD["transformers"].format(path=path)
    else:
        model = load_timm_classifier(model_name, num_labels=data.num_labels, pretrained=script_args.pretrained,
                                     cache_dir=script_args.cache_dir, head_init=script_args.head_init,
                                     in_chans=script_args.in_chans)
        channels, size = timm_input_spec(model, script_args.image_size)
        describe_timm_task(model, label_names=data.label_names, input_size=(channels, *size),  # for config.json
                           crop_pct=script_args.crop_pct, interpolation=script_args.interpolation)
        set_recipe_transforms(data, script_args, training_args, model=model)
        trainer = AdvTrainer(model=model, args=training_args, train_dataset=data.train, eval_dataset=data.eval)

        def extra_save(output_dir):
            # AdvTrainer's saves write timm's config.json (hf_advft.hub); make sure the final directory has one.
            if not os.path.isfile(os.path.join(output_dir, "config.json")):
                save_timm_config(model, output_dir, trainer.pixel_space)

        how_to_load = HOW_TO_LOAD["timm"].format(path=path, channels=channels, height=size[0], width=size[1])
    metrics, summary = train_evaluate_save(trainer, data=data, model_name=model_name, how_to_load=how_to_load,
                                           extra_save=extra_save)
    if trainer.is_world_process_zero():
        sys.stdout.write(summary + "\n")  # the command's report to the person at the terminal (the library logs)
    return metrics


def make_parser(description: str | None = None):
    """The `hf-advft train` parser: `TrainScriptArguments` + `AdvTrainingArguments` + `--config`."""
    parser = make_recipe_parser(description or __doc__, script_args_cls=TrainScriptArguments)
    parser.prog = "hf-advft train"
    return parser


def add_train_command(subparsers) -> argparse.ArgumentParser:
    """Add `train` to the `hf-advft` sub-commands. Its flags are parsed by `make_parser()` (so `--help` lists them)."""
    parser = subparsers.add_parser(
        "train", add_help=False, help="Adversarially fine-tune a transformers or timm classifier (--help: all flags).",
    )
    parser.set_defaults(func=run_train, takes_extra_args=True)
    return parser


def run_train(args) -> int:
    """The `train` command: parse the recipe flags left over by the top-level parser, then `train`."""
    train(*parse_recipe_args(make_parser(), args.extra_args))
    return 0
