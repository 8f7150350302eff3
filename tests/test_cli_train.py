"""`hf-advft train` end to end on tiny local models and the built-in `digits`, and the CLI's one-line errors."""

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_vit

from hf_advft.cli import main
from hf_advft.train_command import detect_model_library


ROOT = Path(__file__).resolve().parents[1]
# A few steps: 32 digits, batch 16, PGD-1 training, PGD-2 evaluation on 16 held-out digits.
FAST = ["--dataset_name", "digits", "--max_train_samples", "32", "--max_eval_samples", "16",
        "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "16", "--adv_steps", "1",
        "--adv_eval_steps", "2", "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true",
        "--save_strategy", "no", "--seed", "0"]


# Tiny models: one intra-op thread (conftest's `one_thread`) is as fast and immune to oversubscribed cores.
pytestmark = pytest.mark.usefixtures("one_thread")


def _vit_dir(tmp_path):
    from transformers import ViTImageProcessor

    path = tmp_path / "tiny_vit"
    tiny_vit(num_labels=3).save_pretrained(path)
    ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(path)
    return path


def _timm_dir(tmp_path):
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(0)
    path = tmp_path / "tiny_timm"
    save_for_hf(timm.create_model("resnet10t", pretrained=False, num_classes=4), str(path), safe_serialization=True,
                model_config={"pretrained_cfg": {"input_size": [3, 16, 16]}})
    return path


@pytest.mark.slow
def test_train_transformers_model_from_config_file(tmp_path, capsys):
    from transformers import AutoModelForImageClassification

    model_dir, out = _vit_dir(tmp_path), tmp_path / "out"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model_name_or_path": str(model_dir), "output_dir": str(out),
                                      "num_train_epochs": 1, "adv_epsilon": "4/255", "learning_rate": 0.5}))
    # The flag on the command line wins over the file's learning_rate.
    assert main(["train", "--config", str(config), "--learning_rate", "1e-3", *FAST]) == 0
    assert json.loads((out / "adv_config.json").read_text())["adv_epsilon"] == pytest.approx(4 / 255)
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and any(h.get("learning_rate", 0) <= 1e-3 for h in state["log_history"])
    model = AutoModelForImageClassification.from_pretrained(out)  # a new 10-way head for the digits
    assert model.config.num_labels == 10
    stdout = capsys.readouterr().out
    assert "hf-advft: adversarial fine-tuning finished" in stdout and "AutoModelForImageClassification" in stdout


@pytest.mark.slow
def test_train_timm_model_detected_from_its_folder(tmp_path, capsys):
    import timm

    model_dir, out = _timm_dir(tmp_path), tmp_path / "out"
    assert main(["train", "--model_name_or_path", str(model_dir), "--image_size", "16", "--output_dir", str(out),
                 "--max_steps", "1", *FAST]) == 0
    model = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert model.num_classes == 10 and model.pretrained_cfg["input_size"] == (3, 16, 16)
    assert (out / "adv_config.json").is_file() and "timm.create_model" in capsys.readouterr().out


def test_model_library_detection(tmp_path):
    assert detect_model_library(str(_vit_dir(tmp_path))) == "transformers"
    assert detect_model_library(str(_timm_dir(tmp_path))) == "timm"
    assert detect_model_library("resnet50.a1_in1k") == "timm"
    assert detect_model_library("hf-hub:timm/convnext_tiny.fb_in1k") == "timm"
    assert detect_model_library("google/vit-base-patch16-224-in21k") == "transformers"
    with pytest.raises(ValueError, match="no such directory"):
        detect_model_library(str(tmp_path / "missing"))
    (tmp_path / "weights_only").mkdir()
    with pytest.raises(ValueError, match="--model_library"):
        detect_model_library(str(tmp_path / "weights_only"))


def test_train_help_lists_the_recipe_flags(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "--model_library" in text and "--adv_epsilon" in text and "--config" in text


# ----------------------------------------------------------------------------------------------------------------------
# One line on stderr and exit status 2 for a user's mistake; the traceback behind --debug / HF_ADVFT_DEBUG=1
@pytest.mark.parametrize("argv, expected", [
    (["evaluate", "nonexistent_dir", "--dataset", "digits"], "'nonexistent_dir': no such directory"),
    (["evaluate", "./no/such/model", "--dataset", "digits"], "'./no/such/model': no such directory"),
    (["card", "./no/such/model"], "no such directory"),
    (["push", "./no/such/model", "--repo-id", "me/x"], "no such directory"),
    (["train", "--model_name_or_path", "./no/such/model", *FAST, "--output_dir", "unused"], "no such directory"),
    (["train", "--model_library", "keras", *FAST, "--output_dir", "unused"], "use one of ('auto'"),
])
def test_user_errors_are_one_line_and_status_2(argv, expected, capsys, monkeypatch):
    monkeypatch.delenv("HF_ADVFT_DEBUG", raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_fake")  # push: fail on the folder, not on the token
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hf-advft {argv[0]}: error: ") and expected in err and err.count("\n") == 1, err


def test_missing_local_dataset_is_no_such_directory_not_the_hub(tmp_path, capsys):
    model_dir = _vit_dir(tmp_path)
    assert main(["evaluate", str(model_dir), "--dataset", "./nope"]) == 2
    err = capsys.readouterr().err
    assert "'./nope': no such directory" in err and "Hub" not in err.split("Pass")[0]
    config = tmp_path / "bad.yaml"
    config.write_text("learning_rat: 0.1\n")
    assert main(["train", "--config", str(config), "--output_dir", str(tmp_path / "o")]) == 2
    assert "unknown keys ['learning_rat']" in capsys.readouterr().err


def test_debug_flag_and_environment_show_the_traceback(tmp_path, monkeypatch):
    with pytest.raises(OSError, match="no such directory"):
        main(["--debug", "evaluate", str(tmp_path / "missing"), "--dataset", "digits"])
    monkeypatch.setenv("HF_ADVFT_DEBUG", "1")
    with pytest.raises(OSError, match="no such directory"):
        main(["evaluate", str(tmp_path / "missing"), "--dataset", "digits"])


@pytest.mark.parametrize("recipe", ["finetune_vit.py", "finetune_timm.py", "pretrain_timm.py"])
def test_recipe_reports_a_user_error_in_one_line(recipe, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HF_ADVFT_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", [recipe, "--model_name_or_path", str(tmp_path / "missing"), "--output_dir",
                                      str(tmp_path / "o"), "--pretrained", "false", "--dataset_name", "./nope"])
    with pytest.raises(SystemExit) as info:  # as `python recipes/<recipe> ...` would exit
        runpy.run_path(str(ROOT / "recipes" / recipe), run_name="__main__")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{recipe}: error: ") and "no such directory" in err and err.count("\n") == 1, err


def test_offline_weights_recipe_reports_a_user_error_in_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "model.safetensors").write_bytes(b"")  # an existing folder: refused without --overwrite
    monkeypatch.setattr(sys, "argv", ["offline_weights.py", "--output_dir", str(tmp_path)])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(ROOT / "recipes" / "offline_weights.py"), run_name="__main__")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("offline_weights.py: error: ") and "--overwrite" in err and err.count("\n") == 1, err
