"""Read the results store into pandas DataFrames: one row per training run, one per benchmark point.

Every field a report needs is pulled out of the nested record into a flat column here, so the other
modules never touch the record format. Missing fields become NaN/None instead of errors: a failed or
preempted run has no metrics, and a report must still show it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from harness.identity import semantic_config
from harness.results import Store

# Config keys that differ between runs without making them different experiments.
SEED_KEYS = ("seed",)
# Task keys that say where or how data is fetched, not what it is: they do not split a leaderboard.
TASK_LOCATION_KEYS = ("name", "root", "download", "cache_dir", "hf_cache_dir", "source")

RUN_COLUMNS = [
    "run_id", "sweep", "task", "model", "seed", "status", "metric", "higher_is_better", "val", "test",
    "best_epoch", "params", "train_samples_per_s", "train_tokens_per_s", "peak_bytes", "wall_s", "error",
    "config", "flat_config", "config_key", "task_variant", "history",
]
BENCH_COLUMNS = [
    "run_id", "sweep", "model", "impl", "status", "scope", "pass", "dtype", "length", "batch_size", "time_ms",
    "tokens_per_s", "peak_bytes", "memory_kind", "frac_bandwidth", "frac_matmul", "error", "device", "ceilings",
    "env", "bench_config",
]


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists are kept whole (as JSON text, so they stay hashable)."""
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        elif isinstance(value, list | tuple):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def _num(value: Any) -> float:
    """A float, or NaN for anything missing or not a number."""
    try:
        result = float(value)
    except (TypeError, ValueError):
        return math.nan
    return result


def _section(record: dict[str, Any], name: str) -> dict[str, Any]:
    value = record.get(name)
    return value if isinstance(value, dict) else {}


def run_row(record: dict[str, Any]) -> dict[str, Any]:
    """The flat row of one training record."""
    metrics = _section(record, "metrics")
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    # The identity of the experiment apart from its seed: runs sharing it are repeats.
    semantic = flatten(semantic_config(config))
    flat = {k: v for k, v in semantic.items() if k not in SEED_KEYS}
    task_cfg = {k: v for k, v in flat.items()
                if k.startswith("task.") and k.removeprefix("task.") not in TASK_LOCATION_KEYS}
    history = metrics.get("history")
    hib = metrics.get("higher_is_better")
    return {
        "run_id": record.get("run_id"),
        "sweep": record.get("sweep"),
        "task": record.get("task") or flat.get("task.name"),
        "model": record.get("model"),
        "seed": record.get("seed"),
        "status": record.get("status"),
        "metric": metrics.get("metric"),
        "higher_is_better": None if hib is None else bool(hib),
        "val": _num(metrics.get("val")),
        "test": _num(metrics.get("test")),
        "best_epoch": metrics.get("best_epoch"),
        "params": _num(record.get("params")),
        "train_samples_per_s": _num(_section(record, "throughput").get("train_samples_per_s")),
        "train_tokens_per_s": _num(_section(record, "throughput").get("train_tokens_per_s")),
        "peak_bytes": _num(_section(record, "memory").get("peak_bytes")),
        "wall_s": _num(_section(record, "timing").get("wall_s")),
        "error": record.get("error"),
        "config": config,
        "flat_config": flat,
        "config_key": json.dumps(flat, sort_keys=True, default=str),
        "task_variant": json.dumps(task_cfg, sort_keys=True, default=str),
        "history": history if isinstance(history, list) else [],
    }


def bench_row(record: dict[str, Any]) -> dict[str, Any]:
    """The flat row of one benchmark record (one model, scope, pass, dtype and length)."""
    metrics = _section(record, "metrics")
    return {
        "run_id": record.get("run_id"),
        "sweep": record.get("sweep"),
        "model": record.get("model"),
        "impl": metrics.get("impl") or "ours",  # records from before published code was timed are all ours
        "status": record.get("status"),
        "scope": metrics.get("scope"),
        "pass": metrics.get("pass"),
        "dtype": metrics.get("dtype"),
        "length": _num(metrics.get("length")),
        "batch_size": _num(metrics.get("batch_size")),
        "time_ms": _num(metrics.get("time_ms")),
        "tokens_per_s": _num(metrics.get("tokens_per_s")),
        "peak_bytes": _num(metrics.get("peak_bytes")),
        "memory_kind": metrics.get("memory_kind"),
        "frac_bandwidth": _num(metrics.get("frac_bandwidth")),
        "frac_matmul": _num(metrics.get("frac_matmul")),
        "error": record.get("error"),
        "device": _section(record, "env").get("device"),
        "ceilings": _section(metrics, "ceilings"),
        "env": _section(record, "env"),
        "bench_config": _section(_section(record, "config"), "bench"),
    }


def load(store: str | Path, sweep: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training runs, benchmark points) of a store, optionally only those of one sweep.

    Unreadable files are skipped with a warning by `Store.records`; a missing store gives empty frames.
    """
    runs, bench = [], []
    for record in Store(store).records():
        if sweep is not None and record.get("sweep") != sweep:
            continue
        if record.get("kind") == "bench":
            bench.append(bench_row(record))
        else:
            runs.append(run_row(record))
    return pd.DataFrame(runs, columns=RUN_COLUMNS), pd.DataFrame(bench, columns=BENCH_COLUMNS)
