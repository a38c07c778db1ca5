"""What each point of accuracy cost: device-hours, samples/s, peak memory and parameters per leaderboard row, and
the metric against device-hours and against parameters with the Pareto front marked.

A run's cost is its record's `cost` (harness.train.cost): the wall time from set-up to test summed over every
piece of a resumed run, times the devices it ran on, in hours: GPU-hours on CUDA, CPU-hours (processes, not
cores) on the CPU. Records from before costs were kept show "—". A row shows the mean over its complete runs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from reports.leaderboard import Board, display, fmt_bytes, fmt_count  # noqa: E402
from reports.plots import Figure, _save, _wrap, board_styles, count_axis, log_axis, slug  # noqa: E402

KINDS = {"cuda": "GPU", "cpu": "CPU"}


def device_label(kinds: set[str]) -> str:
    """'GPU-h', 'CPU-h', or 'device-h' when a board mixes them (each cell then names its kind)."""
    named = {KINDS.get(k, k) for k in kinds if k}
    return f"{named.pop()}-h" if len(named) == 1 else "device-h"


def row_costs(board: Board) -> pd.DataFrame:
    """Per ranked row (board.rows' order): mean device-hours, its device kind(s), samples/s and peak bytes of the
    row's complete runs."""
    out = []
    runs = board.runs[board.runs["status"] == "complete"]
    for _, row in board.rows.iterrows():
        same = runs[runs["config_key"] == row["config_key"]]
        costs = [c for c in same["cost"] if isinstance(c, dict) and c.get("device_hours") is not None] \
            if "cost" in same else []
        hours = [float(c["device_hours"]) for c in costs]
        out.append({"config_key": row["config_key"], "label": row["label"], "model": row["model"],
                    "mean": row["mean"], "params": row["params"],
                    "device_hours": sum(hours) / len(hours) if hours else math.nan,
                    "kinds": {str(c.get("device")) for c in costs},
                    "samples_per_s": same["train_samples_per_s"].mean(), "peak_bytes": same["peak_bytes"].mean()})
    return pd.DataFrame(out, columns=["config_key", "label", "model", "mean", "params", "device_hours", "kinds",
                                      "samples_per_s", "peak_bytes"])


def _plain(value: float, digits: int = 2) -> str:
    """A number in positional notation with `digits` significant digits: 1.4e-05 -> 0.000014, 2e4 -> 20000."""
    return np.format_float_positional(value, precision=digits, fractional=False, trim="-")


def fmt_hours(hours: float) -> str:
    return "—" if not math.isfinite(hours) else _plain(hours, 3 if hours >= 0.01 else 2)


def add_columns(board: Board) -> None:
    """The cost columns in the board's table, after its throughput: device-hours, samples/s, peak memory (the
    parameters are there already). Published rows get none."""
    costs = row_costs(board)
    label = device_label(set().union(*costs["kinds"])) if len(costs) else "GPU-h"
    mixed = label == "device-h"

    def hours(r: Any) -> str:
        kinds = ", ".join(sorted(KINDS.get(k, k) for k in r["kinds"]))
        return fmt_hours(r["device_hours"]) + (f" ({kinds})" if mixed and math.isfinite(r["device_hours"]) else "")

    n = len(costs)
    pad = [""] * (len(board.table) - n)
    columns = {f"train {label}": [hours(r) for _, r in costs.iterrows()] + pad,
               "train samples/s": [fmt_count(v) for v in costs["samples_per_s"]] + pad,
               "peak memory": [fmt_bytes(v) for v in costs["peak_bytes"]] + pad}
    at = list(board.table.columns).index("train tokens/s") + 1 if "train tokens/s" in board.table else \
        len(board.table.columns)
    for offset, (name, values) in enumerate(columns.items()):
        board.table.insert(at + offset, name, values)


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool = True) -> list[int]:
    """Indices of the points (cost, score) that no other point beats: none costs no more and scores at least as
    well, better in one of the two. Sorted by cost."""
    sign = 1 if higher_is_better else -1
    front = []
    for i, (c, s) in enumerate(points):
        beaten = any(c2 <= c and sign * s2 >= sign * s and (c2 < c or sign * s2 > sign * s)
                     for j, (c2, s2) in enumerate(points) if j != i)
        if not beaten:
            front.append(i)
    return sorted(front, key=lambda i: points[i])


def figure(board: Board, out: Path) -> Figure | None:
    """The mean test metric against device-hours and against parameters, one marker per row, the Pareto front of
    each panel joined by a dashed step line and its points ringed."""
    costs = row_costs(board)
    costs = costs[costs["mean"].notna()]
    if costs.empty or costs["device_hours"].isna().all():
        return None
    sns.set_theme(style="whitegrid")
    disp = display(board.metric)
    label = device_label(set().union(*costs["kinds"]))
    styles = board_styles(board, list(costs["label"]))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for ax, column, xlabel in ((axes[0], "device_hours", f"training {label} (summed over resumed pieces)"),
                               (axes[1], "params", "parameters")):
        have = costs[costs[column].notna() & (costs[column] > 0)].reset_index(drop=True)
        for _, r in have.iterrows():
            style = styles[r["label"]]
            ax.scatter(r[column], r["mean"], marker=style["marker"], color=style["color"], s=55, zorder=3,
                       label=r["label"])
        points = list(zip(have[column], have["mean"], strict=True))
        front = pareto_front(points, board.higher_is_better)
        if front:
            xs, ys = [points[i][0] for i in front], [points[i][1] for i in front]
            ax.step(xs, ys, where="post", color="0.25", linestyle="--", linewidth=1.2, zorder=2)
            ax.scatter(xs, ys, s=170, facecolors="none", edgecolors="0.25", linewidths=1.3, zorder=4)
        ax.set_xscale("log")
        ax.margins(x=0.08)  # room for the rings of the outermost points
        if column == "params":
            count_axis(ax.xaxis)
        else:
            log_axis(ax.xaxis, FuncFormatter(lambda v, _: _plain(v)))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"mean test {disp.name}")
    handles, labels = axes[0].get_legend_handles_labels()
    handles.append(plt.Line2D([], [], color="0.25", linestyle="--", marker="o", markerfacecolor="none",
                              markersize=10))
    labels.append("Pareto front (no row is cheaper and better)")
    axes[1].legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(_wrap(f"cost: {board.title}", 110))
    caption = (f"{board.title}: mean test {disp.name} over seeds against what training cost, in {label} (wall "
               f"time from set-up to test, summed over every piece of a resumed run, times the devices), and "
               "against parameters. Ringed and joined by the dashed line: the Pareto front of each panel, the rows "
               "that no other row beats on both axes.")
    return Figure(f"{board.title}: cost", _save(fig, out / f"cost_{slug(board.title)}.png"), caption)
