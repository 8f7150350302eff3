"""mkdocs hook: publish `benchmarks/README.md` as the site's Benchmarks page, with the files it links to.

The benchmarks' README lives beside the scripts and results it describes (and is edited there, in the same commit as a
benchmark), so the site takes it as it is instead of keeping a copy that would drift. Its relative links
(`step_overhead.py`, `results/compute_to_robustness.png`, ...) keep working because those files are published under
the same `benchmarks/` folder of the site.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File


ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = {".py", ".sh", ".json", ".png", ".svg"}


def on_files(files, config):
    """Add `benchmarks/index.md` (from `benchmarks/README.md`) and the scripts and results it links to."""
    bench = ROOT / "benchmarks"
    files.append(File.generated(config, "benchmarks/index.md", abs_src_path=str(bench / "README.md")))
    for path in sorted(bench.rglob("*")):
        if path.is_file() and path.suffix in SUFFIXES and "__pycache__" not in path.parts:
            files.append(File.generated(config, f"benchmarks/{path.relative_to(bench).as_posix()}", abs_src_path=str(path)))
    return files
