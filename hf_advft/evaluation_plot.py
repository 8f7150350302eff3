"""The robustness curve of a [`~hf_advft.evaluation.RobustnessResult`] as a PNG (needs matplotlib).

Split from `hf_advft.evaluation`, which re-exports `plot_robustness_curve` (its public home, also `hf_advft`'s).
"""

from __future__ import annotations

from pathlib import Path

from .evaluation_config import RobustnessResult


__all__ = ["plot_robustness_curve"]


def plot_robustness_curve(result: RobustnessResult, path: str | Path, title: str | None = None) -> Path:
    """Draw accuracy against epsilon (PGD), with the AutoAttack point, as a PNG at `path` (needs matplotlib)."""
    if len(result.curve_epsilons) < 2:
        raise ValueError("The result has no robustness curve (curve_epsilons was empty).")
    try:
        # A bare Figure, not pyplot: no global backend switch or figure registry in the caller's process.
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError('Plotting needs matplotlib: pip install "hf-advft[plot]".') from err
    scale, unit = (255, ", x 1/255") if result.norm == "linf" else (1, "")
    eps = [e * scale for e in result.curve_epsilons]
    fig = Figure(figsize=(5, 3.5), dpi=120)
    ax = fig.subplots()
    ax.plot(eps, result.curve_accuracy, "o-", label=f"PGD-{result.pgd_steps}")
    if result.autoattack_accuracy is not None:
        ax.plot([result.epsilon * scale], [result.autoattack_accuracy], "r*", markersize=12, label="AutoAttack")
    ax.axvline(result.epsilon * scale, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel(f"epsilon ({'L-inf' if result.norm == 'linf' else 'L2'}{unit})")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    er = "" if result.expected_robustness is None else f", expected robustness {result.expected_robustness:.3f}"
    ax.set_title(f"{title or 'Robustness curve'}\n{result.n_examples} examples{er}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return Path(path)
