"""Small image datasets on disk for the data and recipe tests: sklearn digits written as PNG files."""

import os

import numpy as np
from PIL import Image


def write_digits_imagefolder(root, n=40, classes=None, broken=(), flat=False):
    """Write the first `n` digits (of `classes`, default all) as 8x8 grayscale PNGs in `root/<digit>/<i>.png`.

    `broken` names extra files (relative to root) that hold garbage instead of an image; `flat=True` writes all
    images directly in `root` (no class folders, hence no labels). Returns the number of real images written.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    written = 0
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        if written == n:
            break
        if classes is not None and label not in classes:
            continue
        folder = root if flat else os.path.join(root, str(label))
        os.makedirs(folder, exist_ok=True)
        Image.fromarray((image * 255 / 16).round().astype(np.uint8)).save(os.path.join(folder, f"{i}.png"))
        written += 1
    for name in broken:
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"this is not an image")
    return written


def write_idx(path, array, gzipped=None):
    """Write `array` (values 0..255) as an IDX file of unsigned bytes; gzipped when `path` ends in `.gz`."""
    import gzip

    array = np.asarray(array)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    gzipped = str(path).endswith(".gz") if gzipped is None else gzipped
    with (gzip.open if gzipped else open)(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_fashion_mnist(root, n_train=12, n_test=5, seed=0, gzipped=True):
    """Fake Fashion-MNIST IDX files laid out like the Debian package's: random 28x28 images, labels `i % 10`."""
    rng = np.random.default_rng(seed)
    ext = ".gz" if gzipped else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte{ext}"), rng.integers(0, 256, (n, 28, 28)))
        write_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte{ext}"), np.arange(n) % 10)
