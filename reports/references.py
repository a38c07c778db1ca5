"""Published numbers (`references.yaml`) and which run each one belongs to.

An entry is a run's published number only when the run has every setting the entry's `match` names (task and
model config keys; a list allows any of its values). A key the run's config lacks, or another value, means the
entry does not apply: a run never borrows the number of a neighbouring setting (S4D-LegS for an S4D-Lin run,
grayscale for RGB), and a run with no matching entry has no published number. The keys are checked against the
registered config dataclasses when the file is read, so a misspelt key is an error, not a silent non-match.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError
from harness.registry import MODELS, TASKS

DEFAULT_PATH = Path(__file__).with_name("references.yaml")
EXPERIMENTS = Path(__file__).resolve().parent.parent / "sweeps" / "experiment"
REQUIRED = ("task", "label", "metric", "split", "value", "source", "verified")


@dataclass(frozen=True)
class Preset:
    """A paper preset: `sweeps/experiment/<experiment>.yaml` plus the overrides the paper's setting changes."""

    experiment: str
    overrides: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.experiment + (f" with {' '.join(self.overrides)}" if self.overrides else "")


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
    match_task: dict[str, Any] = field(default_factory=dict)
    match_model: dict[str, Any] = field(default_factory=dict)
    preset: Preset | None = None
    note: str = ""
    url: str = ""

    def cite(self) -> str:
        where = self.source.get("where", "?") + (f"; {self.url}" if self.url else "")
        return f"{self.source.get('paper', '?')}, {self.source.get('table', '?')} ({where})"

    def fits_task(self, task: str, config: dict[str, Any]) -> bool:
        """Does this number belong to runs of `task` with this flat config (`task.<key>` entries)?"""
        return self.task == task and _satisfies(self.match_task, config, "task")

    def fits(self, task: str, model: str, config: dict[str, Any]) -> bool:
        """Does this number belong to runs of `model` on `task` with this flat config (task and model keys)?"""
        return self.model == model and self.fits_task(task, config) and _satisfies(self.match_model, config, "model")


@dataclass(frozen=True)
class Catalog:
    """The file's references and the split sizes the published numbers were measured on (task -> split -> n)."""

    refs: list[Reference]
    datasets: dict[str, dict[str, int]] = field(default_factory=dict)


def _same(a: Any, b: Any) -> bool:
    """Equality that does not take True for 1 (YAML and JSON keep them apart, Python does not)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def _satisfies(wanted: dict[str, Any], config: dict[str, Any], prefix: str) -> bool:
    for key, value in wanted.items():
        name = f"{prefix}.{key}"
        allowed = value if isinstance(value, list) else [value]
        if name not in config or not any(_same(config[name], v) for v in allowed):
            return False
    return True


def _preset(entry: dict[str, Any], where: str) -> Preset | None:
    spec = entry.get("preset")
    if spec is None:
        return None
    preset = Preset(spec) if isinstance(spec, str) else Preset(spec["experiment"], tuple(spec.get("overrides") or ()))
    if not (EXPERIMENTS / f"{preset.experiment}.yaml").exists():
        raise ConfigError(f"{where}: preset {preset.experiment!r} is not a file in {EXPERIMENTS}; name an existing one")
    return preset


def _check_keys(ref: Reference, where: str) -> None:
    """Every matcher key is a field of the registered config (tasks and models the harness does not have are
    exempt: their numbers attach to no run)."""
    for registry, name, wanted in ((TASKS, ref.task, ref.match_task), (MODELS, ref.model, ref.match_model)):
        if name is None or name not in registry.names():
            continue
        fields = {f.name for f in dataclasses.fields(registry.get(name).config_cls)}
        unknown = sorted(set(wanted) - fields)
        if unknown:
            raise ConfigError(f"{where}: match.{registry.kind} names {unknown}, not options of {registry.kind} "
                              f"{name!r}; options: {sorted(fields)}")


def load_references(path: str | Path | None = None) -> Catalog:
    """Every entry of the YAML file, checked for the fields the tables need."""
    path = Path(path) if path is not None else DEFAULT_PATH
    if not path.exists():
        raise ConfigError(f"reference file {path} does not exist; pass an existing YAML file or none for the default")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not isinstance(data.get("references", []), list):
        raise ConfigError(f"{path}: expected a mapping with a list under `references` (and `datasets`)")
    refs = []
    for i, entry in enumerate(data.get("references") or []):
        where = f"{path}: entry {i} ({entry.get('label', '?')})"
        missing = [k for k in REQUIRED if k not in entry]
        if missing:
            raise ConfigError(f"{where} lacks {missing}; add them")
        match = entry.get("match") or {}
        unknown = sorted(set(match) - {"task", "model"})
        if unknown:
            raise ConfigError(f"{where}: match takes task and model settings, not {unknown}")
        ref = Reference(
            task=entry["task"], model=entry.get("model"), label=entry["label"], metric=entry["metric"],
            split=entry["split"], value=float(entry["value"]),
            params=None if entry.get("params") is None else str(entry["params"]),
            source=dict(entry["source"]), verified=bool(entry["verified"]), primary=bool(entry.get("primary", True)),
            match_task=dict(match.get("task") or {}), match_model=dict(match.get("model") or {}),
            preset=_preset(entry, where), note=str(entry.get("note", "")), url=str(entry.get("url", "")),
        )
        _check_keys(ref, where)
        refs.append(ref)
    labels = [(r.task, r.label) for r in refs]
    repeated = sorted({f"{t}: {lab}" for t, lab in labels if labels.count((t, lab)) > 1})
    if repeated:
        raise ConfigError(f"{path}: labels must be unique within a task, repeated: {repeated}")
    datasets = {str(t): {str(s): int(n) for s, n in sizes.items()} for t, sizes in (data.get("datasets") or {}).items()}
    return Catalog(refs, datasets)


def for_board(refs: list[Reference], task: str, config: dict[str, Any]) -> list[Reference]:
    """The published numbers measured on this task setting (any model): the published rows of its leaderboard."""
    return [r for r in refs if r.fits_task(task, config)]


def published_for(refs: list[Reference], task: str, model: str, config: dict[str, Any],
                  split: str = "test") -> Reference | None:
    """The number a configuration's runs are compared with, or None when no entry has its settings: among the
    entries that fit, a primary one first, then the one naming the most settings, then the first in the file."""
    fitting = [r for r in refs if r.split == split and r.fits(task, model, config)]
    if not fitting:
        return None
    return min(fitting, key=lambda r: (not r.primary, -(len(r.match_task) + len(r.match_model)), refs.index(r)))
