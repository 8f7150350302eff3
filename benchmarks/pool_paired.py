"""Pool the paired blocks of several timing runs: AdvTrainer against a peer, with bootstrap intervals.

`step_overhead.py` and `throughput.py` interleave their rows in blocks and keep every block's mean step time in their
JSON (`rows[NAME]["block_means_s"]`). One run on this noisy 2-core machine cannot resolve a 2% goal; pooling the runs
can narrow it. Each AdvTrainer block is paired with the peer's block of the same round, and the ratio is `peer block /
AdvTrainer block` (the ratio of images/s: above 1, AdvTrainer is faster). Two estimates, each with a seeded 95%
percentile-bootstrap interval (a re-run prints the same numbers):

- `ratio`: the geometric mean over all pooled blocks, each block weighing the same (a long run weighs more);
- `run_ratio`: the geometric mean of the runs' own geometric means, each run weighing the same, with an interval that
  resamples runs, then blocks within them: wider, as it counts the spread from run to run as well.

Per run it prints the geometric mean and the median of its paired blocks (the "paired blocks" figure of the
benchmarks' own tables). Only runs on `--device` (default cpu, from each JSON's settings) are pooled.

    python benchmarks/pool_paired.py --model vit_b16 --variant default benchmarks/results/throughput_cpu*.json
    python benchmarks/pool_paired.py --model resnet benchmarks/results/step_overhead*.json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics


def paired_log_ratios(result: dict, peer: str) -> list[float]:
    """`log(peer block / AdvTrainer block)` for each round of one result entry (one model, variant, precision)."""
    ours, theirs = result["rows"]["AdvTrainer"]["block_means_s"], result["rows"][peer]["block_means_s"]
    if len(ours) != len(theirs):
        raise ValueError(f"{result['model']}: {len(ours)} AdvTrainer blocks against {len(theirs)} of {peer!r}.")
    return [math.log(t / o) for o, t in zip(ours, theirs)]


def bootstrap(logs: list[float], *, draws: int = 20000, seed: int = 0) -> tuple[float, float, float]:
    """The geometric mean of the ratios and its 95% percentile-bootstrap interval."""
    if not logs:
        raise ValueError("No paired blocks to pool.")
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(logs, k=len(logs))) for _ in range(draws))
    return math.exp(statistics.fmean(logs)), math.exp(means[int(0.025 * draws)]), math.exp(means[int(0.975 * draws)])


def bootstrap_runs(runs: list[list[float]], *, draws: int = 20000, seed: int = 0) -> tuple[float, float, float]:
    """The geometric mean of the runs' geometric means, and a 95% interval resampling runs, then blocks in each."""
    rng = random.Random(seed)
    means = []
    for _ in range(draws):
        picked = rng.choices(runs, k=len(runs))
        means.append(statistics.fmean(statistics.fmean(rng.choices(run, k=len(run))) for run in picked))
    means.sort()
    point = statistics.fmean(statistics.fmean(run) for run in runs)
    return math.exp(point), math.exp(means[int(0.025 * draws)]), math.exp(means[int(0.975 * draws)])


def pool(paths, *, model: str, variant: str | None = None, dtype: str | None = None, peer: str = "hand loop",
         device: str = "cpu") -> dict:
    """The pooled paired ratios over every entry of `paths` that matches `model` (and `variant`, `dtype` where the
    JSON has them) and ran on `device`, with each run's own figures."""
    runs, per_run = [], []
    for path in paths:
        with open(path) as f:
            report = json.load(f)
        if report.get("settings", {}).get("device", "cpu") != device:
            continue
        for result in report["results"]:
            if result["model"] != model or peer not in result["rows"] or "AdvTrainer" not in result["rows"]:
                continue
            if (variant and result.get("variant", "default") != variant) or (dtype and result.get("dtype", dtype) != dtype):
                continue
            run = paired_log_ratios(result, peer)
            per_run.append(run)
            runs.append({"json": path, "blocks": len(run), "geometric_mean": round(math.exp(statistics.fmean(run)), 4),
                         "median": round(math.exp(statistics.median(run)), 4)})
    mean, low, high = bootstrap([x for run in per_run for x in run])
    run_mean, run_low, run_high = bootstrap_runs(per_run)

    def step_time(point, lo, hi):  # images/s ratio -> AdvTrainer's step time over the peer's
        return round(1 / point, 4), [round(1 / hi, 4), round(1 / lo, 4)]

    return {"model": model, "variant": variant, "dtype": dtype, "peer": peer, "device": device,
            "blocks": sum(r["blocks"] for r in runs), "runs": runs,
            "ratio": round(mean, 4), "interval_95": [round(low, 4), round(high, 4)],
            "step_time_ratio": step_time(mean, low, high)[0], "step_time_interval_95": step_time(mean, low, high)[1],
            "run_ratio": round(run_mean, 4), "run_interval_95": [round(run_low, 4), round(run_high, 4)],
            "run_step_time_ratio": step_time(run_mean, run_low, run_high)[0],
            "run_step_time_interval_95": step_time(run_mean, run_low, run_high)[1]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json", nargs="+", help="Result JSONs of step_overhead.py or throughput.py.")
    p.add_argument("--model", required=True, help="The `model` field of the entries to pool (vit_b16, resnet, ...).")
    p.add_argument("--variant", default=None, help="throughput.py's AdvTrainer variant (default: any).")
    p.add_argument("--dtype", default=None, help="throughput.py's precision (default: any).")
    p.add_argument("--peer", default="hand loop")
    p.add_argument("--device", default="cpu", help="Pool only runs on this device (each JSON's settings.device).")
    opts = p.parse_args(argv)
    result = pool(opts.json, model=opts.model, variant=opts.variant, dtype=opts.dtype, peer=opts.peer,
                  device=opts.device)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
