"""The package's shape: small modules split along their seams, old import paths kept, one of each helper."""

import importlib
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
# Modules may grow to about this many lines (STYLE.md); data.py is being reworked on its own (issue 13).
MAX_LINES = 450
OVERSIZE_ALLOWED = {"data.py"}


def test_modules_stay_under_the_line_budget():
    sizes = {p.name: len(p.read_text().splitlines()) for p in (ROOT / "hf_advft").glob("*.py")}
    too_long = {name: n for name, n in sizes.items() if n > MAX_LINES and name not in OVERSIZE_ALLOWED}
    assert not too_long, f"split these modules along their seams: {too_long}"


# Every name the split modules offered before the split, still importable from the old module.
OLD_PATHS = {
    "hf_advft.evaluation": ["AUTOATTACK_VERSIONS", "KNOWN_ATTACKS", "ROBUSTNESS_JSON", "ROBUSTNESS_PNG",
                            "GradientMaskingWarning", "MaskingCheck", "RobustEvalConfig", "RobustnessResult",
                            "compute_accuracy", "evaluate_robustness", "expected_robustness",
                            "plot_robustness_curve"],
    "hf_advft.hub": ["CURVE_IMAGE_NAME", "GALLERY_IMAGE_NAME", "GENERATED_FILE_MARKER", "PUSH_IGNORE",
                     "PUSH_PATTERNS", "RobustModel", "base_model_of_adapter", "copy_card_files", "detect_library",
                     "folder_results", "is_adapter_model", "load_robust_model", "push_checkpoint",
                     "push_robust_model", "render_folder_card", "require_token", "save_robust_model",
                     "save_trainer_files"],
    "hf_advft.model_card": ["ADV_CONFIG_NAME", "ADV_RESULTS_NAME", "AUTOATTACK_AFTER", "CARD_FIELDS",
                            "MODEL_CARD_MARKER", "README_NAME", "autoattack_components", "base_model_of",
                            "card_results", "compute_from_logs", "evaluation_from_logs", "format_epsilon",
                            "hardware_name", "input_shape_of", "library_of", "render_model_card",
                            "summarize_evaluation", "template_path", "write_model_card"],
    "hf_advft.trainer": ["AdvTrainer", "RANGE_CHECK_STEPS"],
}


@pytest.mark.parametrize("module", sorted(OLD_PATHS))
def test_old_import_paths_still_work(module):
    mod = importlib.import_module(module)
    missing = [name for name in OLD_PATHS[module] if not hasattr(mod, name)]
    assert not missing, f"{module} lost {missing}"
    assert all(hasattr(mod, name) for name in getattr(mod, "__all__", []))


def test_trainer_methods_come_from_their_seams():
    from hf_advft import AdvTrainer
    from hf_advft.trainer_checkpoints import AdvCheckpointMixin
    from hf_advft.trainer_evaluation import AdvEvaluationMixin

    assert AdvTrainer.evaluation_loop is AdvEvaluationMixin.evaluation_loop
    assert AdvTrainer._save is AdvCheckpointMixin._save and AdvTrainer.train is AdvCheckpointMixin.train
    # The mixins come before Trainer, so their overrides win over transformers' methods.
    names = [cls.__name__ for cls in AdvTrainer.__mro__]
    assert names.index("AdvEvaluationMixin") < names.index("Trainer")
    assert names.index("AdvCheckpointMixin") < names.index("Trainer")


# ----------------------------------------------------------------------------------------------------------------------
# One of each helper. Each test fails if a second copy comes back or the callers' behaviour diverges.
LIBRARY_AND_SCRIPTS = [p for d in ("hf_advft", "benchmarks", "recipes") for p in (ROOT / d).glob("*.py")]


def _sources_containing(needle: str, allowed: set[str]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in LIBRARY_AND_SCRIPTS
            if needle in p.read_text() and str(p.relative_to(ROOT)) not in allowed]


def _timm_model(in_chans=3, mean=None):
    import timm

    model = timm.create_model("resnet10t", pretrained=False, num_classes=3, in_chans=in_chans)
    model.pretrained_cfg = {**model.pretrained_cfg, "mean": mean, "std": None if mean is None else (0.5,) * len(mean)}
    return model


def _config(folder: Path) -> dict:
    import json

    return json.loads((folder / "config.json").read_text())


def test_one_timm_config_writer_with_one_rule_for_no_normalization(tmp_path):
    from hf_advft import hub_save, save_robust_model
    from hf_advft.modeling import save_timm_config
    from hf_advft.pixel_space import PixelSpace

    # Only modeling.save_timm_config calls timm's writers (recipes/offline_weights.py exports timm's own checkpoint).
    assert _sources_containing("save_config_for_hf(", {"hf_advft/modeling.py"}) == []
    assert _sources_containing("import save_for_hf", {"recipes/offline_weights.py"}) == []
    assert hub_save.save_timm_config is save_timm_config
    # No normalization (the model takes pixels in [0, 1]): mean 0, std 1 for each of the model's channels, the same
    # from save_robust_model, from the trainer's writer (an explicit PixelSpace()) and from the default.
    gray = _timm_model(in_chans=1)
    save_robust_model(gray, tmp_path / "saved", adv_config={"adv_epsilon": 8 / 255})
    for name, space in (("explicit", PixelSpace()), ("default", None)):
        (tmp_path / name).mkdir()
        save_timm_config(gray, tmp_path / name, space)
    configs = [_config(tmp_path / name) for name in ("saved", "explicit", "default")]
    assert configs[0] == configs[1] == configs[2]
    assert configs[0]["pretrained_cfg"]["mean"] == [0.0] and configs[0]["pretrained_cfg"]["std"] == [1.0]
    # A normalization, given or the model's own, is what every path writes.
    rgb = _timm_model(mean=(0.25, 0.5, 0.75))
    save_robust_model(rgb, tmp_path / "rgb", adv_config={"adv_epsilon": 8 / 255})
    (tmp_path / "rgb_default").mkdir()
    save_timm_config(rgb, tmp_path / "rgb_default")
    assert _config(tmp_path / "rgb") == _config(tmp_path / "rgb_default")
    assert _config(tmp_path / "rgb")["pretrained_cfg"]["mean"] == [0.25, 0.5, 0.75]


def test_one_model_call_adapter():
    from transformers import ViTConfig, ViTForImageClassification

    from hf_advft.evaluation_utils import PixelModel, model_logits, takes_pixel_key
    from hf_advft.pixel_space import PixelSpace

    # Nothing else reads `.logits` off a model call or inspects a forward signature for the pixel key.
    assert _sources_containing(".forward).parameters", {"hf_advft/evaluation_utils.py"}) == []
    assert _sources_containing("class LogitsOnly", set()) == []
    assert _sources_containing(").logits", {"hf_advft/loading.py"}) == []  # loading.py: a docstring example
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    vit = ViTForImageClassification(ViTConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=16,
                                              num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                                              num_labels=4)).eval()
    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    x = torch.rand(2, 3, 8, 8)
    assert takes_pixel_key(vit) and not takes_pixel_key(cnn)
    with torch.no_grad():
        assert torch.equal(model_logits(vit, x), vit(pixel_values=x).logits)
        assert torch.equal(model_logits(cnn, x), cnn(x))
        assert torch.equal(PixelModel(vit, PixelSpace())(x), vit(pixel_values=x).logits.float())


def test_one_hardware_helper(monkeypatch):
    import os

    import torch

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_common

    from hf_advft.environment import hardware
    from hf_advft.model_card import hardware_name

    assert _sources_containing("get_device_name(", {"hf_advft/environment.py"}) == []
    assert _sources_containing("platform.processor()", {"hf_advft/environment.py"}) == []
    line = hardware("cpu")
    assert line.endswith(f", {os.cpu_count()} cores") and line == hardware(torch.device("cpu"))
    assert hardware_name(torch.device("cpu"), 2) == f"2 x {line}"  # the model card's compute line
    assert bench_common.hardware("cpu") == f"{line}, torch threads: {torch.get_num_threads()}"  # the benchmarks'


def _messages(make_errors) -> list[str]:
    out = []
    for make in make_errors:
        with pytest.raises(ValueError) as info:
            make()
        out.append(str(info.value))
    return out


def test_one_epsilon_and_steps_check_with_one_message(tmp_path, capsys):
    import torch

    from hf_advft import AdvTrainingArguments, RobustEvalConfig, pgd
    from hf_advft.app import parse_epsilon
    from hf_advft.attacks import n_fgsm
    from hf_advft.cli import main
    from hf_advft.gallery import attack_examples

    x, y = torch.rand(2, 3, 4, 4), torch.tensor([0, 1])
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 2))
    # epsilon written in 0-255 units, through every entry point: one sentence, the argument's name aside
    train = _messages([lambda: AdvTrainingArguments(output_dir=str(tmp_path), report_to="none", adv_epsilon=8)])[0]
    eval_ = _messages([lambda: AdvTrainingArguments(output_dir=str(tmp_path), report_to="none",
                                                    adv_eval_epsilon=8)])[0]
    config, attack, app = _messages([lambda: RobustEvalConfig(epsilon=8),
                                     lambda: pgd(net, x, y, epsilon=8, step_size=0.01, steps=2),
                                     lambda: parse_epsilon("8")])
    assert main(["evaluate", str(tmp_path / "model"), "--epsilon", "8", "--dataset", "digits"]) == 2
    cli = capsys.readouterr().err
    expected = ("epsilon=8 is larger than the whole [0, 1] pixel range: epsilon is in pixel units of images in "
                "[0, 1], so write 8/255 (= 0.0314), not 8.")
    assert train == "adv_" + expected and eval_ == "adv_eval_" + expected
    assert config == attack == app == expected and expected in cli
    # zero and steps: the same two messages from the settings of training and of evaluation
    zero = _messages([lambda: AdvTrainingArguments(output_dir=str(tmp_path), report_to="none", adv_epsilon=0.0),
                      lambda: RobustEvalConfig(epsilon=0.0)])
    assert zero[0] == "adv_" + zero[1] and zero[1].startswith("epsilon must be > 0, got 0")
    steps = _messages([lambda: AdvTrainingArguments(output_dir=str(tmp_path), report_to="none", adv_steps=0),
                       lambda: RobustEvalConfig(pgd_steps=0),
                       lambda: pgd(net, x, y, epsilon=0.1, step_size=0.01, steps=0)])
    gallery = _messages([lambda: attack_examples(net, x, y, epsilon=0.1, steps=0)])[0]  # not a ZeroDivisionError
    assert steps[0] == "adv_" + steps[2] and steps[1] == "pgd_" + steps[2] and gallery == steps[2]
    assert steps[2].startswith("steps must be an integer >= 1, got 0")
    norm = _messages([lambda: AdvTrainingArguments(output_dir=str(tmp_path), report_to="none", adv_norm="l1"),
                      lambda: RobustEvalConfig(norm="l1"), lambda: n_fgsm(net, x, y, epsilon=0.1, norm="l1")])
    assert norm[0] == "adv_" + norm[1] and norm[1].startswith("norm='l1' is unknown") and norm[2] == norm[1]
    assert _messages([lambda: n_fgsm(net, x, y, epsilon=8)])[0] == expected
    # NumPy scalars (a value read from an array or a config) are numbers like any other
    import numpy as np

    out = pgd(net, x, y, epsilon=np.float32(0.1), step_size=np.float64(0.05), steps=np.int64(2), restarts=np.int32(1))
    assert float((out - x).abs().max()) <= 0.1 + 1e-6


# An adv_results.json `evaluation` as hf-advft wrote it before the record was typed (a plain dict): no source,
# precision or hash, rows without details.
OLD_EVALUATION = {"norm": "linf", "epsilon": 8 / 255, "n_examples": 200, "dataset": "digits", "curve": [],
                  "expected_robustness": None, "warnings": [],
                  "rows": [{"name": "Clean", "accuracy": 0.9, "n_examples": 200},
                           {"name": "PGD-10", "accuracy": 0.45, "n_examples": 200}]}


def test_one_typed_evaluation_record_from_results_logs_and_old_files(tmp_path):
    import json

    import torch

    from hf_advft import evaluate_robustness
    from hf_advft.hub import render_folder_card, save_robust_model
    from hf_advft.model_card import EvaluationRecord, EvaluationRow, evaluation_from_logs, summarize_evaluation

    # The three sources give one type.
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    result = evaluate_robustness(net, (torch.rand(8, 3, 4, 4), torch.randint(0, 2, (8,))), attacks="pgd",
                                 pgd_steps=2, masking_checks=False, curve_epsilons=())
    args = type("Args", (), {"adv_norm": "linf", "eval_epsilon": 8 / 255, "adv_eval_steps": 10,
                             "eval_step_size": 2 / 255, "adv_eval_restarts": 1, "adv_random_start": True})()
    logs = [{"step": 3, "eval_accuracy": 0.9, "eval_examples": 200, "eval_robust_accuracy": 0.45,
             "eval_robust_examples": 200}]
    records = [summarize_evaluation(result), summarize_evaluation(result.to_dict()),
               evaluation_from_logs(logs, args, 3), summarize_evaluation(OLD_EVALUATION)]
    assert all(type(r) is EvaluationRecord and all(type(row) is EvaluationRow for row in r.rows) for r in records)
    assert records[0] == records[1]
    assert [(row.name, row.accuracy) for row in records[2].rows] == [("Clean", 0.9), ("PGD-10", 0.45)]
    # The JSON keeps its keys: an old file's evaluation round-trips to the same values, nothing dropped.
    again = records[3].to_dict()
    assert {k: again[k] for k in OLD_EVALUATION if k != "rows"} == {k: v for k, v in OLD_EVALUATION.items()
                                                                     if k != "rows"}
    assert [{k: row[k] for k in ("name", "accuracy", "n_examples")} for row in again["rows"]] == OLD_EVALUATION["rows"]
    assert EvaluationRecord.from_dict(again) == records[3]
    # An old folder (adv_results.json with a plain-dict evaluation) still renders its numbers.
    folder = save_robust_model(net, tmp_path / "old", adv_config={"adv_epsilon": 8 / 255}, evaluation=OLD_EVALUATION)
    saved = json.loads((folder / "adv_results.json").read_text())
    assert saved["evaluation"]["rows"][1]["accuracy"] == 0.45 and saved["evaluation"]["source"] is None
    saved["evaluation"] = OLD_EVALUATION  # exactly the old form, keys missing
    (folder / "adv_results.json").write_text(json.dumps(saved))
    card = render_folder_card(folder)
    assert [r.metric_value for r in card.data.eval_results] == [0.9, 0.45]
    with pytest.raises(ValueError, match="fraction in"):
        EvaluationRecord(norm="linf", epsilon=0.1, rows=[EvaluationRow("Clean", 1.5)])
