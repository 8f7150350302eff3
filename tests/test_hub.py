"""Robust checkpoints on the Hub: the model card, saving, pushing (network calls replaced) and loading back.

The `fake_hub` fixture replaces only the two network calls, `HfApi.create_repo` and `HfApi.upload_folder`: each upload
is recorded (repo, commit message, the files the real `upload_folder` would send after its allow/ignore patterns) and
stored as a new snapshot in a temporary Hub cache, which the offline downloads of transformers, timm and
huggingface_hub then read exactly as they would read a repo they had downloaded.
"""

import io
import json
import logging
import os
import re
import shutil
from concurrent.futures import Future
from pathlib import Path

import huggingface_hub
import pytest
import safetensors.torch
import torch
from conftest import DictDataset, SmallCNN, tiny_timm, tiny_vit
from huggingface_hub import CommitInfo, HfApi, ModelCard, RepoUrl
from huggingface_hub.errors import LocalTokenNotFoundError
from huggingface_hub.utils import filter_repo_objects

from hf_advft import AdvTrainer, AdvTrainingArguments, load_robust_model, push_robust_model, save_robust_model
from hf_advft.cli import main as cli_main
from hf_advft.evaluation import evaluate_robustness
from hf_advft.hub import render_folder_card
from hf_advft.model_card import MODEL_CARD_MARKER, render_model_card, summarize_evaluation


TOKEN = "hf_TESTtokenNEVERwritten0123456789"
EPS = 8 / 255
SECTIONS = ["## Threat model", "## Training recipe", "## Evaluation", "## Compute", "## Usage", "## Limitations",
            "## Citation"]


class FakeHub:
    def __init__(self, cache: Path):
        self.cache, self.uploads, self.repos, self.count = cache, [], [], 0

    def snapshot(self, repo_id: str) -> Path:
        repo = self.cache / f"models--{repo_id.replace('/', '--')}"
        return repo / "snapshots" / (repo / "refs" / "main").read_text()

    def create_repo(self, api, repo_id, *, token=None, private=None, exist_ok=False, **kwargs):
        self.repos.append(repo_id)
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, api, *, repo_id, folder_path, commit_message=None, token=None, allow_patterns=None,
                      ignore_patterns=None, run_as_future=False, **kwargs):
        folder = Path(folder_path)
        names = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file()]
        names = list(filter_repo_objects(names, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))
        repo = self.cache / f"models--{repo_id.replace('/', '--')}"
        self.count += 1
        sha = f"{self.count:040x}"
        snapshot = repo / "snapshots" / sha
        if (repo / "refs" / "main").is_file():  # a commit adds to what the repo already holds
            shutil.copytree(self.snapshot(repo_id), snapshot)
        snapshot.mkdir(parents=True, exist_ok=True)
        for name in names:
            (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / name, snapshot / name)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(sha)
        self.uploads.append({"repo_id": repo_id, "commit_message": commit_message, "files": sorted(names),
                             "token": token})
        info = CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/{sha}", commit_message=commit_message,
                          commit_description="", oid=sha)
        if run_as_future:
            future = Future()
            future.set_result(info)
            return future
        return info


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    hub = FakeHub(tmp_path / "hub-cache")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub.cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # downloads read the cache, never the net
    monkeypatch.setattr(HfApi, "create_repo", lambda api, repo_id, **kw: hub.create_repo(api, repo_id, **kw))
    monkeypatch.setattr(HfApi, "upload_folder", lambda api, **kw: hub.upload_folder(api, **kw))
    return hub


@pytest.fixture
def no_token(tmp_path, monkeypatch):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


def _processor():
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def _adv_args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=32, per_device_eval_batch_size=32,
                num_train_epochs=1, learning_rate=1e-3, lr_scheduler_type="slow_start_fast_decay", adv_steps=2,
                adv_eval_steps=2, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, seed=0,
                disable_tqdm=True)
    base.update(kw)
    return AdvTrainingArguments(**base)


def _record(**kw):
    record = {"norm": "linf", "epsilon": EPS, "n_examples": 500, "source": "a test evaluation",
              "rows": [{"name": "Clean", "accuracy": 0.9, "n_examples": 500, "details": "no attack"},
                       {"name": "PGD-20", "accuracy": 0.41, "n_examples": 500, "details": "20 steps"},
                       {"name": "AutoAttack (standard)", "accuracy": 0.375, "n_examples": 500, "details": "aa"}]}
    record.update(kw)
    return record


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def _files_containing(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


# ----------------------------------------------------------------------------------------------------------------------
# The card
def test_card_renders_sections_model_index_and_curve(tmp_path):
    adv_config = _adv_args(tmp_path, adv_epsilon_schedule="linear").adv_config()
    results = {"library": "timm", "card": {"base_model": "timm/resnet10t.c3_in1k", "license": "apache-2.0",
                                           "datasets": ["cifar10"], "dataset_name": "CIFAR-10 test"},
               "evaluation": summarize_evaluation(_record(curve=[[0, 0.9], [EPS, 0.41], [2 * EPS, 0.1]],
                                                          expected_robustness=0.43)),
               "compute": {"attack_passes": 1000, "update_passes": 100, "train_runtime_s": 12.5, "hardware": "1 x T"},
               "training": {"epochs": 3.0, "num_train_epochs": 3, "steps": 30}, "input_shape": [3, 16, 16],
               "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3, "source": "timm pretrained_cfg"},
               "curve_image": "robustness_curve.png", "hf_advft_version": "9.9"}
    card = render_model_card(adv_config, results, repo_id="me/resnet-robust")
    text = str(card)
    positions = [text.index(s) for s in SECTIONS]
    assert positions == sorted(positions) and MODEL_CARD_MARKER in text
    data = card.data
    assert data.library_name == "timm" and data.license == "apache-2.0" and data.base_model == "timm/resnet10t.c3_in1k"
    assert data.datasets == ["cifar10"]
    assert {"adversarial-robustness", "adversarial-fine-tuning", "hf-advft", "image-classification"} <= set(data.tags)
    # The model-index holds exactly the evaluation rows: same names, same values, eps and norm in the names.
    values = {r.metric_name: r.metric_value for r in data.eval_results}
    assert values == {"Clean accuracy": 0.9, "PGD-20 robust accuracy (Linf, eps=8/255)": 0.41,
                      "AutoAttack (standard) robust accuracy (Linf, eps=8/255)": 0.375}
    assert {r.dataset_type for r in data.eval_results} == {"cifar10"}
    # The table shows the same numbers, with the example count and the sampling error.
    assert "| PGD-20 | 41.0% ± 4.3 | 500 | 20 steps |" in text
    assert "| AutoAttack (standard) | 37.5% ± 4.2 | 500 | aa |" in text
    assert "![Robust accuracy against epsilon](robustness_curve.png)" in text
    assert "| PGD accuracy | 90.0% | 41.0% | 10.0% |" in text and "0.4300" in text
    assert "eps = 8/255" in text and "ramped linearly over the first 30%" in text
    assert "slow start over 50% of the steps, then exponential decay to 0.2 x the peak" in text
    assert "| Total forward+backward passes | 1,100 |" in text and "12.5 s" in text
    assert 'timm.create_model("hf-hub:me/resnet-robust", pretrained=True)' in text
    assert "@article{jeddi2020simple" in text and "arXiv:2012.13628" in text and "@software{hf_advft" in text
    assert "version = {9.9}" in text
    # Without an evaluation the card says so and carries no model-index, rather than inventing numbers.
    bare = render_model_card(adv_config, {**results, "evaluation": None})
    assert bare.data.eval_results is None and "No evaluation of these weights is recorded" in str(bare)
    assert "robustness_curve.png" not in str(bare)
    nothing = render_model_card(None, {"library": "torch"})
    assert "nothing is known of how, or whether, this model was made robust" in str(nothing)


def test_card_from_a_robustness_result_uses_its_numbers_only(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    x, y = torch.rand(24, 3, 8, 8), torch.randint(0, 10, (24,))
    result = evaluate_robustness(model, (x, y), epsilon=EPS, attacks="pgd", pgd_steps=3, masking_checks=False,
                                 curve_epsilons=(0, EPS))
    record = summarize_evaluation(result)
    assert [r.name for r in record.rows] == ["Clean", "PGD-3"]
    assert [r.accuracy for r in record.rows] == [result.clean_accuracy, result.pgd_accuracy]
    assert record.n_examples == 24 and record.curve == [[0.0, result.clean_accuracy], [EPS, result.pgd_accuracy]]
    card = render_model_card(None, {"library": "torch", "evaluation": record})
    assert [r.metric_value for r in card.data.eval_results] == [round(result.clean_accuracy, 6),
                                                                round(result.pgd_accuracy, 6)]
    assert summarize_evaluation(result.to_dict()) == record  # the JSON form gives the same record


@pytest.mark.parametrize("change, error", [
    ({"rows": [{"name": "Clean", "accuracy": 1.3}]}, "fraction in \\[0, 1\\]"),
    ({"rows": [{"name": "PGD", "accuracy": 0.3}, {"name": "PGD", "accuracy": 0.2}]}, "distinct"),
    ({"norm": "l1"}, "use one of"),
    ({"epsilon": 0}, "positive number"),
    ({"n_examples": 0}, "positive integer"),
    ({"rows": []}, "no rows"),
])
def test_card_refuses_evaluations_it_cannot_state_truthfully(change, error):
    with pytest.raises(ValueError, match=error):
        summarize_evaluation(_record(**change))
    with pytest.raises(TypeError, match="RobustnessResult"):
        summarize_evaluation([0.9, 0.4])


# ----------------------------------------------------------------------------------------------------------------------
# Save and load, with and without hf-advft
def test_vit_saved_loads_identically_with_hf_advft_and_plain_transformers(tmp_path):
    from transformers import AutoModelForImageClassification

    model = tiny_vit().eval()
    folder = tmp_path / "vit-robust"
    args = _adv_args(tmp_path, adv_epsilon=4 / 255)
    save_robust_model(model, folder, processor=_processor(), adv_config=args, evaluation=_record(),
                      base_model="google/vit-base-patch16-224", license="apache-2.0")
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "adv_config.json", "adv_results.json",
            "README.md"} <= {p.name for p in folder.iterdir()}
    pixels = torch.rand(4, 3, 16, 16)
    inputs = (pixels - 0.5) / 0.5
    expected = model(pixel_values=inputs).logits
    robust = load_robust_model(str(folder))
    assert robust.library == "transformers" and not robust.model.training
    assert torch.equal(robust.model(pixel_values=robust.pixel_space.to_model(pixels)).logits, expected)
    assert robust.pixel_space.mean == (0.5, 0.5, 0.5) and robust.adv_config == json.loads(
        (folder / "adv_config.json").read_text()) and robust.adv_config["adv_epsilon"] == 4 / 255
    assert type(robust.preprocess).__name__.startswith("ViTImageProcessor")
    plain = AutoModelForImageClassification.from_pretrained(folder).eval()
    assert torch.equal(plain(pixel_values=inputs).logits, expected)
    # The card's snippets run as written and give the same model.
    for block in _python_blocks((folder / "README.md").read_text()):
        scope = {}
        exec(block, scope)
        assert torch.equal(scope["model"](pixel_values=inputs).logits, expected)


def test_timm_saved_in_timm_hub_format_loads_identically_with_hf_advft_and_plain_timm(tmp_path):
    import timm

    model = tiny_timm().eval()
    folder = tmp_path / "resnet-robust"
    save_robust_model(model, folder, adv_config=_adv_args(tmp_path), evaluation=_record(),
                      training={"epochs": 5, "steps": 50}, compute={"attack_passes": 5000, "update_passes": 500,
                                                                    "hardware": "1 x H100"})
    text = (folder / "README.md").read_text()
    assert "| Epochs | 5 |" in text and "| Total forward+backward passes | 5,500 |" in text and "1 x H100" in text
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "resnet10t" and config["num_classes"] == 10
    assert config["pretrained_cfg"]["mean"] == list(model.pretrained_cfg["mean"])
    pixels = torch.rand(3, 3, 16, 16)
    inputs = (pixels - torch.tensor(model.pretrained_cfg["mean"]).view(3, 1, 1)) / torch.tensor(
        model.pretrained_cfg["std"]).view(3, 1, 1)
    expected = model(inputs)
    robust = load_robust_model(str(folder))
    assert robust.library == "timm" and callable(robust.preprocess)
    assert torch.allclose(robust.model(robust.pixel_space.to_model(pixels)), expected, atol=1e-6)
    plain = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert torch.equal(plain(inputs), expected)
    for block in _python_blocks((folder / "README.md").read_text()):
        scope = {}
        exec(block, scope)
        out = scope["model"](inputs)
        assert torch.equal(out if torch.is_tensor(out) else out.logits, expected)


def test_load_bad_inputs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"No weights in .*expected model\.safetensors.*config\.json"):
        load_robust_model(str(empty))
    # A .bin-only checkpoint is refused, with the opt-in named; it loads once the user opts in.
    model = tiny_vit().eval()
    pickled = tmp_path / "pickled"
    model.save_pretrained(pickled)
    state = safetensors.torch.load_file(pickled / "model.safetensors")
    (pickled / "model.safetensors").unlink()
    torch.save(state, pickled / "pytorch_model.bin")
    with pytest.raises(ValueError, match="allow_pickle=True"):
        load_robust_model(str(pickled))
    with pytest.warns(UserWarning, match="nothing is known of this model's robustness"):
        robust = load_robust_model(str(pickled), allow_pickle=True)
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(robust.model(pixel_values=x).logits, model(pixel_values=x).logits)
    assert robust.adv_config is None and robust.pixel_space.is_identity
    # A plain nn.Module: weights only, loaded into the module the user builds.
    cnn = SmallCNN().eval()
    save_robust_model(cnn, tmp_path / "cnn", adv_config=_adv_args(tmp_path))
    with pytest.raises(ValueError, match="model=MyNet"):
        load_robust_model(str(tmp_path / "cnn"))
    loaded = load_robust_model(str(tmp_path / "cnn"), model=SmallCNN())
    assert torch.equal(loaded.model(x), cnn(x)) and loaded.library == "torch"
    with pytest.raises(ValueError, match="is a file"):
        load_robust_model(str(tmp_path / "cnn" / "README.md"))


# ----------------------------------------------------------------------------------------------------------------------
# AdvTrainer: a card on every save
def test_trainer_writes_card_on_every_save_from_its_own_evaluations(tmp_path, digits16):
    x, y = digits16
    xn = (x - 0.5) / 0.5
    args = _adv_args(tmp_path, save_strategy="steps", save_steps=1, eval_strategy="steps", eval_steps=2,
                     adv_eval_max_examples=16)
    trainer = AdvTrainer(model=tiny_vit(), args=args, train_dataset=DictDataset(xn[:64], y[:64]),
                         eval_dataset=DictDataset(xn[-32:], y[-32:]), processing_class=_processor())
    trainer.train()
    out = Path(args.output_dir)
    # Step 1 was not evaluated: its card has no numbers rather than borrowing step 2's.
    first = ModelCard.load(out / "checkpoint-1" / "README.md")
    assert first.data.eval_results is None and "No evaluation of these weights is recorded" in first.text
    second = ModelCard.load(out / "checkpoint-2" / "README.md")
    logged = next(h for h in trainer.state.log_history if h.get("step") == 2 and "eval_accuracy" in h)
    values = {r.metric_type: r.metric_value for r in second.data.eval_results}
    assert values == {"accuracy": round(logged["eval_accuracy"], 6),
                      "robust_accuracy": round(logged["eval_robust_accuracy"], 6)}
    assert "| PGD-2 |" in second.text and "| 32 | no attack |" in second.text and "| 16 |" in second.text
    spent = [h for h in trainer.state.log_history if "adv_attack_passes" in h][-1]
    assert f"| Attack forward+backward passes (examples) | {spent['adv_attack_passes']:,}" in second.text
    for step in (1, 2):
        ckpt = out / f"checkpoint-{step}"
        assert json.loads((ckpt / "adv_config.json").read_text()) == args.adv_config()
        # `hf-advft card` renders the same card again from the files alone.
        assert str(render_folder_card(ckpt)) == (ckpt / "README.md").read_text()
    # The checkpoint loads with plain transformers and with hf-advft, to the trained weights.
    from transformers import AutoModelForImageClassification

    trainer.model.eval()
    expected = trainer.model(pixel_values=xn[:4]).logits
    plain = AutoModelForImageClassification.from_pretrained(out / "checkpoint-2").eval()
    assert torch.equal(plain(pixel_values=xn[:4]).logits, expected)
    robust = load_robust_model(str(out / "checkpoint-2"))
    assert torch.allclose(robust.model(pixel_values=robust.pixel_space.to_model(x[:4])).logits, expected, atol=1e-5)

    # A README the user wrote survives every later save; ours stays reachable through `hf-advft card`.
    (out / "README.md").write_text("# My own notes\n")
    trainer.save_model()
    assert (out / "README.md").read_text() == "# My own notes\n"
    assert (out / "adv_config.json").is_file() and (out / "adv_results.json").is_file()


def test_card_numbers_come_from_one_evaluation_of_these_weights(tmp_path, digits16):
    args = _adv_args(tmp_path, adv_eval_steps=5, adv_eval_restarts=2)
    logs = [{"step": 3, "eval_accuracy": 0.1, "eval_examples": 100},
            {"step": 5, "eval_accuracy": 0.8, "eval_examples": 100, "eval_robust_accuracy": 0.5,
             "eval_robust_examples": 50},
            {"step": 5, "eval_autoattack_accuracy": 0.4, "eval_autoattack_clean_accuracy": 0.82,
             "eval_autoattack_examples": 40, "eval_autoattack_masking_checks_failed": 1}]
    from hf_advft.model_card import evaluation_from_logs

    record = evaluation_from_logs(logs, args, step=5)
    assert [(r.name, r.accuracy, r.n_examples) for r in record.rows] == [
        ("Clean", 0.8, 100), ("PGD-5", 0.5, 50), ("AutoAttack (standard)", 0.4, 40)]
    assert "2 restart(s)" in record.rows[1].details and "1 gradient-masking check" in record.warnings[0]
    assert evaluation_from_logs(logs, args, step=4) is None  # no evaluation of the step-4 weights
    # An evaluation handed to create_model_card / push_to_hub replaces the trainer's numbers, for those weights only.
    x, y = digits16
    trainer = AdvTrainer(model=SmallCNN(), args=_adv_args(tmp_path, adv_eval_steps=2),
                         train_dataset=DictDataset(x[:64], y[:64]), eval_dataset=DictDataset(x[-16:], y[-16:]))
    trainer.train()
    trainer.evaluate()
    trainer.create_model_card(evaluation=_record(), license="mit")
    card = ModelCard.load(Path(trainer.args.output_dir) / "README.md")
    assert [r.metric_value for r in card.data.eval_results] == [0.9, 0.41, 0.375] and "| PGD-2 |" not in card.text
    trainer.state.global_step += 1  # later weights: neither the explicit result nor the step-2 logs describe them
    trainer.save_model()
    card = ModelCard.load(Path(trainer.args.output_dir) / "README.md")
    assert card.data.eval_results is None and card.data.license == "mit"


# ----------------------------------------------------------------------------------------------------------------------
# Pushing
def test_trainer_push_to_hub_timm_loads_from_the_hub_and_never_writes_the_token(tmp_path, digits16, fake_hub,
                                                                                caplog, capfd):
    import timm

    model = tiny_timm()
    mean, std = torch.tensor(model.pretrained_cfg["mean"]).view(3, 1, 1), torch.tensor(
        model.pretrained_cfg["std"]).view(3, 1, 1)
    x, y = digits16
    xn = (x - mean) / std
    args = _adv_args(tmp_path, hub_model_id="me/resnet-robust", hub_token=TOKEN, per_device_train_batch_size=16,
                     per_device_eval_batch_size=8, adv_eval_steps=1)
    trainer = AdvTrainer(model=model, args=args, train_dataset=DictDataset(xn[:16], y[:16]),
                         eval_dataset=DictDataset(xn[-8:], y[-8:]))
    caplog.set_level(logging.DEBUG)
    hf_logger = logging.getLogger("transformers")
    hf_logger.addHandler(caplog.handler)
    try:
        trainer.train()
        trainer.evaluate()
        trainer.push_to_hub(commit_message="Robust resnet", license="apache-2.0", dataset="sklearn digits")
    finally:
        hf_logger.removeHandler(caplog.handler)
    assert fake_hub.repos == ["me/resnet-robust"]
    (upload,) = fake_hub.uploads
    assert upload["repo_id"] == "me/resnet-robust" and upload["commit_message"] == "Robust resnet"
    assert {"README.md", "adv_config.json", "adv_results.json", "config.json", "model.safetensors"} <= set(
        upload["files"])
    assert not any(f.startswith("checkpoint-") for f in upload["files"])
    # Plain timm loads it from the Hub, and so does hf-advft; both give the trained model's logits.
    model.eval()
    expected = model(xn[:4])
    plain = timm.create_model("hf-hub:me/resnet-robust", pretrained=True).eval()
    assert torch.equal(plain(xn[:4]), expected)
    robust = load_robust_model("me/resnet-robust")
    assert torch.allclose(robust.model(xn[:4]), expected, atol=1e-6) and robust.adv_config == args.adv_config()
    card = ModelCard.load(fake_hub.snapshot("me/resnet-robust") / "README.md")
    assert card.data.license == "apache-2.0" and card.data.library_name == "timm"
    assert 'timm.create_model("hf-hub:me/resnet-robust", pretrained=True)' in card.text
    assert "sklearn digits" in card.text and card.data.eval_results[0].metric_value == round(
        [h for h in trainer.state.log_history if "eval_accuracy" in h][-1]["eval_accuracy"], 6)
    # The token went to the network call only: no written file, no log line, no output holds it.
    assert upload["token"] == TOKEN
    assert _files_containing(tmp_path, TOKEN.encode()) == []
    assert TOKEN not in caplog.text and TOKEN not in "".join(capfd.readouterr())
    buffer = io.BytesIO()
    torch.save(args, buffer)
    assert TOKEN.encode() not in buffer.getvalue() and TOKEN not in repr(args)


def test_checkpoint_pushes_during_training_carry_the_card(tmp_path, digits16, fake_hub):
    x, y = digits16
    args = _adv_args(tmp_path, push_to_hub=True, hub_model_id="me/cnn-robust", hub_token=TOKEN,
                     hub_strategy="every_save", save_strategy="steps", save_steps=1, adv_eval_steps=0)
    trainer = AdvTrainer(model=SmallCNN(), args=args, train_dataset=DictDataset(x[:64], y[:64]))
    trainer.train()
    checkpoint_pushes = [u for u in fake_hub.uploads if u["commit_message"].startswith("Training in progress")]
    assert len(checkpoint_pushes) == 2
    for upload in checkpoint_pushes:
        assert {"README.md", "adv_config.json", "adv_results.json", "model.safetensors"} <= set(upload["files"])
    pushed = json.loads((fake_hub.snapshot("me/cnn-robust") / "adv_results.json").read_text())
    assert pushed["step"] == 2 and pushed["card"]["repo_id"] == "me/cnn-robust"
    assert _files_containing(tmp_path, TOKEN.encode()) == []


def test_push_robust_model_sends_the_card_files_and_keeps_a_users_readme(tmp_path, fake_hub):
    from transformers import AutoModelForImageClassification

    model = tiny_vit().eval()
    push_robust_model(model, "me/vit-robust", processor=_processor(), adv_config=_adv_args(tmp_path),
                      evaluation=_record(), token=TOKEN, commit_message="First robust ViT")
    upload = fake_hub.uploads[-1]
    assert upload["commit_message"] == "First robust ViT" and upload["token"] == TOKEN
    assert upload["files"] == ["README.md", "adv_config.json", "adv_results.json", "config.json", "model.safetensors",
                               "preprocessor_config.json"]
    x = torch.rand(2, 3, 16, 16)
    plain = AutoModelForImageClassification.from_pretrained("me/vit-robust").eval()
    assert torch.equal(plain(pixel_values=x).logits, model(pixel_values=x).logits)
    assert [r.metric_value for r in ModelCard.load(fake_hub.snapshot("me/vit-robust") / "README.md")
            .data.eval_results] == [0.9, 0.41, 0.375]
    # The repo's README is now the user's own: a second push leaves it alone.
    readme = fake_hub.snapshot("me/vit-robust") / "README.md"
    readme.write_text("# Hand-written card\n")
    push_robust_model(model, "me/vit-robust", adv_config=_adv_args(tmp_path), token=TOKEN)
    assert "README.md" not in fake_hub.uploads[-1]["files"]
    assert (fake_hub.snapshot("me/vit-robust") / "README.md").read_text() == "# Hand-written card\n"


def test_push_without_a_token_says_how_to_log_in(tmp_path, fake_hub, no_token):
    with pytest.raises(LocalTokenNotFoundError, match="huggingface-cli login"):
        push_robust_model(SmallCNN(), "me/cnn", adv_config=_adv_args(tmp_path))
    with pytest.raises(LocalTokenNotFoundError, match="huggingface-cli login"):
        AdvTrainer(model=SmallCNN(), args=_adv_args(tmp_path, push_to_hub=True, hub_model_id="me/cnn"),
                   train_dataset=DictDataset(torch.rand(4, 3, 16, 16), torch.zeros(4, dtype=torch.long)))
    assert fake_hub.uploads == [] and fake_hub.repos == []


def test_cli_card_and_push(tmp_path, fake_hub, capsys, no_token):
    folder = tmp_path / "vit-robust"
    save_robust_model(tiny_vit(), folder, processor=_processor(), adv_config=_adv_args(tmp_path),
                      evaluation=_record())
    # A checkpoint's training state, and the live weights an EMA run keeps beside the averaged model.safetensors.
    for junk in ("optimizer.pt", "rng_state.pth", "trainer_state.json", "training_args.bin",
                 "non_ema_weights.safetensors"):
        (folder / junk).write_bytes(b"checkpoint state")
    assert cli_main(["card", str(folder)]) == 0
    assert capsys.readouterr().out == (folder / "README.md").read_text()
    assert cli_main(["card", str(folder), "--repo-id", "me/vit", "-o", str(tmp_path / "card.md")]) == 0
    assert 'from_pretrained("me/vit", use_safetensors=True)' in (tmp_path / "card.md").read_text()

    assert cli_main(["push", str(folder), "--repo-id", "me/vit"]) == 2  # no token anywhere
    assert "huggingface-cli login" in capsys.readouterr().err and fake_hub.uploads == []
    os.environ["HF_TOKEN"] = TOKEN
    try:
        assert cli_main(["push", str(folder), "--repo-id", "me/vit", "--commit-message", "CLI push"]) == 0
    finally:
        del os.environ["HF_TOKEN"]
    upload = fake_hub.uploads[-1]
    assert upload["commit_message"] == "CLI push" and "optimizer.pt" not in upload["files"]
    assert set(upload["files"]) == {"README.md", "adv_config.json", "adv_results.json", "config.json",
                                    "model.safetensors", "preprocessor_config.json"}
    pushed = (fake_hub.snapshot("me/vit") / "README.md").read_text()
    assert 'from_pretrained("me/vit", use_safetensors=True)' in pushed
    assert _files_containing(tmp_path, TOKEN.encode()) == []

    bin_only = tmp_path / "bin-only"
    bin_only.mkdir()
    torch.save({}, bin_only / "pytorch_model.bin")
    assert cli_main(["push", str(bin_only), "--repo-id", "me/bin"]) == 2
    assert "--allow-pickle" in capsys.readouterr().err


def test_template_ships_inside_the_package():
    from hf_advft.model_card import template_path

    root = Path(__file__).resolve().parents[1]
    packaged = root / "hf_advft" / "templates" / "robust_model_card.md"
    assert template_path() == packaged.resolve() or template_path() == packaged
    assert packaged.read_text() == (root / "model_cards" / "robust_model_card.md").read_text()
