"""Build every table and figure of a report from a results store into one output directory.

Output (under `out`):
  leaderboard.md   the main report: leaderboards, runs evaluated again on other data, paired tests, runs that did
                   not complete, ablations, benchmark tables, figure links
  report.tex       the same as one standalone LaTeX document (pdflatex; reports/latex.py)
  latex/<name>.tex each table alone, as a booktabs float to paste into a paper
  report.html      one self-contained page with the figures embedded
  summary.csv      one row per run (training runs and benchmark points), in the store's units
  figures/*.png    every figure
The report is rebuilt from scratch each time, so it always matches the store. It is written in a staging folder and
swapped in whole (reports/output.py): an error, a full disk or a stop signal leaves the previous report as it was;
the previous report's files (listed in `.seqbench-report.json`) are replaced, nothing else in `out` is touched, and
nothing is written through a symbolic link.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.results import Store
from reports import cost, html, latex, lengths, other_evals, plots, render, train_step
from reports.ablation import Ablation, ablations
from reports.bench import LEGEND, bench_settings, bench_tables
from reports.leaderboard import Board, boards
from reports.load import load
from reports.output import ReportFolder
from reports.references import load_references
from reports.render import Note

MAIN = "leaderboard.md"
INTRO = ("Metric: mean ± sample standard deviation over seeds; n counts the complete runs with a test value; 95% CI "
         "from Student's t with n-1 degrees of freedom. Accuracy in percent, memory in binary units (GiB). Settings: "
         "paper when the row's config and data sizes equal the paper preset its number cites (sweeps/experiment/), "
         "reduced when they differ, unconfirmed when its records do not state a data size (the notes say how). "
         "Published: for a row at paper settings, the number of its exact setting (task and model settings, e.g. S4D "
         "init, WavSpA transform, grayscale or RGB) from reports/references.yaml, or “no published number for this "
         "setting”; Δ = our mean − that number. A reduced or unconfirmed row shows the paper's number in a column of "
         "its own, “paper's number (not comparable)”, and has no Δ. Status: the runs of a row by their records' "
         "states; where a sweep crossed its rows with seeds, a seed it ran for the other rows and this row lacks is "
         "“no record”. Runs that did not complete (failed, oom, preempted, cancelled, diverged) are listed apart and "
         "never ranked. Train tokens/s: a column per machine when the runs were measured on several (the notes name "
         "them). Paired tests: two-sided paired t-test over the seeds two rows share; p < 0.05 is called beyond "
         "noise. Ablations: one table per sweep invocation (several of one name are told apart, unless pooled); a run "
         "outside any sweep is in none.")


@dataclass
class Section:
    title: str
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # (caption, display strings)
    notes: list[Note] = field(default_factory=list)
    figures: list[plots.Figure] = field(default_factory=list)
    lead: list[str] = field(default_factory=list)  # paragraphs before the tables


def comparison_strings(board: Board) -> pd.DataFrame:
    table = board.comparisons.copy()
    for col in ("mean A - B", "t", "p"):
        table[col] = table[col].map(lambda v: "—" if not math.isfinite(v) else f"{v:.4g}")
    table["shared seeds"] = table["shared seeds"].astype(str)
    return table


def board_section(board: Board, figdir: Path, evals: pd.DataFrame | None = None,
                  elsewhere: pd.DataFrame | None = None) -> Section:
    section = Section(f"Leaderboard: {board.title}")
    if len(board.rows):
        section.tables.append((f"{board.title}: our runs (ranked) and published numbers", board.table))
    else:
        section.lead.append("No run of this task setting completed: nothing to rank.")
    again = None if elsewhere is None else other_evals.table(board, elsewhere)
    if again is not None:
        section.tables.append((f"{board.title}: complete runs evaluated again on other data", again[0]))
    if not board.comparisons.empty:
        section.tables.append((f"{board.title}: paired t-tests over shared seeds", comparison_strings(board)))
    if not board.incomplete.empty:
        section.tables.append((f"{board.title}: runs that did not complete (not ranked)", board.incomplete))
    section.notes += board.notes + ([] if again is None else again[1])
    for figure in (plots.metric_vs_params(board, figdir), plots.training_curves(board, board.runs, figdir),
                   cost.figure(board, figdir), None if evals is None else lengths.figure(board, evals, figdir)):
        if figure is not None:
            section.figures.append(figure)
    return section


def sweep_names(tables: list[Ablation]) -> list[str]:
    """How each ablation's sweep is named in its title: by name, plus its invocation where the report has several of
    that name for the task (told apart), or how many it pools."""
    count = Counter((ab.sweep, ab.task) for ab in tables)
    names = []
    for ab in tables:
        name = f"sweep {ab.sweep}"
        if len(ab.sweep_ids) > 1:
            name += f" ({len(ab.sweep_ids)} invocations pooled)"
        elif count[(ab.sweep, ab.task)] > 1:
            name += f" (invocation {ab.sweep_ids[0]})" if ab.sweep_ids[0] else " (runs outside a sweep invocation)"
        names.append(name)
    return names


def sections(runs: pd.DataFrame, bench: pd.DataFrame, all_boards: list[Board], out: Path,
             pool: bool = False, evals: pd.DataFrame | None = None, steps: pd.DataFrame | None = None,
             elsewhere: pd.DataFrame | None = None) -> list[Section]:
    figdir = out / "figures"
    result = [board_section(b, figdir, evals, elsewhere) for b in all_boards]
    tables = ablations(runs, pool)
    for ab, name in zip(tables, sweep_names(tables), strict=True):
        result.append(Section(f"Ablation: {name}, {ab.task}",
                              [(f"{name}, {ab.task}: varied {', '.join(ab.keys)}", ab.table)]))
    if steps is not None and not steps.empty:
        result.append(Section("Training steps", [("whole optimizer steps of the paper presets, by device", steps)],
                              lead=[train_step.LEGEND]))
    if not bench.empty:  # the figures show our models; published code is in its own table
        result.append(Section("Scaling benchmark", bench_tables(bench), figures=plots.scaling(
            bench[bench["impl"] == "ours"], figdir), lead=[*bench_settings(bench), LEGEND]))
    if not result:
        result.append(Section("No records", notes=[Note("The store holds no readable records (of this sweep).")]))
    return result


def to_markdown(title: str, secs: list[Section], out: Path) -> str:
    esc = render.md_escape

    def block(text: str) -> str:  # text that starts a paragraph or a list item
        return render.md_escape(text, block=True)

    parts = [f"# {esc(title)}\n\n{block(INTRO)}\n"]
    for s in secs:
        parts.append(f"\n## {esc(s.title)}\n")
        parts += [f"\n{block(p)}\n" for p in s.lead]
        for caption, table in s.tables:
            parts.append(f"\n{block(caption)}:\n\n{render.markdown(table)}")
        if s.notes:
            parts.append("\n" + "".join(f"- {block(f'{n.marker} ' if n.marker else '')}{esc(n.text)}\n"
                                        if n.marker else f"- {block(n.text)}\n" for n in s.notes))
        for f in s.figures:
            parts.append(f"\n![{esc(f.title)}]({f.path.relative_to(out).as_posix()})\n\n{block(f.caption)}\n")
    return "".join(parts)


def to_latex(title: str, secs: list[Section], out: Path) -> tuple[str, dict[str, str]]:
    """The standalone document and each table alone (file name -> text)."""
    body, alone = [], {}
    for s in secs:
        body.append(latex.section(s.title))
        body += [latex.paragraph(p) for p in s.lead]
        for i, (caption, table) in enumerate(s.tables):
            body.append(latex.table(caption, table))
            alone[f"{plots.slug(s.title)}_{i}.tex"] = render.latex(table, caption, f"tab:{plots.slug(s.title)}_{i}")
        body.append(latex.notes(s.notes))
        body += [latex.figure(f.path, f.caption, out) for f in s.figures]
    return latex.document(title, INTRO, body), alone


def to_html(title: str, secs: list[Section]) -> str:
    parts = [("About", html.paragraph(INTRO, "note"))]
    for s in secs:
        body = "".join(html.paragraph(p) for p in s.lead)
        body += "".join(f"<h3>{html.html_escape(c)}</h3>{render.html_table(t)}" for c, t in s.tables)
        body += "".join(html.paragraph(f"{n.marker} {n.text}" if n.marker else n.text, "note") for n in s.notes)
        body += "".join(html.image(f.path, f.title, f.caption) for f in s.figures)
        parts.append((s.title, body))
    return html.page(title, parts)


SUMMARY_COLUMNS = ["kind", "run_id", "sweep", "sweep_id", "task", "model", "seed", "status", "board", "row",
                   "settings", "metric", "val", "test", "published", "delta_display", "published_not_comparable",
                   "params", "train_tokens_per_s", "machine", "peak_bytes", "wall_s", "model_version",
                   "task_version", "harness_version", "impl", "scope",
                   "pass", "dtype", "length", "batch_size", "time_ms", "tokens_per_s", "device"]


def summary(runs: pd.DataFrame, bench: pd.DataFrame, all_boards: list[Board]) -> pd.DataFrame:
    """One row per record: training runs with their board, row, settings and published number (display units for
    `published`, `delta_display` and `published_not_comparable`, store units elsewhere), then benchmark points.
    `published` is the number a row at paper settings is compared with; `published_not_comparable` the paper's
    number beside a reduced row."""
    placed: dict[str, dict[str, object]] = {}
    for b in all_boards:
        rows = {r["config_key"]: r for r in b.rows.to_dict("records")}
        for run_id, key in zip(b.runs["run_id"], b.runs["config_key"], strict=True):
            row = rows.get(key)
            placed[str(run_id)] = {
                "board": b.title, "row": None if row is None else row["label"],
                "settings": None if row is None else row["settings"].label,
                "published": None if row is None else row["ref_value"],
                "delta_display": None if row is None else row["delta"],
                "published_not_comparable": None if row is None else row["other_value"]}
    out = []
    train = ("run_id", "sweep", "sweep_id", "task", "model", "seed", "status", "metric", "val", "test", "params",
             "train_tokens_per_s", "machine", "peak_bytes", "wall_s")
    for r in runs[[*train, "versions"]].to_dict("records"):
        versions = r.pop("versions") or {}
        out.append({"kind": "train", **r, **placed.get(str(r["run_id"]), {}), "model_version": versions.get("model"),
                    "task_version": versions.get("task"), "harness_version": versions.get("harness")})
    points = ("run_id", "sweep", "model", "status", "impl", "scope", "pass", "dtype", "length", "batch_size", "time_ms",
              "tokens_per_s", "peak_bytes", "device")
    out += [{"kind": "bench", **r} for r in bench[list(points)].to_dict("records")]
    return pd.DataFrame(out, columns=SUMMARY_COLUMNS)


def _figures(secs: Iterable[Section]) -> list[Path]:
    return [f.path for s in secs for f in s.figures]


def build(store: str | Path, out: str | Path, sweep: str | None = None, pool: bool = False) -> Path:
    """Write the report of `store` (only records of `sweep` if given) under `out`; returns the Markdown file.
    The report is written aside and swapped in whole (reports/output.py): any error or stop leaves the previous one.
    `pool`: sweeps of one name are one ablation, not one per invocation (sweep_id)."""
    store, out = Path(store), Path(out)
    runs, bench = load(store, sweep)  # before touching `out`: a missing store leaves the last report as it was
    steps = train_step.frame(train_step.load(store, sweep))  # training steps: their own table, not the scaling's
    bench = bench[bench["pass"] != train_step.PASS]
    with ReportFolder(out) as folder:
        stage = folder.staging
        all_boards = boards(runs, load_references())
        evaluations = [r for r in Store(store).records(warn=False) if r.get("kind") == "eval"]
        evals = lengths.load_evals(evaluations)
        for b in all_boards:
            cost.add_columns(b)
            lengths.add_columns(b, evals)
        secs = sections(runs, bench, all_boards, stage, pool, evals, steps, other_evals.load(evaluations))
        for path in _figures(secs):
            folder.add(path)
        title = f"seqbench report: {store}" + (f", sweep {sweep}" if sweep else "")
        folder.write(MAIN, to_markdown(title, secs, stage))
        document, alone = to_latex(title, secs, stage)
        folder.write("report.tex", document)
        for name, text in alone.items():
            folder.write(f"latex/{name}", text)
        folder.write("report.html", to_html(title, secs))
        folder.write("summary.csv", summary(runs, bench, all_boards).to_csv(index=False))
        folder.commit()
    return out / MAIN
