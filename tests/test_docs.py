"""The documentation site (`docs/`, `mkdocs.yml`) builds with warnings as errors, offline, and covers the API."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]


def public_names():
    """`hf_advft.__all__`, read from the source (the docs are generated from the source, not from an import)."""
    tree = ast.parse((ROOT / "hf_advft" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return [name for name in ast.literal_eval(node.value) if not name.startswith("__")]
    raise AssertionError("hf_advft/__init__.py has no __all__")


@pytest.mark.slow
def test_docs_build_strictly_offline_with_every_public_name_and_the_benchmarks_page(tmp_path):
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        pytest.importorskip(module, reason=f"{module} is not installed: pip install -e '.[docs]' (make test does)")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "HF_HUB_OFFLINE": "1"}
    # --strict: any warning (a broken link, a docstring griffe cannot parse, a missing page) fails the build.
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]

    api = (site / "api" / "index.html").read_text()
    names = public_names()
    assert "AdvTrainer" in names
    missing = [name for name in names if f'id="hf_advft.{name}"' not in api]
    assert not missing, f"public names without an API entry: {missing}"
    for module in ("attacks", "schedules", "evaluation", "hub", "data"):
        assert f'id="hf_advft.{module}"' in (site / "api" / module / "index.html").read_text()

    for guide in ("training", "schedules", "evaluation", "hub", "cli", "recipes", "app", "scale", "errors"):
        assert (site / guide / "index.html").is_file(), guide
    # The benchmarks page is benchmarks/README.md itself, with the files it links to published beside it.
    bench = (site / "benchmarks" / "index.html").read_text()
    first_heading = next(line for line in (ROOT / "benchmarks" / "README.md").read_text().splitlines()
                         if line.startswith("## "))
    assert first_heading[3:].strip() in bench
    assert (site / "benchmarks" / "results" / "compute_to_robustness.png").is_file()
    # Offline site: no web fonts or other assets fetched from elsewhere.
    assert "fonts.googleapis.com" not in (site / "index.html").read_text()


def test_hf_style_argument_entries_are_read_as_google_entries():
    pytest.importorskip("griffe", reason="griffe is not installed: pip install -e '.[docs]' (make test does)")
    sys.path.insert(0, str(ROOT / "docs" / "hooks"))
    try:
        from hf_docstrings import rewrite
    finally:
        sys.path.remove(str(ROOT / "docs" / "hooks"))
    doc = """Summary with [`AdvTrainer`] and [`~hf_advft.PixelSpace`].

    Args:
        model (`torch.nn.Module`): The model.
        mean (`Sequence[float]`, *optional*), std (`Sequence[float]`, *optional*):
            The normalization, given as `(x - mean) / std`.
        steps (`int`, *optional*, defaults to `10`): PGD steps
            (each one forward and backward pass).

    Returns:
        [`RobustnessResult`]
    """
    lines = rewrite(doc).splitlines()
    assert lines[0] == "Summary with `AdvTrainer` and `PixelSpace`."
    assert "        model: The model." in lines
    # Several names on one line: one entry each, with the shared description.
    i, j = lines.index("        mean:"), lines.index("        std:")
    assert lines[i + 1] == lines[j + 1] == "            The normalization, given as `(x - mean) / std`."
    k = lines.index("        steps: PGD steps")
    assert lines[k + 1] == "            (each one forward and backward pass)."
    assert "        `RobustnessResult`" in lines
    assert not any("*optional*" in line for line in lines)


def test_readme_is_a_front_page_with_the_two_commands_and_working_links():
    readme = (ROOT / "README.md").read_text()
    lines = readme.splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: the guides belong in docs/"
    # The two set-up commands, as lines of a shell block.
    assert any(line.startswith("make demo   #") for line in lines)
    assert any(line.startswith("make test   #") for line in lines)
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", readme) if "://" not in t]
    assert "docs/index.md" in targets and "docs/api/index.md" in targets
    missing = sorted({t for t in targets if t and not (ROOT / t).exists()})
    assert not missing, f"README links to missing files: {missing}"
    # Every guide in the site's navigation is linked from the front page.
    nav_pages = re.findall(r":\s+([\w/]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)
    guides = {f"docs/{page}" for page in nav_pages if not page.startswith(("api/", "benchmarks/"))} - {"docs/index.md"}
    assert guides, "no guide pages found in mkdocs.yml"
    assert not guides - set(targets), f"guides not linked from README.md: {sorted(guides - set(targets))}"
