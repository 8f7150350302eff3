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


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def verdict(rows, base: str = "a", name: str = "(a)") -> dict:
    """Which AFT row reaches the baseline's robust accuracy (by default (a)'s), clean accuracy no lower, at the fewest
    adversarial passes?

    A row is compared with (a) on the seeds both have, by the means over those seeds (one seed is one comparison; two
    seeds are judged on their average, not on the luckier one). Judged on AutoAttack where (a) and some AFT rows have
    it (those rows, on the seeds where both have it), else on PGD-20 (every AFT row). `base` names the baseline row
    (`"a_long"`, `"a_long4"`, `"a_long8"`: PGD-AT at 2x, 4x and 8x (a)'s budget, the check that (a) had plateaued), `name` how the
    text calls it (in parentheses: `"(a2x)"`); the ratios are of the baseline's adversarial passes.
    """
    done = [r for r in rows if r["status"] == "done"]
    a_by_seed = {r["seed"]: r for r in done if r["key"] == base}
    aft = [r for r in done if r["key"].startswith("aft") and r["seed"] in a_by_seed]
    if not a_by_seed or not aft:
        return {"text": f"No verdict: {name} or every AFT row is missing.", "reaches": None, "metric": None}

    def has_aa(r):
        return r.get("autoattack_accuracy") is not None

    if any(has_aa(r) and has_aa(a_by_seed[r["seed"]]) for r in aft):
        metric, score = "AutoAttack", _robust
        aft = [r for r in aft if has_aa(r) and has_aa(a_by_seed[r["seed"]])]
    else:
        metric, score = "PGD-20", (lambda r: r["pgd20_accuracy"])
    groups = {}
    for r in aft:
        groups.setdefault(r["key"], []).append(r)
    entries = []
    for key, group in groups.items():
        group = sorted(group, key=lambda r: r["seed"])
        theirs = [a_by_seed[r["seed"]] for r in group]
        entries.append({"key": key, "label": group[0]["label"], "seeds": [r["seed"] for r in group],
                        "score": _mean(map(score, group)), "clean": _mean(r["clean_accuracy"] for r in group),
                        "a_score": _mean(map(score, theirs)), "a_clean": _mean(r["clean_accuracy"] for r in theirs),
                        "ratio": group[0]["attack_passes"] / theirs[0]["attack_passes"]})
    a_score = _mean(score(r) for r in a_by_seed.values() if metric == "PGD-20" or has_aa(r))
    if a_score < MIN_BASELINE_ROBUSTNESS:  # "reaching" a baseline with no robustness would mean nothing
        best = max(entries, key=lambda e: (e["score"], e["clean"]))
        return {"text": f"NO VERDICT: {name} itself learned no robustness ({metric} {a_score:.3f}), so reaching it means "
                        f"nothing; the best AFT row, {best['label']}, has {metric} {best['score']:.3f}. The budget is "
                        f"too small for the comparison.",
                "metric": metric, "reaches": None, "best": best["key"], "adversarial_ratio": best["ratio"],
                "target_met": False}
    reaching = sorted((e for e in entries if e["score"] >= e["a_score"] and e["clean"] >= e["a_clean"]),
                      key=lambda e: e["ratio"])
    # none reaching: the closest to (a) on its own seeds; ties go to the cleaner row
    best = reaching[0] if reaching else max(entries, key=lambda e: (e["score"] - e["a_score"], e["clean"]))
    ratio = best["ratio"]
    short = name.strip("()")  # "(a)" -> "a: 0.395" in the parentheses
    seeds = f"seed {best['seeds'][0]}" if len(best["seeds"]) == 1 else \
        f"mean of seeds {', '.join(map(str, best['seeds']))}"
    if reaching:
        text = (f"YES at {ratio:.3f}x (1/{1 / ratio:.1f}) of {name}'s adversarial passes: {best['label']} reaches "
                f"{metric} {best['score']:.3f} ({short}: {best['a_score']:.3f}) with clean accuracy {best['clean']:.3f} "
                f"({short}: {best['a_clean']:.3f}; {seeds}).")
        if base == "a":  # the issue's target is a fraction of (a)'s passes
            text += f" The target (<= 1/4) is {'met' if ratio <= 0.25 + 1e-9 else 'NOT met'}."
    else:
        text = (f"NO: no AFT row reaches {name}'s {metric} accuracy with clean accuracy no lower, on the seeds both "
                f"have. The closest, {best['label']}, reaches {metric} {best['score']:.3f} ({short}: "
                f"{best['a_score']:.3f}) and clean {best['clean']:.3f} ({short}: {best['a_clean']:.3f}; {seeds}) at "
                f"{ratio:.3f}x of {name}'s adversarial passes.")
    return {"text": text, "metric": metric, "reaches": bool(reaching), "best": best["key"], "adversarial_ratio": ratio,
            "seeds": best["seeds"], "target_met": base == "a" and bool(reaching) and ratio <= 0.25 + 1e-9}


# PGD-AT from random init at more than (a)'s budget: had (a) plateaued? One more verdict against each that ran.
LONGER_BASELINES = (("a_long", "verdict_2x", "(a2x)", "twice"), ("a_long4", "verdict_4x", "(a4x)", "four times"),
                    ("a_long8", "verdict_8x", "(a8x)", "eight times"))


def judge(report) -> list[str]:
    """Set `report["verdict"]` (against (a)) and, for each longer PGD-AT baseline that ran (`LONGER_BASELINES`: two, four
    and eight times (a)'s budget), `report["verdict_2x"]` / `"verdict_4x"` / `"verdict_8x"` (against it: had (a)
    plateaued?); return their texts."""
    report["verdict"] = verdict(report["rows"])
    keys = ["verdict"]
    for base, field, name, times in LONGER_BASELINES:
        report.pop(field, None)
        if any(r["key"] == base and r["status"] == "done" for r in report["rows"]):
            report[field] = verdict(report["rows"], base=base, name=name)
            report[field]["text"] = (f"Against {name}, PGD-AT from random init at {times} (a)'s budget: "
                                     + report[field]["text"])
            keys.append(field)
    return [report[k]["text"] for k in keys]


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
        label = r["label"]
        if r.get("best_step") is not None:  # robust early stopping: which epoch's weights, and where training stopped
            per_epoch = r["steps"] / r["epochs"]
            label += (f" (kept epoch {r['best_step'] / per_epoch:.3g}, stopped at {r['epochs']:.3g} of "
                      f"{r['budget_epochs']:.3g}; incl. {r['selection_passes']:,} held-out PGD passes)")
        lines.append(f"| {label} | {r['seed']} | {r['clean_accuracy']:.3f} | {r['pgd20_accuracy']:.3f} | {aa} | "
                     f"{r['attack_passes']:,} | {_total(r):,} | {r['train_seconds']:.0f} | {r['eval_seconds']:.0f} |")
    return "\n".join(lines)


def _budget_name(fraction: float) -> str:
    """A fraction of A as the tables write it: A/8, A/4, A/2, 3A/4, A, 2A, ..."""
    from fractions import Fraction

    f = Fraction(fraction).limit_denominator(64)
    return f"{'' if f.numerator == 1 else f.numerator}A{'' if f.denominator == 1 else f'/{f.denominator}'}"


def budget_table(report) -> str:
    """Each technique (the AFT rows of one technique, the PGD-AT baselines of one start) over the budgets it ran at:
    AutoAttack accuracy (PGD-20 marked "pgd" where AutoAttack did not run) and clean accuracy, means over the seeds
    that ran (their count where more than one)."""
    from aft_study_rows import ROWS

    groups, budgets = {}, set()
    for r in report["rows"]:
        if r["status"] != "done" or r["key"] not in ROWS or ROWS[r["key"]][2] is None:
            continue
        label, start, fraction, _ = ROWS[r["key"]]
        if start == "clean":
            name = "AFT, " + label.split(", ", 1)[1]
        else:
            name = "PGD-AT from random init" if start == "random" else "(e) PGD-AT from the ImageNet weights"
        groups.setdefault(name, {}).setdefault(fraction, []).append(r)
        budgets.add(fraction)
    budgets, index = sorted(budgets), {key: i for i, key in enumerate(ROWS)}
    first = {name: min(index[r["key"]] for rows in by_budget.values() for r in rows) for name, by_budget in groups.items()}
    lines = ["| AutoAttack (clean) accuracy, mean over seeds | " + " | ".join(_budget_name(b) for b in budgets) + " |",
             "|---" * (len(budgets) + 1) + "|"]
    for name in sorted(groups, key=lambda n: (not n.startswith(("PGD-AT", "(e)")), first[n])):
        cells = []
        for b in budgets:
            rows = groups[name].get(b)
            if not rows:
                cells.append("")
                continue
            pgd_only = any(r.get("autoattack_accuracy") is None for r in rows)
            seeds = f"; {len(rows)} seeds" if len(rows) > 1 else ""
            cells.append(f"{_mean(_robust(r) for r in rows):.3f}{' pgd' if pgd_only else ''} "
                         f"({_mean(r['clean_accuracy'] for r in rows):.3f}{seeds})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _from_random_init(key: str) -> bool:
    from aft_study_rows import ROWS

    return key in ROWS and ROWS[key][1] == "random"


def plot_styles(keys) -> dict:
    """`{key: (color, marker)}`, one style per row, the same on every seed (one legend entry each): PGD-AT from random
    init in black, the other rows in 10 colors x 15 markers, a distinct pair for each of up to 150 rows (row i gets
    color i mod 10 and marker (11 (i div 10) + i mod 10) mod 15: 11 is prime to 15, so no pair repeats)."""
    markers = "osD^v<>pPhX*dH8"
    baselines = [k for k in keys if _from_random_init(k)]
    others = [k for k in keys if k not in baselines]
    style = {k: ("black", markers[i % len(markers)]) for i, k in enumerate(baselines)}
    style.update({k: (f"C{i % 10}", markers[(11 * (i // 10) + i % 10) % len(markers)]) for i, k in enumerate(others)})
    return style


def plot(report, opts) -> str | None:
    """AutoAttack accuracy (PGD-20, hollow, where AutoAttack did not run) against adversarial passes: one marker per row
    and seed, one style (and legend entry) per row."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no plot (pip install matplotlib).")
        return None
    rows = [r for r in ordered(report["rows"]) if r["status"] == "done" and r["key"] != "clean"]
    fig, ax = plt.subplots(figsize=(8, 5))
    style = plot_styles(list(dict.fromkeys(r["key"] for r in rows)))
    labelled = set()
    for r in rows:
        aa = r.get("autoattack_accuracy") is not None
        color, marker = style[r["key"]]
        seeds = ", ".join(str(x["seed"]) for x in rows if x["key"] == r["key"])
        label = None if r["key"] in labelled else f"{r['label']} (seed {seeds})"
        labelled.add(r["key"])
        ax.scatter([max(r["attack_passes"], 1)], [_robust(r)], marker=marker, s=70,
                   facecolors=color if aa else "none", edgecolors=color, zorder=3, label=label)
    a = next((r for r in rows if r["key"] == "a"), None)
    if a is not None:
        ax.axhline(_robust(a), color="gray", ls="--", lw=1)
        ax.axvline(a["attack_passes"] / 4, color="gray", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("adversarial forward+backward passes (training attack; *_es rows: + held-out attack)")
    components = " + ".join(c.upper() for c in str(opts.autoattack_components).split(","))
    ax.set_ylabel(f"AutoAttack ({components}) accuracy, L-inf eps={opts.epsilon:g}\n"
                  "(hollow: PGD-20, where AutoAttack did not run)")
    ax.set_title(f"EfficientNet-Lite0 on Fashion-MNIST, {opts.image_size} px, {opts.n_train:,} train images")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    os.makedirs(os.path.dirname(opts.plot) or ".", exist_ok=True)
    fig.savefig(opts.plot, dpi=110, bbox_inches="tight")  # the legend outside the axes stays in the picture
    plt.close(fig)
    return opts.plot


