"""The training loop: fit a model to a task, evaluating each epoch and testing the best state.

Resuming is exact: the data order of every epoch is a function of (seed, epoch), and the
checkpoint holds the RNG states and the position inside the epoch, so an interrupted run that is
restarted computes the same numbers as one that never stopped.
"""

from __future__ import annotations

import copy
import json
import math
import resource
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from harness import checkpoint
from harness.config import OptimConfig, TrainConfig
from harness.distributed import Dist
from harness.errors import ConfigError
from harness.files import atomic_write
from harness.optim import lr_factor, make_optimizer
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
                      num_workers=cfg.num_workers, generator=generator)


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, split: str, cfg: TrainConfig, device: torch.device) -> float:
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
    return metric.compute()


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


def fit(model: nn.Module, task: Task, train: TrainConfig, optim: OptimConfig, seed: int, run_dir: Path,
        device: torch.device, dist: Dist | None = None) -> FitResult:
    """Train, evaluate each epoch, keep the best-validation state, test it. Resumes from run_dir/last.pt.

    With `dist` (several processes, harness.distributed) each rank trains on its share of every batch and only
    rank 0 writes files.
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
    better = (lambda a, b: a >= b) if metric.higher_is_better else (lambda a, b: a <= b)

    ckpt_path = run_dir / "last.pt"
    state = checkpoint.load(ckpt_path)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        checkpoint.set_rng_state(state["rng"])
        progress = state["progress"]
    else:
        checkpoint.seed_everything(seed)
        progress = {"epoch": 0, "batch": 0, "step": 0, "history": [], "best": None, "best_state": None,
                    "train_time": 0.0, "samples": 0, "tokens": 0, "loss_sum": 0.0, "loss_n": 0}

    def save() -> None:
        if not dist.is_main:
            return
        checkpoint.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "rng": checkpoint.rng_state(),
                         "progress": progress}, ckpt_path)

    stop = checkpoint.StopFlag()
    with stop.installed():
        while progress["epoch"] < epochs and progress["step"] < total:
            epoch = progress["epoch"]
            model.train()
            sampler = EpochBatches(n_train, train.batch_size, True, seed, epoch, start=progress["batch"])
            bar = tqdm(total=steps_per_epoch, initial=progress["batch"], desc=f"epoch {epoch + 1}/{epochs}",
                       disable=not train.progress, leave=False)
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
                mean_loss, stopping = dist.reduce_step(float(loss.detach()), bool(stop))
                progress["batch"] += 1
                progress["step"] += 1
                progress["samples"] += global_size if dist.enabled else int(batch["x"].shape[0])
                progress["tokens"] += _tokens(batch) * dist.world
                progress["loss_sum"] += mean_loss
                progress["loss_n"] += 1
                bar.update(1)
                bar.set_postfix(loss=f"{progress['loss_sum'] / progress['loss_n']:.4f}")
                if stopping:
                    progress["train_time"] += time.perf_counter() - started
                    bar.close()
                    save()
                    raise checkpoint.Preempted(f"stopped by signal {stop.requested} at step {progress['step']}",
                                               stop.requested)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            progress["train_time"] += time.perf_counter() - started
            bar.close()

            val = evaluate(model, task, "val", train, device)
            row = {"epoch": epoch + 1, "step": progress["step"],
                   "train_loss": progress["loss_sum"] / max(1, progress["loss_n"]),
                   "val": val, "lr": optimizer.param_groups[0]["lr"]}
            progress["history"].append(row)
            if progress["best"] is None or (not math.isnan(val) and better(val, progress["best"]["val"])):
                progress["best"] = {"val": val, "epoch": epoch + 1}
                progress["best_state"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            progress.update(epoch=epoch + 1, batch=0, loss_sum=0.0, loss_n=0)
            save()
            if dist.is_main:
                write_history(run_dir, progress["history"])

    best_model = copy.deepcopy(model)
    best_model.load_state_dict(progress["best_state"])
    test = evaluate(best_model, task, "test", train, device)
    peak, kind = _peak_bytes(device)
    elapsed = max(progress["train_time"], 1e-9)
    return FitResult(metric=metric.name, higher_is_better=metric.higher_is_better,
                     val=progress["best"]["val"], test=test, best_epoch=progress["best"]["epoch"],
                     history=progress["history"], steps=progress["step"], epochs=progress["epoch"],
                     train_samples_per_s=progress["samples"] / elapsed,
                     train_tokens_per_s=progress["tokens"] / elapsed, peak_bytes=peak, memory_kind=kind)


def write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """The per-epoch metrics log, rewritten whole from the checkpointed history (never out of step with it)."""
    atomic_write(run_dir / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in history))
