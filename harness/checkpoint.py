"""Checkpoints and stop requests.

A checkpoint holds everything needed to continue bit for bit: model, optimizer, schedule, the
position in the epoch, the best state so far, the metrics history and every RNG state. It is
written atomically (harness.files), so a job killed while saving leaves the previous one.

It holds only tensors and plain Python values (RNG states included), so that it loads with
`torch.load(weights_only=True)`, which runs no code from the file: a checkpoint copied from elsewhere
cannot execute anything. It also names what it was made for (`Identity`: the run id, the config and the data
fingerprint), and a run resumes only from a checkpoint of its own: another run's file of the same shapes, or one
written before the data changed, would otherwise be continued and recorded as this run's result.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from harness.errors import UserError
from harness.files import atomic_write

# SIGTERM and SIGUSR1: a scheduler's warning before a kill; SIGUSR2: submitit's checkpoint signal (SLURM sends it
# before the time limit); SIGINT: Ctrl-C (a second one interrupts at once, without a checkpoint); SIGHUP: the
# terminal was closed (its default would end the run without a checkpoint and leave its lock).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT, signal.SIGHUP)
KEYS = ("model", "optimizer", "scheduler", "rng", "progress")
# In the run folder once a run completes, the weights its test scored, alone ({"model": state dict}): the
# best-validation state, or the last one where train.test_on=last (the LRA Transformer's --test_only run).
BEST = "best.pt"
FINAL = "final.pt"
TESTED_FILES = {"best": BEST, "last": FINAL}


class CheckpointError(UserError):
    """A checkpoint that is not ours or not whole; the message says how to start the run over."""


class Preempted(Exception):
    """Training stopped on request after writing its checkpoint; rerun the same config to resume.

    `signum` is the signal that asked, which the entry point hands on to the scheduler (sweeps.slurm). `progress`
    (metric, epoch, step, history: the validations so far; segments: what each piece of the run ran on) says how
    far training got, for the run's record.
    """

    def __init__(self, message: str, signum: int | None = None, checkpointed: bool = True,
                 progress: dict[str, Any] | None = None):
        super().__init__(message)
        self.signum = signum
        self.checkpointed = checkpointed  # False: stopped before training, with nothing to checkpoint yet
        self.progress = progress


@dataclass(frozen=True)
class Identity:
    """What a checkpoint was made for: the run id, the config it hashes (semantic keys and code versions) and the
    fingerprint of the data read. Plain data, so that it loads with weights_only."""

    run_id: str
    config: dict[str, Any]
    data: Any

    @classmethod
    def of(cls, run_id: str, config: Mapping[str, Any], data: Any) -> Identity:
        plain = json.loads(json.dumps({"config": config, "data": data}, default=str))  # what torch.load gives back
        return cls(run_id, plain["config"], plain["data"])


def check_identity(state: Mapping[str, Any], identity: Identity, path: Path) -> None:
    """CheckpointError, naming what differs, unless the checkpoint `state` was made for this run and this data."""
    made_for = state.get("identity")
    if not isinstance(made_for, dict) or not {"run_id", "config", "data"} <= made_for.keys():
        raise CheckpointError(f"{path} does not say which run and data it was made for (written by an older "
                              f"seqbench, or not for this run): delete it to start this run over, or rerun with "
                              f"force=true")
    if made_for["run_id"] != identity.run_id:
        raise CheckpointError(f"{path} is the checkpoint of run {made_for['run_id']}, not of {identity.run_id} "
                              f"({differences(made_for['config'], identity.config)}): resuming it would record "
                              f"another run's training as this one's; delete it to start this run over, or rerun "
                              f"with force=true")
    if made_for["data"] != identity.data:
        raise CheckpointError(f"{path} was written while training on other data (fingerprint "
                              f"{_short(made_for['data'])} then, {_short(identity.data)} now): the data changed "
                              f"since this run stopped; put the data back to resume, or rerun with force=true to "
                              f"start over on the data as it is now")


def differences(then: Mapping[str, Any], now: Mapping[str, Any], most: int = 4) -> str:
    """'seed 1 there, 0 here; optim.lr ...': the keys whose values differ, the first `most` of them. Of a section
    whose name differs (another model), only the name: its other options differ as a matter of course."""
    a, b = _flat(then), _flat(now)
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k, "unset") != b.get(k, "unset"))
    renamed = {k.removesuffix("name") for k in keys if k.endswith(".name")}
    keys = [k for k in keys if k.endswith(".name") or not any(k.startswith(section) for section in renamed)]
    said = [f"{k} {a.get(k, 'unset')} there, {b.get(k, 'unset')} here" for k in keys[:most]]
    more = f" and {len(keys) - most} more" if len(keys) > most else ""
    return "; ".join(said) + more if said else "the same config"


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _short(data: Any) -> str:
    """A data fingerprint in a few characters: its sha256 where it has one."""
    digest = data.get("sha256") if isinstance(data, Mapping) else None
    return str(digest)[:12] if digest else json.dumps(data, sort_keys=True)[:60]


class _KeepsWriteErrors:
    """A file for torch.save that remembers the OSError of a failed write: torch's zip writer replaces it with a
    RuntimeError ('[enforce fail at inline_container.cc] unexpected pos') that no longer says the disk is full."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.f.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.f.flush()


def save(state: dict[str, Any], path: Path) -> None:
    def write(tmp: Path) -> None:
        # Through a Python file, so that a full disk is an OSError (ENOSPC) that atomic_write reports as such;
        # torch.save given a path fails with a RuntimeError that does not say why.
        with open(tmp, "wb") as f:
            out = _KeepsWriteErrors(f)
            try:
                torch.save(state, out)
            except RuntimeError as exc:
                if out.error is not None:
                    raise out.error from exc
                raise

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


def load_weights(path: Path, state: str = "best") -> dict[str, torch.Tensor] | None:
    """The state dict of a `save_weights` file, or of a checkpoint's best-validation (`state` best) or current (last)
    state; None if `path` is missing."""
    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable seqbench weights file (truncated, or from an untrusted "
                              f"source); delete it, and rerun the training run with force=true to write it again"
                              ) from exc
    if isinstance(saved, dict) and isinstance(saved.get("progress"), dict) and state == "best":  # a whole checkpoint
        saved = {"model": saved["progress"].get("best_state")}
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
        raise CheckpointError(f"{path} holds no model weights; rerun the training run with force=true")
    return saved["model"]


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
        def handler(signum: int) -> None:
            if signum == signal.SIGINT and self.requested == signal.SIGINT:
                raise KeyboardInterrupt
            self.requested = signum

        with stop_signals_handled(handler):
            yield self


@contextmanager
def stopping_at_once() -> Iterator[None]:
    """While a run has nothing new to checkpoint (its data prepared, its model built, its best state tested): a stop
    signal ends it at once with Preempted(checkpointed=False), rather than with a KeyboardInterrupt traceback or,
    for the other signals, a silent death that leaves the run's lock behind."""

    def handler(signum: int) -> None:
        raise Preempted(f"stopped by signal {signum} ({signal.Signals(signum).name}) outside training (preparing "
                        f"the data or the model, or testing the best state)", signum, checkpointed=False)

    with stop_signals_handled(handler):
        yield


@contextmanager
def stop_signals_handled(handler: Callable[[int], None]) -> Iterator[None]:
    """`handler(signum)` for every stop signal while inside; the previous handlers after."""
    if threading.current_thread() is not threading.main_thread():  # signals go to the main thread only
        yield
        return
    terminals = [fd for fd in (1, 2) if _is_terminal(fd)]  # asked now: once the terminal hangs up, it says no

    def on_signal(signum: int, frame: Any) -> None:
        if signum == signal.SIGHUP:
            _write_nowhere(terminals)
        handler(signum)

    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _is_terminal(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _write_nowhere(fds: list[int]) -> None:
    """Point the closed terminal's file descriptors at /dev/null: writing to a hung-up terminal fails (EIO), which
    would end the run in a traceback instead of a checkpoint."""
    if not fds:
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in fds:
            os.dup2(null, fd)
    finally:
        os.close(null)
