"""What a run shows while it trains: a bar on a terminal, a few plain lines per epoch in a file (a SLURM log)."""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

from tqdm import tqdm


class ProgressLog:
    """Progress on stderr. On a terminal, a tqdm bar per epoch; otherwise (a file, a SLURM job) plain lines: one
    per epoch and, inside epochs, at most a few, spread so that a whole run writes about LINES_PER_RUN at most.

    Lines give epoch and step, the epoch's mean loss so far, the last validation metric, the training throughput and
    the run's ETA. With `show` false (train.progress=false) only the per-epoch lines are written.
    """

    LINES_PER_RUN = 300
    MIN_INTERVAL_S = 10.0  # between two lines inside an epoch

    def __init__(self, show: bool, epochs: int, steps_per_epoch: int, total: int, metric: str, step: int,
                 val: float | None = None, active: bool = True, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.active = active
        self.bars = active and show and getattr(self.stream, "isatty", lambda: False)()
        self.inner = min(9, max(0, self.LINES_PER_RUN // epochs - 1)) if active and show and not self.bars else 0
        self.epochs, self.steps_per_epoch, self.total, self.metric = epochs, steps_per_epoch, total, metric
        self.t0, self.step0, self.val = time.perf_counter(), step, val
        self.bar: tqdm | None = None

    def start_epoch(self, epoch: int, batch: int) -> None:
        self.epoch, self.tokens, self.epoch_t0 = epoch, 0, time.perf_counter()
        self.train_s: float | None = None
        self.slot = batch * (self.inner + 1) // self.steps_per_epoch
        self.last_line = -math.inf
        if self.bars:
            self.bar = tqdm(total=self.steps_per_epoch, initial=batch, desc=f"epoch {epoch + 1}/{self.epochs}",
                            leave=False, file=self.stream)

    def step(self, tokens: int) -> None:
        self.tokens += tokens
        if self.bar is not None:
            self.bar.update(1)

    def check(self, step: int, batch: int, loss: float) -> None:
        """At each of the loop's loss readings (about every tenth of an epoch)."""
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}")
            return
        slot = batch * (self.inner + 1) // self.steps_per_epoch
        now = time.perf_counter()
        if self.slot < slot <= self.inner and now - self.last_line >= self.MIN_INTERVAL_S:
            self.slot, self.last_line = slot, now
            self._line(step, loss, now - self.epoch_t0)

    def end_training(self) -> None:
        self.train_s = time.perf_counter() - self.epoch_t0
        self.close()

    def end_epoch(self, step: int, loss: float, val: float) -> None:
        self.val = val
        self._line(step, loss, self.train_s or time.perf_counter() - self.epoch_t0, done=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _line(self, step: int, loss: float, train_s: float, done: bool = False) -> None:
        if not self.active:
            return
        val = f" val {self.metric} {self.val:.4f}" if self.val is not None else ""
        per_step = (time.perf_counter() - self.t0) / max(1, step - self.step0)
        eta = _duration(per_step * (self.total - step))
        print(f"seqbench: epoch {self.epoch + 1}/{self.epochs}{' done' if done else ''} step {step}/{self.total} "
              f"loss {loss:.4f}{val} | {_count(self.tokens / max(train_s, 1e-9))} tokens/s | ETA {eta}",
              file=self.stream, flush=True)


def _count(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


def _duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


