"""The benchmarks' `--quick` modes on tiny settings, so that the scripts cannot rot. No timing is asserted here:
speed is measured by the benchmarks themselves (benchmarks/README.md)."""

import argparse
import importlib.util
import json
import shlex
import statistics
import sys
from pathlib import Path

import pytest
import torch
from image_folders import write_fashion_mnist


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def step_overhead():
    return _load("step_overhead")


@pytest.fixture(scope="module")
def compute_to_robustness():
    return _load("compute_to_robustness")


def test_step_overhead_quick(step_overhead, tmp_path):
    out = tmp_path / "step_overhead.json"
    # Blocks of 2 steps: each block mean must cover exactly `block` steps of every implementation.
    opts = step_overhead.make_parser().parse_args(["--quick", "--block", "2", "--json", str(out),
                                                   "--output_dir", str(tmp_path)])
    step_overhead.main(opts)
    report = json.loads(out.read_text())
    assert report["meta"]["hardware"] and report["meta"]["date"]
    assert [r["model"] for r in report["results"]] == ["vit", "resnet"]
    expected_steps = opts.warmup + opts.reps * opts.block
    for res in report["results"]:
        rows = res["rows"]
        for name, (module, _) in step_overhead.PEER_PACKAGES.items():  # a missing peer is reported, not hidden
            installed = importlib.util.find_spec(module) is not None
            assert (name in rows) == installed and (name in res["skipped"]) == (not installed)
        assert {"AdvTrainer", "hand loop"} <= set(rows)
        for name, row in rows.items():
            assert row["steps_run"] == expected_steps, name  # every implementation did the same work
            assert row["steps_timed"] == opts.reps * opts.block, name
            assert len(row["block_means_s"]) == opts.reps and min(row["block_means_s"]) > 0
            assert row["median_step_s"] == statistics.median(row["block_means_s"])
            assert row["images_per_s"] == pytest.approx(opts.batch_size / row["median_step_s"])
        for name in rows:
            if name != "AdvTrainer":
                ratio = res["ratios"][f"AdvTrainer / {name}"]
                assert ratio == pytest.approx(rows["AdvTrainer"]["median_step_s"] / rows[name]["median_step_s"])
    table = step_overhead.to_markdown(report["results"], opts)
    assert table.count("| AdvTrainer |") == 2


def test_step_overhead_peers_train(step_overhead, tmp_path):
    """The hand-written floor really trains: parameters move, and the model is left in train mode."""
    opts = step_overhead.make_parser().parse_args(["--quick"])
    opts.batch_size, opts.steps = 8, 2
    torch.manual_seed(0)
    model = step_overhead.build_model("resnet", 16, quick=True)
    before = [p.detach().clone() for p in model.parameters()]
    loop = step_overhead.HandLoop(model, torch.rand(16, 3, 16, 16), torch.randint(0, 10, (16,)), opts)
    loop.run(2)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.fixture(scope="module")
def throughput():
    return _load("throughput")


def test_throughput_quick(throughput, tmp_path):
    out = tmp_path / "throughput.json"
    opts = throughput.make_parser().parse_args(["--quick", "--dtypes", "bf16", "--variants", "channels_last",
                                                "--json", str(out), "--output_dir", str(tmp_path)])
    throughput.main(opts)
    report = json.loads(out.read_text())
    assert report["meta"]["hardware"] and len(report["meta"]["load_average_at_start_and_end"]) == 2
    results = report["results"]
    assert [(r["model"], r["dtype"], r["variant"]) for r in results] == [
        ("vit_b16", "bf16", "channels_last"), ("resnet50", "bf16", "channels_last")]
    k = opts.steps
    for res in results:
        rows = res["rows"]
        installed = importlib.util.find_spec("torchattacks") is not None
        assert ("torchattacks" in rows) == installed and ("torchattacks" in res["skipped"]) == (not installed)
        assert {"AdvTrainer", "clean", "hand loop"} <= set(rows)
        for name, row in rows.items():
            assert row["steps_run"] == opts.warmup + opts.reps * opts.block, name  # the same work for everyone
            assert row["steps_timed"] == opts.reps * opts.block and len(row["block_means_s"]) == opts.reps
            assert row["images_per_s"] == pytest.approx(opts.batch_size / statistics.median(row["block_means_s"]))
        ours = rows["AdvTrainer"]["images_per_s"]
        assert res["ratios"]["AdvTrainer / limit"] == pytest.approx(ours * (k + 1) / rows["clean"]["images_per_s"])
        assert res["ratios"]["AdvTrainer / hand loop"] == pytest.approx(ours / rows["hand loop"]["images_per_s"])
        pairs = [h / a for a, h in zip(rows["AdvTrainer"]["block_means_s"], rows["hand loop"]["block_means_s"])]
        assert res["ratios"]["AdvTrainer / hand loop, median of paired blocks"] == pytest.approx(
            statistics.median(pairs))
    table = throughput.to_markdown(results)
    assert table.count("| bf16 | channels_last |") == 2


def test_throughput_clean_peer_trains(throughput):
    opts = throughput.make_parser().parse_args(["--quick"])
    opts.batch_size, opts.steps = 4, 2
    model = throughput.build_model("resnet50", 16, quick=True)
    before = [p.detach().clone() for p in model.parameters()]
    throughput.CleanLoop(model, torch.rand(8, 3, 16, 16), torch.randint(0, 10, (8,)), opts).run(2)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown on a machine without a GPU")
def test_cuda_without_gpu_is_a_clear_error(step_overhead, compute_to_robustness):
    for module in (step_overhead, compute_to_robustness, _load("throughput")):
        with pytest.raises(ValueError, match="use --device cpu"):
            module.main(module.make_parser().parse_args(["--quick", "--device", "cuda"]))


@pytest.mark.slow
def test_compute_to_robustness_quick_digits(compute_to_robustness, tmp_path):
    out, png = tmp_path / "c2r.json", tmp_path / "c2r.png"
    opts = compute_to_robustness.make_parser().parse_args(
        ["--quick", "--dataset", "digits", "--json", str(out), "--plot", str(png), "--output_dir", str(tmp_path)])
    report = compute_to_robustness.main(opts)
    saved = json.loads(out.read_text())
    rows = saved["rows"]
    techniques = compute_to_robustness.TECHNIQUE_ROWS
    assert [r["kind"] for r in rows] == ["scratch", "scratch_short", "clean"] + ["aft"] * (5 + len(techniques))
    assert [r["name"].rsplit(",", 1)[0] for r in rows[8:]] == [name for name, _, _ in techniques.values()]
    n, k = saved["n_train"], opts.train_steps
    a = rows[0]
    # Passes come from AdvTrainer's log_history: k attack passes and 1 update pass per example and epoch.
    assert a["attack_passes"] == opts.at_epochs * n * k and a["update_passes"] == opts.at_epochs * n
    assert rows[2]["update_passes"] == opts.clean_epochs * n and rows[2]["attack_passes"] == 0
    b_passes = rows[3]["attack_passes"]
    for r in rows[3:]:
        single_step = "FGSM" in r["name"]  # 1 attack pass per example: k x the epochs for (b)'s adversarial passes
        assert r["attack_passes"] == r["steps"] * opts.batch_size * (1 if single_step else k)
        if single_step or "delayed" not in r["name"]:  # the delayed ramp's clean first steps cost no attack pass
            assert abs(r["attack_passes"] - b_passes) <= opts.batch_size * k, r["name"]
        assert r["pretrain_passes"] == rows[2]["update_passes"]
        assert 0 <= r["pgd20_accuracy"] <= 1 and 0 <= r["clean_accuracy"] <= 1
    curve = a["curve"]
    assert len(curve) == 7 and [p["attack_passes"] for p in curve] == sorted({p["attack_passes"] for p in curve})
    v = saved["verdict"]
    b = rows[3]
    assert b["name"].startswith("(b)") and v["adversarial_compute_ratio"] == b["attack_passes"] / a["attack_passes"]
    assert v["reaches_at_one_eighth"] == (b["pgd20_accuracy"] >= a["pgd20_accuracy"]
                                          and v["adversarial_compute_ratio"] <= 1 / 8 + 1e-9)
    assert compute_to_robustness.to_markdown(rows, opts).count("\n") == len(rows) + 1
    if importlib.util.find_spec("matplotlib") is not None:
        assert report["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("milestones_hit", "step"), [(0, 0), (0, 49), (1, 50), (1, 74), (2, 75), (2, 99)])
def test_piecewise_schedule(compute_to_robustness, milestones_hit, step):
    assert compute_to_robustness.piecewise_lambda(step, num_training_steps=100) == pytest.approx(0.1**milestones_hit)


@pytest.mark.parametrize("gzipped", [True, False])
def test_fashion_mnist_reader(compute_to_robustness, tmp_path, gzipped, monkeypatch):
    """The library's IDX reader on files laid out like the Debian package's, and the hint when they are missing."""
    import hf_advft.builtin_datasets as builtin

    write_fashion_mnist(tmp_path, n_train=30, n_test=12, gzipped=gzipped)
    read = []
    monkeypatch.setattr(builtin, "read_idx", lambda path, real=builtin.read_idx: read.append(path) or real(path))
    opts = compute_to_robustness.make_parser().parse_args(["--data_dir", str(tmp_path), "--n_train", "20",
                                                           "--n_test", "5"])
    x_tr, y_tr, x_te, y_te = compute_to_robustness.load_data(opts)
    assert len(read) == 4  # the benchmark reads its files through hf_advft's one IDX reader
    assert x_tr.shape == (20, 1, 28, 28) and x_te.shape == (5, 1, 28, 28)
    assert 0 <= float(x_tr.min()) and float(x_tr.max()) <= 1 and x_tr.dtype == torch.float32
    assert y_tr.dtype == torch.long and set(y_tr.tolist()) <= set(range(10))
    opts.data_dir = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        compute_to_robustness.load_data(opts)


def test_aft_study_merges_autoattack_parts():
    """A top-up's AutoAttack part continues the row's images: accuracies are n-weighted means; a mismatch is refused."""
    merge = _load("aft_study").merge_autoattack
    row = {"n_autoattack": 200, "autoattack_accuracy": 0.5, "autoattack_trace": {"apgd-ce": 0.6, "apgd-t": 0.5},
           "autoattack_seconds": 10.0}

    def part(offset, n, acc, trace):
        return {"autoattack_parts": [{"offset": offset, "n": n, "accuracy": acc, "trace": trace, "seconds": 5.0}],
                "n_autoattack": n, "autoattack_accuracy": acc, "autoattack_trace": trace, "autoattack_seconds": 5.0}

    merged = merge(row, part(200, 300, 0.2, {"apgd-ce": 0.3, "apgd-t": 0.2}))
    assert merged["n_autoattack"] == 500 and merged["autoattack_accuracy"] == pytest.approx(0.32)
    assert merged["autoattack_trace"] == pytest.approx({"apgd-ce": 0.42, "apgd-t": 0.32})
    assert [(p["offset"], p["n"]) for p in merged["autoattack_parts"]] == [(0, 200), (200, 300)]
    assert merged["autoattack_seconds"] == 15.0
    assert merge(row, part(0, 500, 0.1, {"apgd-ce": 0.2, "apgd-t": 0.1}))["n_autoattack"] == 500  # a fresh run replaces
    with pytest.raises(ValueError, match="does not continue"):
        merge(row, part(100, 400, 0.2, {"apgd-ce": 0.3, "apgd-t": 0.2}))  # a gap or overlap in the images
    with pytest.raises(ValueError, match="does not continue"):
        merge(row, part(200, 300, 0.2, {"apgd-ce": 0.3}))  # other components


def test_pool_paired_pairs_blocks_across_runs_and_filters(tmp_path):
    """pool_paired.py: each AdvTrainer block against the peer's block of the same round, pooled over files by a
    geometric mean; entries of other models, variants or precisions are left out; unequal block counts are refused."""
    pool_paired = _load("pool_paired")

    def entry(model, adv, hand, variant="default", dtype="fp32"):
        return {"model": model, "variant": variant, "dtype": dtype, "rows": {
            "AdvTrainer": {"block_means_s": adv}, "hand loop": {"block_means_s": hand}}}

    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({"results": [entry("vit", [1.0, 2.0], [2.0, 2.0]),
                                             entry("vit", [9.0], [1.0], variant="compile"),
                                             entry("resnet", [9.0], [1.0])]}))
    second.write_text(json.dumps({"results": [entry("vit", [4.0], [2.0]), entry("vit", [9.0], [1.0], dtype="bf16")]}))
    result = pool_paired.pool([str(first), str(second)], model="vit", variant="default", dtype="fp32")
    # ratios of images/s (peer block / AdvTrainer block): 2, 1 and 0.5, whose geometric mean is 1
    assert result["blocks"] == 3 and [r["blocks"] for r in result["runs"]] == [2, 1]
    assert result["ratio"] == pytest.approx(1.0) and result["step_time_ratio"] == pytest.approx(1.0)
    low, high = result["interval_95"]
    assert 0.5 <= low < 1.0 < high <= 2.0
    # each run weighing the same: runs of geometric means sqrt(2) and 1/2
    assert result["run_ratio"] == pytest.approx((2 ** 0.5 * 0.5) ** 0.5, abs=1e-4)
    assert [r["median"] for r in result["runs"]] == [pytest.approx(2 ** 0.5, abs=1e-4), 0.5]
    assert pool_paired.pool([str(first)], model="vit", variant="default")["ratio"] == pytest.approx(2 ** 0.5, abs=1e-4)
    gpu = tmp_path / "gpu.json"  # runs on another device are left out
    gpu.write_text(json.dumps({"settings": {"device": "cuda"}, "results": [entry("vit", [9.0], [1.0])]}))
    assert pool_paired.pool([str(first), str(gpu)], model="vit", variant="default")["blocks"] == 2
    assert pool_paired.pool([str(gpu)], model="vit", device="cuda")["ratio"] == pytest.approx(1 / 9, abs=1e-4)
    first.write_text(json.dumps({"results": [entry("vit", [1.0, 2.0], [2.0])]}))
    with pytest.raises(ValueError, match="2 AdvTrainer blocks against 1"):
        pool_paired.pool([str(first)], model="vit")
    with pytest.raises(ValueError, match="No paired blocks"):
        pool_paired.pool([str(second)], model="deit")


def test_run_summary_of_the_gpu_scripts_fails_on_a_non_finite_loss(tmp_path, capsys):
    """tests/scripts/run_summary.py, the one summary line of gpu_checks.sh and gpu_rows.sh per train_tiny.py run."""
    spec = importlib.util.spec_from_file_location("_run_summary", Path(__file__).parent / "scripts" / "run_summary.py")
    run_summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_summary)
    result = {"log_history": [{"loss": 2.3}, {"eval_accuracy": 0.5}, {"loss": 2.1}], "mixed_precision": "bf16",
              "scaler": None, "fsdp": True, "distributed_type": "FSDP", "global_step": 4,
              "comm": {"attack_max_delta": 8 / 255, "attack_model_types": ["FSDPModule", "FSDPModule"]},
              "eval": {"eval_accuracy": 0.5, "eval_robust_accuracy": 0.25}}
    path = tmp_path / "r_rank0.json"
    path.write_text(json.dumps(result))
    assert run_summary.main(["fsdp", str(path)]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["losses_finite"] and (line["first_loss"], line["last_loss"]) == (2.3, 2.1)
    assert line["attack_max_delta_x255"] == 8.0 and line["attack_model_types"] == ["FSDPModule"]
    path.write_text(json.dumps({**result, "log_history": [{"loss": 2.3}, {"loss": float("nan")}]}))
    assert run_summary.main(["fsdp", str(path)]) == 1
    assert json.loads(capsys.readouterr().out)["losses_finite"] is False


def test_aft_study_budget_table_puts_each_technique_over_its_budgets():
    """One line per technique (PGD-AT baselines first), one column per budget run; cells are means over seeds of
    AutoAttack (PGD-20 marked where AutoAttack did not run) and clean accuracy."""
    _load("aft_study")
    from aft_study_report import budget_table

    def row(key, seed, aa, clean, pgd=0.5):
        return {"key": key, "seed": seed, "status": "done", "autoattack_accuracy": aa, "clean_accuracy": clean,
                "pgd20_accuracy": pgd}

    rows = [row("aft1_nfgsm", 0, 0.5, 0.7), row("aft1_nfgsm", 1, 0.4, 0.8), row("a_long4", 0, 0.6, 0.74),
            row("aft4_nfgsm", 0, None, 0.6, pgd=0.3), row("aft34_nfgsm", 0, 0.42, 0.73),
            {"key": "aft4_awp", "seed": 0, "status": "failed", "why": "x"}]
    lines = budget_table({"rows": rows}).splitlines()
    assert lines[0] == "| AutoAttack (clean) accuracy, mean over seeds | A/4 | 3A/4 | A | 4A |" and len(lines) == 4
    assert lines[2] == "| PGD-AT from random init |  |  |  | 0.600 (0.740) |"
    assert lines[3] == "| AFT, N-FGSM (k x epochs) | 0.300 pgd (0.600) | 0.420 (0.730) | 0.450 (0.750; 2 seeds) |  |"


def test_aft_study_technique_overrides_reach_the_right_arguments(tmp_path):
    """A technique's LR schedule and warm-up are TrainingArguments, its attack an AdvTrainingArguments field; the row's
    arguments build AdvTrainingArguments as they are (a 10% warm-up is 10 of 100 steps)."""
    study = _load("aft_study")
    from aft_study_rows import missing_options, row_spec

    from hf_advft import AdvTrainingArguments

    opts = study.make_parser().parse_args(["--aft_lr", "9e-4"])
    warm = row_spec("aft1_constant_warmup", opts)
    assert warm["train_args"]["lr_scheduler_type"] == "constant_with_warmup" and "warmup_steps" not in warm["adv_args"]
    args = AdvTrainingArguments(output_dir=str(tmp_path), **warm["train_args"], **warm["adv_args"])
    assert args.get_warmup_steps(100) == 10 and args.learning_rate == pytest.approx(9e-4)
    cos, nfgsm_cos = row_spec("aft1_cosine", opts), row_spec("aft1_nfgsm_cosine", opts)
    assert nfgsm_cos["train_args"]["lr_scheduler_type"] == "cosine" and nfgsm_cos["adv_args"]["adv_attack"] == "n_fgsm"
    assert nfgsm_cos["epochs"] == opts.train_steps * cos["epochs"]  # one attack pass per example: k x the epochs
    assert missing_options(warm) == [] and missing_options(nfgsm_cos) == []


def test_aft_study_plot_gives_each_row_one_style_on_every_seed():
    """The plot's legend names each row once: one (color, marker) per row, distinct across all rows, with PGD-AT from
    random init (the budget curve of (a)) in black."""
    _load("aft_study")  # puts benchmarks/ on sys.path
    import aft_study_report
    from aft_study_rows import ROWS

    keys = [k for k in ROWS if k != "clean"]
    styles = aft_study_report.plot_styles(keys)
    assert set(styles) == set(keys) and len(set(styles.values())) == len(keys)
    random_init = {"a", "a_short", "a_half", "a_long", "a_long4", "a_long8", "a_short8"}
    assert {k for k, (color, _) in styles.items() if color == "black"} == random_init


@pytest.mark.slow
def test_aft_study_early_stopping_row_keeps_the_best_held_out_checkpoint(tmp_path, monkeypatch):
    """The *_es rows: held-out images disjoint from the training images pick the checkpoint; training stops after
    --es_patience evaluations without a better one; the model ends with the best evaluation's weights; the held-out
    PGD's passes are added to the attack passes."""
    from hf_advft import AdvTrainer
    from hf_advft.weights_hash import model_weights_sha256

    study = _load("aft_study")
    write_fashion_mnist(tmp_path, n_train=60, n_test=20)
    opts = study.make_parser().parse_args(["--quick", "--data_dir", str(tmp_path), "--weights_dir",
                                           str(tmp_path / "no_weights"), "--output_dir", str(tmp_path / "run"),
                                           "--es_patience", "2"])
    study.apply_quick(opts)
    tr, _, val = study.subset_indices(opts, 0, 60, 20, n_val=opts.es_held_out)
    assert len(val) == opts.es_held_out == 8 and not set(tr.tolist()) & set(val.tolist())
    x_tr, y_tr, _, _, x_val, y_val = study.load_data(opts, 0, opts.es_held_out)
    assert x_val.shape == (8, 1, 32, 32) and len(x_tr) == opts.n_train
    spec = study.row_spec("aft2x_nfgsm_es", opts)
    assert spec["early_stop"] and spec["adv_args"]["adv_eval_steps"] == opts.es_eval_steps
    spec["epochs"] = 8  # 16 steps, evaluated every epoch (2 steps)
    robust = iter([0.3, 0.8, 0.5, 0.4, 0.9, 0.9, 0.9, 0.9])  # the peak at step 4; two worse evaluations: stop at 8
    monkeypatch.setattr(AdvTrainer, "_robust_accuracy", lambda self, dataloader: (next(robust), 8))
    model = study.build_model(opts, pretrained=False, seed=0)
    run = study.train(model, (x_tr, y_tr), opts, spec, 0, held_out=(x_val, y_val))
    assert run["stopped_early"] and run["steps"] == 8 and run["epochs"] == 4 and run["budget_epochs"] == 8
    assert [list(h) for h in run["held_out_robust_accuracy"]] == [[2, 0.3], [4, 0.8], [6, 0.5], [8, 0.4]]
    assert run["best_step"] == 4 and run["best_held_out_robust_accuracy"] == 0.8
    assert run["best_weights_sha256"] == model_weights_sha256(model)  # the model holds the step-4 weights
    selection = 4 * 8 * opts.es_eval_steps  # four evaluations of PGD-k on 8 held-out images
    assert run["selection_passes"] == selection
    assert run["attack_passes"] == 8 * opts.batch_size + selection and run["update_passes"] == 8 * opts.batch_size
    assert not (tmp_path / "run" / "run_aft2x_nfgsm_es_seed0").exists()  # its checkpoints are removed
    row = {"key": "aft2x_nfgsm_es", "seed": 0, "label": "ES", "status": "done", **run, "clean_accuracy": 0.5,
           "pgd20_accuracy": 0.3, "autoattack_accuracy": None, "eval_seconds": 1.0}
    assert f"| ES (kept epoch 2, stopped at 4 of 8; incl. {selection} held-out PGD passes) | 0 | 0.500 |" in \
        study.to_markdown({"rows": [row]})
    # A finished early-stopping row is kept on a re-run only under the same early-stopping settings.
    assert study._settings_key(opts, "aft2x_nfgsm_es")["es_patience"] == 2
    assert "es_patience" not in study._settings_key(opts, "aft2x_nfgsm")
    # Through the script: the row's held-out images are loaded, its record and table line written.
    monkeypatch.undo()
    argv = ["--quick", "--rows", "clean,aft2x_nfgsm_es", "--jobs", "1", "--data_dir", str(tmp_path), "--weights_dir",
            str(tmp_path / "no_weights"), "--output_dir", str(tmp_path / "run"), "--json", str(tmp_path / "s.json"),
            "--plot", str(tmp_path / "s.png"), "--markdown", str(tmp_path / "s.md"), "--autoattack_rows", "none"]
    study.main(study.make_parser().parse_args(argv))
    es = json.loads((tmp_path / "s.json").read_text())["rows"][-1]
    assert es["key"] == "aft2x_nfgsm_es" and es["status"] == "done" and es["n_held_out"] == 8
    assert es["selection_passes"] == len(es["held_out_robust_accuracy"]) * 8 * es["settings"]["adv_eval_steps"] > 0
    assert es["study_settings"]["es_held_out"] == 8 and "(kept epoch" in (tmp_path / "s.md").read_text()


@pytest.mark.slow
def test_aft_study_quick_bookkeeping_and_resume(tmp_path):
    """benchmarks/aft_study.py --quick on fake Fashion-MNIST files: passes, totals, partial JSON, resume, outputs."""
    study = _load("aft_study")
    write_fashion_mnist(tmp_path, n_train=40, n_test=20)
    out = tmp_path / "study.json"
    argv = ["--quick", "--rows", "clean,a,aft4_ssfd", "--jobs", "1", "--data_dir", str(tmp_path),
            "--weights_dir", str(tmp_path / "no_weights"), "--output_dir", str(tmp_path / "run"),
            "--json", str(out), "--plot", str(tmp_path / "study.png"), "--markdown", str(tmp_path / "study.md"),
            "--autoattack_rows", "a,best1", "--autoattack_examples", "4"]
    opts = study.make_parser().parse_args(argv)
    study.main(opts)
    saved = json.loads(out.read_text())
    rows = {r["key"]: r for r in saved["rows"]}
    assert list(rows) == ["clean", "a", "aft4_ssfd"] and all(r["status"] == "done" for r in rows.values())
    # The run record's command gives back the options main() was called with (from Python here, not pytest's argv).
    recorded = shlex.split(saved["runs"][0]["command"])
    assert recorded[:2] == ["python", "benchmarks/aft_study.py"]
    again = vars(study.make_parser().parse_args(recorded[2:]))
    assert again == {name: getattr(opts, name) for name in again}
    k, batch = opts.train_steps, opts.batch_size
    a, aft, clean = rows["a"], rows["aft4_ssfd"], rows["clean"]
    # AdvTrainer's own count: k attack passes and 1 update pass per example; clean training 1 pass per example.
    assert a["attack_passes"] == opts.at_epochs * opts.n_train * k and a["update_passes"] == opts.at_epochs * opts.n_train
    assert aft["attack_passes"] == aft["steps"] * batch * k and aft["update_passes"] == aft["steps"] * batch
    assert clean["attack_passes"] == 0 and clean["update_passes"] == opts.clean_epochs * opts.n_train
    assert aft["pretrain_passes"] == clean["update_passes"] and "pretrain_passes" not in a
    assert aft["settings"]["adv_freeze_bn"] is True and aft["settings"]["lr_scheduler_type"] == "slow_start_fast_decay"
    # AutoAttack (APGD-CE + APGD-T through evaluate_robustness) only on the rows asked for: (a) by name, and the best
    # AFT row by PGD-20 ("best1"), attacked after training from its saved model; never on the clean row.
    assert a["n_autoattack"] == opts.autoattack_examples and list(a["autoattack_trace"]) == ["apgd-ce", "apgd-t"]
    assert aft["n_autoattack"] == opts.autoattack_examples and list(aft["autoattack_trace"]) == ["apgd-ce", "apgd-t"]
    assert clean["autoattack_accuracy"] is None and 0 <= aft["pgd20_accuracy"] <= aft["clean_accuracy"] <= 1
    v = saved["verdict"]  # AutoAttack ran on (a) and the AFT row: judged on AutoAttack
    assert v["metric"] == "AutoAttack" and v["best"] == "aft4_ssfd" and v["adversarial_ratio"] == 32 / 64
    if a["autoattack_accuracy"] < study.MIN_BASELINE_ROBUSTNESS:  # nothing to reach: no vacuous "yes"
        assert v["reaches"] is None and v["text"].startswith("NO VERDICT")
    else:
        assert v["reaches"] == (aft["autoattack_accuracy"] >= a["autoattack_accuracy"]
                                and aft["clean_accuracy"] >= a["clean_accuracy"])
    # A baseline with robustness is judged: an AFT row matching it at 1/2 of its passes is a "yes".
    fake = [{**a, "pgd20_accuracy": 0.5, "autoattack_accuracy": None},
            {**aft, "pgd20_accuracy": 0.5, "clean_accuracy": a["clean_accuracy"]}]
    judged = study.verdict(fake)
    assert judged["reaches"] is True and judged["adversarial_ratio"] == 0.5 and not judged["target_met"]
    tie = [{**a, "autoattack_accuracy": 0.5}, {**aft, "key": "aft4_x", "autoattack_accuracy": 0.1, "clean_accuracy": 0.3},
           {**aft, "autoattack_accuracy": 0.1, "clean_accuracy": 0.6}]
    assert study.verdict(tie)["best"] == "aft4_ssfd"  # equal AutoAttack accuracy: the row with more clean accuracy wins
    # Two seeds are judged on their means over the seeds (a) has too: a tie on one seed and a miss on the other is a
    # "no"; the same row ahead on average is a "yes". A row's extra seed without an (a) to compare with is left out.
    a1 = {**a, "seed": 1, "autoattack_accuracy": 0.4, "clean_accuracy": 0.5}
    a0 = {**a, "autoattack_accuracy": 0.5, "clean_accuracy": 0.5}
    row0 = {**aft, "key": "aft2_x", "label": "x", "autoattack_accuracy": 0.3, "clean_accuracy": 0.7}
    row1 = {**row0, "seed": 1, "autoattack_accuracy": 0.4}
    row2 = {**row0, "seed": 2, "autoattack_accuracy": 0.9}
    judged = study.verdict([a0, a1, row0, row1, row2])
    assert judged["reaches"] is False and judged["best"] == "aft2_x" and judged["seeds"] == [0, 1]
    assert "0.350 (a: 0.450)" in judged["text"] and "mean of seeds 0, 1" in judged["text"]
    judged = study.verdict([a0, a1, {**row0, "autoattack_accuracy": 0.55}, row1])
    assert judged["reaches"] is True and "0.475 (a: 0.450)" in judged["text"]
    # PGD-AT at twice the budget (a_long): a second verdict against it, its ratios of a_long's passes.
    long0 = {**a0, "key": "a_long", "attack_passes": 2 * a0["attack_passes"], "autoattack_accuracy": 0.6}
    report = {"rows": [a0, long0, {**row0, "autoattack_accuracy": 0.55}]}
    texts = study.judge(report)
    assert len(texts) == 2 and report["verdict"]["reaches"] is True
    assert report["verdict_2x"]["reaches"] is False and texts[1].startswith("Against (a2x), PGD-AT from random init")
    assert "0.550 (a2x: 0.600)" in texts[1] and "0.550 (a: 0.500)" in texts[0]
    assert report["verdict_2x"]["adversarial_ratio"] == pytest.approx(row0["attack_passes"] / long0["attack_passes"])
    assert study.judge({"rows": [a0, row0]}) == [study.verdict([a0, row0])["text"]]  # no a_long: one verdict
    # PGD-AT at four times the budget (a_long4): a third verdict, against it.
    long4 = {**a0, "key": "a_long4", "attack_passes": 4 * a0["attack_passes"], "autoattack_accuracy": 0.65}
    texts = study.judge({"rows": [a0, long0, long4, {**row0, "autoattack_accuracy": 0.55}]})
    assert len(texts) == 3 and texts[2].startswith("Against (a4x), PGD-AT from random init at four times")
    assert "0.550 (a4x: 0.650)" in texts[2]
    report = {"rows": [a0, long4, row0], "verdict_2x": {"text": "stale"}}
    assert len(study.judge(report)) == 2 and "verdict_2x" not in report and "verdict_4x" in report
    # ... and at eight times (a_long8): a fourth, in LONGER_BASELINES' order whatever the rows' order.
    long8 = {**a0, "key": "a_long8", "attack_passes": 8 * a0["attack_passes"], "autoattack_accuracy": 0.7}
    report = {"rows": [long8, a0, long0, long4, {**row0, "autoattack_accuracy": 0.55}]}
    texts = study.judge(report)
    assert len(texts) == 4 and texts[3].startswith("Against (a8x), PGD-AT from random init at eight times")
    assert "0.550 (a8x: 0.700)" in texts[3] and report["verdict_8x"]["reaches"] is False
    assert report["verdict_8x"]["adversarial_ratio"] == pytest.approx(row0["attack_passes"] / long8["attack_passes"])
    # The issue's target is a fraction of (a)'s passes: a "yes" against a_long says nothing of it.
    yes_2x = study.verdict([long0, {**row0, "autoattack_accuracy": 0.7, "clean_accuracy": 0.9}], base="a_long",
                           name="(a2x)")
    assert yes_2x["reaches"] is True and yes_2x["target_met"] is False and "target" not in yes_2x["text"]
    table = (tmp_path / "study.md").read_text()
    rows_table, techniques = table.split("\n\n")[:2]  # the rows, then each technique over its budgets
    assert rows_table.count("\n| ") == 3 and rows_table.count("not run") == 1  # 3 rows; no AutoAttack on clean
    assert techniques.splitlines()[0].endswith("| A/4 | A |") and techniques.count("\n| ") == 2  # (a) and the AFT row
    failed = {"key": "aft4_awp", "seed": 0, "label": "AWP", "status": "failed", "why": "exit 1: log\nTraceback\nError"}
    assert study.to_markdown({"rows": [failed]}).count("\n") == 2  # a failed row stays one table line: header, rule, row
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "study.png").stat().st_size > 0
    # A re-run with the same settings skips the finished rows (no retraining: the rows are unchanged) ...
    study.main(study.make_parser().parse_args(argv))
    again = json.loads(out.read_text())
    assert again["rows"] == saved["rows"] and len(again["runs"]) == 2
    # ... and a larger AutoAttack sample tops up AutoAttack from the saved models, without retraining any row.
    study.main(study.make_parser().parse_args([*argv[:-1], "8"]))
    topped = {r["key"]: r for r in json.loads(out.read_text())["rows"]}
    assert [topped[k]["n_autoattack"] for k in ("a", "aft4_ssfd")] == [8, 8] and topped["clean"]["n_autoattack"] == 0
    for key in ("a", "aft4_ssfd"):  # only images 4..7 were attacked; the result is the n-weighted mean of both parts
        parts = topped[key]["autoattack_parts"]
        assert [(p["offset"], p["n"]) for p in parts] == [(0, 4), (4, 4)]
        assert parts[0]["accuracy"] == rows[key]["autoattack_accuracy"]
        assert topped[key]["autoattack_accuracy"] == pytest.approx((parts[0]["accuracy"] + parts[1]["accuracy"]) / 2)
    assert all(topped[k]["train_seconds"] == rows[k]["train_seconds"] for k in rows)
    # Numbers bound to weights: each row records the hash of the model it measured and saved; AutoAttack refuses a
    # saved model whose hash is not the row's, and AFT rows refuse a clean model of other settings or changed weights.
    run_dir = tmp_path / "run"
    for key in rows:
        assert rows[key]["weights_sha256"] == study.saved_sha256(str(run_dir / f"model_{key}_seed0.pt"))
    assert rows["clean"]["weights_sha256"] == study.saved_sha256(str(run_dir / "clean_seed0.pt"))
    with pytest.raises(SystemExit, match="weights hash differs"):
        study.autoattack_row("a", 0, opts, 0, rows["aft4_ssfd"]["weights_sha256"])
    other = ["--json", str(tmp_path / "other.json"), "--plot", str(tmp_path / "other.png"), "--markdown",
             str(tmp_path / "other.md")]
    aft_only = [*argv[:2], "aft4_ssfd", *argv[3:], *other]
    with pytest.raises(SystemExit, match=r"clean_lr: 0.001 there, 0.002 now.*another --output_dir"):
        study.main(study.make_parser().parse_args([*aft_only, "--clean_lr", "2e-3"]))
    clean_pt = run_dir / "clean_seed0.pt"
    original = clean_pt.read_bytes()
    state = torch.load(clean_pt, weights_only=True)
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, clean_pt)
    with pytest.raises(SystemExit, match="not the clean model its .json describes"):
        study.main(study.make_parser().parse_args(aft_only))
    clean_pt.write_bytes(original)
    record = run_dir / "clean_seed0.pt.json"
    record.rename(run_dir / "aside.json")
    with pytest.raises(SystemExit, match="has no .*add the clean row"):
        study.main(study.make_parser().parse_args(aft_only))
    (run_dir / "aside.json").rename(record)
    assert not (tmp_path / "other.json").exists()  # refused before any row trained
    # aft_study_threat.py: the saved models again, under the gray attack (the study's own numbers, exactly) and the
    # per-channel one of the command line (the same clean accuracy: equal channels are the same input).
    threat = _load("aft_study_threat")
    report = threat.main(threat.make_parser().parse_args(
        ["--rows", "a,aft4_ssfd", "--seeds", "0", "--aft_lr", str(opts.aft_lr), "--output_dir", opts.output_dir,
         "--data_dir", str(tmp_path), "--n_test", str(opts.n_test), "--json", str(tmp_path / "threat.json")]))
    assert [(r["key"], r["n"]) for r in report["rows"]] == [("a", opts.n_test), ("aft4_ssfd", opts.n_test)]
    for r in report["rows"]:
        assert r["gray_clean_accuracy"] == rows[r["key"]]["clean_accuracy"] == r["per_channel_clean_accuracy"]
        assert r["gray_pgd20_accuracy"] == rows[r["key"]]["pgd20_accuracy"]
        assert r["weights_sha256"] == rows[r["key"]]["weights_sha256"]
        assert 0 <= r["per_channel_pgd20_accuracy"] <= r["per_channel_clean_accuracy"]
    assert json.loads((tmp_path / "threat.json").read_text())["rows"] == report["rows"]
    # --checkpoints: a saved 1-channel timm checkpoint (as `--in_chans 1` saves it), with the study's evaluation on the
    # study's test images: its clean accuracy is the network's own on those images, normalized as saved.
    from safetensors.torch import save_file

    from hf_advft.modeling import describe_timm_task, load_timm_classifier, save_timm_config

    torch.manual_seed(0)
    net = load_timm_classifier("resnet10t", num_labels=10, pretrained=False, in_chans=1).eval()
    describe_timm_task(net, label_names=[str(i) for i in range(10)], input_size=(1, opts.image_size, opts.image_size))
    ckpt = tmp_path / "gray_ckpt"
    ckpt.mkdir()
    save_file(net.state_dict(), str(ckpt / "model.safetensors"))
    save_timm_config(net, ckpt)
    with pytest.warns(UserWarning, match="no adv_config.json"):
        report = threat.main(threat.make_parser().parse_args(
            ["--rows", "", "--checkpoints", str(ckpt), "--aft_lr", str(opts.aft_lr), "--output_dir", opts.output_dir,
             "--data_dir", str(tmp_path), "--n_test", str(opts.n_test), "--autoattack_examples", "4",
             "--json", str(tmp_path / "recipe.json")]))
    (row,) = report["checkpoints"]
    assert report["rows"] == [] and row["channels"] == 1 and row["threat"] == "gray"
    assert row["normalization"] == "timm pretrained_cfg"  # the saved 1-channel mean/std, applied by the wrapper
    assert row["n_pgd"] == opts.n_test and row["n_autoattack"] == 4 and list(row["autoattack_trace"]) == ["apgd-ce",
                                                                                                          "apgd-t"]
    _, _, x_test, y_test = study.load_data(study.make_parser().parse_args(
        ["--data_dir", str(tmp_path), "--n_test", str(opts.n_test)]), 0)
    mean, std = net.pretrained_cfg["mean"][0], net.pretrained_cfg["std"][0]
    with torch.no_grad():
        own = (net((x_test[:opts.n_test] - mean) / std).argmax(-1) == y_test[:opts.n_test]).float().mean().item()
    assert row["clean_accuracy"] == pytest.approx(own)
    assert 0 <= row["autoattack_accuracy"] <= 1 and 0 <= row["pgd20_accuracy"] <= row["clean_accuracy"]
    # --export: the study's training images of seed 0 (in its order, before its resize) and its test images as a
    # save_to_disk dataset, and its clean model as a 1-channel timm folder computing the same logits on gray pixels.
    import datasets
    import numpy as np
    import torch.nn.functional as F

    from hf_advft.loading import load_robust_model

    export = tmp_path / "export"
    with pytest.warns(UserWarning, match="no adv_config.json"):
        report = threat.main(threat.make_parser().parse_args(
            ["--rows", "", "--seeds", "0", "--export", str(export), "--checkpoints", str(export / "seed0" / "clean"),
             "--aft_lr", str(opts.aft_lr), "--output_dir", opts.output_dir, "--data_dir", str(tmp_path),
             "--n_train", str(opts.n_train), "--n_test", str(opts.n_test), "--json", str(tmp_path / "export.json")]))
    assert report["exported"] == [{"seed": 0, "data": str(export / "seed0" / "data"), "clean": str(export / "seed0" / "clean"),
                                   "n_train": opts.n_train, "n_test": opts.n_test}]
    x_tr, y_tr, x_te, y_te = study.load_data(opts, 0)
    data = datasets.load_from_disk(str(export / "seed0" / "data"))
    assert data["train"]["label"] == y_tr.tolist() and data["test"]["label"] == y_te[:opts.n_test].tolist()
    pixels = torch.tensor(np.stack([np.asarray(im) for im in data["train"]["image"]]), dtype=torch.float32)[:, None]
    resized = F.interpolate(pixels / 255, size=opts.image_size, mode="bilinear", antialias=True).clamp(0, 1)
    assert torch.allclose(resized, x_tr, atol=1e-6)
    # --train_resize pil: the training images as the recipes' timm transform makes them from the exported 8-bit images
    # (PIL's bilinear, crop_pct 1.0); the test images stay torch's.
    from hf_advft.image_transforms import timm_geometry

    geometry = timm_geometry({"input_size": (1, opts.image_size, opts.image_size), "interpolation": "bilinear",
                              "crop_pct": 1.0})
    recipe = []
    for image in data["train"]["image"]:
        for op in geometry:
            image = op(image)
        recipe.append(torch.from_numpy(np.asarray(image, dtype=np.float32))[None] / 255)
    pil_opts = argparse.Namespace(**{**vars(opts), "train_resize": "pil"})
    x_pil, y_pil, x_te_pil, _ = study.load_data(pil_opts, 0)
    assert torch.allclose(x_pil, torch.stack(recipe), atol=1e-6) and not torch.allclose(x_pil, x_tr, atol=1e-4)
    assert torch.equal(y_pil, y_tr) and torch.equal(x_te_pil, x_te)
    # A row recorded before the option was trained with torch's resize: kept under torch, not under pil.
    old_row = {**rows["aft4_ssfd"], "study_settings": {k: v for k, v in rows["aft4_ssfd"]["study_settings"].items()
                                                       if k != "train_resize"}}
    assert study._same_settings(old_row, opts) and not study._same_settings(old_row, pil_opts)
    gray = study.build_model(opts, pretrained=False, seed=0).eval()
    gray.load_state_dict(torch.load(tmp_path / "run" / "clean_seed0.pt", weights_only=True))
    with pytest.warns(UserWarning, match="no adv_config.json"):  # a clean model: nothing known of its robustness
        robust = load_robust_model(str(export / "seed0" / "clean"))
    cfg = robust.model.pretrained_cfg
    assert list(cfg["input_size"]) == [1, opts.image_size, opts.image_size] and cfg["crop_pct"] == 1.0
    with torch.no_grad():
        assert torch.allclose(robust.model((x_te - cfg["mean"][0]) / cfg["std"][0]), gray(x_te).logits, atol=1e-4)
    assert report["checkpoints"][0]["clean_accuracy"] == rows["clean"]["clean_accuracy"]
    # --in_chans 1: one stem filter (the 3-channel clean model's summed over the colors), the same function.
    chan1_opts = argparse.Namespace(**{**vars(opts), "in_chans": 1})
    gray1 = study.build_model(chan1_opts, pretrained=False, seed=0)
    study.load_clean_state(gray1.eval(), str(tmp_path / "run" / "clean_seed0.pt"))
    assert gray1.net.conv_stem.weight.shape[1] == 1 and gray1.mean.numel() == 1
    with torch.no_grad():
        assert torch.allclose(gray1(x_te).logits, gray(x_te).logits, atol=1e-4)
    state = torch.load(tmp_path / "run" / "clean_seed0.pt", weights_only=True)
    state["mean"][0, 1] = 0.4  # per-color normalization: summing the colors would change the function
    torch.save(state, tmp_path / "rgb_mean.pt")
    with pytest.raises(SystemExit, match="share one"):
        study.load_clean_state(gray1, str(tmp_path / "rgb_mean.pt"))
    assert not study._same_settings(old_row, chan1_opts)
    with pytest.raises(SystemExit, match="clean row of seed 3"):
        threat.export_seed(3, study.make_parser().parse_args(["--output_dir", opts.output_dir]), str(export))
    # An unknown row fails before any training.
    with pytest.raises(ValueError, match="Unknown row"):
        study.main(study.make_parser().parse_args([*argv[:2], "clean,zzz", *argv[3:]]))


def test_step_phases_quick_bookkeeping(tmp_path):
    """benchmarks/step_phases.py --quick: every phase timed once per step for both loops, medians over the rest."""
    phases = _load("step_phases")
    out = tmp_path / "phases.json"
    opts = phases.make_parser().parse_args(["--quick", "--output_dir", str(tmp_path / "run"), "--json", str(out)])
    report = phases.main(opts)
    saved = json.loads(out.read_text())
    assert saved["median_s"] == report["median_s"] and "allocator_env" in saved["meta"]
    for impl in ("AdvTrainer", "hand loop"):
        steps = saved["every_step_s"][impl]
        assert set(steps) == set(phases.PHASES) and all(len(v) == opts.train_steps for v in steps.values()), impl
        parts = sum(saved["median_s"][impl][p] for p in phases.PHASES[:4])
        assert 0 < parts and all(t > 0 for v in steps.values() for t in v)
    # the hand loop's phases are the whole of its step; AdvTrainer's step also holds the Trainer's own work
    for i in range(opts.train_steps):
        hand = saved["every_step_s"]["hand loop"]
        assert sum(hand[p][i] for p in phases.PHASES[:4]) == pytest.approx(hand["whole step"][i], rel=1e-6)
        adv = saved["every_step_s"]["AdvTrainer"]
        assert sum(adv[p][i] for p in phases.PHASES[:4]) <= adv["whole step"][i]
    assert phases.to_markdown(report["median_s"]).count("\n") == len(phases.PHASES) + 1


@pytest.mark.slow
def test_aft_study_worker_processes_bind_autoattack_to_the_trained_weights(tmp_path):
    """`--jobs 2`: rows train in worker processes and AutoAttack runs in others (`--worker_aa KEY:SEED:OFFSET:SHA`)
    on the saved models; a worker refuses a saved model whose weights hash is not the row's."""
    study = _load("aft_study")
    write_fashion_mnist(tmp_path, n_train=40, n_test=20)
    argv = ["--quick", "--rows", "clean,aft4_ssfd", "--jobs", "2", "--poll_seconds", "0.2", "--data_dir", str(tmp_path),
            "--weights_dir", str(tmp_path / "no_weights"), "--output_dir", str(tmp_path / "run"), "--json",
            str(tmp_path / "s.json"), "--plot", str(tmp_path / "s.png"), "--markdown", str(tmp_path / "s.md"),
            "--autoattack_rows", "aft4_ssfd", "--autoattack_examples", "4"]
    study.main(study.make_parser().parse_args(argv))
    rows = {r["key"]: r for r in json.loads((tmp_path / "s.json").read_text())["rows"]}
    aft = rows["aft4_ssfd"]
    assert aft["status"] == "done" and aft["n_autoattack"] == 4 and list(aft["autoattack_trace"]) == ["apgd-ce", "apgd-t"]
    assert aft["weights_sha256"] == study.saved_sha256(str(tmp_path / "run" / "model_aft4_ssfd_seed0.pt"))
    # Another run's weights in the row's file: the top-up's worker refuses them, and the row keeps its 4 images.
    torch.save(torch.load(tmp_path / "run" / "model_clean_seed0.pt", weights_only=True),
               tmp_path / "run" / "model_aft4_ssfd_seed0.pt")
    study.main(study.make_parser().parse_args([*argv[:-1], "8"]))
    assert {r["key"]: r for r in json.loads((tmp_path / "s.json").read_text())["rows"]}["aft4_ssfd"]["n_autoattack"] == 4
    assert "weights hash differs" in (tmp_path / "run" / "aa_aft4_ssfd_seed0.log").read_text()


@pytest.mark.slow
def test_aft_study_repeat_redraws_the_training_only(tmp_path):
    """`--repeat 1`: the same seed's data, init and test images, other training draws (so other weights); being its own
    study, it refuses to start AFT rows from the clean model of `--repeat 0`."""
    study = _load("aft_study")
    write_fashion_mnist(tmp_path, n_train=40, n_test=20)

    def argv(rows, repeat, run):
        return ["--quick", "--rows", rows, "--repeat", str(repeat), "--jobs", "1", "--data_dir", str(tmp_path),
                "--weights_dir", str(tmp_path / "no_weights"), "--output_dir", str(tmp_path / run), "--json",
                str(tmp_path / f"{rows}{repeat}.json"), "--plot", str(tmp_path / "r.png"), "--markdown",
                str(tmp_path / "r.md"), "--autoattack_rows", "none"]

    hashes = {}
    for repeat in (0, 1):
        study.main(study.make_parser().parse_args(argv("clean", repeat, f"run{repeat}")))
        (row,) = json.loads((tmp_path / f"clean{repeat}.json").read_text())["rows"]
        assert row["status"] == "done" and row["study_settings"]["repeat"] == repeat
        hashes[repeat] = row["weights_sha256"]
    assert hashes[0] != hashes[1]
    opts = [study.make_parser().parse_args(argv("clean", repeat, "x")) for repeat in (0, 1)]
    for o in opts:
        study.apply_quick(o)
    assert all(torch.equal(a, b) for a, b in zip(study.load_data(opts[0], 0), study.load_data(opts[1], 0)))
    with pytest.raises(SystemExit, match="repeat: 0 there, 1 now"):
        study.main(study.make_parser().parse_args(argv("aft4_ssfd", 1, "run0")))
