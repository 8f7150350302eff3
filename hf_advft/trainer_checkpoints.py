"""`AdvTrainer`'s checkpoints, resume and saves: complete checkpoints only, the EMA's live weights, the robust card.

A mixin of [`~hf_advft.AdvTrainer`] (split from `hf_advft.trainer` along its seam), not meant to be used alone: every
save writes `adv_config.json`, `adv_results.json` and the model card (`hf_advft.hub_save.save_trainer_files`), and a
resume restores the compute spent so far (`hf_advft.checkpointing`).
"""

from __future__ import annotations

import json
import os

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .checkpointing import ComputeSpentCallback, last_complete_checkpoint
from .hub import copy_card_files, is_adapter_model, require_token, save_trainer_files
from .model_card import ADV_CONFIG_NAME


class AdvCheckpointMixin:
    """`train` (resume from the last *complete* checkpoint), checkpoint saving and loading, `save_model`,
    `create_model_card` and the Hub hooks of [`~hf_advft.AdvTrainer`]."""

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if resume_from_checkpoint is True:
            # transformers picks the highest checkpoint-N even when a killed job left it half-written.
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"No complete checkpoint found in output directory ({self.args.output_dir}).")
        if self._params_sharded() and (self._ema is not None or self._awp is not None):
            raise ValueError("adv_ema_decay and adv_awp_gamma need the whole model on every process; they are not "
                             "supported under FSDP or DeepSpeed ZeRO-3: use DDP (or ZeRO-1/2), or switch them off.")
        self._loaded_step = None
        try:
            output = super().train(resume_from_checkpoint, *args, **kwargs)
        finally:
            self._held_grads = None  # adv_free_grads="before_backward": no gradients kept past training
        best = self.state.best_model_checkpoint
        if self.args.load_best_model_at_end and best is not None:  # the Trainer's own condition for loading it
            suffix = os.path.basename(os.path.normpath(best)).rsplit("-", 1)[-1]
            self._loaded_step = int(suffix) if suffix.isdigit() else self.state.best_global_step
        if self._ema is not None:  # from here on the model is the average: the AutoAttack below and later saves
            self._ema.copy_to_model()
        return self._autoattack_after_training(output)

    def _save_checkpoint(self, model, trial):
        totals = self._total_spent()  # every process saves a checkpoint at the same step, so the reduction is safe
        for cb in self.callback_handler.callbacks:
            if isinstance(cb, ComputeSpentCallback):
                cb.attack_passes, cb.update_passes = totals["attack"], totals["update"]
        if self._ema is not None and self.args.should_save:  # written first: trainer_state.json marks completion
            run_dir = self._get_output_dir(trial=trial)
            self._ema.save_live_weights(os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"))
        super()._save_checkpoint(model, trial)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if self._ema is not None:  # the checkpoint's model weights are the EMA; the live ones are beside them
            self._ema.resume_from(resume_from_checkpoint)

    def _load_best_model(self):
        super()._load_best_model()
        if self._ema is not None:  # the best checkpoint holds EMA weights: they become the average to keep
            self._ema.copy_from_model()

    def _load_callback_state(self):
        super()._load_callback_state()
        saved = ComputeSpentCallback.saved_in(self.state)  # runs on resume, once the checkpoint's state is loaded
        if saved is not None:
            self._spent_base, self.compute_spent = saved, {"attack": 0, "update": 0}

    # Saving
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        with self._ema_weights():  # checkpoints and final saves hold the EMA weights
            super().save_model(output_dir, _internal_call)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        readme = os.path.join(output_dir, "README.md")
        had_readme = os.path.isfile(readme)
        super()._save(output_dir, state_dict)
        if self.args.should_save:
            if not had_readme and os.path.isfile(readme) and is_adapter_model(self.model):
                os.remove(readme)  # peft's save_pretrained wrote its stub card: the robust card replaces it below
            with open(os.path.join(output_dir, ADV_CONFIG_NAME), "w") as f:
                json.dump(self.args.adv_config(), f, indent=2, sort_keys=True)
            save_trainer_files(self, output_dir)  # the robust model card, its adv_results.json, timm's config.json

    def create_model_card(self, **kwargs) -> None:
        """Write the robust model card (`README.md`, see `hf_advft.model_card`) into `args.output_dir`.

        Takes `Trainer.create_model_card`'s arguments (`finetuned_from`, `license`, `dataset`, `dataset_tags`, `tags`,
        `model_name`), also through `push_to_hub(**kwargs)`, plus `evaluation=` (a `RobustnessResult` of the current
        weights, then the card's only numbers) and `curve_image=`. A README you wrote yourself is never overwritten.
        """
        if self.is_world_process_zero():
            save_trainer_files(self, self.args.output_dir, **kwargs)

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        if self.is_world_process_zero():  # a missing token fails here, before any training, with how to log in
            require_token(token if token is not None else self.args.hub_token)
        super().init_hf_repo(token=token, private=private)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        # The Trainer copies only the weights and configs from the checkpoint into output_dir before uploading it.
        if self.is_world_process_zero():
            copy_card_files(checkpoint_folder, self.args.output_dir)
        super()._push_from_checkpoint(checkpoint_folder)
