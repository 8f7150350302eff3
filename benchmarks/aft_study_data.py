"""The network and the data of `aft_study.py`: EfficientNet-Lite0 on gray pixels (`GrayLite0`), its ImageNet weights,
saved clean models, and the study's Fashion-MNIST subsets."""

from __future__ import annotations

import os
import sys

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers.modeling_outputs import ImageClassifierOutput

from hf_advft.weights_hash import tensors_sha256


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "recipes"))  # offline_weights


class GrayLite0(nn.Module):
    """A timm network on 1-channel pixels in [0, 1]: the gray channel is repeated and normalized as the weights expect.

    The normalization sits inside the model, so every attack and evaluation sees pixels in [0, 1] and epsilon is in
    pixel units without any `pretrained_cfg` bookkeeping.
    """

    def __init__(self, net: nn.Module, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32)[None, :, None, None])
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32)[None, :, None, None])

    def forward(self, pixel_values, labels=None):
        x = pixel_values.expand(-1, self.mean.shape[1], -1, -1)
        logits = self.net((x - self.mean) / self.std)
        loss = None if labels is None else nn.functional.cross_entropy(logits.float(), labels)
        return ImageClassifierOutput(loss=loss, logits=logits)


def build_model(opts, pretrained: bool, seed: int) -> GrayLite0:
    """EfficientNet-Lite0 with a fresh 10-class head: ImageNet weights (`pretrained`) or random init."""
    from hf_advft.modeling import load_timm_classifier

    torch.manual_seed(seed)
    if opts.quick and not os.path.isdir(opts.weights_dir):
        pretrained = False  # the bookkeeping smoke run does not need the real weights
    if pretrained:
        ensure_weights(opts)
    # --zero_head: timm's EfficientNet init draws the 10-class head from +-1/sqrt(10): initial logits of std ~6, a loss
    # of ~10 that AdamW (steps of ~lr per weight) cannot undo in 100 steps; with it the clean fine-tuning reached only
    # 0.38 clean accuracy and (a) 0.40 / 0.00 PGD-20. A zero head starts at loss ln(10) (the features intact).
    # --in_chans 1: timm sums the first convolution's ImageNet filters over the colors, the same function on gray
    # pixels as repeating them (the per-color mean/std are one, 0.5/0.5), but one stem weight where 3 copies each took
    # the same gradient: AdamW (as SGD) then moved the stem's summed filter 3 times as fast.
    in_chans = getattr(opts, "in_chans", 3)
    net = load_timm_classifier(opts.weights_dir if pretrained else "tf_efficientnet_lite0", num_labels=10,
                               pretrained=pretrained, head_init="zero" if opts.zero_head else "default",
                               in_chans=None if in_chans == 3 else in_chans)
    cfg = net.pretrained_cfg
    mean, std = tuple(cfg.get("mean", (0.5,) * 3)), tuple(cfg.get("std", (0.5,) * 3))
    if in_chans == 1:
        if len(set(mean)) > 1 or len(set(std)) > 1:
            raise SystemExit(f"--in_chans 1 sums the first convolution over the colors, exact only with one mean/std "
                             f"for all colors; these weights have {mean} / {std}. Use --in_chans 3.")
        mean, std = mean[:1], std[:1]
    return GrayLite0(net, mean, std)


def gray_state(state: dict, path: str) -> dict:
    """A saved 3-channel `GrayLite0` state as its 1-channel equivalent: the first convolution summed over the colors,
    one mean/std. The same function on gray pixels, as GrayLite0 repeats the gray channel and normalizes each copy
    alike; refused (`SystemExit`) when the colors' mean/std differ."""
    mean, std = state["mean"].flatten(), state["std"].flatten()
    if not (torch.all(mean == mean[0]) and torch.all(std == std[0])):
        raise SystemExit(f"{path}: per-color mean/std {mean.tolist()} / {std.tolist()}; summing the first convolution "
                         f"over the colors is exact only when they share one (EfficientNet-Lite's 0.5/0.5).")
    stem = next(k for k in state if k.endswith("conv_stem.weight"))
    return {**state, stem: state[stem].sum(1, keepdim=True), "mean": state["mean"][:, :1], "std": state["std"][:, :1]}


def load_clean_state(model: GrayLite0, path: str) -> None:
    """Load a saved clean model into `model`; a 3-channel one into a 1-channel `model` through `gray_state`, so an
    `--in_chans 1` row can start from the clean model of an `--in_chans 3` study."""
    state = torch.load(path, weights_only=True)
    if state["mean"].shape[1] == 3 and model.mean.shape[1] == 1:
        state = gray_state(state, path)
    model.load_state_dict(state)


def saved_sha256(path: str) -> str:
    """The weights hash (`hf_advft.weights_hash`) of a state dict saved with `torch.save`."""
    return tensors_sha256(torch.load(path, weights_only=True).values())


def ensure_weights(opts) -> None:
    """Convert the ImageNet weights into `--weights_dir` once (recipes/offline_weights.py), before any worker starts."""
    if opts.quick and not os.path.isdir(opts.weights_dir):
        return
    if not os.path.isfile(os.path.join(opts.weights_dir, "model.safetensors")):
        import offline_weights

        offline_weights.main(offline_weights.make_parser().parse_args(["--output_dir", opts.weights_dir]))


# --------------------------------------------------------------------------------------------------------------------
# Data
def subset_indices(opts, seed: int, n_train_file: int, n_test_file: int,
                   n_val: int = 0) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The study's training images of `seed` (its first `--n_train` of a permutation drawn with `seed`) and its test
    images (the same for every seed: the first `--n_test` for clean and PGD-20, the first `--autoattack_examples` for
    AutoAttack), as indices into the IDX files; with `n_val`, also the held-out images of robust early stopping: the
    next `n_val` of the same permutation, so never a training image (nor a test image: those come from the test file)."""
    perm = torch.randperm(n_train_file, generator=torch.Generator().manual_seed(seed))
    if n_val and opts.n_train + n_val > n_train_file:
        raise SystemExit(f"--n_train {opts.n_train} + {n_val} held-out images exceed the {n_train_file} training images.")
    tr = perm[:opts.n_train]
    te = torch.randperm(n_test_file, generator=torch.Generator().manual_seed(0))[:max(opts.n_test, opts.autoattack_examples)]
    return (tr, te, perm[opts.n_train:opts.n_train + n_val]) if n_val else (tr, te)


def load_data(opts, seed: int, n_val: int = 0):
    """(train x, train y, test x, test y): 1-channel pixels in [0, 1] at `--image_size`, subsets drawn with `seed`;
    with `n_val`, then (held-out x, held-out y): `n_val` more training-file images, none of them trained on, resized as
    the test images.

    The test images are resized by torch (antialiased bilinear on floats); the training images too unless
    `--train_resize pil`, which resizes them as the recipes' timm transform does (PIL's bilinear on the 8-bit images,
    stored at 8 bits): with `--in_chans 1`, the two differences between the study's row and the same run through the
    recipes (benchmarks/README.md, "Where the gap comes from": the resize changed nothing, one channel did).
    """
    from hf_advft.data import load_fashion_mnist_arrays

    try:
        x_tr, y_tr = load_fashion_mnist_arrays(opts.data_dir, "train")
        x_te, y_te = load_fashion_mnist_arrays(opts.data_dir, "test")
    except FileNotFoundError as err:
        raise SystemExit(f"{err}\n(As root: `apt-get install -y dataset-fashion-mnist`, or `make bench`.)") from err
    tr, te, *val = subset_indices(opts, seed, len(y_tr), len(y_te), n_val)

    def prep(x, idx, resize="torch"):
        x = x[idx.numpy()]
        if opts.image_size != x.shape[-1] and resize == "pil":  # as the recipes' timm transform: PIL on 8-bit images
            size = (opts.image_size, opts.image_size)
            x = np.stack([np.asarray(Image.fromarray(im).resize(size, Image.BILINEAR)) for im in x])
        x = torch.from_numpy(x.copy()).float()[:, None] / 255.0
        if opts.image_size != x.shape[-1]:
            x = nn.functional.interpolate(x, size=opts.image_size, mode="bilinear", antialias=True).clamp(0, 1)
        return x

    def labels(y, idx):
        return torch.from_numpy(y[idx.numpy()].astype("int64"))

    data = prep(x_tr, tr, getattr(opts, "train_resize", "torch")), labels(y_tr, tr), prep(x_te, te), labels(y_te, te)
    return data + (prep(x_tr, val[0]), labels(y_tr, val[0])) if val else data
