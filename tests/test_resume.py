"""A killed job resumes where it was, with nothing lost; a kill during a checkpoint write costs only that checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import DictDataset, SmallCNN, digits_tensors
from transformers.trainer_utils import get_last_checkpoint

from hf_advft import AdvTrainer, AdvTrainingArguments
from hf_advft.checkpointing import is_complete_checkpoint, last_complete_checkpoint


pytestmark = pytest.mark.usefixtures("one_thread")

SCRIPT = Path(__file__).parent / "scripts" / "train_tiny.py"
TIMEOUT = 240
# 64 examples, batch 16: 4 steps per epoch, 8 in all; checkpoints at steps 3 and 6; PGD with random starts, so the
# RNG state matters for the attack, the shuffling and the robust evaluation at the end.
COMMON = ["--n-train", "64", "--n-eval", "32", "--batch", "16", "--epochs", "2", "--save-steps", "3",
          "--adv-steps", "2", "--random-start", "1"]
RUNTIME_KEYS = ("runtime", "per_second", "total_flos", "train_loss")


def _start(out: Path, *extra) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return subprocess.Popen([sys.executable, str(SCRIPT), "--output-dir", str(out), "--result", str(out / "r"),
                             *COMMON, *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, out[-3000:]


def _kill_when_paused(proc: subprocess.Popen, out: Path) -> None:
    marker, deadline = out / "paused", time.time() + TIMEOUT
    while not marker.exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"the run never reached its pause point:\n{proc.communicate()[0][-3000:]}")
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL
    marker.unlink()


def _result(out: Path) -> dict:
    return json.loads((out / "r_rank0.json").read_text())


def _steady(entries: list) -> list:
    """Log entries without wall-clock fields."""
    return [{k: v for k, v in h.items() if not any(t in k for t in RUNTIME_KEYS)} for h in entries]


@pytest.mark.slow
def test_resume_after_sigkill_mid_epoch_and_during_a_checkpoint_write(tmp_path):
    ref_dir, kill_dir, save_kill_dir = tmp_path / "ref", tmp_path / "kill", tmp_path / "kill_in_save"
    ref = _start(ref_dir)
    killed = _start(kill_dir, "--pause-after-step", "5")  # mid-epoch 2, two steps after checkpoint-3
    killed_in_save = _start(save_kill_dir, "--pause-in-save-step", "6")  # weights of checkpoint-6 written, not the rest
    _kill_when_paused(killed, kill_dir)
    _kill_when_paused(killed_in_save, save_kill_dir)

    assert sorted(p.name for p in kill_dir.glob("checkpoint-*")) == ["checkpoint-3"]
    partial = save_kill_dir / "checkpoint-6"
    assert (partial / "model.safetensors").exists() and not (partial / "trainer_state.json").exists()
    # transformers writes checkpoints in place (no temporary folder and rename) and would pick the broken one ...
    assert get_last_checkpoint(str(save_kill_dir)) == str(partial)
    # ... the previous checkpoint is intact, and it is the one AdvTrainer resumes from.
    assert not is_complete_checkpoint(partial) and is_complete_checkpoint(save_kill_dir / "checkpoint-3")
    assert last_complete_checkpoint(save_kill_dir) == str(save_kill_dir / "checkpoint-3")

    resumed = [_start(kill_dir, "--resume"), _start(save_kill_dir, "--resume")]
    for proc in (ref, *resumed):
        _finish(proc)
    expected = _result(ref_dir)
    assert expected["global_step"] == 8
    for out in (kill_dir, save_kill_dir):
        got = _result(out)
        # It continues at the checkpoint's step, with the same LR (schedule position) and the same RNG state...
        assert got["steps"][0]["global_step"] == 3
        assert got["steps"] == expected["steps"][3:]  # per step: global step, LR and RNG fingerprint, all equal
        # ... logs the same values from there on, the cumulative compute counters included ...
        assert _steady(got["log_history"]) == _steady(expected["log_history"])
        assert [h["adv_attack_passes"] for h in got["log_history"] if "loss" in h][-1] == 8 * 16 * 2
        # ... and ends bitwise equal: same parameters, same clean and robust eval metrics.
        assert got["global_step"] == 8
        assert torch.equal(torch.tensor(got["params"]), torch.tensor(expected["params"]))
        assert _steady([got["eval"]]) == _steady([expected["eval"]])


def _write_state(path: Path, text: str) -> None:
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(text)


def test_last_complete_checkpoint_skips_interrupted_writes(tmp_path):
    _write_state(tmp_path / "checkpoint-2", json.dumps({"global_step": 2}))
    _write_state(tmp_path / "checkpoint-10", '{"global_step": 10, "log_hist')  # killed while writing the state
    (tmp_path / "checkpoint-7").mkdir()  # killed before the state was written
    (tmp_path / "checkpoint-9").write_text("not a folder")
    assert get_last_checkpoint(str(tmp_path)).endswith("checkpoint-10")
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")  # numeric order, not lexicographic
    _write_state(tmp_path / "checkpoint-8", json.dumps({"global_step": 8}))
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-8")
    assert last_complete_checkpoint(tmp_path / "missing") is None


def _args(out, **kw):
    return AdvTrainingArguments(output_dir=str(out), per_device_train_batch_size=16, num_train_epochs=1,
                                learning_rate=1e-2, adv_steps=2, adv_eval_steps=0, logging_steps=1,
                                save_strategy="steps", save_steps=2, report_to="none", use_cpu=True, seed=0,
                                disable_tqdm=True, **kw)


def test_resume_true_without_a_complete_checkpoint_says_so(tmp_path):
    x, y = digits_tensors(16, 3, n=32)
    (tmp_path / "checkpoint-4").mkdir()  # only an interrupted one
    trainer = AdvTrainer(model=SmallCNN(), args=_args(tmp_path), train_dataset=DictDataset(x, y))
    with pytest.raises(ValueError, match="No complete checkpoint"):
        trainer.train(resume_from_checkpoint=True)


@pytest.mark.parametrize("restore_callback_states", [False, True])
def test_compute_counters_survive_a_resume(tmp_path, restore_callback_states):
    """The cumulative adv_attack_passes / adv_update_passes continue from the checkpoint instead of restarting at 0."""
    x, y = digits_tensors(16, 3, n=64)
    ds = DictDataset(x, y)
    args = _args(tmp_path, restore_callback_states_from_checkpoint=restore_callback_states)
    AdvTrainer(model=SmallCNN(), args=args, train_dataset=ds).train()
    saved = json.loads((tmp_path / "checkpoint-2" / "trainer_state.json").read_text())["stateful_callbacks"]
    assert saved["ComputeSpentCallback"]["args"] == {"attack_passes": 2 * 16 * 2, "update_passes": 2 * 16}

    resumed = AdvTrainer(model=SmallCNN(), args=args, train_dataset=ds)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    new = [h for h in resumed.state.log_history if "loss" in h and h["step"] > 2]
    assert [h["adv_attack_passes"] for h in new] == [3 * 16 * 2, 4 * 16 * 2]
    assert [h["adv_update_passes"] for h in new] == [3 * 16, 4 * 16]
