"""What makes a number reproducible: code version, software, hardware, scheduler ids."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def capture(device: torch.device | None = None) -> dict[str, Any]:
    status = _git("status", "--porcelain", "--untracked-files=no")
    env: dict[str, Any] = {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "argv": sys.argv,
    }
    if device is not None and device.type == "cuda":
        env["device"] = torch.cuda.get_device_name(device)
    else:
        env["device"] = platform.processor() or platform.machine()
    slurm = {k: os.environ[v] for k, v in (("job_id", "SLURM_JOB_ID"), ("array_job_id", "SLURM_ARRAY_JOB_ID"),
                                            ("array_task_id", "SLURM_ARRAY_TASK_ID"),
                                            ("restart_count", "SLURM_RESTART_COUNT"),
                                            ("node", "SLURMD_NODENAME")) if v in os.environ}
    env["slurm"] = slurm or None
    return env
