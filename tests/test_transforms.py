"""One geometry per model: training, `hf-advft evaluate`, the app and `load_robust_model(...).preprocess` agree."""

import argparse

import datasets
import numpy as np
import pytest
import torch
from conftest import tiny_vit
from PIL import Image

from hf_advft.app import load_app_model, to_pixels
from hf_advft.data import ImageClassificationData, build_image_transform, model_image_transform
from hf_advft.evaluate_command import _eval_split
from hf_advft.hub import save_robust_model
from hf_advft.loading import load_robust_model
from hf_advft.modeling import describe_timm_task
from hf_advft.script_utils import ScriptArguments, set_recipe_transforms
from hf_advft.training_args import AdvTrainingArguments


pytestmark = pytest.mark.usefixtures("one_thread")


def _photo(width=90, height=60):
    """A non-square RGB image with detail at every scale, so resize, crop and interpolation all show."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    smooth = np.stack([x * 255 / width, y * 255 / height, (x + y) * 255 / (width + height)], -1)
    return Image.fromarray((0.6 * smooth + 0.4 * rng.integers(0, 256, (height, width, 3))).astype(np.uint8))


def _one_image_data(image) -> ImageClassificationData:
    features = datasets.Features({"pixel_values": datasets.Image(), "labels": datasets.ClassLabel(names=["a", "b"])})
    split = datasets.Dataset.from_dict({"pixel_values": [image], "labels": [1]}, features=features)
    return ImageClassificationData(split, split, ["a", "b"], "test")


def _train_time_eval_input(tmp_path, model, image, processor=None) -> torch.Tensor:
    """What `hf-advft train` evaluates on: the eval split as `set_recipe_transforms` prepares it."""
    script_args = ScriptArguments(dataset_name="digits")
    training_args = AdvTrainingArguments(output_dir=str(tmp_path / "run"), report_to="none")
    data = set_recipe_transforms(_one_image_data(image), script_args, training_args, model=model, processor=processor)
    return data.eval[0]["pixel_values"]


def _evaluate_input(tmp_path, robust, image) -> torch.Tensor:
    """What `hf-advft evaluate` attacks: its eval split, read from a saved dataset folder."""
    folder = tmp_path / "dataset"
    datasets.DatasetDict({"test": _one_image_data(image).eval}).save_to_disk(str(folder))
    args = argparse.Namespace(dataset=str(folder), split="test", image_column=None, label_column=None)
    processor = robust.preprocess if robust.library == "transformers" else None
    return _eval_split(args, robust.model, processor, robust.pixel_space, None).eval[0]["pixel_values"]


def _old_eval_input(image, size, pixel_space) -> torch.Tensor:
    """What every path did before: resize the shorter side (bilinear) and center-crop, whatever the model."""
    return build_image_transform(size, pixel_space=pixel_space)(image)


def test_timm_train_evaluate_and_preprocess_apply_timm_data_config(tmp_path):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=2, pretrained_cfg_overlay=dict(
        input_size=(3, 40, 40), crop_pct=0.75, interpolation="bicubic", mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)))
    describe_timm_task(model, label_names=["a", "b"], input_size=(3, 40, 40))  # as `hf-advft train` does
    image = _photo()
    trained = _train_time_eval_input(tmp_path, model, image)

    folder = save_robust_model(model, tmp_path / "robust", adv_config={"adv_epsilon": 8 / 255})
    robust = load_robust_model(folder)
    assert robust.library == "timm" and robust.model.pretrained_cfg["crop_pct"] == 0.75
    preprocessed = robust.preprocess(image)
    evaluated = _evaluate_input(tmp_path, robust, image)

    assert trained.shape == (3, 40, 40)
    assert torch.equal(trained, evaluated) and torch.equal(trained, preprocessed)
    # The app attacks the same pixels (before normalization).
    app_model = load_app_model(str(folder))
    assert torch.allclose(to_pixels(image, app_model)[0], robust.pixel_space.to_pixels(trained[None])[0], atol=1e-6)
    # timm's own eval transform, as the model card tells timm users to build it, gives the same inputs.
    card_way = timm.data.create_transform(**timm.data.resolve_data_config(model=robust.model))(image)
    torch.testing.assert_close(card_way, trained, atol=1e-5, rtol=0)
    # Before, evaluation resized to 40 (bilinear) and cropped nothing: crop_pct and bicubic were ignored.
    old = _old_eval_input(image, 40, robust.pixel_space)
    assert (old - trained).abs().mean() > 0.1


def test_transformers_train_evaluate_and_preprocess_apply_the_image_processor(tmp_path):
    from transformers import ViTImageProcessor

    model = tiny_vit(num_labels=2, image_size=20)
    processor = ViTImageProcessor(size={"height": 20, "width": 20}, resample=Image.Resampling.BICUBIC,
                                  image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3])
    image = _photo()
    trained = _train_time_eval_input(tmp_path, model, image, processor)

    folder = save_robust_model(model, tmp_path / "robust", processor=processor, adv_config={"adv_epsilon": 8 / 255})
    robust = load_robust_model(folder)
    assert robust.library == "transformers" and robust.preprocess is not None
    preprocessed = robust.preprocess(image, return_tensors="pt")["pixel_values"][0]
    evaluated = _evaluate_input(tmp_path, robust, image)

    assert trained.shape == (3, 20, 20)
    assert torch.equal(trained, evaluated)
    # The processor normalizes in one fused step, hf-advft in PixelSpace: equal up to float rounding.
    torch.testing.assert_close(preprocessed, trained, atol=1e-6, rtol=0)
    app_model = load_app_model(str(folder))
    assert torch.allclose(to_pixels(image, app_model)[0], robust.pixel_space.to_pixels(trained[None])[0], atol=1e-6)
    # Before, training cropped the center of the 90x60 image; the processor squashes the whole image to 20x20.
    old = _old_eval_input(image, 20, robust.pixel_space)
    assert (old - trained).abs().mean() > 0.1


def test_model_transform_augments_with_the_model_interpolation_and_refuses_plain_modules():
    import timm

    model = timm.create_model("resnet10t", pretrained=False, num_classes=2,
                              pretrained_cfg_overlay=dict(input_size=(3, 96, 96), interpolation="bicubic"))
    from torchvision.transforms import InterpolationMode, v2

    train = model_image_transform(model, train=True, augmentation="random_resized_crop")
    crops = [op for op in train.ops.transforms if isinstance(op, v2.RandomResizedCrop)]
    assert len(crops) == 1 and crops[0].interpolation == InterpolationMode.BICUBIC
    torch.manual_seed(0)
    x = train(_photo())
    assert x.shape == (3, 96, 96) and x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    # --image_size overrides the size of timm's data config, not its crop_pct or interpolation.
    assert model_image_transform(model, image_size=32)(_photo()).shape == (3, 32, 32)
    with pytest.raises(ValueError, match="build_image_transform"):
        model_image_transform(torch.nn.Linear(2, 2))
