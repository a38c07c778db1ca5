"""Read the results store into pandas DataFrames: one row per training run, one per benchmark point.

Every field a report needs is pulled out of the nested record into a flat column here, so the other
modules never touch the record format. Missing fields become NaN/None instead of errors: a failed, diverged or
preempted run has no metrics, and a report must still show it. A training record whose seed is not one integer
cannot be placed among its repeats: it is skipped with a warning naming its file.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import DataError
from harness.identity import semantic_config
from harness.results import Store

# Config keys that differ between runs without making them different experiments.
SEED_KEYS = ("seed",)
# Task keys that say where or how data is fetched, not what it is: they do not split a leaderboard.
TASK_LOCATION_KEYS = ("name", "root", "download", "cache_dir", "hf_cache_dir", "source")
# Task keys that say how a model reads the examples (length cap, padding, end token, normalisation, augmentation,
# resampling), not which examples: each model's paper preset sets them its own way, so they do not split a
# leaderboard either; they tell rows apart and decide whether a row is at paper settings (reports/paper.py).
TASK_INPUT_KEYS = ("l_max", "pad_to_max", "append_eos", "allow_unk", "norm", "augment", "normalize", "resample")

RUN_COLUMNS = [
    "run_id", "sweep", "sweep_id", "task", "model", "seed", "status", "metric", "higher_is_better", "val", "test",
    "best_epoch", "params", "train_samples_per_s", "train_tokens_per_s", "peak_bytes", "wall_s", "error",
    "config", "flat_config", "config_key", "task_variant", "history", "data_sizes", "data_set", "versions",
    "machine", "cost",
]
VERSIONED = ("model", "task", "harness")  # a record's `versions`: the code versions of each (harness.versions)
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


def digest_text(data: dict[str, Any]) -> str:
    """", sha256 4c5d2876fae0" for a record's data with a fingerprint, else ""."""
    digest = _section(data, "fingerprint").get("sha256")
    return f", sha256 {digest[:12]}" if isinstance(digest, str) else ""


def generated_set(data: dict[str, Any]) -> str | None:
    """How a generated data set was drawn ("seed 0, sha256 4c5d2876fae0"); None for data read from files."""
    if data.get("source") != "generated":
        return None
    return f"seed {data.get('seed')}" + digest_text(data)


def run_row(record: dict[str, Any]) -> dict[str, Any]:
    """The flat row of one training record."""
    metrics = _section(record, "metrics")
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    # The identity of the experiment apart from its seed: runs sharing it are repeats.
    semantic = flatten(semantic_config(config))
    flat = {k: v for k, v in semantic.items() if k not in SEED_KEYS}
    task_cfg = {k: v for k, v in flat.items() if k.startswith("task.")
                and k.removeprefix("task.") not in (*TASK_LOCATION_KEYS, *TASK_INPUT_KEYS)}
    # A run that did not complete keeps how far it got (`progress`, `diverged`): drawn as a curve, never ranked.
    progress = _section(record, "progress")
    history = next((h for h in (metrics.get("history"), progress.get("history"),
                                _section(record, "diverged").get("history")) if isinstance(h, list)), None)
    hib = metrics.get("higher_is_better")
    return {
        "run_id": record.get("run_id"),
        "sweep": record.get("sweep"),
        "sweep_id": record.get("sweep_id"),  # one sweep invocation; None for a run outside any (and old records)
        "task": record.get("task") or flat.get("task.name"),
        "model": record.get("model"),
        "seed": record.get("seed"),
        "status": record.get("status"),
        "metric": metrics.get("metric") or progress.get("metric"),
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
        "data_sizes": sizes if isinstance(sizes := _section(record, "data").get("sizes"), dict) else None,
        "data_set": generated_set(_section(record, "data")),
        "versions": {k: _section(record, "versions").get(k) for k in VERSIONED},
        "machine": machine(_section(record, "env"), _section(record, "cost")),
        "cost": _section(record, "cost"),  # reports/cost.py
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


# What `platform.processor() or platform.machine()` gives for a CPU: a record whose device is one of these ran on
# the CPU (harness.env), and its speed depends on the host and the threads it had.
CPU_NAMES = {"", "x86_64", "amd64", "i386", "i686", "aarch64", "arm64", "arm", "ppc64le", "s390x", "riscv64"}


def is_cpu(device: Any) -> bool:
    return isinstance(device, str) and device.lower() in CPU_NAMES


UNRECORDED = "not recorded"


def machine(env: dict[str, Any], cost: dict[str, Any] | None = None) -> str:
    """The machine a run's speed was measured on: the GPU's name, or for a CPU its host and thread count (a CPU
    run's speed is that host's, with those threads); UNRECORDED for a record without its environment. A run resumed
    on other cards (its `cost.segments` name several) averaged its speed over both: it is a machine of its own,
    "pieces on A and B", never one of theirs. A piece from before records named each piece's device counts for none."""
    devices = sorted({str(s["device"]) for s in (cost or {}).get("segments") or []
                      if isinstance(s, dict) and s.get("device")})
    if len(devices) > 1:
        return "pieces on " + " and ".join(devices)
    device = env.get("device")
    if device is None:
        return UNRECORDED
    if not is_cpu(device):
        return str(device)
    threads = env.get("torch_threads")
    return f"CPU {device or '?'} on {env.get('host', '?')}, {threads if threads is not None else '?'} threads"


DEFAULT_SWEEP = "default"  # harness.config.RunConfig.sweep when none is given


def sweep_group(sweep: Any, sweep_id: Any) -> str | None:
    """The sweep a run was asked for in: its invocation (sweep_id), else a sweep name given by hand (or an old
    record's, which has no sweep_id); None for a run outside any sweep under the default name: asked for alone."""
    if isinstance(sweep_id, str) and sweep_id:
        return f"id:{sweep_id}"
    if isinstance(sweep, str) and sweep and sweep != DEFAULT_SWEEP:
        return f"name:{sweep}"
    return None


def _is_seed(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load(store: str | Path, sweep: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training runs, benchmark points) of a store, optionally only those of one sweep.

    Unreadable files are skipped with a warning by `Store.records`, training records without one integer seed
    here; a store that does not exist is an error (a mistyped path must not read as an empty report).
    """
    if not Path(store).is_dir():
        raise DataError(f"results store {store} does not exist; pass the store directory of a run or sweep "
                        "(<paths.root>/store, e.g. results/store)")
    runs, bench = [], []
    db = Store(store)
    for record in db.records():
        if sweep is not None and record.get("sweep") != sweep:
            continue
        if record.get("kind") == "eval":
            continue  # evaluations of trained runs: reports/lengths.py reads them
        if record.get("kind") == "bench":
            bench.append(bench_row(record))
        elif not _is_seed(record.get("seed")):
            print(f"seqbench: skipping record {db.path(str(record.get('run_id')))}: its seed is "
                  f"{json.dumps(record.get('seed'))}, not one integer", file=sys.stderr)
        else:
            runs.append(run_row(record))
    return pd.DataFrame(runs, columns=RUN_COLUMNS), pd.DataFrame(bench, columns=BENCH_COLUMNS)
