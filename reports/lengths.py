"""Length generalisation: each leaderboard row's accuracy on test-only ListOps bins longer than its training data
(`python run.py job=lengths`, harness/evaluate.py), as a column per bin and a plot of the metric against length.

A cell is the mean ± std over the row's seeds of the evaluations of its complete runs; a model that could not run a
bin says so instead of a number: "OOM" (out of memory), "n/a: why" (not applicable, e.g. learned positions end at
the training length), "failed". Each model runs at its natural extension (harness/evaluate.py says which).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from reports.leaderboard import Board, display, fmt_mean_std  # noqa: E402
from reports.plots import Figure, _save, _styles, _wrap, slug  # noqa: E402
from reports.stats import summarize  # noqa: E402

EVAL_COLUMNS = ["run_id", "train_run_id", "model", "bin", "min_length", "max_length", "status", "metric", "test",
                "error"]
EXTENSIONS = ("Each model at its natural extension: S4 and S4D kernels computed to the new length (S4's C-tilde "
              "re-attuned by doubling, as its published kernel does), SGConv its trained kernel taps and zeros beyond "
              "(as published), MultiresNet unchanged, sinusoidal positions (Transformer, WavSpA) computed further, "
              "learned positions not applicable; WavSpA pads to the bin's length.")


def load_evals(evaluations: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """The evaluation records (kind eval) of length bins, one row each."""
    rows = []
    for record in evaluations:
        info = record.get("eval") if isinstance(record.get("eval"), dict) else {}
        if not info.get("bin"):
            continue
        metrics = record.get("metrics") if isinstance(record.get("metrics"), dict) else {}
        test = metrics.get("test")
        rows.append({"run_id": record.get("run_id"), "train_run_id": record.get("train_run_id"),
                     "model": record.get("model"), "bin": info["bin"], "min_length": info.get("min_length"),
                     "max_length": info.get("max_length"), "status": record.get("status"),
                     "metric": metrics.get("metric"),
                     "test": float(test) if isinstance(test, (int, float)) else math.nan, "error": record.get("error")})
    return pd.DataFrame(rows, columns=EVAL_COLUMNS)


def board_evals(board: Board, evals: pd.DataFrame) -> pd.DataFrame:
    """The evaluations of the board's complete runs, with each one's row (config_key)."""
    runs = board.runs[board.runs["status"] == "complete"][["run_id", "config_key"]]
    return evals.merge(runs, left_on="train_run_id", right_on="run_id", suffixes=("", "_train"))


def bins(evals: pd.DataFrame) -> list[tuple[str, float, float]]:
    """(label, min_length, max_length) of each bin, shortest first."""
    found = evals.drop_duplicates("bin")[["bin", "min_length", "max_length"]]
    return sorted(((str(b), float(lo), float(hi)) for b, lo, hi in found.itertuples(index=False)),
                  key=lambda b: (b[1], b[2]))


def cell(evals: pd.DataFrame, scale: float, digits: int) -> tuple[str, float]:
    """The text of one row's bin and its mean (NaN when no number): mean ± std over seeds, or why there is none."""
    done = evals[evals["status"] == "complete"]
    if len(done):
        s = summarize(done["test"] * scale)
        missing = evals[evals["status"] != "complete"]
        extra = "" if missing.empty else f" ({', '.join(sorted(set(missing['status'])))} for {len(missing)} seed(s))"
        return fmt_mean_std(s.mean, s.std, s.n, digits) + extra, s.mean
    statuses = set(evals["status"])
    if "oom" in statuses:
        return "OOM", math.nan
    if "not_applicable" in statuses:
        reason = str(evals[evals["status"] == "not_applicable"]["error"].iloc[0] or "")
        return "n/a" + (f": {reason}" if reason else ""), math.nan
    if statuses:
        return ", ".join(sorted(statuses)), math.nan
    return "—", math.nan


def grid(board: Board, evals: pd.DataFrame) -> tuple[list[tuple[str, float, float]], list[list[tuple[str, float]]]]:
    """The board's bins and, per ranked row, each bin's cell."""
    mine = board_evals(board, evals)
    found = bins(mine)
    disp = display(board.metric)
    cells = [[cell(mine[(mine["config_key"] == row["config_key"]) & (mine["bin"] == label)], disp.scale,
                   disp.digits) for label, _, _ in found] for _, row in board.rows.iterrows()]
    return found, cells


def add_columns(board: Board, evals: pd.DataFrame) -> None:
    """A column per bin at the end of the board's table (published rows get none) and a note on the extensions."""
    found, cells = grid(board, evals)
    if not found:
        return
    from reports.render import Note

    disp = display(board.metric)
    pad = [""] * (len(board.table) - len(board.rows))
    for j, (label, _, _) in enumerate(found):
        board.table[f"{label} test {disp.name}"] = [row[j][0] for row in cells] + pad
    board.notes.append(Note(f"Length bins ({', '.join(b for b, _, _ in found)} tokens): test-only ListOps of the "
                            f"training set's generator rules, their own seed, no expression cut. {EXTENSIONS}"))


def training_range(board: Board) -> tuple[float, float] | None:
    low, high = board.task_config.get("task.min_length"), board.task_config.get("task.max_length")
    return (float(low), float(high)) if isinstance(low, (int, float)) and isinstance(high, (int, float)) else None


def figure(board: Board, evals: pd.DataFrame, out: Path) -> Figure | None:
    """The mean test metric against length, one line per row: its test split at the training lengths, then each
    bin (horizontal bars span the bin); the training range shaded; × and + at the top where a model ran out of
    memory or could not run the bin."""
    found, cells = grid(board, evals)
    if not found:
        return None
    sns.set_theme(style="whitegrid")
    disp = display(board.metric)
    fig, ax = plt.subplots(figsize=(10, 4.6))
    trained = training_range(board)
    if trained:
        ax.axvspan(*trained, color="0.85", zorder=0)
    styles = _styles(sorted(set(board.rows["label"])))  # as the other figures of the board
    top = blended_transform_factory(ax.transData, ax.transAxes)
    for label, low, high in found:  # the bins' edges, and their names above the plot
        for edge in (low, high):
            ax.axvline(edge, color="0.6", linewidth=0.8, linestyle=":", zorder=1)
        ax.text(math.sqrt(low * high), 1.01, label, transform=top, ha="center", va="bottom", fontsize=8)
    marks: dict[str, str] = {}
    for (_, row), row_cells in zip(board.rows.iterrows(), cells, strict=True):
        style = styles[row["label"]]
        xs = [math.sqrt(trained[0] * trained[1])] if trained else []
        ys = [row["mean"]] if trained else []
        for (_, low, high), (text, mean) in zip(found, row_cells, strict=True):
            if math.isfinite(mean):
                xs.append(math.sqrt(low * high))
                ys.append(mean)
            elif text.startswith(("OOM", "n/a")):
                marker = "x" if text == "OOM" else "+"
                marks[marker] = "out of memory" if marker == "x" else "not applicable"
                ax.scatter([math.sqrt(low * high)], [0.93], marker=marker, s=80, linewidths=2, color=style["color"],
                           transform=top, clip_on=False, zorder=5)
        ax.plot(xs, ys, color=style["color"], marker=style["marker"], linestyle=style["linestyle"], markersize=6,
                label=row["label"])
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("expression length (tokens)")
    ax.set_ylabel(f"mean test {disp.name}")
    handles, labels = ax.get_legend_handles_labels()
    if trained:
        handles.append(plt.Rectangle((0, 0), 1, 1, color="0.85"))
        labels.append(f"training lengths ({trained[0]:g}-{trained[1]:g})")
    for marker, meaning in marks.items():
        handles.append(Line2D([], [], marker=marker, color="k", linestyle="", markersize=8))
        labels.append(meaning)
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(_wrap(f"length generalisation: {board.title}", 90), fontsize=11)
    caption = (f"{board.title}: mean test {disp.name} over seeds against expression length, one line per row: the "
               "first point is the test split at the training lengths (shaded), the others the length bins (named "
               "above, edges dotted), each at its geometric middle. × / + near the top: out of memory / not "
               f"applicable at that bin. {EXTENSIONS}")
    return Figure(f"{board.title}: length generalisation", _save(fig, out / f"lengths_{slug(board.title)}.png"),
                  caption)

