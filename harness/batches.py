"""Batches: the order of every epoch as a function of (seed, epoch), the loader, and moving a batch to the device.

The order being a function of (seed, epoch) alone, with the position inside the epoch checkpointed, is what makes
a resumed run see exactly the batches an uninterrupted one sees.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from harness.checkpoint import STOP_SIGNALS
from harness.config import TrainConfig
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


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def loader(task: Task, split: str, cfg: TrainConfig, sampler: EpochBatches, device: torch.device) -> DataLoader:
    # A loader of its own generator: creating an iterator would otherwise draw from the global RNG
    # (for worker seeds) and shift the dropout masks of a resumed run.
    generator = torch.Generator().manual_seed(sampler.seed * 100_003 + sampler.epoch)
    # Pinned batches for a GPU: a copy from pageable memory waits for every kernel already queued, so the host
    # could not queue the next step while the GPU still runs this one.
    return DataLoader(task.splits[split], batch_sampler=sampler, collate_fn=task.collate,
                      num_workers=cfg.num_workers, generator=generator, worker_init_fn=_ignore_stop_signals,
                      pin_memory=device.type == "cuda")


def _ignore_stop_signals(worker_id: int) -> None:
    """In a loader's worker process. Ctrl-C (and a scheduler's signal) reaches every process of the group; the
    training process alone answers it, by checkpointing, while a worker ended by it would fail the run."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def batch_tokens(batch: Batch) -> int:
    x = batch["x"]
    return int(x.shape[0] * x.shape[1])
