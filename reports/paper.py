"""Is a configuration at the settings of the paper it is compared with, or reduced?

The paper's settings are its preset in `sweeps/experiment/` (with the overrides its reference names), composed
with Hydra exactly as `python run.py +experiment=<name>` would. A configuration is at paper settings when every
key of its config that decides the result equals the preset's, and its records' data sizes equal the sizes the
published numbers were measured on (`datasets` in references.yaml): a run on a 40-row copy of ListOps is
reduced whatever its config says. Keys that do not decide the result: the seed (a leaderboard row is a mean over
seeds), where data is read from, and the evaluation batch size. A data size its records do not state is not a
difference but an unknown: such a configuration is "unconfirmed", never "paper", and gets no Δ.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from reports.load import SEED_KEYS, TASK_LOCATION_KEYS, flatten
from reports.references import EXPERIMENTS, Preset

IGNORED = {*SEED_KEYS, "train.eval_batch_size", *(f"task.{k}" for k in TASK_LOCATION_KEYS if k != "name")}
# Listed first when a configuration differs in many keys: the settings that decide a result most.
PRIORITY = ["data", "task.n_train", "task.n_val", "task.n_test", "task.limit", "task.max_length", "task.min_length",
            "task.l_max", "model.d_model", "model.n_layers", "model.d_state", "train.epochs", "train.max_steps",
            "train.batch_size", "optim.optimizer", "optim.lr", "optim.weight_decay"]


@dataclass(frozen=True)
class Difference:
    key: str
    ours: Any
    paper: Any

    def __str__(self) -> str:
        return f"{self.key} {show_setting(self.ours)} (paper {show_setting(self.paper)})"


@dataclass(frozen=True)
class SettingCheck:
    """A configuration against one preset (None: no preset to compare with)."""

    preset: Preset | None
    differences: tuple[Difference, ...] = ()
    unknown: tuple[str, ...] = ()  # what the records do not state (a data size), so cannot be compared

    @property
    def at_paper(self) -> bool:
        return self.preset is not None and not self.differences and not self.unknown

    @property
    def label(self) -> str:
        if self.preset is None:
            return "no paper preset"
        return "reduced" if self.differences else ("unconfirmed" if self.unknown else "paper")

    def describe(self, most: int = 4) -> str:
        """'paper (s4d_listops)', or the first differences: 'reduced against s4d_listops: train.epochs 2 (paper 40)',
        and what the records do not state."""
        if self.preset is None:
            return "no paper preset for this task and model"
        if self.at_paper:
            return f"paper ({self.preset})"
        unknown = f"not recorded, so not compared: {', '.join(self.unknown)}" if self.unknown else ""
        if not self.differences:
            return f"unconfirmed against {self.preset}: its config is the paper's, but {unknown}"
        shown = "; ".join(str(d) for d in self.differences[:most])
        more = len(self.differences) - most
        return (f"reduced against {self.preset}: {shown}" + (f"; and {more} more" if more > 0 else "")
                + (f" ({unknown})" if unknown else ""))


_ABSENT = object()


def show_setting(value: Any) -> str:
    """As the config would be written: null, true, a string without quotes; 'absent' for a missing key."""
    if value is _ABSENT:
        return "absent"
    return json.dumps(value) if value is None or isinstance(value, bool) else str(value)


@functools.cache
def presets_by_pair() -> dict[tuple[str, str], tuple[Preset, ...]]:
    """(task, model) -> the presets that train that model on that task, read from the files' defaults lists."""
    found: dict[tuple[str, str], list[Preset]] = {}
    for path in sorted(EXPERIMENTS.glob("*.yaml")):
        defaults = (yaml.safe_load(path.read_text()) or {}).get("defaults") or []
        chosen = {k.removeprefix("override /"): v for d in defaults if isinstance(d, dict) for k, v in d.items()}
        if "task" in chosen and "model" in chosen:
            found.setdefault((chosen["task"], chosen["model"]), []).append(Preset(path.stem))
    return {k: tuple(v) for k, v in found.items()}


@functools.cache
def preset_config(preset: Preset) -> dict[str, Any]:
    """The preset's config as the flat, semantic config of a run record (seed and non-semantic keys dropped)."""
    from harness.identity import semantic_config  # Hydra composition needs the registries: only when asked

    return {k: v for k, v in flatten(semantic_config(_compose(preset))).items() if k not in SEED_KEYS}


def _compose(preset: Preset) -> dict[str, Any]:
    """`+experiment=<name> <overrides>` composed from sweeps/ as run.py composes it, also from inside a running
    Hydra app (the quickstart builds its report there): its global state is set aside and put back."""
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from harness.registry import compose_config

    outer = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()
    try:
        cfg = compose_config([f"+experiment={preset.experiment}", *preset.overrides])
    finally:
        GlobalHydra.instance().clear()
        if outer is not None:
            GlobalHydra.instance().initialize(outer)
    tree = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(tree, dict)
    tree.pop("hydra", None)
    return tree


def _order(key: str) -> tuple[int, str]:
    return (PRIORITY.index(key) if key in PRIORITY else len(PRIORITY), key)


def compare(config: dict[str, Any], sizes: Iterable[dict[str, int] | None], preset: Preset,
            paper_sizes: dict[str, int]) -> SettingCheck:
    """`config` (a flat semantic config without the seed) and the data sizes of its records against `preset`."""
    paper = preset_config(preset)
    keys = (set(config) | set(paper)) - IGNORED
    diffs = [Difference(k, config.get(k, _ABSENT), paper.get(k, _ABSENT)) for k in keys
             if not same_setting(config.get(k, _ABSENT), paper.get(k, _ABSENT))]
    unknown = []
    sizes = list(sizes)
    for split, n in paper_sizes.items():
        seen = {(s or {}).get(split) for s in sizes}
        recorded = sorted(v for v in seen if v is not None)
        if recorded and recorded != [n]:
            diffs.append(Difference(f"data {split} size", ", ".join(map(str, recorded)), n))
        if None in seen:
            unknown.append(f"data {split} size")
    diffs.sort(key=lambda d: _order("data" if d.key.startswith("data ") else d.key))
    return SettingCheck(preset, tuple(diffs), tuple(unknown))


def same_setting(a: Any, b: Any) -> bool:
    """Equal as the config would be written (1 and 1.0, 1 and true differ); `_ABSENT` equals only itself."""
    if a is b:
        return True
    if type(a) is type(b) and a == b:
        return True
    return a is not _ABSENT and b is not _ABSENT and json.dumps(a, default=str) == json.dumps(b, default=str)


def check(task: str, model: str, config: dict[str, Any], sizes: list[dict[str, int] | None],
          preset: Preset | None, paper_sizes: dict[str, int]) -> SettingCheck:
    """Against `preset` (the one the configuration's published number cites) when given; otherwise against the
    closest preset of the same task and model, if any."""
    candidates = [preset] if preset is not None else list(presets_by_pair().get((task, model), ()))
    checks = [compare(config, sizes, p, paper_sizes) for p in candidates]
    return min(checks, key=lambda c: (len(c.differences), len(c.unknown))) if checks else SettingCheck(None)
