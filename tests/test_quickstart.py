"""`make demo`'s recipe on tiny settings, so that it cannot rot."""

import json
import os
import sys


sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "recipes"))

import quickstart  # noqa: E402


def test_quickstart_writes_table_json_and_checkpoint(tmp_path, capsys, one_thread):
    opts = quickstart.make_parser().parse_args(
        ["--output_dir", str(tmp_path), "--train_steps", "2", "--clean_epochs", "2", "--aft_epochs", "1",
         "--at_epochs", "2"]
    )
    rows = quickstart.main(opts)
    out = capsys.readouterr().out
    assert "| (c) PGD-AT from scratch, 2 ep |" in out and "adversarial compute of (c)" in out
    # What it is about to do and how long, one line per stage, then where the gallery and the card are.
    assert out.startswith("hf-advft quickstart: ") and f"this takes about {quickstart.ESTIMATE}" in out
    assert [line[:5] for line in out.splitlines() if line.startswith("[")] == ["[1/3]", "[2/3]", "[3/3]"]
    assert f"Gallery:         {tmp_path / 'aft_model' / 'adversarial_gallery.png'}" in out
    assert f"Model card:      {tmp_path / 'aft_model' / 'README.md'}" in out
    result = json.loads((tmp_path / "results.json").read_text())
    assert [r["name"] for r in result["rows"]] == [r.name for r in rows]
    n = result["n_train"]
    assert result["rows"][1]["adversarial_passes"] == n * 1 * 2 and result["rows"][2]["adversarial_passes"] == n * 2 * 2
    for r in result["rows"]:
        assert 0 <= r["pgd20_accuracy"] <= r["clean_accuracy"] <= 1
    assert result["rows"][0]["clean_accuracy"] > 0.5  # two clean epochs already learn digits
    ckpt = tmp_path / "aft_model"
    assert {"model.safetensors", "adv_config.json", "README.md"} <= set(os.listdir(ckpt))
    card = (ckpt / "README.md").read_text()
    assert f"{result['rows'][1]['pgd20_accuracy'] * 100:.1f}%" in card  # the card states the measured row (b)
    assert "](adversarial_gallery.png)" in card  # the gallery beside the card, linked from it
    assert (ckpt / "adversarial_gallery.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((ckpt / "adv_config.json").read_text())["adv_steps"] == 2
