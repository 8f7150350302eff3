"""Evaluation helpers that work offline (`evaluate.load("accuracy")` needs the Hub)."""

from __future__ import annotations

import numpy as np


def compute_accuracy(eval_pred) -> dict[str, float]:
    """`compute_metrics` for `Trainer`: top-1 accuracy from logits, reported as `eval_accuracy`."""
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    return {"accuracy": float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())}
