"""AdvTrainer's attack through an FSDP-sharded model, on 2 CPU processes (gloo); launched by tests/test_distributed.py:

    torchrun --nproc_per_node 2 tests/scripts/fsdp_attack.py RESULT_PREFIX

accelerate does not enable FSDP on CPU (its FSDP plugin is only taken for GPU-like distributed types), so the Trainer
cannot be *launched* with FSDP here; torch itself shards on gloo. So this script builds an `AdvTrainer`, shards a
model copy with torch's FSDP1 (`FullyShardedDataParallel`) and FSDP2 (`fully_shard`), turns on the trainer's
`is_fsdp_enabled` as accelerate would on GPUs, and checks `craft_adversarial` and one update through the sharded
model against an unsharded copy. Each process writes `RESULT_PREFIX_rank<k>.json`.
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import SmallCNN, digits_tensors  # noqa: E402

from hf_advft import AdvTrainer, AdvTrainingArguments  # noqa: E402


EPS = 8 / 255


def shard(model, version):
    if version == 1:
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel(model, device_id=torch.device("cpu"), use_orig_params=False)
    from torch.distributed.fsdp import fully_shard

    fully_shard(model.features)
    fully_shard(model.head)
    return fully_shard(model)


def attack(trainer, model, x, y, sharded):
    trainer.is_fsdp_enabled = sharded
    return trainer.craft_adversarial(model, x, y, epsilon=EPS, step_size=2 / 255, steps=3, restarts=1)


def update(model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    opt.zero_grad()


def check(trainer, version, x, y) -> dict:
    torch.manual_seed(0)
    reference = SmallCNN()
    sharded = shard(copy.deepcopy(reference), version)
    out = {}
    trainer.is_fsdp_enabled = True
    out["attack_model_is_wrapper"] = trainer._attack_model(sharded) is sharded
    params = list(sharded.parameters())
    flags = [p.requires_grad for p in params]
    sharded.train()
    x_ref = attack(trainer, reference, x, y, sharded=False)
    x_fsdp = attack(trainer, sharded, x, y, sharded=True)
    out["x_adv_max_diff"] = float((x_ref - x_fsdp).abs().max())
    out["delta_max"] = float((x_fsdp - x).abs().max())
    out["x_adv_moved"] = float((x_fsdp - x).abs().sum())
    out["flags_restored"] = [p.requires_grad for p in params] == flags
    out["grads_untouched"] = all(p.grad is None for p in params)
    out["mode_restored"] = sharded.training
    # The attack must leave FSDP ready for the update: one SGD step on each copy, then both predict alike.
    update(reference, x, y)
    update(sharded, x, y)
    with torch.no_grad():
        out["logits_after_update_max_diff"] = float((reference(x) - sharded(x)).abs().max())
    return out


def main():
    prefix = sys.argv[1]
    x, y = digits_tensors(16, 3, n=8)
    args = AdvTrainingArguments(output_dir=os.path.dirname(prefix) or ".", use_cpu=True, report_to="none",
                                adv_random_start=False, adv_eval_steps=0, disable_tqdm=True)
    torch.manual_seed(0)
    trainer = AdvTrainer(model=SmallCNN(), args=args)  # initialises the gloo process group through accelerate
    result = {"world_size": dist.get_world_size(), "fsdp1": check(trainer, 1, x, y), "fsdp2": check(trainer, 2, x, y)}
    with open(f"{prefix}_rank{dist.get_rank()}.json", "w") as f:
        json.dump(result, f)
    dist.barrier()
    sys.stdout.flush()
    # torch 2.14's gloo teardown after FSDP2 sometimes aborts in a destructor ("terminate called without an active
    # exception") once everything has finished; the results are written, so leave without running destructors.
    os._exit(0)


if __name__ == "__main__":
    main()
