"""The report of `aft_study.py`: the verdict, the markdown table and the plot, from the rows of its JSON."""

from __future__ import annotations

import logging
import os


logger = logging.getLogger("aft_study")
# Below this robust accuracy (a) has learned nothing to reach: the verdict says so instead of a vacuous "yes".
MIN_BASELINE_ROBUSTNESS = 0.05


def _robust(row):
    """AutoAttack accuracy where it ran, else PGD-20 (marked so in the table and plot)."""
    return row["autoattack_accuracy"] if row.get("autoattack_accuracy") is not None else row["pgd20_accuracy"]


def _total(row) -> int:
    return row["attack_passes"] + row["update_passes"] + row.get("pretrain_passes", 0)


def verdict(rows) -> dict:
    """Which AFT row reaches (a)'s robust accuracy, with clean accuracy no lower, at the fewest adversarial passes?

    Judged on AutoAttack where (a) and some AFT rows have it (those rows only), else on PGD-20 (every AFT row).
    """
    done = [r for r in rows if r["status"] == "done"]
    done = [r for r in done if r["seed"] == min(x["seed"] for x in done)]
    a = next((r for r in done if r["key"] == "a"), None)
    aft = [r for r in done if r["key"].startswith("aft")]
    if a is None or not aft:
        return {"text": "No verdict: (a) or every AFT row is missing.", "reaches": None, "metric": None}
    with_aa = [r for r in aft if r.get("autoattack_accuracy") is not None]
    if a.get("autoattack_accuracy") is not None and with_aa:
        metric, comparable, score = "AutoAttack", with_aa, _robust
    else:
        metric, comparable, score = "PGD-20", aft, (lambda r: r["pgd20_accuracy"])
    if score(a) < MIN_BASELINE_ROBUSTNESS:  # "reaching" a baseline with no robustness would mean nothing
        best = max(comparable, key=lambda r: (score(r), r["clean_accuracy"]))
        return {"text": f"NO VERDICT: (a) itself learned no robustness ({metric} {score(a):.3f}, clean "
                        f"{a['clean_accuracy']:.3f}), so reaching it means nothing; the best AFT row, {best['label']}, "
                        f"has {metric} {score(best):.3f}. The budget is too small for the comparison.",
                "metric": metric, "reaches": None, "best": best["key"],
                "adversarial_ratio": best["attack_passes"] / a["attack_passes"], "target_met": False}
    reaching = sorted((r for r in comparable if score(r) >= score(a) and r["clean_accuracy"] >= a["clean_accuracy"]),
                      key=lambda r: r["attack_passes"])
    best = reaching[0] if reaching else max(comparable, key=lambda r: (score(r), r["clean_accuracy"]))  # ties: cleaner
    ratio = best["attack_passes"] / a["attack_passes"]
    if reaching:
        text = (f"YES at {ratio:.3f}x (1/{1 / ratio:.1f}) of (a)'s adversarial passes: {best['label']} reaches "
                f"{metric} {score(best):.3f} (a: {score(a):.3f}) with clean accuracy {best['clean_accuracy']:.3f} "
                f"(a: {a['clean_accuracy']:.3f}). The target (<= 1/4) is "
                f"{'met' if ratio <= 0.25 + 1e-9 else 'NOT met'}.")
    else:
        text = (f"NO: no AFT row reaches (a)'s {metric} accuracy {score(a):.3f} with clean accuracy no lower than "
                f"its {a['clean_accuracy']:.3f}. The best, {best['label']}, reaches {metric} {score(best):.3f} "
                f"and clean {best['clean_accuracy']:.3f} at {ratio:.3f}x of (a)'s adversarial passes.")
    return {"text": text, "metric": metric, "reaches": bool(reaching), "best": best["key"], "adversarial_ratio": ratio,
            "target_met": bool(reaching) and ratio <= 0.25 + 1e-9}


def ordered(rows) -> list:
    """The rows by seed; the baselines first, then the AFT rows by budget (1/8, 1/4, 1/2, 3/4), each in `ROWS` order,
    whatever order they finished in."""
    from aft_study_rows import ROWS

    order = {key: i for i, key in enumerate(ROWS)}

    def key(r):
        aft = r["key"].startswith("aft")
        budget = ROWS[r["key"]][2] if aft and r["key"] in ROWS else 0
        return r["seed"], aft, budget, order.get(r["key"], len(order)), r["key"]

    return sorted(rows, key=key)


def to_markdown(report) -> str:
    lines = ["| row | seed | clean acc | PGD-20 acc | AutoAttack acc (APGD-CE+T) | adversarial fwd+bwd | "
             "total fwd+bwd | train s | eval s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in ordered(report["rows"]):
        if r["status"] != "done":
            why = r["why"] if r["status"] == "not run" else "failed: the JSON's `why` holds the log's tail"
            lines.append(f"| {r['label']} | {r['seed']} | {why} | | | | | | |")
            continue
        aa = f"{r['autoattack_accuracy']:.3f} (n={r['n_autoattack']})" if r["autoattack_accuracy"] is not None \
            else "not run"
        lines.append(f"| {r['label']} | {r['seed']} | {r['clean_accuracy']:.3f} | {r['pgd20_accuracy']:.3f} | {aa} | "
                     f"{r['attack_passes']:,} | {_total(r):,} | {r['train_seconds']:.0f} | {r['eval_seconds']:.0f} |")
    return "\n".join(lines)


def plot(report, opts) -> str | None:
    """AutoAttack accuracy (PGD-20, hollow, where AutoAttack did not run) against adversarial passes, one marker a row."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no plot (pip install matplotlib).")
        return None
    rows = [r for r in ordered(report["rows"]) if r["status"] == "done" and r["key"] != "clean"]
    fig, ax = plt.subplots(figsize=(8, 5))
    markers = "osD^v<>pPhX*dH8"
    for i, r in enumerate(rows):
        aa = r.get("autoattack_accuracy") is not None
        color = "black" if r["key"].startswith("a") and not r["key"].startswith("aft") else f"C{i % 10}"
        ax.scatter([max(r["attack_passes"], 1)], [_robust(r)], marker=markers[i % len(markers)], s=70,
                   facecolors=color if aa else "none", edgecolors=color, zorder=3,
                   label=f"{r['label']} (seed {r['seed']}){'' if aa else ' [PGD-20]'}")
    a = next((r for r in rows if r["key"] == "a"), None)
    if a is not None:
        ax.axhline(_robust(a), color="gray", ls="--", lw=1)
        ax.axvline(a["attack_passes"] / 4, color="gray", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("adversarial forward+backward passes (training attack)")
    ax.set_ylabel(f"AutoAttack (APGD-CE + APGD-T) accuracy, L-inf eps={opts.epsilon:g}")
    ax.set_title(f"EfficientNet-Lite0 on Fashion-MNIST, {opts.image_size} px, {opts.n_train:,} train images")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    os.makedirs(os.path.dirname(opts.plot) or ".", exist_ok=True)
    fig.savefig(opts.plot, dpi=110)
    plt.close(fig)
    return opts.plot


