import gzip
import logging
import os
import re

import datasets
import numpy as np
import pytest
import torch
from image_folders import write_digits_imagefolder, write_fashion_mnist, write_idx
from PIL import Image

from hf_advft.data import (
    FASHION_MNIST_DIR,
    FASHION_MNIST_LABELS,
    build_image_transform,
    load_fashion_mnist,
    load_fashion_mnist_arrays,
    load_image_dataset,
    read_idx,
    set_image_transforms,
)
from hf_advft.pixel_space import PixelSpace


HALF = PixelSpace((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), source="test")


def _load(path, tmp_path, **kw):
    return load_image_dataset(str(path), cache_dir=str(tmp_path / "cache"), **kw)


def test_digits_split_is_stratified_and_transforms_are_lazy():
    data = load_image_dataset("digits", validation_split_percentage=20, seed=0)
    assert data.num_labels == 10 and data.id2label[3] == "3" and data.label2id["7"] == 7
    assert data.eval_split == "20% of train"
    assert len(data.train) + len(data.eval) == 1797 and len(data.eval) == 360
    assert data.train.column_names == ["pixel_values", "labels"]
    # Stratified: every class is in the held-out split in about its share.
    counts = np.bincount(data.eval["labels"], minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38

    raw = np.asarray(data.eval[0]["pixel_values"], dtype=np.float32) / 255
    set_image_transforms(data,
                         build_image_transform(16, channels=3, pixel_space=HALF, train=True, horizontal_flip=False),
                         build_image_transform(16, channels=3, pixel_space=HALF, train=False))
    example = data.eval[0]
    x = example["pixel_values"]
    assert isinstance(x, torch.Tensor) and x.shape == (3, 16, 16) and isinstance(example["labels"], int)
    # The eval transform normalizes with the PixelSpace: undoing it gives pixels in [0, 1], the 3 channels equal
    # (grayscale repeated to RGB), and downsampling back to 8x8 gives the original image, up to interpolation blur.
    pixels = HALF.to_pixels(x[None], check=True)[0]
    assert torch.equal(pixels[0], pixels[1]) and torch.equal(pixels[0], pixels[2])
    down = torch.nn.functional.avg_pool2d(pixels[:1][None], 2)[0, 0].numpy()
    assert np.corrcoef(down.ravel(), raw.ravel())[0, 1] > 0.95 and np.abs(down - raw).mean() < 0.1
    assert torch.equal(data.eval[0]["pixel_values"], x)  # eval is deterministic
    # Train: pad-crop (16 px input -> "auto" = pad_crop) shifts the image from call to call.
    torch.manual_seed(0)
    crops = [data.train[0]["pixel_values"] for _ in range(6)]
    assert any(not torch.equal(crops[0], c) for c in crops[1:])


def test_imagefolder_unreadable_images_skip_error_ignore(tmp_path, caplog):
    root = tmp_path / "imgs"
    n = write_digits_imagefolder(str(root), n=30, broken=["3/broken.png", "5/empty.jpg"])
    with caplog.at_level(logging.WARNING):
        data = _load(root, tmp_path, validation_split_percentage=20, unreadable_images="skip")
    assert len(data.train) + len(data.eval) == n
    skipped = [int(k) for k in re.findall(r"Skipped (\d+) unreadable image", caplog.text)]
    assert sum(skipped) == 2  # one warning per split that had any, counting them
    assert data.label_names == [str(i) for i in range(10)]  # class names from the folder names

    with pytest.raises(ValueError, match=r"unreadable image\(s\) in the '.*' split: .*(broken\.png|empty\.jpg)"):
        _load(root, tmp_path, eval_split=None, validation_split_percentage=50, unreadable_images="error", seed=1)

    data = _load(root, tmp_path, validation_split_percentage=20, unreadable_images="ignore")
    assert len(data.train) + len(data.eval) == n + 2  # not checked: the broken files stay in

    with pytest.raises(ValueError, match="unreadable_images"):
        _load(root, tmp_path, unreadable_images="drop")


def test_imagefolder_without_labels_is_an_error(tmp_path):
    write_digits_imagefolder(str(tmp_path / "flat"), n=6, flat=True)
    with pytest.raises(ValueError, match=r"no label column: its columns are \['image'\].*one sub-folder per class"):
        _load(tmp_path / "flat", tmp_path)


def _save_to_disk(tmp_path, labels, label_feature, image_name="img", label_name="fine_label"):
    images = [np.full((8, 8), 10 * i, dtype=np.uint8) for i in range(len(labels))]
    features = datasets.Features({image_name: datasets.Image(), label_name: label_feature, "extra": datasets.Value("int64")})
    ds = datasets.Dataset.from_dict({image_name: images, label_name: labels, "extra": list(range(len(labels)))},
                                    features=features)
    path = tmp_path / "saved"
    datasets.DatasetDict({"train": ds, "test": ds.select(range(4))}).save_to_disk(str(path))
    return path


def test_saved_dataset_columns_detected_and_unknown_column(tmp_path):
    path = _save_to_disk(tmp_path, [0, 1, 2] * 4, datasets.ClassLabel(names=["a", "b", "c"]))
    data = _load(path, tmp_path)
    assert data.eval_split == "test" and len(data.train) == 12 and len(data.eval) == 4  # existing split used
    assert data.label_names == ["a", "b", "c"] and data.train.column_names == ["pixel_values", "labels"]
    assert data.train[1]["labels"] == 1 and isinstance(data.train[1]["pixel_values"], Image.Image)

    with pytest.raises(ValueError, match=r"Unknown image column 'picture'.*\['img', 'fine_label', 'extra'\]"):
        _load(path, tmp_path, image_column="picture")
    with pytest.raises(ValueError, match=r"Unknown label column 'target'.*\['img', 'fine_label', 'extra'\]"):
        _load(path, tmp_path, label_column="target")
    with pytest.raises(ValueError, match=r"no split 'dev'; its splits are \['train', 'test'\]"):
        _load(path, tmp_path, eval_split="dev")


def test_labels_that_are_not_a_classlabel_need_num_labels(tmp_path):
    path = _save_to_disk(tmp_path, [0, 1, 2] * 4, datasets.Value("int64"), image_name="image", label_name="label")
    with pytest.raises(ValueError, match=r"not a ClassLabel.*--num_labels"):
        _load(path, tmp_path)
    data = _load(path, tmp_path, num_labels=3)
    assert data.label_names == ["0", "1", "2"] and data.num_labels == 3
    with pytest.raises(ValueError, match=r"outside \[0, 1\] for --num_labels=2"):
        _load(path, tmp_path, num_labels=2)


def test_no_eval_split_and_no_percentage_is_an_error():
    with pytest.raises(ValueError, match="validation_split_percentage"):
        load_image_dataset("digits", validation_split_percentage=0)


def test_max_samples_subsample():
    data = load_image_dataset("digits", max_train_samples=50, max_eval_samples=20)
    assert len(data.train) == 50 and len(data.eval) == 20


def test_grayscale_and_color_conversion():
    rgb = Image.fromarray(np.stack([np.full((10, 10), v, np.uint8) for v in (255, 0, 0)], -1))  # pure red
    gray = Image.fromarray(np.full((10, 10), 128, np.uint8))
    to3 = build_image_transform(8, channels=3)
    to1 = build_image_transform(8, channels=1)
    assert to3(gray).shape == (3, 8, 8) and torch.allclose(to3(gray), torch.full((3, 8, 8), 128 / 255))
    assert to1(rgb).shape == (1, 8, 8)
    assert torch.allclose(to1(rgb), torch.full((1, 8, 8), 76 / 255), atol=1 / 255)  # ITU-R 601 luma of red
    # Arrays (channels-last, or floats in [0, 1]) are accepted like PIL images.
    assert torch.allclose(to3(np.full((10, 10, 3), 0.5)), torch.full((3, 8, 8), 128 / 255))
    with pytest.raises(ValueError, match="augmentation"):
        build_image_transform(8, augmentation="mixup")


def test_random_resized_crop_for_large_inputs_and_flip():
    image = Image.fromarray(np.tile(np.arange(96, dtype=np.uint8)[None, :], (96, 1)))  # a left-to-right ramp
    auto = build_image_transform(96, channels=1, train=True, horizontal_flip=False)
    assert "RandomResizedCrop" in repr(auto)
    flip_only = build_image_transform(96, channels=1, train=True, augmentation="none", horizontal_flip=True)
    torch.manual_seed(0)
    outs = [flip_only(image)[0, 0] for _ in range(8)]
    increasing = [bool(o[-1] > o[0]) for o in outs]
    assert any(increasing) and not all(increasing)  # some flipped, some not


@pytest.mark.parametrize("gzipped", [True, False])
def test_fashion_mnist_reader_on_idx_files(tmp_path, gzipped):
    write_fashion_mnist(tmp_path, n_train=12, n_test=5, gzipped=gzipped)
    raw = load_fashion_mnist(str(tmp_path))
    assert len(raw["train"]) == 12 and len(raw["test"]) == 5
    assert raw["train"].features["label"].names == list(FASHION_MNIST_LABELS)
    assert raw["train"][3]["label"] == 3 and raw["train"][3]["image"].size == (28, 28)
    data = load_image_dataset("fashion_mnist", fashion_mnist_dir=str(tmp_path))
    assert data.eval_split == "test" and data.label_names[9] == "Ankle boot"


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_read_idx_gives_the_array_written_and_refuses_broken_files(tmp_path, name):
    array = np.random.default_rng(1).integers(0, 256, (4, 3, 5))
    write_idx(tmp_path / name, array)
    read = read_idx(tmp_path / name)
    assert read.dtype == np.uint8 and read.shape == (4, 3, 5) and np.array_equal(read, array)
    raw = (tmp_path / name).read_bytes()
    (tmp_path / "short").write_bytes(gzip.decompress(raw)[:-7] if name.endswith(".gz") else raw[:-7])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short")
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "png")


def test_fashion_mnist_absent_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"apt-get install -y dataset-fashion-mnist"):
        load_image_dataset("fashion_mnist", fashion_mnist_dir=str(tmp_path))


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR),
                    reason="Debian package dataset-fashion-mnist not installed (apt-get install -y dataset-fashion-mnist)")
def test_fashion_mnist_debian_package_files():
    images, labels = load_fashion_mnist_arrays(FASHION_MNIST_DIR, "test")
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert np.bincount(labels).tolist() == [1000] * 10
