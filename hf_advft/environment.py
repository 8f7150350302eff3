"""What a number was measured on: the one `hardware()` line of model cards and benchmark reports."""

from __future__ import annotations

import os
import platform

import torch


__all__ = ["hardware"]


def _cpu_name() -> str:
    """The CPU's model name (`/proc/cpuinfo` on Linux), else what `platform` knows."""
    name = platform.processor() or platform.machine() or "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        return name


def hardware(device: str | torch.device = "cpu", *, world_size: int | None = None, threads: bool = False) -> str:
    """The hardware a number was measured on, in one line: the GPU's name, or the CPU's model and core count.

    The model card's *Compute* line (`AdvTrainer` saves, `world_size` processes) and every benchmark report use it.

    Args:
        device (`str` or `torch.device`, defaults to `"cpu"`): The device that ran the work.
        world_size (`int`, *optional*): The number of processes, written as a `"2 x "` prefix.
        threads (`bool`, defaults to `False`): Append the CPU threads torch uses (`torch.get_num_threads()`),
            which a CPU timing depends on.

    Example:

    ```python
    >>> from hf_advft.environment import hardware
    >>> hardware("cpu", world_size=1).startswith("1 x ")
    True
    ```
    """
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        name = f"{_cpu_name()}, {os.cpu_count()} cores"
    else:
        name = device.type.upper()
    if threads:
        name += f", torch threads: {torch.get_num_threads()}"
    return name if world_size is None else f"{world_size} x {name}"
