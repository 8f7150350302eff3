"""Pieces the benchmark scripts share: the in-memory dataset (the quickstart's) and the hardware line of reports."""

from __future__ import annotations

import functools
import os
import sys


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "recipes"))

# Tensors held in memory, served as {"pixel_values", "labels"} examples: the quickstart's own dataset.
from quickstart import DigitsDataset as DictDataset  # noqa: E402, F401 (re-exported for the benchmarks)

from hf_advft.environment import hardware as _library_hardware  # noqa: E402


# The library's one hardware line (hf_advft.environment), with the torch threads every CPU timing here depends on.
hardware = functools.partial(_library_hardware, threads=True)


def allocator_env() -> dict[str, str]:
    """The allocator settings of this process (glibc `MALLOC_*`, an `LD_PRELOAD`ed jemalloc/tcmalloc): on CPU they move
    step times by up to 15% (benchmarks/README.md, "Throughput at real sizes"), so every timing JSON records them."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_") or k == "LD_PRELOAD"}
