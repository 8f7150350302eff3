"""Several processes compute what one would: DDP through `accelerate launch`, and the attack under FSDP.

Two CPU processes on gloo. `accelerate launch --cpu --num_processes 2` silently starts ONE process, so the launches
below use `--multi_gpu` with `use_cpu=True` in the arguments (see tests/scripts/train_tiny.py), which does start two.
"""

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SmallCNN, digits_tensors

from hf_advft import AdvTrainer, AdvTrainingArguments


pytestmark = pytest.mark.usefixtures("one_thread")

SCRIPTS = Path(__file__).parent / "scripts"
TIMEOUT = 240  # a hang (e.g. one process waiting in an all-reduce for the other) fails the test instead of blocking


def _free_port() -> int:
    # Other test runs on this machine may hold accelerate's default port 29500.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("ACCELERATE_USE_CPU", None)
    return env


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def launch_two(script: Path, *args) -> list:
    return [_bin("accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
            str(script), *map(str, args)]


def _check(proc: subprocess.Popen, what: str):
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"{what} did not finish in {TIMEOUT} s (a hang?):\n{out[-3000:]}")
    assert proc.returncode == 0, f"{what} failed:\n{out[-3000:]}"


def _run(*commands):
    procs = [(subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
              " ".join(cmd[:3])) for cmd in commands]
    for proc, what in procs:
        _check(proc, what)


def _result(prefix: Path, rank: int) -> dict:
    return json.loads(Path(f"{prefix}_rank{rank}.json").read_text())


def _losses(result: dict, key="loss") -> list:
    return [h[key] for h in result["log_history"] if "loss" in h]


def _train_tiny_in_process(argv):
    spec = importlib.util.spec_from_file_location("train_tiny", SCRIPTS / "train_tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main([str(a) for a in argv])


@pytest.mark.multiprocess
def test_ddp_two_processes_match_one_process_and_survive_uneven_last_batches(tmp_path):
    """2 x 8 examples on gloo == 1 x 16; the attack on the unwrapped module, with no gradient all-reduce inside it.

    72 training examples make 4 full global batches of 16 and an uneven fifth (8 examples: one process gets them, the
    other 8 repeated ones); 37 eval examples are uneven too. The comparison with one process is made after step 4,
    the last step both see the same examples; then both processes must finish steps and evaluation, alike.
    """
    common = ["--n-train", 72, "--n-eval", 37, "--epochs", 1, "--adv-steps", 3, "--random-start", 0, "--optim", "sgd", "--lr", 0.5,
              "--snapshot-step", 4]
    one, two = tmp_path / "one" / "r", tmp_path / "two" / "r"
    proc = subprocess.Popen(launch_two(SCRIPTS / "train_tiny.py", "--output-dir", two.parent, "--result", two,
                                       "--batch", 8, "--count-comm", *common),
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    one.parent.mkdir()
    _train_tiny_in_process(["--output-dir", one.parent, "--result", one, "--batch", 16, *common])
    _check(proc, "accelerate launch")
    ref, r0, r1 = _result(one, 0), _result(two, 0), _result(two, 1)
    assert (ref["world_size"], r0["world_size"], r0["distributed_type"]) == (1, 2, "MULTI_CPU")
    assert ref["global_step"] == r0["global_step"] == r1["global_step"] == 5

    # Same losses over the 4 common steps, same parameters after them (plain SGD: the update is linear in the
    # gradient). Tolerances: the float summation order differs (two half-batch means averaged by the all-reduce
    # instead of one mean; conv kernels picked per batch size), and PGD's sign() can turn a gradient component
    # within rounding of 0 into a step either way. Measured here: parameters within 5e-8, losses within 2e-7 relative.
    assert _losses(r0)[:4] == pytest.approx(_losses(ref)[:4], rel=1e-4)
    assert _losses(r0, "adv_loss")[:4] == pytest.approx(_losses(ref, "adv_loss")[:4], rel=1e-4)
    s_ref, s0 = torch.tensor(ref["snapshot"]), torch.tensor(r0["snapshot"])
    torch.manual_seed(0)
    p_init = torch.cat([p.detach().flatten() for p in SmallCNN().state_dict().values()])
    assert (s_ref - p_init).abs().max() > 1e-2  # the weights moved far more than the tolerance below
    assert torch.allclose(s0, s_ref, atol=1e-4, rtol=0)
    # Both replicas end identical, and the counters summed over processes equal one process's at step 4.
    assert torch.equal(torch.tensor(r0["params"]), torch.tensor(r1["params"]))
    assert _losses(r0, "adv_attack_passes")[3] == _losses(ref, "adv_attack_passes")[3] == 64 * 3

    for r in (r0, r1):
        comm = r["comm"]
        # 5 training attacks then the eval attacks, all on the unwrapped module, not DistributedDataParallel.
        assert len(comm["attack_model_types"]) > 5 and set(comm["attack_model_types"]) == {"SmallCNN"}
        assert comm["attack_batch_sizes"][:5] == [8] * 5
        # The counting comm hook saw the updates' gradient all-reduces (so it works) and none during the attacks.
        assert comm["grad_allreduce"] >= 5 and comm["attack_grad_allreduce"] == 0
        assert comm["attack_collectives"] == 0 and comm["update_collectives"] >= 5
    for key in ("eval_accuracy", "eval_robust_accuracy", "eval_loss"):
        assert r0["eval"][key] == pytest.approx(r1["eval"][key])
    for key in ("eval_accuracy", "eval_robust_accuracy"):
        # gather_for_metrics drops the examples the sampler repeated to even out the last batch: k / 37 exactly.
        assert r0["eval"][key] * 37 == pytest.approx(round(r0["eval"][key] * 37), abs=1e-4)


@pytest.mark.multiprocess
def test_attack_through_fsdp1_and_fsdp2_sharded_models_on_two_cpu_processes(tmp_path):
    prefix = tmp_path / "r"
    _run([_bin("torchrun"), "--nproc_per_node", "2", "--master_port", str(_free_port()),
          str(SCRIPTS / "fsdp_attack.py"), str(prefix)])
    for rank in (0, 1):
        result = _result(prefix, rank)
        assert result["world_size"] == 2
        for version in ("fsdp1", "fsdp2"):
            r = result[version]
            assert r["attack_model_is_wrapper"], version
            assert r["x_adv_max_diff"] <= 1e-6, version  # the same attack as on the unsharded model
            assert 0 < r["delta_max"] <= 8 / 255 + 1e-6 and r["x_adv_moved"] > 0, version
            assert r["flags_restored"] and r["grads_untouched"] and r["mode_restored"], version
            assert r["logits_after_update_max_diff"] <= 1e-5, version  # FSDP is left ready for the update


class _Wrapper(torch.nn.Module):
    """Stands in for a sharding wrapper (FSDP / DeepSpeed engine): forwards to `module`."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)


@pytest.mark.parametrize("switch", ["fsdp", "zero3", "none"])
def test_attack_model_switch(tmp_path, switch, monkeypatch):
    x, y = digits_tensors(16, 3, n=4)
    args = AdvTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", adv_eval_steps=0)
    model = SmallCNN()
    trainer = AdvTrainer(model=model, args=args)
    wrapper = _Wrapper(model)
    if switch == "fsdp":
        monkeypatch.setattr(trainer, "is_fsdp_enabled", True)
    elif switch == "zero3":
        monkeypatch.setattr(trainer, "is_deepspeed_enabled", True)
        monkeypatch.setattr(type(trainer.accelerator.state), "deepspeed_plugin",
                            type("Plugin", (), {"zero_stage": 3})(), raising=False)
    monkeypatch.setattr(trainer.accelerator, "unwrap_model", lambda m, **k: m.module if m is wrapper else m)
    seen = []
    wrapper.register_forward_pre_hook(lambda mod, inp: seen.append("wrapper"))
    model.register_forward_pre_hook(lambda mod, inp: seen.append({p.requires_grad for p in mod.parameters()}))

    x_adv = trainer.craft_adversarial(wrapper, x, y, epsilon=8 / 255, step_size=2 / 255, steps=2, restarts=1)
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6
    if switch == "none":
        # Plain DDP: the attack skips the wrapper, with weight gradients switched off.
        assert trainer._attack_model(wrapper) is model and "wrapper" not in seen and seen[0] == {False}
    else:
        # Sharded: every attack forward goes through the wrapper, and the parameters' flags are left alone.
        assert trainer._attack_model(wrapper) is wrapper and seen[0] == "wrapper" and seen[1] == {True}
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
