"""`AdvTrainingArguments`: `transformers.TrainingArguments` plus the adversarial fine-tuning settings."""

from __future__ import annotations

import json
import warnings
from copy import deepcopy
from dataclasses import dataclass, field, fields

from transformers import TrainingArguments

from .attacks import SINGLE_STEP_ATTACKS, TRAINING_ATTACKS, check_attack_args
from .lr_multipliers import LR_MULTIPLIERS_HELP, parse_lr_multipliers
from .objectives import OBJECTIVES
from .schedules import SLOW_START_FAST_DECAY


ATTACK_MODES = ("eval", "train")
GRAD_NORM_POLICIES = ("when_logged", "every_step")
FREE_GRADS_POLICIES = ("auto", "after_step", "before_backward")
# Fast-AT (FGSM with random start, Wong et al. 2020) takes one step of about 1.25 * epsilon.
FAST_AT_STEP_RATIO = 1.25
EPSILON_SCHEDULES = ("constant", "linear")


# repr=False keeps TrainingArguments' repr, which hides `hub_token`; the generated one would print it.
@dataclass(repr=False)
class AdvTrainingArguments(TrainingArguments):
    """Training arguments for adversarial fine-tuning with [`AdvTrainer`].

    Every `adv_*` field is in pixel units of images in [0, 1], whatever normalization the model expects. Also accepts
    `lr_scheduler_type="slow_start_fast_decay"`, shaped through `lr_scheduler_kwargs` (`warmup_ratio`, `decay`,
    `min_lr_ratio`; see `hf_advft.schedules.get_slow_start_fast_decay_schedule`).

    Example:

    ```python
    >>> from hf_advft import AdvTrainingArguments
    >>> args = AdvTrainingArguments(output_dir="out", lr_scheduler_type="slow_start_fast_decay", adv_steps=7,
    ...                             report_to="none")
    >>> args.lr_scheduler_type, round(args.adv_epsilon * 255)
    ('slow_start_fast_decay', 8)
    ```
    """

    # Redeclared as a plain `str` so that HfArgumentParser accepts our schedule name beside transformers' choices.
    lr_scheduler_type: str = field(
        default="linear",
        metadata={"help": "LR schedule: 'slow_start_fast_decay' (hf-advft) or any transformers SchedulerType name."},
    )
    lr_multipliers: dict | str | None = field(default=None, metadata={"help": LR_MULTIPLIERS_HELP})
    adv_epsilon: float = field(
        default=8 / 255,
        metadata={"help": "Radius of the training attack in pixel units of images in [0, 1] (8/255, not 8)."},
    )
    adv_attack: str = field(
        default="pgd",
        metadata={"help": "Training attack: 'pgd' (adv_steps iterations), or a single-step one (1 pass per example; "
                          "adv_steps and adv_step_size are then ignored): 'fgsm_rs' (Wong et al. 2020: random start, "
                          "step 1.25 eps, projected) or 'n_fgsm' (de Jorge et al. 2022: noise 2 eps, step eps, "
                          "not projected)."},
    )
    adv_step_size: float = field(default=2 / 255, metadata={"help": "Step size of each PGD iteration, pixel units."})
    adv_steps: int = field(
        default=10, metadata={"help": "PGD iterations per training batch (1 with random start = Fast-AT FGSM)."}
    )
    adv_norm: str = field(default="linf", metadata={"help": "Threat model: 'linf' or 'l2'."})
    adv_random_start: bool = field(
        default=True,
        metadata={"help": "Start PGD from a random point in the ball (TRADES always starts at x + 0.001 * N(0, I), as "
                          "its reference does: its KL has a zero gradient at x)."},
    )
    adv_restarts: int = field(default=1, metadata={"help": "PGD restarts during training (worst case kept)."})
    adv_objective: str = field(
        default="pgd_at",
        metadata={"help": "'pgd_at' (Madry: CE on PGD examples), 'trades' (Zhang et al. 2019) or 'mart' (Wang et al. "
                          "2020)."},
    )
    adv_trades_beta: float = field(default=6.0, metadata={"help": "TRADES weight of the KL term."})
    adv_mart_beta: float = field(default=6.0, metadata={"help": "MART weight of its misclassification-weighted KL."})
    adv_clean_loss_weight: float = field(
        default=0.0,
        metadata={"help": "pgd_at only: weight w in (1 - w) * CE(adv) + w * CE(clean). 0 = pure PGD-AT."},
    )
    adv_attack_mode: str = field(
        default="eval",
        metadata={"help": "Model mode while crafting examples: 'eval' (BatchNorm stats frozen, no dropout) or 'train'."},
    )
    adv_epsilon_schedule: str = field(
        default="constant",
        metadata={"help": "'constant', or 'linear': eps (and step size) ramp from eps/ramp to eps over adv_epsilon_warmup_ratio."},
    )
    adv_epsilon_warmup_ratio: float = field(
        default=0.3, metadata={"help": "Fraction of training steps over which the 'linear' eps schedule ramps up."}
    )
    adv_epsilon_delay_ratio: float = field(
        default=0.0,
        metadata={"help": "Fraction of training steps at epsilon 0 (clean training, no attack run) before the eps "
                          "schedule starts (Ngnawe et al. 2026)."},
    )
    adv_freeze_bn: bool = field(
        default=False,
        metadata={"help": "Keep every BatchNorm layer's running statistics frozen during training (its affine "
                          "weights still train): they do not drift towards the adversarial inputs."},
    )
    adv_ema_decay: float | None = field(
        default=None,
        metadata={"help": "Keep an exponential moving average of the weights with this decay (e.g. 0.999; "
                          "timm.utils.ModelEmaV3); evaluation and saving then use the averaged weights. None: off."},
    )
    adv_awp_gamma: float = field(
        default=0.0,
        metadata={"help": "Adversarial weight perturbation (AWP, Wu et al. 2020) size, relative to each weight's norm "
                          "(the paper: 5e-3 to 1e-2); costs one more forward+backward per update. 0: off."},
    )
    adv_awp_warmup_ratio: float = field(
        default=0.0, metadata={"help": "Fraction of the training steps before AWP starts."}
    )
    adv_eval_steps: int = field(
        default=10,
        metadata={"help": "PGD steps for eval_robust_accuracy during evaluate(); 0 disables the robust evaluation."},
    )
    adv_eval_epsilon: float | None = field(
        default=None, metadata={"help": "Eval attack radius (pixel units). Defaults to adv_epsilon."}
    )
    adv_eval_step_size: float | None = field(
        default=None, metadata={"help": "Eval attack step size. Defaults to 2.5 * eval epsilon / adv_eval_steps."}
    )
    adv_eval_restarts: int = field(default=1, metadata={"help": "Restarts of the eval PGD attack."})
    adv_eval_max_examples: int | None = field(
        default=None, metadata={"help": "Attack at most this many eval examples per process (None: all)."}
    )
    adv_autoattack_examples: int = field(
        default=0,
        metadata={"help": "At the end of train(), run AutoAttack (standard, at the eval epsilon) on this many eval "
                          "examples and report eval_autoattack_accuracy; 0 disables it. Needs hf-advft[autoattack]."},
    )
    adv_image_mean: list[float] | None = field(
        default=None,
        metadata={"help": "Normalization mean of the model inputs. Default: from processing_class or timm config."},
    )
    adv_image_std: list[float] | None = field(
        default=None, metadata={"help": "Normalization std of the model inputs (with adv_image_mean)."}
    )
    adv_channels_last: bool = field(
        default=False,
        metadata={"help": "Keep the model's 4-D weights and the attack's images in channels_last memory format "
                          "(a standard speed-up for CNNs on recent GPUs; off until measured faster, see benchmarks/README.md)."},
    )
    adv_grad_norm: str = field(
        default="when_logged",
        metadata={"help": "When the gradient norm of the logs is computed if max_grad_norm=0 (no clipping): "
                          "'when_logged' (only on the steps that log it: the logs are unchanged, the other steps skip "
                          "two passes over every gradient) or 'every_step' (as transformers does)."},
    )
    adv_free_grads: str = field(
        default="auto",
        metadata={"help": "When the previous step's weight gradients are freed: 'after_step' (the Trainer's "
                          "model.zero_grad() at the end of each step: the lowest peak memory, the attack runs without "
                          "them), 'before_backward' (kept until the update's backward, as a hand-written loop's "
                          "optimizer.zero_grad() right before loss.backward(): the allocator hands the same memory "
                          "straight back, where glibc otherwise returns it to the kernel and the next backward "
                          "page-faults it in again) or 'auto' (before_backward on CPU, after_step on accelerators)."},
    )
    adv_pixel_key: str = field(default="pixel_values", metadata={"help": "Batch key holding the images."})
    adv_label_key: str = field(default="labels", metadata={"help": "Batch key holding the class labels."})

    def __post_init__(self):
        self.lr_multipliers = parse_lr_multipliers(self.lr_multipliers)
        self._validate_adv_args()
        # TrainingArguments.__post_init__ casts lr_scheduler_type to transformers' closed `SchedulerType` enum, which
        # cannot learn new members. We hand it a valid stand-in and restore our name afterwards; AdvTrainer's
        # `create_scheduler` recognises the name and builds our schedule, every other name goes to transformers.
        ours = str(self.lr_scheduler_type) == SLOW_START_FAST_DECAY
        if ours:
            self.lr_scheduler_type = "linear"
        super().__post_init__()
        if ours:
            self.lr_scheduler_type = SLOW_START_FAST_DECAY

    def _validate_adv_args(self):
        # The one validation of epsilon and steps (hf_advft.attacks), shared with the evaluation and the attacks.
        check_attack_args(epsilon=self.adv_epsilon, step_size=self.adv_step_size, steps=self.adv_steps,
                          norm=self.adv_norm, restarts=self.adv_restarts, prefix="adv_", allow_zero_epsilon=False)
        if self.adv_attack not in TRAINING_ATTACKS:
            raise ValueError(f"adv_attack={self.adv_attack!r} is unknown: use one of {TRAINING_ATTACKS}.")
        if self.adv_attack in SINGLE_STEP_ATTACKS and self.adv_restarts > 1:
            raise ValueError(
                f"adv_attack={self.adv_attack!r} is a single-step attack without restarts: set adv_restarts=1, or use "
                f"adv_attack='pgd' for restarts."
            )
        if self.adv_attack == "pgd" and self.adv_step_size > self.adv_epsilon and self.adv_steps > 1:
            warnings.warn(
                f"adv_step_size={self.adv_step_size:.4g} is larger than adv_epsilon={self.adv_epsilon:.4g}: every "
                f"step overshoots the ball and PGD degenerates to FGSM; a common choice is 2.5 * eps / steps.",
                UserWarning,
                stacklevel=3,
            )
        fast_at_step = FAST_AT_STEP_RATIO * self.adv_epsilon
        if self.adv_attack == "pgd" and self.adv_steps == 1 and self.adv_step_size < fast_at_step:
            warnings.warn(
                f"adv_steps=1 with adv_step_size={self.adv_step_size:.4g} (< {FAST_AT_STEP_RATIO} * adv_epsilon) is a "
                f"weak single step, not Fast-AT: FGSM with random start needs adv_step_size = "
                f"{FAST_AT_STEP_RATIO} * adv_epsilon = {FAST_AT_STEP_RATIO * self.adv_epsilon:.4g} "
                f"(Wong et al. 2020), or adv_attack='fgsm_rs'.",
                UserWarning,
                stacklevel=3,
            )
        if self.adv_objective not in OBJECTIVES:
            raise ValueError(f"adv_objective={self.adv_objective!r} is unknown: use one of {OBJECTIVES}.")
        if self.adv_trades_beta < 0:
            raise ValueError(f"adv_trades_beta must be >= 0, got {self.adv_trades_beta}.")
        if not 0 <= self.adv_clean_loss_weight <= 1:
            raise ValueError(f"adv_clean_loss_weight must be in [0, 1], got {self.adv_clean_loss_weight}.")
        if self.adv_mart_beta < 0:
            raise ValueError(f"adv_mart_beta must be >= 0, got {self.adv_mart_beta}.")
        if self.adv_objective in ("trades", "mart") and self.adv_clean_loss_weight > 0:
            raise ValueError(
                f"adv_clean_loss_weight applies to adv_objective='pgd_at'; {self.adv_objective.upper()} already "
                f"contains a clean term, tune adv_{self.adv_objective}_beta instead."
            )
        if self.adv_attack_mode not in ATTACK_MODES:
            raise ValueError(f"adv_attack_mode={self.adv_attack_mode!r} is unknown: use one of {ATTACK_MODES}.")
        if self.adv_epsilon_schedule not in EPSILON_SCHEDULES:
            raise ValueError(
                f"adv_epsilon_schedule={self.adv_epsilon_schedule!r} is unknown: use one of {EPSILON_SCHEDULES}."
            )
        if self.adv_epsilon_schedule == "linear" and not 0 < self.adv_epsilon_warmup_ratio <= 1:
            raise ValueError(f"adv_epsilon_warmup_ratio must be in (0, 1], got {self.adv_epsilon_warmup_ratio}.")
        if not 0 <= self.adv_epsilon_delay_ratio < 1:
            raise ValueError(f"adv_epsilon_delay_ratio must be in [0, 1) (a fraction of the training steps), got "
                             f"{self.adv_epsilon_delay_ratio}.")
        if self.adv_epsilon_schedule == "linear" and self.adv_epsilon_delay_ratio + self.adv_epsilon_warmup_ratio > 1:
            raise ValueError(
                f"adv_epsilon_delay_ratio + adv_epsilon_warmup_ratio = "
                f"{self.adv_epsilon_delay_ratio + self.adv_epsilon_warmup_ratio:.3g} > 1: epsilon would never reach "
                f"adv_epsilon. Shorten the delay or the ramp."
            )
        if self.adv_freeze_bn and self.adv_attack_mode == "train":
            raise ValueError(
                "adv_freeze_bn keeps BatchNorm statistics frozen, but adv_attack_mode='train' would update them "
                "during the attack: use adv_attack_mode='eval' (the default) with adv_freeze_bn."
            )
        if self.adv_ema_decay is not None and not 0 < self.adv_ema_decay < 1:
            raise ValueError(f"adv_ema_decay must be in (0, 1) (e.g. 0.999), or None to switch the EMA off, got "
                             f"{self.adv_ema_decay}.")
        if self.adv_awp_gamma < 0:
            raise ValueError(f"adv_awp_gamma must be >= 0 (0 switches AWP off; the paper uses 5e-3 to 1e-2), got "
                             f"{self.adv_awp_gamma}.")
        if not 0 <= self.adv_awp_warmup_ratio < 1:
            raise ValueError(f"adv_awp_warmup_ratio must be in [0, 1), got {self.adv_awp_warmup_ratio}.")
        if self.adv_eval_steps < 0:
            raise ValueError(f"adv_eval_steps must be >= 0 (0 disables robust evaluation), got {self.adv_eval_steps}.")
        if self.adv_eval_steps > 0:
            check_attack_args(epsilon=self.eval_epsilon, step_size=self.eval_step_size, steps=self.adv_eval_steps,
                              norm=self.adv_norm, restarts=self.adv_eval_restarts, prefix="adv_eval_",
                              allow_zero_epsilon=False)
        if self.adv_eval_max_examples is not None and self.adv_eval_max_examples < 1:
            raise ValueError(f"adv_eval_max_examples must be >= 1 or None, got {self.adv_eval_max_examples}.")
        if self.adv_grad_norm not in GRAD_NORM_POLICIES:
            raise ValueError(f"adv_grad_norm must be one of {GRAD_NORM_POLICIES}, got {self.adv_grad_norm!r}.")
        if self.adv_free_grads not in FREE_GRADS_POLICIES:
            raise ValueError(f"adv_free_grads must be one of {FREE_GRADS_POLICIES}, got {self.adv_free_grads!r}.")
        if not isinstance(self.adv_channels_last, bool):
            raise TypeError(f"adv_channels_last must be True or False, got {self.adv_channels_last!r}.")
        if (self.adv_image_mean is None) != (self.adv_image_std is None):
            raise ValueError("Pass both adv_image_mean and adv_image_std, or neither.")
        if not isinstance(self.adv_autoattack_examples, int) or self.adv_autoattack_examples < 0:
            raise ValueError(f"adv_autoattack_examples must be an integer >= 0 (0 disables it), got "
                             f"{self.adv_autoattack_examples!r}.")
        if self.adv_autoattack_examples > 0:
            from .evaluation_utils import import_autoattack

            import_autoattack()  # fail now, with the install hint, rather than after training

    @property
    def eval_epsilon(self) -> float:
        return self.adv_epsilon if self.adv_eval_epsilon is None else self.adv_eval_epsilon

    @property
    def eval_step_size(self) -> float:
        if self.adv_eval_step_size is not None:
            return self.adv_eval_step_size
        return 2.5 * self.eval_epsilon / max(1, self.adv_eval_steps)

    def __getstate__(self) -> dict:
        # The Trainer pickles these arguments into `training_args.bin` in every checkpoint and uploads that file with
        # the model: a pickle of them never carries the Hub token (copies in memory keep it: __copy__, __deepcopy__).
        state = dict(self.__dict__)
        for key in state:
            if key.endswith("_token") and isinstance(state[key], str):
                state[key] = None
        return state

    def __copy__(self):
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        return clone

    def __deepcopy__(self, memo):
        clone = object.__new__(type(self))
        memo[id(self)] = clone
        clone.__dict__.update(deepcopy(self.__dict__, memo))
        return clone

    def adv_config(self) -> dict:
        """Every adversarial setting (the `adv_*` fields, the schedule and its kwargs, the LR multipliers), for
        `adv_config.json`."""
        config = {f.name: getattr(self, f.name) for f in fields(self) if f.name.startswith("adv_")}
        config["lr_multipliers"] = self.lr_multipliers
        config["lr_scheduler_type"] = str(getattr(self.lr_scheduler_type, "value", self.lr_scheduler_type))
        config["lr_scheduler_kwargs"] = self.lr_scheduler_kwargs
        return json.loads(json.dumps(config, sort_keys=True, default=str))
