import json
import os

import pytest
import torch
from conftest import DictDataset, SmallCNN, tiny_timm, tiny_vit

from hf_advft import AdvTrainer, AdvTrainingArguments
from hf_advft.objectives import compute_objective


EPS = 8 / 255


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=32, per_device_eval_batch_size=64,
                num_train_epochs=1, learning_rate=1e-3, lr_scheduler_type="slow_start_fast_decay",
                adv_steps=2, adv_eval_steps=3, logging_steps=1, save_strategy="no", report_to="none",
                use_cpu=True, seed=0, disable_tqdm=True)
    base.update(kw)
    return AdvTrainingArguments(**base)


def _vit_data(digits16, n_train=128, n_eval=64):
    from transformers import ViTImageProcessor

    processor = ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    x, y = digits16
    x = (x - 0.5) / 0.5  # what the processor's normalization does
    return processor, DictDataset(x[:n_train], y[:n_train]), DictDataset(x[-n_eval:], y[-n_eval:])


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def test_vit_trains_logs_saves_and_resumes(tmp_path, digits16):
    processor, train_ds, eval_ds = _vit_data(digits16)
    model = tiny_vit()
    before = _params(model)
    args = _args(tmp_path, save_strategy="steps", save_steps=2, num_train_epochs=1)
    trainer = AdvTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                         processing_class=processor)
    assert trainer.pixel_space.source == "ViTImageProcessor"
    trainer.train()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 4 and all({"adv_loss", "adv_train_accuracy", "adv_epsilon"} <= set(h) for h in logs)
    assert logs[-1]["adv_attack_passes"] == 128 * 2 and logs[-1]["adv_update_passes"] == 128
    # The LR follows slow-start-fast-decay: rises, then decays.
    lrs = [h["learning_rate"] for h in logs]
    assert lrs[0] < lrs[1] and lrs[-1] < max(lrs)
    ckpt = tmp_path / "out" / "checkpoint-4"
    assert (ckpt / "model.safetensors").exists()
    adv_config = json.loads((ckpt / "adv_config.json").read_text())
    assert adv_config["adv_steps"] == 2 and adv_config["lr_scheduler_type"] == "slow_start_fast_decay"
    metrics = trainer.evaluate()
    assert {"eval_accuracy", "eval_robust_accuracy", "eval_loss"} <= set(metrics)
    assert 0 <= metrics["eval_robust_accuracy"] <= 1

    # Resume from checkpoint-2 into a fresh trainer: it continues at step 2 and ends at step 4.
    import shutil

    shutil.rmtree(ckpt)
    resumed = AdvTrainer(model=tiny_vit(seed=1), args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                         processing_class=processor)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 4
    first_new = [h for h in resumed.state.log_history if "loss" in h and h["step"] == 3]
    assert first_new and first_new[0]["learning_rate"] == pytest.approx(lrs[2])


def test_timm_resnet_plain_tensor_output(tmp_path, digits16):
    model = tiny_timm()
    mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
    x, y = digits16
    xn = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    train_ds, eval_ds = DictDataset(xn[:64], y[:64]), DictDataset(xn[-32:], y[-32:])
    before = _params(model)
    trainer = AdvTrainer(model=model, args=_args(tmp_path, adv_eval_max_examples=16), train_dataset=train_ds,
                         eval_dataset=eval_ds)
    assert trainer.pixel_space.source == "timm pretrained_cfg"
    trainer.train()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    metrics = trainer.evaluate()
    assert 0 <= metrics["eval_robust_accuracy"] <= metrics["eval_accuracy"] <= 1
    assert metrics["eval_robust_examples"] == 16  # adv_eval_max_examples


def test_attack_mode_and_requires_grad_restored_even_when_attack_raises(tmp_path, digits16, monkeypatch):
    model = SmallCNN()
    model.head.weight.requires_grad_(False)  # a frozen layer must stay frozen, the rest trainable
    x, y = digits16
    trainer = AdvTrainer(model=model, args=_args(tmp_path), train_dataset=DictDataset(x[:32], y[:32]))
    model.train()
    flags = [p.requires_grad for p in model.parameters()]

    def boom(*a, **k):
        raise RuntimeError("attack failed")

    monkeypatch.setattr("hf_advft.trainer.pgd", boom)
    with pytest.raises(RuntimeError, match="attack failed"):
        trainer.craft_adversarial(model, x[:4], y[:4], epsilon=EPS, step_size=2 / 255, steps=2, restarts=1)
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    monkeypatch.undo()

    seen = {}

    class Spy(SmallCNN):
        def forward(self, z):
            seen["training"] = self.training
            seen["grad_flags"] = {p.requires_grad for p in self.parameters()}
            return super().forward(z)

    spy = Spy()
    trainer = AdvTrainer(model=spy, args=_args(tmp_path), train_dataset=DictDataset(x[:32], y[:32]))
    spy.train()
    x_adv = trainer.craft_adversarial(spy, x[:4], y[:4], epsilon=EPS, step_size=2 / 255, steps=2, restarts=1)
    assert seen == {"training": False, "grad_flags": {False}}  # attacked in eval mode, no weight gradients
    assert spy.training and all(p.requires_grad for p in spy.parameters())
    assert (x_adv - x[:4]).abs().max() <= EPS + 1e-6
    assert all(p.grad is None for p in spy.parameters())


def test_trades_objective_trains_and_logs_clean_loss(tmp_path, digits16):
    x, y = digits16
    model = SmallCNN()
    trainer = AdvTrainer(model=model, args=_args(tmp_path, adv_objective="trades", adv_trades_beta=1.0),
                         train_dataset=DictDataset(x[:64], y[:64]))
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert all("clean_loss" in h for h in logs)
    # The TRADES loss is CE(clean) + beta * KL, with the KL term logged as adv_loss.
    assert all(h["loss"] == pytest.approx(h["clean_loss"] + 1.0 * h["adv_loss"], rel=1e-3, abs=1e-4) for h in logs)
    assert logs[-1]["adv_update_passes"] == 2 * 64


def test_trades_with_beta_zero_equals_clean_cross_entropy():
    torch.manual_seed(0)
    clean, adv, labels = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    out = compute_objective("trades", adv_logits=adv, labels=labels, clean_logits=clean, trades_beta=0.0)
    assert out.loss == pytest.approx(torch.nn.functional.cross_entropy(clean, labels).item())
    mixed = compute_objective("pgd_at", adv_logits=adv, labels=labels, clean_logits=clean, clean_loss_weight=0.25)
    ce = torch.nn.functional.cross_entropy
    assert mixed.loss == pytest.approx(0.75 * ce(adv, labels).item() + 0.25 * ce(clean, labels).item())


def test_epsilon_ramp_follows_its_schedule(tmp_path, digits16):
    x, y = digits16
    args = _args(tmp_path, adv_epsilon_schedule="linear", adv_epsilon_warmup_ratio=0.5, per_device_train_batch_size=16)
    trainer = AdvTrainer(model=SmallCNN(), args=args, train_dataset=DictDataset(x[:128], y[:128]))
    trainer.train()
    eps = [h["adv_epsilon"] for h in trainer.state.log_history if "loss" in h]
    assert eps == pytest.approx([EPS * min(1.0, (s + 1) / 4) for s in range(8)], abs=1e-6)


def test_adversarial_training_raises_robust_accuracy(tmp_path, trained_cnn, digits16):
    """On digits, a few epochs of PGD fine-tuning beat the clean model's PGD accuracy."""
    import copy

    x, y = digits16
    eps = 0.1
    train_ds, eval_ds = DictDataset(x[:1400], y[:1400]), DictDataset(x[1400:], y[1400:])
    args = _args(tmp_path, adv_epsilon=eps, adv_step_size=eps / 4, adv_steps=5, adv_eval_steps=10,
                 num_train_epochs=3, learning_rate=3e-3, logging_steps=50)
    model = copy.deepcopy(trained_cnn)
    base = AdvTrainer(model=copy.deepcopy(trained_cnn), args=args, eval_dataset=eval_ds).evaluate()
    trainer = AdvTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds)
    trainer.train()
    tuned = trainer.evaluate()
    assert tuned["eval_robust_accuracy"] > base["eval_robust_accuracy"] + 0.1
    assert tuned["eval_robust_accuracy"] <= tuned["eval_accuracy"]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(adv_epsilon=8), "8/255"),
        (dict(adv_epsilon=0.0), "adv_epsilon"),
        (dict(adv_steps=0), "steps"),
        (dict(adv_norm="l1"), "adv_norm"),
        (dict(adv_objective="madry"), "adv_objective"),
        (dict(adv_attack_mode="frozen"), "adv_attack_mode"),
        (dict(adv_epsilon_schedule="cosine"), "adv_epsilon_schedule"),
        (dict(adv_clean_loss_weight=1.5), "adv_clean_loss_weight"),
        (dict(adv_objective="trades", adv_clean_loss_weight=0.5), "adv_trades_beta"),
        (dict(adv_image_mean=[0.5, 0.5, 0.5]), "adv_image_std"),
        (dict(lr_scheduler_type="slow_start"), "slow_start"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _args(tmp_path, **kwargs)


def test_step_size_larger_than_epsilon_warns(tmp_path):
    with pytest.warns(UserWarning, match="larger than adv_epsilon"):
        _args(tmp_path, adv_step_size=0.1)


def test_wrong_args_type(tmp_path):
    from transformers import TrainingArguments

    with pytest.raises(TypeError, match="AdvTrainingArguments"):
        AdvTrainer(model=SmallCNN(), args=TrainingArguments(output_dir=str(tmp_path)))


def test_model_without_logits(tmp_path, digits16):
    class NoLogits(SmallCNN):
        def forward(self, z):
            return {"embedding": super().forward(z)}

    x, y = digits16
    trainer = AdvTrainer(model=NoLogits(), args=_args(tmp_path), train_dataset=DictDataset(x[:32], y[:32]))
    with pytest.raises(TypeError, match="logits"):
        trainer.train()


@pytest.mark.parametrize("pixel_key,label_key,match", [("image", "labels", "pixel_values"), ("pixel_values", "y",
                                                                                                "'labels'")])
def test_batch_without_pixel_key_or_labels(tmp_path, digits16, pixel_key, label_key, match):
    x, y = digits16
    ds = DictDataset(x[:32], y[:32], pixel_key=pixel_key, label_key=label_key)
    trainer = AdvTrainer(model=SmallCNN(), args=_args(tmp_path, remove_unused_columns=False), train_dataset=ds)
    with pytest.raises(ValueError, match=match):
        trainer.train()


def test_unnormalized_inputs_without_known_normalization(tmp_path, digits16):
    x, y = digits16
    ds = DictDataset((x[:32] - 0.5) / 0.25, y[:32])  # normalized, but nobody told the trainer how
    trainer = AdvTrainer(model=SmallCNN(), args=_args(tmp_path), train_dataset=ds)
    with pytest.raises(ValueError, match="adv_image_mean"):
        trainer.train()
    assert not os.path.exists(tmp_path / "out" / "checkpoint-1")


def test_truncated_robust_eval_releases_the_dataloader_and_predict_without_labels(tmp_path, digits16):
    processor, train_ds, eval_ds = _vit_data(digits16, n_train=32, n_eval=64)
    args = _args(tmp_path, adv_eval_max_examples=10, per_device_eval_batch_size=8)  # stops after 2 of 8 batches
    trainer = AdvTrainer(model=tiny_vit(), args=args, eval_dataset=eval_ds,
                         processing_class=processor)
    metrics = trainer.evaluate()
    assert metrics["eval_robust_examples"] == 10
    assert trainer.accelerator.gradient_state.active_dataloader is None

    class Unlabeled(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return {"pixel_values": eval_ds[i]["pixel_values"]}

    out = trainer.predict(Unlabeled())
    assert out.predictions.shape == (8, 10) and "test_robust_accuracy" not in out.metrics
