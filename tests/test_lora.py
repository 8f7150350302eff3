"""LoRA through peft: only the adapters train, the attack runs through them, the adapter folder loads back."""

import pytest
import torch
from conftest import DictDataset, tiny_vit

from hf_advft import AdvTrainer, AdvTrainingArguments, load_robust_model, save_robust_model
from hf_advft.model_card import MODEL_CARD_MARKER


peft = pytest.importorskip("peft")
pytestmark = pytest.mark.usefixtures("one_thread")


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=16, num_train_epochs=1,
                learning_rate=1e-2, adv_steps=2, adv_eval_steps=0, logging_steps=1, save_strategy="no",
                report_to="none", use_cpu=True, seed=0, disable_tqdm=True, adv_image_mean=[0.5] * 3,
                adv_image_std=[0.5] * 3)
    base.update(kw)
    return AdvTrainingArguments(**base)


def _vit_base(folder):
    from transformers import ViTForImageClassification

    tiny_vit().save_pretrained(folder)
    return ViTForImageClassification.from_pretrained(folder)  # name_or_path = the folder: peft records it


def _timm_base(folder):
    import timm

    torch.manual_seed(0)
    # timm zero-initialises each block's last BatchNorm scale; a frozen zero would block every adapter's gradient.
    save_robust_model(timm.create_model("resnet10t", pretrained=False, num_classes=10, zero_init_last=False), folder)
    model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    return model


CASES = {
    "vit": (_vit_base, dict(target_modules=["q_proj", "v_proj"], modules_to_save=["classifier"]), {}),
    # timm convolutions; BatchNorm statistics are not part of an adapter, so they stay frozen.
    "timm": (_timm_base, dict(target_modules=r".*layer\d\.\d\.conv[12]", modules_to_save=["fc"]),
             dict(adv_freeze_bn=True)),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_lora_trains_only_adapters_attacks_through_them_and_loads_back(tmp_path, digits16, kind):
    make_base, lora, extra = CASES[kind]
    base_dir = tmp_path / "base"
    base = make_base(base_dir)
    model = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, **lora))
    model.peft_config["default"].base_model_name_or_path = str(base_dir)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    x, y = digits16
    xn = (x - 0.5) / 0.5
    trainer = AdvTrainer(model=model, args=_args(tmp_path, **extra), train_dataset=DictDataset(xn[:64], y[:64]))
    lora_calls = []
    lora_layer = next(m for n, m in model.named_modules() if n.endswith("lora_A.default"))
    lora_layer.register_forward_hook(lambda *a: lora_calls.append(torch.is_grad_enabled()))
    real_attack = trainer.craft_adversarial
    in_attack = []

    def attack(*a, **k):
        start = len(lora_calls)
        out = real_attack(*a, **k)
        in_attack.append(len(lora_calls) - start)
        return out

    trainer.craft_adversarial = attack
    trainer.train()
    assert in_attack and all(n == 2 for n in in_attack)  # PGD-2 ran through the adapter
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_" in k or "modules_to_save" in k for k in changed)  # only adapters (and the head)
    assert any("lora_B" in k for k in changed)

    trainer.save_model(str(tmp_path / "adapter"))
    folder = tmp_path / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "adv_config.json", "README.md"} <= \
        {p.name for p in folder.iterdir()}
    assert not (folder / "model.safetensors").exists()
    card = (folder / "README.md").read_text()
    assert MODEL_CARD_MARKER in card  # the robust card, not peft's stub
    # Its usage loads the adapter onto the base model: a plain from_pretrained / create_model of this folder would fail
    usage = card.split("## Usage")[1].split("## Limitations")[0]
    assert "PeftModel.from_pretrained(base_model" in usage and "load_robust_model" in usage
    assert "AutoModelForImageClassification" not in usage and "timm.create_model" not in usage
    robust = load_robust_model(folder)
    assert isinstance(robust.model, peft.PeftModel) and not robust.model.training
    assert robust.adv_config["adv_steps"] == 2 and robust.pixel_space.mean == (0.5, 0.5, 0.5)
    model.eval()
    with torch.no_grad():
        want = trainer._logits(model, xn[:8])
        got = robust.model(pixel_values=xn[:8]).logits if kind == "vit" else robust.model(xn[:8])
    assert torch.allclose(got, want, atol=1e-5)


def test_adapter_without_a_base_model_path_says_what_to_do(tmp_path):
    model = peft.get_peft_model(tiny_vit(), peft.LoraConfig(r=2, target_modules=["q_proj"]))
    model.peft_config["default"].base_model_name_or_path = None
    model.save_pretrained(tmp_path / "a")
    with pytest.raises(ValueError, match="base_model_name_or_path"):
        load_robust_model(tmp_path / "a")
