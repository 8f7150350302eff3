"""Scheduler matrix in timm's style: SGD over a single Parameter, no model."""

import pytest
import torch

from hf_advft import AdvTrainingArguments, get_slow_start_fast_decay_schedule
from hf_advft.schedules import epsilon_factor


LR = 0.1
STEPS = 100


def _opt(groups=1):
    return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": LR * (i + 1)}
                            for i in range(groups)], lr=LR)


def _lrs(sched, steps=STEPS):
    out = []
    for _ in range(steps + 1):
        out.append(sched.get_last_lr()[0])
        sched.optimizer.step()
        sched.step()
    return out


@pytest.mark.parametrize("decay", ["exponential", "linear", "cosine"])
@pytest.mark.parametrize("warmup", [None, 10, 0])
def test_shape(decay, warmup):
    assert get_slow_start_fast_decay_schedule(_opt(), STEPS, warmup, decay=decay).lr_lambdas[0](STEPS) == pytest.approx(0.2)
    sched = get_slow_start_fast_decay_schedule(_opt(), STEPS, warmup, decay=decay, min_lr_ratio=0.01)
    lrs = _lrs(sched)
    w = 50 if warmup is None else warmup  # default warmup_ratio 0.5
    rise = lrs[: w + 1]
    assert all(a < b for a, b in zip(rise, rise[1:]))  # rises during the slow start
    assert lrs[w] == pytest.approx(LR)  # peak at warm-up end
    assert max(lrs) == pytest.approx(LR)
    fall = lrs[w:]
    assert all(a >= b - 1e-12 for a, b in zip(fall, fall[1:]))  # never rises after the peak
    assert lrs[STEPS] == pytest.approx(LR * 0.01)  # reaches the floor


def test_exponential_decays_faster_than_linear_and_cosine():
    lrs = {d: _lrs(get_slow_start_fast_decay_schedule(_opt(), STEPS, decay=d, min_lr_ratio=0.01))
           for d in ("exponential", "linear", "cosine")}
    quarter = 50 + 12  # a quarter of the way into the decay
    assert lrs["exponential"][quarter] < 0.5 * lrs["linear"][quarter]
    assert lrs["exponential"][quarter] < 0.5 * lrs["cosine"][quarter]


def test_state_dict_round_trip():
    sched = get_slow_start_fast_decay_schedule(_opt(), STEPS)
    _lrs(sched, 60)
    state = sched.state_dict()
    fresh = get_slow_start_fast_decay_schedule(_opt(), STEPS)
    fresh.load_state_dict(state)
    fresh.optimizer.param_groups[0]["lr"] = sched.optimizer.param_groups[0]["lr"]
    assert fresh.last_epoch == sched.last_epoch
    sched.step()
    fresh.step()
    assert fresh.get_last_lr() == pytest.approx(sched.get_last_lr())


def test_several_param_groups_follow_the_same_multiplier():
    sched = get_slow_start_fast_decay_schedule(_opt(groups=3), STEPS)
    for _ in range(70):
        sched.optimizer.step()
        sched.step()
    lrs = sched.get_last_lr()
    assert lrs[1] == pytest.approx(2 * lrs[0]) and lrs[2] == pytest.approx(3 * lrs[0])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(decay="step"), "decay"),
        (dict(min_lr_ratio=0.0), "min_lr_ratio"),
        (dict(warmup_ratio=1.5), "warmup_ratio"),
        (dict(num_warmup_steps=STEPS + 1), "num_warmup_steps"),
    ],
)
def test_bad_schedule_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_slow_start_fast_decay_schedule(_opt(), STEPS, **kwargs)


def test_selectable_by_name_through_training_arguments(tmp_path):
    from transformers import HfArgumentParser

    args = AdvTrainingArguments(output_dir=str(tmp_path), lr_scheduler_type="slow_start_fast_decay",
                                lr_scheduler_kwargs={"decay": "cosine"}, report_to="none")
    assert args.lr_scheduler_type == "slow_start_fast_decay"
    (parsed,) = HfArgumentParser(AdvTrainingArguments).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--lr_scheduler_type", "slow_start_fast_decay", "--report_to", "none",
         "--lr_scheduler_kwargs", '{"min_lr_ratio": 0.05}']
    )
    assert parsed.lr_scheduler_type == "slow_start_fast_decay"
    assert parsed.lr_scheduler_kwargs == {"min_lr_ratio": 0.05}
    # Ordinary transformers schedules still go through the enum untouched.
    assert str(AdvTrainingArguments(output_dir=str(tmp_path), lr_scheduler_type="cosine").lr_scheduler_type.value) \
        == "cosine"


def test_epsilon_factor_linear_ramp():
    f = [epsilon_factor(s, 100, schedule="linear", warmup_ratio=0.2) for s in range(100)]
    assert f[0] == pytest.approx(1 / 20) and f[9] == pytest.approx(0.5) and f[19] == 1.0 and f[-1] == 1.0
    assert all(a <= b for a, b in zip(f, f[1:]))
    assert all(epsilon_factor(s, 100, schedule="constant", warmup_ratio=0.2) == 1.0 for s in range(100))
