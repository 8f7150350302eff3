"""What the recipes in `recipes/` share: `ScriptArguments`, the YAML-aware parser, data preparation, the final summary.

Each recipe is `main(script_args, training_args)` + `make_parser()`; this module keeps them from copying each other.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field

import yaml
from transformers import HfArgumentParser
from transformers.utils import logging

from .cli import parse_fraction
from .data import (
    AUGMENTATIONS,
    DEFAULT_AUGMENTATION,
    DEFAULT_UNREADABLE,
    DEFAULT_VALIDATION_PERCENT,
    FASHION_MNIST_DIR,
    UNREADABLE_POLICIES,
    ImageClassificationData,
    load_image_dataset,
    model_image_transform,
    set_image_transforms,
)
from .modeling import HEAD_INITS
from .pixel_space import resolve_pixel_space
from .training_args import AdvTrainingArguments


logger = logging.get_logger(__name__)

TIMM_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")  # timm.data's names
# Model arguments only timm models take (a transformers model's channels and geometry come with its processor).
TIMM_ONLY_FIELDS = {"head_init": "default", "in_chans": None, "crop_pct": None, "interpolation": None}

__all__ = [
    "TIMM_INTERPOLATIONS",
    "TIMM_ONLY_FIELDS",
    "ScriptArguments",
    "format_summary",
    "load_recipe_data",
    "make_recipe_parser",
    "parse_recipe_args",
    "set_recipe_transforms",
    "train_evaluate_save",
]


@dataclass
class ScriptArguments:
    """Model and data arguments of `recipes/finetune_vit.py` and `recipes/finetune_timm.py`.

    Example:

    ```python
    >>> from hf_advft.script_utils import ScriptArguments
    >>> ScriptArguments(dataset_name="digits", image_size=32).validation_split_percentage
    10.0
    ```
    """

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Hub id, timm name ('resnet50.a1_in1k', 'hf-hub:timm/...') or local directory. Default: "
                          "google/vit-base-patch16-224-in21k (finetune_vit.py), resnet50.a1_in1k (finetune_timm.py)."},
    )
    pretrained: bool = field(
        default=True,
        metadata={"help": "timm only: load the pre-trained weights (False: random init, e.g. offline)."},
    )
    head_init: str = field(
        default="default",
        metadata={"help": "timm only: the new classification head's init, 'default' (timm's) or 'zero' (weights and bias "
                          "0: the first loss is ln(num_classes) and the features are left intact; timm's EfficientNet "
                          "init gives logits of std ~6 that AdamW undoes only slowly in a short fine-tuning). Refused "
                          "when the head was loaded from the checkpoint (same number of classes)."},
    )
    in_chans: int | None = field(
        default=None,
        metadata={"help": "timm only: input channels, 1 or 3 (timm's in_chans). Default: the checkpoint's. 1 on RGB "
                          "weights sums the first convolution over the colors: gray data (Fashion-MNIST, digits) then "
                          "stays one channel, and the attack perturbs gray pixels instead of three colors of each."},
    )
    crop_pct: float | None = field(
        default=None,
        metadata={"help": "timm only: the eval transform's center crop, as a share of the resized image (timm's "
                          "crop_pct; 1.0: resize to the input size, crop nothing). Default: the checkpoint's (0.875 "
                          "for most ImageNet weights). Recorded in the saved config.json."},
    )
    interpolation: str | None = field(
        default=None,
        metadata={"help": f"timm only: the resize interpolation, one of {TIMM_INTERPOLATIONS}. Default: the "
                          f"checkpoint's. Recorded in the saved config.json."},
    )
    image_size: int | None = field(
        default=None,
        metadata={"help": "Square input size in pixels. Default: the image processor's size (transformers) or timm's "
                          "resolve_data_config. timm CNNs accept other sizes; a ViT needs its config's image_size."},
    )
    dataset_name: str = field(
        default="cifar10",
        metadata={"help": "Hub dataset id, a local imagefolder or save_to_disk directory, or a built-in offline "
                          "source: 'digits' (sklearn) or 'fashion_mnist' (Debian package dataset-fashion-mnist)."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of a Hub dataset."})
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str | None = field(
        default=None,
        metadata={"help": "Split to evaluate on. Default: the first of validation, valid, val, test present; else "
                          "validation_split_percentage of the train split is held out."},
    )
    validation_split_percentage: float = field(
        default=DEFAULT_VALIDATION_PERCENT, metadata={"help": "Percent of the train split held out for evaluation when there is no eval split."}
    )
    image_column: str | None = field(
        default=None, metadata={"help": "Image column. Default: 'image' or 'img', else the only Image column."}
    )
    label_column: str | None = field(
        default=None,
        metadata={"help": "Label column. Default: 'label', 'labels' or 'fine_label', else the only ClassLabel column."},
    )
    num_labels: int | None = field(
        default=None,
        metadata={"help": "Number of classes, required when the label column is not a ClassLabel (integer ids)."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Train on a random subset of this many examples (debugging, CPU runs)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Evaluate on a random subset of this many examples."}
    )
    train_augmentation: str = field(
        default=DEFAULT_AUGMENTATION,
        metadata={"help": f"Train augmentation, one of {AUGMENTATIONS}: 'auto' is pad_crop for inputs up to 64 px, "
                          f"else random_resized_crop. Evaluation never augments."},
    )
    horizontal_flip: bool = field(default=True, metadata={"help": "Random horizontal flips during training."})
    unreadable_images: str = field(
        default=DEFAULT_UNREADABLE,
        metadata={"help": f"Local imagefolder images PIL cannot read, one of {UNREADABLE_POLICIES}: skip (dropped "
                          f"with a warning counting them), error (stop, listing them), ignore (no check)."},
    )
    fashion_mnist_dir: str = field(
        default=FASHION_MNIST_DIR, metadata={"help": "Directory of the Fashion-MNIST IDX files (dataset 'fashion_mnist')."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Cache directory for Hub models and datasets."})

    def __post_init__(self):
        if self.train_augmentation not in AUGMENTATIONS:
            raise ValueError(f"train_augmentation={self.train_augmentation!r} is unknown: use one of {AUGMENTATIONS}.")
        if self.unreadable_images not in UNREADABLE_POLICIES:
            raise ValueError(
                f"unreadable_images={self.unreadable_images!r} is unknown: use one of {UNREADABLE_POLICIES}."
            )
        if self.head_init not in HEAD_INITS:
            raise ValueError(f"head_init={self.head_init!r} is unknown: use one of {HEAD_INITS}.")
        if self.in_chans is not None and self.in_chans not in (1, 3):
            raise ValueError(f"in_chans={self.in_chans} is not supported: use 1 (gray) or 3 (RGB).")
        if self.crop_pct is not None and not 0 < self.crop_pct <= 1:
            raise ValueError(f"crop_pct={self.crop_pct} must be in (0, 1]: the share of the resized image the center "
                             f"crop keeps (1.0 keeps all of it).")
        if self.interpolation is not None and self.interpolation not in TIMM_INTERPOLATIONS:
            raise ValueError(f"interpolation={self.interpolation!r} is unknown: use one of {TIMM_INTERPOLATIONS}.")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"image_size must be a positive number of pixels, got {self.image_size}.")


# --------------------------------------------------------------------------------------------------------------------
# Command line
def make_recipe_parser(description: str | None = None, training_args_cls=AdvTrainingArguments,
                       script_args_cls=ScriptArguments) -> HfArgumentParser:
    """`HfArgumentParser((script_args_cls, training_args_cls))` with `--config file.yaml`; floats accept `8/255`."""
    parser = HfArgumentParser((script_args_cls, training_args_cls), description=description,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None,
                        help="YAML file of argument values (keys are the flag names); flags on the command line win.")
    for action in parser._actions:
        if action.type is float:
            action.type = parse_fraction
    return parser


def parse_recipe_args(parser: HfArgumentParser, args: list[str] | None = None) -> tuple:
    """Parse the command line, after applying the values of `--config` (a YAML mapping of flag names) as defaults.

    Returns the dataclasses (`script_args, training_args`). Unknown YAML keys raise a `ValueError`.
    """
    args = sys.argv[1:] if args is None else list(args)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(args)
    if known.config is not None:
        with open(known.config) as f:
            config = yaml.safe_load(f) or {}
        if not isinstance(config, dict):
            raise ValueError(f"{known.config} must hold a YAML mapping of argument names to values.")
        dests = {action.dest for action in parser._actions}
        unknown = sorted(set(config) - dests - {"config"})
        if unknown:
            raise ValueError(
                f"{known.config}: unknown keys {unknown}. Keys are the recipe's flag names without '--' (see --help)."
            )
        for action in parser._actions:
            if action.dest in config:
                action.default = config[action.dest]
                action.required = False
    outputs = parser.parse_args_into_dataclasses(args)
    return tuple(outputs[: len(parser.dataclass_types)])


# --------------------------------------------------------------------------------------------------------------------
# Data
def load_recipe_data(script_args: ScriptArguments, training_args) -> ImageClassificationData:
    """Load the dataset named by `script_args`, the main process first (so that it alone fills the cache)."""
    with training_args.main_process_first(desc="loading the dataset"):
        return load_image_dataset(
            script_args.dataset_name,
            config_name=script_args.dataset_config_name,
            train_split=script_args.train_split,
            eval_split=script_args.eval_split,
            validation_split_percentage=script_args.validation_split_percentage,
            image_column=script_args.image_column,
            label_column=script_args.label_column,
            num_labels=script_args.num_labels,
            max_train_samples=script_args.max_train_samples,
            max_eval_samples=script_args.max_eval_samples,
            unreadable_images=script_args.unreadable_images,
            seed=training_args.seed,
            cache_dir=script_args.cache_dir,
            fashion_mnist_dir=script_args.fashion_mnist_dir,
            pixel_key=getattr(training_args, "adv_pixel_key", "pixel_values"),
            label_key=getattr(training_args, "adv_label_key", "labels"),
        )


def set_recipe_transforms(data: ImageClassificationData, script_args: ScriptArguments, training_args, *, model,
                          processor=None) -> ImageClassificationData:
    """Train/eval transforms with the model's own geometry ([`model_image_transform`]: timm's data config, or the
    image processor), normalized with the mean/std AdvTrainer will resolve.

    The eval transform is the one `hf-advft evaluate` and `load_robust_model(...).preprocess` apply to the saved
    model; for a timm model call `describe_timm_task` first, so that the saved `config.json` records the input size
    (`--image_size`) these transforms use.
    """
    # The same resolution AdvTrainer runs (explicit adv_image_mean/std > processor > timm pretrained_cfg), so the
    # trainer undoes exactly the normalization the data carries and epsilon stays in pixel units.
    pixel_space = resolve_pixel_space(getattr(training_args, "adv_image_mean", None),
                                      getattr(training_args, "adv_image_std", None), processor, model)
    common = dict(processor=processor, pixel_space=pixel_space, image_size=script_args.image_size)
    train = model_image_transform(model, train=True, augmentation=script_args.train_augmentation,
                                  horizontal_flip=script_args.horizontal_flip, **common)
    logger.info(f"Train transform: {train}")
    return set_image_transforms(data, train, model_image_transform(model, train=False, **common))


# --------------------------------------------------------------------------------------------------------------------
# Train, evaluate, save, report
def train_evaluate_save(trainer, *, data: ImageClassificationData, model_name: str, how_to_load: str,
                        extra_save=None) -> tuple[dict, str]:
    """Train (resuming when `resume_from_checkpoint` is set), evaluate, save, push when asked; return the summary.

    The save comes after the final evaluation, so the local model card states the numbers the summary prints; every
    save records `data.eval_source` (`adv_results.json` `eval_data`), so `hf-advft evaluate` reuses these eval
    examples. `extra_save(output_dir)` runs after `trainer.save_model()` on the saving process (the timm recipe writes
    timm's `config.json` there). Returns `(eval metrics, summary text)`; the recipe prints the summary on the main
    process.
    """
    args = trainer.args
    trainer.model_card_fields["eval_data"] = data.eval_source
    result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    metrics = trainer.evaluate()
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    trainer.save_model()
    if extra_save is not None and args.should_save:
        extra_save(args.output_dir)
    trainer.save_state()
    if args.push_to_hub:
        trainer.push_to_hub(commit_message="Adversarial fine-tuning with hf-advft")
    return metrics, format_summary(metrics, args=args, data=data, model_name=model_name, how_to_load=how_to_load)


def format_summary(metrics: dict, *, args, data: ImageClassificationData, model_name: str, how_to_load: str) -> str:
    """The text a person reads at the end of a recipe: accuracies, the attack behind them, the checkpoint, loading."""
    n_eval = len(data.eval)
    lines = [
        "",
        "hf-advft: adversarial fine-tuning finished",
        f"  model            {model_name}, {data.num_labels} classes",
        f"  data             {len(data.train):,} train / {n_eval:,} eval examples (eval split: {data.eval_split})",
        f"  run              {args.world_size} process(es) on {args.device.type}, mixed precision "
        f"{getattr(args, 'mixed_precision', 'no')}",
        f"  clean accuracy   {_fmt(metrics.get('eval_accuracy'))}",
    ]
    if "eval_robust_accuracy" in metrics:
        attacked = metrics.get("eval_robust_examples")
        if attacked is None:
            budget = args.adv_eval_max_examples
            attacked = n_eval if budget is None else min(n_eval, budget * args.world_size)
        eps = args.eval_epsilon
        lines.append(
            f"  robust accuracy  {_fmt(metrics['eval_robust_accuracy'])}  (PGD-{args.adv_eval_steps}, {args.adv_norm}, "
            f"eps {eps:.4g} = {eps * 255:.3g}/255, step {args.eval_step_size:.4g}, {args.adv_eval_restarts} "
            f"restart(s), on {int(attacked):,} eval examples)"
        )
    else:
        lines.append("  robust accuracy  not measured (adv_eval_steps=0)")
    lines += [
        f"  checkpoint       {os.path.abspath(args.output_dir)}  (weights, config, adv_config.json with the "
        f"attack settings)",
        "  load it with",
        *("      " + line for line in how_to_load.strip().splitlines()),
        "",
    ]
    return "\n".join(lines)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
