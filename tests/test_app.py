"""`hf-advft app`: the panels as pure functions, the bad-input messages, the push of the Space files, and the page
itself driven by headless Chromium (Debian's `chromium` + `chromium-driver`, through Selenium)."""

import ast
import json
import os
import re
import shutil
import socket
import struct
import sys
import time
import zlib

import numpy as np
import pytest
import torch
from conftest import digits_tensors, tiny_vit
from huggingface_hub import CommitInfo, HfApi, RepoUrl
from PIL import Image

from hf_advft import RobustEvalConfig, evaluate_robustness, save_robust_model
from hf_advft.app import (
    MAX_STEPS,
    AppInputError,
    attack_image,
    load_app_model,
    parse_epsilon,
    read_image,
    robustness_panel,
    run_attacks,
    space_files,
)
from hf_advft.cli import main as cli_main


EPS = 8 / 255
DIGIT_NAMES = [str(i) for i in range(10)]


def _processor():
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def _train(model, steps=150, seed=0):
    """A few hundred clean steps on digits: predictions that read sensibly on the page (not a robust model)."""
    x, y = digits_tensors(16, 3)
    x = (x - 0.5) / 0.5
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (64,))
        loss = torch.nn.functional.cross_entropy(model(pixel_values=x[idx]).logits, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """A "robust" folder (adv_config.json, robustness.json) and a "base" folder, both tiny ViTs on 16x16 digits."""
    root = tmp_path_factory.mktemp("app-models")
    torch.set_num_threads(1)
    robust = _train(tiny_vit(seed=0))
    save_robust_model(robust, root / "robust", processor=_processor(), adv_config={"adv_epsilon": EPS})
    x, y = digits_tensors(16, 3, n=48)
    result = evaluate_robustness(robust, ((x - 0.5) / 0.5, y), RobustEvalConfig(attacks="pgd", pgd_steps=2,
                                                                               masking_checks=False),
                                 processor=_processor())
    result.to_json(root / "robust" / "robustness.json")
    save_robust_model(tiny_vit(seed=1), root / "base", processor=_processor())
    return root


@pytest.fixture(scope="module")
def robust_model(model_dirs):
    return load_app_model(str(model_dirs / "robust"), label_names=DIGIT_NAMES, device="cpu")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header(width: int, height: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))


def _digit_image(i=0) -> Image.Image:
    x, _ = digits_tensors(8, 1, n=i + 1)
    return Image.fromarray((x[i, 0].numpy() * 255).astype(np.uint8))


# ------------------------------------------------------------------------------------------------------------------
# Inputs
@pytest.mark.parametrize("text,expected", [("8/255", 8 / 255), ("0.5", 0.5), ("1", 1.0), (0.25, 0.25)])
def test_parse_epsilon_accepts_pixel_units(text, expected):
    assert parse_epsilon(text) == pytest.approx(expected)


@pytest.mark.parametrize("text,hint", [("8", "write 8/255"), ("0", "must be > 0"), ("-1/255", "must be > 0"),
                                       ("1.5", "larger than the whole [0, 1] pixel range"), ("eight", "not a number"),
                                       ("1/0", "not a number")])
def test_parse_epsilon_refuses_what_is_outside_0_1(text, hint):
    with pytest.raises(AppInputError, match=re.escape(hint)):
        parse_epsilon(text)


def test_read_image_says_what_is_wrong(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(AppInputError, match="'notes.txt' is not an image: upload a PNG"):
        read_image(str(text))
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_header(5000, 4000) + _chunk(b"IDAT", b"garbage"))  # refused from its header: never decoded
    with pytest.raises(AppInputError, match="5000 x 4000 pixels, too large"):
        read_image(str(huge))
    with pytest.raises(AppInputError, match="No image yet"):
        read_image(None)
    good = tmp_path / "digit.png"
    _digit_image().save(good)
    assert read_image(str(good)).size == (8, 8)


def test_a_folder_without_weights_names_the_files_it_needs(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ValueError, match="No weights in .*model.safetensors"):
        load_app_model(str(tmp_path))


# ------------------------------------------------------------------------------------------------------------------
# Panels
@pytest.mark.parametrize("norm,epsilon", [("linf", EPS), ("l2", 0.5)])
def test_attack_panel_stays_in_the_ball_and_reports_each_step(robust_model, norm, epsilon):
    steps, calls = 4, []
    panel = attack_image(robust_model, _digit_image(0), epsilon=epsilon, steps=steps, norm=norm, label="0",
                         on_step=lambda done, total: calls.append((done, total)))
    assert calls == [(i, steps) for i in range(1, steps + 1)]
    assert (panel.linf if norm == "linf" else panel.l2) <= epsilon + 1e-5 and panel.linf > 0
    # Images upscaled by whole pixels for display: 16 px model input -> 224 px, uint8 RGB.
    for image in (panel.clean, panel.perturbation, panel.adversarial):
        assert image.shape == (224, 224, 3) and image.dtype == np.uint8
    assert not np.array_equal(panel.clean, panel.adversarial)
    assert panel.gain == pytest.approx(0.5 / panel.linf, rel=1e-4)
    assert len(panel.clean_top) == len(panel.adversarial_top) == 5
    assert set(panel.clean_top) <= set(DIGIT_NAMES) and sum(panel.clean_top.values()) <= 1 + 1e-6
    assert panel.attacked_label == "0" and panel.label_source == "the example's true label"
    best_after = max(panel.adversarial_top, key=panel.adversarial_top.get)
    assert panel.fooled == (best_after != "0")
    assert f"{panel.gain:.3g}x amplified" in panel.caption()


def test_the_attack_lowers_the_attacked_class(robust_model):
    panel = attack_image(robust_model, _digit_image(0), epsilon=32 / 255, steps=10, label="cat")  # not a class of the model
    assert panel.label_source.startswith("the model's clean prediction")
    before = panel.clean_top[panel.attacked_label]
    assert panel.adversarial_top.get(panel.attacked_label, 0.0) < before


@pytest.mark.parametrize("kwargs,message", [
    ({"epsilon": "8"}, "write 8/255"),
    ({"steps": 0}, f"integer from 1 to {MAX_STEPS}"),
    ({"steps": MAX_STEPS + 1}, f"integer from 1 to {MAX_STEPS}"),
    ({"norm": "l3"}, "Norm 'l3' is unknown"),
    ({"image": None}, "No image yet"),
])
def test_run_attacks_refuses_bad_input_with_a_message(robust_model, kwargs, message):
    args = {"image": _digit_image(0), "epsilon": "8/255", "steps": 2, "norm": "linf", **kwargs}
    with pytest.raises(AppInputError, match=message):
        run_attacks([robust_model], args["image"], args["epsilon"], args["steps"], args["norm"])


def test_robustness_panel_reads_robustness_json(model_dirs, tmp_path):
    png, text = robustness_panel(str(model_dirs / "robust"), tmp_path)
    assert png is not None and Image.open(png).size[0] > 100
    assert "robust (worst case)" in text and "\n\ngradient-masking checks" in text
    png, text = robustness_panel(str(model_dirs / "base"), tmp_path)
    assert png is None and "hf-advft evaluate MODEL" in text


# ------------------------------------------------------------------------------------------------------------------
# Command line and push
def test_app_command_without_gradio_says_how_to_install(model_dirs, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` now raises ImportError
    assert cli_main(["app", str(model_dirs / "robust"), "--dataset", "digits"]) == 2
    assert 'pip install "hf-advft[app]"' in capsys.readouterr().err


def test_push_with_app_uploads_a_space_ready_app(model_dirs, tmp_path, monkeypatch):
    uploads = []

    def upload_folder(api, *, folder_path, allow_patterns, **kwargs):
        from huggingface_hub.utils import filter_repo_objects

        names = [p.name for p in sorted(os.scandir(folder_path), key=lambda e: e.name) if p.is_file()]
        sent = list(filter_repo_objects(names, allow_patterns=allow_patterns))
        uploads.append({name: open(os.path.join(folder_path, name), "rb").read() for name in sent})
        return CommitInfo(commit_url="https://huggingface.co/me/vit/commit/1", commit_message="", commit_description="",
                          oid="1" * 40)

    monkeypatch.setattr(HfApi, "create_repo", lambda api, repo_id, **kw: RepoUrl(f"https://huggingface.co/{repo_id}"))
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", "hf_TESTtoken")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "robust"
    shutil.copytree(model_dirs / "robust", folder)
    assert cli_main(["push", str(folder), "--repo-id", "me/vit"]) == 0
    assert "app.py" not in uploads[-1] and "robustness.json" in uploads[-1]
    assert cli_main(["push", str(folder), "--repo-id", "me/vit", "--with-app", "--app-dataset", "digits",
                     "--app-base", "google/vit-base-patch16-224"]) == 0
    sent = uploads[-1]
    assert {"app.py", "requirements.txt", "robustness.json", "model.safetensors", "README.md"} <= set(sent)
    app = sent["app.py"].decode()
    ast.parse(app)
    assert "launch_app('me/vit', base='google/vit-base-patch16-224', dataset='digits'" in app
    assert 'GRADIO_ANALYTICS_ENABLED", "False"' in app
    assert "hf-advft[app]" in sent["requirements.txt"].decode().splitlines()
    assert space_files("me/vit", base="google/vit-base-patch16-224", dataset="digits")["app.py"] == app
    # A user's own app.py is never replaced: the push stops and says why, before anything is uploaded.
    (folder / "app.py").write_text("print('my own demo')\n")
    count = len(uploads)
    assert cli_main(["push", str(folder), "--repo-id", "me/vit", "--with-app"]) == 2
    assert len(uploads) == count and (folder / "app.py").read_text() == "print('my own demo')\n"


# ------------------------------------------------------------------------------------------------------------------
# The page
@pytest.mark.slow
def test_build_app_keeps_serving_without_a_model_and_queues_only_attacks(tmp_path):
    pytest.importorskip("gradio", reason='the web app needs the optional extra: pip install "hf-advft[app]"')
    from hf_advft.app_ui import build_app

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    demo = build_app(str(tmp_path), dataset="digits", n_examples=4)
    config = json.dumps(demo.get_config_file(), default=str)
    assert "could not be loaded" in config and "No weights in" in config
    assert demo.analytics_enabled is False  # no telemetry, no version check against pypi
    fns = {fn.name: fn for fn in demo.fns.values()}
    assert fns["attack"].concurrency_limit == 1
    assert all(fns[name].concurrency_limit is None for name in ("pick_example", "take_upload", "show_epsilon"))
    reply = fns["attack"].fn({"example": 0}, "8/255", 10, "linf")
    assert reply[0].startswith("**No model to attack:**") and "No weights in" in reply[0]


def _browser():
    chromium = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("no Chromium: apt-get install -y chromium chromium-driver (.ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (in the test extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1650"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=webdriver.chrome.service.Service(driver), options=options)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(browser, element_id, contains, timeout=120):
    from selenium.webdriver.common.by import By

    deadline, text = time.time() + timeout, ""
    while time.time() < deadline:
        text = browser.find_element(By.ID, element_id).text
        if contains in text:
            return text
        time.sleep(0.5)
    raise AssertionError(f"#{element_id} never showed {contains!r}; it shows {text!r}")


@pytest.mark.slow
def test_the_page_in_a_real_browser(model_dirs, tmp_path):
    """Upload a non-image (message), upload a digit, attack: predictions and images shown, nothing fetched outside."""
    pytest.importorskip("gradio", reason='the web app needs the optional extra: pip install "hf-advft[app]"')
    from selenium.webdriver.common.by import By

    from hf_advft.app_ui import launch_app

    browser = _browser()
    port = _free_port()
    demo = None
    started = time.time()
    try:
        demo = launch_app(str(model_dirs / "robust"), base=str(model_dirs / "base"), dataset="digits",
                          n_examples=8, server_port=port, prevent_thread_lock=True, quiet=True, device="cpu")
        url = f"http://127.0.0.1:{port}/"
        browser.get(url)
        print(f"page up after {time.time() - started:.1f} s")
        upload = _wait_for_element(browser, "#hf-advft-upload input[type=file]")
        (tmp_path / "notes.txt").write_text("not an image")
        upload.send_keys(str(tmp_path / "notes.txt"))
        _wait_for(browser, "hf-advft-message", "'notes.txt' is not an image")
        _digit_image(3).resize((64, 64), Image.NEAREST).save(tmp_path / "three.png")
        browser.find_element(By.CSS_SELECTOR, "#hf-advft-upload input[type=file]").send_keys(str(tmp_path / "three.png"))
        _wait_for(browser, "hf-advft-message", "Uploaded image")
        browser.find_element(By.ID, "hf-advft-attack").click()
        _wait_for(browser, "hf-advft-message", "Attacked with linf ε = 8/255")
        page = browser.find_element(By.TAG_NAME, "body").text
        for text in ("Robust model", "Base model", "Top-5 after the attack", "amplified around mid-grey",
                     "robust (worst case)"):
            assert text in page
        assert page.count("Attacked label") == 2 and "%" in page  # the label panels print probabilities
        shown = [img for img in browser.find_elements(By.CSS_SELECTOR, "img")
                 if "/gradio_api/file=" in (img.get_attribute("src") or "")
                 and img.get_property("naturalWidth") == 224]
        assert len(shown) == 6  # model input, perturbation and adversarial image of both models (16 px x 14)
        preview = browser.find_element(By.CSS_SELECTOR, "#hf-advft-preview img")
        assert preview.get_property("naturalWidth") == 256  # the 64 px upload, upscaled x4 for display
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(str(tmp_path / "app.png"))
        if os.environ.get("HF_ADVFT_SCREENSHOT"):
            shutil.copyfile(tmp_path / "app.png", os.environ["HF_ADVFT_SCREENSHOT"])
        requests = [json.loads(e["message"])["message"] for e in browser.get_log("performance")]
        urls = {m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"}
        outside = sorted(u for u in urls if not u.startswith((url, "data:", "blob:")))
        assert urls and outside == [], outside  # offline: no CDN, fonts or analytics
    finally:
        browser.quit()
        if demo is not None:
            demo.close()


def _wait_for_element(browser, selector, timeout=120):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, selector)))
