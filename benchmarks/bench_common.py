"""Pieces the benchmark scripts share: the in-memory dataset (the quickstart's) and the hardware line of reports."""

from __future__ import annotations

import os
import platform
import sys

import torch


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "recipes"))

# Tensors held in memory, served as {"pixel_values", "labels"} examples: the quickstart's own dataset.
from quickstart import DigitsDataset as DictDataset  # noqa: E402, F401 (re-exported for the benchmarks)


def hardware(device: str) -> str:
    """The GPU's name, or the CPU model, core count and torch threads."""
    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name()
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return f"{cpu}, {os.cpu_count()} cores, torch threads: {torch.get_num_threads()}"
