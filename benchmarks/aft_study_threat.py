"""The AFT study's saved models under the command line's threat model: gray pixels repeated into RGB, each channel
perturbed on its own.

`aft_study.py` repeats the gray channel *inside* the model, so its attacker perturbs the gray pixels (one value per
pixel, as the data has them). The recipes (`recipes/finetune_timm.py`, `hf-advft evaluate`) repeat it in the data
pipeline, before the attack, so their attacker may perturb the three channels of a pixel differently: a larger set of
perturbations at the same L-inf epsilon, hence a stronger attacker. This script attacks the study's saved models both
ways with the same PGD-20 (`hf_advft.evaluation.evaluate_robustness`, same images, same seed), so the numbers of the
shipped recipe's command-line run can be read against the study's.

`--checkpoints` goes the other way: it evaluates checkpoints saved by the recipes or `hf-advft train` (folders that
`load_robust_model` reads, with their saved normalization) with the study's own evaluation on the study's test images:
PGD-20 on its first `--n_test`, AutoAttack (`aft_study.evaluate_autoattack`) on its first `--autoattack_examples`.
A 1-channel checkpoint (`--in_chans 1`) gets the gray pixels, the study's threat model; a 3-channel one gets them
repeated into RGB and is attacked per channel.

`--export DIR` writes, for each of `--seeds`, what the recipes need to run on exactly the study's inputs:
`DIR/seed<N>/data`, a `save_to_disk` dataset of the study's 2,000 training images of that seed (its `train` split, in
the study's order, at Fashion-MNIST's own 28 px) and its test images (`test`, the first `--autoattack_examples` or
`--n_test`); and `DIR/seed<N>/clean`, the study's clean model of that seed as a 1-channel timm folder (the first
convolution summed over the repeated gray channel, which is exact because the three channels share one mean/std),
which `recipes/finetune_timm.py --model_name_or_path` takes as it takes stage 1's output.

    OMP_NUM_THREADS=1 python benchmarks/aft_study_threat.py --rows a,aft34_nfgsm,aft2_nfgsm --seeds 0,1
    OMP_NUM_THREADS=1 python benchmarks/aft_study_threat.py --rows "" --checkpoints outputs/lite0_fashion_mnist_aft \\
        --autoattack_examples 500 --json benchmarks/results/aft_study_recipe.json
    python benchmarks/aft_study_threat.py --rows "" --seeds 0,1 --export outputs/aft_study_export
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from transformers.modeling_outputs import ImageClassifierOutput  # noqa: E402


class PerChannel(nn.Module):
    """A study model (`aft_study.GrayLite0`) fed three channels as they come: the attacker perturbs each one."""

    def __init__(self, gray: nn.Module):
        super().__init__()
        self.gray = gray

    def forward(self, pixel_values, labels=None):
        return ImageClassifierOutput(logits=self.gray.net((pixel_values - self.gray.mean) / self.gray.std))


def evaluate_checkpoint(path: str, study, opts) -> dict:
    """The study's PGD-20 (first `--n_test` test images) and AutoAttack (first `--autoattack_examples`) on a checkpoint."""
    import aft_study

    from hf_advft.evaluation_utils import PixelModel
    from hf_advft.loading import load_robust_model

    robust = load_robust_model(path)
    net = PixelModel(robust.model, robust.pixel_space).eval()  # pixels in [0, 1], normalized as the checkpoint saved
    _, _, x, y = aft_study.load_data(study, 0)  # the study's test images do not depend on the seed
    channels = int(robust.preprocess.channels) if hasattr(robust.preprocess, "channels") else 3
    if channels != 1:
        x = x.expand(-1, channels, -1, -1).contiguous()
    row = {"checkpoint": path, "channels": channels, "threat": "gray" if channels == 1 else "per_channel",
           "normalization": robust.pixel_space.source, **aft_study.evaluate(net, x, y, study)}
    if opts.autoattack_examples:
        row.update(aft_study.evaluate_autoattack(net, x, y, study))
    return row


def export_seed(seed: int, study, directory: str) -> dict:
    """The study's training and test images of `seed` as a `save_to_disk` dataset, and its clean model of `seed` as a
    1-channel timm folder (`config.json` + `model.safetensors`), under `directory`."""
    import aft_study
    import datasets
    import numpy as np
    from PIL import Image
    from safetensors.torch import save_file

    from hf_advft.data import FASHION_MNIST_LABELS, load_fashion_mnist_arrays
    from hf_advft.modeling import describe_timm_task, load_timm_classifier, save_timm_config

    clean_path = os.path.join(study.output_dir, f"clean_seed{seed}.pt")
    if not os.path.isfile(clean_path):
        raise SystemExit(f"{clean_path} is missing: run the study's clean row of seed {seed} first "
                         f"(`python benchmarks/aft_study.py --rows clean --seeds {seed} --output_dir {study.output_dir}`).")
    # The images as the study draws them (aft_study.load_data), before its resize: the recipes resize them themselves.
    x_tr, y_tr = load_fashion_mnist_arrays(study.data_dir, "train")
    x_te, y_te = load_fashion_mnist_arrays(study.data_dir, "test")
    tr, te = (idx.numpy() for idx in aft_study.subset_indices(study, seed, len(y_tr), len(y_te)))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=FASHION_MNIST_LABELS)})

    def split(x, y, idx):
        return datasets.Dataset.from_dict({"image": [Image.fromarray(np.asarray(x[i], dtype=np.uint8)) for i in idx],
                                           "label": [int(y[i]) for i in idx]}, features=features)

    out = os.path.join(directory, f"seed{seed}")
    datasets.DatasetDict({"train": split(x_tr, y_tr, tr), "test": split(x_te, y_te, te)}).save_to_disk(
        os.path.join(out, "data"))
    # The clean model: GrayLite0 repeats the gray channel and normalizes each copy alike, so a 1-channel network with
    # the first convolution summed over the colors computes the same function on the gray pixels.
    state = aft_study.gray_state(torch.load(clean_path, weights_only=True), clean_path)
    mean, std = state.pop("mean").flatten(), state.pop("std").flatten()
    state = {k.removeprefix("net."): v for k, v in state.items()}
    name = study.weights_dir if os.path.isdir(study.weights_dir) else "tf_efficientnet_lite0"
    net = load_timm_classifier(name, num_labels=len(FASHION_MNIST_LABELS), pretrained=False, in_chans=1)
    net.load_state_dict(state)
    net.pretrained_cfg.update(mean=(float(mean[0]),), std=(float(std[0]),))
    describe_timm_task(net, label_names=list(FASHION_MNIST_LABELS), input_size=(1, study.image_size, study.image_size),
                       crop_pct=1.0, interpolation="bilinear")  # the study's geometry: resize, crop nothing
    clean = os.path.join(out, "clean")
    os.makedirs(clean, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, os.path.join(clean, "model.safetensors"))
    save_timm_config(net, clean)
    return {"seed": seed, "data": os.path.join(out, "data"), "clean": clean, "n_train": len(tr), "n_test": len(te)}


def main(opts) -> dict:
    import aft_study

    from hf_advft.evaluation import evaluate_robustness

    study = aft_study.make_parser().parse_args(["--aft_lr", str(opts.aft_lr), "--output_dir", opts.output_dir,
                                                "--data_dir", opts.data_dir, "--n_test", str(opts.n_test),
                                                "--weights_dir", opts.weights_dir, "--n_train", str(opts.n_train),
                                                "--autoattack_examples", str(opts.autoattack_examples)])
    torch.set_num_threads(opts.threads)
    rows = []
    for seed in [int(s) for s in opts.seeds.split(",") if opts.rows.strip()]:
        _, _, x, y = aft_study.load_data(study, seed)
        x, y = x[:opts.n_test], y[:opts.n_test]
        for key in [k.strip() for k in opts.rows.split(",") if k.strip()]:
            model = aft_study.build_model(study, pretrained=False, seed=seed)
            model.load_state_dict(torch.load(aft_study._model_path(study, key, seed), weights_only=True))
            # the hash of the weights measured: the study's row of the same key and seed records the same one
            row = {"key": key, "seed": seed, "n": len(y), "weights_sha256": aft_study.model_weights_sha256(model)}
            for name, net, inputs in (("gray", model, x), ("per_channel", PerChannel(model), x.expand(-1, 3, -1, -1))):
                start = time.perf_counter()
                res = evaluate_robustness(net, (inputs.contiguous(), y), epsilon=study.epsilon, attacks=("pgd",),
                                          pgd_steps=20, n_examples=len(y), curve_epsilons=(), masking_checks=False,
                                          seed=0, batch_size=250)
                row[f"{name}_clean_accuracy"], row[f"{name}_pgd20_accuracy"] = res.clean_accuracy, res.pgd_accuracy
                row[f"{name}_seconds"] = round(time.perf_counter() - start, 1)
            print(json.dumps(row), flush=True)
            rows.append(row)
    exported = [export_seed(int(s), study, opts.export) for s in opts.seeds.split(",")] if opts.export else []
    checkpoints = []
    for path in [p.strip() for p in opts.checkpoints.split(",") if p.strip()]:
        checkpoints.append(evaluate_checkpoint(path, study, opts))
        print(json.dumps({k: v for k, v in checkpoints[-1].items() if k != "autoattack_parts"}), flush=True)
    report = {"command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "epsilon": study.epsilon, "rows": rows, "checkpoints": checkpoints, "exported": exported}
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="a,aft34_nfgsm,aft2_nfgsm", help="Row keys of saved study models.")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--aft_lr", type=float, default=9e-4, help="The study run's --aft_lr (its settings).")
    p.add_argument("--output_dir", default="outputs/aft_study_lr9e-4", help="The study run's saved models.")
    p.add_argument("--data_dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--n_test", type=int, default=200, help="The study's PGD-20 images (its first --n_test).")
    p.add_argument("--n_train", type=int, default=2000, help="The study's training images (--export writes them).")
    p.add_argument("--checkpoints", default="", help="Comma-separated checkpoint folders (recipes, hf-advft train) to "
                                                      "evaluate with the study's evaluation on its test images.")
    p.add_argument("--autoattack_examples", type=int, default=0,
                   help="AutoAttack (the study's APGD-CE + APGD-T) on this many test images of each checkpoint; 0: none.")
    p.add_argument("--export", default="", help="Write the study's images and clean model of each of --seeds under this "
                                                "folder, for the recipes (see above).")
    p.add_argument("--weights_dir", default="weights/efficientnet_lite0_in1k",
                   help="The study's converted ImageNet weights (the architecture of --export's clean model).")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default="benchmarks/results/aft_study_threat.json")
    return p


if __name__ == "__main__":
    main(make_parser().parse_args())
