"""Pieces the benchmark scripts share: the in-memory dataset and the hardware line of their reports."""

from __future__ import annotations

import os
import platform

import torch


class DictDataset(torch.utils.data.Dataset):
    """Tensors held in memory, served as `{"pixel_values", "labels"}` examples."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def hardware(device: str) -> str:
    """The GPU's name, or the CPU model, core count and torch threads."""
    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name()
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return f"{cpu}, {os.cpu_count()} cores, torch threads: {torch.get_num_threads()}"
