"""Figures (matplotlib on the Agg backend, seaborn's style): scaling curves, metric against parameters, training
curves. Each function writes PNG files and returns Figures (title, path, caption); nothing is shown.

Made to be read in print as well as on screen: every series has its own marker and line style besides its colour,
a single point (a one-epoch run) still shows, error bars say what they are, memory is in GiB as in the tables.
"""

from __future__ import annotations

import hashlib
import math
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on cluster nodes or in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.axis import Axis  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    FixedLocator,
    Formatter,
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
    NullLocator,
)
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from harness.files import atomic_write  # noqa: E402
from reports.leaderboard import Board, display, fmt_count, run_labels  # noqa: E402

DPI = 100
GIB = 2**30
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
LINESTYLES = ["-", "--", ":", "-."]
DODGE = 0.05  # log2 units: neighbouring models' points shift by about 3.5 % in length, so equal lines stay apart
# The range a metric's values can take, in display units: error bars stop at its ends.
RANGES = {"accuracy": (0.0, 100.0), "auroc": (0.0, 1.0), "bpd": (0.0, math.inf)}


@dataclass(frozen=True)
class Figure:
    title: str
    path: Path
    caption: str = ""


def slug(text: str, limit: int = 48) -> str:
    """A file-name part for `text`: lower-case words joined by _, shortened (with a hash of the whole) past `limit`."""
    name = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "x"
    if len(name) <= limit:
        return name
    return f"{name[:limit - 9].rstrip('_')}_{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _wrap(title: str, width: int = 80) -> str:
    """A long board title (task settings) on several lines rather than cut off at the figure's edges."""
    return "\n".join(textwrap.wrap(title, width))


def _theme() -> None:
    # Names come from records (models, folders, config values): a `$` in one is text, never mathtext to parse.
    sns.set_theme(style="whitegrid", rc={"text.parse_math": False})


def _save(fig: plt.Figure, path: Path) -> Path:
    try:
        fig.tight_layout()
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format="png"))
    finally:
        plt.close(fig)
    return path


def _palette(names: list[str]) -> dict[str, tuple[float, float, float]]:
    return dict(zip(names, sns.color_palette("tab10", max(len(names), 1)), strict=False))


def _styles(names: list[str]) -> dict[str, dict[str, object]]:
    """Colour, marker and line style per name: no two series share all three."""
    colors = _palette(names)
    return {n: {"color": colors[n], "marker": MARKERS[i % len(MARKERS)],
                "linestyle": LINESTYLES[i % len(LINESTYLES)]} for i, n in enumerate(names)}


def board_styles(board: Board, names: list[str]) -> dict[str, dict[str, object]]:
    """Styles for `names`, configurations of the board, chosen among all of the board's configurations (its ranked
    rows and its runs of any status), so that a configuration has the same colour and marker in every figure of the
    board: a figure that leaves out the runs that did not complete would otherwise recolour the rest."""
    labels = set(board.runs["label"]) if "label" in board.runs else set()  # the rows' labels among them
    styles = _styles(sorted(str(label) for label in labels))
    return styles if set(names) <= styles.keys() else _styles(sorted(set(names)))


def scaling(bench: pd.DataFrame, out: Path) -> list[Figure]:
    """Tokens/s and peak memory (GiB) against length, log-log, a line per model; out-of-memory lengths as ×."""
    figures: list[Figure] = []
    if bench.empty:
        return figures
    _theme()
    models = sorted(bench["model"].dropna().astype(str).unique())
    styles = _styles(models)
    shift = {m: 2 ** (DODGE * (i - (len(models) - 1) / 2)) for i, m in enumerate(models)}
    for (scope, kind, dtype), group in bench.groupby(["scope", "pass", "dtype"], sort=True, dropna=False):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
        panels = ((axes[0], "tokens_per_s", 1.0, "tokens / s"),
                  (axes[1], "peak_bytes", 1 / GIB, "peak memory above baseline (GiB)"))
        for ax, column, scale, ylabel in panels:
            oom_seen = False
            for model, rows in group.groupby("model", sort=True):
                rows = rows.sort_values("length")
                ok = rows[(rows["status"] == "complete") & (rows[column] > 0)]
                ax.plot(ok["length"] * shift[str(model)], ok[column] * scale, label=str(model), markersize=5,
                        linewidth=1.4, alpha=0.9, **styles[str(model)])
                oom = rows[rows["status"] == "oom"]
                if len(oom):
                    oom_seen = True
                    # x in data units, y pinned near the top of the axes: an OOM point has no value.
                    trans = blended_transform_factory(ax.transData, ax.transAxes)
                    ax.scatter(oom["length"] * shift[str(model)], [0.96] * len(oom), marker="x", s=70,
                               linewidths=2, color=styles[str(model)]["color"], transform=trans, clip_on=False,
                               zorder=5)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            pow2_axis(ax.xaxis)
            if column == "peak_bytes":  # GiB read as plain numbers (2, 3, 10), not as 2 x 10^0
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(v)[0] in "1235" else ""))
            else:
                count_axis(ax.yaxis)
            ax.set_xlabel("sequence length L")
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
        caption = (f"{title}. One line per model (colour, marker and line style each differ); points are shifted "
                   "slightly along L (a few per cent) so that lines with equal values stay visible. Memory: peak "
                   "allocated above the baseline, GiB (2^30 bytes). × at the top: out of memory at that length.")
        figures.append(Figure(title, _save(fig, out / f"scaling_{slug(f'{scope}_{kind}_{dtype}')}.png"), caption))
    return figures


def parse_params(text: str | None) -> float:
    """'1.4M' -> 1.4e6, '361,994' -> 361994.0; NaN when absent."""
    if not text:
        return math.nan
    match = re.fullmatch(r"\s*([0-9.,]+)\s*([KMG]?)\s*", str(text))
    if not match:
        return math.nan
    return float(match.group(1).replace(",", "")) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[match.group(2)]


def clipped_error(mean: float, std: float, low: float, high: float) -> tuple[float, float]:
    """(below, above) of a ± std bar that stops at the metric's range [low, high]; (0, 0) without a std."""
    if not math.isfinite(std):
        return 0.0, 0.0
    return max(0.0, min(std, mean - low)), max(0.0, min(std, high - mean))


MAX_LABELLED = 12  # configurations with a legend entry each; past it, one entry per model
MAX_CURVES = 8  # configurations drawn in a training-curves figure: the best ranked
MAX_SEEDS = 5  # seeds drawn per configuration there: the lowest


def metric_vs_params(board: Board, out: Path) -> Figure | None:
    """Our mean test metric (± 1 sample std over seeds, clipped to the metric's range) against parameter count,
    with published points where the paper gives a count. Past MAX_LABELLED configurations, colour and marker tell
    the models apart (one legend entry each) instead of the configurations."""
    rows = board.rows[board.rows["params"].notna() & board.rows["mean"].notna()]
    refs = [(r, parse_params(r.params)) for r in board.references if r.split == "test"]
    refs = [(r, p) for r, p in refs if math.isfinite(p)]
    if rows.empty and not refs:
        return None
    _theme()
    disp = display(board.metric)
    low, high = RANGES.get(board.metric or "", (-math.inf, math.inf))
    fig, ax = plt.subplots(figsize=(10, 4.4))
    each = len(rows) <= MAX_LABELLED
    series = rows["label"] if each else rows["model"]
    styles = board_styles(board, list(series)) if each else _styles(sorted(set(series)))
    colors = _palette(sorted(set(rows["model"]) | {str(r.model) for r, _ in refs}))
    # Configurations of one parameter count (e.g. two S4D inits) would hide each other: spread them apart a little.
    rank = rows.groupby("params").cumcount()
    count = rows.groupby("params")["params"].transform("size")
    x = rows["params"] * 2 ** (DODGE * (rank - (count - 1) / 2))
    errors = np.array([clipped_error(m, s, low, high) for m, s in zip(rows["mean"], rows["std"], strict=True)])
    for name in sorted(set(series)):
        mine = (series == name).to_numpy()
        n = rows.loc[mine, "n"]
        label = f"{name} (n={n.iloc[0]})" if each else f"{name} ({mine.sum()} configurations)"
        ax.errorbar(x[mine], rows.loc[mine, "mean"], yerr=errors[mine].T if len(errors) else None, linestyle="",
                    marker=styles[name]["marker"], capsize=4 if each else 0, markersize=7 if each else 4,
                    color=styles[name]["color"], alpha=1.0 if each else 0.6, label=label)
    for ref, p in refs:
        ax.scatter(p, ref.value, marker="D", facecolors="none", edgecolors=colors[str(ref.model)], s=60,
                   label=f"published: {ref.label}")
    ax.set_xscale("log")
    count_axis(ax.xaxis)
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"test {disp.name}")
    ax.set_title(_wrap(board.title, 70), fontsize=10)
    bound = "" if not math.isfinite(high) else f", clipped to [{low:g}, {high:g}]"
    ax.legend(fontsize=7, title=f"error bars: ± 1 sample std over seeds{bound}", title_fontsize=7,
              loc="upper left", bbox_to_anchor=(1.02, 1.0))
    caption = (f"{board.title}: mean test {disp.name} over seeds against parameters"
               + ("" if each else f", one point per configuration ({len(rows)}), colour and marker per model")
               + f". Error bars: ± 1 sample standard deviation over seeds (none for n = 1){bound}. Configurations "
               "with the same parameter count are spread slightly along x. Hollow diamonds: published numbers that "
               "give a parameter count.")
    return Figure(f"{board.title}: test metric against parameters", _save(fig, out / f"params_{slug(board.title)}.png"),
                  caption)


def count_labels(ticks: list[float]) -> list[str]:
    """11400 -> 11.4K, as in the tables, with as many digits as it takes for neighbouring ticks to differ."""
    for digits in range(3, 9):
        labels = [fmt_count(t, digits) for t in ticks]
        if len(set(labels)) == len(labels):
            return labels
    return labels


def log_axis(axis: Axis, formatter: Formatter) -> None:
    """Labelled ticks of a logarithmic axis that never crowd and never leave it bare: powers of ten where the data
    spans a decade or more (with 2x and 5x under three decades), else a few evenly spaced values (11.4K, 11.6K,
    11.8K; 0.4, 0.6, 0.8), which a log locator would not give between two of its decades."""
    low, high = axis.get_view_interval()
    if low <= 0 or high / low >= 10:
        axis.set_major_locator(LogLocator(base=10, subs=(1.0,) if low <= 0 or high / low >= 1000 else (1.0, 2.0, 5.0)))
    else:
        axis.set_major_locator(FixedLocator(MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high)))
    axis.set_minor_formatter(NullFormatter())
    axis.set_major_formatter(formatter)


def count_axis(axis: Axis) -> None:
    """A logarithmic count axis whose ticks read as the tables do (1.37M, 362K)."""
    log_axis(axis, CountFormatter())


class CountFormatter(Formatter):
    """Tick labels as counts (`count_labels`), decided for all ticks together so that none repeats."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return fmt_count(x)

    def format_ticks(self, values: list[float]) -> list[str]:
        return count_labels(list(values))


SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


def pow2_axis(axis: Axis) -> None:
    """Powers of two written 2¹⁰ (plain text: mathtext is off), at most about eight of them."""
    axis.set_major_locator(LogLocator(base=2, numticks=8))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"2{str(round(math.log2(v))).translate(SUPERSCRIPT)}"
                                           if v > 0 else ""))


def curve_runs(board: Board, runs: pd.DataFrame, labels: pd.Series) -> tuple[pd.DataFrame, str]:
    """The runs a training-curves figure draws: those with a history, of the MAX_CURVES best-ranked configurations,
    at most MAX_SEEDS seeds each (the lowest); and what the caption says about the rest, if anything is left out."""
    runs = runs[runs["history"].map(len) > 0]
    drawn = set(labels[runs.index])
    ranked = [c for c in board.rows["label"] if c in drawn] if len(board.rows) else []
    ranked += sorted(drawn - set(ranked))  # with a history but no complete run: last
    shown = ranked[:MAX_CURVES]
    runs = runs[labels[runs.index].isin(shown)]
    kept = runs.groupby(labels[runs.index], group_keys=False).apply(lambda g: g.nsmallest(MAX_SEEDS, "seed"))
    left = []
    if len(ranked) > len(shown):
        left.append(f"the {len(shown)} best-ranked of {len(ranked)} configurations")
    if len(kept) < len(runs):
        left.append(f"at most {MAX_SEEDS} seeds of each (the lowest)")
    return kept, (f" Shown: {' and '.join(left)}." if left else "")


def legend_label(config: str, runs: pd.DataFrame) -> str:
    """A configuration's legend entry; one whose runs did not all complete says how far they got."""
    unfinished = runs[runs["status"] != "complete"]
    if unfinished.empty:
        return config
    if len(runs) > 1:
        return f"{config} ({len(unfinished)} of {len(runs)} runs not complete)"
    run = unfinished.iloc[0]
    return f"{config} ({run['status']} after epoch {run['history'][-1].get('epoch', len(run['history']))}, not ranked)"


def training_curves(board: Board, runs: pd.DataFrame, out: Path) -> Figure | None:
    """Train loss and validation metric per epoch, one line per run: colour and marker per configuration, line style
    per seed, a marker on every epoch (so a one-epoch run is a visible point). A large board draws its best-ranked
    configurations only (`curve_runs`)."""
    labels = runs["label"] if "label" in runs else run_labels(runs)
    runs, shown = curve_runs(board, runs, labels)
    if runs.empty:
        return None
    _theme()
    disp = display(board.metric)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.4))
    configs = sorted(set(labels[runs.index]))
    styles = board_styles(board, configs)
    seeds = sorted(set(runs["seed"]))
    dash = {s: LINESTYLES[i % len(LINESTYLES)] for i, s in enumerate(seeds)}
    # Equal values (e.g. the same validation accuracy) would stack exactly: each configuration is shifted a little.
    shift = {c: 0.12 * (i - (len(configs) - 1) / 2) / max(len(configs) - 1, 1) for i, c in enumerate(configs)}
    for i, run in runs.sort_values(["model", "seed"]).iterrows():
        hist = pd.DataFrame(run["history"])
        if "epoch" not in hist:
            hist["epoch"] = np.arange(1, len(hist) + 1)
        style = styles[labels[i]]
        for ax, column, scale in ((axes[0], "train_loss", 1.0), (axes[1], "val", disp.scale)):
            if column in hist:
                ax.plot(hist["epoch"] + shift[labels[i]], hist[column] * scale, color=style["color"],
                        marker=style["marker"], markevery=max(1, len(hist) // 25), linestyle=dash[run["seed"]],
                        markersize=5, alpha=0.85)
    axes[0].set_ylabel("train loss")
    axes[1].set_ylabel(f"val {disp.name}")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = [Line2D([], [], color=styles[c]["color"], marker=styles[c]["marker"], linestyle="-") for c in configs]
    handles += [Line2D([], [], color="0.3", linestyle=dash[s]) for s in seeds]
    names = [legend_label(c, runs[labels[runs.index] == c]) for c in configs]
    axes[1].legend(handles, names + [f"seed {s}" for s in seeds], fontsize=7, loc="upper left",
                   bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(_wrap(f"training curves: {board.title}", 110))
    caption = (f"{board.title}: train loss and validation {disp.name} per epoch, one line per run (not a mean): "
               "colour and marker = configuration, line style = seed; a marker at each epoch (at every k-th epoch "
               "when a run has more than 25); configurations are shifted by up to ±0.06 epoch so that equal values "
               "stay apart. A run that did not complete is drawn as far as it got, and the legend says so (such "
               f"a run is never ranked).{shown}")
    return Figure(f"{board.title}: training curves", _save(fig, out / f"curves_{slug(board.title)}.png"), caption)
