"""Checkpoints and stop requests.

A checkpoint holds everything needed to continue bit for bit: model, optimizer, schedule, the
position in the epoch, the best state so far, the metrics history and every RNG state. It is
written atomically (harness.files), so a job killed while saving leaves the previous one.

It holds only tensors and plain Python values (RNG states included), so that it loads with
`torch.load(weights_only=True)`, which runs no code from the file: a checkpoint copied from elsewhere
cannot execute anything.
"""

from __future__ import annotations

import random
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.errors import UserError
from harness.files import atomic_write

# SIGTERM and SIGUSR1: a scheduler's warning before a kill; SIGUSR2: submitit's checkpoint signal (SLURM sends it
# before the time limit); SIGINT: Ctrl-C (a second one interrupts at once, without a checkpoint).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)
KEYS = ("model", "optimizer", "scheduler", "rng", "progress")
BEST = "best.pt"  # in the run folder once a run completes: the best-validation weights alone, {"model": state dict}


class CheckpointError(UserError):
    """A checkpoint that is not ours or not whole; the message says how to start the run over."""


class Preempted(Exception):
    """Training stopped on request after writing its checkpoint; rerun the same config to resume.

    `signum` is the signal that asked, which the entry point hands on to the scheduler (sweeps.slurm).
    """

    def __init__(self, message: str, signum: int | None = None):
        super().__init__(message)
        self.signum = signum


def save(state: dict[str, Any], path: Path) -> None:
    def write(tmp: Path) -> None:
        # Through a Python file, so that a full disk is an OSError (ENOSPC) that atomic_write reports as such;
        # torch.save given a path fails with a RuntimeError that does not say why.
        with open(tmp, "wb") as f:
            torch.save(state, f)

    atomic_write(path, write)


def load(path: Path) -> dict[str, Any] | None:
    """The checkpoint at `path`, None if there is none; CheckpointError if it is not a whole seqbench checkpoint."""
    if not path.exists():
        return None
    unreadable = CheckpointError(f"{path} is not a readable seqbench checkpoint (truncated, from an older seqbench "
                                 f"or from an untrusted source): delete it to start this run over, or rerun with "
                                 f"force=true")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a zip, or holding objects other than tensors and plain data
        raise unreadable from exc
    if not isinstance(state, dict) or any(key not in state for key in KEYS):
        raise unreadable
    return state


def save_weights(state_dict: dict[str, torch.Tensor], path: Path) -> None:
    """The weights alone (`BEST`): what an evaluation needs, without the optimizer state and RNGs of last.pt."""
    save({"model": state_dict}, path)


def load_weights(path: Path) -> dict[str, torch.Tensor] | None:
    """The state dict of a `save_weights` file, or of the best state in a checkpoint; None if `path` is missing."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable seqbench weights file (truncated, or from an untrusted "
                              f"source); delete it, and rerun the training run with force=true to write it again"
                              ) from exc
    if isinstance(state, dict) and isinstance(state.get("progress"), dict):  # a whole checkpoint (last.pt)
        state = {"model": state["progress"].get("best_state")}
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{path} holds no model weights; rerun the training run with force=true")
    return state["model"]


def rng_state() -> dict[str, Any]:
    """Every RNG state, as tensors and lists (what torch.load(weights_only=True) reads back)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {"torch": torch.get_rng_state(),
                             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
                             "python": [version, list(internal), gauss_next]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class StopFlag:
    """Set by any of STOP_SIGNALS while installed; the training loop then checkpoints and stops.

    A second Ctrl-C raises KeyboardInterrupt at once, for a user who will not wait for the step to end.
    """

    def __init__(self) -> None:
        self.requested: int | None = None

    def __bool__(self) -> bool:
        return self.requested is not None

    @contextmanager
    def installed(self) -> Iterator[StopFlag]:
        if threading.current_thread() is not threading.main_thread():  # signals go to the main thread only
            yield self
            return
        previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}

        def handler(signum: int, frame: Any) -> None:
            if signum == signal.SIGINT and self.requested == signal.SIGINT:
                raise KeyboardInterrupt
            self.requested = signum

        for sig in STOP_SIGNALS:
            signal.signal(sig, handler)
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
