import logging
import sys
import warnings

import pytest
import torch
from conftest import DictDataset, SmallCNN, tiny_timm, tiny_vit

from hf_advft import AdvTrainer, AdvTrainingArguments
from hf_advft.evaluation import (
    KNOWN_ATTACKS,
    GradientMaskingWarning,
    RobustEvalConfig,
    RobustnessResult,
    evaluate_robustness,
    expected_robustness,
    plot_robustness_curve,
)


# On the clean-trained digits CNN, PGD-20 leaves ~3% at eps=0.1 and ~50% at eps=0.05 (32 held-out examples).
FAST = dict(pgd_steps=10, check_steps_factor=2)


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny tensors: one thread is as fast, and it keeps AutoAttack's many small ops from crawling when the 2 cores
    # are oversubscribed (we measured 30x slow-downs with 2 threads under load).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _held_out(digits16, n=32):
    x, y = digits16
    return x[-n:], y[-n:]


class Quantized(torch.nn.Module):
    """Gradient masking by construction: `round` is flat almost everywhere, so input gradients are exactly zero."""

    def __init__(self, model, levels=255):
        super().__init__()
        self.model, self.levels = model, levels

    def forward(self, x):
        return self.model(torch.round(x * self.levels) / self.levels)


def test_autoattack_le_pgd_le_clean_and_only_correct_points_attacked(trained_cnn, digits16):
    x, y = _held_out(digits16)
    r = evaluate_robustness(trained_cnn, (x, y), epsilon=0.1, attacks=("pgd", "autoattack"), **FAST)
    with torch.no_grad():
        clean = (trained_cnn(x).argmax(-1) == y).float().mean().item()
    assert r.clean_accuracy == pytest.approx(clean)
    assert r.autoattack_accuracy <= r.pgd_accuracy <= r.clean_accuracy
    assert r.pgd_accuracy < r.clean_accuracy  # a non-robust model really is broken
    assert r.robust_accuracy == pytest.approx(min(r.autoattack_accuracy, r.pgd_accuracy), abs=1 / 32)
    trace = list(r.autoattack_trace.values())
    assert list(r.autoattack_trace) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert all(b <= a for a, b in zip([r.clean_accuracy, *trace], trace)) and trace[-1] == r.autoattack_accuracy
    # Every successful adversarial example lies in the ball.
    assert 0 < r.max_perturbation["pgd"] <= 0.1 + 1e-6 and r.max_perturbation["autoattack"] <= 0.1 + 1e-6
    assert (r.n_examples, r.epsilon, r.norm, r.seed, r.pgd_steps, r.pgd_restarts) == (32, 0.1, "linf", 0, 10, 1)
    assert r.pgd_step_size == pytest.approx(2.5 * 0.1 / 10) and r.wall_time_s > 0


@pytest.mark.slow
def test_full_standard_autoattack_where_points_survive(trained_cnn, digits16):
    x, y = _held_out(digits16)
    r = evaluate_robustness(trained_cnn, (x, y), epsilon=0.08, attacks="pgd,autoattack", show_progress=True,
                            **FAST)
    assert r.autoattack_accuracy <= r.pgd_accuracy <= r.clean_accuracy
    assert r.autoattack_accuracy > 0  # some points survive, so all four components really ran
    assert all(r.attack_time_s[f"autoattack/{name}"] > 0 for name in ("apgd-ce", "apgd-t", "fab-t", "square"))
    assert not r.masking_suspected, r.checks


def test_curve_does_not_rise_and_expected_robustness(trained_cnn, digits16):
    x, y = _held_out(digits16)
    grid = (0.0, 0.02, 0.05, 0.1, 0.2)
    r = evaluate_robustness(trained_cnn, (x, y), epsilon=0.05, attacks="pgd", curve_epsilons=grid, **FAST)
    assert r.curve_epsilons == list(grid)
    acc = r.curve_accuracy
    assert acc[0] == r.clean_accuracy and acc[2] == r.pgd_accuracy
    assert all(b <= a for a, b in zip(acc, acc[1:])), acc
    assert acc[-1] < acc[0]
    manual = sum((e1 - e0) * (a0 + a1) / 2 for e0, e1, a0, a1 in zip(grid, grid[1:], acc, acc[1:])) / grid[-1]
    assert r.expected_robustness == pytest.approx(manual)
    assert acc[-1] <= r.expected_robustness <= acc[0]
    check = {c.name: c for c in r.checks}["accuracy_falls_with_epsilon"]
    assert check.passed is True


def test_pgd_early_stop_is_at_least_as_strong_and_cheaper(trained_cnn, digits16):
    from hf_advft.attacks import pgd

    x, y = _held_out(digits16)
    seen = []

    def counting(inputs):
        seen.append(inputs.shape[0])
        return trained_cnn(inputs)

    kw = dict(epsilon=0.05, step_size=0.0125, steps=10)
    full = pgd(trained_cnn, x, y, generator=torch.Generator().manual_seed(0), **kw)
    early = pgd(counting, x, y, generator=torch.Generator().manual_seed(0), early_stop=True, **kw)
    assert (early - x).abs().max() <= 0.05 + 1e-6 and early.min() >= 0 and early.max() <= 1
    with torch.no_grad():
        fooled_full, fooled_early = trained_cnn(full).argmax(-1) != y, trained_cnn(early).argmax(-1) != y
    # Same random start and steps: an example the last iterate fools was fooled at some iterate, where early stopping
    # kept it; the others followed the same trajectory (up to float round-off across batch sizes).
    assert fooled_early.sum() >= fooled_full.sum() > 0
    # Ten forward+backward passes on the examples still correct, then one forward that scores their last iterate.
    assert len(seen) == 11 and sum(seen) < 11 * 32 and seen == sorted(seen, reverse=True)
    with pytest.raises(ValueError, match="restarts=1"):
        pgd(trained_cnn, x, y, restarts=2, early_stop=True, **kw)


def test_expected_robustness_values():
    assert expected_robustness([0, 0.5, 1.0], [1.0, 0.5, 0.0]) == pytest.approx(0.5)
    assert expected_robustness([0.0, 0.1], [0.8, 0.8]) == pytest.approx(0.8)  # a flat curve: the clean accuracy
    with pytest.raises(ValueError, match="epsilon=0"):
        expected_robustness([0.1, 0.2], [0.5, 0.4])


def test_masking_check_fires_on_quantized_model(trained_cnn, digits16):
    x, y = _held_out(digits16)
    masked = Quantized(trained_cnn)
    with pytest.warns(GradientMaskingWarning, match="black_box_not_stronger_than_white_box"):
        r = evaluate_robustness(masked, (x, y), epsilon=0.1, attacks="pgd,square", square_queries=200, **FAST)
    assert r.pgd_accuracy == r.clean_accuracy  # zero input gradients: PGD stalls at its random start
    assert r.attack_accuracy["square"] < r.pgd_accuracy - 0.2  # the black-box attack does not care
    failed = {c.name for c in r.failed_checks}
    assert {"black_box_not_stronger_than_white_box", "near_zero_at_large_epsilon"} <= failed
    assert r.masking_suspected and r.robust_accuracy == r.attack_accuracy["square"]


def test_masking_checks_quiet_on_ordinary_model(trained_cnn, digits16):
    x, y = _held_out(digits16)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientMaskingWarning)
        r = evaluate_robustness(trained_cnn, (x, y), epsilon=0.1, attacks="pgd,square", square_queries=200, **FAST)
    assert [c.passed for c in r.checks] == [True] * 4, r.checks
    assert {c.name for c in r.checks} == {"accuracy_falls_with_epsilon", "near_zero_at_large_epsilon",
                                          "more_steps_do_not_help_the_model", "black_box_not_stronger_than_white_box"}
    assert not r.masking_suspected


def test_json_round_trip_and_png(tmp_path, trained_cnn, digits16):
    x, y = _held_out(digits16, 16)
    r = evaluate_robustness(trained_cnn, (x, y), epsilon=0.05, attacks="pgd,square", square_queries=50, **FAST)
    path = tmp_path / "robustness.json"
    text = r.to_json(path)
    assert RobustnessResult.from_json(path) == r
    assert RobustnessResult.from_json(text) == r
    assert RobustnessResult.from_json(text).checks[0].name == r.checks[0].name
    png = plot_robustness_curve(r, tmp_path / "robustness.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(png) as image:
        image.verify()
        assert image.format == "PNG" and image.size[0] > 100
    assert "| clean |" in r.summary() and "expected robustness" in r.summary()


def test_data_forms_agree(trained_cnn, digits16):
    x, y = _held_out(digits16, 24)
    kw = dict(epsilon=0.05, attacks="pgd", masking_checks=False, curve_epsilons=(), batch_size=8, pgd_steps=5)
    from_tensors = evaluate_robustness(trained_cnn, (x, y), **kw)
    from_dataset = evaluate_robustness(trained_cnn, DictDataset(x, y), **kw)
    loader = torch.utils.data.DataLoader(DictDataset(x, y), batch_size=10)
    from_loader = evaluate_robustness(trained_cnn, loader, **kw)
    pairs = [(x[i], int(y[i])) for i in range(len(y))]
    from_pairs = evaluate_robustness(trained_cnn, pairs, **kw)
    for other in (from_dataset, from_loader, from_pairs):
        assert (other.clean_accuracy, other.pgd_accuracy) == (from_tensors.clean_accuracy, from_tensors.pgd_accuracy)
    assert from_tensors.curve_epsilons == [] and from_tensors.expected_robustness is None


def test_transformers_model_with_normalized_inputs(digits16):
    from transformers import ViTImageProcessor

    processor = ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    x, y = _held_out(digits16, 8)
    model = tiny_vit()
    eps = 8 / 255
    r = evaluate_robustness(model, ((x - 0.5) / 0.5, y), processor=processor, epsilon=eps, attacks="pgd",
                            pgd_steps=3, check_steps_factor=2, curve_epsilons=(0, eps))
    assert r.normalization == "ViTImageProcessor"
    # epsilon is in pixel units, not in the normalized units (where the ball would be twice as large)
    assert r.max_perturbation["pgd"] <= eps + 1e-6
    with pytest.raises(ValueError, match="mean=.*std=.*processor="):
        evaluate_robustness(model, ((x - 0.5) / 0.5, y), epsilon=eps, attacks="pgd")


def test_timm_model_normalization_from_pretrained_cfg(digits16):
    model = tiny_timm()
    mean, std = torch.tensor(model.pretrained_cfg["mean"]), torch.tensor(model.pretrained_cfg["std"])
    x, y = _held_out(digits16, 8)
    r = evaluate_robustness(model, ((x - mean.view(3, 1, 1)) / std.view(3, 1, 1), y), epsilon=8 / 255,
                            attacks="pgd", pgd_steps=2, masking_checks=False, curve_epsilons=())
    assert r.normalization == "timm pretrained_cfg" and 0 <= r.pgd_accuracy <= r.clean_accuracy


def test_model_in_train_mode_is_evaluated_in_eval_mode_and_restored(trained_cnn, digits16):
    x, y = _held_out(digits16, 16)
    model = torch.nn.Sequential(trained_cnn.features, torch.nn.Dropout(0.9), trained_cnn.head)
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    kw = dict(epsilon=0.05, attacks="pgd", pgd_steps=5, masking_checks=False, curve_epsilons=())
    in_train_mode = evaluate_robustness(model, (x, y), **kw)
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all((g is None and p.grad is None) or torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))
    model.eval()
    in_eval_mode = evaluate_robustness(model, (x, y), **kw)
    # Dropout(0.9) in train mode would wreck the accuracy: equal numbers mean it was evaluated in eval mode.
    assert (in_train_mode.clean_accuracy, in_train_mode.pgd_accuracy) == (in_eval_mode.clean_accuracy,
                                                                          in_eval_mode.pgd_accuracy)
    assert any("train mode" in note for note in in_train_mode.notes)
    trained_cnn.eval()


def test_n_examples_larger_than_data_uses_all_and_says_so(trained_cnn, digits16, caplog):
    x, y = _held_out(digits16, 10)
    with caplog.at_level(logging.WARNING, logger="hf_advft.evaluation"):
        r = evaluate_robustness(trained_cnn, DictDataset(x, y), epsilon=0.05, attacks="pgd", n_examples=500,
                                masking_checks=False, curve_epsilons=(), pgd_steps=2)
    assert r.n_examples == 10
    assert "n_examples=500 but the data holds 10" in caplog.text
    assert any("evaluating all 10" in note for note in r.notes)
    assert evaluate_robustness(trained_cnn, (x, y), epsilon=0.05, attacks="pgd", n_examples=4, masking_checks=False,
                               curve_epsilons=(), pgd_steps=2).n_examples == 4


@pytest.mark.parametrize("bad, match", [
    (dict(epsilon=8), r"write 8/255"),
    (dict(attacks="pgd,cw"), r"'cw'.*" + str(KNOWN_ATTACKS).replace("(", r"\(").replace(")", r"\)")),
    (dict(attacks=()), r"use one or more of"),
    (dict(norm="l1"), r"norm='l1' is unknown"),
    (dict(autoattack_version="fast"), r"one of \('standard'"),
    (dict(n_examples=0), r"n_examples must be >= 1"),
    (dict(pgd_steps=0), r"pgd_steps must be an integer >= 1"),
    (dict(pgd_restarts=0), r"restarts must be an integer >= 1"),
    (dict(curve_epsilons=(0, 2)), r"curve_epsilons must lie in \[0, 1\]"),
])
def test_bad_settings(bad, match, trained_cnn, digits16):
    with pytest.raises(ValueError, match=match):
        evaluate_robustness(trained_cnn, _held_out(digits16, 4), **bad)


def test_unknown_setting_lists_the_fields(trained_cnn, digits16):
    with pytest.raises(TypeError, match="RobustEvalConfig fields: epsilon, norm, attacks"):
        evaluate_robustness(trained_cnn, _held_out(digits16, 4), epsilons=0.1)


@pytest.mark.parametrize("attacks", ["autoattack", "square"])
def test_autoattack_without_the_extra(monkeypatch, trained_cnn, digits16, attacks):
    monkeypatch.setitem(sys.modules, "pyautoattack", None)  # what a missing package looks like to `import`
    with pytest.raises(ImportError, match=r'pip install "hf-advft\[autoattack\]"'):
        evaluate_robustness(trained_cnn, _held_out(digits16, 4), attacks=attacks)
    assert evaluate_robustness(trained_cnn, _held_out(digits16, 4), attacks="pgd", pgd_steps=2,
                               masking_checks=False).pgd_accuracy is not None


def test_autoattack_leaves_global_rng_alone(trained_cnn, digits16):
    state = torch.get_rng_state()
    evaluate_robustness(trained_cnn, _held_out(digits16, 8), epsilon=0.1, attacks="autoattack", masking_checks=False,
                        curve_epsilons=(), pgd_steps=2)
    assert torch.equal(state, torch.get_rng_state())


def test_config_parses_comma_separated_attacks_and_scales_explicit_step():
    config = RobustEvalConfig(epsilon=0.1, attacks="PGD, square", pgd_step_size=0.02)
    assert config.attacks == ("pgd", "square")
    assert config.resolved_step_size(0.2) == pytest.approx(0.04)
    assert RobustEvalConfig(epsilon=0.1).grid() == pytest.approx((0, 0.025, 0.05, 0.1, 0.15, 0.2))


# ----------------------------------------------------------------------------------------------------------------
# AdvTrainer: AutoAttack at the end of train()
def _trainer_args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=32, per_device_eval_batch_size=32,
                num_train_epochs=1, learning_rate=1e-3, adv_steps=2, adv_eval_steps=0, save_strategy="no",
                report_to="none", use_cpu=True, seed=0, disable_tqdm=True, adv_epsilon=0.1, adv_step_size=0.05)
    base.update(kw)
    return AdvTrainingArguments(**base)


def test_trainer_reports_eval_autoattack_accuracy(tmp_path, digits16):
    x, y = digits16
    model = SmallCNN()
    trainer = AdvTrainer(model=model, args=_trainer_args(tmp_path, adv_autoattack_examples=12),
                         train_dataset=DictDataset(x[:64], y[:64]), eval_dataset=DictDataset(x[-40:], y[-40:]))
    output = trainer.train()
    m = output.metrics
    assert m["eval_autoattack_examples"] == 12
    assert 0 <= m["eval_autoattack_accuracy"] <= m["eval_autoattack_clean_accuracy"] <= 1
    assert any("eval_autoattack_accuracy" in h for h in trainer.state.log_history)
    saved = RobustnessResult.from_json(tmp_path / "out" / "robustness.json")
    assert saved.autoattack_accuracy == m["eval_autoattack_accuracy"] and saved.n_examples == 12
    assert saved.epsilon == 0.1 and saved.attack_accuracy == {"autoattack": saved.autoattack_accuracy}


def test_trainer_autoattack_option_validated(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="adv_autoattack_examples must be an integer >= 0"):
        _trainer_args(tmp_path, adv_autoattack_examples=-1)
    monkeypatch.setitem(sys.modules, "pyautoattack", None)
    with pytest.raises(ImportError, match="autoattack"):
        _trainer_args(tmp_path, adv_autoattack_examples=8)
    assert _trainer_args(tmp_path).adv_autoattack_examples == 0  # off by default, no extra needed


def test_autoattack_components_runs_only_the_white_box_part(trained_cnn, digits16):
    x, y = _held_out(digits16)
    r = evaluate_robustness(trained_cnn, (x, y), epsilon=0.08, attacks="autoattack",
                            autoattack_components="apgd-ce,apgd-t", masking_checks=False, curve_epsilons=())
    assert list(r.autoattack_trace) == ["apgd-ce", "apgd-t"]  # FAB-T and Square did not run
    ran = {k for k in r.attack_time_s if k.startswith("autoattack/")}
    assert ran == {"autoattack/apgd-ce", "autoattack/apgd-t"}
    assert r.autoattack_accuracy == r.autoattack_trace["apgd-t"] <= r.clean_accuracy
    assert r.config["autoattack_components"] == ["apgd-ce", "apgd-t"]
    with pytest.raises(ValueError, match="apgd-ce,apgd-t"):
        RobustEvalConfig(autoattack_components="apgd-x")
