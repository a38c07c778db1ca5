"""Live curves where researchers look: TensorBoard event files and Weights & Biases runs; none by default.

    python run.py task=listops model=s4d logger=tensorboard        event files in results/runs/<run_id>/
    python run.py task=listops model=s4d logger=[tensorboard,wandb]

Every point is on the optimizer-step axis (the `step` of metrics.jsonl):
- `train/loss` (the mean training loss of the steps since the previous point of the same epoch) and `train/lr` every
  `log.every_n_steps` steps;
- `epoch/train_loss`, `epoch/lr` and `val/<metric>` at each epoch's last step: the epoch's row of metrics.jsonl;
- the resolved config: as text in TensorBoard, as the run's config in W&B; the run id names the run in both
  (`tensorboard --logdir results/runs` lists runs by id; W&B's run id is the run id, so a resumed run continues
  the same W&B run).

Resuming continues the same axis without a duplicated point: `loggers.json` in the run folder holds the last step
written, and a resumed run, which recomputes the steps after its checkpoint exactly, skips points up to it. A
step's points are written together once the next step's arrive, at the end of each epoch (before its checkpoint),
and when the run stops. Only a kill -9 between writing a step and noting it in loggers.json can write that step
twice.

`wandb` is an optional dependency; `log.wandb_mode=auto` logs offline (under the run folder, for `wandb sync`
later) when W&B's server does not answer.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import yaml
from omegaconf import OmegaConf

from harness.config import LogConfig, logger_names
from harness.errors import UserError
from harness.files import atomic_write

SIDECAR = "loggers.json"  # in the run folder: the last step written, and whether the run's header was


PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def log_config(cfg: Any) -> LogConfig:
    """The run config's `log` section (its defaults where a config has none)."""
    node = cfg.get("log")
    return LogConfig(**OmegaConf.to_container(node, resolve=True)) if node is not None else LogConfig()


def check_available(names: Any) -> None:
    """UserError naming the package to install for a chosen logger that cannot be imported (before any work)."""
    for name in logger_names(names):
        if importlib.util.find_spec(PACKAGES[name]) is None:
            raise UserError(f"logger={name} needs the {PACKAGES[name]} package: pip install {PACKAGES[name]}")


class Backend(Protocol):
    def write(self, step: int, scalars: dict[str, float]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class TensorBoard:
    """Event files in the run folder itself, so that the run's name in TensorBoard is its run id."""

    def __init__(self, run_dir: Path, run_id: str, config: dict[str, Any], first: bool):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("logger=tensorboard needs the tensorboard package: pip install tensorboard") from None
        self.writer = SummaryWriter(log_dir=str(run_dir))
        if first:
            text = yaml.safe_dump(config, sort_keys=False)
            # TensorBoard renders text as Markdown: indented by four spaces, the YAML stays a code block.
            self.writer.add_text("config", "    " + text.replace("\n", "\n    "), 0)
            self.writer.add_text("run_id", run_id, 0)

    def write(self, step: int, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def wandb_reachable(timeout_s: float = 3.0) -> bool:
    """Does W&B's server (WANDB_BASE_URL, else api.wandb.ai) accept a connection?"""
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    try:
        socket.create_connection((url.hostname or "api.wandb.ai", url.port or 443), timeout=timeout_s).close()
    except OSError:
        return False
    return True


class WandB:
    """A W&B run whose id and name are the run id, its files under the run folder (`wandb/`)."""

    def __init__(self, run_dir: Path, run_id: str, config: dict[str, Any], opts: LogConfig, group: str | None):
        try:
            import wandb
        except ImportError:
            raise UserError("logger=wandb needs the wandb package: pip install wandb") from None
        mode = opts.wandb_mode
        if mode == "auto":
            mode = "online" if wandb_reachable() else "offline"
        settings = wandb.Settings(console="off", quiet=True, silent=True, x_disable_stats=True)
        try:
            self.run = wandb.init(project=opts.wandb_project, id=run_id, name=run_id, group=group, config=config,
                                  dir=str(run_dir), mode=mode, resume="allow", settings=settings)
        except wandb.errors.UsageError as exc:  # online without a key, for instance
            raise UserError(f"W&B refused the run ({str(exc).splitlines()[0]}): run `wandb login`, or log offline "
                            f"with log.wandb_mode=offline") from None

    def write(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step, commit=True)

    def flush(self) -> None:
        """W&B's own process streams what was logged."""

    def close(self) -> None:
        self.run.finish()


class Loggers:
    """The run's loggers (none, one or both): points gathered by step, written once per step, never twice."""

    def __init__(self, backends: list[Backend], run_dir: Path | None, every: int, written: int,
                 started: list[str] | None = None):
        self.backends, self.run_dir, self.every = backends, run_dir, every
        self.written = written  # the last step written, by this piece or an earlier one
        self.started = started or []  # the loggers that wrote the run's header (TensorBoard's config text)
        self.step: int | None = None  # the step whose points are being gathered
        self.pending: dict[str, float] = {}

    @classmethod
    def none(cls) -> Loggers:
        return cls([], None, 1, -1)

    @classmethod
    def open(cls, names: Any, opts: LogConfig, run_dir: Path, run_id: str, config: dict[str, Any],
             group: str | None = None) -> Loggers:
        """The loggers `names` (the `logger` option) for the run in `run_dir`; none in a process that writes no
        files (a rank other than 0: pass names=None)."""
        names = logger_names(names)
        if not names:
            return cls.none()
        sidecar = _read_sidecar(run_dir)
        backends: list[Backend] = []
        for name in names:
            if name == "tensorboard":
                backends.append(TensorBoard(run_dir, run_id, config, first=name not in sidecar["started"]))
            else:
                backends.append(WandB(run_dir, run_id, config, opts, group))
        loggers = cls(backends, run_dir, opts.every_n_steps, sidecar["step"], sorted({*sidecar["started"], *names}))
        loggers._note()
        return loggers

    def due(self, step: int) -> bool:
        """Is a training point due after optimizer step `step`? (Also one an earlier piece wrote: its window's start
        is the next point's.)"""
        return bool(self.backends) and step % self.every == 0

    def train_point(self, progress: dict[str, Any], lr: float) -> None:
        """The mean loss of the steps since the previous point of this epoch, and the learning rate; `progress` is
        the training loop's (its `log_mark`, checkpointed with it, makes a resumed run's points the same)."""
        epoch, mark_sum, mark_n = progress.get("log_mark") or (progress["epoch"], 0.0, 0)
        if epoch != progress["epoch"]:
            mark_sum, mark_n = 0.0, 0
        n = progress["loss_n"] - mark_n
        if n > 0:
            self.add(progress["step"], {"train/loss": (progress["loss_sum"] - mark_sum) / n, "train/lr": lr})
        progress["log_mark"] = [progress["epoch"], progress["loss_sum"], progress["loss_n"]]

    def epoch_point(self, row: dict[str, Any], metric: str) -> None:
        """An epoch's row of metrics.jsonl, at its last step, written at once (before the epoch's checkpoint)."""
        self.add(row["step"], {"epoch/train_loss": row["train_loss"], f"val/{metric}": row["val"],
                               "epoch/lr": row["lr"]})
        self.commit()

    def add(self, step: int, scalars: dict[str, float]) -> None:
        if not self.backends or step <= self.written:
            return  # written by an earlier piece of this run
        if self.step is not None and step != self.step:
            self.commit()
        self.step = step
        self.pending.update(scalars)

    def commit(self) -> None:
        """Write the gathered step, then note it in loggers.json."""
        if self.step is None:
            return
        for backend in self.backends:
            backend.write(self.step, self.pending)
            backend.flush()
        self.written, self.step, self.pending = self.step, None, {}
        self._note()

    def close(self) -> None:
        self.commit()
        for backend in self.backends:
            backend.close()
        self.backends = []

    def _note(self) -> None:
        assert self.run_dir is not None
        atomic_write(self.run_dir / SIDECAR, json.dumps({"step": self.written, "started": self.started}) + "\n")


def _read_sidecar(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((run_dir / SIDECAR).read_text())
        return {"step": int(data["step"]), "started": list(data["started"])}
    except (OSError, ValueError, KeyError, TypeError):
        return {"step": -1, "started": []}
