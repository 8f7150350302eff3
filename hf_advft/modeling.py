"""Load the image classifiers the recipes fine-tune (transformers and timm) and save timm checkpoints loadably.

Loading errors keep the library's own message and add a hint: most failures here are an offline machine, a Hub id
that is not in the cache, or a local path that does not exist.
"""

from __future__ import annotations

import os

from transformers.utils import logging

from .pixel_space import resolve_pixel_space


logger = logging.get_logger(__name__)

__all__ = [
    "describe_timm_task",
    "load_timm_classifier",
    "load_transformers_classifier",
    "loading_hint",
    "save_timm_config",
    "timm_input_spec",
    "transformers_input_spec",
]


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or (os.sep in name and os.path.exists(os.path.dirname(name) or "."))


def loading_hint(name_or_path: str, *, library: str = "transformers") -> str:
    """Why loading `name_or_path` may have failed, and what to do, for the error message."""
    from huggingface_hub import constants

    if os.path.isdir(os.path.expanduser(name_or_path)):
        if library == "timm":
            return (f"{name_or_path!r} is a directory: it needs the config.json and model.safetensors that "
                    f"timm.models.save_for_hf, push_to_hf_hub or recipes/finetune_timm.py write.")
        return (f"{name_or_path!r} is a directory: it needs config.json, the weights and preprocessor_config.json, "
                f"as written by model.save_pretrained(dir) and image_processor.save_pretrained(dir).")
    hint = ""
    if _looks_like_path(name_or_path):
        hint = f"{name_or_path!r} looks like a local path, but there is no such directory. "
    offline = " (HF_HUB_OFFLINE=1 is set: only the cache is read)" if constants.HF_HUB_OFFLINE else ""
    hint += (f"A Hub id loads from the network or from the local cache {constants.HF_HUB_CACHE}{offline}. To work "
             f"offline, download the model beforehand on a machine with network (`hf download <id>`), or save it "
             f"to a directory and pass that directory")
    if library == "timm":
        hint += (" (timm.models.save_for_hf(model, dir)), or pass --pretrained false to start from random weights "
                 "(then train it cleanly first: a randomly initialised network has nothing to fine-tune).")
    else:
        hint += " (model.save_pretrained(dir) and image_processor.save_pretrained(dir))."
    return hint


def _with_hint(err: Exception, hint: str) -> Exception:
    message = f"{err}\n\nhf-advft: {hint}"
    try:
        return type(err)(message)
    except Exception:  # exception types whose constructor wants more than a message
        return (OSError if isinstance(err, OSError) else RuntimeError)(message)


# --------------------------------------------------------------------------------------------------------------------
# transformers
def load_transformers_classifier(name_or_path: str, *, label_names: list[str], cache_dir: str | None = None):
    """`AutoModelForImageClassification` with a new `len(label_names)`-way head, and its `AutoImageProcessor`.

    The head is replaced (`ignore_mismatched_sizes=True`) when its size differs; `id2label`/`label2id` are written
    into the model config. Returns `(model, image_processor)`.
    """
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    id2label = dict(enumerate(label_names))
    try:
        processor = AutoImageProcessor.from_pretrained(name_or_path, cache_dir=cache_dir)
        model = AutoModelForImageClassification.from_pretrained(
            name_or_path, num_labels=len(label_names), id2label=id2label,
            label2id={name: i for i, name in id2label.items()}, ignore_mismatched_sizes=True, cache_dir=cache_dir,
        )
    except (OSError, ValueError) as err:
        raise _with_hint(err, loading_hint(name_or_path)) from err
    return model, processor


def transformers_input_spec(model, processor=None) -> tuple[int, tuple[int, int]]:
    """`(channels, (height, width))` a transformers model takes: the processor's (crop) size, else `config.image_size`."""
    channels = int(getattr(model.config, "num_channels", 3))
    size = None
    if processor is not None:
        processor = getattr(processor, "image_processor", processor)
        candidates = [getattr(processor, "size", None)]
        if getattr(processor, "do_center_crop", False):  # the crop is the final size
            candidates.insert(0, getattr(processor, "crop_size", None))
        for candidate in candidates:
            if candidate is None:
                continue
            if isinstance(candidate, int):
                size = (candidate, candidate)
            elif candidate.get("height") and candidate.get("width"):
                size = (int(candidate.get("height")), int(candidate.get("width")))
            elif candidate.get("shortest_edge"):
                size = (int(candidate.get("shortest_edge")),) * 2
            if size is not None:
                break
    if size is None:
        image_size = getattr(model.config, "image_size", None)
        if image_size is None:
            raise ValueError("Cannot tell the model's input size: pass --image_size.")
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    return channels, size


# --------------------------------------------------------------------------------------------------------------------
# timm
HEAD_INITS = ("default", "zero")


def load_timm_classifier(name_or_path: str, *, num_labels: int, pretrained: bool = True,
                         cache_dir: str | None = None, head_init: str = "default", in_chans: int | None = None):
    """`timm.create_model(name, pretrained=pretrained, num_classes=num_labels, in_chans=in_chans)`.

    `name_or_path` is a timm model name (`"resnet50.a1_in1k"`), a Hub id with the `hf-hub:` prefix, or a local
    directory holding `config.json` + `model.safetensors` (loaded as `local-dir:`); timm drops the checkpoint's
    classifier when its number of classes differs.

    `in_chans` (timm's own argument) sets the number of input channels; by default the checkpoint's (a folder saved
    by hf-advft records it). With `in_chans=1` on RGB weights timm sums the first convolution's filters over the
    colors, so a gray image gives the features its RGB copy gave (exactly when the three channels share one mean/std,
    as EfficientNet-Lite's 0.5/0.5 do): the attack then perturbs the gray pixels the data has, not three colors of
    each. The model's `pretrained_cfg` is made to match (its `input_size` channels, and mean/std averaged over the
    colors), so the data pipeline, the attack's pixel space and the saved `config.json` all take that many channels.

    `head_init="zero"` sets the new head's weight and bias to 0, so the first loss is ln(num_labels) and the first
    updates leave the pre-trained features alone (timm's EfficientNet init draws a 10-class head from +-1/sqrt(10):
    logits of std ~6 and a first loss of ~10, which AdamW undoes only slowly in a short fine-tuning). It is refused
    when the checkpoint already has `num_labels` classes, whose head timm loads: zeroing it would discard it.
    """
    import timm
    from torch import nn

    if head_init not in HEAD_INITS:
        raise ValueError(f"head_init={head_init!r} is unknown: use one of {HEAD_INITS}.")
    name = name_or_path
    if not name.startswith(("hf-hub:", "local-dir:")) and os.path.isdir(os.path.expanduser(name)):
        name = "local-dir:" + os.path.abspath(os.path.expanduser(name))
    if in_chans is not None and in_chans < 1:
        raise ValueError(f"in_chans must be a positive number of input channels, got {in_chans}.")
    kwargs = {} if in_chans is None else {"in_chans": in_chans}
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=num_labels, cache_dir=cache_dir, **kwargs)
    except (OSError, ValueError, RuntimeError) as err:
        raise _with_hint(err, loading_hint(name_or_path.removeprefix("local-dir:"), library="timm")) from err
    _match_timm_channels(model)
    if head_init == "zero":
        if pretrained and model.pretrained_cfg.get("num_classes") == num_labels:
            raise ValueError(
                f"head_init='zero' would discard the {num_labels}-class head loaded from {name_or_path!r} (it already "
                f"has the dataset's number of classes): use head_init='default' to fine-tune it as it is."
            )
        head = model.get_classifier()
        if not isinstance(head, nn.Linear):
            raise ValueError(f"head_init='zero' needs a linear classifier; {name_or_path!r} has {type(head).__name__}.")
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    return model


def _match_timm_channels(model) -> None:
    """Make `model.pretrained_cfg` (input size, mean, std) describe the model's input channels, not its source's.

    timm builds a 1-channel model from RGB weights but keeps the source checkpoint's `pretrained_cfg` (3 channels), and
    `resolve_data_config` reads that. One channel from three gets the colors' mean of the mean and of the std; three
    (or more) from one repeat it.
    """
    from timm.models._hub import get_model_input_config

    cfg = model.pretrained_cfg
    channels = int(get_model_input_config(model)["input_size"][0])
    if "input_size" in cfg and cfg["input_size"][0] != channels:
        cfg["input_size"] = (channels, *cfg["input_size"][1:])
    for key in ("mean", "std"):
        values = cfg.get(key)
        if values is None or len(values) == channels:
            continue
        if len(values) == 1:
            cfg[key] = tuple(values) * channels
        elif channels == 1:
            cfg[key] = (sum(values) / len(values),)
        else:
            raise ValueError(f"The model takes {channels} input channels but its pretrained_cfg {key} has "
                             f"{len(values)}: pass in_chans={len(values)}, or set the model's pretrained_cfg "
                             f"{key!r} to {channels} values.")


def timm_input_spec(model, image_size: int | None = None) -> tuple[int, tuple[int, int]]:
    """`(channels, (height, width))` from timm's `resolve_data_config`, with the size overridden by `image_size`."""
    from timm.data import resolve_data_config

    channels, height, width = resolve_data_config({}, model=model)["input_size"]
    if image_size is not None:
        height = width = image_size
    return int(channels), (int(height), int(width))


def describe_timm_task(model, *, label_names: list[str], input_size: tuple[int, int, int],
                       crop_pct: float | None = None, interpolation: str | None = None) -> None:
    """Record the fine-tuning task in `model.pretrained_cfg`: classes, label names, input size, and, when given, the
    eval geometry (`crop_pct`: the center crop's share of the resized image, 1.0 resizes to the input size and crops
    nothing; `interpolation`: timm's resize mode, `"bilinear"`, `"bicubic"`, ...).

    timm's `save_config_for_hf` (through [`save_timm_config`], called on every AdvTrainer save and by the recipes)
    builds `config.json` from `pretrained_cfg`, so the saved directory then describes the fine-tuned model rather than
    its source checkpoint, and `timm.data.resolve_data_config` gives the size and geometry the model was trained at
    (which `hf-advft evaluate` and `load_robust_model(...).preprocess` apply).
    """
    cfg = model.pretrained_cfg
    cfg.update(num_classes=len(label_names), label_names=list(label_names), input_size=tuple(input_size))
    if crop_pct is not None:
        cfg["crop_pct"] = float(crop_pct)
    if interpolation is not None:
        cfg["interpolation"] = interpolation
    for key in ("test_input_size", "test_crop_pct", "label_descriptions", "label_offset", "pool_size"):
        cfg.pop(key, None)  # they describe the source checkpoint (ImageNet evaluation, its labels, its input size)


def save_timm_config(model, directory: str | os.PathLike, pixel_space=None) -> None:
    """Write timm's `config.json` (architecture, `pretrained_cfg` with classes, input size, mean/std) into `directory`.

    The one timm-config writer of hf-advft: `AdvTrainer`'s saves, `save_robust_model`, `hf-advft train` and the
    recipes all call it. With the `model.safetensors` beside it, the directory loads with
    `timm.create_model("local-dir:<directory>", pretrained=True)`. Only the config is written, not the weights (safe
    under FSDP, where the Trainer gathers the sharded weights itself).

    Args:
        model: A timm model (its `pretrained_cfg` is the starting point, see [`describe_timm_task`]).
        directory (`str` or `os.PathLike`): The folder to write `config.json` into.
        pixel_space ([`~hf_advft.pixel_space.PixelSpace`], *optional*): The normalization the model's inputs carried
            in training, recorded as `pretrained_cfg` `mean`/`std`. Default: the model's own (`resolve_pixel_space`
            of the model, i.e. its `pretrained_cfg` mean/std when it has them). *No normalization* (a `PixelSpace`
            without mean/std: the model takes pixels in [0, 1]) is written as mean 0 and std 1 for each input
            channel, so that timm's `resolve_data_config` and `load_robust_model` apply no normalization either.
            (Before hf-advft had one writer, `save_robust_model` wrote three channels whatever the model took and
            the recipes' writer kept the source checkpoint's mean/std; the per-channel 0/1 of the trainer's saves won.)
    """
    # timm exports this writer only through its private `_hub` module (`save_for_hf` would rewrite the weights too).
    from timm.models._hub import get_model_input_config, save_config_for_hf

    if pixel_space is None:
        pixel_space = resolve_pixel_space(model=model)
    if pixel_space.mean is not None:
        mean, std = list(pixel_space.mean), list(pixel_space.std)
    else:
        channels = int(get_model_input_config(model)["input_size"][0])  # the model's, not its source checkpoint's
        mean, std = [0.0] * channels, [1.0] * channels
    save_config_for_hf(model, os.path.join(os.fspath(directory), "config.json"),
                       model_config={"pretrained_cfg": {"mean": mean, "std": std}})
