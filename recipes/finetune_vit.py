"""Adversarial fine-tuning of a transformers image classifier (a ViT by default) on an image-classification dataset.

`AutoModelForImageClassification` + `AutoImageProcessor` from `--model_name_or_path` (a Hub id or a local
`save_pretrained` directory) get a new head for the dataset's classes; AdvTrainer fine-tunes them on PGD examples,
then reports clean and PGD accuracy on the eval split and saves the model, the image processor and `adv_config.json`
(`--push_to_hub` uploads them). Every flag is a `ScriptArguments` or `AdvTrainingArguments` field (`--help`);
`--config file.yaml` sets them from a file, flags given on the command line win.

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

import os

from hf_advft import AdvTrainer
from hf_advft.modeling import load_transformers_classifier, transformers_input_spec
from hf_advft.script_utils import (
    load_recipe_data,
    make_recipe_parser,
    parse_recipe_args,
    set_recipe_transforms,
    train_evaluate_save,
)


DEFAULT_MODEL = "google/vit-base-patch16-224-in21k"

HOW_TO_LOAD = """\
from transformers import AutoImageProcessor, AutoModelForImageClassification
model = AutoModelForImageClassification.from_pretrained("{path}")
processor = AutoImageProcessor.from_pretrained("{path}")"""


def main(script_args, training_args) -> dict:
    """Fine-tune, evaluate (clean and PGD accuracy), save; returns the eval metrics."""
    data = load_recipe_data(script_args, training_args)
    model_name = script_args.model_name_or_path or DEFAULT_MODEL
    model, processor = load_transformers_classifier(model_name, label_names=data.label_names,
                                                    cache_dir=script_args.cache_dir)
    channels, size = transformers_input_spec(model, processor)
    if script_args.image_size is not None and (script_args.image_size,) * 2 != tuple(size):
        raise ValueError(
            f"--image_size {script_args.image_size} differs from the {size[0]}x{size[1]} inputs {model_name!r} takes "
            f"(its image processor / config.image_size); drop --image_size for transformers models."
        )
    set_recipe_transforms(data, script_args, training_args, channels=channels, image_size=size, processor=processor)
    trainer = AdvTrainer(model=model, args=training_args, train_dataset=data.train, eval_dataset=data.eval,
                         processing_class=processor)
    metrics, summary = train_evaluate_save(
        trainer, data=data, model_name=model_name,
        how_to_load=HOW_TO_LOAD.format(path=os.path.abspath(training_args.output_dir)),
    )
    if trainer.is_world_process_zero():
        print(summary)
    return metrics


def make_parser():
    return make_recipe_parser(__doc__)


if __name__ == "__main__":
    main(*parse_recipe_args(make_parser()))
