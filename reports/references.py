"""Published numbers (`references.yaml`) and how they attach to a leaderboard.

A reference applies to a leaderboard of task T when its `task` is T and each of its `variant` keys is
either equal in the leaderboard's task config or absent from it (then we cannot tell, so it is shown;
its label says which setting it is, e.g. grayscale vs RGB CIFAR).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError

DEFAULT_PATH = Path(__file__).with_name("references.yaml")
REQUIRED = ("task", "label", "metric", "split", "value", "source", "verified")


@dataclass(frozen=True)
class Reference:
    task: str
    model: str | None
    label: str
    metric: str
    split: str  # test | val
    value: float  # in the paper's unit (see `display` in leaderboard.py)
    params: str | None
    source: dict[str, str]
    verified: bool
    primary: bool = True
    variant: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def cite(self) -> str:
        return f"{self.source.get('paper', '?')}, {self.source.get('table', '?')} ({self.source.get('where', '?')})"


def load_references(path: str | Path | None = None) -> list[Reference]:
    """Every entry of the YAML file, checked for the fields the tables need."""
    path = Path(path) if path is not None else DEFAULT_PATH
    if not path.exists():
        raise ConfigError(f"reference file {path} does not exist; pass an existing YAML file or none for the default")
    entries = yaml.safe_load(path.read_text()) or []
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: expected a list of references, got {type(entries).__name__}")
    refs = []
    for i, entry in enumerate(entries):
        missing = [k for k in REQUIRED if k not in entry]
        if missing:
            raise ConfigError(f"{path}: entry {i} ({entry.get('label', '?')}) lacks {missing}; add them")
        refs.append(Reference(
            task=entry["task"], model=entry.get("model"), label=entry["label"], metric=entry["metric"],
            split=entry["split"], value=float(entry["value"]),
            params=None if entry.get("params") is None else str(entry["params"]),
            source=dict(entry["source"]), verified=bool(entry["verified"]), primary=bool(entry.get("primary", True)),
            variant=dict(entry.get("variant") or {}), note=str(entry.get("note", "")),
        ))
    labels = [(r.task, r.label) for r in refs]
    repeated = sorted({f"{t}: {lab}" for t, lab in labels if labels.count((t, lab)) > 1})
    if repeated:
        raise ConfigError(f"{path}: labels must be unique within a task, repeated: {repeated}")
    return refs


def match_score(ref: Reference, task: str, task_config: dict[str, Any]) -> int | None:
    """None when `ref` does not apply; else how many of its variant keys the config confirms."""
    if ref.task != task:
        return None
    score = 0
    for key, value in ref.variant.items():
        name = f"task.{key}"
        if name in task_config:
            if task_config[name] != value:
                return None
            score += 1
    return score


def applicable(refs: list[Reference], task: str, task_config: dict[str, Any]) -> list[Reference]:
    return [r for r in refs if match_score(r, task, task_config) is not None]


def primary_for(refs: list[Reference], model: str, split: str, task: str,
                task_config: dict[str, Any]) -> Reference | None:
    """The number a model's runs are compared with: primary, same split, best confirmed variant, first in file."""
    best, best_score = None, -1
    for ref in refs:
        score = match_score(ref, task, task_config)
        if score is None or ref.model != model or ref.split != split or not ref.primary:
            continue
        if score > best_score:
            best, best_score = ref, score
    return best
