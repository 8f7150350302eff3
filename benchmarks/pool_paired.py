"""Pool the paired blocks of several timing runs: AdvTrainer against a peer, with a bootstrap interval.

`step_overhead.py` and `throughput.py` interleave their rows in blocks and keep every block's mean step time in their
JSON (`rows[NAME]["block_means_s"]`). One run on this noisy 2-core machine cannot resolve a 2% goal; pooling the runs
can. Each AdvTrainer block is paired with the peer's block of the same round; the pooled ratio is the geometric mean
of `peer block / AdvTrainer block` (the ratio of images/s: above 1, AdvTrainer is faster), and its 95% interval is a
percentile bootstrap over the pooled pairs (seeded, so a re-run prints the same numbers).

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


def pool(paths, *, model: str, variant: str | None = None, dtype: str | None = None,
         peer: str = "hand loop") -> dict:
    """The pooled paired ratio over every entry of `paths` that matches `model` (and `variant`, `dtype` where the JSON
    has them), with each file's own contribution."""
    runs, logs = [], []
    for path in paths:
        with open(path) as f:
            report = json.load(f)
        for result in report["results"]:
            if result["model"] != model or peer not in result["rows"] or "AdvTrainer" not in result["rows"]:
                continue
            if (variant and result.get("variant", "default") != variant) or (dtype and result.get("dtype", dtype) != dtype):
                continue
            run = paired_log_ratios(result, peer)
            logs += run
            runs.append({"json": path, "blocks": len(run), "geometric_mean": round(math.exp(statistics.fmean(run)), 4)})
    mean, low, high = bootstrap(logs)
    return {"model": model, "variant": variant, "dtype": dtype, "peer": peer, "blocks": len(logs), "runs": runs,
            "ratio": round(mean, 4), "interval_95": [round(low, 4), round(high, 4)],
            "step_time_ratio": round(1 / mean, 4), "step_time_interval_95": [round(1 / high, 4), round(1 / low, 4)]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json", nargs="+", help="Result JSONs of step_overhead.py or throughput.py.")
    p.add_argument("--model", required=True, help="The `model` field of the entries to pool (vit_b16, resnet, ...).")
    p.add_argument("--variant", default=None, help="throughput.py's AdvTrainer variant (default: any).")
    p.add_argument("--dtype", default=None, help="throughput.py's precision (default: any).")
    p.add_argument("--peer", default="hand loop")
    opts = p.parse_args(argv)
    result = pool(opts.json, model=opts.model, variant=opts.variant, dtype=opts.dtype, peer=opts.peer)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
