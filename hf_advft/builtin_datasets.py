"""The built-in offline datasets: sklearn's digits, and Fashion-MNIST from its IDX files.

`read_idx` is the project's one IDX reader: the library's `fashion_mnist` source and the benchmarks
(`benchmarks/compute_to_robustness.py`, `benchmarks/aft_study.py`) all read Fashion-MNIST through
[`load_fashion_mnist_arrays`]. `hf_advft.data` re-exports these names.
"""

from __future__ import annotations

import gzip
import os

import datasets
import numpy as np


__all__ = [
    "BUILTIN_DATASETS",
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_LABELS",
    "find_idx",
    "load_digits_dataset",
    "load_fashion_mnist",
    "load_fashion_mnist_arrays",
    "read_idx",
]

BUILTIN_DATASETS = ("digits", "fashion_mnist")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                        "Ankle boot")
INSTALL_HINT = "sudo apt-get install -y dataset-fashion-mnist"


def load_digits_dataset() -> datasets.DatasetDict:
    """sklearn's 1,797 8x8 grayscale digits as a `DatasetDict` with a single `train` split (`image`, `label`)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255 / 16)).round().astype(np.uint8)
    return datasets.DatasetDict({"train": _image_dataset(images, digits.target, [str(i) for i in range(10)])})


def load_fashion_mnist(data_dir: str = FASHION_MNIST_DIR) -> datasets.DatasetDict:
    """Fashion-MNIST (`train`: 60,000, `test`: 10,000 28x28 grayscale images) from its IDX files in `data_dir`.

    The files are those of the Debian package `dataset-fashion-mnist` (`sudo apt-get install -y
    dataset-fashion-mnist` puts them in `/usr/share/datasets/fashion-mnist`), gzipped or not.
    """
    return datasets.DatasetDict({split: _image_dataset(*load_fashion_mnist_arrays(data_dir, split),
                                                       list(FASHION_MNIST_LABELS)) for split in ("train", "test")})


def load_fashion_mnist_arrays(data_dir: str = FASHION_MNIST_DIR,
                              split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """One Fashion-MNIST split (`"train"` or `"test"`) as `(images uint8 [N, 28, 28], labels uint8 [N])` arrays.

    Raises a `FileNotFoundError` that says how to install the files when `data_dir` lacks one, and a `ValueError` when
    the image and label files disagree.
    """
    if split not in ("train", "test"):
        raise ValueError(f"Fashion-MNIST has the splits 'train' and 'test', not {split!r}.")
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(find_idx(data_dir, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find_idx(data_dir, f"{prefix}-labels-idx1-ubyte"))
    if len(images) != len(labels):
        raise ValueError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels in {data_dir!r}.")
    return images, labels


def _image_dataset(images: np.ndarray, labels: np.ndarray, names: list[str]) -> datasets.Dataset:
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    return datasets.Dataset.from_dict({"image": list(images), "label": labels.astype(np.int64)}, features=features)


def find_idx(data_dir: str, name: str) -> str:
    """The path of the IDX file `name` in `data_dir`, gzipped (`name.gz`) or not; a `FileNotFoundError` saying how
    to get the Fashion-MNIST files otherwise."""
    for candidate in (name, name + ".gz"):
        path = os.path.join(data_dir, candidate)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"Fashion-MNIST: no {name}[.gz] in {data_dir!r}. Install the Debian package with `{INSTALL_HINT}` (it puts "
        f"the IDX files in {FASHION_MNIST_DIR}), point the data directory option (--fashion_mnist_dir, or a "
        f"benchmark's --data_dir) at a directory holding the four IDX files, or, with network access, use the Hub "
        f"copy: --dataset_name zalando-datasets/fashion_mnist."
    )


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file of unsigned bytes (the MNIST format: magic `00 00 08 ndim`, big-endian sizes, the data), gzipped
    when its name ends in `.gz`, as a `uint8` array of the shape its header gives.

    Example:

    ```python
    >>> import numpy as np
    >>> from hf_advft.data import read_idx
    >>> labels = np.array([3, 1, 4], np.uint8)
    >>> _ = open("labels-idx1-ubyte", "wb").write(bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + labels.tobytes())
    >>> read_idx("labels-idx1-ubyte").tolist()
    [3, 1, 4]
    ```
    """
    path = os.fspath(path)
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (magic 00 00 08 <ndim>).")
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    expected = 4 + 4 * ndim + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected:
        raise ValueError(f"{path}: its header says shape {shape} ({expected} bytes) but the file has {len(raw)} bytes "
                         f"(truncated or not an IDX file).")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
