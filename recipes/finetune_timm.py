"""Adversarial fine-tuning of a timm image classifier (a ResNet-50 by default) on an image-classification dataset.

`timm.create_model(--model_name_or_path, pretrained=True, num_classes=<the dataset's>)` takes a timm name
(`resnet50.a1_in1k`), a Hub id with the `hf-hub:` prefix (`hf-hub:timm/convnext_tiny.fb_in1k`) or a local directory
holding timm's `config.json` + `model.safetensors`. The inputs are normalized with the model's `pretrained_cfg`
mean/std (AdvTrainer undoes it, so epsilon is in pixel units). AdvTrainer fine-tunes on PGD examples, then the recipe
reports clean and PGD accuracy and saves `model.safetensors`, timm's `config.json` (classes, label names, input size,
mean/std; in every checkpoint too) and `adv_config.json`; the output directory loads with `timm.create_model("local-dir:<dir>", pretrained=True)`.
A thin wrapper around `hf-advft train --model_library timm` (`hf_advft.train_command`), which works the same after
`pip install hf-advft`; `--debug` shows the traceback of an error.

    # one GPU: ResNet-50 on CIFAR-10
    accelerate launch --config_file recipes/accelerate_configs/single_gpu.yaml \
        recipes/finetune_timm.py --config recipes/configs/resnet50_cifar10.yaml

    # 8 GPUs, DDP + bf16 (set --num_processes to your GPU count)
    accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml --num_processes 8 \
        recipes/finetune_timm.py --config recipes/configs/resnet50_cifar10.yaml

    # FSDP
    accelerate launch --config_file recipes/accelerate_configs/fsdp.yaml --num_processes 8 \
        recipes/finetune_timm.py --config recipes/configs/resnet50_cifar10.yaml

    # CPU, offline, Fashion-MNIST (2 cores): first a clean model (stands in for downloaded ImageNet weights)
    python recipes/pretrain_timm.py --config recipes/configs/fashion_mnist_cpu_pretrain.yaml
    python recipes/finetune_timm.py --config recipes/configs/fashion_mnist_cpu.yaml
"""

from __future__ import annotations

import sys

from hf_advft.cli import run_guarded
from hf_advft.script_utils import make_recipe_parser, parse_recipe_args
from hf_advft.train_command import train


def main(script_args, training_args) -> dict:
    """Fine-tune, evaluate (clean and PGD accuracy), save; returns the eval metrics."""
    return train(script_args, training_args, model_library="timm")


def make_parser():
    return make_recipe_parser(__doc__)


if __name__ == "__main__":
    sys.exit(run_guarded("finetune_timm.py", lambda argv: main(*parse_recipe_args(make_parser(), argv))))
