"""Mixed precision keeps the eps-ball; gradient accumulation computes what one big batch would."""

import pytest
import torch
from conftest import DictDataset, SmallCNN

from hf_advft import AdvTrainer, AdvTrainingArguments


pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 8 / 255


def _args(out, **kw):
    base = dict(output_dir=str(out), per_device_train_batch_size=16, num_train_epochs=1, learning_rate=5e-2,
                lr_scheduler_type="slow_start_fast_decay", adv_steps=3, adv_eval_steps=0, logging_steps=1,
                save_strategy="no", report_to="none", use_cpu=True, seed=0, disable_tqdm=True)
    base.update(kw)
    return AdvTrainingArguments(**base)


class _Spy(AdvTrainer):
    """Records each attack's clean pixels, adversarial pixels and the adversarial batch handed to the update."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.attacks, self.updates = [], []

    def craft_adversarial(self, model, pixels, labels, **kwargs):
        x_adv = super().craft_adversarial(model, pixels, labels, **kwargs)
        self.attacks.append((pixels.clone(), x_adv.clone()))
        return x_adv

    def compute_loss(self, model, inputs, *a, **k):
        if "_hf_advft_clean_inputs" in inputs:
            self.updates.append((inputs["_hf_advft_clean_inputs"].clone(), inputs["pixel_values"].clone()))
        return super().compute_loss(model, inputs, *a, **k)


class _AutocastProbe(SmallCNN):
    def __init__(self):
        super().__init__()
        self.seen = set()

    def forward(self, x):
        out = super().forward(x)
        self.seen.add((torch.is_autocast_enabled("cpu"), out.dtype, torch.is_grad_enabled()))
        return out


def test_bf16_on_cpu_trains_and_keeps_delta_inside_eps_in_fp32_pixel_space(tmp_path, digits16):
    x, y = digits16
    mean, std = [0.5, 0.4, 0.3], [0.25, 0.3, 0.2]
    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    ds = DictDataset((x[:64] - m) / s, y[:64])  # normalized inputs, so the bf16 attack crosses the pixel mapping
    torch.manual_seed(0)
    model = _AutocastProbe()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = _Spy(model=model, args=_args(tmp_path, bf16=True, adv_image_mean=mean, adv_image_std=std),
                   train_dataset=ds)
    trainer.train()

    # Attack and update both ran under bf16 autocast (bf16 logits), the attack without weight gradients needed.
    assert {(True, torch.bfloat16)} == {seen[:2] for seen in model.seen}
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 4 and all(torch.isfinite(torch.tensor(h["loss"])) for h in logs)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: fp32 master weights
    for pixels, x_adv in trainer.attacks:
        assert x_adv.dtype == torch.float32 and x_adv.min() >= 0 and x_adv.max() <= 1
        delta = (x_adv - pixels).abs().max().item()
        assert EPS * 0.5 < delta <= EPS + 1e-6  # the attack moved, and stayed in the ball, in fp32 pixels
    # What the update actually received, mapped back to fp32 pixels: still inside the ball.
    for clean, adv in trainer.updates:
        delta = ((adv - clean) * s).abs().max().item()
        assert delta <= EPS + 1e-6


def _train(out, ds, batch, accumulation, **kw):
    torch.manual_seed(0)
    model = SmallCNN()
    trainer = _Spy(model=model, args=_args(out, per_device_train_batch_size=batch, optim="sgd", learning_rate=0.5,
                                           gradient_accumulation_steps=accumulation, adv_random_start=False, **kw),
                   train_dataset=ds)
    trainer.train()
    return trainer, model


def test_gradient_accumulation_8x4_matches_batch_32_with_the_attack_per_micro_batch(tmp_path, digits16):
    x, y = digits16
    ds = DictDataset(x[:128], y[:128])
    # adv_random_start=False makes PGD deterministic, so the two runs can be compared: with random starts, each
    # micro-batch draws its noise separately and the runs differ by the noise, not by the accumulation.
    big, big_model = _train(tmp_path / "b32", ds, 32, 1)
    acc, acc_model = _train(tmp_path / "b8x4", ds, 8, 4)
    assert big.state.global_step == acc.state.global_step == 4
    # The attack runs per micro-batch: 16 attacks of 8 examples against 4 of 32, on the same examples.
    assert [p.shape[0] for p, _ in big.attacks] == [32] * 4 and [p.shape[0] for p, _ in acc.attacks] == [8] * 16
    assert torch.equal(torch.cat([p for p, _ in acc.attacks]), torch.cat([p for p, _ in big.attacks]))
    # Same adversarial examples, same losses, same weights (plain SGD, so that the update is linear in the gradient).
    # Tolerances: the float summation order differs (a mean of four micro-batch means against one mean of 32, conv
    # kernels picked per batch size), and PGD's sign() turns a gradient component within rounding of 0 into a full
    # step either way, so a few pixels may differ. Measured here: 0 differing pixels, parameters within 5e-8.
    x_big, x_acc = torch.cat([a for _, a in big.attacks]), torch.cat([a for _, a in acc.attacks])
    assert ((x_big - x_acc).abs() > 1e-6).float().mean() <= 1e-3
    logs = [[h for h in t.state.log_history if "loss" in h] for t in (big, acc)]
    for key in ("loss", "adv_loss", "learning_rate"):
        assert [h[key] for h in logs[1]] == pytest.approx([h[key] for h in logs[0]], rel=1e-4), key
    assert logs[0][-1]["adv_attack_passes"] == logs[1][-1]["adv_attack_passes"] == 128 * 3
    torch.manual_seed(0)
    init = list(SmallCNN().parameters())
    moved = max((a - b).abs().max() for a, b in zip(big_model.parameters(), init))
    assert moved > 1e-2  # the weights moved far more than the tolerance below
    for a, b in zip(big_model.parameters(), acc_model.parameters()):
        assert torch.allclose(a, b, atol=1e-4, rtol=0)
