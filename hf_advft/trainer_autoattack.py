"""The end-of-training AutoAttack of `AdvTrainer` (`adv_autoattack_examples`), through `evaluate_robustness`.

Kept apart from `hf_advft.evaluation`, which never needs a trainer: this is the one place that reads a trainer's
arguments, eval data and processes to run the evaluation and reduce its counts.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from transformers.utils import logging

from .evaluation import ROBUSTNESS_JSON, ROBUSTNESS_PNG, evaluate_robustness, plot_robustness_curve


logger = logging.get_logger("hf_advft.evaluation")  # the evaluation's logger, as users see it

__all__ = ["autoattack_metrics"]


def autoattack_metrics(trainer, metric_key_prefix: str = "eval") -> dict[str, float]:
    """AutoAttack on `args.adv_autoattack_examples` eval examples, for the end of `AdvTrainer.train()`.

    Returns `{prefix}_autoattack_accuracy` (plus the clean accuracy of the same examples, their count, the runtime and
    the number of failed gradient-masking checks). Each process attacks its own shard of the eval set (about
    `n / num_processes` examples) and the counts are summed. In a single process the full [`RobustnessResult`] is also
    written to `output_dir/robustness.json` (and `robustness.png` when matplotlib is installed).
    """
    args, accelerator = trainer.args, trainer.accelerator
    n = args.adv_autoattack_examples
    if trainer.eval_dataset is None:
        logger.warning("adv_autoattack_examples is set but there is no eval_dataset: AutoAttack skipped.")
        return {}
    ds_plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if trainer.is_fsdp_enabled or (trainer.is_deepspeed_enabled and getattr(ds_plugin, "zero_stage", 0) == 3):
        # Sharded parameters need every process in each forward, and AutoAttack's early stopping depends on the data.
        logger.warning("AutoAttack after training is not supported under FSDP / DeepSpeed ZeRO-3: run "
                       "`hf-advft evaluate` on the saved checkpoint instead.")
        return {}
    model = accelerator.unwrap_model(trainer.model)
    names = list(trainer.eval_dataset) if isinstance(trainer.eval_dataset, dict) else [None]
    metrics = {}
    for name in names:
        prefix = metric_key_prefix if name is None else f"{metric_key_prefix}_{name}"
        start = time.perf_counter()
        result = evaluate_robustness(
            model, trainer.get_eval_dataloader(name), attacks=("autoattack",), epsilon=args.eval_epsilon,
            norm=args.adv_norm, n_examples=math.ceil(n / accelerator.num_processes), batch_size=args.eval_batch_size,
            seed=args.seed, pixel_space=trainer.pixel_space, device=args.device,
            pixel_key=args.adv_pixel_key, label_key=args.adv_label_key,
        )
        trace = result.autoattack_trace  # the components that ran, in order (every process has as many classes)
        counts = torch.tensor([result.n_examples, result.clean_accuracy * result.n_examples,
                               result.autoattack_accuracy * result.n_examples, len(result.failed_checks),
                               *(acc * result.n_examples for acc in trace.values())],
                              device=args.device, dtype=torch.float64)
        counts = accelerator.reduce(counts, reduction="sum")
        metrics.update({
            f"{prefix}_autoattack_accuracy": round(float(counts[2] / counts[0]), 6),
            f"{prefix}_autoattack_clean_accuracy": round(float(counts[1] / counts[0]), 6),
            f"{prefix}_autoattack_examples": int(counts[0]),
            f"{prefix}_autoattack_masking_checks_failed": int(counts[3]),
            f"{prefix}_autoattack_runtime": round(time.perf_counter() - start, 4),
            f"{prefix}_autoattack_precision": result.precision,
        })
        # Accuracy after each component that ran (`..._after_apgd-ce`, ...): the card names what ran from these keys.
        for i, component in enumerate(trace):
            metrics[f"{prefix}_autoattack_after_{component}"] = round(float(counts[4 + i] / counts[0]), 6)
        if accelerator.num_processes == 1 and args.should_save:
            out_dir = Path(args.output_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            stem = "" if name is None else f"{name}_"
            result.to_json(out_dir / f"{stem}{ROBUSTNESS_JSON}")
            try:
                plot_robustness_curve(result, out_dir / f"{stem}{ROBUSTNESS_PNG}")
            except ImportError:
                pass  # the plot is optional (`hf-advft[plot]`); the JSON holds the same curve
    return metrics
