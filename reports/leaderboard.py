"""Leaderboards: one per task (and task setting), a row per model configuration, published numbers beside.

Numbers are shown in the papers' units (accuracy in percent) so our rows and the published rows read
alike; `Board.rows` keeps them as floats for tests and further use, `Board.table` holds the strings.

A row's published number is the one of its exact setting (references.py), or none; Δ to it is given only when
the row is at the paper's settings (paper.py), since a reduced run says nothing about the published number. A
reduced row shows the paper's number (of its setting, or of the preset it is a reduced version of) in a column of
its own, marked as not comparable, without Δ: how far it is from the paper is there to read, not to rank.
Runs that did not complete (failed, oom, cancelled, preempted, diverged) are listed apart, each by its record's
state, and never ranked.

Throughput is compared only between runs of one machine (`load.machine`: the GPU, or a CPU's host and threads):
a column per machine, each averaging only that machine's runs.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import pandas as pd

from harness.progress import plural
from reports import paper
from reports.load import TASK_INPUT_KEYS, UNRECORDED, sweep_group
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
    references: list[Reference] = field(default_factory=list)  # of its setting; numbered [1], [2], ... in the table
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)  # the board's records, any status, with their `label`
    incomplete: pd.DataFrame = field(default_factory=pd.DataFrame)  # not complete: listed apart, never ranked
    notes: list[Note] = field(default_factory=list)
    cited: list[Reference] = field(default_factory=list)  # every number the table cites: `references`, then those
    # of paper settings that reduced rows are not comparable with


_ABSENT = object()


def same_value(a: Any, b: Any) -> bool:
    """Equal as written in a config: 1 and 1.0, 1 and true differ; NaN equals NaN; absence equals only itself."""
    if a is b:
        return True
    if type(a) is type(b) and (a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))):
        return True
    return a is not _ABSENT and b is not _ABSENT and json.dumps(a, default=str) == json.dumps(b, default=str)


def varied_keys(configs: list[dict[str, Any]]) -> list[str]:
    """Flat config keys whose value (absence counts as a value) is not the same in every config."""
    if not configs:
        return []
    first = configs[0]
    return [k for k in sorted(set().union(*configs))
            if any(not same_value(c.get(k, _ABSENT), first.get(k, _ABSENT)) for c in configs)]


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


def fmt_count(value: float, digits: int = 3) -> str:
    """1365514 -> 1.37M, 361994 -> 362K (`digits` significant digits); throughput alike."""
    if value is None or not math.isfinite(value):
        return "—"
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= size:
            return f"{value / size:.{digits}g}{suffix}"
    return f"{value:.{digits}g}"


def fmt_bytes(value: float) -> str:
    """Binary units, as memory is allocated: 10485760 -> 10.0 MiB."""
    if value is None or not math.isfinite(value):
        return "—"
    for size, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(value) >= size:
            return f"{value / size:.1f} {suffix}"
    return f"{value:.0f} B"


# A record's states other than complete, by the names `python -m sweeps status` gives them and in its order
# (diverged, which it does not count, last); a state not named here is listed after them by its own name.
NOT_COMPLETE = ("failed", "oom", "preempted", "cancelled", "diverged")
NO_PUBLISHED = "no published number for this setting"
NOT_COMPARABLE = "paper's number (not comparable)"


def status_text(statuses: list[str], missing_seeds: list[Any]) -> str:
    """'3 complete', or '2 complete, failed (1), cancelled (1), no record for seed 2'."""
    counts = Counter(str(s) for s in statuses)
    parts = [f"{counts.pop('complete', 0)} complete"]
    parts += [f"{s} ({counts[s]})" for s in [*NOT_COMPLETE, *sorted(set(counts) - set(NOT_COMPLETE))] if counts[s]]
    if missing_seeds:
        parts.append("no record for seed " + ", ".join(str(s) for s in missing_seeds))
    return ", ".join(parts)


def expected_seeds(runs: pd.DataFrame) -> dict[str, set[Any]]:
    """Sweep group -> the seeds its runs have: what a configuration of that sweep was run for, where the sweep
    crossed its configurations with seeds.

    A sweep crossed them where a configuration ran two seeds or more. Where every configuration ran one seed
    (paper presets, each with its published seed, run under one sweep name; two of them may share a seed, as S4
    and S4D share 2222), no seed was asked for the others, and the group expects none."""
    seeds: dict[str, dict[Any, set[Any]]] = {}  # group -> configuration -> its seeds
    for sweep, sweep_id, key, seed in zip(runs["sweep"], runs["sweep_id"], runs["config_key"], runs["seed"],
                                          strict=True):
        group = sweep_group(sweep, sweep_id)
        if group is not None:
            seeds.setdefault(group, {}).setdefault(key, set()).add(seed)
    out: dict[str, set[Any]] = {}
    for group, by_config in seeds.items():
        if any(len(of_config) > 1 for of_config in by_config.values()):
            out[group] = set().union(*by_config.values())
    return out


Run = dict[str, Any]  # one record's row of `load` (plain dicts here: a board of 10,000 rows stays fast)


def _missing(runs: list[Run], expected: dict[str, set[Any]]) -> list[Any]:
    """The seeds the sweeps of a configuration's runs asked for and no record of it has (none for a lone run)."""
    asked: set[Any] = set()
    for run in runs:
        asked |= expected.get(sweep_group(run["sweep"], run["sweep_id"]) or "", set())
    return sorted(asked - {run["seed"] for run in runs})


def _finite(values: list[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def _row(label: str, runs: list[Run], scale: float, expected: dict[str, set[Any]]) -> dict[str, Any]:
    """The numbers of one configuration's row (store units times `scale` for the metric)."""
    done = [r for r in runs if r["status"] == "complete"]
    test = summarize([r["test"] * scale for r in done])
    val = summarize([r["val"] * scale for r in done])
    params = _finite([r["params"] for r in runs])
    speeds: dict[str, list[float]] = {}
    for r in done:
        for v in _finite([r["train_tokens_per_s"]]):
            speeds.setdefault(r["machine"], []).append(v)
    return {
        "label": label, "model": str(runs[0]["model"]), "config_key": runs[0]["config_key"],
        "n": test.n, "mean": test.mean, "std": test.std, "ci95": test.ci95,
        "val_n": val.n, "val_mean": val.mean, "val_std": val.std,
        "params": statistics.median(params) if params else math.nan,
        "tokens_per_s_by_machine": {m: sum(v) / len(v) for m, v in speeds.items()},
        "n_runs": len(runs), "status": status_text([r["status"] for r in runs], _missing(runs, expected)),
        "test_by_seed": {r["seed"]: r["test"] * scale for r in done},
    }


def run_labels(runs: pd.DataFrame) -> pd.Series:
    """Each run's row label: the model, plus the config keys that tell its configurations apart."""
    labels = pd.Series(index=runs.index, dtype=object)
    for model, of_model in runs.groupby("model", sort=True, dropna=False):
        keys = varied_keys(list(of_model.drop_duplicates("config_key")["flat_config"]))
        labels[of_model.index] = [str(model) if not keys else f"{model} ({describe(config, keys)})"
                                  for config in of_model["flat_config"]]
    return labels


def _compared(row: dict[str, Any], runs: list[Run], task: str, catalog: Catalog, refs: list[Reference],
              metric: str | None) -> dict[str, Any]:
    """The row's settings against the paper's; at paper settings its published number (of its exact setting, among
    the board's `refs`) and Δ; otherwise the paper's number it is not comparable with (`other`), if any."""
    config = runs[0]["flat_config"]
    ref = published_for(refs, task, row["model"], config)
    check = paper.check(task, row["model"], config, [r["data_sizes"] for r in runs], ref.preset if ref else None,
                        catalog.datasets.get(task, {}))
    other = None
    if not check.at_paper:
        other = ref or _preset_number(task, row["model"], check, catalog, metric)
        ref = None
    return {"ref": ref, "other_ref": other, "settings": check, "ref_label": ref.label if ref else None,
            "ref_value": ref.value if ref else math.nan, "ref_verified": ref.verified if ref else None,
            "other_value": other.value if other else math.nan,
            "delta": row["mean"] - ref.value if ref is not None else math.nan}


def _preset_number(task: str, model: str, check: paper.SettingCheck, catalog: Catalog,
                   metric: str | None) -> Reference | None:
    """The published number of the paper preset a reduced configuration was compared with (its setting's)."""
    if check.preset is None:
        return None
    ref = published_for(catalog.refs, task, model, paper.preset_config(check.preset))
    return ref if ref is not None and (metric is None or ref.metric == metric) else None


def _reason(run: pd.Series) -> str:
    """The last line of a run's error (a traceback ends with the exception), shortened."""
    lines = [line.strip() for line in str(run["error"] or "").splitlines() if line.strip()]
    text = lines[-1] if lines else "no error recorded"
    return text if len(text) <= 140 else text[:137] + "..."


def not_complete(runs: pd.DataFrame, labels: pd.Series) -> pd.DataFrame:
    """One line per run that did not complete (failed, oom, preempted, cancelled, diverged), by its record's state:
    never ranked."""
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


def data_notes(done: pd.DataFrame) -> list[Note]:
    """Where the ranked runs' data were generated here: which draw, and why a Δ against a paper carries it."""
    sets = Counter(d for d in done["data_set"] if isinstance(d, str))
    if not sets:
        return []
    if len(sets) == 1:
        drawn = next(iter(sets))
    else:
        drawn = "; ".join(f"{d} ({plural(n, 'run')})" for d, n in sorted(sets.items()))
    return [Note(f"Data: our runs were trained and tested on a set generated here by the task's generator ({drawn}). "
                 "A published number comes from the authors' own copy of the data (for a generated task, another "
                 "draw of the same generator, e.g. the LRA release), so a Δ also carries the difference between "
                 "the two test splits.")]


def board(task: str, title: str, runs: pd.DataFrame, catalog: Catalog) -> Board:
    """The leaderboard of one task setting from its training runs (any status): configurations with a complete
    run are ranked, runs that did not complete are listed apart."""
    done = runs[runs["status"] == "complete"]
    named = done if done["metric"].notna().any() else runs  # no run complete yet: the metric the others report
    metric = named["metric"].mode().iloc[0] if named["metric"].notna().any() else None
    hib_values = done["higher_is_better"].dropna()
    higher = bool(hib_values.mode().iloc[0]) if len(hib_values) else metric != "bpd"
    disp = display(metric)
    task_config = {k: v for k, v in runs["flat_config"].iloc[0].items() if k.startswith("task.")
                   and k.removeprefix("task.") not in TASK_INPUT_KEYS}
    expected = expected_seeds(runs)
    labels = run_labels(runs)
    published = [r for r in for_board(catalog.refs, task, task_config) if metric is None or r.metric == metric]

    by_config: dict[str, list[Run]] = {}
    for run, label in zip(runs.to_dict("records"), labels, strict=True):
        by_config.setdefault(run["config_key"], []).append(run | {"label": label})
    rows = []
    for key in sorted(by_config):
        same = by_config[key]
        if any(r["status"] == "complete" for r in same):
            row = _row(same[0]["label"], same, disp.scale, expected)
            rows.append(row | _compared(row, same, task, catalog, published, metric))
    frame = pd.DataFrame(rows, columns=ROW_COLUMNS)
    if len(frame):
        frame["_key"] = frame["mean"] * (-1 if higher else 1)
        frame = frame.sort_values(["_key", "label"]).drop(columns="_key").reset_index(drop=True)
    cited = published + list({id(r): r for r in frame["other_ref"] if isinstance(r, Reference)
                              and r not in published}.values())
    machines = sorted({m for by in frame["tokens_per_s_by_machine"] for m in by})
    notes = footnotes(cited, len(published))
    notes += [Note(f"{r['label']}: {r['settings'].describe()}") for _, r in frame.iterrows()
              if not r["settings"].at_paper]
    notes += throughput_notes(machines)
    notes += data_notes(done)
    notes += version_notes(runs, labels)
    pairs, pair_note = comparisons(frame)
    notes += pair_note
    table = format_table(frame, published, cited, machines, disp, higher)
    return Board(task, title, task_config, metric, higher, frame, table, pairs, published, runs.assign(label=labels),
                 not_complete(runs, labels), notes, cited)


ROW_COLUMNS = ["label", "model", "config_key", "n", "mean", "std", "ci95", "val_n", "val_mean", "val_std", "params",
               "tokens_per_s_by_machine", "n_runs", "status", "test_by_seed", "ref", "other_ref", "settings",
               "ref_label", "ref_value", "ref_verified", "other_value", "delta"]


def machine_columns(machines: list[str]) -> dict[str, str]:
    """Machine -> its throughput column: one column when every run of the board ran on one machine, else one per
    machine, lettered (the notes say which is which)."""
    if len(machines) <= 1:
        return {m: "train tokens/s" for m in machines}
    return {m: f"train tokens/s, machine {_letter(i)}" for i, m in enumerate(machines)}


def _letter(i: int) -> str:
    return chr(ord("A") + i) if i < 26 else f"{chr(ord('A') + i // 26 - 1)}{chr(ord('A') + i % 26)}"


def throughput_notes(machines: list[str]) -> list[Note]:
    """Which machine each throughput column is, and what a CPU's rate depends on."""
    if not machines:
        return []
    if machines == [UNRECORDED]:
        text = ("train tokens/s: the records do not name the machine that measured them, so rates compare only if "
                "you know they came from one machine and thread count")
    elif len(machines) == 1:
        text = f"train tokens/s: every run measured on one machine ({machines[0]})"
    else:
        text = ("train tokens/s: one column per machine, each the mean over that machine's runs only (rates from "
                "different machines or thread counts are not compared): "
                + "; ".join(f"machine {_letter(i)} = {m}" for i, m in enumerate(machines)))
    if any(m.startswith("CPU ") for m in machines):
        text += (". On a CPU the rate also depends on what else ran on the host at the time (its load is not "
                 "recorded): compare CPU rates measured on an idle machine only")
    return [Note(text + ".")]


def format_table(frame: pd.DataFrame, refs: list[Reference], cited: list[Reference], machines: list[str],
                 disp: Display, higher: bool) -> pd.DataFrame:
    """Display strings: our rows, ranked, then the published rows of the board's setting (`refs`). `cited`: every
    number the table refers to, numbered as its footnotes."""
    arrow = "↑" if higher else "↓"
    metric_col, d = f"test {disp.name} {arrow}", disp.digits
    speed = machine_columns(machines)
    other_col = frame["other_ref"].map(lambda r: isinstance(r, Reference)).any() if len(frame) else False
    number = {id(ref): i + 1 for i, ref in enumerate(cited)}  # footnotes: see `footnotes`
    out = []
    for _, r in frame.iterrows():
        ref = r["ref"] if isinstance(r["ref"], Reference) else None  # pandas turns a missing one into NaN
        other = r["other_ref"] if isinstance(r["other_ref"], Reference) else None
        published = f"{fmt(ref.value, d)} [{number[id(ref)]}]" if ref else ("—" if other else NO_PUBLISHED)
        # A difference from a number nobody could read at its source is labelled as such, like the number.
        delta = "—" if not math.isfinite(r["delta"]) else f"{r['delta']:+.{d}f}" + (
            "" if ref is None or ref.verified else " (unverified)")
        cells = {
            "model": r["label"], "settings": r["settings"].label, "status": r["status"], "n": str(r["n"]),
            metric_col: fmt_mean_std(r["mean"], r["std"], r["n"], d),
            "95% CI": "—" if not math.isfinite(r["ci95"]) else f"[{fmt(r['mean'] - r['ci95'], d)}, "
                                                             f"{fmt(r['mean'] + r['ci95'], d)}]",
            f"val {disp.name}": fmt_mean_std(r["val_mean"], r["val_std"], r["val_n"], d),
            "params": fmt_count(r["params"]),
            **{col: fmt_count(r["tokens_per_s_by_machine"].get(m, math.nan)) for m, col in speed.items()},
            "published": published, "Δ vs published": delta,
        }
        if other_col:
            cells[NOT_COMPARABLE] = f"{fmt(other.value, d)} [{number[id(other)]}]" if other else ""
        out.append(cells)
    for ref in refs:
        value = fmt(ref.value, d) + ("" if ref.split == "test" else f" ({ref.split})")
        cells = {"model": f"published: {ref.label}", "settings": str(ref.preset or ""),
                 "status": "published" if ref.verified else "published, unverified", "n": "", metric_col: value,
                 "95% CI": "", f"val {disp.name}": "", "params": ref.params or "—", **dict.fromkeys(speed.values(), ""),
                 "published": f"[{number[id(ref)]}]", "Δ vs published": ""}
        if other_col:
            cells[NOT_COMPARABLE] = ""
        out.append(cells)
    return pd.DataFrame(out)


def footnotes(cited: list[Reference], n_board: int) -> list[Note]:
    """The sources of the numbers a board's table cites, numbered as in the table: first the published numbers of
    its setting (`n_board` of them), then those of paper settings its reduced rows are not comparable with."""
    return [Note(f"{ref.label}: {ref.cite()}" + ("" if ref.verified else "; unverified")
                 + (f". {ref.note}" if ref.note else "")
                 + ("" if i < n_board else ". Measured at the paper's settings: not comparable with the reduced rows "
                                           "that show it, so no Δ"), marker=f"[{i + 1}]")
            for i, ref in enumerate(cited)]


ALL_PAIRS_UP_TO = 20  # rows with two seeds or more; beyond, each row is tested against the next one in the ranking
PAIR_COLUMNS = ["A", "B", "shared seeds", "mean A - B", "t", "p", "verdict"]


def candidate_pairs(frame: pd.DataFrame) -> tuple[list[tuple[int, int]], bool]:
    """(pairs of row positions to test, whether every pair was taken). Only rows with two seeds or more can share
    two seeds, so a board of single-seed rows has no pair to look at (not n^2 of them); past ALL_PAIRS_UP_TO such
    rows, neighbours in the ranking only."""
    multi = [i for i, seeds in enumerate(frame["test_by_seed"]) if len(seeds) >= 2]
    if len(multi) <= ALL_PAIRS_UP_TO:
        return list(combinations(multi, 2)), True
    return list(zip(multi, multi[1:], strict=False)), False


def comparisons(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[Note]]:
    """Paired t-tests over shared seeds between rows of one board with >= 2 shared seeds, and a note when only
    neighbours in the ranking were compared."""
    pairs, every = candidate_pairs(frame)
    out = []
    for i, j in pairs:
        a, b = frame.iloc[i], frame.iloc[j]
        test = paired(a["test_by_seed"], b["test_by_seed"])
        if test.n < 2:
            continue
        out.append({"A": a["label"], "B": b["label"], "shared seeds": test.n,
                    "mean A - B": round(test.mean_diff, 10), "t": test.t, "p": test.p,
                    "verdict": "beyond noise (p < 0.05)" if test.significant
                    else ("undefined (identical differences)" if not math.isfinite(test.p) else "within noise")})
    note = [] if every else [Note(f"Paired t-tests: more than {ALL_PAIRS_UP_TO} rows have two seeds or more, so each "
                                  "is tested against the next one in the ranking only, not against every other row.")]
    return pd.DataFrame(out, columns=PAIR_COLUMNS), note


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
