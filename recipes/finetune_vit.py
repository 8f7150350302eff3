"""Adversarial fine-tuning of a transformers image classifier (a ViT by default) on an image-classification dataset.

`AutoModelForImageClassification` + `AutoImageProcessor` from `--model_name_or_path` (a Hub id or a local
`save_pretrained` directory) get a new head for the dataset's classes; AdvTrainer fine-tunes them on PGD examples,
then reports clean and PGD accuracy on the eval split and saves the model, the image processor and `adv_config.json`
(`--push_to_hub` uploads them). A thin wrapper around `hf-advft train --model_library transformers`
(`hf_advft.train_command`), which works the same after `pip install hf-advft`; `--debug` shows an error's traceback.
Every flag is a `ScriptArguments` or `AdvTrainingArguments` field (`--help`); `--config file.yaml` sets them from a
file, flags given on the command line win.

    # one GPU: ViT-B/16 (ImageNet-21k) on CIFAR-10, paper-like budget
    accelerate launch --config_file recipes/accelerate_configs/single_gpu.yaml \
        recipes/finetune_vit.py --config recipes/configs/vit_b16_cifar10.yaml

    # 8 GPUs, DDP + bf16 (set --num_processes to your GPU count)
    accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml --num_processes 8 \
        recipes/finetune_vit.py --config recipes/configs/vit_b16_cifar10.yaml

    # FSDP (sharded parameters; the attack runs through the FSDP wrapper)
    accelerate launch --config_file recipes/accelerate_configs/fsdp.yaml --num_processes 8 \
        recipes/finetune_vit.py --config recipes/configs/vit_b16_cifar10.yaml

    # local model and local imagefolder (root/<class>/<image>), any flag overridden
    python recipes/finetune_vit.py --model_name_or_path ./my_vit --dataset_name ./my_images \
        --output_dir outputs/my_robust_vit --num_train_epochs 2 --adv_epsilon 4/255
"""

from __future__ import annotations

import sys

from hf_advft.cli import run_guarded
from hf_advft.script_utils import make_recipe_parser, parse_recipe_args
from hf_advft.train_command import train


def main(script_args, training_args) -> dict:
    """Fine-tune, evaluate (clean and PGD accuracy), save; returns the eval metrics."""
    return train(script_args, training_args, model_library="transformers")


def make_parser():
    return make_recipe_parser(__doc__)


if __name__ == "__main__":
    sys.exit(run_guarded("finetune_vit.py", lambda argv: main(*parse_recipe_args(make_parser(), argv))))
