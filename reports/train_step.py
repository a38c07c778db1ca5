"""The train-step study's tables (sweeps/studies/train_step.py says what each figure means): one row per preset,
implementation and mode, with the speed-up over the published step of the same preset, and the projected cost of
each published run. One device per table: steps timed on different machines do not share a row."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.errors import MissingConfigException

from harness.results import Store
from reports import render
from reports.leaderboard import fmt_bytes
from reports.load import flatten
from reports.paper import preset_config, same_setting, show_setting
from reports.references import Preset

PASS = "train_step"


def load(store: str | Path, sweep: str | None = None) -> list[dict[str, Any]]:
    """The train-step records of a store (of one sweep, if given)."""
    return [r for r in Store(store).records() if is_train_step(r) and (sweep is None or r.get("sweep") == sweep)]


def is_train_step(record: dict[str, Any]) -> bool:
    return record.get("kind") == "bench" and (record.get("metrics") or {}).get("pass") == PASS


def _num(value: Any, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def _peak(metrics: dict[str, Any], mode: str | None) -> str:
    # CUDA graphs allocate their pool at capture, before the timed steps: their rise over those steps is not a peak.
    return "n/a" if mode == "graphs" or metrics.get("peak_bytes") is None else fmt_bytes(metrics["peak_bytes"])


def _same(same: dict[str, Any] | None) -> str:
    if not same:
        return ""
    return f"{same['difference']:.1e} ({same['rounding']:.1e}) after {same['steps']:,}"


def changed(record: dict[str, Any]) -> str:
    """The settings of the step's model, optimizer and training that differ from its preset's (`key=value`, as the
    override would be written), so that two steps of one preset in one table say what told them apart (e.g.
    `model.attention_kernel=flash_tf32`, or a batch shrunk to run on a CPU)."""
    config = record.get("config") or {}
    if not config.get("preset"):
        return ""
    try:
        preset = preset_config(Preset(config["preset"]))
    except MissingConfigException:  # a record older than a preset's rename or removal
        return f"(no preset {config['preset']} in sweeps/experiment/ to compare with)"
    ours = flatten({part: config[part] for part in ("model", "optim", "train") if isinstance(config.get(part), dict)})
    return " ".join(f"{key}={show_setting(value)}" for key, value in sorted(ours.items())
                    if key in preset and not same_setting(value, preset[key]))


def rows(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per train-step record, in the order preset, published first, then eager, compiled, graphs."""
    steps = [r for r in records if is_train_step(r)]
    # A speed-up compares steps of one preset at the same settings on the same device.
    published = {(r["env"].get("device"), r["config"].get("preset"), changed(r)): r["metrics"]["time_ms"]
                 for r in steps if r["metrics"]["impl"] == "published" and r["status"] == "complete"}
    order = {"eager": 0, "compiled": 1, "graphs": 2}
    out = []
    for r in sorted(steps, key=lambda r: (r["env"].get("device") or "", r["config"].get("preset") or "",
                                          r["metrics"]["impl"] != "published", order.get(r["config"].get("mode"), 9))):
        m, device, preset, settings = r["metrics"], r["env"].get("device"), r["config"].get("preset"), changed(r)
        base = published.get((device, preset, settings))
        done = r["status"] == "complete"
        proj = m.get("projection") or {}
        out.append({
            "device": device, "code": (r["env"].get("git_commit") or "")[:7], "preset": preset, "impl": m["impl"],
            "mode": r["config"].get("mode"), "changed from the preset": settings,
            "precision": m["dtype"], "batch x L": f"{m['batch_size']} x {m['length']}",
            "ms/step": _num(m["time_ms"], ".1f") if done else r["status"],
            "samples/s": _num(m.get("samples_per_s"), ",.0f"),
            "GPU busy": _num(m.get("gpu_busy"), ".0%"),
            "host ms": _num(m.get("host_ms"), ".1f"),
            "speed-up vs published": f"{base / m['time_ms']:.2f}x" if done and base and m["impl"] == "ours" else "",
            "compile s": _num(m.get("compile_s"), ".0f"),
            "ops/step": _num(m.get("dispatched_ops"), ","),
            "peak": _peak(m, r["config"].get("mode")) if done else "",
            "same training: loss Δ (rounding)": _same(m.get("same_training")),
            "run steps": _num(proj.get("steps"), ","),
            "run GPU-h": _num(proj.get("hours"), ".2f"),
        })
    return out


def frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """The rows as a table, less the columns no record fills (no published step, no compiled mode, a CPU)."""
    df = pd.DataFrame(rows(records))
    return df.loc[:, (df != "").any()] if not df.empty else df


def table(records: Iterable[dict[str, Any]]) -> str:
    """The Markdown table of every train-step record with its legend, or a line saying there is none."""
    df = frame(records)
    return "No train-step records." if df.empty else render.markdown(df) + "\n\n" + LEGEND


LEGEND = ("changed from the preset: the step's settings that differ from its preset's. ms/step: median of whole "
          "optimizer steps (forward, loss, backward, AdamW, schedule) on a random full-length batch already on the "
          "device. GPU busy: the kernels' time in a step over the step's time (launch gaps "
          "count). host ms: the time a step's call takes to return (on CUDA, to queue its kernels); near ms/step, "
          "the step is bound by the host's Python and launches, and the host CPU (the record's env.cpu) sets its "
          "speed. "
          "compile s: the first compiled step's extra time. ops/step: operators dispatched by an eager step "
          "(a proxy for kernel launches). peak: the rise of allocated memory over the timed steps (n/a with CUDA "
          "graphs, whose pool is allocated at capture). code: the commit the step ran. same training: |loss "
          "compiled - loss eager| after that many steps of one training (same initialisation and batches, dropout "
          "off), and in brackets the same for eager against eager from weights nudged by 1e-6, what rounding alone "
          "explains. run GPU-h: the published run's steps at this rate plus its evaluations.")
