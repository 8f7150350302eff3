"""The adversarial-example gallery: what an attack does to a few images, for a robust model and its base model.

One row per image: the clean image (true label, each model's prediction and confidence), then for each model the
perturbation PGD found (amplified to be visible, its scale written above it) and the adversarial image with the
model's prediction and confidence, green when still right, red when fooled. `hf-advft evaluate --gallery`, the model
card (`gallery_image=`) and `make demo` draw it with [`plot_adversarial_gallery`].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .attacks import check_attack_args, pgd
from .evaluation_utils import PixelModel, evaluation_mode
from .pixel_space import PixelSpace


__all__ = ["GALLERY_PNG", "GalleryRow", "attack_examples", "plot_adversarial_gallery"]

GALLERY_PNG = "adversarial_gallery.png"
_RIGHT, _WRONG = "#1a7f37", "#cf222e"  # green / red, readable on white


@dataclass
class GalleryRow:
    """One model's view of the gallery's images: adversarial pixels, and predictions with their confidence."""

    adversarial: torch.Tensor  # (N, C, H, W) in [0, 1]
    clean_pred: torch.Tensor  # (N,) class ids
    clean_conf: torch.Tensor  # (N,) softmax probability of the predicted class
    adv_pred: torch.Tensor
    adv_conf: torch.Tensor


def attack_examples(model: torch.nn.Module, pixels: torch.Tensor, labels: torch.Tensor, *,
                    pixel_space: PixelSpace | None = None, epsilon: float = 8 / 255, steps: int = 20,
                    step_size: float | None = None, norm: str = "linf", device=None, seed: int = 0) -> GalleryRow:
    """PGD adversarial examples of `pixels` (in [0, 1]) against `model`, with clean and adversarial predictions.

    `step_size` defaults to `2.5 * epsilon / steps`. The model's mode and `requires_grad` flags are restored.
    """
    check_attack_args(epsilon=epsilon, steps=steps, step_size=step_size, norm=norm)  # before 2.5 * eps / steps
    space = pixel_space if pixel_space is not None else PixelSpace()
    with evaluation_mode(model, device) as target:
        net = PixelModel(model, space)
        x, y = pixels.to(target).float(), labels.to(target).long()
        generator = torch.Generator(device=target).manual_seed(seed)
        x_adv = pgd(net, x, y, epsilon=epsilon, step_size=step_size or 2.5 * epsilon / steps, steps=steps,
                    norm=norm, generator=generator)
        with torch.no_grad():
            clean = net(x).softmax(-1).max(-1)
            adv = net(x_adv).softmax(-1).max(-1)
    return GalleryRow(x_adv.cpu(), clean.indices.cpu(), clean.values.cpu(), adv.indices.cpu(), adv.values.cpu())


def _show(ax, image: torch.Tensor) -> None:
    picture = image.permute(1, 2, 0).clamp(0, 1).numpy()
    if picture.shape[-1] == 1:
        ax.imshow(picture[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(picture, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _name(label_names, k: int) -> str:
    return str(label_names[k]) if label_names is not None and k < len(label_names) else str(k)


def plot_adversarial_gallery(
    model: torch.nn.Module,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    path: str | Path,
    *,
    pixel_space: PixelSpace | None = None,
    base_model: torch.nn.Module | None = None,
    base_pixel_space: PixelSpace | None = None,
    epsilon: float = 8 / 255,
    steps: int = 20,
    step_size: float | None = None,
    norm: str = "linf",
    n: int = 6,
    label_names: Sequence[str] | None = None,
    model_name: str = "robust",
    base_name: str = "base",
    title: str | None = None,
    device=None,
    seed: int = 0,
) -> Path:
    """Draw the adversarial-example gallery of `model` (and `base_model` beside it) as a PNG at `path`.

    Args:
        model (`torch.nn.Module`): The (robust) classifier, transformers or timm.
        pixels (`torch.Tensor`): Images in [0, 1], `(N, C, H, W)`; the first `n` are drawn.
        labels (`torch.Tensor`): Their class ids.
        path (`str` or `Path`): Where the PNG goes.
        pixel_space ([`PixelSpace`], *optional*): The model's input normalization (default: none).
        base_model (`torch.nn.Module`, *optional*): The model before adversarial fine-tuning, attacked the same way
            and shown beside it.
        base_pixel_space ([`PixelSpace`], *optional*): The base model's normalization (default: `pixel_space`).
        epsilon (`float`, defaults to `8/255`): The PGD radius, in pixel units.
        steps (`int`, defaults to 20): PGD iterations.
        step_size (`float`, *optional*): PGD step, `2.5 * epsilon / steps` by default.
        norm (`str`, defaults to `"linf"`): `"linf"` or `"l2"`.
        n (`int`, defaults to 6): Number of images (rows).
        label_names (`Sequence[str]`, *optional*): Class names for the captions (default: the ids).
        model_name (`str`, defaults to `"robust"`): The model's name in the captions.
        base_name (`str`, defaults to `"base"`): The base model's name in the captions.
        title (`str`, *optional*): The figure's title (default: the attack).
        device (*optional*): Where to run the attack (default: where the model is).
        seed (`int`, defaults to 0): Seed of PGD's random start.

    Returns:
        `Path`: `path`. Needs matplotlib (`pip install "hf-advft[plot]"`).

    Example:

    ```python
    >>> from hf_advft.gallery import plot_adversarial_gallery
    >>> plot_adversarial_gallery(robust, pixels, labels, "gallery.png", pixel_space=space,
    ...                          base_model=base, epsilon=8 / 255, n=6)  # doctest: +SKIP
    ```
    """
    try:
        # A bare Figure, not pyplot: no global backend switch or figure registry in the caller's process.
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError('The gallery needs matplotlib: pip install "hf-advft[plot]".') from err
    if n < 1:
        raise ValueError(f"n must be at least 1 image, got {n}.")
    pixels, labels = pixels[:n].detach().cpu().float(), torch.as_tensor(labels)[:n].cpu().long()
    if pixels.dim() != 4 or len(pixels) != len(labels) or len(pixels) == 0:
        raise ValueError(f"pixels must be (N, C, H, W) with one label each; got {tuple(pixels.shape)} and "
                         f"{len(labels)} labels.")
    if pixels.min() < 0 or pixels.max() > 1:
        raise ValueError("pixels must lie in [0, 1] (undo the normalization first: PixelSpace.to_pixels).")
    attack = dict(epsilon=epsilon, steps=steps, step_size=step_size, norm=norm, device=device, seed=seed)
    runs = [(model_name, attack_examples(model, pixels, labels, pixel_space=pixel_space, **attack))]
    if base_model is not None:
        space = base_pixel_space if base_pixel_space is not None else pixel_space
        runs.append((base_name, attack_examples(base_model, pixels, labels, pixel_space=space, **attack)))

    rows, cols = len(pixels), 1 + 2 * len(runs)
    cell_w, cell_h, head_h = 1.9, 2.0, 0.55  # inches: an image with its 2-3 caption lines; the figure title
    fig = Figure(figsize=(cell_w * cols, cell_h * rows + head_h), dpi=110)
    axes = fig.subplots(rows, cols, squeeze=False)
    height = cell_h * rows + head_h
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.1 / height, top=1 - (head_h + 0.5) / height, wspace=0.2,
                        hspace=0.62)
    eps_text = f"{epsilon:.3g} = {epsilon * 255:.3g}/255" if norm == "linf" else f"{epsilon:.3g}"
    attack_text = f"PGD-{steps}, {'L-inf' if norm == 'linf' else 'L2'} eps {eps_text}"
    fig.suptitle(title or f"Adversarial examples ({attack_text})", fontsize=11, fontweight="bold",
                 y=1 - 0.12 / height, va="top")
    for i in range(rows):
        truth = int(labels[i])
        cells = iter(axes[i])
        ax = next(cells)
        _show(ax, pixels[i])
        guesses = "\n".join(f"{name} says {_name(label_names, int(run.clean_pred[i]))} "
                            f"({run.clean_conf[i] * 100:.0f}%)" for name, run in runs)
        ax.set_title(f"clean, true: {_name(label_names, truth)}\n{guesses}", fontsize=8)
        for name, run in runs:
            delta = run.adversarial[i] - pixels[i]
            # Scaled so that the largest change of this image reaches black or white; mid-grey means no change.
            peak = float(delta.abs().max()) or 1.0
            ax = next(cells)
            _show(ax, delta / (2 * peak) + 0.5)
            size = f"{peak * 255:.3g}/255" if norm == "linf" else f"{float(delta.norm()):.3g} (L2)"
            ax.set_title(f"{name}: perturbation\namplified x{0.5 / peak:.3g}, max {size}", fontsize=8)
            ax = next(cells)
            _show(ax, run.adversarial[i])
            pred = int(run.adv_pred[i])
            verdict = "still right" if pred == truth else "fooled"
            ax.set_title(f"{name} on adversarial:\nsays {_name(label_names, pred)} ({run.adv_conf[i] * 100:.0f}%), "
                         f"{verdict}", fontsize=8, color=_RIGHT if pred == truth else _WRONG, fontweight="bold")
    fig.savefig(path, format="png")
    return Path(path)
