"""The device a run uses: which one, its autocast, and its peak memory."""

from __future__ import annotations

import resource
from contextlib import nullcontext
from typing import Any

import torch

from harness.errors import ConfigError


def resolve_device(name: str, key: str = "train.device") -> torch.device:
    """`auto` (CUDA when there is one), `cpu`, `cuda` or `cuda:N`; `key` names the option in errors."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cuda", "cpu"):
        raise ConfigError(f"{key} must be auto, cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}={name} but no CUDA device is available; use {key}=cpu")
    return device


PRECISIONS = ("auto", "bf16", "fp32", "tf32")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"train.precision must be {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}, "
                          f"got {precision!r}")


def autocast_for(device: torch.device, precision: str) -> Any:
    check_precision(precision)
    if device.type == "cuda" and precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def tf32_allowed(device: torch.device, precision: str) -> bool | None:
    """Whether fp32 matmuls and convolutions may run in TF32 on this device (None: not a CUDA device).

    Only `fp32` forbids it: torch's own default for matmuls since 1.12. `tf32` is what the published S4, SGConv
    (train.py) and MultiresNet (classification.py) trainers turn on; under bf16 autocast it touches only the
    operations autocast leaves in fp32, as before `tf32` existed.
    """
    check_precision(precision)
    return None if device.type != "cuda" else precision != "fp32"


def set_precision(device: torch.device, precision: str) -> None:
    """Set torch's process-wide TF32 flags for a run on `device` (the legacy flags, as harness.timing.tf32 uses:
    torch refuses a mix of them and the newer `fp32_precision` API in one process)."""
    allowed = tf32_allowed(device, precision)
    if allowed is not None:
        torch.backends.cuda.matmul.allow_tf32 = allowed
        torch.backends.cudnn.allow_tf32 = allowed


def peak_bytes(device: torch.device) -> tuple[int, str]:
    """Absolute peak: on CUDA the most tensor memory allocated since fit() reset the counter, on CPU the
    process's resident-set high-water mark.

    Not harness.timing.PeakMemory, which measures the rise above a baseline (so without the weights) and resets
    the CPU high-water mark: right for the benchmark, but records of runs hold absolute peaks.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "cpu_max_rss"
