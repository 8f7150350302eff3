"""One JSON line summing up a `train_tiny.py` result (the GPU check scripts print it per run):

    python tests/scripts/run_summary.py NAME RESULT_rank0.json

Exits non-zero when no training loss was logged or one is not finite, so a script's `|| fail` catches it.
"""

import json
import math
import sys


def main(argv=None) -> int:
    name, path = (argv if argv is not None else sys.argv[1:])
    with open(path) as f:
        r = json.load(f)
    logs = [h for h in r["log_history"] if "loss" in h]
    finite = bool(logs) and all(math.isfinite(h["loss"]) for h in logs)
    print(json.dumps({"check": name, "mixed_precision": r["mixed_precision"], "scaler": r["scaler"], "fsdp": r["fsdp"],
                      "distributed_type": r["distributed_type"], "steps": r["global_step"], "losses_finite": finite,
                      "first_loss": logs[0]["loss"] if logs else None, "last_loss": logs[-1]["loss"] if logs else None,
                      "attack_max_delta_x255": round(r["comm"]["attack_max_delta"] * 255, 4),
                      "attack_model_types": sorted(set(r["comm"]["attack_model_types"])),
                      "eval_accuracy": r["eval"].get("eval_accuracy"),
                      "eval_robust_accuracy": r["eval"].get("eval_robust_accuracy")}))
    return 0 if finite else 1


if __name__ == "__main__":
    sys.exit(main())
