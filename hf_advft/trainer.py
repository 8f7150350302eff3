"""`AdvTrainer`: adversarial fine-tuning inside `transformers.Trainer`.

`training_step` crafts PGD examples against the unwrapped model (no DDP gradient sync during the attack), under the
same autocast as the update, then hands the adversarial batch to the Trainer's own `training_step`: the loss, the
`accelerator.backward`, gradient accumulation, clipping, mixed precision and logging all stay the Trainer's.

Two mixins hold the other seams of the class: evaluation (`hf_advft.trainer_evaluation`: robust accuracy in
`evaluate()`, the EMA swapped in, the end-of-training AutoAttack) and checkpoints, resume and saves
(`hf_advft.trainer_checkpoints`). This module keeps the attack and the training step.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from transformers import IntervalStrategy, Trainer
from transformers.utils import logging

from .attacks import SINGLE_STEP_ATTACKS, fgsm, n_fgsm, pgd
from .checkpointing import ComputeSpentCallback
from .evaluation import compute_accuracy
from .evaluation_utils import is_adapter_model, model_logits, original_forward, takes_pixel_key
from .lr_multipliers import LrMultipliersMixin
from .objectives import compute_objective, kl_per_example, needs_clean_logits
from .pixel_space import resolve_pixel_space
from .schedules import SLOW_START_FAST_DECAY, epsilon_factor, get_slow_start_fast_decay_schedule
from .trainer_checkpoints import AdvCheckpointMixin
from .trainer_evaluation import AdvEvaluationMixin
from .training_args import AdvTrainingArguments
from .training_extras import (
    AdversarialWeightPerturbation,
    WeightEma,
    batchnorm_modules,
    batchnorm_stats_kept,
    freeze_batchnorm_stats,
)
from .weights_hash import model_weights_sha256


logger = logging.get_logger(__name__)

# Private batch key carrying the clean inputs from `training_step` to `compute_loss`.
_CLEAN_KEY = "_hf_advft_clean_inputs"
# Training steps whose inputs are checked to lie in [0, 1] after de-normalization (every eval batch is checked).
RANGE_CHECK_STEPS = 20


class AdvTrainer(AdvEvaluationMixin, AdvCheckpointMixin, LrMultipliersMixin, Trainer):
    """A `Trainer` that fine-tunes image classifiers on adversarial examples.

    Takes the same arguments as `transformers.Trainer`, with `args` an [`AdvTrainingArguments`]. Works with models
    that return a `ModelOutput` with `.logits` (transformers) or a plain logits tensor (timm). Batches hold images
    under `args.adv_pixel_key` (default `"pixel_values"`) and class labels under `args.adv_label_key` (`"labels"`);
    the loss is computed here from the logits (cross-entropy based, see `hf_advft.objectives`), so
    `compute_loss_func` is not accepted. Without `compute_metrics`, evaluation reports `eval_accuracy`; with
    `adv_eval_steps > 0` it adds `eval_robust_accuracy` (PGD on the eval set).

    Example:

    ```python
    >>> from hf_advft import AdvTrainer, AdvTrainingArguments
    >>> args = AdvTrainingArguments(output_dir="out", num_train_epochs=3, learning_rate=1e-3,
    ...                             lr_scheduler_type="slow_start_fast_decay", adv_epsilon=8 / 255)
    >>> trainer = AdvTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
    ...                      processing_class=image_processor)  # doctest: +SKIP
    >>> trainer.train()  # doctest: +SKIP
    ```
    """

    def __init__(self, model=None, args: AdvTrainingArguments | None = None, *pos, **kwargs):
        if not isinstance(args, AdvTrainingArguments):
            raise TypeError(
                f"AdvTrainer needs `args=AdvTrainingArguments(...)`, got {type(args).__name__}. "
                f"AdvTrainingArguments takes every TrainingArguments field plus the adv_* settings."
            )
        if pos:
            raise TypeError("Pass AdvTrainer's arguments after `args` by keyword (train_dataset=..., ...).")
        if kwargs.get("compute_loss_func") is not None:
            raise ValueError(
                "AdvTrainer computes its loss from adv_objective ('pgd_at', 'trades' or 'mart'); compute_loss_func is "
                "not supported. Subclass AdvTrainer and override compute_loss for a custom objective."
            )
        self.check_lr_multipliers_optimizer(args, kwargs.get("optimizers"))
        if kwargs.get("compute_metrics") is None:
            kwargs["compute_metrics"] = compute_accuracy
        super().__init__(model=model, args=args, **kwargs)
        if args.label_names is None:
            # timm models have no `labels` argument, so the Trainer would not find the labels by itself.
            self.label_names = [args.adv_label_key]
        # Our loss is a per-micro-batch mean, so the Trainer must divide it by the accumulation steps: newer
        # transformers read `loss_is_scaled_for_ga`, older ones divide when `model_accepts_loss_kwargs` is False.
        self.loss_is_scaled_for_ga = False
        self.model_accepts_loss_kwargs = False
        core = self.accelerator.unwrap_model(self.model)
        self.pixel_space = resolve_pixel_space(args.adv_image_mean, args.adv_image_std, self.processing_class, core)
        self._kwarg_call = takes_pixel_key(core, args.adv_pixel_key)
        self._adv_metrics: dict[str, list[torch.Tensor | float]] = defaultdict(list)
        self._attack_cache: tuple | None = None  # (wrapped model, module attacked, its parameters)
        # Example-passes spent, per process: `attack` forward+backward passes and `update` forward+backward passes.
        self.compute_spent = {"attack": 0, "update": 0}
        # Totals (all processes) restored from a checkpoint on resume; `ComputeSpentCallback` carries them in it.
        self._spent_base = {"attack": 0, "update": 0}
        self.add_callback(ComputeSpentCallback())
        if is_adapter_model(core) and batchnorm_modules(core) and not args.adv_freeze_bn:
            logger.warning("The peft model has BatchNorm layers: their running statistics would change in training but "
                           "are not saved with the adapter. Set adv_freeze_bn=True to keep them as the base model's.")
        # Optional extras (hf_advft.training_extras), each a callback: the weight EMA and AWP.
        self._ema = WeightEma(core, args.adv_ema_decay) if args.adv_ema_decay is not None else None
        self._awp = AdversarialWeightPerturbation(args.adv_awp_gamma) if args.adv_awp_gamma > 0 else None
        for extra in (self._ema, self._awp):
            if extra is not None:
                self.add_callback(extra)
        # Model card metadata (license, finetuned_from, dataset, evaluation=...) given to create_model_card or
        # push_to_hub, kept for every later save; and when training started, for the card's wall time.
        self.model_card_fields: dict = {}
        self._train_start_time: float | None = None
        # The step of the weights in the model when it is not the last step (the best model was loaded).
        self._loaded_step: int | None = None
        # adv_free_grads="before_backward": the previous step's gradients, kept alive past the Trainer's
        # model.zero_grad() until right before the next update's backward (see `_hold_gradients`).
        self._hold_grads = args.adv_free_grads == "before_backward" or (
            args.adv_free_grads == "auto" and args.device.type == "cpu")
        self._held_grads: list[torch.Tensor] | None = None
        logger.info(f"AdvTrainer: normalization from {self.pixel_space.source}.")
        if args.adv_channels_last:
            if not any(p.dim() == 4 for p in core.parameters()):
                logger.warning("adv_channels_last=True has no effect: the model has no 4-D (convolution) weights.")
            core.to(memory_format=torch.channels_last)

    # ----------------------------------------------------------------------------------------------------------------
    # Model calls
    def _logits(self, model, model_inputs: torch.Tensor) -> torch.Tensor:
        # The one model-call adapter (hf_advft.evaluation_utils), with the call style read once from the core model.
        return model_logits(model, model_inputs, self.args.adv_pixel_key, self._kwarg_call)

    def _params_sharded(self) -> bool:
        ds_plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        return bool(self.is_fsdp_enabled or (self.is_deepspeed_enabled and getattr(ds_plugin, "zero_stage", 0) == 3))

    def _attack_model(self, model):
        return self._attack_target(model)[0]

    def _attack_target(self, model) -> tuple[torch.nn.Module, list[torch.nn.Parameter]]:
        """The module to attack through and the parameters whose flags the attack switches off, cached per wrapper.

        Sharded parameters (FSDP, DeepSpeed ZeRO-3) only exist inside the wrapper's forward: attack through it, and
        leave its flags alone. The cache saves an `unwrap_model` and a walk over the modules on every step.
        """
        cached = self._attack_cache
        if cached is None or cached[0] is not model:
            sharded = self._params_sharded()
            attack_model = model if sharded else self.accelerator.unwrap_model(model)
            cached = self._attack_cache = (model, attack_model, [] if sharded else list(attack_model.parameters()))
        return cached[1], cached[2]

    def _batch(self, inputs: dict, check_range: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (pixels in [0, 1], labels) of a batch, with errors that name the missing key."""
        pixel_key, label_key = self.args.adv_pixel_key, self.args.adv_label_key
        for key, what in ((pixel_key, "images"), (label_key, "labels")):
            if key not in inputs:
                raise ValueError(
                    f"The batch has no {key!r} ({what}); its keys are {sorted(inputs)}. Rename the column or set "
                    f"AdvTrainingArguments(adv_{'pixel' if key == pixel_key else 'label'}_key=...)."
                )
        return self.pixel_space.to_pixels(inputs[pixel_key].float(), check=check_range), inputs[label_key]

    def craft_adversarial(
        self, model, pixels, labels, *, epsilon, step_size, steps, restarts, attack_mode="eval", objective="pgd_at",
        attack="pgd",
    ) -> torch.Tensor:
        """Run `attack` (PGD, or a single-step `"fgsm_rs"` / `"n_fgsm"` that ignores `step_size`, `steps` and
        `restarts`) on `pixels` in [0, 1], maximising CE (or the KL for `objective="trades"`); mode and flags restored.
        """
        with self._attacking(model, attack_mode) as logits_fn:
            loss_fn, target, start = None, labels, self.args.adv_random_start
            if objective == "trades":
                with torch.no_grad():
                    target = F.softmax(logits_fn(pixels).float(), dim=-1)
                # The KL has a zero gradient at the clean input: start near it, as the TRADES reference does.
                loss_fn, start = kl_per_example, "normal"
            if attack in SINGLE_STEP_ATTACKS:
                single_step = fgsm if attack == "fgsm_rs" else n_fgsm
                return single_step(logits_fn, pixels, target, epsilon=epsilon, norm=self.args.adv_norm,
                                   loss_fn=loss_fn)
            return pgd(logits_fn, pixels, target, epsilon=epsilon, step_size=step_size, steps=steps,
                       norm=self.args.adv_norm, random_start=start, restarts=restarts, loss_fn=loss_fn)

    @contextmanager
    def _attacking(self, model, attack_mode="eval", *, full_precision=False):
        """Yield `logits_fn(pixels in [0, 1])` of `model` for an attack; its mode, flags and BatchNorm stats restored.

        Training attacks run under the update's autocast; `full_precision=True` (evaluation) calls the model's own
        forward without the mixed-precision autocast accelerate patches into it.
        """
        # Sharded wrappers own their parameters' flags (FSDP1 raises inside autograd.grad when a flat parameter's
        # requires_grad changed): `params` is empty for them. Only the input gradient is asked for, so `.grad` stays
        # untouched.
        attack_model, params = self._attack_target(model)
        flags = [p.requires_grad for p in params]
        was_training = attack_model.training
        # In train mode every attack forward would also move BatchNorm's running statistics: only the update may.
        running = batchnorm_stats_kept(attack_model) if attack_mode == "train" else nullcontext()
        dtype = self._model_input_dtype()
        logits_fn = self.pixel_space.wrap(
            lambda x: self._logits(attack_model, x if dtype is None else x.to(dtype)))
        try:
            attack_model.train(attack_mode == "train")
            for p in params:  # no weight gradients are needed, so no activations are kept for them
                p.requires_grad_(False)
            # accelerate patches the autocast into the unwrapped module's forward, also under a sharding wrapper.
            with running, (original_forward(self.accelerator.unwrap_model(model)) if full_precision
                           else self.accelerator.autocast()):
                yield logits_fn
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)
            attack_model.train(was_training)

    def _model_input_dtype(self) -> torch.dtype | None:
        # DeepSpeed runs bf16/fp16 weights without autocast; the Trainer casts the update's inputs to that dtype
        # (`_prepare_input`), so the attack's model inputs are cast alike.
        if not self.is_deepspeed_enabled:
            return None
        ds_config = getattr(getattr(self.accelerator.state, "deepspeed_plugin", None), "hf_ds_config", None)
        dtype = ds_config.dtype() if ds_config is not None else None
        return dtype if dtype in (torch.bfloat16, torch.float16) else None

    def _set_signature_columns_if_needed(self):
        # The Trainer keeps only columns named in `model.forward`'s signature; a timm model's is `forward(x)`, so the
        # image and label keys would be dropped. We call the model ourselves, so keep them.
        super()._set_signature_columns_if_needed()
        for key in (self.args.adv_pixel_key, self.args.adv_label_key):
            if key not in self._signature_columns:
                self._signature_columns.append(key)

    # ----------------------------------------------------------------------------------------------------------------
    # Training
    def current_epsilon(self) -> float:
        """The training attack's epsilon at the current optimizer step (after `adv_epsilon_schedule`)."""
        total = max(1, self.state.max_steps or 1)
        return self.args.adv_epsilon * epsilon_factor(
            self.state.global_step, total, schedule=self.args.adv_epsilon_schedule,
            warmup_ratio=self.args.adv_epsilon_warmup_ratio, delay_ratio=self.args.adv_epsilon_delay_ratio,
        )

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        inputs = self._prepare_inputs(inputs)
        # The [0, 1] range check syncs the device with the host: the first steps catch a wrong normalization.
        pixels, labels = self._batch(inputs, check_range=self.state.global_step < RANGE_CHECK_STEPS)
        args = self.args
        if args.adv_channels_last:  # every attack iterate inherits the layout of the clean images
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        epsilon = self.current_epsilon()
        batch = labels.shape[0]
        x_adv = pixels  # epsilon 0 (adv_epsilon_delay_ratio): clean training, no attack run and none counted
        if epsilon > 0:
            step_size = args.adv_step_size * epsilon / args.adv_epsilon
            x_adv = self.craft_adversarial(model, pixels, labels, epsilon=epsilon, step_size=step_size,
                                           steps=args.adv_steps, restarts=args.adv_restarts,
                                           attack_mode=args.adv_attack_mode, objective=args.adv_objective,
                                           attack=args.adv_attack)
            single_step = args.adv_attack in SINGLE_STEP_ATTACKS
            self.compute_spent["attack"] += batch * (1 if single_step else args.adv_steps * args.adv_restarts)
        self.compute_spent["update"] += batch * (2 if needs_clean_logits(args.adv_objective,
                                                                         args.adv_clean_loss_weight) else 1)
        adv_inputs = dict(inputs)
        adv_inputs[args.adv_pixel_key] = self.pixel_space.to_model(x_adv).to(inputs[args.adv_pixel_key].dtype)
        adv_inputs[_CLEAN_KEY] = inputs[args.adv_pixel_key]
        awp_start = round(args.adv_awp_warmup_ratio * (self.state.max_steps or 1))
        if self._awp is not None and not self._awp.perturbed and self.state.global_step >= awp_start:
            self._perturb_weights(model, adv_inputs, labels)
        # A Python float, made a tensor only when logged: a GPU tensor would be a host-to-device copy every step.
        self._adv_metrics["adv_epsilon"].append(epsilon)
        loss = super().training_step(model, adv_inputs, num_items_in_batch)
        self._hold_gradients(model)
        return loss

    def _hold_gradients(self, model) -> None:
        """adv_free_grads="before_backward": keep references to the gradients the backward just wrote.

        The Trainer's `model.zero_grad()` after the optimizer step then drops only its own references, and the memory
        is freed where `compute_loss` drops these: after the next update's forward, right before its backward, which
        takes the same memory straight back from the allocator (a hand-written loop's `optimizer.zero_grad()` order).
        Freed at the end of the step instead, glibc returns the big blocks to the kernel, and on CPU the next backward
        page-faults them in again: 190 ms of ViT-B/16's 560 ms backward (benchmarks/README.md, "Throughput at real
        sizes"). The cost is one set of gradients alive during the attack, hence `after_step` on accelerators.
        """
        if self._hold_grads:
            self._held_grads = [p.grad for p in model.parameters() if p.grad is not None]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args = self.args
        clean_inputs = inputs.pop(_CLEAN_KEY, None)
        if args.adv_label_key not in inputs or args.adv_pixel_key not in inputs:
            self._batch(inputs)  # raises the explanatory ValueError
        labels = inputs[args.adv_label_key]
        if clean_inputs is None:  # evaluation / prediction: plain cross-entropy on the given inputs
            logits = self._logits(model, inputs[args.adv_pixel_key])
            loss = F.cross_entropy(logits.float(), labels)
        else:
            out, logits = self._objective(model, inputs[args.adv_pixel_key], clean_inputs, labels)
            loss = out.loss
            self._held_grads = None  # adv_free_grads="before_backward": freed here, right before the backward
            metrics = self._adv_metrics
            metrics["adv_loss"].append(out.adv_loss.detach())
            if out.clean_loss is not None:
                metrics["clean_loss"].append(out.clean_loss.detach())
            metrics["adv_train_accuracy"].append((logits.detach().argmax(-1) == labels).float().mean())
        return (loss, {"logits": logits}) if return_outputs else loss

    def _objective(self, model, adv_model_inputs, clean_model_inputs, labels):
        """The training objective of a batch (model inputs, normalized), and the adversarial logits."""
        args = self.args
        if args.adv_freeze_bn:  # after Trainer.training_step's model.train()
            freeze_batchnorm_stats(model)
        logits = self._logits(model, adv_model_inputs)
        clean_logits = None
        if needs_clean_logits(args.adv_objective, args.adv_clean_loss_weight):
            clean_logits = self._logits(model, clean_model_inputs)
        out = compute_objective(args.adv_objective, adv_logits=logits, labels=labels, clean_logits=clean_logits,
                                trades_beta=args.adv_trades_beta, clean_loss_weight=args.adv_clean_loss_weight,
                                mart_beta=args.adv_mart_beta)
        return out, logits

    def _perturb_weights(self, model, adv_inputs, labels) -> None:
        """AWP's ascent step: one more forward+backward of the objective (counted as update passes), on the
        unwrapped model in training mode; BatchNorm statistics are left as they were."""
        core, args = self.accelerator.unwrap_model(model), self.args
        was_training = core.training
        reduce = None
        if self.accelerator.num_processes > 1:  # one perturbation for all ranks: the gradient of the whole batch
            reduce = lambda t: self.accelerator.reduce(t, reduction="mean")  # noqa: E731
        try:
            core.train()
            with batchnorm_stats_kept(core), self.accelerator.autocast():
                out, _ = self._objective(core, adv_inputs[args.adv_pixel_key], adv_inputs[_CLEAN_KEY], labels)
                self._awp.perturb(core, out.loss, reduce=reduce)
        finally:
            core.train(was_training)
        self.compute_spent["update"] += labels.shape[0] * (2 if needs_clean_logits(args.adv_objective,
                                                                                   args.adv_clean_loss_weight) else 1)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None and str(self.args.lr_scheduler_type) == SLOW_START_FAST_DECAY:
            kwargs = dict(self.args.lr_scheduler_kwargs or {})
            # warmup_steps=0 (the TrainingArguments default) means "use the schedule's own warmup_ratio".
            warmup = self.args.get_warmup_steps(num_training_steps) if self.args.warmup_steps > 0 else None
            self.lr_scheduler = get_slow_start_fast_decay_schedule(
                self.optimizer if optimizer is None else optimizer, num_training_steps, warmup, **kwargs
            )
            self._created_lr_scheduler = True
            return self.lr_scheduler
        return super().create_scheduler(num_training_steps, optimizer)

    def _get_grad_norm(self, model, grad_norm=None):
        # transformers 5 computes the gradient norm for its logs on every step, even with max_grad_norm=0 (no
        # clipping): `clip_grad_norm_(inf)`, a norm and a multiply by 1.0 over every gradient. With
        # adv_grad_norm="when_logged" it is computed only on the steps whose log will show it; the logs are unchanged.
        if grad_norm is None and self.args.adv_grad_norm == "when_logged" and not self._step_logs_grad_norm():
            return None
        return super()._get_grad_norm(model, grad_norm=grad_norm)

    def _step_logs_grad_norm(self) -> bool:
        """Whether the optimizer step being made will be logged, as `DefaultFlowCallback.on_step_end` decides it (with
        `logging_strategy="epoch"` the epoch's last step is not known here: every step keeps its norm)."""
        args, state = self.args, self.state
        step = state.global_step + 1  # the Trainer increments global_step after the optimizer step
        if step == 1 and args.logging_first_step:
            return True
        if args.logging_strategy == IntervalStrategy.STEPS:
            return bool(state.logging_steps) and step % state.logging_steps == 0
        return args.logging_strategy == IntervalStrategy.EPOCH

    @property
    def weights_step(self) -> int:
        """The optimizer step of the weights in the model: `state.global_step`, or the best step once
        `load_best_model_at_end` loaded it (also after early stopping). Evaluations are logged under this step."""
        return self.state.global_step if self._loaded_step is None else self._loaded_step

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" not in logs and "train_runtime" not in logs and any(k.endswith("_runtime") for k in logs):
            self._log_evaluation(logs)
            return
        # Training logs carry "loss"; they are emitted on every process at once, so the reduction below is safe.
        if "loss" in logs and self._adv_metrics:
            for key, values in self._adv_metrics.items():
                stacked = torch.tensor(values) if isinstance(values[0], float) else torch.stack(values)
                value = stacked.to(self.args.device).float().mean()
                value = self.accelerator.reduce(value, reduction="mean")
                logs[key] = round(value.item(), 6)
            spent = self._total_spent()
            logs["adv_attack_passes"], logs["adv_update_passes"] = spent["attack"], spent["update"]
            self._adv_metrics.clear()
        if start_time is not None:
            self._train_start_time = start_time
        super().log(logs, start_time)

    def _log_evaluation(self, logs: dict[str, float]) -> None:
        """Log an evaluation under the step (and epoch) of the weights it measured, with their SHA-256 in the log
        history (not sent to the loggers, which take numbers): the card states it only beside the same weights."""
        state, step = self.state, self.weights_step
        saved = state.global_step, state.epoch
        if step != state.global_step:
            state.global_step = step
            state.epoch = next((h["epoch"] for h in reversed(state.log_history)
                                if h.get("step") == step and "epoch" in h), state.epoch)
        try:
            super().log(logs)
        finally:
            state.global_step, state.epoch = saved
        if self.is_world_process_zero() and not self._params_sharded():  # sharded weights are not whole here
            state.log_history[-1]["weights_sha256"] = model_weights_sha256(self.accelerator.unwrap_model(self.model))

    def _total_spent(self) -> dict[str, int]:
        """Example-passes spent since the run began, summed over processes (a collective: call it on every process)."""
        spent = torch.tensor([self.compute_spent["attack"], self.compute_spent["update"]],
                             device=self.args.device, dtype=torch.float64)
        spent = self.accelerator.reduce(spent, reduction="sum")
        base = self._spent_base
        return {"attack": base["attack"] + int(spent[0]), "update": base["update"] + int(spent[1])}
