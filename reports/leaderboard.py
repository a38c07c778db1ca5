"""Leaderboards: one per task (and task setting), a row per model configuration, published numbers beside.

Numbers are shown in the papers' units (accuracy in percent) so our rows and the published rows read
alike; `Board.rows` keeps them as floats for tests and further use, `Board.table` holds the strings.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import pandas as pd

from reports.references import Reference, applicable, primary_for
from reports.stats import paired, summarize


@dataclass(frozen=True)
class Display:
    scale: float  # store value * scale = shown value
    name: str
    digits: int


DISPLAYS = {
    "accuracy": Display(100.0, "acc (%)", 2),
    "auroc": Display(1.0, "AUROC", 4),
    "bpd": Display(1.0, "bits/dim", 3),
}


def display(metric: str | None) -> Display:
    return DISPLAYS.get(metric or "", Display(1.0, metric or "metric", 4))


@dataclass
class Board:
    task: str
    title: str  # task plus the task settings that distinguish this board from the task's others
    task_config: dict[str, Any]
    metric: str | None
    higher_is_better: bool
    rows: pd.DataFrame  # numeric, one row per model configuration, sorted best first
    table: pd.DataFrame  # the same as display strings, plus the published rows
    comparisons: pd.DataFrame  # paired t-tests between rows over shared seeds
    references: list[Reference] = field(default_factory=list)
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)  # the board's records, any status


def varied_keys(configs: list[dict[str, Any]]) -> list[str]:
    """Flat config keys whose value (absence counts as a value) is not the same in every config."""
    keys = sorted(set().union(*configs)) if configs else []
    return [k for k in keys if len({json.dumps(c.get(k, "<absent>"), default=str) for c in configs}) > 1]


def describe(config: dict[str, Any], keys: list[str]) -> str:
    return ", ".join(f"{k}={config.get(k, '—')}" for k in keys)


def fmt(value: float, digits: int) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def fmt_mean_std(mean: float, std: float, n: int, digits: int) -> str:
    if n == 0:
        return "—"
    if n == 1:
        return fmt(mean, digits)
    return f"{fmt(mean, digits)} ± {fmt(std, digits)}"


def fmt_count(value: float) -> str:
    """1365514 -> 1.37M, 361994 -> 362K; throughput alike."""
    if value is None or not math.isfinite(value):
        return "—"
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def fmt_bytes(value: float) -> str:
    """Binary units, as memory is allocated: 10485760 -> 10.0 MiB."""
    if value is None or not math.isfinite(value):
        return "—"
    for size, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(value) >= size:
            return f"{value / size:.1f} {suffix}"
    return f"{value:.0f} B"


def status_text(statuses: list[str], missing_seeds: list[Any]) -> str:
    """'3 complete', or '2 complete, failed (1), oom (1), no record for seed 2'."""
    counts = pd.Series(statuses, dtype=object).value_counts()
    parts = [f"{counts.get('complete', 0)} complete"]
    parts += [f"{s} ({counts[s]})" for s in ("failed", "oom", "preempted") if counts.get(s, 0)]
    if missing_seeds:
        parts.append("no record for seed " + ", ".join(str(s) for s in missing_seeds))
    return ", ".join(parts)


def _row(label: str, model: str, runs: pd.DataFrame, scale: float, all_seeds: list[Any]) -> dict[str, Any]:
    done = runs[runs["status"] == "complete"]
    test = summarize(done["test"] * scale)
    val = summarize(done["val"] * scale)
    seeds = sorted(set(runs["seed"].dropna()))
    return {
        "label": label, "model": model, "config_key": runs["config_key"].iloc[0],
        "n": test.n, "mean": test.mean, "std": test.std, "ci95": test.ci95,
        "val_n": val.n, "val_mean": val.mean, "val_std": val.std,
        "params": runs["params"].dropna().median() if runs["params"].notna().any() else math.nan,
        "train_tokens_per_s": done["train_tokens_per_s"].mean(),
        "train_samples_per_s": done["train_samples_per_s"].mean(),
        "n_runs": len(runs), "status": status_text(list(runs["status"]), [s for s in all_seeds if s not in seeds]),
        "test_by_seed": {s: v * scale for s, v in zip(done["seed"], done["test"], strict=True)},
    }


def board(task: str, title: str, runs: pd.DataFrame, refs: list[Reference]) -> Board:
    """The leaderboard of one task setting from its training runs (any status)."""
    done = runs[runs["status"] == "complete"]
    metric = done["metric"].mode().iloc[0] if done["metric"].notna().any() else None
    hib_values = done["higher_is_better"].dropna()
    higher = bool(hib_values.mode().iloc[0]) if len(hib_values) else metric != "bpd"
    disp = display(metric)
    task_config = {k: v for k, v in runs["flat_config"].iloc[0].items() if k.startswith("task.")}
    all_seeds = sorted(set(runs["seed"].dropna()))

    rows = []
    for model, of_model in runs.groupby("model", sort=True, dropna=False):
        keys = varied_keys([c for c in of_model.drop_duplicates("config_key")["flat_config"]])
        for _, same in of_model.groupby("config_key", sort=True):
            label = str(model) if not keys else f"{model} ({describe(same['flat_config'].iloc[0], keys)})"
            rows.append(_row(label, str(model), same, disp.scale, all_seeds))
    frame = pd.DataFrame(rows)
    frame["_key"] = frame["mean"] * (-1 if higher else 1)
    frame = frame.sort_values(["_key", "label"], na_position="last").drop(columns="_key").reset_index(drop=True)

    refs = applicable(refs, task, task_config) if metric is None else [
        r for r in applicable(refs, task, task_config) if r.metric == metric]
    ref_cols = []
    for _, row in frame.iterrows():
        ref = primary_for(refs, row["model"], "test", task, task_config)
        ref_cols.append({"ref_label": ref.label if ref else None, "ref_value": ref.value if ref else math.nan,
                         "ref_verified": ref.verified if ref else None,
                         "delta": row["mean"] - ref.value if ref else math.nan})
    frame = pd.concat([frame, pd.DataFrame(ref_cols, index=frame.index)], axis=1)
    return Board(task, title, task_config, metric, higher, frame, format_table(frame, refs, disp, higher),
                 comparisons(frame, disp), refs, runs)


def format_table(frame: pd.DataFrame, refs: list[Reference], disp: Display, higher: bool) -> pd.DataFrame:
    arrow = "↑" if higher else "↓"
    metric_col, d = f"test {disp.name} {arrow}", disp.digits
    out = []
    number = {ref.label: i + 1 for i, ref in enumerate(refs)}  # footnotes: see `footnotes`
    for _, r in frame.iterrows():
        published = "—"
        if r["ref_label"] is not None:
            published = f"{fmt(r['ref_value'], d)} [{number[r['ref_label']]}]"
        out.append({
            "model": r["label"], "status": r["status"], "n": str(r["n"]),
            metric_col: fmt_mean_std(r["mean"], r["std"], r["n"], d),
            "95% CI": "—" if not math.isfinite(r["ci95"]) else f"[{fmt(r['mean'] - r['ci95'], d)}, "
                                                             f"{fmt(r['mean'] + r['ci95'], d)}]",
            f"val {disp.name}": fmt_mean_std(r["val_mean"], r["val_std"], r["val_n"], d),
            "params": fmt_count(r["params"]), "train tokens/s": fmt_count(r["train_tokens_per_s"]),
            "published": published, "Δ vs published": "—" if not math.isfinite(r["delta"]) else f"{r['delta']:+.{d}f}",
        })
    for ref in refs:
        value = fmt(ref.value, d) + ("" if ref.split == "test" else f" ({ref.split})")
        out.append({
            "model": f"published: {ref.label}", "status": "published" if ref.verified else "published, unverified",
            "n": "", metric_col: value, "95% CI": "", f"val {disp.name}": "", "params": ref.params or "—",
            "train tokens/s": "", "published": f"[{number[ref.label]}]", "Δ vs published": "",
        })
    return pd.DataFrame(out)


def footnotes(refs: list[Reference]) -> list[str]:
    """The sources of a board's published numbers, numbered as in its table."""
    return [f"[{i + 1}] {ref.label}: {ref.cite()}" + ("" if ref.verified else " (unverified)")
            for i, ref in enumerate(refs)]


def comparisons(frame: pd.DataFrame, disp: Display) -> pd.DataFrame:
    """Paired t-tests over shared seeds for every pair of rows of one board with >= 2 shared seeds."""
    out = []
    for (_, a), (_, b) in combinations(frame.iterrows(), 2):
        test = paired(a["test_by_seed"], b["test_by_seed"])
        if test.n < 2:
            continue
        out.append({"A": a["label"], "B": b["label"], "shared seeds": test.n,
                    "mean A - B": round(test.mean_diff, 10), "t": test.t, "p": test.p,
                    "verdict": "beyond noise (p < 0.05)" if test.significant
                    else ("undefined (identical differences)" if not math.isfinite(test.p) else "within noise")})
    return pd.DataFrame(out, columns=["A", "B", "shared seeds", "mean A - B", "t", "p", "verdict"])


def boards(runs: pd.DataFrame, refs: list[Reference]) -> list[Board]:
    """One board per task and task setting (runs whose task configs differ are different benchmarks)."""
    result = []
    for task, of_task in runs.groupby("task", sort=True):
        variants = of_task.drop_duplicates("task_variant")
        keys = varied_keys([json.loads(v) for v in variants["task_variant"]])
        for variant, same in of_task.groupby("task_variant", sort=True):
            title = str(task) if not keys else f"{task} ({describe(json.loads(variant), keys)})"
            result.append(board(str(task), title, same, refs))
    return result
