"""The report as one standalone LaTeX document (`report.tex`) that compiles with pdflatex from TeX Live's
recommended and extra collections (booktabs, graphicx, array, geometry, xurl).

Tables are not floats, so none drifts away and leaves an empty page, and a long table is cut into pieces that
each fit a page (the header repeated). A piece wider than the text is scaled down to it (`\\fitwidth`); columns of
long text wrap (column type L). Landscape A4 gives the wide benchmark tables room.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from reports.render import Note, column_spec, latex_escape, latex_tabular

ROWS_PER_PIECE = 30  # a landscape page at \footnotesize holds about 38 rows with the header and caption
PREAMBLE = r"""\documentclass[10pt]{article}
\usepackage[utf8]{inputenc}
\usepackage[a4paper,landscape,margin=1.5cm]{geometry}
\usepackage{booktabs,graphicx,array}
\usepackage{xurl}
\usepackage[hidelinks]{hyperref}
\newcolumntype{L}{>{\raggedright\arraybackslash}p{6.5cm}}
% Scale a box down to the text width when it is wider; never up.
\newsavebox{\fitbox}
\newcommand{\fitwidth}[1]{\sbox{\fitbox}{#1}\ifdim\wd\fitbox>\linewidth\resizebox{\linewidth}{!}{\usebox{\fitbox}}%
\else\usebox{\fitbox}\fi}
\setlength{\parindent}{0pt}
\setlength{\parskip}{0.4em}
\sloppy
\begin{document}
"""


def table(caption: str, df: pd.DataFrame) -> str:
    """A captioned table in pieces of at most ROWS_PER_PIECE rows, each scaled to the text width if wider and kept
    whole on one page with its caption line (a minipage), so no caption is left alone at the foot of a page."""
    spec = column_spec(df)
    pieces = [df.iloc[i:i + ROWS_PER_PIECE] for i in range(0, len(df), ROWS_PER_PIECE)] or [df]
    out = []
    for k, piece in enumerate(pieces):
        title = latex_escape(caption) + ("" if len(pieces) == 1 else f" (part {k + 1} of {len(pieces)})")
        out.append("\\par\\medskip\\noindent\\begin{minipage}{\\linewidth}\n"
                   f"\\textbf{{{title}}}\\par\\smallskip\n"
                   "{\\footnotesize\\fitwidth{%\n" + latex_tabular(piece, spec) + "}}\n\\end{minipage}\\par\n")
    return "".join(out)


def notes(items: Iterable[Note]) -> str:
    lines = [rf"\item[{{{latex_escape(n.marker)}}}] {latex_escape(n.text)}" if n.marker
             else rf"\item {latex_escape(n.text)}" for n in items]
    return "\\begin{itemize}\\small\n" + "\n".join(lines) + "\n\\end{itemize}\n" if lines else ""


def figure(path: Path, caption: str, out: Path) -> str:
    rel = path.relative_to(out).as_posix()
    return ("\\par\\medskip\\begin{center}\n"
            f"\\includegraphics[width=0.9\\linewidth,height=0.62\\textheight,keepaspectratio]{{{rel}}}\\\\\n"
            f"\\parbox{{0.9\\linewidth}}{{\\small {latex_escape(caption)}}}\n\\end{{center}}\n")


def document(title: str, intro: str, body: Iterable[str]) -> str:
    return (PREAMBLE + f"{{\\Large\\bfseries {latex_escape(title)}\\par}}\\medskip\n{latex_escape(intro)}\n"
            + "".join(body) + "\\end{document}\n")


def section(title: str) -> str:
    return f"\\section*{{{latex_escape(title)}}}\n"


def paragraph(text: str) -> str:
    return f"\\par {latex_escape(text)}\\par\n"
