"""Build every table and figure of a report from a results store into one output directory.

Output (under `out`):
  leaderboard.md   the main report: leaderboards, paired tests, ablations, benchmark tables, figure links
  leaderboard.tex  the same tables as a LaTeX document (booktabs); latex/<name>.tex holds each table alone
  report.html      one self-contained page with the figures embedded
  summary.csv      the leaderboards' numbers (display units) for further use
  figures/*.png    every figure
The report is rebuilt from scratch each time, so it always matches the store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from reports import html, plots, render
from reports.ablation import ablations
from reports.bench import bench_notes, bench_tables
from reports.leaderboard import Board, boards, footnotes
from reports.load import load
from reports.references import load_references

MAIN = "leaderboard.md"
INTRO = ("Metric: mean ± sample standard deviation over seeds; n counts the complete runs with a test value; "
         "95% CI from Student's t with n-1 degrees of freedom. Accuracy in percent. Δ = our mean − the "
         "published number of the same model (its primary entry in reports/references.yaml). Paired tests: "
         "two-sided paired t-test over the seeds two rows share; p < 0.05 is called beyond noise.")


@dataclass
class Section:
    title: str
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # (caption, display strings)
    notes: list[str] = field(default_factory=list)
    figures: list[plots.Figure] = field(default_factory=list)


def comparison_strings(board: Board) -> pd.DataFrame:
    table = board.comparisons.copy()
    for col in ("mean A - B", "t", "p"):
        table[col] = table[col].map(lambda v: "—" if not math.isfinite(v) else f"{v:.4g}")
    table["shared seeds"] = table["shared seeds"].astype(str)
    return table


def board_section(board: Board, figdir: Path) -> Section:
    section = Section(f"Leaderboard: {board.title}")
    section.tables.append((f"{board.title}: our runs and published numbers", board.table))
    if not board.comparisons.empty:
        section.tables.append((f"{board.title}: paired t-tests over shared seeds", comparison_strings(board)))
    section.notes += footnotes(board.references)
    for figure in (plots.metric_vs_params(board, figdir), plots.training_curves(board, board.runs, figdir)):
        if figure is not None:
            section.figures.append(figure)
    return section


def sections(runs: pd.DataFrame, bench: pd.DataFrame, all_boards: list[Board], out: Path) -> list[Section]:
    figdir = out / "figures"
    result = [board_section(b, figdir) for b in all_boards]
    for ab in ablations(runs):
        result.append(Section(f"Ablation: sweep {ab.sweep}, {ab.task}",
                              [(f"sweep {ab.sweep}, {ab.task}: varied {', '.join(ab.keys)}", ab.table)]))
    if not bench.empty:  # the figures show our models; published code is in its own table
        result.append(Section("Scaling benchmark", bench_tables(bench), bench_notes(bench),
                              plots.scaling(bench[bench["impl"] == "ours"], figdir)))
    if not result:
        result.append(Section("No records", notes=["The store holds no readable records (of this sweep)."]))
    return result


def to_markdown(title: str, secs: list[Section], out: Path) -> str:
    parts = [f"# {title}\n\n{INTRO}\n"]
    for s in secs:
        parts.append(f"\n## {s.title}\n")
        for caption, table in s.tables:
            parts.append(f"\n{caption}:\n\n{render.markdown(table)}")
        if s.notes:
            parts.append("\n" + "".join(f"- {n}\n" for n in s.notes))
        for name, path in s.figures:
            parts.append(f"\n![{name}]({path.relative_to(out).as_posix()})\n")
    return "".join(parts)


def to_latex(secs: list[Section], out: Path) -> str:
    (out / "latex").mkdir(parents=True, exist_ok=True)
    body = []
    for s in secs:
        body.append(f"\\section*{{{render.latex_escape(s.title)}}}\n")
        for i, (caption, table) in enumerate(s.tables):
            tex = render.latex(table, caption, label=f"tab:{plots.slug(s.title)}_{i}")
            (out / "latex" / f"{plots.slug(s.title)}_{i}.tex").write_text(tex)
            body.append(f"\\begin{{small}}\n{tex}\\end{{small}}\n")
        if s.notes:
            body.append("\\begin{itemize}\n" + "".join(f"\\item {render.latex_escape(n)}\n" for n in s.notes)
                        + "\\end{itemize}\n")
    return ("\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage[utf8]{inputenc}\n"
            "\\usepackage{booktabs}\n\\usepackage[landscape,margin=1cm]{geometry}\n\\begin{document}\n"
            + "".join(body) + "\\end{document}\n")


def to_html(title: str, secs: list[Section]) -> str:
    parts = [("About", html.paragraph(INTRO, "note"))]
    for s in secs:
        body = "".join(f"<h3>{html.html_escape(c)}</h3>{render.html_table(t)}" for c, t in s.tables)
        body += "".join(html.paragraph(n, "note") for n in s.notes)
        body += "".join(html.image(path, name) for name, path in s.figures)
        parts.append((s.title, body))
    return html.page(title, parts)


def summary(all_boards: list[Board]) -> pd.DataFrame:
    frames = [b.rows.assign(board=b.title, metric=b.metric).drop(columns=["test_by_seed", "config_key"])
              for b in all_boards]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def build(store: str | Path, out: str | Path, sweep: str | None = None) -> Path:
    """Write the report of `store` (only records of `sweep` if given) under `out`; returns the Markdown file."""
    store, out = Path(store), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in (out / "figures").glob("*.png"):  # figures of models or tasks no longer in the store
        old.unlink()
    runs, bench = load(store, sweep)
    all_boards = boards(runs, load_references())
    secs = sections(runs, bench, all_boards, out)
    title = f"seqbench report: {store}" + (f", sweep {sweep}" if sweep else "")
    main = out / MAIN
    main.write_text(to_markdown(title, secs, out))
    (out / "leaderboard.tex").write_text(to_latex(secs, out))
    (out / "report.html").write_text(to_html(title, secs))
    summary(all_boards).to_csv(out / "summary.csv", index=False)
    return main
