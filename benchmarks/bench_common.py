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
