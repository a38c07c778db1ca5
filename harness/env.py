"""What makes a number reproducible: code versions, software, hardware, scheduler ids."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from harness import versions
from harness.device import tf32_allowed

REPO = Path(__file__).resolve().parent.parent
# The distributions a run imports (requirements.txt without reports, tests and lint), by their registry names.
PACKAGES = ("torch", "torchaudio", "numpy", "hydra-core", "omegaconf", "submitit", "PyYAML", "pandas", "pyarrow",
            "pillow", "datasets", "wfdb", "PyWavelets", "soundfile", "scipy", "tqdm")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def packages() -> dict[str, str | None]:
    """Installed version of each of PACKAGES (None when not installed)."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def code_versions(config: dict[str, Any]) -> dict[str, int | None]:
    """The versions of the run's model, task and harness code (harness.versions), as the run id hashes them."""
    return versions.of_config(config)


def cpu_model() -> str | None:
    """The host CPU's model name (Linux /proc/cpuinfo), or None where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def capture(device: torch.device | None = None, precision: str | None = None) -> dict[str, Any]:
    """The environment of a run on `device`. With the run's `train.precision`, `tf32` says whether its fp32 matmuls
    and convolutions ran in TF32 (harness.device.set_precision sets it so; None off CUDA)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    env: dict[str, Any] = {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "python": platform.python_version(),
        "torch": torch.__version__,
        # The CUDA the run used: null on the CPU, where a CUDA build of torch (its version says which) uses none.
        "cuda": torch.version.cuda if device is not None and device.type == "cuda" else None,
        "packages": packages(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": cpu_model(),  # a step bound by Python and kernel launches runs as fast as this CPU
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),  # in a SLURM job, the CPUs the job was given
        "argv": sys.argv,
    }
    if device is not None and device.type == "cuda":
        env["device"] = torch.cuda.get_device_name(device)
    else:
        env["device"] = platform.processor() or platform.machine()
    env["tf32"] = tf32_allowed(device, precision) if device is not None and precision is not None else None
    slurm = {k: os.environ[v] for k, v in (("job_id", "SLURM_JOB_ID"), ("array_job_id", "SLURM_ARRAY_JOB_ID"),
                                            ("array_task_id", "SLURM_ARRAY_TASK_ID"),
                                            ("restart_count", "SLURM_RESTART_COUNT"),
                                            ("node", "SLURMD_NODENAME")) if v in os.environ}
    env["slurm"] = slurm or None
    return env


def slurm_cancelled() -> bool:
    """In a SLURM job that was told to stop (SIGTERM): has SLURM cancelled it (`scancel`), so that nothing will
    requeue it? Not when it is being requeued (`scontrol requeue`, preemption: its restart count has gone up since
    it started), reached its time limit, or was only signalled (still running). Asked of the controller
    (`scontrol show job`); False outside SLURM or where the controller does not answer."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return False
    try:
        out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    fields = dict(item.split("=", 1) for item in out.stdout.split() if "=" in item)
    if out.returncode != 0 or fields.get("JobState") not in ("CANCELLED", "COMPLETING"):
        return False  # RUNNING: a signal only (`scancel --signal`); PENDING, REQUEUED: requeued
    if int(fields.get("Restarts", "0")) > int(os.environ.get("SLURM_RESTART_COUNT", "0")):
        return False
    limit, ran = _slurm_seconds(fields.get("TimeLimit", "")), _slurm_seconds(fields.get("RunTime", ""))
    return limit is None or ran is None or ran < limit


def _slurm_seconds(text: str) -> int | None:
    """SLURM's `[D-]HH:MM:SS` (or MM:SS) as seconds; None for UNLIMITED or anything else."""
    days, _, clock = text.rpartition("-")
    parts = clock.split(":")
    if not all(p.isdigit() for p in parts) or not 2 <= len(parts) <= 3 or (days and not days.isdigit()):
        return None
    seconds = 0
    for p in parts:
        seconds = 60 * seconds + int(p)
    return seconds + 86400 * int(days or 0)
