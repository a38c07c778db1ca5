"""A tiny registered task for tests of the mechanism (never discovered by the `tasks` package)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from harness.config import TaskConfig
from harness.registry import TASKS
from harness.task import Batch, Task, TaskSpec


@dataclass
class ToyConfig(TaskConfig):
    name: str = "toy"
    n: int = 160
    length: int = 12
    vocab: int = 8


def collate(items: list[tuple[torch.Tensor, ...]]) -> Batch:
    x, y, lengths = (torch.stack(t) for t in zip(*items))
    return {"x": x, "y": y, "lengths": lengths}


@TASKS.register("toy", ToyConfig)
def build(cfg: ToyConfig, data_root: Path) -> Task:
    """Is the first token of the sequence above half the vocabulary? (variable lengths)"""
    g = torch.Generator().manual_seed(1234)
    x = torch.randint(1, cfg.vocab, (cfg.n, cfg.length), generator=g)
    lengths = torch.randint(cfg.length // 2, cfg.length + 1, (cfg.n,), generator=g)
    x[torch.arange(cfg.length)[None, :] >= lengths[:, None]] = 0
    y = (x[:, 0] > cfg.vocab // 2).long()
    cut1, cut2 = cfg.n * 6 // 10, cfg.n * 8 // 10
    splits = {name: TensorDataset(x[a:b], y[a:b], lengths[a:b])
              for name, (a, b) in {"train": (0, cut1), "val": (cut1, cut2), "test": (cut2, cfg.n)}.items()}
    spec = TaskSpec("toy", "tokens", cfg.length, 2, "accuracy", vocab_size=cfg.vocab, variable_length=True)
    return Task(spec, splits, collate=collate, info={"source": "synthetic"})
