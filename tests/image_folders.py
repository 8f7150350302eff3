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
