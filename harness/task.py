"""The task contract: what every task gives the harness and the models.

A task is one module in `tasks/`: a config dataclass (a `harness.config.TaskConfig`),
`task_spec(cfg) -> TaskSpec` computed from that config alone (so that sweeps are checked and models built without
the data), and `build(cfg, data_root) -> Task`, registered with `@TASKS.register(name, Config)`, whose spec is
`task_spec(cfg)` once the data was checked to agree with it. The `Task` holds the `TaskSpec` (all a model needs to
know to adapt to it), the train/val/test datasets, how to batch them, the `Objective` (the loss to train with
and the metric to select and report with) and `info`, the provenance for the record, whose "fingerprint"
identifies the data read.

A batch is a dict: ``x`` (LongTensor [B, L] of token ids, or FloatTensor [B, L, d_input]),
``y`` (targets), and optionally ``lengths`` (LongTensor [B], true lengths before right padding).
A model is called as ``model(x, lengths=lengths)`` and returns [B, n_outputs] for pooled tasks or
[B, L, n_outputs] for sequence tasks (autoregressive density).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class TaskSpec:
    """Everything a model needs to know about a task, so that models hold no per-task code."""

    name: str
    input: Literal["tokens", "signal"]
    seq_len: int  # maximum length the model sees
    n_outputs: int  # classes, labels, or output channels per position
    metric: str  # accuracy | auroc | bpd
    vocab_size: int | None = None  # tokens only
    d_input: int | None = None  # signal only: channels per step
    output: Literal["pooled", "sequence"] = "pooled"
    causal: bool = False  # the model must not look ahead (autoregressive tasks)
    pad_id: int = 0  # tokens only
    variable_length: bool = False  # batches carry `lengths`
    padded_to_seq_len: bool = False  # every batch padded to seq_len, so all have one shape (e.g. task.pad_to_max)

    @property
    def one_batch_shape(self) -> bool:
        """Do all batches have one shape (fixed-length inputs, or every batch padded to seq_len)?"""
        return not self.variable_length or self.padded_to_seq_len


@dataclass
class Task:
    """Datasets for train/val/test and how to batch, train and score them."""

    spec: TaskSpec
    splits: dict[str, Dataset]
    collate: Callable[[list[Any]], Batch] | None = None  # None: the DataLoader's default
    objective: Objective | None = None  # None: the standard one of spec.metric (OBJECTIVES)
    info: dict[str, Any] = field(default_factory=dict)  # provenance for the record (source, sizes)

    def __post_init__(self) -> None:
        if self.objective is None:
            self.objective = OBJECTIVES[self.spec.metric]
        missing = {"train", "val", "test"} - set(self.splits)
        if missing:
            raise ValueError(f"task {self.spec.name}: missing splits {sorted(missing)}")


class LengthNotSupported(Exception):
    """Raised by a model's `extend_length(L)` when it cannot run inputs of length L (e.g. learned positions end at
    the length it was trained at); the message says why, in a few words."""


def extend_length(model: torch.nn.Module, length: int) -> None:
    """Ready a trained model for inputs of up to `length` positions, each layer in its natural way: every submodule
    with an `extend_length(L)` method is asked (a kernel computed to L, a position table extended). Raises
    LengthNotSupported from a layer that cannot."""
    for module in model.modules():
        if module is not model and callable(getattr(module, "extend_length", None)):
            module.extend_length(length)


class Metric(ABC):
    """Accumulates over the batches of a split; `compute` returns one number, `details` what else the record keeps."""

    name: str = ""
    higher_is_better: bool = True

    @abstractmethod
    def update(self, output: torch.Tensor, batch: Batch) -> None: ...

    @abstractmethod
    def compute(self) -> float: ...

    def details(self) -> dict[str, Any]:
        """JSON-ready extra output for the record, about the split accumulated so far (none by default)."""
        return {}


class Accuracy(Metric):
    name = "accuracy"

    def __init__(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, output: torch.Tensor, batch: Batch) -> None:
        self.correct += int((output.argmax(-1) == batch["y"]).sum())
        self.total += int(batch["y"].numel())

    def compute(self) -> float:
        return self.correct / max(self.total, 1)


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve for one binary label (Mann-Whitney U with average ranks for ties)."""
    scores = scores.double()
    n_pos = int(labels.sum())
    n_neg = labels.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, scores.numel() + 1, dtype=torch.float64)
    # Tied scores share the mean of their ranks.
    uniq, inverse, counts = torch.unique(sorted_scores, return_inverse=True, return_counts=True)
    if len(uniq) < scores.numel():
        sums = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, ranks[order])
        ranks[order] = (sums / counts)[inverse]
    rank_sum = ranks[labels.bool()].sum().item()
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


class MacroAUROC(Metric):
    """Mean over labels of each label's AUROC; labels with one class only in the split have none and are skipped.

    `details()` keeps every label's AUROC and names the skipped ones, by `labels` (the task's class names) or by
    index.
    """

    name = "auroc"

    def __init__(self, labels: Sequence[str] | None = None) -> None:
        self.labels = list(labels) if labels is not None else None
        self.outputs: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def update(self, output: torch.Tensor, batch: Batch) -> None:
        self.outputs.append(output.detach().float().cpu())
        self.targets.append(batch["y"].detach().cpu())

    def per_label(self) -> dict[str, float]:
        """Each label's AUROC (NaN where the split holds one class only), by label name."""
        scores, labels = torch.cat(self.outputs), torch.cat(self.targets)
        names = self.labels if self.labels is not None else [str(j) for j in range(labels.shape[1])]
        if len(names) != labels.shape[1]:
            raise ValueError(f"MacroAUROC has {len(names)} label names for {labels.shape[1]} labels")
        return {name: roc_auc(scores[:, j], labels[:, j]) for j, name in enumerate(names)}

    def compute(self) -> float:
        valid = [a for a in self.per_label().values() if not math.isnan(a)]
        return sum(valid) / len(valid) if valid else float("nan")

    def details(self) -> dict[str, Any]:
        per_label = self.per_label()
        return {"per_label": {k: None if math.isnan(v) else v for k, v in per_label.items()},
                "skipped": [k for k, v in per_label.items() if math.isnan(v)]}


@dataclass
class Objective:
    """A loss to train with and the metric to select and report with."""

    loss: Callable[[torch.Tensor, Batch], torch.Tensor]
    metric: Callable[[], Metric]


def cross_entropy(output: torch.Tensor, batch: Batch) -> torch.Tensor:
    return F.cross_entropy(output.float(), batch["y"])


def multilabel_bce(output: torch.Tensor, batch: Batch) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(output.float(), batch["y"].float())


OBJECTIVES: dict[str, Objective] = {
    "accuracy": Objective(cross_entropy, Accuracy),
    "auroc": Objective(multilabel_bce, MacroAUROC),
}
