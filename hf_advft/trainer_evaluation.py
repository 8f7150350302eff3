"""`AdvTrainer`'s evaluation: clean and PGD accuracy in `evaluate()`, the weight EMA swapped in, AutoAttack at the end.

A mixin of [`~hf_advft.AdvTrainer`] (split from `hf_advft.trainer` along its seam), not meant to be used alone: it
relies on the trainer's attack machinery (`_attacking`, `_batch`, `_attack_model`, `_params_sharded`) and extras.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

import torch

from .attacks import robust_under_pgd
from .evaluation_utils import evaluation_precision
from .trainer_autoattack import autoattack_metrics


class AdvEvaluationMixin:
    """`evaluate` / `predict` / `evaluation_loop` of [`~hf_advft.AdvTrainer`]: `eval_robust_accuracy` beside the
    Trainer's metrics, counted by the rule of `evaluate_robustness` (`hf_advft.attacks.robust_under_pgd`)."""

    def _autoattack_after_training(self, output):
        if self.args.adv_autoattack_examples > 0:  # the trustworthy number, once, on the final model
            metrics = autoattack_metrics(self)
            if metrics:
                self.log(metrics)
                output.metrics.update(metrics)
        return output

    def _ema_weights(self):
        """The weight EMA swapped into the model for a block (evaluation, saving), when `adv_ema_decay` is set."""
        return self._ema.applied() if self._ema is not None else nullcontext()

    def evaluate(self, *args, **kwargs):
        with self._ema_weights():
            return super().evaluate(*args, **kwargs)

    def predict(self, *args, **kwargs):
        with self._ema_weights():
            return super().predict(*args, **kwargs)

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                         metric_key_prefix)
        output.metrics[f"{metric_key_prefix}_examples"] = output.num_samples
        if self.args.adv_eval_steps > 0:
            start = time.time()
            robust, n_robust = self._robust_accuracy(dataloader)
            if robust is not None:
                output.metrics[f"{metric_key_prefix}_robust_accuracy"] = robust
                output.metrics[f"{metric_key_prefix}_robust_examples"] = n_robust  # the model card reports them
                output.metrics[f"{metric_key_prefix}_robust_precision"] = evaluation_precision(
                    self._attack_model(self.model_wrapped if self.model_wrapped is not None else self.model))
                output.metrics[f"{metric_key_prefix}_robust_runtime"] = round(time.time() - start, 4)
        return output

    def _robust_accuracy(self, dataloader) -> tuple[float | None, int]:
        args = self.args
        model = self.model_wrapped if self.model_wrapped is not None else self.model
        budget = args.adv_eval_max_examples
        correct, truncated, generator = [], False, None
        for inputs in dataloader:
            inputs = self._prepare_inputs(inputs)
            if args.adv_label_key not in inputs:  # predict() on unlabeled data: nothing to measure
                truncated = True
                break
            pixels, labels = self._batch(inputs)
            if budget is not None:
                if budget <= 0:
                    truncated = True
                    break
                if labels.shape[0] > budget:
                    pixels, labels, truncated = pixels[:budget], labels[:budget], True
                budget -= labels.shape[0]
            if generator is None:  # the same random starts on every evaluation, as evaluate_robustness seeds them
                generator = torch.Generator(device=pixels.device).manual_seed(args.seed)
            # The counting rule of `evaluate_robustness` (hf_advft.attacks.robust_under_pgd), in full precision.
            with self._attacking(model, "eval", full_precision=True) as logits_fn:
                robust, _ = robust_under_pgd(
                    logits_fn, pixels, labels, epsilon=args.eval_epsilon, step_size=args.eval_step_size,
                    steps=args.adv_eval_steps, norm=args.adv_norm, restarts=args.adv_eval_restarts,
                    generator=generator, fixed_shapes=self._params_sharded())
            hit = robust.float()
            # gather_for_metrics drops the samples a distributed sampler duplicated to even out the last batch.
            correct.append(self.accelerator.gather(hit) if truncated else self.accelerator.gather_for_metrics(hit))
        if truncated and hasattr(dataloader, "end"):
            dataloader.end()  # accelerate unregisters a dataloader only when it is run to its end
        if not correct:
            return None, 0
        hits = torch.cat(correct)
        return float(hits.mean()), hits.numel()
