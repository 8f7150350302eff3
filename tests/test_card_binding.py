"""Every number a card states is bound to the weights beside it (issue 11, "the card and the weights")."""

import inspect
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import yaml
from conftest import DictDataset, SmallCNN, tiny_vit
from huggingface_hub import ModelCard
from transformers import EarlyStoppingCallback

from hf_advft import AdvTrainer, AdvTrainingArguments, load_robust_model, save_robust_model
from hf_advft.cli import main as cli_main
from hf_advft.evaluation import compute_accuracy, evaluate_robustness
from hf_advft.model_card import evaluation_from_logs, render_model_card
from hf_advft.schedules import get_slow_start_fast_decay_schedule
from hf_advft.weights_hash import folder_weights_sha256, model_weights_sha256


ROOT = Path(__file__).resolve().parents[1]
EPS = 8 / 255


# Tiny models: one intra-op thread (conftest's `one_thread`) is as fast and immune to oversubscribed cores.
pytestmark = pytest.mark.usefixtures("one_thread")


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=16, per_device_eval_batch_size=16,
                learning_rate=1e-3, lr_scheduler_type="slow_start_fast_decay", adv_steps=1, adv_eval_steps=2,
                logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, seed=0, disable_tqdm=True)
    base.update(kw)
    return AdvTrainingArguments(**base)


def _card(folder) -> ModelCard:
    return ModelCard.load(Path(folder) / "README.md")


# ----------------------------------------------------------------------------------------------------------------------
# 1. The best model: its step, its numbers, its AutoAttack
@pytest.mark.slow
@pytest.mark.parametrize("patience", [2, None], ids=["early_stopping", "runs_to_the_end"])
def test_best_model_card_states_the_best_steps_numbers_and_its_autoattack(tmp_path, digits16, patience,
                                                                         monkeypatch):
    from pyautoattack import AutoAttack

    import hf_advft.evaluation_utils as evaluation_utils

    class QuickAutoAttack(AutoAttack):  # this test checks which weights and components are reported, not strength
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.apgd.n_iter = self.apgd_targeted.n_iter = self.fab.n_iter = 5
            self.square.n_queries = 20

    monkeypatch.setattr(evaluation_utils, "import_autoattack", lambda: QuickAutoAttack)
    x, y = digits16
    y = y % 3  # three classes: AutoAttack's APGD-T cannot run, and the card must not claim it did
    scores = iter([0.9, 0.5, 0.4, 0.3])  # the best checkpoint is step 1, never the last one

    def metrics(pred):
        return {**compute_accuracy(pred), "score": next(scores)}

    args = _args(tmp_path, max_steps=4, eval_strategy="steps", eval_steps=1, save_strategy="steps", save_steps=1,
                 load_best_model_at_end=True, metric_for_best_model="score", greater_is_better=True,
                 adv_autoattack_examples=4)
    callbacks = [EarlyStoppingCallback(early_stopping_patience=patience)] if patience else []
    trainer = AdvTrainer(model=SmallCNN(num_classes=3), args=args, train_dataset=DictDataset(x[:64], y[:64]),
                         eval_dataset=DictDataset(x[-16:], y[-16:]), compute_metrics=metrics, callbacks=callbacks)
    trainer.train()
    history = trainer.state.log_history
    autoattack = next(h for h in history if "eval_autoattack_accuracy" in h)
    assert autoattack["step"] == 1  # measured on the loaded best weights, logged under their step
    assert trainer.state.global_step == (3 if patience else 4) and trainer.weights_step == 1
    best_eval = next(h for h in history if h.get("step") == 1 and "eval_accuracy" in h)
    out = Path(args.output_dir)
    # The AutoAttack measured the very bytes of checkpoint-1.
    assert autoattack["weights_sha256"] == best_eval["weights_sha256"] == folder_weights_sha256(out / "checkpoint-1")

    trainer.save_model()
    results = json.loads((out / "adv_results.json").read_text())
    assert results["step"] == 1 and results["training"]["steps"] == 1
    assert results["weights_sha256"] == results["evaluation"]["weights_sha256"] == best_eval["weights_sha256"]
    card = _card(out)
    values = [(r.metric_name, r.metric_value) for r in card.data.eval_results]
    assert values[0] == ("Clean accuracy", round(best_eval["eval_accuracy"], 6))
    assert values[1][1] == round(best_eval["eval_robust_accuracy"], 6)
    assert values[2][0].startswith("AutoAttack") and values[2][1] == round(autoattack["eval_autoattack_accuracy"], 6)
    row = next(line for line in card.text.splitlines() if line.startswith("| AutoAttack"))
    assert "APGD-CE" in row and "APGD-T" not in row and "| Optimizer steps | 1 |" in card.text


# ----------------------------------------------------------------------------------------------------------------------
# 2. Numbers are bound to the bytes they measured
def test_stale_numbers_are_left_out_of_every_card(tmp_path, digits16, capsys):
    x, y = digits16
    torch.manual_seed(0)
    model = SmallCNN().eval()
    result = evaluate_robustness(model, (x[:16], y[:16]), epsilon=EPS, attacks="pgd", pgd_steps=2,
                                 curve_epsilons=(), masking_checks=False)
    assert result.weights_sha256 == model_weights_sha256(model)
    adv = {"adv_epsilon": EPS, "adv_norm": "linf"}
    fresh = save_robust_model(model, tmp_path / "fresh", adv_config=adv, evaluation=result)
    assert len(_card(fresh).data.eval_results) == 2 and "Left out" not in _card(fresh).text
    assert result.weights_sha256[:12] in _card(fresh).text

    with torch.no_grad():
        model.head.bias.add_(0.01)  # the weights change after the evaluation
    stale = save_robust_model(model, tmp_path / "stale", adv_config=adv, evaluation=result)
    card = _card(stale)
    assert card.data.eval_results is None and "| PGD-2 |" not in card.text
    assert "**Left out:** An evaluation recorded in adv_results.json measured other weights" in card.text
    assert "**no**: no evaluation of these weights is recorded" in card.text

    # A folder whose weights are replaced after the save: `hf-advft card` checks them again.
    safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                                str(fresh / "model.safetensors"))
    assert cli_main(["card", str(fresh)]) == 0
    text = capsys.readouterr().out
    assert "**Left out:**" in text and "| PGD-2 |" not in text


def test_trainer_card_drops_an_evaluation_of_weights_changed_since(tmp_path, digits16):
    x, y = digits16
    trainer = AdvTrainer(model=SmallCNN(), args=_args(tmp_path, max_steps=1),
                         train_dataset=DictDataset(x[:16], y[:16]), eval_dataset=DictDataset(x[-16:], y[-16:]))
    trainer.train()
    trainer.evaluate()
    trainer.save_model()
    assert len(_card(trainer.args.output_dir).data.eval_results) == 2
    with torch.no_grad():
        trainer.model.head.weight.mul_(1.5)  # same step, other weights
    trainer.save_model()
    card = _card(trainer.args.output_dir)
    assert card.data.eval_results is None and "**Left out:**" in card.text


# ----------------------------------------------------------------------------------------------------------------------
# 3 and 12. Recipes save after their final evaluation and record their eval examples; `hf-advft evaluate` reuses them
def test_recipe_card_states_the_printed_numbers_and_evaluate_reuses_its_eval_examples(tmp_path, monkeypatch,
                                                                                     capsys):
    from transformers import ViTImageProcessor

    import hf_advft.evaluate_command as evaluate_command
    from hf_advft.script_utils import load_recipe_data, parse_recipe_args

    sys.path.insert(0, str(ROOT / "recipes"))
    import finetune_vit

    model_dir = tmp_path / "tiny_vit"
    tiny_vit(num_labels=10).save_pretrained(model_dir)
    ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3,
                      image_std=[0.5] * 3).save_pretrained(model_dir)
    out = tmp_path / "out"
    argv = ["--model_name_or_path", model_dir, "--dataset_name", "digits", "--max_train_samples", "32",
            "--max_eval_samples", "24", "--output_dir", out, "--num_train_epochs", "1",
            "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "24", "--adv_steps", "1",
            "--adv_eval_steps", "2", "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true",
            "--save_strategy", "no", "--seed", "7"]  # digits has no eval split: 10% of train held out with seed 7
    script_args, training_args = parse_recipe_args(finetune_vit.make_parser(), [str(a) for a in argv])
    metrics = finetune_vit.main(script_args, training_args)
    printed = capsys.readouterr().out
    card = _card(out)
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == {
        "accuracy": round(metrics["eval_accuracy"], 6), "robust_accuracy": round(metrics["eval_robust_accuracy"], 6)}
    assert f"robust accuracy  {metrics['eval_robust_accuracy']:.4f}" in printed
    recorded = json.loads((out / "adv_results.json").read_text())["eval_data"]
    assert recorded["seed"] == 7 and recorded["validation_split_percentage"] == 10

    expected = load_recipe_data(script_args, training_args).eval
    seen = []
    real = evaluate_command.evaluate_robustness

    def capture(model, data, *a, **kw):
        seen.append(data)
        return real(model, data, *a, **kw)

    monkeypatch.setattr(evaluate_command, "evaluate_robustness", capture)
    quick = ["--attack", "pgd", "--pgd_steps", "1", "--curve_epsilons", "", "--masking_checks", "false",
             "--no_progress", "--output_dir", str(tmp_path / "eval")]
    assert cli_main(["evaluate", str(out), "--dataset", "digits", *quick]) == 0
    assert cli_main(["evaluate", str(out), *quick]) == 0  # the dataset itself comes from the checkpoint
    for data in seen:
        raw = data.with_format(None)
        assert raw["labels"] == expected["labels"]
        assert all(np.array_equal(np.asarray(a), np.asarray(b))
                   for a, b in zip(raw["pixel_values"], expected["pixel_values"]))
    notes = json.loads((tmp_path / "eval" / "robustness.json").read_text())["notes"]
    assert any("recorded at training, seed 7" in note for note in notes)


def test_load_reuses_the_normalization_resolved_at_save_time(tmp_path):
    from transformers import ViTImageProcessor

    processor = ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.25] * 3)
    save_robust_model(SmallCNN(), tmp_path / "cnn", processor=processor, adv_config={"adv_epsilon": EPS})
    robust = load_robust_model(str(tmp_path / "cnn"), model=SmallCNN())
    assert robust.pixel_space.mean == (0.5,) * 3 and robust.pixel_space.std == (0.25,) * 3
    assert "adv_results.json" in robust.pixel_space.source


# ----------------------------------------------------------------------------------------------------------------------
# Smaller: what the card says ran
def test_card_states_a_warmup_ratio_and_the_autoattack_components_that_ran(tmp_path):
    args = _args(tmp_path)
    logs = [{"step": 5, "eval_accuracy": 0.8, "eval_examples": 10, "weights_sha256": "ab" * 32},
            {"step": 5, "eval_autoattack_accuracy": 0.4, "eval_autoattack_clean_accuracy": 0.8,
             "eval_autoattack_examples": 10, "eval_autoattack_after_apgd-ce": 0.5, "eval_autoattack_after_fab-t": 0.45,
             "eval_autoattack_after_square": 0.4, "weights_sha256": "ab" * 32}]
    record = evaluation_from_logs(logs, args, step=5)
    assert record.rows[-1].details.startswith("APGD-CE, FAB-T, Square on the first eval examples")
    assert record.weights_sha256 == "ab" * 32
    results = {"library": "torch", "training": {"warmup_steps": 0.1, "steps": 10}, "evaluation": record}
    adv = {**args.adv_config(), "lr_scheduler_type": "slow_start_fast_decay"}
    text = str(render_model_card(adv, results))
    assert "linear slow start over 10% of the steps" in text and "0.1 steps" not in text


def test_recipe_configs_use_the_measured_schedule_defaults():
    defaults = inspect.signature(get_slow_start_fast_decay_schedule).parameters
    for path in sorted((ROOT / "recipes" / "configs").glob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        if config.get("lr_scheduler_type") == "slow_start_fast_decay":
            kwargs = config.get("lr_scheduler_kwargs") or {}
            assert kwargs.get("min_lr_ratio", defaults["min_lr_ratio"].default) == defaults["min_lr_ratio"].default, \
                path.name


def test_transformers_is_bounded_to_the_tested_major_version():
    setup = (ROOT / "setup.py").read_text()
    spec = re.search(r'"transformers([^"]*)"', setup).group(1)
    import transformers

    assert "<6" in spec.replace(" ", "") and transformers.__version__.startswith("5.")


def test_evaluate_without_dataset_needs_a_recorded_one(tmp_path):
    tiny_vit().save_pretrained(tmp_path / "vit")
    with pytest.raises(SystemExit, match="records no eval dataset .* pass --dataset"):
        cli_main(["evaluate", str(tmp_path / "vit"), "--attack", "pgd"])
