"""Leaderboards: one per task (and task setting), a row per model configuration, published numbers beside.

Numbers are shown in the papers' units (accuracy in percent) so our rows and the published rows read
alike; `Board.rows` keeps them as floats for tests and further use, `Board.table` holds the strings.

A row's published number is the one of its exact setting (references.py), or none; Δ to it is given only when
the row is at the paper's settings (paper.py), since a reduced run says nothing about the published number.
Runs that did not complete (failed, oom, preempted, diverged) are listed apart and never ranked.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import pandas as pd

from reports import paper
from reports.load import TASK_INPUT_KEYS
from reports.references import Catalog, Reference, for_board, published_for
from reports.render import Note
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
    rows: pd.DataFrame  # numeric, one row per model configuration with a complete run, sorted best first
    table: pd.DataFrame  # the same as display strings, plus the published rows
    comparisons: pd.DataFrame  # paired t-tests between rows over shared seeds
    references: list[Reference] = field(default_factory=list)  # numbered [1], [2], ... in the table
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)  # the board's records, any status
    incomplete: pd.DataFrame = field(default_factory=pd.DataFrame)  # not complete: listed apart, never ranked
    notes: list[Note] = field(default_factory=list)


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


NOT_COMPLETE = ("failed", "oom", "preempted", "diverged")
NO_PUBLISHED = "no published number for this setting"


def status_text(statuses: list[str], missing_seeds: list[Any]) -> str:
    """'3 complete', or '2 complete, failed (1), diverged (1), no record for seed 2'."""
    counts = pd.Series(statuses, dtype=object).value_counts()
    parts = [f"{counts.get('complete', 0)} complete"]
    parts += [f"{s} ({counts[s]})" for s in NOT_COMPLETE if counts.get(s, 0)]
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


def run_labels(runs: pd.DataFrame) -> pd.Series:
    """Each run's row label: the model, plus the config keys that tell its configurations apart."""
    labels = pd.Series(index=runs.index, dtype=object)
    for model, of_model in runs.groupby("model", sort=True, dropna=False):
        keys = varied_keys(list(of_model.drop_duplicates("config_key")["flat_config"]))
        for i, run in of_model.iterrows():
            labels[i] = str(model) if not keys else f"{model} ({describe(run['flat_config'], keys)})"
    return labels


def _compared(row: dict[str, Any], runs: pd.DataFrame, task: str, catalog: Catalog,
              refs: list[Reference]) -> dict[str, Any]:
    """The row's published number (of its exact setting, among the board's `refs`), its settings against the
    paper's, and Δ when both hold."""
    config = runs["flat_config"].iloc[0]
    ref = published_for(refs, task, row["model"], config)
    check = paper.check(task, row["model"], config, list(runs["data_sizes"]), ref.preset if ref else None,
                        catalog.datasets.get(task, {}))
    comparable = ref is not None and check.at_paper
    return {"ref": ref, "settings": check, "ref_label": ref.label if ref else None,
            "ref_value": ref.value if ref else math.nan, "ref_verified": ref.verified if ref else None,
            "delta": row["mean"] - ref.value if comparable else math.nan}


def _reason(run: pd.Series) -> str:
    """The last line of a run's error (a traceback ends with the exception), shortened."""
    lines = [line.strip() for line in str(run["error"] or "").splitlines() if line.strip()]
    text = lines[-1] if lines else "no error recorded"
    return text if len(text) <= 140 else text[:137] + "..."


def not_complete(runs: pd.DataFrame, labels: pd.Series) -> pd.DataFrame:
    """One line per run that did not complete (failed, oom, preempted, diverged): never ranked."""
    rows = [{"model": labels[i], "seed": str(run["seed"]), "status": str(run["status"]), "run id": str(run["run_id"]),
             "reason": _reason(run)}
            for i, run in runs[runs["status"] != "complete"].sort_values(["model", "seed"]).iterrows()]
    return pd.DataFrame(rows, columns=["model", "seed", "status", "run id", "reason"])


def version_notes(runs: pd.DataFrame, labels: pd.Series) -> list[Note]:
    """A note for each model, task or harness whose runs in this table come from different code versions."""
    notes = []
    versions = runs["versions"].map(lambda v: v or {})
    groups = [("model", f"model {m}", runs.index[runs["model"] == m]) for m in sorted(runs["model"].dropna().unique())]
    groups += [("task", f"task {runs['task'].iloc[0]}", runs.index), ("harness", "the harness", runs.index)]
    for kind, name, index in groups:
        seen = {i: versions[i].get(kind) for i in index}
        distinct = sorted({v for v in seen.values()}, key=lambda v: (v is None, v if v is not None else 0))
        if len(distinct) > 1:
            parts = []
            for v in distinct:
                rows = sorted({labels[i] for i, w in seen.items() if w == v})
                parts.append(f"{'unrecorded' if v is None else f'version {v}'} ({', '.join(rows)})")
            notes.append(Note(f"Mixed code versions: {name} runs here come from " + "; ".join(parts)
                              + ". Results of different versions may differ for reasons other than the setting."))
    return notes


def board(task: str, title: str, runs: pd.DataFrame, catalog: Catalog) -> Board:
    """The leaderboard of one task setting from its training runs (any status): configurations with a complete
    run are ranked, runs that did not complete are listed apart."""
    done = runs[runs["status"] == "complete"]
    metric = done["metric"].mode().iloc[0] if done["metric"].notna().any() else None
    hib_values = done["higher_is_better"].dropna()
    higher = bool(hib_values.mode().iloc[0]) if len(hib_values) else metric != "bpd"
    disp = display(metric)
    task_config = {k: v for k, v in runs["flat_config"].iloc[0].items() if k.startswith("task.")
                   and k.removeprefix("task.") not in TASK_INPUT_KEYS}
    all_seeds = sorted(set(runs["seed"].dropna()))
    labels = run_labels(runs)
    published = [r for r in for_board(catalog.refs, task, task_config) if metric is None or r.metric == metric]

    rows = []
    for _, same in runs.groupby("config_key", sort=True):
        if not (same["status"] == "complete").any():
            continue
        row = _row(labels[same.index[0]], str(same["model"].iloc[0]), same, disp.scale, all_seeds)
        rows.append(row | _compared(row, same, task, catalog, published))
    frame = pd.DataFrame(rows, columns=ROW_COLUMNS)
    if len(frame):
        frame["_key"] = frame["mean"] * (-1 if higher else 1)
        frame = frame.sort_values(["_key", "label"]).drop(columns="_key").reset_index(drop=True)
    notes = footnotes(published)
    notes += [Note(f"{r['label']}: {r['settings'].describe()}") for _, r in frame.iterrows()
              if not r["settings"].at_paper]
    notes += version_notes(runs, labels)
    return Board(task, title, task_config, metric, higher, frame, format_table(frame, published, disp, higher),
                 comparisons(frame), published, runs, not_complete(runs, labels), notes)


ROW_COLUMNS = ["label", "model", "config_key", "n", "mean", "std", "ci95", "val_n", "val_mean", "val_std", "params",
               "train_tokens_per_s", "train_samples_per_s", "n_runs", "status", "test_by_seed", "ref", "settings",
               "ref_label", "ref_value", "ref_verified", "delta"]


def format_table(frame: pd.DataFrame, refs: list[Reference], disp: Display, higher: bool) -> pd.DataFrame:
    arrow = "↑" if higher else "↓"
    metric_col, d = f"test {disp.name} {arrow}", disp.digits
    out = []
    number = {ref.label: i + 1 for i, ref in enumerate(refs)}  # footnotes: see `footnotes`
    for _, r in frame.iterrows():
        ref = r["ref"] if isinstance(r["ref"], Reference) else None  # pandas turns a missing one into NaN
        published = NO_PUBLISHED if ref is None else f"{fmt(ref.value, d)} [{number[ref.label]}]"
        # A difference from a number nobody could read at its source is labelled as such, like the number.
        delta = "—" if not math.isfinite(r["delta"]) else f"{r['delta']:+.{d}f}" + (
            "" if ref is None or ref.verified else " (unverified)")
        out.append({
            "model": r["label"], "settings": r["settings"].label, "status": r["status"], "n": str(r["n"]),
            metric_col: fmt_mean_std(r["mean"], r["std"], r["n"], d),
            "95% CI": "—" if not math.isfinite(r["ci95"]) else f"[{fmt(r['mean'] - r['ci95'], d)}, "
                                                             f"{fmt(r['mean'] + r['ci95'], d)}]",
            f"val {disp.name}": fmt_mean_std(r["val_mean"], r["val_std"], r["val_n"], d),
            "params": fmt_count(r["params"]), "train tokens/s": fmt_count(r["train_tokens_per_s"]),
            "published": published, "Δ vs published": delta,
        })
    for ref in refs:
        value = fmt(ref.value, d) + ("" if ref.split == "test" else f" ({ref.split})")
        out.append({
            "model": f"published: {ref.label}", "settings": str(ref.preset or ""),
            "status": "published" if ref.verified else "published, unverified", "n": "", metric_col: value,
            "95% CI": "", f"val {disp.name}": "", "params": ref.params or "—", "train tokens/s": "",
            "published": f"[{number[ref.label]}]", "Δ vs published": "",
        })
    return pd.DataFrame(out)


def footnotes(refs: list[Reference]) -> list[Note]:
    """The sources of a board's published numbers, numbered as in its table."""
    return [Note(f"{ref.label}: {ref.cite()}" + ("" if ref.verified else "; unverified")
                 + (f". {ref.note}" if ref.note else ""), marker=f"[{i + 1}]") for i, ref in enumerate(refs)]


def comparisons(frame: pd.DataFrame) -> pd.DataFrame:
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


def boards(runs: pd.DataFrame, catalog: Catalog) -> list[Board]:
    """One board per task and task setting (runs whose task configs differ are different benchmarks)."""
    result = []
    for task, of_task in runs.groupby("task", sort=True):
        variants = of_task.drop_duplicates("task_variant")
        keys = varied_keys([json.loads(v) for v in variants["task_variant"]])
        for variant, same in of_task.groupby("task_variant", sort=True):
            setting = json.loads(variant)
            title = str(task) if not keys else f"{task} (" + ", ".join(
                f"{k.removeprefix('task.')}={setting.get(k, '—')}" for k in keys) + ")"
            result.append(board(str(task), title, same, catalog))
    return result
