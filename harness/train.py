"""The training loop: fit a model to a task, evaluating each epoch and testing the best state.

Resuming is exact: the data order of every epoch is a function of (seed, epoch), and the
checkpoint holds the RNG states and the position inside the epoch, so an interrupted run that is
restarted computes the same numbers as one that never stopped.

A non-finite training loss or validation metric stops the run (Diverged). The loss is summed on the
device and read about ten times an epoch, never once per step, which would wait for the device at every step.
"""

from __future__ import annotations

import copy
import math
import resource
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from harness import checkpoint
from harness.config import OptimConfig, TrainConfig
from harness.distributed import Dist
from harness.errors import ConfigError
from harness.files import RunLock, atomic_write
from harness.optim import lr_factor, make_optimizer
from harness.results import strict_json
from harness.task import Batch, Task


class EpochBatches(Sampler[list[int]]):
    """Batches of indices in an order fixed by (seed, epoch), starting at batch `start`."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int = 0, epoch: int = 0, start: int = 0):
        self.n, self.batch_size, self.shuffle = n, batch_size, shuffle
        self.seed, self.epoch, self.start = seed, epoch, start

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        for b in range(self.start, len(self)):
            yield order[b * self.batch_size:(b + 1) * self.batch_size]

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)


@dataclass
class FitResult:
    """What a finished fit reports: the best-validation epoch's scores and the run's speed and memory."""

    metric: str
    higher_is_better: bool
    val: float
    test: float
    test_details: dict[str, Any]  # the metric's extra output on the test split (per-label AUROC, skipped labels)
    best_epoch: int
    history: list[dict[str, Any]]
    steps: int
    epochs: int
    train_samples_per_s: float
    train_tokens_per_s: float
    peak_bytes: int
    memory_kind: str


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


def autocast_for(device: torch.device, precision: str) -> Any:
    if precision not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"train.precision must be auto, bf16 or fp32, got {precision!r}")
    if device.type == "cuda" and precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _loader(task: Task, split: str, cfg: TrainConfig, sampler: EpochBatches) -> DataLoader:
    # A loader of its own generator: creating an iterator would otherwise draw from the global RNG
    # (for worker seeds) and shift the dropout masks of a resumed run.
    generator = torch.Generator().manual_seed(sampler.seed * 100_003 + sampler.epoch)
    return DataLoader(task.splits[split], batch_sampler=sampler, collate_fn=task.collate,
                      num_workers=cfg.num_workers, generator=generator, worker_init_fn=_ignore_stop_signals)


def _ignore_stop_signals(worker_id: int) -> None:
    """In a loader's worker process. Ctrl-C (and a scheduler's signal) reaches every process of the group; the
    training process alone answers it, by checkpointing, while a worker ended by it would fail the run."""
    for sig in checkpoint.STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def evaluate(model: nn.Module, task: Task, split: str, cfg: TrainConfig, device: torch.device) -> float:
    return score(model, task, split, cfg, device)[0]


@torch.no_grad()
def score(model: nn.Module, task: Task, split: str, cfg: TrainConfig,
          device: torch.device) -> tuple[float, dict[str, Any]]:
    """The split's metric and its details (e.g. per-label AUROC and the labels skipped for having one class)."""
    model.eval()
    metric = task.objective.metric()
    batch_size = cfg.eval_batch_size or cfg.batch_size
    sampler = EpochBatches(len(task.splits[split]), batch_size, shuffle=False)
    with autocast_for(device, cfg.precision):
        for i, batch in enumerate(_loader(task, split, cfg, sampler)):
            if cfg.limit_eval_batches is not None and i >= cfg.limit_eval_batches:
                break
            batch = to_device(batch, device)
            metric.update(model(batch["x"], lengths=batch.get("lengths")).float(), batch)
    return metric.compute(), metric.details()


def _tokens(batch: Batch) -> int:
    x = batch["x"]
    return int(x.shape[0] * x.shape[1])


def _peak_bytes(device: torch.device) -> tuple[int, str]:
    """Absolute peak: on CUDA the most tensor memory allocated since fit() reset the counter, on CPU the
    process's resident-set high-water mark.

    Not harness.timing.PeakMemory, which measures the rise above a baseline (so without the weights) and resets
    the CPU high-water mark: right for the benchmark, but records of runs hold absolute peaks.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "cpu_max_rss"


class Diverged(Exception):
    """Training produced a non-finite loss or validation metric: the run stops, recorded as `diverged`."""

    def __init__(self, what: str, epoch: int, step: int, history: list[dict[str, Any]], lr: float):
        super().__init__(f"{what} at epoch {epoch}, step {step}: lower optim.lr (now {lr:g}), clip gradients "
                         f"(train.grad_clip) or warm up longer (train.warmup_epochs)")
        self.epoch, self.step, self.history = epoch, step, history


def improves(val: float, best: float | None, higher_is_better: bool) -> bool:
    """Is `val` a new best (ties go to the later epoch)? A non-finite value never is, also not the first one."""
    if not math.isfinite(val):
        return False
    return best is None or (val >= best if higher_is_better else val <= best)


class LossMeter:
    """The epoch's summed training loss, kept on the device so that adding a step's loss does not wait for it."""

    def __init__(self, device: torch.device, total: float, n: int):
        # float64: the sum of the float32 step losses is then what Python floats would give, on any device.
        self.sum = torch.tensor(total, dtype=torch.float64, device=device)
        self.n = n
        # Steps of the epoch before the first non-finite loss: a non-finite sum stays non-finite.
        self.finite = torch.tensor(n, dtype=torch.int64, device=device)

    def add(self, loss: torch.Tensor | float) -> None:
        self.sum += loss
        self.finite += torch.isfinite(self.sum)
        self.n += 1

    def read(self) -> tuple[float, int | None]:
        """The sum (waiting for the device) and, when it is not finite, the epoch's first step (1-based) whose loss
        was not."""
        total = float(self.sum)
        return total, None if math.isfinite(total) else int(self.finite) + 1


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


def fit(model: nn.Module, task: Task, train: TrainConfig, optim: OptimConfig, seed: int, run_dir: Path,
        device: torch.device, dist: Dist | None = None, lock: RunLock | None = None) -> FitResult:
    """Train, evaluate each epoch, keep the best-validation state, test it. Resumes from run_dir/last.pt.

    With `dist` (several processes, harness.distributed) each rank trains on its share of every batch and only
    rank 0 writes files. `lock`, the run directory's lock, is refreshed as training advances. Raises Diverged on a
    non-finite training loss or validation metric, checkpoint.Preempted after checkpointing on a stop signal.
    """
    dist = dist or Dist()
    model.to(device)
    net = dist.wrap(model, device)  # the model itself when there is one process
    if train.compile:
        # Fuses the many small element-wise kernels (launch-bound at short lengths); the first steps compile.
        net = torch.compile(net)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(device)
    optimizer = make_optimizer(model, optim)
    n_train = len(task.splits["train"])
    steps_per_epoch = len(EpochBatches(n_train, train.batch_size, shuffle=True))
    if train.limit_train_batches is not None:
        steps_per_epoch = min(steps_per_epoch, train.limit_train_batches)
    total = train.max_steps if train.max_steps is not None else train.epochs * steps_per_epoch
    epochs = math.ceil(total / steps_per_epoch)
    warmup = train.warmup_steps if train.warmup_steps is not None else round(train.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, warmup, train.schedule))
    metric = task.objective.metric()
    # Where the loop reads the summed loss (a wait for the device): every tenth of an epoch.
    checks = {math.ceil(steps_per_epoch * i / 10) for i in range(1, 10)}

    ckpt_path = run_dir / "last.pt"
    state = checkpoint.load(ckpt_path)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        checkpoint.set_rng_state(state["rng"])
        progress = state["progress"]
        if dist.is_main:  # a kill between the checkpoint and the metrics log left the log one epoch short
            write_history(run_dir, progress["history"])
    else:
        checkpoint.seed_everything(seed)
        progress = {"epoch": 0, "batch": 0, "step": 0, "history": [], "best": None, "best_state": None,
                    "train_time": 0.0, "samples": 0, "tokens": 0, "loss_sum": 0.0, "loss_n": 0}
    history = progress["history"]
    log = ProgressLog(train.progress, epochs, steps_per_epoch, total, metric.name, progress["step"],
                      val=history[-1]["val"] if history else None, active=dist.is_main)

    def save() -> None:
        if not dist.is_main:
            return
        checkpoint.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "rng": checkpoint.rng_state(),
                         "progress": progress}, ckpt_path)
        if lock is not None:
            lock.refresh()

    def read_loss(meter: LossMeter) -> tuple[float, int]:
        loss_sum, bad = meter.read()
        if bad is not None:
            raise Diverged(f"the training loss is {loss_sum}", progress["epoch"] + 1,
                           progress["step"] - meter.n + bad, history, optim.lr)
        return loss_sum, meter.n

    stop = checkpoint.StopFlag()
    try:
        with stop.installed():
            while progress["epoch"] < epochs and progress["step"] < total:
                epoch = progress["epoch"]
                model.train()
                sampler = EpochBatches(n_train, train.batch_size, True, seed, epoch, start=progress["batch"])
                meter = LossMeter(device, progress["loss_sum"], progress["loss_n"])
                log.start_epoch(epoch, progress["batch"])
                started = time.perf_counter()
                for batch in _loader(task, "train", train, dist.shard(sampler)):
                    if progress["batch"] >= steps_per_epoch or progress["step"] >= total:
                        break
                    global_size = min(train.batch_size, n_train - progress["batch"] * train.batch_size)
                    batch = to_device(batch, device)
                    with autocast_for(device, train.precision):
                        output = net(batch["x"], lengths=batch.get("lengths"))
                    loss = task.objective.loss(output, batch) * dist.loss_scale(global_size)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if train.grad_clip > 0:
                        nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
                    optimizer.step()
                    scheduler.step()
                    if dist.enabled:  # the ranks agree at every step on the loss and on stopping
                        mean_loss, stopping = dist.reduce_step(float(loss.detach()), bool(stop))
                        meter.add(mean_loss)
                    else:
                        meter.add(loss.detach())
                        stopping = bool(stop)
                    tokens = _tokens(batch) * dist.world
                    progress["batch"] += 1
                    progress["step"] += 1
                    progress["samples"] += global_size if dist.enabled else int(batch["x"].shape[0])
                    progress["tokens"] += tokens
                    log.step(tokens)
                    if stopping or progress["batch"] in checks:
                        progress["loss_sum"], progress["loss_n"] = read_loss(meter)
                        log.check(progress["step"], progress["batch"], progress["loss_sum"] / progress["loss_n"])
                        if lock is not None:
                            lock.refresh()
                    if stopping:
                        progress["train_time"] += time.perf_counter() - started
                        save()
                        raise checkpoint.Preempted(f"stopped by signal {stop.requested} at step {progress['step']}",
                                                   stop.requested)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                progress["train_time"] += time.perf_counter() - started
                progress["loss_sum"], progress["loss_n"] = read_loss(meter)
                log.end_training()

                val = evaluate(model, task, "val", train, device)
                if not math.isfinite(val):
                    raise Diverged(f"validation {metric.name} is {val}", epoch + 1, progress["step"], history,
                                   optim.lr)
                row = {"epoch": epoch + 1, "step": progress["step"],
                       "train_loss": progress["loss_sum"] / max(1, progress["loss_n"]),
                       "val": val, "lr": optimizer.param_groups[0]["lr"]}
                history.append(row)
                best = None if progress["best"] is None else progress["best"]["val"]
                if improves(val, best, metric.higher_is_better):
                    progress["best"] = {"val": val, "epoch": epoch + 1}
                    progress["best_state"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                progress.update(epoch=epoch + 1, batch=0, loss_sum=0.0, loss_n=0)
                save()
                if dist.is_main:
                    write_history(run_dir, history)
                log.end_epoch(progress["step"], row["train_loss"], val)
                # A stop asked for during the evaluation: this epoch's checkpoint is written, so stop here.
                _, stopping = dist.reduce_step(0.0, bool(stop))
                if stopping and progress["epoch"] < epochs and progress["step"] < total:
                    raise checkpoint.Preempted(f"stopped by signal {stop.requested} after epoch {epoch + 1}",
                                               stop.requested)
    finally:
        log.close()

    best_model = copy.deepcopy(model)
    best_model.load_state_dict(progress["best_state"])
    test, test_details = score(best_model, task, "test", train, device)
    peak, kind = _peak_bytes(device)
    elapsed = max(progress["train_time"], 1e-9)
    return FitResult(metric=metric.name, higher_is_better=metric.higher_is_better,
                     val=progress["best"]["val"], test=test, test_details=test_details,
                     best_epoch=progress["best"]["epoch"],
                     history=history, steps=progress["step"], epochs=progress["epoch"],
                     train_samples_per_s=progress["samples"] / elapsed,
                     train_tokens_per_s=progress["tokens"] / elapsed, peak_bytes=peak, memory_kind=kind)


def write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """The per-epoch metrics log, rewritten whole from the checkpointed history (never out of step with it)."""
    atomic_write(run_dir / "metrics.jsonl", "".join(strict_json(row) + "\n" for row in history))
