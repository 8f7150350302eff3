"""The adversarial-example gallery: the attack behind it, the PNG, the model card and `hf-advft evaluate --gallery`."""

import pytest
import torch
from conftest import digits_tensors, tiny_vit
from PIL import Image

from hf_advft.cli import main
from hf_advft.gallery import GALLERY_PNG, attack_examples, plot_adversarial_gallery
from hf_advft.pixel_space import PixelSpace


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# Tiny models: one intra-op thread (conftest's `one_thread`) is as fast and immune to oversubscribed cores.
pytestmark = pytest.mark.usefixtures("one_thread")


def _linear(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))


def _digits(n=4):
    return digits_tensors(size=8, channels=1, n=n)


def test_attack_examples_stay_in_the_ball_and_restore_the_model():
    model = _linear()
    model.train()
    x, y = _digits(8)
    space = PixelSpace(mean=(0.5,), std=(0.25,))
    row = attack_examples(model, x, y, pixel_space=space, epsilon=0.1, steps=5)
    assert (row.adversarial - x).abs().max() <= 0.1 + 1e-6 and row.adversarial.min() >= 0 and row.adversarial.max() <= 1
    assert row.adv_pred.shape == y.shape and ((row.clean_conf > 0) & (row.clean_conf <= 1)).all()
    # The attack lowers the confidence in the true class on average (a linear model is easy to fool).
    with torch.no_grad():
        true_p = lambda z: model(space.to_model(z)).softmax(-1).gather(1, y[:, None]).mean()  # noqa: E731
        assert true_p(row.adversarial) < true_p(x)
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_gallery_png_has_a_column_pair_per_model(tmp_path):
    x, y = _digits(3)
    one = plot_adversarial_gallery(_linear(), x, y, tmp_path / "one.png", epsilon=0.1, steps=3, n=3)
    two = plot_adversarial_gallery(_linear(), x, y, tmp_path / "two.png", base_model=_linear(1), epsilon=0.1,
                                   steps=3, n=2, label_names=[f"digit {i}" for i in range(10)])
    assert one.read_bytes()[:8] == PNG_SIGNATURE
    (w1, h1), (w2, h2) = Image.open(one).size, Image.open(two).size
    assert w2 / w1 == pytest.approx(5 / 3, rel=0.02)  # clean + 2 columns per model
    assert h2 < h1  # two rows instead of three
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        plot_adversarial_gallery(_linear(), x * 4 - 2, y, tmp_path / "bad.png")


def test_gallery_beside_the_model_card(tmp_path):
    from hf_advft import save_robust_model

    x, y = _digits(2)
    png = plot_adversarial_gallery(_linear(), x, y, tmp_path / "g.png", epsilon=0.1, steps=2, n=2)
    folder = save_robust_model(_linear(), tmp_path / "model", adv_config={"adv_epsilon": 0.1}, gallery_image=png)
    assert (folder / GALLERY_PNG).read_bytes() == png.read_bytes()
    assert f"]({GALLERY_PNG})" in (folder / "README.md").read_text()
    plain = save_robust_model(_linear(), tmp_path / "plain", adv_config={"adv_epsilon": 0.1})
    assert GALLERY_PNG not in (plain / "README.md").read_text() and not (plain / GALLERY_PNG).exists()
    with pytest.raises(FileNotFoundError, match="plot_adversarial_gallery"):
        save_robust_model(_linear(), tmp_path / "m2", gallery_image=tmp_path / "missing.png")


@pytest.mark.slow
def test_evaluate_command_draws_the_gallery_with_a_base_model(tmp_path, capsys):
    from transformers import ViTImageProcessor

    paths = []
    for seed in (0, 1):
        path = tmp_path / f"vit{seed}"
        tiny_vit(seed=seed).save_pretrained(path)
        ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3,
                          image_std=[0.5] * 3).save_pretrained(path)
        paths.append(path)
    out = tmp_path / "eval"
    assert main(["evaluate", str(paths[0]), "--dataset", "digits", "--attack", "pgd", "--n_examples", "4",
                 "--pgd_steps", "2", "--curve_epsilons", "", "--masking_checks", "false", "--no_progress",
                 "--output_dir", str(out), "--gallery", "3", "--base_model", str(paths[1])]) == 0
    assert (out / GALLERY_PNG).read_bytes()[:8] == PNG_SIGNATURE
    width, height = Image.open(out / GALLERY_PNG).size
    assert width > height  # 5 columns (clean + two models), 3 rows
    assert GALLERY_PNG in capsys.readouterr().out
    assert main(["evaluate", str(paths[0]), "--dataset", "digits", "--gallery", "0"]) == 2
    assert "--gallery 0" in capsys.readouterr().err
