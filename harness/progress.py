"""What a run shows while it works: a bar on a terminal, a few plain lines in a file (a SLURM log), never a bar.

`ProgressLog` is the training loop's; `bar` is for anything else that counts (generating or tokenising data,
fingerprinting files): a tqdm bar on a terminal; in a file, a plain line after half a minute, then one a minute.
`plural` writes "1 point", "2 points".
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm import tqdm


def plural(n: int, noun: str, many: str | None = None) -> str:
    """`1 point`, `2 points`, `1,200 points`; `many` for an irregular plural."""
    return f"{n:,} {noun if n == 1 else many or noun + 's'}"


def on_terminal(stream: TextIO) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


class PlainBar:
    """tqdm's counting interface (iterate, update, close) as plain lines: the first after `FIRST_S`, then at most
    every `EVERY_S`, each with the count, the share done and the ETA; none when it finishes sooner."""

    FIRST_S = 30.0
    EVERY_S = 60.0

    def __init__(self, iterable: Iterable[Any] | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", disable: bool = False, stream: TextIO | None = None):
        self.iterable, self.desc, self.unit, self.disable = iterable, desc, unit, disable
        self.total = total if total is not None else len(iterable) if hasattr(iterable, "__len__") else None
        self.stream = stream or sys.stderr
        self.n, self.t0 = 0, time.perf_counter()
        self.next_line = self.t0 + self.FIRST_S

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None
        for item in self.iterable:
            yield item
            self.update(1)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        if self.disable or now < self.next_line:
            return
        self.next_line = now + self.EVERY_S
        done = f"{self.n:,}" if self.total is None else f"{self.n:,}/{self.total:,} ({self.n / self.total:.0%})"
        eta = ""
        if self.total:
            eta = f", ETA {duration((now - self.t0) / self.n * (self.total - self.n))}"
        print(f"seqbench: {self.desc}: {done} {self.unit}{eta}", file=self.stream, flush=True)

    def close(self) -> None:
        pass


def bar(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
        disable: bool = False, stream: TextIO | None = None) -> tqdm | PlainBar:
    """A progress counter with tqdm's interface: tqdm's bar on a terminal, PlainBar's lines in a file."""
    stream = stream or sys.stderr
    if on_terminal(stream):
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=stream)
    return PlainBar(iterable, total=total, desc=desc, unit=unit, disable=disable, stream=stream)


class ProgressLog:
    """Progress on stderr. On a terminal, a tqdm bar per epoch; otherwise (a file, a SLURM job) plain lines: one
    per epoch and, inside epochs, at most a few, spread so that a whole run writes about LINES_PER_RUN at most, and
    never more than a minute of silence at the start (SILENCE_S[0]) nor ten minutes later (SILENCE_S[1]).

    Lines give epoch and step, the epoch's mean loss so far, the last validation metric, the training throughput and
    the run's ETA. With `show` false (train.progress=false) only the per-epoch lines are written.

    Where there is no GPU, a run whose first steps say it will take more than LONG_RUN_S says so once, within a
    minute: its steps, the time they will take on this CPU, and how to shrink it.
    """

    LINES_PER_RUN = 300
    MIN_INTERVAL_S = 10.0  # between two lines inside an epoch
    SILENCE_S = (60.0, 600.0)  # the longest wait for a plain line: the run's first, then any other
    ESTIMATE_AFTER = (3, 10.0, 60.0)  # the cost is estimated after 3 steps and 10 s, or after 60 s
    LONG_RUN_S = 600.0

    def __init__(self, show: bool, epochs: int, steps_per_epoch: int, total: int, metric: str, step: int,
                 val: float | None = None, active: bool = True, stream: TextIO | None = None):
        import torch  # here: the counters above serve modules that need no torch

        self.stream = stream or sys.stderr
        self.active = active
        self.bars = active and show and on_terminal(self.stream)
        self.plain = active and show and not self.bars
        self.inner = min(9, max(0, self.LINES_PER_RUN // epochs - 1)) if self.plain else 0
        self.epochs, self.steps_per_epoch, self.total, self.metric = epochs, steps_per_epoch, total, metric
        self.t0, self.step0, self.val = time.perf_counter(), step, val
        self.at, self.loss = step, None  # the step reached, the last loss read
        self.printed, self.last_print = False, self.t0
        self.estimate = active and not torch.cuda.is_available()  # still to be said: what the run costs on the CPU
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
        self.at += 1
        if self.bar is not None:
            self.bar.update(1)
        now = time.perf_counter()
        if self.estimate:
            self._estimate(now)
        if self.plain and now - self.last_print >= self.SILENCE_S[1 if self.printed else 0]:
            self._line(self.at, self.loss, now - self.epoch_t0)

    def check(self, step: int, batch: int, loss: float) -> None:
        """At each of the loop's loss readings (about every tenth of an epoch)."""
        self.loss = loss
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

    def _estimate(self, now: float) -> None:
        """Once the first steps are timed: on the CPU, a run longer than LONG_RUN_S says what it costs."""
        steps, elapsed = self.at - self.step0, now - self.t0
        least_steps, least_s, most_s = self.ESTIMATE_AFTER
        if not ((steps >= least_steps and elapsed >= least_s) or elapsed >= most_s):
            return
        self.estimate = False
        per_step = elapsed / steps
        left = per_step * (self.total - self.at)
        if left < self.LONG_RUN_S:
            return
        small = max(1, int(self.LONG_RUN_S / per_step))
        self._print(f"seqbench: no GPU found: this run trains on the CPU, {per_step:.1f} s a step: "
                    f"{plural(self.total, 'step')} ({plural(self.steps_per_epoch, 'step')} an epoch), about "
                    f"{duration(per_step * self.steps_per_epoch)} an epoch and {duration(left)} to the end. To try it "
                    f"in about {duration(self.LONG_RUN_S)}: train.epochs=null train.max_steps={small} "
                    f"train.limit_eval_batches=10, or "
                    f"shrink the task (its options: `python -m harness list`), or run it on a GPU")

    def _line(self, step: int, loss: float | None, train_s: float, done: bool = False) -> None:
        if not self.active:
            return
        val = f" val {self.metric} {self.val:.4f}" if self.val is not None else ""
        per_step = (time.perf_counter() - self.t0) / max(1, step - self.step0)
        eta = duration(per_step * (self.total - step))
        shown_loss = f" loss {loss:.4f}" if loss is not None else ""
        self.printed, self.last_print = True, time.perf_counter()
        self._print(f"seqbench: epoch {self.epoch + 1}/{self.epochs}{' done' if done else ''} step {step}/{self.total}"
                    f"{shown_loss}{val} | {_count(self.tokens / max(train_s, 1e-9))} tokens/s | ETA {eta}")

    def _print(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)


def _count(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


def duration(seconds: float) -> str:
    """`4m05s`, `4h48m`, `2d03h`."""
    s = round(seconds)
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
