"""Build every table and figure of a report from a results store into one output directory.

Output (under `out`):
  leaderboard.md   the main report: leaderboards, paired tests, runs that did not complete, ablations, benchmark
                   tables, figure links
  report.tex       the same as one standalone LaTeX document (pdflatex; reports/latex.py)
  latex/<name>.tex each table alone, as a booktabs float to paste into a paper
  report.html      one self-contained page with the figures embedded
  summary.csv      one row per run (training runs and benchmark points), in the store's units
  figures/*.png    every figure
The report is rebuilt from scratch each time, so it always matches the store: the files the previous build wrote
(listed in MANIFEST) are removed first, and nothing else in `out` is touched.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from reports import cost, html, latex, lengths, plots, render
from reports.ablation import ablations
from reports.bench import LEGEND, bench_settings, bench_tables
from reports.leaderboard import Board, boards
from reports.load import load
from reports.references import load_references
from reports.render import Note

MAIN = "leaderboard.md"
MANIFEST = ".seqbench-report.json"  # the files this report wrote, removed by the next build
INTRO = ("Metric: mean ± sample standard deviation over seeds; n counts the complete runs with a test value; "
         "95% CI from Student's t with n-1 degrees of freedom. Accuracy in percent, memory in binary units (GiB). "
         "Published: the number of the row's exact setting (task and model settings, e.g. S4D init, WavSpA "
         "transform, grayscale or RGB) from reports/references.yaml, or “no published number for this setting”. "
         "Settings: paper when the row's config and data sizes equal the paper preset its number cites "
         "(sweeps/experiment/), reduced otherwise (the notes say how). Δ = our mean − the published number, only "
         "for rows at paper settings. Runs that did not complete (failed, out of memory, preempted, diverged) are "
         "listed apart and never ranked. Paired tests: two-sided paired t-test over the seeds two rows share; "
         "p < 0.05 is called beyond noise.")


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


def board_section(board: Board, figdir: Path, evals: pd.DataFrame | None = None) -> Section:
    section = Section(f"Leaderboard: {board.title}")
    if len(board.rows):
        section.tables.append((f"{board.title}: our runs (ranked) and published numbers", board.table))
    else:
        section.lead.append("No run of this task setting completed: nothing to rank.")
    if not board.comparisons.empty:
        section.tables.append((f"{board.title}: paired t-tests over shared seeds", comparison_strings(board)))
    if not board.incomplete.empty:
        section.tables.append((f"{board.title}: runs that did not complete (not ranked)", board.incomplete))
    section.notes += board.notes
    for figure in (plots.metric_vs_params(board, figdir), plots.training_curves(board, board.runs, figdir),
                   cost.figure(board, figdir), None if evals is None else lengths.figure(board, evals, figdir)):
        if figure is not None:
            section.figures.append(figure)
    return section


def sections(runs: pd.DataFrame, bench: pd.DataFrame, all_boards: list[Board], out: Path,
             evals: pd.DataFrame | None = None) -> list[Section]:
    figdir = out / "figures"
    result = [board_section(b, figdir, evals) for b in all_boards]
    for ab in ablations(runs):
        result.append(Section(f"Ablation: sweep {ab.sweep}, {ab.task}",
                              [(f"sweep {ab.sweep}, {ab.task}: varied {', '.join(ab.keys)}", ab.table)]))
    if not bench.empty:  # the figures show our models; published code is in its own table
        result.append(Section("Scaling benchmark", bench_tables(bench), figures=plots.scaling(
            bench[bench["impl"] == "ours"], figdir), lead=[*bench_settings(bench), LEGEND]))
    if not result:
        result.append(Section("No records", notes=[Note("The store holds no readable records (of this sweep).")]))
    return result


def to_markdown(title: str, secs: list[Section], out: Path) -> str:
    esc = render.md_escape
    parts = [f"# {esc(title)}\n\n{esc(INTRO)}\n"]
    for s in secs:
        parts.append(f"\n## {esc(s.title)}\n")
        parts += [f"\n{esc(p)}\n" for p in s.lead]
        for caption, table in s.tables:
            parts.append(f"\n{esc(caption)}:\n\n{render.markdown(table)}")
        if s.notes:
            parts.append("\n" + "".join(f"- {esc(f'{n.marker} ' if n.marker else '')}{esc(n.text)}\n"
                                        for n in s.notes))
        for f in s.figures:
            parts.append(f"\n![{esc(f.title)}]({f.path.relative_to(out).as_posix()})\n\n{esc(f.caption)}\n")
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


SUMMARY_COLUMNS = ["kind", "run_id", "sweep", "task", "model", "seed", "status", "board", "row", "settings",
                   "metric", "val", "test", "published", "delta_display", "params", "train_tokens_per_s",
                   "peak_bytes", "wall_s", "model_version", "task_version", "harness_version", "impl", "scope",
                   "pass", "dtype", "length", "batch_size", "time_ms", "tokens_per_s", "device"]


def summary(runs: pd.DataFrame, bench: pd.DataFrame, all_boards: list[Board]) -> pd.DataFrame:
    """One row per record: training runs with their board, row, settings and published number (display units for
    `published` and `delta_display`, store units elsewhere), then benchmark points."""
    placed: dict[str, dict[str, object]] = {}
    for b in all_boards:
        rows = b.rows.set_index("config_key") if len(b.rows) else b.rows
        for _, run in b.runs.iterrows():
            row = rows.loc[run["config_key"]] if run["config_key"] in rows.index else None
            placed[str(run["run_id"])] = {
                "board": b.title, "row": None if row is None else row["label"],
                "settings": None if row is None else row["settings"].label,
                "published": None if row is None else row["ref_value"],
                "delta_display": None if row is None else row["delta"]}
    out = []
    for _, r in runs.iterrows():
        versions = r["versions"] or {}
        out.append({"kind": "train", **{k: r[k] for k in ("run_id", "sweep", "task", "model", "seed", "status",
                                                            "metric", "val", "test", "params", "train_tokens_per_s",
                                                            "peak_bytes", "wall_s")},
                    **placed.get(str(r["run_id"]), {}), "model_version": versions.get("model"),
                    "task_version": versions.get("task"), "harness_version": versions.get("harness")})
    for _, r in bench.iterrows():
        out.append({"kind": "bench", **{k: r[k] for k in ("run_id", "sweep", "model", "status", "impl", "scope",
                                                            "pass", "dtype", "length", "batch_size", "time_ms",
                                                            "tokens_per_s", "peak_bytes", "device")}})
    return pd.DataFrame(out, columns=SUMMARY_COLUMNS)


class Output:
    """Writes the report's files under `out` and remembers them; `clear` removes what the previous build wrote."""

    def __init__(self, out: Path):
        self.out = out
        self.written: list[str] = []

    def clear(self) -> None:
        manifest = self.out / MANIFEST
        if not manifest.exists():
            return
        for rel in json.loads(manifest.read_text()):
            path = (self.out / rel).resolve()
            if path.is_relative_to(self.out.resolve()) and path.is_file():
                path.unlink()

    def text(self, rel: str, content: str) -> Path:
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        return self.add(path)

    def add(self, path: Path) -> Path:
        self.written.append(path.relative_to(self.out).as_posix())
        return path

    def close(self) -> None:
        (self.out / MANIFEST).write_text(json.dumps(sorted(self.written), indent=1) + "\n")


def _figures(secs: Iterable[Section]) -> list[Path]:
    return [f.path for s in secs for f in s.figures]


def build(store: str | Path, out: str | Path, sweep: str | None = None) -> Path:
    """Write the report of `store` (only records of `sweep` if given) under `out`; returns the Markdown file."""
    store, out = Path(store), Path(out)
    runs, bench = load(store, sweep)  # before touching `out`: a missing store leaves the last report as it was
    out.mkdir(parents=True, exist_ok=True)
    files = Output(out)
    files.clear()
    all_boards = boards(runs, load_references())
    evals = lengths.load_evals(store)
    for b in all_boards:
        cost.add_columns(b)
        lengths.add_columns(b, evals)
    secs = sections(runs, bench, all_boards, out, evals)
    for path in _figures(secs):
        files.add(path)
    title = f"seqbench report: {store}" + (f", sweep {sweep}" if sweep else "")
    main = files.text(MAIN, to_markdown(title, secs, out))
    document, alone = to_latex(title, secs, out)
    files.text("report.tex", document)
    for name, text in alone.items():
        files.text(f"latex/{name}", text)
    files.text("report.html", to_html(title, secs))
    files.text("summary.csv", summary(runs, bench, all_boards).to_csv(index=False))
    files.close()
    return main
