"""`hf-advft app`: a local web page that attacks a robust model (and its base model) on one image, live.

    hf-advft app ./vit-robust --dataset digits                       # pick a digit or upload an image
    hf-advft app me/vit-robust --base google/vit-base-patch16-224    # the robust and the base model side by side

The page (Gradio, the optional extra `pip install "hf-advft[app]"`) shows the clean image, the PGD perturbation
(amplified, its gain written beside it), the adversarial image, and the top-5 predictions of each model before and
after the attack, with the robustness curve of the model's `robustness.json` (written by `hf-advft evaluate`) beside
them. It serves everything itself: no analytics, no fonts or scripts from a CDN, so it works offline.

This module holds the pure functions that compute each panel (tested without a browser); `build_app` wires them into
a `gradio.Blocks` page (`app_ui.py`), and `space_files` writes the `app.py` that runs the same page in a Space.
"""

from __future__ import annotations

import logging as std_logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .attacks import check_attack_args
from .cli import parse_fraction
from .evaluation import ROBUSTNESS_JSON, RobustEvalConfig, RobustnessResult
from .evaluation_utils import PixelModel
from .hub import GENERATED_FILE_MARKER, load_robust_model


__all__ = ["AppInputError", "AppModel", "AttackPanel", "attack_image", "load_app_model", "parse_epsilon",
           "read_image", "robustness_panel", "run_attacks", "space_files"]

logger = std_logging.getLogger(__name__)

APP_EXTRA_HINT = 'The web app needs the optional extra: pip install "hf-advft[app]".'
# An upload larger than this many pixels is refused before it is decoded (a 16-megapixel photo passes; a
# decompression bomb does not reach memory).
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_STEPS = 200  # one attack holds the (single) attack slot for at most this many forward+backward passes
TOP_K = 5
DISPLAY_SIDE = 224  # images are upscaled (nearest neighbour, whole pixels) to at least this side for display
GENERIC_LABEL_PREFIXES = ("LABEL_", "class ")


class AppInputError(ValueError):
    """Bad input on the page (image, epsilon, steps): its message is shown there and the server keeps serving."""


# ------------------------------------------------------------------------------------------------------------------
# Models
@dataclass
class AppModel:
    """A classifier as the page uses it: a function of pixels in [0, 1], its input shape and its class names."""

    name: str
    net: PixelModel
    channels: int
    size: tuple[int, int]
    labels: list[str]
    library: str
    path: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    transform: Any = None  # an ImageTransform: the model's resize/crop (see `to_pixels`)

    @property
    def num_labels(self) -> int:
        return len(self.labels)


def _model_labels(model, num_labels: int) -> list[str]:
    config = getattr(model, "config", None)
    id2label = getattr(config, "id2label", None) or {}
    names = (getattr(model, "pretrained_cfg", None) or {}).get("label_names")
    if names and len(names) == num_labels:
        return [str(n) for n in names]
    return [str(id2label.get(i, id2label.get(str(i), f"class {i}"))) for i in range(num_labels)]


def load_app_model(name_or_path: str, *, label_names: list[str] | None = None, device: str | None = None) -> AppModel:
    """Load a checkpoint with `load_robust_model` for the page.

    Class names come from the model (`config.id2label`, timm's `label_names`); generic ones (`LABEL_3`) are replaced
    by `label_names` (the dataset's) when their number matches. Raises the loader's `ValueError`/`OSError` (a folder
    without weights names the files it expected).
    """
    from .data import model_image_transform

    with warnings.catch_warnings():  # a base model has no adv_config.json by design: the page says which is which
        warnings.simplefilter("ignore", UserWarning)
        robust = load_robust_model(name_or_path)
    model = robust.model
    if robust.library not in ("timm", "transformers"):
        raise ValueError(f"{name_or_path} is a plain nn.Module checkpoint: the app needs a transformers or timm one.")
    # Pixels in [0, 1] with the geometry training and `hf-advft evaluate` use; the PixelModel normalizes them.
    transform = model_image_transform(model, processor=robust.preprocess if robust.library == "transformers" else None)
    channels, size = transform.channels, transform.size
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.eval().to(target)
    for p in model.parameters():  # the page only attacks inputs: no weight gradients, no activations kept for them
        p.requires_grad_(False)
    net = PixelModel(model, robust.pixel_space)
    with torch.no_grad():
        num_labels = net(torch.zeros(1, channels, *size, device=target)).shape[-1]
    labels = _model_labels(model, num_labels)
    generic = all(name.startswith(GENERIC_LABEL_PREFIXES) for name in labels)
    if generic and label_names is not None and len(label_names) == num_labels:
        labels = [str(n) for n in label_names]
    return AppModel(str(name_or_path), net, channels, tuple(size), labels, robust.library, robust.path, target,
                    transform)


# ------------------------------------------------------------------------------------------------------------------
# Inputs
def read_image(image: Any, *, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """An uploaded file path, PIL image or array as a PIL image, or an `AppInputError` that says what is wrong."""
    if image is None:
        raise AppInputError("No image yet: pick an example or upload an image (PNG, JPEG, ...).")
    if isinstance(image, (str, Path)):
        name = Path(image).name
        try:
            with Image.open(image) as img:  # reads the header only: the size is checked before any decoding
                _check_size(img.size, name, max_pixels)
                img.load()
                return img.copy()
        except UnidentifiedImageError:
            raise AppInputError(f"{name!r} is not an image: upload a PNG, JPEG, WebP, BMP or GIF file.") from None
        except Image.DecompressionBombError:
            raise AppInputError(f"{name!r} is too large to decode safely: upload an image of at most "
                                f"{max_pixels:,} pixels.") from None
        except OSError as err:
            raise AppInputError(f"{name!r} could not be read as an image ({err}): upload a PNG or JPEG file.") from None
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise AppInputError(f"Expected an image, got {type(image).__name__}.")
    _check_size(image.size, "The image", max_pixels)
    return image


def _check_size(size: tuple[int, int], name: str, max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise AppInputError(f"{name} is {width} x {height} pixels, too large for this page: upload an image of at "
                            f"most {max_pixels:,} pixels (e.g. {int(max_pixels ** 0.5)} x {int(max_pixels ** 0.5)}); "
                            f"the model sees it resized anyway.")
    if width < 1 or height < 1:
        raise AppInputError(f"{name} is empty ({width} x {height} pixels).")


def parse_epsilon(value: Any) -> float:
    """`"8/255"`, `"0.0314"` or a number as epsilon in pixel units, which must lie in (0, 1] (`check_attack_args`)."""
    try:
        epsilon = parse_fraction(str(value).strip()) if isinstance(value, str) else float(value)
    except Exception:  # argparse.ArgumentTypeError, TypeError: both mean the text is not a number
        raise AppInputError(f"Epsilon {value!r} is not a number: write it in pixel units, e.g. 8/255 or 0.03.") from None
    try:  # the library's one check of epsilon (hf_advft.attacks), with its message; the page keeps (0, 1] for L2 too
        check_attack_args(epsilon=epsilon, norm="linf", allow_zero_epsilon=False)
    except ValueError as err:
        raise AppInputError(str(err)) from None
    return epsilon


def describe_epsilon(epsilon: float, norm: str) -> str:
    """How the page writes epsilon: `8/255 (0.0314)` for L-inf, the plain value for L2."""
    if norm == "linf":
        return f"{epsilon * 255:.3g}/255 ({epsilon:.4f})"
    return f"{epsilon:.4g} (L2, pixel units)"


def _check_steps(steps: Any) -> int:
    try:
        value = float(steps)
    except (TypeError, ValueError):
        raise AppInputError(f"Steps {steps!r} is not a number: use an integer from 1 to {MAX_STEPS}.") from None
    if value != int(value) or not 1 <= value <= MAX_STEPS:
        raise AppInputError(f"Steps must be an integer from 1 to {MAX_STEPS}, got {steps!r}.")
    return int(value)


def to_pixels(image: Image.Image, model: AppModel) -> torch.Tensor:
    """The model's eval view of `image`: `(1, C, H, W)` pixels in [0, 1], resized and cropped as in training and
    `hf-advft evaluate` (`model.transform`; without one, resize the shorter side and center-crop)."""
    from .data import build_image_transform

    transform = model.transform or build_image_transform(model.size, channels=model.channels, train=False)
    return transform.pixels(image).unsqueeze(0).to(model.device)


# ------------------------------------------------------------------------------------------------------------------
# Panels
@dataclass
class AttackPanel:
    """What the page shows for one model: images (uint8 HxWx3, upscaled), top-k before/after, and the verdict."""

    model_name: str
    clean: np.ndarray
    perturbation: np.ndarray
    adversarial: np.ndarray
    clean_top: dict[str, float]
    adversarial_top: dict[str, float]
    attacked_label: str
    label_source: str
    gain: float
    linf: float
    l2: float
    fooled: bool

    def caption(self) -> str:
        verdict = "**fooled**" if self.fooled else "**not fooled**"
        best = max(self.adversarial_top, key=self.adversarial_top.get)
        return (f"Attacked label **{self.attacked_label}** ({self.label_source}); after the attack the model says "
                f"**{best}**: {verdict}. Perturbation: max |δ| = {self.linf * 255:.3g}/255, ‖δ‖₂ = {self.l2:.3g}; "
                f"shown {self.gain:.3g}x amplified around mid-grey.")


def display_image(pixels: torch.Tensor, side: int = DISPLAY_SIDE) -> np.ndarray:
    """`(C, H, W)` pixels in [0, 1] as uint8 `(H', W', 3)`, upscaled by a whole factor so each pixel stays sharp."""
    x = pixels.detach().float().cpu().clamp(0, 1)
    if x.shape[0] == 1:
        x = x.repeat(3, 1, 1)
    factor = max(1, -(-side // max(1, min(x.shape[-2:]))))
    x = x.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    return (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def perturbation_image(delta: torch.Tensor) -> tuple[torch.Tensor, float]:
    """`delta` amplified into [0, 1] around mid-grey, and the gain used (`0.5 / max|delta|`)."""
    peak = float(delta.abs().max())
    gain = 0.5 / peak if peak > 0 else 1.0
    return (0.5 + gain * delta).clamp(0, 1), gain


@torch.no_grad()
def top_predictions(model: AppModel, pixels: torch.Tensor, k: int = TOP_K) -> dict[str, float]:
    """`{class name: probability}` of the `k` most likely classes (what `gradio.Label` shows)."""
    probs = model.net(pixels).softmax(-1)[0]
    values, indices = probs.topk(min(k, probs.numel()))
    return {model.labels[i]: float(v) for v, i in zip(values.tolist(), indices.tolist())}


def attack_image(model: AppModel, image: Image.Image, *, epsilon: float, steps: int, norm: str = "linf",
                 label: str | None = None, on_step=None, seed: int = 0) -> AttackPanel:
    """PGD (`hf_advft.pgd`, random start, step `2.5 * epsilon / steps`) on `model` alone, on one image.

    Args:
        label (`str`, *optional*): The class to move away from, by name (a dataset example's label); used when the
            model has a class of that name, else (and for an upload, which has no label) the model's clean prediction.
        on_step (`Callable[[int, int], None]`, *optional*): Called after each of the `steps` gradient steps.
    """
    from .attacks import pgd

    config = RobustEvalConfig(epsilon=epsilon, norm=norm, pgd_steps=steps, attacks="pgd")  # validates, and gives
    x = to_pixels(image, model)                                                      # the evaluation's step rule
    clean_top = top_predictions(model, x)
    if label is not None and label in model.labels:
        target, source = model.labels.index(label), "the example's true label"
    else:
        with torch.no_grad():
            target = int(model.net(x).argmax(-1))
        source = "the model's clean prediction: an upload has no label"
    done = 0

    def logits_fn(pixels):
        nonlocal done
        done += 1
        if on_step is not None:
            on_step(done, steps)
        return model.net(pixels)

    generator = torch.Generator(device=x.device).manual_seed(seed)
    x_adv = pgd(logits_fn, x, torch.tensor([target], device=x.device), epsilon=epsilon,
                step_size=config.resolved_step_size(), steps=steps, norm=norm, generator=generator)
    delta = (x_adv - x)[0]
    shown, gain = perturbation_image(delta)
    adversarial_top = top_predictions(model, x_adv)
    with torch.no_grad():
        fooled = int(model.net(x_adv).argmax(-1)) != target
    return AttackPanel(model.name, display_image(x[0]), display_image(shown), display_image(x_adv[0]), clean_top,
                       adversarial_top, model.labels[target], source, gain, float(delta.abs().max()),
                       float(delta.norm()), fooled)


def run_attacks(models: list[AppModel], image: Any, epsilon: Any, steps: Any, norm: str, *,
                label: str | None = None, on_step=None) -> list[AttackPanel]:
    """Check the page's inputs (`AppInputError` otherwise) and attack each model; `on_step(model_i, done, total)`."""
    if norm not in ("linf", "l2"):
        raise AppInputError(f"Norm {norm!r} is unknown: choose linf or l2.")
    epsilon, steps, image = parse_epsilon(epsilon), _check_steps(steps), read_image(image)
    panels = []
    for i, model in enumerate(models):
        step = None if on_step is None else (lambda done, total, i=i: on_step(i, done, total))
        panels.append(attack_image(model, image, epsilon=epsilon, steps=steps, norm=norm, label=label, on_step=step))
    return panels


def robustness_panel(folder: str | None, out_dir: str | Path) -> tuple[str | None, str]:
    """`(PNG path or None, markdown)`: the robustness curve and summary of `folder/robustness.json`, if it has one."""
    path = Path(folder) / ROBUSTNESS_JSON if folder else None
    if path is None or not path.is_file():
        return None, (f"No `{ROBUSTNESS_JSON}` next to this model: run `hf-advft evaluate MODEL --dataset ...` to "
                      f"measure its robustness curve, then restart the app.")
    try:
        result = RobustnessResult.from_json(path)
    except (ValueError, TypeError, KeyError) as err:
        return None, f"`{ROBUSTNESS_JSON}` could not be read ({err})."
    png = None
    if len(result.curve_epsilons) >= 2:
        from .evaluation import plot_robustness_curve

        try:
            png = str(plot_robustness_curve(result, Path(out_dir) / "robustness_curve.png",
                                            title=Path(folder).name))
        except ImportError as err:
            logger.warning(f"No robustness curve drawn: {err}")
    # A blank line before the checks, so that markdown ends the table there.
    summary = result.summary().replace("\ngradient-masking checks", "\n\ngradient-masking checks")
    return png, f"Measured by `hf-advft evaluate` ({ROBUSTNESS_JSON}):\n\n{summary}"


# ------------------------------------------------------------------------------------------------------------------
# Space
SPACE_APP_MARKER = f"# {GENERATED_FILE_MARKER}"


def space_files(repo_id: str, *, base: str | None = None, dataset: str | None = None) -> dict[str, str]:
    """`{"app.py": ..., "requirements.txt": ...}`: the files that run `hf-advft app repo_id` as a Gradio Space."""
    from . import __version__

    args = ", ".join([repr(repo_id)] + [f"{k}={v!r}" for k, v in (("base", base), ("dataset", dataset)) if v])
    app = (f'{SPACE_APP_MARKER} {__version__} (`hf-advft push --with-app`): the robustness demo of {repo_id}.\n'
           f'# Copy it with requirements.txt into a Gradio Space, or run it locally: python app.py\n'
           f'import os\n\n'
           f'os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")\n\n'
           f'from hf_advft.app_ui import launch_app  # noqa: E402\n\n'
           f'launch_app({args}, server_name="0.0.0.0")\n')
    requirements = f"{SPACE_APP_MARKER} {__version__}\nhf-advft[app]\n"
    return {"app.py": app, "requirements.txt": requirements}
