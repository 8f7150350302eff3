"""`hf-advft evaluate`: robust accuracy of a saved classifier, written as `robustness.json` and `robustness.png`.

    hf-advft evaluate ./my-robust-vit --dataset digits --epsilon 8/255 --attack pgd,autoattack --n_examples 500
    hf-advft evaluate ./timm-checkpoint --dataset ./my_imagefolder --split test --attack pgd --device cuda
    hf-advft evaluate ./my-robust-vit --dataset digits --gallery 6 --base_model google/vit-base-patch16-224-in21k

`MODEL_OR_PATH` is read by `hf_advft.hub.load_robust_model`: a local folder or a Hub repo id holding a transformers
checkpoint (`config.json`, `model.safetensors`, `preprocessor_config.json` when there is a processor) or a timm one
(timm's `config.json` with `architecture`, `model.safetensors`); its normalization comes from `adv_config.json`, the
image processor or timm's `pretrained_cfg` (`--image_mean/--image_std` override). `--dataset` is read by
`hf_advft.data.load_image_dataset`: the offline built-ins `digits` and `fashion_mnist`, a local imagefolder or
`save_to_disk` directory, or a Hub dataset id. A checkpoint saved by the recipes records its eval examples
(`adv_results.json` `eval_data`: dataset, split or hold-out percentage, seed): without `--dataset`, or with the same
dataset and no `--split`, exactly those are evaluated. Every `RobustEvalConfig` field is a flag (`--pgd_steps 50`).
`--gallery [N]` also draws N adversarial examples (PGD at `--epsilon`) as `adversarial_gallery.png`, beside those of
`--base_model` when given (`hf_advft.gallery.plot_adversarial_gallery`).
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
from dataclasses import MISSING, fields
from pathlib import Path

import torch

from .evaluation import (
    ROBUSTNESS_JSON,
    ROBUSTNESS_PNG,
    RobustEvalConfig,
    evaluate_robustness,
    plot_robustness_curve,
)
from .evaluation_utils import import_autoattack
from .hub import load_robust_model
from .pixel_space import PixelSpace, resolve_pixel_space


__all__ = ["add_evaluate_command", "run_evaluate"]


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "y"):
        return True
    if text.lower() in ("0", "false", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true/false)")


def _floats(text: str) -> tuple[float, ...]:
    from .cli import parse_fraction

    return tuple(parse_fraction(part) for part in text.split(",") if part.strip())


def _flag_type(hint):
    from .cli import parse_fraction

    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if args and typing.get_origin(hint) is not tuple else hint
    if typing.get_origin(base) is tuple:
        return _floats if typing.get_args(base)[0] is float else str
    return {float: parse_fraction, int: int, bool: _parse_bool}.get(base, str)


def add_evaluate_command(subparsers) -> argparse.ArgumentParser:
    """Add `evaluate` to the `hf-advft` sub-commands; its flags are the `RobustEvalConfig` fields plus model/data."""
    parser = subparsers.add_parser(
        "evaluate", help="Robust accuracy (PGD, AutoAttack, curve, gradient-masking checks) of a saved classifier.",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL_OR_PATH", help="Local transformers/timm checkpoint or Hub id.")
    parser.add_argument("--dataset", default=None,
                        help="'digits', 'fashion_mnist', a local imagefolder or save_to_disk directory, or a Hub id. "
                             "Default: the dataset recorded in the checkpoint's adv_results.json (eval_data).")
    parser.add_argument("--split", default=None, help="Split to evaluate. Default: the eval examples recorded in the "
                                                      "checkpoint (same dataset); else the first of validation, "
                                                      "valid, val, test; else 10%% of train, held out with seed 0.")
    parser.add_argument("--image_column", "--image-column", default=None, help="Image column (default: found).")
    parser.add_argument("--label_column", "--label-column", default=None, help="Label column (default: found).")
    parser.add_argument("--output_dir", "--output-dir", default=None,
                        help="Where robustness.json/.png go. Default: MODEL_OR_PATH if it is a local directory, "
                             "else the current directory.")
    parser.add_argument("--device", default=None, help="'cpu', 'cuda', ... Default: cuda when available.")
    parser.add_argument("--image_mean", "--image-mean", type=_floats, default=None,
                        help="Normalization mean of the model inputs, e.g. 0.5,0.5,0.5 (default: processor, timm "
                             "config or adv_config.json).")
    parser.add_argument("--image_std", "--image-std", type=_floats, default=None, help="Normalization std.")
    parser.add_argument("--no_progress", "--no-progress", action="store_true", help="No progress bars.")
    parser.add_argument("--gallery", type=int, nargs="?", const=6, default=None, metavar="N",
                        help="Also draw N (default 6) adversarial examples as adversarial_gallery.png.")
    parser.add_argument("--base_model", "--base-model", default=None, metavar="MODEL_OR_PATH",
                        help="The model before adversarial fine-tuning, attacked beside MODEL_OR_PATH in the gallery.")
    hints = typing.get_type_hints(RobustEvalConfig)
    for f in fields(RobustEvalConfig):
        names = [f"--{f.name}", f"--{f.name.replace('_', '-')}"]
        if f.name == "attacks":
            names += ["--attack"]
        default = f.default if f.default is not MISSING else None
        if isinstance(default, tuple):
            default = ",".join(map(str, default))
        parser.add_argument(*dict.fromkeys(names), dest=f.name, type=_flag_type(hints[f.name]), default=default,
                            help=f.metadata.get("help", "").replace("%", "%%") + f" (default: {default})")
    parser.set_defaults(func=run_evaluate)
    return parser


# ------------------------------------------------------------------------------------------------------------------
def _pixel_space(args, robust) -> PixelSpace:
    if args.image_mean is not None or args.image_std is not None:
        return resolve_pixel_space(args.image_mean, args.image_std)
    return robust.pixel_space  # adv_config.json's mean/std > the image processor's > timm's pretrained_cfg


def _recorded_eval_data(args, results: dict | None) -> dict | None:
    """The checkpoint's recorded eval examples, when the command line asks for that dataset (or for none)."""
    recorded = (results or {}).get("eval_data")
    if args.dataset is None:
        if recorded is None:
            raise SystemExit(f"hf-advft evaluate: error: {args.model} records no eval dataset (adv_results.json "
                             f"eval_data): pass --dataset.")
        return recorded
    same = recorded is not None and (args.dataset == recorded["dataset"] or (
        os.path.isdir(args.dataset) and os.path.abspath(args.dataset) == recorded["dataset"]))
    return recorded if same and args.split is None and args.image_column is None and args.label_column is None \
        else None


def _eval_split(args, model, processor, space: PixelSpace, recorded: dict | None):
    from .data import load_eval_source, load_image_dataset, model_image_transform, set_image_transforms

    if recorded is not None:  # the training run's own eval examples: same split or hold-out, seed and subset
        data = load_eval_source(recorded)
    else:
        # Only the evaluated split is needed: naming it as the "train" split too lets a dataset that has no train
        # split (a save_to_disk folder holding just "test") load.
        data = load_image_dataset(args.dataset, train_split=args.split or "train", eval_split=args.split,
                                  image_column=args.image_column, label_column=args.label_column)
    # The eval transform training used: the model's own resize, crop and interpolation (timm's data config, or the
    # image processor), then the normalization `space`.
    return set_image_transforms(data, None, model_image_transform(model, processor=processor, pixel_space=space))


def _write_gallery(args, model, data, space: PixelSpace, config: RobustEvalConfig, device, path: Path) -> Path:
    import warnings

    from .evaluation_utils import collect_examples, to_pixels
    from .gallery import plot_adversarial_gallery

    inputs, labels = collect_examples(data.eval, args.gallery, data.pixel_key, data.label_key)
    base = None
    if args.base_model is not None:
        with warnings.catch_warnings():  # a base model has no adv_config.json: that is expected here
            warnings.simplefilter("ignore", UserWarning)
            base = load_robust_model(args.base_model)
    return plot_adversarial_gallery(
        model, to_pixels(space, inputs), labels, path, pixel_space=space,
        base_model=None if base is None else base.model, base_pixel_space=None if base is None else base.pixel_space,
        epsilon=config.epsilon, steps=config.pgd_steps, step_size=config.resolved_step_size(), norm=config.norm,
        n=args.gallery, label_names=data.label_names, model_name=Path(args.model).name[:24] or "robust",
        base_name=Path(args.base_model).name[:24] if base is not None else "base", device=device, seed=config.seed,
    )


def run_evaluate(args) -> int:
    """The `evaluate` command: load, attack, write `robustness.json` and `robustness.png`, print the summary."""
    # A ValueError (bad flag value) or ImportError (missing extra) becomes one line on stderr in hf_advft.cli.main.
    config = RobustEvalConfig(**{f.name: getattr(args, f.name) for f in fields(RobustEvalConfig)})
    if args.gallery is not None and args.gallery < 1:
        raise ValueError(f"--gallery {args.gallery}: give the number of images to draw, at least 1.")
    if config.needs_autoattack_package():
        import_autoattack()
    robust = load_robust_model(args.model)  # a local folder or a Hub id, transformers or timm, safetensors only
    model, library = robust.model, robust.library
    processor = robust.preprocess if library == "transformers" else None
    space = _pixel_space(args, robust)
    recorded = _recorded_eval_data(args, robust.results)
    data = _eval_split(args, model, processor, space, recorded)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    result = evaluate_robustness(
        model, data.eval, config, pixel_space=space, device=device,
        pixel_key=data.pixel_key, label_key=data.label_key, show_progress=not args.no_progress,
    )
    dataset = recorded["dataset"] if recorded is not None else args.dataset
    reused = f", the eval examples recorded at training, seed {recorded['seed']}" if recorded is not None else ""
    result.notes.append(f"model {args.model} ({library}), dataset {dataset} ({data.eval_split}{reused}), "
                        f"normalization from {space.source}")
    out_dir = Path(args.output_dir or (args.model if os.path.isdir(args.model) else "."))
    out_dir.mkdir(parents=True, exist_ok=True)
    result.to_json(out_dir / ROBUSTNESS_JSON)
    written = [str(out_dir / ROBUSTNESS_JSON)]
    try:
        plot_robustness_curve(result, out_dir / ROBUSTNESS_PNG, title=f"{Path(args.model).name} on {dataset}")
        written.append(str(out_dir / ROBUSTNESS_PNG))
    except ImportError as err:
        sys.stdout.write(f"hf-advft evaluate: no plot ({err})\n")
    except ValueError:
        pass  # the curve was switched off (--curve_epsilons ""): nothing to draw
    if args.gallery is not None:
        from .gallery import GALLERY_PNG

        written.append(str(_write_gallery(args, model, data, space, config, device, out_dir / GALLERY_PNG)))
    # The command's output for the person at the terminal (the library itself never prints).
    sys.stdout.write(result.summary() + "\n")
    sys.stdout.write("wrote " + ", ".join(written) + "\n")
    return 0
