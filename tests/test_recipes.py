import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_vit
from image_folders import write_digits_imagefolder


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import finetune_timm  # noqa: E402
import finetune_vit  # noqa: E402
import pretrain_timm  # noqa: E402

from hf_advft.modeling import (  # noqa: E402
    describe_timm_task,
    load_timm_classifier,
    load_transformers_classifier,
    save_timm_config,
)
from hf_advft.script_utils import parse_recipe_args  # noqa: E402


# Small, fast settings shared by the recipe runs: 1 epoch, PGD-2 training, PGD-2 evaluation, CPU, no reporting.
FAST = ["--num_train_epochs", "1", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16",
        "--adv_steps", "2", "--adv_step_size", "4/255", "--adv_eval_steps", "2", "--learning_rate", "1e-3",
        "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "no",
        "--eval_split", "test", "--logging_steps", "1", "--seed", "0"]


# Tiny models: one intra-op thread (conftest's `one_thread`) is as fast and immune to oversubscribed cores.
pytestmark = pytest.mark.usefixtures("one_thread")


def _imagefolder(tmp_path, n_train=32, n_test=16, **kw):
    root = tmp_path / "digits_png"
    write_digits_imagefolder(str(root / "train"), n=n_train, **kw)
    write_digits_imagefolder(str(root / "test"), n=n_test)
    return root


def _tiny_vit_dir(tmp_path):
    from transformers import ViTImageProcessor

    path = tmp_path / "tiny_vit"
    tiny_vit(num_labels=3).save_pretrained(path)
    ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(path)
    return path


def _tiny_timm_dir(tmp_path, num_classes=5):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=num_classes)
    path = tmp_path / "tiny_timm"
    path.mkdir()
    save_file(model.state_dict(), str(path / "model.safetensors"))
    describe_timm_task(model, label_names=[f"c{i}" for i in range(num_classes)], input_size=(3, 16, 16))
    save_timm_config(model, str(path))
    return path, model


def _args(module, *argv):
    return parse_recipe_args(module.make_parser(), [str(a) for a in argv])


def test_finetune_vit_main_on_local_model_and_imagefolder(tmp_path, capsys):
    from transformers import AutoModelForImageClassification

    data_dir, model_dir = _imagefolder(tmp_path), _tiny_vit_dir(tmp_path)
    out = tmp_path / "out"
    script_args, training_args = _args(finetune_vit, "--model_name_or_path", model_dir, "--dataset_name", data_dir,
                                       "--output_dir", out, "--cache_dir", tmp_path / "cache", *FAST)
    metrics = finetune_vit.main(script_args, training_args)

    assert 0 <= metrics["eval_robust_accuracy"] <= 1 and 0 <= metrics["eval_accuracy"] <= 1
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "adv_config.json",
                 "eval_results.json"):
        assert (out / name).exists(), name
    assert json.loads((out / "adv_config.json").read_text())["adv_steps"] == 2
    # A new 10-way head (the checkpoint had 3 classes), labelled with the folder names.
    model = AutoModelForImageClassification.from_pretrained(out)
    assert model.config.num_labels == 10 and model.config.id2label[4] == "4"
    before = AutoModelForImageClassification.from_pretrained(model_dir)
    assert not torch.equal(model.vit.embeddings.patch_embeddings.projection.weight,
                           before.vit.embeddings.patch_embeddings.projection.weight)  # fine-tuned
    summary = capsys.readouterr().out
    assert "clean accuracy" in summary and f"robust accuracy  {metrics['eval_robust_accuracy']:.4f}" in summary
    assert str(out) in summary and "AutoModelForImageClassification.from_pretrained" in summary
    assert "1 process(es) on cpu, mixed precision no" in summary


def test_finetune_timm_main_replaces_head_and_saves_loadable_checkpoints(tmp_path, capsys):
    import timm

    data_dir = _imagefolder(tmp_path)
    model_dir, source = _tiny_timm_dir(tmp_path, num_classes=5)
    out = tmp_path / "out"
    script_args, training_args = _args(
        finetune_timm, "--model_name_or_path", model_dir, "--dataset_name", data_dir, "--output_dir", out,
        "--image_size", "16", "--cache_dir", tmp_path / "cache", *FAST, "--save_strategy", "epoch",
    )
    metrics = finetune_timm.main(script_args, training_args)
    assert {"eval_accuracy", "eval_robust_accuracy"} <= set(metrics)

    # Both the final directory and the epoch checkpoint load with timm's local-dir: scheme.
    for path in (out, out / "checkpoint-4"):
        model = timm.create_model(f"local-dir:{path}", pretrained=True)
        assert model.num_classes == 10 and model.pretrained_cfg["input_size"] == (3, 16, 16)
        assert model.pretrained_cfg["label_names"] == [str(i) for i in range(10)]
    # The backbone starts from the local checkpoint and was fine-tuned; the 5-way head was replaced.
    assert not torch.equal(model.state_dict()["conv1.0.weight"], source.state_dict()["conv1.0.weight"])
    assert "timm.create_model" in capsys.readouterr().out


def test_pretrain_timm_produces_the_directory_finetune_timm_loads(tmp_path):
    data_dir = _imagefolder(tmp_path, n_train=24, n_test=8)
    out = tmp_path / "clean"
    script_args, training_args = _args(
        pretrain_timm, "--model_name_or_path", "resnet10t", "--pretrained", "false", "--dataset_name", data_dir,
        "--image_size", "16", "--output_dir", out, "--num_train_epochs", "1", "--per_device_train_batch_size", "8",
        "--use_cpu", "true", "--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "no",
        "--eval_split", "test", "--cache_dir", tmp_path / "cache",
    )
    metrics = pretrain_timm.main(script_args, training_args)
    assert 0 <= metrics["eval_accuracy"] <= 1
    model = load_timm_classifier(str(out), num_labels=10)  # the path finetune_timm.py takes
    assert model.num_classes == 10 and model.pretrained_cfg["input_size"] == (3, 16, 16)


@pytest.mark.parametrize("config", sorted((ROOT / "recipes" / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_yaml_configs_parse_into_the_dataclasses(config):
    module = {"vit": finetune_vit, "pretrain": pretrain_timm}.get(
        next((k for k in ("vit", "pretrain") if k in config.stem), None), finetune_timm)
    values = yaml.safe_load(config.read_text())
    script_args, training_args = _args(module, "--config", config)
    for key, expected in values.items():
        actual = getattr(script_args, key) if hasattr(script_args, key) else getattr(training_args, key)
        actual = getattr(actual, "value", actual)  # transformers' enums
        if isinstance(expected, str) and "/" in expected and key.startswith("adv_"):
            num, den = expected.split("/")
            expected = float(num) / float(den)
        if key == "report_to":  # TrainingArguments turns "none" into an empty list
            expected = [] if expected == "none" else [expected]
        assert actual == expected, key
    # The command line wins over the file.
    _, overridden = _args(module, "--config", config, "--learning_rate", "0.5", "--seed", "7")
    assert overridden.learning_rate == 0.5 and overridden.seed == 7


def test_yaml_config_with_unknown_key_is_an_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset_name: digits\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match=r"unknown keys \['learning_rat'\]"):
        _args(finetune_timm, "--config", bad)


def test_missing_model_path_keeps_library_error_and_adds_offline_hint(tmp_path):
    missing = str(tmp_path / "no_such_model")
    with pytest.raises(OSError, match=r"(?s)Repo id must be.*looks like a local path, but there is no such directory"):
        load_transformers_classifier(missing, label_names=["a", "b"])
    with pytest.raises(OSError, match=r"(?s)HF_HUB_OFFLINE=1 is set.*hf download"):
        load_transformers_classifier("google/vit-base-patch16-224-in21k", label_names=["a", "b"])
    with pytest.raises(ValueError, match=r"(?s)has no source prefix.*no such directory.*--pretrained false"):
        load_timm_classifier(missing, num_labels=2)
    with pytest.raises(OSError, match=r"(?s)cannot find the requested files.*--pretrained false"):
        load_timm_classifier("resnet18.a1_in1k", num_labels=2, pretrained=True)


def test_vit_recipe_rejects_an_image_size_the_model_cannot_take(tmp_path):
    data_dir, model_dir = _imagefolder(tmp_path, n_train=10, n_test=4), _tiny_vit_dir(tmp_path)
    script_args, training_args = _args(finetune_vit, "--model_name_or_path", model_dir, "--dataset_name", data_dir,
                                       "--output_dir", tmp_path / "out", "--image_size", "32",
                                       "--cache_dir", tmp_path / "cache", *FAST)
    with pytest.raises(ValueError, match="--image_size 32 differs from the 16x16 inputs"):
        finetune_vit.main(script_args, training_args)


@pytest.mark.multiprocess
def test_accelerate_launch_two_processes_produces_a_loadable_checkpoint(tmp_path):
    """`accelerate launch -m hf_advft.cli train` (the installed command; the recipes are wrappers around it)."""
    import timm

    data_dir = _imagefolder(tmp_path, n_train=32, n_test=16)
    model_dir, _ = _tiny_timm_dir(tmp_path, num_classes=10)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "hf_advft.cli", "train", "--model_name_or_path", str(model_dir),
           "--dataset_name", str(data_dir), "--image_size", "16", "--output_dir", str(out),
           "--cache_dir", str(tmp_path / "cache"), *FAST]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 32 examples, 8 per process and step: 2 steps with 2 processes (4 with one).
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2
    assert proc.stdout.count("hf-advft: adversarial fine-tuning finished") == 1  # the main process reports
    assert "2 process(es) on cpu" in proc.stdout
    model = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert model.num_classes == 10


def test_head_init_zero_zeroes_a_new_head_and_keeps_a_loaded_one(tmp_path):
    """`--head_init zero`: a new timm head starts at 0 (first loss ln(classes)); a loaded head is never wiped."""
    model_dir, source = _tiny_timm_dir(tmp_path, num_classes=5)
    new = load_timm_classifier(str(model_dir), num_labels=3, head_init="zero")  # 5 -> 3 classes: a new head
    head = new.get_classifier()
    assert head.weight.abs().sum() == 0 and head.bias.abs().sum() == 0
    body = {k: v for k, v in new.state_dict().items() if not k.startswith("fc.")}
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in body.items())  # the features are the checkpoint's
    default = load_timm_classifier(str(model_dir), num_labels=3)
    assert default.get_classifier().weight.abs().sum() > 0  # timm's own init otherwise
    with torch.no_grad():
        logits = new(torch.rand(2, 3, 16, 16))
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2]))
    assert torch.allclose(loss, torch.log(torch.tensor(3.0)))
    with pytest.raises(ValueError, match="would discard the 5-class head"):
        load_timm_classifier(str(model_dir), num_labels=5, head_init="zero")
    assert load_timm_classifier(str(model_dir), num_labels=5, pretrained=False, head_init="zero") is not None
    with pytest.raises(ValueError, match=r"head_init='small' is unknown"):
        load_timm_classifier(str(model_dir), num_labels=3, head_init="small")
    with pytest.raises(ValueError, match=r"head_init='small' is unknown"):
        _args(finetune_timm, "--dataset_name", "digits", "--head_init", "small")
    data_dir, vit_dir = _imagefolder(tmp_path, n_train=8, n_test=4), _tiny_vit_dir(tmp_path)
    script_args, training_args = _args(finetune_vit, "--model_name_or_path", vit_dir, "--dataset_name", data_dir,
                                       "--output_dir", tmp_path / "vit_out", "--head_init", "zero", *FAST)
    with pytest.raises(ValueError, match="is for timm models"):
        finetune_vit.main(script_args, training_args)
    assert not (tmp_path / "vit_out").exists()  # refused before anything ran


def test_in_chans_one_sums_the_first_conv_and_runs_gray_through_train_save_load_evaluate(tmp_path):
    """`--in_chans 1`: timm's summed first conv (the RGB model's outputs on a repeated gray image), a 1-channel data
    pipeline, attack and saved config that `load_robust_model` and `hf-advft evaluate` rebuild; `--crop_pct` and
    `--interpolation` are recorded; all three are refused for transformers models."""
    from hf_advft.cli import main as cli_main
    from hf_advft.loading import load_robust_model

    model_dir, source = _tiny_timm_dir(tmp_path, num_classes=5)
    gray = load_timm_classifier(str(model_dir), num_labels=5, in_chans=1)
    assert torch.equal(gray.state_dict()["conv1.0.weight"], source.state_dict()["conv1.0.weight"].sum(1, keepdim=True))
    assert gray.pretrained_cfg["input_size"] == (1, 16, 16)
    (mean,), (std,) = gray.pretrained_cfg["mean"], gray.pretrained_cfg["std"]
    assert mean == pytest.approx(sum(source.pretrained_cfg["mean"]) / 3)  # timm's ImageNet mean, averaged
    assert std == pytest.approx(sum(source.pretrained_cfg["std"]) / 3)
    # With one mean/std for all colors the gray model is the RGB model on the gray image repeated into three channels.
    source.eval(), gray.eval()
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(gray((x - 0.5) / 0.5), source((x.expand(-1, 3, -1, -1) - 0.5) / 0.5), atol=1e-5)

    data_dir, out = _imagefolder(tmp_path, n_train=16, n_test=8), tmp_path / "gray_out"
    script_args, training_args = _args(
        finetune_timm, "--model_name_or_path", model_dir, "--dataset_name", data_dir, "--output_dir", out,
        "--image_size", "16", "--in_chans", "1", "--crop_pct", "1.0", "--interpolation", "bilinear", *FAST,
    )
    metrics = finetune_timm.main(script_args, training_args)
    assert 0 <= metrics["eval_robust_accuracy"] <= metrics["eval_accuracy"] <= 1
    config = json.loads((out / "config.json").read_text())
    assert config["model_args"]["in_chans"] == 1
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [1, 16, 16] and len(cfg["mean"]) == len(cfg["std"]) == 1
    assert cfg["crop_pct"] == 1.0 and cfg["interpolation"] == "bilinear"
    robust = load_robust_model(out)
    assert robust.model.conv1[0].in_channels == 1 and len(robust.pixel_space.mean) == 1
    from PIL import Image
    pixels = robust.preprocess(Image.new("RGB", (20, 24), (200, 30, 30)))
    assert pixels.shape == (1, 16, 16)
    assert "Resize(size=16" in repr(robust.preprocess) and "CenterCrop(size=(16, 16))" in repr(robust.preprocess)
    stage2 = load_timm_classifier(str(out), num_labels=10)  # a second stage starts from it as it is
    assert stage2.conv1[0].in_channels == 1 and stage2.pretrained_cfg["input_size"] == (1, 16, 16)
    assert cli_main(["evaluate", str(out), "--dataset", str(data_dir), "--attack", "pgd", "--pgd_steps", "2",
                     "--check_steps_factor", "2", "--no_progress", "--output_dir", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "robustness.json").read_text())["n_examples"] == 8

    with pytest.raises(ValueError, match="in_chans=2 is not supported"):
        _args(finetune_timm, "--dataset_name", "digits", "--in_chans", "2")
    with pytest.raises(ValueError, match=r"crop_pct=1.5 must be in \(0, 1\]"):
        _args(finetune_timm, "--dataset_name", "digits", "--crop_pct", "1.5")
    with pytest.raises(ValueError, match="interpolation='cubic' is unknown"):
        _args(finetune_timm, "--dataset_name", "digits", "--interpolation", "cubic")
    vit_dir = _tiny_vit_dir(tmp_path)
    for flag, value in (("--in_chans", "1"), ("--crop_pct", "1.0"), ("--interpolation", "bilinear")):
        script_args, training_args = _args(finetune_vit, "--model_name_or_path", vit_dir, "--dataset_name", data_dir,
                                           "--output_dir", tmp_path / "vit_out", flag, value, *FAST)
        with pytest.raises(ValueError, match=f"{flag.removeprefix('--')}=.* is for timm models"):
            finetune_vit.main(script_args, training_args)
    assert not (tmp_path / "vit_out").exists()  # refused before anything ran


def test_shipped_gray_configs_build_one_channel_models():
    """The shipped Fashion-MNIST stage-1 configs build 1-channel networks (the gray threat model), which their stage-2
    configs load as saved; and no geometry that resizes 28 px images to crop them back."""
    for stage1, stage2 in (("fashion_mnist_cpu_pretrain", "fashion_mnist_cpu"),
                           ("lite0_fashion_mnist_clean", "lite0_fashion_mnist_aft")):
        clean_script, clean = _args(pretrain_timm, "--config", ROOT / f"recipes/configs/{stage1}.yaml")
        assert clean_script.dataset_name == "fashion_mnist" and clean_script.in_chans == 1, stage1
        assert clean_script.crop_pct == 1.0, stage1
        script_args, _ = _args(finetune_timm, "--config", ROOT / f"recipes/configs/{stage2}.yaml")
        assert script_args.model_name_or_path == clean.output_dir and script_args.in_chans is None, stage2


def test_shipped_lite0_configs_parse_and_match_the_study_row():
    """recipes/configs/lite0_fashion_mnist_*.yaml parse, and stage 2 is the study's AFT 3/4 N-FGSM row."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import aft_study
    from aft_study_rows import row_spec

    clean_script, clean = _args(pretrain_timm, "--config", ROOT / "recipes/configs/lite0_fashion_mnist_clean.yaml")
    # The study's model and threat model: gray in (the RGB filters summed), its resize to 32 px without a crop.
    assert (clean_script.in_chans, clean_script.crop_pct, clean_script.interpolation) == (1, 1.0, "bilinear")
    script_args, aft = _args(finetune_timm, "--config", ROOT / "recipes/configs/lite0_fashion_mnist_aft.yaml")
    assert script_args.model_name_or_path == clean.output_dir and script_args.image_size == 32
    assert script_args.max_train_samples == 2000 and script_args.train_augmentation == "none"

    study = aft_study.make_parser().parse_args(["--aft_lr", "9e-4"])  # the study's defaults, table 2's AFT LR
    row = row_spec("aft34_nfgsm", study)
    assert aft.num_train_epochs == row["epochs"] and aft.adv_epsilon == study.epsilon
    for name, value in {**row["train_args"], **row["adv_args"]}.items():
        assert str(getattr(aft, name)).removeprefix("OptimizerNames.").removeprefix("SchedulerType.").lower() == \
            str(value).lower(), name
    stage1 = row_spec("clean", study)
    assert clean.num_train_epochs == stage1["epochs"] and clean.learning_rate == study.clean_lr
    # Both stages train the summed 1-channel stem at 3x the LR, as fast as the study's 3 copies of it; the pattern
    # names the stem alone in the recipes' network.
    import timm

    assert clean.lr_multipliers == aft.lr_multipliers == {"conv_stem": 3.0}
    names = [n for n, _ in timm.create_model("efficientnet_lite0", in_chans=1, num_classes=10).named_parameters()]
    assert [n for n in names if re.search("conv_stem", n)] == ["conv_stem.weight"]


def test_recipes_take_lr_multipliers_from_yaml_and_the_command_line(tmp_path):
    """`lr_multipliers` reaches both stages: a YAML mapping, or JSON on the command line (which wins)."""
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"lr_multipliers": {"conv_stem": 3}, "report_to": "none"}))
    for module in (pretrain_timm, finetune_timm):
        _, training_args = _args(module, "--config", config, "--output_dir", tmp_path)
        assert training_args.lr_multipliers == {"conv_stem": 3.0}, module.__name__
        _, training_args = _args(module, "--config", config, "--output_dir", tmp_path, "--lr_multipliers",
                                 '{"conv_stem": 2, "bn1": 0.5}')
        assert training_args.lr_multipliers == {"conv_stem": 2.0, "bn1": 0.5}, module.__name__
        with pytest.raises(ValueError, match="JSON mapping"):
            _args(module, "--output_dir", tmp_path, "--lr_multipliers", "conv_stem=3")
