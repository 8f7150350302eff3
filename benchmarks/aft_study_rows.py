"""The rows of `aft_study.py`: what each trains, from where, with which AdvTrainingArguments, at which budget.

A row's budget is a fraction of (a)'s adversarial forward+backward passes, A = n_train x at_epochs x k (PGD-k). A row
attacking with p passes per example (k for PGD-k, 1 for FGSM-RS and N-FGSM) trains `fraction x at_epochs x k / p`
epochs, so the single-step rows buy k times the epochs for the same passes.
"""

from __future__ import annotations


# The AFT techniques: (label, technique overrides); an AFT row is a technique at a budget (`_aft`).
TECHNIQUES = {
    "ssfd": ("slow-start-fast-decay", {}),
    "constant": ("constant LR", {"lr_scheduler_type": "constant"}),
    "cosine": ("cosine LR", {"lr_scheduler_type": "cosine"}),
    "constant_warmup": ("constant LR, 10% warm-up",
                        {"lr_scheduler_type": "constant_with_warmup", "warmup_steps": 0.1}),
    "delay": ("ssfd + delayed eps ramp",
              {"adv_epsilon_schedule": "linear", "adv_epsilon_delay_ratio": 0.2, "adv_epsilon_warmup_ratio": 0.5}),
    "nfgsm": ("N-FGSM (k x epochs)", {"adv_attack": "n_fgsm"}),
    "nfgsm_constant": ("N-FGSM, constant LR (k x epochs)", {"adv_attack": "n_fgsm", "lr_scheduler_type": "constant"}),
    "nfgsm_cosine": ("N-FGSM, cosine LR (k x epochs)", {"adv_attack": "n_fgsm", "lr_scheduler_type": "cosine"}),
    "fgsm_rs": ("FGSM-RS (k x epochs)", {"adv_attack": "fgsm_rs"}),
    "trades": ("TRADES (beta 6)", {"adv_objective": "trades"}),
    "mart": ("MART (beta 6)", {"adv_objective": "mart"}),
    "ema": ("weight EMA", {"adv_ema_decay": 0.99}),
    "awp": ("AWP (gamma 5e-3)", {"adv_awp_gamma": 5e-3}),
    "lora": ("LoRA (peft, r 8)", {"lora": True}),
}
# budget tag of the key (aft4_*): (fraction of A, as the label writes it)
BUDGETS = {"8": (1 / 8, "1/8"), "4": (1 / 4, "1/4"), "2": (1 / 2, "1/2"), "34": (3 / 4, "3/4"), "1": (1.0, "1x"),
           "2x": (2.0, "2x")}
# the techniques run at the budgets, 1/8 and 1/4 of PGD-AT's plateau (4A): A/2 and A (and at A/4)
SWEPT = ("constant", "cosine", "delay", "fgsm_rs", "trades", "mart", "ema", "awp", "lora")


def _aft(budget: str, technique: str) -> tuple:
    """The ROWS entry of AFT with `technique` at the budget tagged `budget`."""
    fraction, written = BUDGETS[budget]
    label, tech = TECHNIQUES[technique]
    return (f"AFT {written}, {label}", "clean", fraction, dict(tech))


# key: (label, start, budget fraction of A or None for clean training, technique overrides)
#   start: "random" (random init), "imagenet" (the converted ImageNet weights), "clean" (the clean fine-tuned model)
ROWS = {
    "clean": ("clean fine-tuning of the ImageNet weights (start of every AFT row)", "imagenet", None, {}),
    "a": ("(a) PGD-AT from random init, full budget", "random", 1.0, {"at": True}),
    "aft4_ssfd": _aft("4", "ssfd"),
    "e": ("(e) PGD-AT from the ImageNet weights, 1/4 budget", "imagenet", 1 / 4, {"at": True}),
    "a_short": ("(a') PGD-AT from random init, 1/4 budget", "random", 1 / 4, {"at": True}),
    "aft8_ssfd": _aft("8", "ssfd"),
    **{f"aft4_{t}": _aft("4", t) for t in ("constant", "cosine", "delay", "nfgsm", "fgsm_rs", "trades", "mart", "ema",
                                          "awp", "lora")},
    # settings checks (what made the first try fail): BatchNorm statistics left live, and the AFT learning rate
    "aft4_bn_live": ("AFT 1/4, ssfd, BatchNorm stats NOT frozen", "clean", 1 / 4, {"adv_freeze_bn": False}),
    "aft4_lr_low": ("AFT 1/4, ssfd, LR / 3", "clean", 1 / 4, {"lr_factor": 1 / 3}),
    "aft4_lr_high": ("AFT 1/4, ssfd, LR x 3", "clean", 1 / 4, {"lr_factor": 3.0}),
    "aft8_constant": _aft("8", "constant"),
    "aft8_cosine": _aft("8", "cosine"),
    "aft8_nfgsm": _aft("8", "nfgsm"),
    "aft8_trades": _aft("8", "trades"),
    # above the target's budget: where (if anywhere) AFT meets (a), which gives the best ratio found, and (a2x)
    "aft2_ssfd": _aft("2", "ssfd"),
    "aft2_nfgsm": _aft("2", "nfgsm"),
    "aft34_nfgsm": _aft("34", "nfgsm"),
    "aft1_nfgsm": _aft("1", "nfgsm"),
    "aft2x_nfgsm": _aft("2x", "nfgsm"),
    # the techniques at 1/4 of PGD-AT's plateau (4A, a_long4), the target budget: A
    "aft1_ssfd": _aft("1", "ssfd"),
    **{f"aft1_{t}": _aft("1", t) for t in SWEPT},
    # N-FGSM (the best technique at A) with the two schedules that beat slow-start-fast-decay with PGD-3 at A on seed 0
    "aft1_nfgsm_constant": _aft("1", "nfgsm_constant"),
    "aft1_nfgsm_cosine": _aft("1", "nfgsm_cosine"),
    # constant LR after a short linear warm-up: do the seed-1 collapses without a slow start need its length?
    "aft1_constant_warmup": _aft("1", "constant_warmup"),
    # ... and at 1/8 of it, A/2 (aft2_ssfd and aft2_nfgsm above)
    **{f"aft2_{t}": _aft("2", t) for t in SWEPT},
    # robust early stopping (Rice et al. 2020): PGD accuracy on held-out training images every --es_eval_epochs, the
    # best checkpoint kept, stopped after --es_patience evaluations without a better one (the budget is a ceiling)
    "aft2x_nfgsm_es": ("AFT 2x, N-FGSM, robust early stopping", "clean", 2.0,
                       {"adv_attack": "n_fgsm", "early_stop": True}),
    # (a)'s budget curve: is A where PGD-AT from random init plateaus? (with a_short8 and a_short: 1/8 to 8x)
    "a_half": ("(a/2) PGD-AT from random init, 1/2 budget", "random", 1 / 2, {"at": True}),
    "a_long": ("(a2x) PGD-AT from random init, 2x budget", "random", 2.0, {"at": True}),
    "a_long4": ("(a4x) PGD-AT from random init, 4x budget", "random", 4.0, {"at": True}),
    "a_long8": ("(a8x) PGD-AT from random init, 8x budget", "random", 8.0, {"at": True}),
    # the other baselines at the smaller AFT budget too
    "a_short8": ("(a') PGD-AT from random init, 1/8 budget", "random", 1 / 8, {"at": True}),
    "e8": ("(e) PGD-AT from the ImageNet weights, 1/8 budget", "imagenet", 1 / 8, {"at": True}),
    # ... and at the AFT budgets, 1/8 and 1/4 of PGD-AT's plateau (4A)
    "e_half": ("(e) PGD-AT from the ImageNet weights, 1/2 budget", "imagenet", 1 / 2, {"at": True}),
    "e_full": ("(e) PGD-AT from the ImageNet weights, full budget", "imagenet", 1.0, {"at": True}),
}
# Most important first: the baselines the verdict needs, the main AFT row, then the techniques.
DEFAULT_ROWS = ("clean", "a", "e", "a_short", "aft4_ssfd", "aft8_ssfd", "aft4_bn_live", "aft4_lr_low", "aft4_lr_high",
                "aft4_constant", "aft4_cosine", "aft4_delay", "aft4_nfgsm", "aft4_trades", "aft4_mart", "aft4_fgsm_rs",
                "aft4_ema", "aft4_awp", "aft4_lora")
SINGLE_STEP = ("fgsm_rs", "n_fgsm")
# LoRA: the 1x1 (pointwise) convolutions and the classifier; the head is new, so it trains fully.
LORA_TARGETS = r".*(conv_pw|conv_pwl|conv_head)$"


def row_spec(key: str, opts) -> dict:
    """What `aft_study.train` needs for the row `key`: start, epochs, TrainingArguments and AdvTrainingArguments."""
    import dataclasses

    from transformers import TrainingArguments

    if key not in ROWS:
        raise ValueError(f"Unknown row {key!r}: the rows are {list(ROWS)}.")
    label, start, fraction, tech = ROWS[key]
    tech = dict(tech)
    if fraction is None:  # clean fine-tuning
        return {"key": key, "label": label, "start": start, "adversarial": False, "epochs": opts.clean_epochs,
                "train_args": {"learning_rate": opts.clean_lr, "optim": "adamw_torch", "lr_scheduler_type": "cosine",
                               "warmup_steps": 0.1, "weight_decay": opts.weight_decay}}
    at = tech.pop("at", False)
    early_stop = tech.pop("early_stop", False)
    lora = tech.pop("lora", False)
    lr_factor = tech.pop("lr_factor", 1.0)
    attack = tech.get("adv_attack", "pgd")
    passes_per_example = 1 if attack in SINGLE_STEP else opts.train_steps
    epochs = fraction * opts.at_epochs * opts.train_steps / passes_per_example
    k = passes_per_example
    adv_args = {"adv_steps": k, "adv_step_size": min(2.5 * opts.epsilon / k, opts.epsilon)}
    if at:  # PGD-AT: its own optimizer and schedule, BatchNorm as usual
        train_args = {"learning_rate": opts.at_lr, "optim": "adamw_torch", "lr_scheduler_type": "cosine",
                      "warmup_steps": 0.1, "weight_decay": opts.weight_decay}
        if opts.at_epsilon_ramp > 0:  # from random init, full eps from step 0 stalls at chance (the first try)
            adv_args.update(adv_epsilon_schedule="linear", adv_epsilon_warmup_ratio=opts.at_epsilon_ramp)
    else:  # AFT from the clean model
        train_args = {"learning_rate": opts.aft_lr * lr_factor * (opts.lora_lr_factor if lora else 1), "optim": "adamw_torch",
                      "lr_scheduler_type": "slow_start_fast_decay", "weight_decay": opts.weight_decay}
        adv_args["adv_freeze_bn"] = bool(opts.aft_freeze_bn)
        if opts.aft_epsilon_ramp:
            adv_args.update(adv_epsilon_schedule="linear", adv_epsilon_warmup_ratio=0.3)
    train_fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    for name, value in tech.items():  # a TrainingArguments field (schedule, warm-up) or an AdvTrainingArguments one
        (train_args if name in train_fields else adv_args)[name] = value
    if attack in SINGLE_STEP:
        adv_args.pop("adv_step_size")  # the attack sets its own step (1.25 eps for FGSM-RS, eps for N-FGSM)
    if early_stop:  # the held-out images are attacked by AdvTrainer's eval PGD (adv_eval_steps)
        adv_args["adv_eval_steps"] = opts.es_eval_steps
    return {"key": key, "label": label, "start": start, "adversarial": True, "epochs": epochs, "fraction": fraction,
            "lora": lora, "early_stop": early_stop, "train_args": train_args, "adv_args": adv_args}


def missing_options(spec: dict) -> list[str]:
    """The AdvTrainingArguments fields (or packages) this row needs that this hf_advft does not have."""
    import dataclasses
    import importlib.util

    from hf_advft import AdvTrainingArguments

    fields = {f.name for f in dataclasses.fields(AdvTrainingArguments)}
    missing = [name for name in spec.get("adv_args", {}) if name not in fields]
    if spec.get("lora") and importlib.util.find_spec("peft") is None:
        missing.append("peft (pip install peft)")
    return missing
