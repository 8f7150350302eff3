"""Adversarial fine-tuning of a timm image classifier (a ResNet-50 by default) on an image-classification dataset.

`timm.create_model(--model_name_or_path, pretrained=True, num_classes=<the dataset's>)` takes a timm name
(`resnet50.a1_in1k`), a Hub id with the `hf-hub:` prefix (`hf-hub:timm/convnext_tiny.fb_in1k`) or a local directory
holding timm's `config.json` + `model.safetensors`. The inputs are normalized with the model's `pretrained_cfg`
mean/std (AdvTrainer undoes it, so epsilon is in pixel units). AdvTrainer fine-tunes on PGD examples, then the recipe
reports clean and PGD accuracy and saves `model.safetensors`, timm's `config.json` (classes, label names, input size,
mean/std; in every checkpoint too) and `adv_config.json`; the output directory loads with `timm.create_model("local-dir:<dir>", pretrained=True)`.

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

import os

from hf_advft import AdvTrainer
from hf_advft.modeling import describe_timm_task, load_timm_classifier, save_timm_config, timm_input_spec
from hf_advft.script_utils import (
    load_recipe_data,
    make_recipe_parser,
    parse_recipe_args,
    set_recipe_transforms,
    train_evaluate_save,
)


DEFAULT_MODEL = "resnet50.a1_in1k"

HOW_TO_LOAD = """\
import timm
model = timm.create_model("local-dir:{path}", pretrained=True)
# inputs: {channels}x{height}x{width}, pixels in [0, 1] normalized with model.pretrained_cfg["mean"] / ["std"]"""


def main(script_args, training_args) -> dict:
    """Fine-tune, evaluate (clean and PGD accuracy), save; returns the eval metrics."""
    data = load_recipe_data(script_args, training_args)
    model_name = script_args.model_name_or_path or DEFAULT_MODEL
    model = load_timm_classifier(model_name, num_labels=data.num_labels, pretrained=script_args.pretrained,
                                 cache_dir=script_args.cache_dir)
    channels, size = timm_input_spec(model, script_args.image_size)
    describe_timm_task(model, label_names=data.label_names, input_size=(channels, *size))  # for the saved config.json
    set_recipe_transforms(data, script_args, training_args, channels=channels, image_size=size, model=model)
    trainer = AdvTrainer(model=model, args=training_args, train_dataset=data.train, eval_dataset=data.eval)

    def save_config(output_dir):
        # AdvTrainer's saves write timm's config.json (hf_advft.hub); make sure the final directory has one.
        if not os.path.isfile(os.path.join(output_dir, "config.json")):
            save_timm_config(model, output_dir, trainer.pixel_space)

    how_to_load = HOW_TO_LOAD.format(path=os.path.abspath(training_args.output_dir), channels=channels,
                                     height=size[0], width=size[1])
    metrics, summary = train_evaluate_save(trainer, data=data, model_name=model_name, how_to_load=how_to_load,
                                           extra_save=save_config)
    if trainer.is_world_process_zero():
        print(summary)
    return metrics


def make_parser():
    return make_recipe_parser(__doc__)


if __name__ == "__main__":
    main(*parse_recipe_args(make_parser()))
