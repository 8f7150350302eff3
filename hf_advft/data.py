"""Image-classification data for adversarial fine-tuning: load, find the columns, split, transform lazily.

`load_image_dataset` reads, by `name_or_path`:
- a built-in offline source: `"digits"` (sklearn's 8x8 grayscale digits) or `"fashion_mnist"` (the IDX files of the
  Debian package `dataset-fashion-mnist`; the Hub copy is `"zalando-datasets/fashion_mnist"`);
- a directory written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`;
- a local `imagefolder` directory (`root/<class name>/<image file>`, optionally `root/<split>/<class name>/...`);
- anything else as a Hub dataset id (`"cifar10"`), through `datasets.load_dataset`.

It returns train and eval splits with two columns, the images under `pixel_key` and class ids under `label_key`.
The built-in sources and the IDX reader live in `hf_advft.builtin_datasets`, the per-image transforms in
`hf_advft.image_transforms`; both are re-exported here. `model_image_transform` makes the transform for a model: pixels
in [0, 1] with the model's own resize, crop and interpolation (timm's data config, or the transformers image
processor), augmented for training only, then the model's normalization taken from the same `PixelSpace` AdvTrainer
uses to undo it, so the attack's epsilon stays in pixel units. `set_image_transforms` applies the transforms lazily
with `set_transform`.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import datasets
import numpy as np
from PIL import Image
from transformers.utils import logging

from .builtin_datasets import (
    BUILTIN_DATASETS,
    FASHION_MNIST_DIR,
    FASHION_MNIST_LABELS,
    find_idx,
    load_digits_dataset,
    load_fashion_mnist,
    load_fashion_mnist_arrays,
    read_idx,
)
from .image_transforms import (
    AUGMENTATIONS,
    DEFAULT_AUGMENTATION,
    ImageTransform,
    build_image_transform,
    model_image_transform,
    set_image_transforms,
    to_pil,
)


logger = logging.get_logger(__name__)

__all__ = [
    "AUGMENTATIONS",
    "BUILTIN_DATASETS",
    "DEFAULT_AUGMENTATION",
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_LABELS",
    "ImageClassificationData",
    "ImageTransform",
    "build_image_transform",
    "find_column",
    "find_idx",
    "load_digits_dataset",
    "load_eval_source",
    "load_fashion_mnist",
    "load_fashion_mnist_arrays",
    "load_image_dataset",
    "model_image_transform",
    "read_idx",
    "set_image_transforms",
    "to_pil",
]

IMAGE_COLUMNS = ("image", "img")
LABEL_COLUMNS = ("label", "labels", "fine_label")
EVAL_SPLITS = ("validation", "valid", "val", "test")
UNREADABLE_POLICIES = ("skip", "error", "ignore")
# Defaults shared with the recipes' `ScriptArguments`, defined once here.
DEFAULT_VALIDATION_PERCENT = 10.0
DEFAULT_UNREADABLE = "skip"


@dataclass
class ImageClassificationData:
    """Train and eval splits of an image-classification dataset, with its class names.

    Args:
        train (`datasets.Dataset`): Training split, columns `pixel_key` (images) and `label_key` (class ids).
        eval (`datasets.Dataset`): Evaluation split, same columns.
        label_names (`list[str]`): Class names, indexed by class id.
        eval_split (`str`): Where `eval` came from, e.g. `"test"` or `"10% of train"` (for summaries).
        pixel_key (`str`), label_key (`str`): The two column names.
        eval_source (`dict`, *optional*): How to load exactly these eval examples again: the
            [`load_image_dataset`] arguments that choose them (dataset, split or hold-out percentage, seed, ...).
            Saved in `adv_results.json` (`eval_data`); `hf-advft evaluate` reloads them with [`load_eval_source`].

    Example:

    ```python
    >>> from hf_advft.data import load_image_dataset
    >>> data = load_image_dataset("digits", validation_split_percentage=20)
    >>> data.num_labels, data.eval_split, data.train.column_names
    (10, '20% of train', ['pixel_values', 'labels'])
    ```
    """

    train: datasets.Dataset
    eval: datasets.Dataset
    label_names: list[str]
    eval_split: str
    pixel_key: str = "pixel_values"
    label_key: str = "labels"
    eval_source: dict | None = None

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.label_names)}


# --------------------------------------------------------------------------------------------------------------------
# Sources
def _load_raw(name_or_path: str, config_name: str | None, cache_dir: str | None,
              fashion_mnist_dir: str) -> tuple[datasets.DatasetDict, str]:
    """Return the dataset's splits and its kind: "builtin", "saved", "imagefolder" or "hub"."""
    if name_or_path == "digits":
        return load_digits_dataset(), "builtin"
    if name_or_path == "fashion_mnist":
        return load_fashion_mnist(fashion_mnist_dir), "builtin"
    if os.path.isdir(name_or_path):
        if any(os.path.isfile(os.path.join(name_or_path, f)) for f in ("dataset_dict.json", "state.json")):
            loaded = datasets.load_from_disk(name_or_path)
            if isinstance(loaded, datasets.Dataset):
                loaded = datasets.DatasetDict({"train": loaded})
            return loaded, "saved"
        return datasets.load_dataset("imagefolder", data_dir=name_or_path, cache_dir=cache_dir), "imagefolder"
    from .modeling import _looks_like_path

    if os.path.isfile(name_or_path):
        raise ValueError(f"Dataset {name_or_path!r} is a file: pass the folder holding it (an imagefolder with one "
                         f"sub-folder per class, or a save_to_disk directory).")
    if _looks_like_path(name_or_path):  # not a Hub id: say so, rather than "couldn't reach it on the Hub"
        raise FileNotFoundError(f"Dataset {name_or_path!r}: no such directory. Pass an existing imagefolder or "
                                f"save_to_disk directory, a Hub dataset id, or a built-in ('digits', 'fashion_mnist').")
    return datasets.load_dataset(name_or_path, config_name, cache_dir=cache_dir), "hub"


# --------------------------------------------------------------------------------------------------------------------
# Columns, labels, unreadable images
def find_column(dataset: datasets.Dataset, requested: str | None, candidates: tuple[str, ...], feature_type: type,
                what: str, option: str) -> str | None:
    """The column named `requested`, else the first of `candidates`, else the only column of `feature_type`.

    Raises a `ValueError` listing the dataset's columns when `requested` is not one of them; returns `None` when
    nothing matches.
    """
    columns = dataset.column_names
    if requested is not None:
        if requested not in columns:
            raise ValueError(f"Unknown {what} column {requested!r} ({option}): the dataset's columns are {columns}.")
        return requested
    for name in candidates:
        if name in columns:
            return name
    typed = [name for name, feature in dataset.features.items() if isinstance(feature, feature_type)]
    return typed[0] if len(typed) == 1 else None


def _label_names(splits: list[datasets.Dataset], column: str, num_labels: int | None) -> list[str]:
    feature = splits[0].features[column]
    if isinstance(feature, datasets.ClassLabel):
        if num_labels is not None and num_labels != feature.num_classes:
            raise ValueError(
                f"--num_labels={num_labels} but the label column {column!r} is a ClassLabel with "
                f"{feature.num_classes} classes; drop --num_labels."
            )
        return list(feature.names)
    if num_labels is None:
        raise ValueError(
            f"The label column {column!r} is {feature!r}, not a ClassLabel, so the number of classes is unknown. Pass "
            f"--num_labels N (labels must then be integer ids 0..N-1), or cast the column to a ClassLabel "
            f"(`dataset.class_encode_column({column!r})`) before saving the dataset."
        )
    if not (isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint"))):
        raise ValueError(
            f"--num_labels needs integer class ids, but the label column {column!r} is {feature!r}; encode it with "
            f"`dataset.class_encode_column({column!r})`."
        )
    if num_labels < 2:
        raise ValueError(f"--num_labels must be >= 2, got {num_labels}.")
    values = np.concatenate([np.asarray(split.unique(column)) for split in splits])
    if values.size and (values.min() < 0 or values.max() >= num_labels):
        raise ValueError(
            f"Labels in column {column!r} range over [{values.min()}, {values.max()}], outside [0, {num_labels - 1}] "
            f"for --num_labels={num_labels}."
        )
    return [str(i) for i in range(num_labels)]


def _readable(value) -> bool:
    try:
        source = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
        with Image.open(source) as image:
            image.verify()  # reads the file's structure (PNG chunks and CRCs) without decoding the pixels
        return True
    except Exception:  # PIL raises many types (UnidentifiedImageError, SyntaxError, OSError, struct.error...)
        return False


def _drop_unreadable(dataset: datasets.Dataset, column: str, policy: str, split: str) -> datasets.Dataset:
    raw = dataset.cast_column(column, datasets.Image(decode=False)).select_columns([column])
    bad, paths, index = [], [], 0
    for batch in raw.iter(batch_size=1000):
        for value in batch[column]:
            if not _readable(value):
                bad.append(index)
                paths.append(value.get("path") or f"row {index}")
            index += 1
    if not bad:
        return dataset
    shown = ", ".join(paths[:5]) + (", ..." if len(paths) > 5 else "")
    if policy == "error":
        raise ValueError(
            f"{len(bad)} unreadable image(s) in the {split!r} split: {shown}. Remove or fix them, or pass "
            f"--unreadable_images skip to drop them with a warning."
        )
    logger.warning(f"Skipped {len(bad)} unreadable image(s) of {len(dataset)} in the {split!r} split: {shown}")
    keep = np.setdiff1d(np.arange(len(dataset)), np.asarray(bad))
    return dataset.select(keep)


# --------------------------------------------------------------------------------------------------------------------
# The loader
def load_image_dataset(
    name_or_path: str,
    *,
    config_name: str | None = None,
    train_split: str = "train",
    eval_split: str | None = None,
    validation_split_percentage: float = DEFAULT_VALIDATION_PERCENT,
    image_column: str | None = None,
    label_column: str | None = None,
    num_labels: int | None = None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    unreadable_images: str = DEFAULT_UNREADABLE,
    seed: int = 0,
    cache_dir: str | None = None,
    fashion_mnist_dir: str = FASHION_MNIST_DIR,
    pixel_key: str = "pixel_values",
    label_key: str = "labels",
) -> ImageClassificationData:
    """Load an image-classification dataset as train/eval splits with columns `pixel_key` and `label_key`.

    The recipes' `ScriptArguments` document each argument. The eval split is `eval_split`, else the first of
    `validation`, `valid`, `val`, `test` present, else `validation_split_percentage` percent of `train_split`, held
    out with `seed` (stratified by class when the labels are a `ClassLabel`). Images of a local imagefolder are
    checked first; `unreadable_images` says what happens to those PIL cannot read: `"skip"` (dropped with a warning
    counting them), `"error"` (a `ValueError` listing them) or `"ignore"` (not checked; reading one fails later).
    """
    if unreadable_images not in UNREADABLE_POLICIES:
        raise ValueError(f"unreadable_images={unreadable_images!r} is unknown: use one of {UNREADABLE_POLICIES}.")
    if not 0 <= validation_split_percentage < 100:
        raise ValueError(f"validation_split_percentage must be in [0, 100), got {validation_split_percentage}.")
    raw, kind = _load_raw(name_or_path, config_name, cache_dir, fashion_mnist_dir)
    if train_split not in raw:
        raise ValueError(f"The dataset {name_or_path!r} has no split {train_split!r}; its splits are {list(raw)}.")
    if eval_split is not None and eval_split not in raw:
        raise ValueError(f"The dataset {name_or_path!r} has no split {eval_split!r}; its splits are {list(raw)}.")
    train = raw[train_split]
    image_col = find_column(train, image_column, IMAGE_COLUMNS, datasets.Image, "image", "--image_column")
    if image_col is None:
        raise ValueError(
            f"No image column found in {name_or_path!r}: its columns are {train.column_names}. Name it with "
            f"--image_column."
        )
    label_col = find_column(train, label_column, LABEL_COLUMNS, datasets.ClassLabel, "label", "--label_column")
    if label_col is None:
        raise ValueError(
            f"The dataset {name_or_path!r} has no label column: its columns are {train.column_names}. For an "
            f"imagefolder, put the images in one sub-folder per class (root/cat/1.png, root/dog/2.png); otherwise "
            f"name the label column with --label_column."
        )

    if eval_split is None:
        eval_split = next((s for s in EVAL_SPLITS if s in raw and s != train_split), None)
    if eval_split is not None:
        eval_ds, eval_name = raw[eval_split], eval_split
        for name in (image_col, label_col):
            if name not in eval_ds.column_names:
                raise ValueError(f"The {eval_split!r} split has no column {name!r}: its columns are "
                                 f"{eval_ds.column_names}.")
    elif validation_split_percentage > 0:
        parts = _hold_out(train, validation_split_percentage / 100, seed, label_col)
        train, eval_ds = parts["train"], parts["test"]
        eval_name = f"{validation_split_percentage:g}% of {train_split}"
    else:
        raise ValueError(
            f"The dataset {name_or_path!r} has no eval split (splits: {list(raw)}) and validation_split_percentage "
            f"is 0: pass --eval_split or a validation_split_percentage > 0 to hold out part of {train_split!r}."
        )

    label_names = _label_names([train, eval_ds], label_col, num_labels)
    train = _take(train, max_train_samples, seed)
    eval_ds = _take(eval_ds, max_eval_samples, seed)
    if kind == "imagefolder" and unreadable_images != "ignore":  # after _take: a capped run checks only its rows
        train = _drop_unreadable(train, image_col, unreadable_images, train_split)
        eval_ds = _drop_unreadable(eval_ds, image_col, unreadable_images, eval_name)
    rename = {image_col: pixel_key, label_col: label_key}
    train, eval_ds = (ds.select_columns([image_col, label_col]).rename_columns(
        {k: v for k, v in rename.items() if k != v}) for ds in (train, eval_ds))
    source = {"dataset": os.path.abspath(name_or_path) if os.path.isdir(name_or_path) else name_or_path,
              "config_name": config_name, "train_split": train_split, "eval_split": eval_split,
              "validation_split_percentage": None if eval_split is not None else validation_split_percentage,
              "max_eval_samples": max_eval_samples, "seed": seed, "image_column": image_col,
              "label_column": label_col, "unreadable_images": unreadable_images}
    return ImageClassificationData(train, eval_ds, label_names, eval_name, pixel_key, label_key, source)


def load_eval_source(source: dict, **kwargs) -> ImageClassificationData:
    """Load the eval examples an [`ImageClassificationData.eval_source`] describes (`adv_results.json`'s `eval_data`),
    the same examples in the same order. `kwargs` are further [`load_image_dataset`] arguments (`cache_dir`, ...)."""
    source = dict(source)
    percent = source.pop("validation_split_percentage", None)
    return load_image_dataset(source.pop("dataset"), **source, **kwargs,
                              validation_split_percentage=DEFAULT_VALIDATION_PERCENT if percent is None else percent)


def _hold_out(train: datasets.Dataset, fraction: float, seed: int, label_col: str) -> datasets.DatasetDict:
    if isinstance(train.features[label_col], datasets.ClassLabel):
        try:
            return train.train_test_split(test_size=fraction, seed=seed, stratify_by_column=label_col)
        except ValueError as err:  # too few examples per class to stratify (tiny datasets)
            logger.info(f"Holding out a random (not stratified) validation split: {err}")
    return train.train_test_split(test_size=fraction, seed=seed)


def _take(dataset: datasets.Dataset, n: int | None, seed: int) -> datasets.Dataset:
    if n is None or n >= len(dataset):
        return dataset
    if n < 1:
        raise ValueError(f"max_train_samples / max_eval_samples must be >= 1, got {n}.")
    return dataset.shuffle(seed=seed).select(range(n))
