import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import tiny_vit
from PIL import Image

from hf_advft.cli import main
from hf_advft.evaluation import RobustnessResult


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Small attacks: these tests check the command's plumbing; tests/test_evaluation.py checks the numbers.
QUICK = ["--pgd_steps", "3", "--check_steps_factor", "2", "--square_queries", "20", "--no_progress"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: as fast, and immune to oversubscribed cores
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vit_checkpoint(tmp_path_factory):
    from transformers import ViTImageProcessor

    path = tmp_path_factory.mktemp("vit")
    tiny_vit().save_pretrained(path)
    ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(path)
    return path


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)) for _ in range(n)]


def _check_outputs(out_dir, n):
    result = RobustnessResult.from_json(out_dir / "robustness.json")
    assert result.n_examples == n
    assert 0 <= result.robust_accuracy <= result.clean_accuracy <= 1
    assert (out_dir / "robustness.png").read_bytes()[:8] == PNG_SIGNATURE
    return result


def test_evaluate_transformers_checkpoint_on_digits(vit_checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["evaluate", str(vit_checkpoint), "--dataset", "digits", "--epsilon", "8/255", "--attack", "pgd,square",
                 "--n_examples", "12", "--output_dir", str(out), *QUICK])
    assert code == 0
    result = _check_outputs(out, 12)
    assert result.epsilon == pytest.approx(8 / 255) and result.normalization == "ViTImageProcessor"
    assert set(result.attack_accuracy) == {"pgd", "square"} and result.pgd_steps == 3
    assert len(result.curve_epsilons) == 6 and len(result.checks) == 4
    stdout = capsys.readouterr().out
    assert "| clean |" in stdout and "robustness.json" in stdout and "robustness.png" in stdout


def test_evaluate_defaults_to_the_checkpoint_folder(vit_checkpoint):
    assert main(["evaluate", str(vit_checkpoint), "--dataset", "digits", "--attack", "pgd", "--n_examples", "4",
                 *QUICK]) == 0
    _check_outputs(vit_checkpoint, 4)


def test_evaluate_timm_checkpoint_on_imagefolder(tmp_path):
    import timm
    from timm.models import save_for_hf

    model = timm.create_model("resnet10t", pretrained=False, num_classes=2)
    ckpt = tmp_path / "timm_ckpt"
    save_for_hf(model, str(ckpt), model_config={"pretrained_cfg": {"input_size": [3, 16, 16]}},
                safe_serialization=True)
    root = tmp_path / "folder"
    for split, n in (("train", 4), ("test", 3)):
        for label in ("cat", "dog"):
            (root / split / label).mkdir(parents=True)
            for i, image in enumerate(_images(n, seed=len(label) + n)):
                image.save(root / split / label / f"{i}.png")
    out = tmp_path / "eval"
    assert main(["evaluate", str(ckpt), "--dataset", str(root), "--attack", "pgd", "--output_dir", str(out),
                 *QUICK]) == 0
    result = _check_outputs(out, 6)  # the test split: 2 classes x 3 images
    assert result.normalization == "timm pretrained_cfg"
    assert any("(test)" in note for note in result.notes)


def test_evaluate_save_to_disk_dataset(vit_checkpoint, tmp_path):
    import datasets

    features = datasets.Features({"img": datasets.Image(), "fine_label": datasets.ClassLabel(num_classes=10)})
    split = datasets.Dataset.from_dict({"img": _images(5), "fine_label": [0, 1, 2, 3, 4]}, features=features)
    datasets.DatasetDict({"validation": split}).save_to_disk(str(tmp_path / "saved"))
    out = tmp_path / "eval"
    assert main(["evaluate", str(vit_checkpoint), "--dataset", str(tmp_path / "saved"), "--split", "validation",
                 "--attack", "pgd",
                 "--curve_epsilons", "0,4/255,8/255", "--output_dir", str(out), *QUICK]) == 0
    result = _check_outputs(out, 5)
    assert result.curve_epsilons == pytest.approx([0, 4 / 255, 8 / 255])


@pytest.mark.parametrize("flags, message", [
    (["--epsilon", "8"], "write 8/255"),
    (["--attack", "pgd,deepfool"], "use one or more of ('pgd', 'autoattack', 'square')"),
])
def test_evaluate_bad_input(vit_checkpoint, flags, message, capsys):
    assert main(["evaluate", str(vit_checkpoint), "--dataset", "digits", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hf-advft evaluate: error: ") and message in err and err.count("\n") == 1


def test_evaluate_autoattack_without_the_extra(vit_checkpoint, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyautoattack", None)
    assert main(["evaluate", str(vit_checkpoint), "--dataset", "digits", "--attack", "pgd,autoattack"]) == 2
    assert 'pip install "hf-advft[autoattack]"' in capsys.readouterr().err


def test_evaluate_missing_checkpoint_says_what_is_needed(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", str(tmp_path / "empty"), "--dataset", "digits", "--attack", "pgd"]) == 2
    assert "model.safetensors" in capsys.readouterr().err
    with pytest.raises(ValueError, match="model.safetensors"):  # --debug: the exception and its traceback
        main(["evaluate", str(tmp_path / "empty"), "--dataset", "digits", "--attack", "pgd", "--debug"])


@pytest.mark.slow
def test_console_entry_point_runs_in_a_fresh_process(vit_checkpoint, tmp_path):
    out = tmp_path / "eval"
    proc = subprocess.run(
        [sys.executable, "-m", "hf_advft.cli", "evaluate", str(vit_checkpoint), "--dataset", "digits", "--attack",
         "pgd", "--n_examples", "4", "--output_dir", str(out), *QUICK],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    _check_outputs(out, 4)
    from importlib.metadata import version

    assert json.loads((out / "robustness.json").read_text())["versions"]["torch"] == version("torch")
    assert "| clean |" in proc.stdout
