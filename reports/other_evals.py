"""Complete runs evaluated again on other data (`python run.py job=eval eval.runs=[RUN] ...` with another task
setting, no length bins): a fresh draw of a generated task (`task.seed=7 task.n_test=10000`), a release read from
files (`task.root=...`), or the run's own set on another machine. One table per board, each evaluation beside the
run's own test value, so that a reader can see how much of a Δ against a paper is the test split's draw.

A generated set is named by its seed and sha256, as the board's data note names the runs' own set; a binomial
standard error, sqrt(p (1 - p) / n) for n test examples, says how far a split of that size moves an accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from reports.leaderboard import Board, display
from reports.load import _section, digest_text, generated_set
from reports.references import Reference
from reports.render import Note

COLUMNS = ["run_id", "train_run_id", "status", "metric", "test", "split", "examples", "data", "task_config"]
SE_METRICS = ("accuracy",)  # metrics that are a fraction of examples right
DRAW_KEYS = ("name", "root", "seed", "n_train", "n_val", "n_test")  # what says which data, not how it is read


def describe(data: dict[str, Any]) -> str:
    """What an evaluation ran on, in words: "generated, seed 7, sha256 163c5332f5b3" or "files at ROOT, sha256 ..."."""
    drawn = generated_set(data)
    if drawn is not None:
        return f"generated, {drawn}"
    return f"files at {data.get('root') or data.get('dir') or 'files'}" + digest_text(data)


def load(evaluations: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """The evaluation records (kind eval) without a length bin, one row each."""
    rows = []
    for record in evaluations:
        info = _section(record, "eval")
        if info.get("bin"):
            continue  # length bins: reports/lengths.py
        metrics, data = _section(record, "metrics"), _section(record, "data")
        split = info.get("split") or "test"
        test = metrics.get("test")
        examples = _section(data, "sizes").get(split)
        rows.append({"run_id": record.get("run_id"), "train_run_id": record.get("train_run_id"),
                     "status": record.get("status"), "metric": metrics.get("metric"),
                     "test": float(test) if isinstance(test, (int, float)) else math.nan, "split": split,
                     "examples": examples if isinstance(examples, int) else None, "data": describe(data),
                     "task_config": _section(_section(record, "config"), "task")})
    return pd.DataFrame(rows, columns=COLUMNS)


def other_settings(evaluated: dict[str, Any], trained: dict[str, Any]) -> str:
    """The task settings an evaluation changed beyond which data it read ("l_max=4096"), or "—"."""
    changed = [f"{k}={evaluated[k]}" for k in sorted(evaluated) if k not in DRAW_KEYS
               and evaluated[k] != trained.get(k)]
    return ", ".join(changed) or "—"


def table(board: Board, evals: pd.DataFrame) -> tuple[pd.DataFrame, list[Note]] | None:
    """The evaluations of the board's complete runs as display strings, with the note that reads them; None if the
    board has none."""
    done = board.runs[board.runs["status"] == "complete"]
    mine = evals.merge(done[["run_id", "model", "seed", "test", "data_set", "config"]], left_on="train_run_id",
                       right_on="run_id", suffixes=("", "_run"))
    if mine.empty:
        return None
    disp = display(board.metric)
    d = disp.digits

    def value(v: float) -> str:
        return "—" if not math.isfinite(v) else f"{v * disp.scale:.{d}f}"

    # The published number of each run's row, where the row is at the paper's settings (the board's Δ's number),
    # numbered as the board's footnotes.
    key_of = dict(zip(board.runs["run_id"], board.runs["config_key"], strict=True))
    ref_of = {key: ref for key, ref in zip(board.rows["config_key"], board.rows["ref"], strict=True)
              if isinstance(ref, Reference)}
    number = {id(ref): i + 1 for i, ref in enumerate(board.cited)}
    out = []
    for r in mine.sort_values(["model", "train_run_id", "run_id"]).to_dict("records"):
        ok = r["status"] == "complete" and math.isfinite(r["test"])
        se = "—"
        if ok and r["metric"] in SE_METRICS and r["examples"]:
            se = value(math.sqrt(r["test"] * (1 - r["test"]) / r["examples"]))
        own = isinstance(r["data_set"], str) and r["data"] == f"generated, {r['data_set']}"
        settings = other_settings(r["task_config"], _section(r["config"], "task"))
        ref = ref_of.get(key_of.get(r["train_run_id"]))
        # Δ only where the data was read as in training: another l_max, say, is another benchmark.
        delta = "—"
        if ok and ref is not None and settings == "—":
            delta = f"{r['test'] * disp.scale - ref.value:+.{d}f}" + ("" if ref.verified else " (unverified)")
        out.append({"model": r["model"], "run": r["train_run_id"], "seed": str(r["seed"]),
                    "evaluated on": r["data"] + (" (the run's own set)" if own else ""),
                    "other task settings": settings, "split": r["split"],
                    "examples": "—" if not r["examples"] else f"{r['examples']:,}",
                    f"{r['split']} {disp.name}": value(r["test"]) if ok else str(r["status"]), "SE": se,
                    f"run's own test {disp.name}": value(r["test_run"]),
                    "difference": value(r["test"] - r["test_run"]) if ok else "—",
                    "published": f"{ref.value:.{d}f} [{number[id(ref)]}]" if ref is not None else "—",
                    "Δ vs published": delta})
    note = Note(f"Evaluated again ({board.title}): each complete run's weights (its best or last state, as its own "
                "test used) on other data: `python run.py job=redraw eval.runs=[RUN] eval.seed=7 eval.n_test=10000` "
                "(a fresh draw of its own generated set) or `job=eval` with a task config (a release: task.root=...). "
                "Other task settings: how the evaluation read its data where that differs from the run's training "
                "(e.g. l_max), apart from which data. SE: the binomial standard error of an accuracy on that many "
                "examples. difference: this evaluation less the run's own test value. Δ vs published: this "
                "evaluation less the published number of the run's row, for a row at the paper's settings whose "
                "evaluation read the data as its training did; the published number comes from another draw "
                "still (the authors' copy), so it carries that draw's error too. The board ranks the runs by "
                "their own test split.")
    return pd.DataFrame(out), [note]
