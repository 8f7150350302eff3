"""The documentation site (`docs/`, `mkdocs.yml`) builds with warnings as errors, offline, and covers the API."""

import ast
import os
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

    for guide in ("training", "schedules", "evaluation", "hub", "recipes", "scale", "errors"):
        assert (site / guide / "index.html").is_file(), guide
    # The benchmarks page is benchmarks/README.md itself, with the files it links to published beside it.
    bench = (site / "benchmarks" / "index.html").read_text()
    first_heading = next(line for line in (ROOT / "benchmarks" / "README.md").read_text().splitlines()
                         if line.startswith("## "))
    assert first_heading[3:].strip() in bench
    assert (site / "benchmarks" / "results" / "compute_to_robustness.png").is_file()
    # Offline site: no web fonts or other assets fetched from elsewhere.
    assert "fonts.googleapis.com" not in (site / "index.html").read_text()
