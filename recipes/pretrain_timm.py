"""Clean (non-adversarial) training of a timm classifier: the starting point for offline adversarial fine-tuning.

Adversarial fine-tuning starts from a *pre-trained* network. Online, `recipes/finetune_timm.py` downloads one
(`pretrained=True`). Offline, no weights can be downloaded, so this script trains one cleanly from random init
(`--pretrained false`) with the same data pipeline, and saves it as timm's `config.json` + `model.safetensors`, a
directory that `finetune_timm.py --model_name_or_path <dir>` loads. It stands in for the ImageNet pre-training; it
is not part of the method.

    python recipes/pretrain_timm.py --config recipes/configs/fashion_mnist_cpu_pretrain.yaml
"""

from __future__ import annotations

import os
import sys

import torch.nn.functional as F
from transformers import Trainer

from hf_advft.cli import run_guarded
from hf_advft.evaluation import compute_accuracy
from hf_advft.lr_multipliers import CleanTrainingArguments, LrMultipliersMixin
from hf_advft.modeling import describe_timm_task, load_timm_classifier, save_timm_config, timm_input_spec
from hf_advft.script_utils import load_recipe_data, make_recipe_parser, parse_recipe_args, set_recipe_transforms


class CleanTrainer(LrMultipliersMixin, Trainer):
    """A Trainer for timm models, whose `forward(x)` takes the images only and returns logits (and `lr_multipliers`)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logits = model(inputs["pixel_values"])
        loss = F.cross_entropy(logits.float(), inputs["labels"])
        return (loss, {"logits": logits}) if return_outputs else loss


def main(script_args, training_args) -> dict:
    """Train cleanly, save a timm directory, return the eval metrics (clean accuracy)."""
    data = load_recipe_data(script_args, training_args)
    model = load_timm_classifier(script_args.model_name_or_path or "resnet10t", num_labels=data.num_labels,
                                 pretrained=script_args.pretrained, cache_dir=script_args.cache_dir,
                                 head_init=script_args.head_init, in_chans=script_args.in_chans)
    channels, size = timm_input_spec(model, script_args.image_size)
    describe_timm_task(model, label_names=data.label_names, input_size=(channels, *size),
                       crop_pct=script_args.crop_pct, interpolation=script_args.interpolation)
    set_recipe_transforms(data, script_args, training_args, model=model)
    # timm's forward(x) has no `pixel_values`/`labels` arguments: keep the columns and name the labels ourselves.
    training_args.remove_unused_columns = False
    training_args.label_names = ["labels"]
    trainer = CleanTrainer(model=model, args=training_args, train_dataset=data.train, eval_dataset=data.eval,
                           compute_metrics=compute_accuracy)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()
    if training_args.should_save:
        save_timm_config(model, training_args.output_dir)
    metrics = trainer.evaluate()
    trainer.save_metrics("eval", metrics)
    if trainer.is_world_process_zero():
        print(f"\nClean model: eval accuracy {metrics['eval_accuracy']:.4f} on {len(data.eval):,} examples "
              f"({data.eval_split}); saved to {os.path.abspath(training_args.output_dir)}")
    return metrics


def make_parser():
    return make_recipe_parser(__doc__, training_args_cls=CleanTrainingArguments)


if __name__ == "__main__":
    sys.exit(run_guarded("pretrain_timm.py", lambda argv: main(*parse_recipe_args(make_parser(), argv))))
