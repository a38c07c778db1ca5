"""Ablation tables: a sweep's runs grouped by the config keys the sweep varied, the metric per group.

A table is one sweep invocation's runs of one task (records carry the invocation as `sweep_id`), so two sweeps of
one name are told apart; `pool` makes one table per sweep name instead. Runs outside any sweep under the default
name (a single `python run.py`, whose record has sweep "default" and no sweep_id) belong to no ablation: each is
reported on its own, in its leaderboard. Runs named into a sweep by hand (`sweep=NAME`, no sweep_id) are one group
per name, as are old records, which have no sweep_id.

The varied keys are found, not declared: every flat config key (seed and non-semantic keys excluded)
whose value differs between the sweep's runs of one task. When the sweep varies the model, the other
models' hyper-parameters differ only because each model has its own; a `model.*` key that has a single
value within every model is therefore left out (it says nothing the model name does not).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pandas as pd

from reports.leaderboard import display, fmt_mean_std, same_value, status_text, varied_keys
from reports.load import sweep_group
from reports.stats import summarize


@dataclass
class Ablation:
    sweep: str
    sweep_ids: list[str | None]  # the invocations it holds: one unless pooled
    task: str
    keys: list[str]
    metric: str | None
    rows: pd.DataFrame  # numeric: the varied keys, n, mean, std, ci95, val_mean, val_std, status
    table: pd.DataFrame  # display strings


def ablation_keys(runs: pd.DataFrame) -> list[str]:
    configs = list(runs.drop_duplicates("config_key")["flat_config"])
    keys = varied_keys(configs)
    if "model.name" in keys:
        first = {}  # model -> its first configuration
        for c in configs:
            first.setdefault(str(c.get("model.name")), c)

        def single_within_models(key: str) -> bool:
            return all(same_value(c.get(key), first[str(c.get("model.name"))].get(key)) for c in configs)

        keys = [k for k in keys if k == "model.name" or not (k.startswith("model.") and single_within_models(k))]
    return keys


def ablation(sweep: str, task: str, runs: pd.DataFrame) -> Ablation | None:
    """The ablation table of one sweep and task, or None when only the seed varies."""
    keys = ablation_keys(runs)
    if not keys:
        return None
    done = runs[runs["status"] == "complete"]
    metric = done["metric"].mode().iloc[0] if done["metric"].notna().any() else None
    disp = display(metric)
    groups: dict[tuple[str, ...], list[dict]] = {}
    for run in runs[["flat_config", "status", "test", "val"]].to_dict("records"):
        value = tuple(json.dumps(run["flat_config"].get(k), default=str) for k in keys)
        groups.setdefault(value, []).append(run)
    rows, table = [], []
    for value, group in groups.items():
        ok = [r for r in group if r["status"] == "complete"]
        test, val = summarize([r["test"] * disp.scale for r in ok]), summarize([r["val"] * disp.scale for r in ok])
        setting = {k: json.loads(v) for k, v in zip(keys, value, strict=True)}
        status = status_text([r["status"] for r in group], [])
        rows.append({**setting, "n": test.n, "mean": test.mean, "std": test.std, "ci95": test.ci95,
                     "val_mean": val.mean, "val_std": val.std, "status": status})
        table.append({**{k: "—" if v is None else str(v) for k, v in setting.items()}, "n": str(test.n),
                      f"test {disp.name}": fmt_mean_std(test.mean, test.std, test.n, disp.digits),
                      "95% CI ±": "—" if not math.isfinite(test.ci95) else f"{test.ci95:.{disp.digits}f}",
                      f"val {disp.name}": fmt_mean_std(val.mean, val.std, val.n, disp.digits), "status": status})
    # Numbers in numeric order (64 before 128), missing values last.
    order = sorted(range(len(rows)), key=lambda i: tuple(_sort_key(rows[i][k]) for k in keys))
    ids = sorted({None if pd.isna(i) else str(i) for i in runs["sweep_id"]}, key=lambda i: (i is None, i or ""))
    return Ablation(sweep, ids, task, keys, metric, pd.DataFrame([rows[i] for i in order]).reset_index(drop=True),
                    pd.DataFrame([table[i] for i in order]).reset_index(drop=True))


def _sort_key(value: object) -> tuple[int, float, str]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return (1 if value is not None else 2, 0.0, str(value))
    return (0, float(value), "")


def ablations(runs: pd.DataFrame, pool: bool = False) -> list[Ablation]:
    """One table per (sweep invocation, task), or per (sweep name, task) with `pool`, whose runs vary more than the
    seed (module docstring)."""
    groups = pd.Series([sweep_group(s, i) for s, i in zip(runs["sweep"], runs["sweep_id"], strict=True)],
                       index=runs.index, dtype=object)
    runs, groups = runs[groups.notna()], groups[groups.notna()]
    keys = ["sweep", "task"] if pool else ["sweep", groups, "task"]
    result = []
    for _, group in runs.groupby(keys, sort=True, dropna=False):
        table = ablation(str(group["sweep"].iloc[0]), str(group["task"].iloc[0]), group)
        if table is not None:
            result.append(table)
    return result
