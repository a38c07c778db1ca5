"""Figures (matplotlib on the Agg backend, seaborn's style): scaling curves, metric against parameters,
training curves. Each function writes PNG files and returns (title, path) pairs; nothing is shown.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on cluster nodes or in CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from reports.leaderboard import Board, display  # noqa: E402

DPI = 100
Figure = tuple[str, Path]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "x"


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _palette(names: list[str]) -> dict[str, tuple[float, float, float]]:
    return dict(zip(names, sns.color_palette("tab10", max(len(names), 1)), strict=False))


def scaling(bench: pd.DataFrame, out: Path) -> list[Figure]:
    """Tokens/s and peak memory against length, log-log, a line per model; out-of-memory lengths as ×."""
    figures: list[Figure] = []
    if bench.empty:
        return figures
    sns.set_theme(style="whitegrid")
    colors = _palette(sorted(bench["model"].dropna().astype(str).unique()))
    for (scope, kind, dtype), group in bench.groupby(["scope", "pass", "dtype"], sort=True, dropna=False):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        panels = ((axes[0], "tokens_per_s", "tokens / s"), (axes[1], "peak_bytes", "peak memory (bytes)"))
        for ax, column, ylabel in panels:
            oom_seen = False
            for model, rows in group.groupby("model", sort=True):
                rows = rows.sort_values("length")
                ok = rows[(rows["status"] == "complete") & (rows[column] > 0)]
                ax.plot(ok["length"], ok[column], marker="o", color=colors[str(model)], label=str(model))
                oom = rows[rows["status"] == "oom"]
                if len(oom):
                    oom_seen = True
                    # x in data units, y pinned near the top of the axes: an OOM point has no value.
                    trans = blended_transform_factory(ax.transData, ax.transAxes)
                    ax.scatter(oom["length"], [0.96] * len(oom), marker="x", s=70, linewidths=2,
                               color=colors[str(model)], transform=trans, clip_on=False, zorder=5)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("sequence length")
            ax.set_ylabel(ylabel)
            handles, labels = ax.get_legend_handles_labels()
            if oom_seen:
                # Head-room above the data so the × row at the top does not sit on a line.
                low, high = ax.get_ylim()
                ax.set_ylim(low, high * (high / low) ** 0.25)
                handles.append(Line2D([], [], marker="x", color="k", linestyle="", markersize=8))
                labels.append("out of memory")
            ax.legend(handles, labels, fontsize=8)
        title = f"scaling: {scope}, {kind}, {dtype}"
        fig.suptitle(title)
        figures.append((title, _save(fig, out / f"scaling_{slug(f'{scope}_{kind}_{dtype}')}.png")))
    return figures


def parse_params(text: str | None) -> float:
    """'1.4M' -> 1.4e6, '361,994' -> 361994.0; NaN when absent."""
    if not text:
        return math.nan
    match = re.fullmatch(r"\s*([0-9.,]+)\s*([KMG]?)\s*", str(text))
    if not match:
        return math.nan
    return float(match.group(1).replace(",", "")) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[match.group(2)]


def metric_vs_params(board: Board, out: Path) -> Figure | None:
    """Our mean test metric (± std) against parameter count, with published points where a count is given."""
    rows = board.rows[board.rows["params"].notna() & board.rows["mean"].notna()]
    refs = [(r, parse_params(r.params)) for r in board.references if r.split == "test"]
    refs = [(r, p) for r, p in refs if math.isfinite(p)]
    if rows.empty and not refs:
        return None
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colors = _palette(sorted(set(rows["model"]) | {str(r.model) for r, _ in refs}))
    for _, r in rows.iterrows():
        ax.errorbar(r["params"], r["mean"], yerr=0 if math.isnan(r["std"]) else r["std"], fmt="o", capsize=3,
                    color=colors[r["model"]], label=r["label"])
    for ref, p in refs:
        ax.scatter(p, ref.value, marker="D", facecolors="none", edgecolors=colors[str(ref.model)], s=60,
                   label=f"published: {ref.label}")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"test {display(board.metric).name}")
    ax.set_title(board.title)
    ax.legend(fontsize=7)
    return f"{board.title}: test metric against parameters", _save(fig, out / f"params_{slug(board.title)}.png")


def training_curves(board: Board, runs: pd.DataFrame, out: Path) -> Figure | None:
    """Train loss and validation metric per epoch, one line per run (colour: model)."""
    runs = runs[runs["history"].map(len) > 0]
    if runs.empty:
        return None
    sns.set_theme(style="whitegrid")
    disp = display(board.metric)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = _palette(sorted(runs["model"].astype(str).unique()))
    for _, run in runs.sort_values(["model", "seed"]).iterrows():
        hist = pd.DataFrame(run["history"])
        if "epoch" not in hist:
            hist["epoch"] = range(1, len(hist) + 1)
        label = f"{run['model']} seed {run['seed']}"
        for ax, column, scale in ((axes[0], "train_loss", 1.0), (axes[1], "val", disp.scale)):
            if column in hist:
                ax.plot(hist["epoch"], hist[column] * scale, color=colors[str(run["model"])], alpha=0.8, label=label)
    axes[0].set_ylabel("train loss")
    axes[1].set_ylabel(f"val {disp.name}")
    for ax in axes:
        ax.set_xlabel("epoch")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"training curves: {board.title}")
    return f"{board.title}: training curves", _save(fig, out / f"curves_{slug(board.title)}.png")
