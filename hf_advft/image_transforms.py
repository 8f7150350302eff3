"""Per-image transforms: pixels in [0, 1] at the model's input geometry, then the model's normalization.

One geometry per model, used alike by training (the train and eval transforms of `hf-advft train` and the recipes),
`hf-advft evaluate`, the web app and [`load_robust_model`]'s `preprocess`:
- a timm model: the resize, crop and interpolation of timm's own eval transform, `timm.data.create_transform(
  **timm.data.resolve_data_config(model=model))` (input size, `crop_pct`, `crop_mode`, `interpolation` of its
  `pretrained_cfg`), without timm's `Normalize`;
- a transformers model with an image processor: the processor itself (its size, resample and crop), asked for pixels
  in [0, 1] (`do_normalize=False`);
- otherwise: resize the shorter side to the input size and center-crop (bilinear).

The pixels are then normalized by the model's [`PixelSpace`], the same one AdvTrainer undoes, so the attack's epsilon
stays in pixel units (`hf_advft.pixel_space`): normalization lives there, never in the geometry.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from PIL import Image

from .pixel_space import PixelSpace


__all__ = [
    "AUGMENTATIONS",
    "DEFAULT_AUGMENTATION",
    "ImageTransform",
    "ProcessorPixels",
    "build_image_transform",
    "model_image_transform",
    "set_image_transforms",
    "timm_geometry",
]

AUGMENTATIONS = ("auto", "random_resized_crop", "pad_crop", "none")
DEFAULT_AUGMENTATION = "auto"  # shared with the recipes' `ScriptArguments`, defined once here
# "auto" augmentation: pad-and-crop (the CIFAR recipe) up to this input size, random-resized-crop (ImageNet) above.
PAD_CROP_MAX_SIZE = 64


class ImageTransform:
    """One image (PIL, array, or `{"bytes", "path"}`) to the model's input tensor.

    Converts the image to the model's channels (grayscale is repeated to RGB for a 3-channel model, color is turned
    to luminance for a 1-channel one), applies `ops` (resize/crop, augmentation, then torchvision v2's `ToImage` and
    `ToDtype(torch.float32, scale=True)`: pixels in [0, 1]), then `pixel_space.to_model` (the model's normalization).

    Args:
        ops (`Callable`): PIL image -> `(channels, height, width)` float pixels in [0, 1].
        mode (`str`): The PIL mode images are converted to first, `"RGB"` or `"L"`.
        pixel_space ([`PixelSpace`]): The model's normalization.
        size (`tuple[int, int]`, *optional*): The `(height, width)` the ops produce.
    """

    def __init__(self, ops, mode: str, pixel_space: PixelSpace, size: tuple[int, int] | None = None):
        self.ops, self.mode, self.pixel_space, self.size = ops, mode, pixel_space, size

    @property
    def channels(self) -> int:
        return 3 if self.mode == "RGB" else 1

    def pixels(self, image) -> torch.Tensor:
        """The image as the model sees it before normalization: `(channels, height, width)` pixels in [0, 1]."""
        return self.ops(to_pil(image).convert(self.mode))

    def __call__(self, image) -> torch.Tensor:
        return self.pixel_space.to_model(self.pixels(image))

    def __repr__(self) -> str:
        return f"ImageTransform(mode={self.mode!r}, ops={self.ops}, normalization={self.pixel_space})"


def to_pil(image) -> Image.Image:
    """A PIL image, a `{"bytes", "path"}` dict (an undecoded `datasets.Image`) or an array (HWC or CHW, uint8 or
    floats in [0, 1]) as a PIL image."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, dict):
        return Image.open(io.BytesIO(image["bytes"]) if image.get("bytes") else image["path"])
    array = np.asarray(image)
    if array.dtype != np.uint8:
        scale = 255 if array.size and array.max() <= 1 else 1
        array = (array.astype(np.float64) * scale).clip(0, 255).round().astype(np.uint8)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)  # channels-first arrays
    return Image.fromarray(array.squeeze(-1) if array.ndim == 3 and array.shape[-1] == 1 else array)


class ProcessorPixels:
    """A transformers image processor's resize/crop as a transform: PIL image -> pixels in [0, 1].

    The processor runs with `do_normalize=False` (normalization is the [`PixelSpace`]'s job) and rescales to [0, 1],
    so its size, resample and crop are exactly those of `processor(image)`, which `load_robust_model(...).preprocess`
    returns for transformers checkpoints. A class, not a closure, so DataLoader workers can pickle it.
    """

    def __init__(self, processor):
        self.processor = getattr(processor, "image_processor", processor)  # AutoProcessor wraps one

    def __call__(self, image: Image.Image) -> torch.Tensor:
        out = self.processor(image, do_normalize=False, do_rescale=True, rescale_factor=1 / 255, return_tensors="pt")
        return out["pixel_values"][0]

    def __repr__(self) -> str:
        p = self.processor
        crop = getattr(p, "crop_size", None) if getattr(p, "do_center_crop", False) else None
        return (f"ProcessorPixels({type(p).__name__}, size={getattr(p, 'size', None)}, "
                f"resample={getattr(p, 'resample', None)}, crop={crop})")


def timm_geometry(data_config: dict) -> list:
    """The resize and crop of timm's eval transform for `data_config` (from `timm.data.resolve_data_config`).

    `timm.data.create_transform(**data_config, is_training=False, normalize=False)` without its final tensor
    conversion: the input size, `crop_pct`, `crop_mode` and `interpolation` are timm's, as its users get them.
    """
    from timm.data import create_transform
    from timm.data.transforms import MaybePILToTensor

    config = {k: data_config[k] for k in ("input_size", "interpolation", "crop_pct", "crop_mode") if k in data_config}
    eval_transform = create_transform(**config, is_training=False, normalize=False)
    return [op for op in eval_transform.transforms if not isinstance(op, MaybePILToTensor)]


def build_image_transform(
    image_size: int | tuple[int, int],
    *,
    channels: int = 3,
    pixel_space: PixelSpace | None = None,
    train: bool = False,
    augmentation: str = DEFAULT_AUGMENTATION,
    horizontal_flip: bool = True,
    geometry: list | None = None,
    interpolation: Any = "bilinear",
) -> ImageTransform:
    """The train or eval transform for a model taking `channels` x `image_size` inputs.

    Eval: `geometry` (the model's resize and crop, see [`model_image_transform`]), by default resize the shorter
    side to the input size and center-crop. Train: `augmentation` `"pad_crop"` (the eval geometry, then pad by 1/8 of
    the side and crop back at random: the CIFAR recipe), `"random_resized_crop"` (torchvision's, the ImageNet recipe,
    with `interpolation`), `"none"` (the eval geometry), or `"auto"` (`pad_crop` up to 64 px inputs, else
    `random_resized_crop`); then a random horizontal flip when `horizontal_flip`. Last, torchvision v2's `ToImage` and
    `ToDtype(torch.float32, scale=True)` give pixels in [0, 1], which `pixel_space` normalizes.

    Args:
        image_size (`int` or `tuple[int, int]`): The input size, `(height, width)`.
        channels (`int`, defaults to 3): 3 (images become RGB) or 1 (luminance).
        pixel_space ([`PixelSpace`], *optional*): The model's normalization; none by default (pixels in [0, 1]).
        train (`bool`, defaults to `False`): Augment (train) or not (eval).
        augmentation (`str`, defaults to `"auto"`), horizontal_flip (`bool`, defaults to `True`): The train
            augmentation.
        geometry (`list`, *optional*): Resize/crop callables (PIL in; PIL or pixels in [0, 1] out).
        interpolation (`str`, `int` or `InterpolationMode`, defaults to `"bilinear"`): Of `random_resized_crop`.

    Example:

    ```python
    >>> from PIL import Image
    >>> from hf_advft.data import build_image_transform
    >>> transform = build_image_transform(32, channels=3, train=True)
    >>> transform(Image.new("L", (28, 28))).shape
    torch.Size([3, 32, 32])
    ```
    """
    from torchvision.transforms import v2

    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"augmentation={augmentation!r} is unknown: use one of {AUGMENTATIONS}.")
    if channels not in (1, 3):
        raise ValueError(f"Only 1- and 3-channel models are supported, got {channels} channels.")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if geometry is None:
        geometry = [v2.Resize(min(size), interpolation=_interpolation(interpolation)), v2.CenterCrop(size)]
    ops = list(geometry)
    if train:
        if augmentation == "auto":
            augmentation = "pad_crop" if max(size) <= PAD_CROP_MAX_SIZE else "random_resized_crop"
        if augmentation == "pad_crop":
            ops.append(v2.RandomCrop(size, padding=max(1, round(min(size) / 8))))
        elif augmentation == "random_resized_crop":
            ops = [v2.RandomResizedCrop(size, interpolation=_interpolation(interpolation))]
        if horizontal_flip:
            ops.append(v2.RandomHorizontalFlip())
    ops += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    return ImageTransform(v2.Compose(ops), "RGB" if channels == 3 else "L", pixel_space or PixelSpace(), size)


def _interpolation(value):
    """A timm interpolation name (`"bicubic"`) as torchvision's mode; torchvision v2 takes modes and PIL resample
    codes (transformers processors' `resample`) itself."""
    if isinstance(value, str):
        from timm.data.transforms import str_to_interp_mode

        return str_to_interp_mode(value)
    from torchvision.transforms import InterpolationMode

    return value if isinstance(value, InterpolationMode) else int(value)


def model_image_transform(
    model,
    *,
    processor=None,
    pixel_space: PixelSpace | None = None,
    train: bool = False,
    image_size: int | tuple[int, int] | None = None,
    augmentation: str = DEFAULT_AUGMENTATION,
    horizontal_flip: bool = True,
) -> ImageTransform:
    """The transform for `model`, with its own geometry (see the module docstring): what training, evaluation and
    `load_robust_model(...).preprocess` share.

    Args:
        model (`torch.nn.Module`): A timm model (its `pretrained_cfg` gives the geometry) or a transformers one.
        processor (*optional*): The transformers model's image processor (its size, resample and crop are used).
        pixel_space ([`PixelSpace`], *optional*): The normalization applied after the geometry.
        train (`bool`, defaults to `False`), augmentation (`str`), horizontal_flip (`bool`): As in
            [`build_image_transform`]; `random_resized_crop` uses the model's interpolation.
        image_size (`int` or `tuple[int, int]`, *optional*): Overrides a timm model's input size (a transformers
            model keeps its processor's).

    Example:

    ```python
    >>> import timm
    >>> from PIL import Image
    >>> from hf_advft.data import model_image_transform
    >>> model = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    >>> model_image_transform(model)(Image.new("RGB", (300, 200))).shape  # timm's: resize to 256, crop 224
    torch.Size([3, 224, 224])
    ```
    """
    from .modeling import transformers_input_spec

    common = dict(pixel_space=pixel_space, train=train, augmentation=augmentation, horizontal_flip=horizontal_flip)
    if isinstance(getattr(model, "pretrained_cfg", None), dict):  # timm
        from timm.data import resolve_data_config

        config = resolve_data_config({}, model=model)
        channels, height, width = config["input_size"]
        if image_size is not None:
            height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
            config["input_size"] = (channels, height, width)
        return build_image_transform((height, width), channels=int(channels), geometry=timm_geometry(config),
                                     interpolation=config.get("interpolation", "bilinear"), **common)
    if getattr(model, "config", None) is None:
        raise ValueError(f"{type(model).__name__} is neither a timm nor a transformers model: its input geometry is "
                         f"unknown. Use build_image_transform(image_size, channels=...).")
    channels, size = transformers_input_spec(model, processor)
    if processor is None:
        return build_image_transform(size, channels=channels, **common)
    pixels = ProcessorPixels(processor)
    return build_image_transform(size, channels=channels, geometry=[pixels],
                                 interpolation=getattr(pixels.processor, "resample", None) or "bilinear", **common)


class _BatchTransform:
    # A class, not a closure, so that DataLoader workers started with "spawn" can pickle it.
    def __init__(self, transform: ImageTransform, pixel_key: str, label_key: str):
        self.transform, self.pixel_key, self.label_key = transform, pixel_key, label_key

    def __call__(self, batch: dict) -> dict:
        return {self.pixel_key: [self.transform(image) for image in batch[self.pixel_key]],
                self.label_key: batch[self.label_key]}


def set_image_transforms(data, train_transform: ImageTransform | None,
                         eval_transform: ImageTransform) -> Any:
    """Apply the transforms lazily (`set_transform`) to an [`ImageClassificationData`]: examples come out as
    `{pixel_key: tensor, label_key: int}`. A `train_transform` of `None` leaves the train split alone."""
    if train_transform is not None:
        data.train.set_transform(_BatchTransform(train_transform, data.pixel_key, data.label_key))
    data.eval.set_transform(_BatchTransform(eval_transform, data.pixel_key, data.label_key))
    return data
