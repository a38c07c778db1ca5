"""Text and tables for Markdown, LaTeX (booktabs) and HTML, every piece escaped for its target.

Written by hand rather than with `DataFrame.to_markdown`/`Styler.to_latex`, which need tabulate and jinja2 (not in
requirements.txt), and because every cell comes from records a user wrote (model names, config values, error
messages): nothing in them may turn into markup, a link or a LaTeX command. URLs are the one thing made live:
autolinks in Markdown, `\\url` (breakable, with xurl) in LaTeX, anchors in HTML.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass

import pandas as pd

URL = re.compile(r"https?://[^\s<>\"'|)\]]+[^\s<>\"'|).,;:\]]")
LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "|": r"\textbar{}",
    "±": r"$\pm$", "Δ": r"$\Delta$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "—": "---", "–": "--",
    "≥": r"$\geq$", "≤": r"$\leq$", "<": r"$<$", ">": r"$>$", "×": r"$\times$", "≠": r"$\neq$",
    "→": r"$\rightarrow$", "…": r"\ldots{}", "’": "'", "‘": "`", "“": "``", "”": "''", "π": r"$\pi$",
    "µ": r"$\mu$", "−": r"$-$", "·": r"$\cdot$", "²": r"$^2$", "√": r"$\surd$", "\u00a0": "~",
}
# Markdown characters escaped (with a backslash) only where they would start markup under CommonMark and GFM, so
# that the raw file reads as plain text too (`p < 0.05`, `[32.0, 41.9]`, `d_model`, not `p &lt; 0.05`):
# always: ` * | ~ # (code, emphasis, table cells, strike-through, a heading's closing #s); an underscore next to a
# non-word character (emphasis; inside a word, as in d_model, it starts nothing); a backslash before punctuation or
# at the end (an escape, a line break); < before a letter, / ! or ? (an HTML tag or an autolink); ] before ( [ or :
# (a link or a reference); & that spells an entity (&amp;); a newline (a new block).
MD_MARKUP = re.compile(r"[`*|~#]|(?<![^\W_])_|_(?![^\W_])|\\(?=[!-/:-@\[-`{-~]|$)|<(?=[A-Za-z/!?])|\](?=[(\[:])"
                       r"|&(?=#?[A-Za-z0-9]+;)|\n")
# At the start of a block (a paragraph, a list item), also what opens another block: a quote, a list, a setext
# underline, a numbered list (`1.` or `1)`).
MD_BLOCK_START = re.compile(r"[>+=-]|\d{1,9}(?=[.)])")


@dataclass(frozen=True)
class Note:
    """A line under a table or figure; `marker` (e.g. "[1]") when the table refers to it."""

    text: str
    marker: str = ""


def cell(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _pieces(text: str) -> list[tuple[bool, str]]:
    """`text` split into (is_url, piece) pairs."""
    out, at = [], 0
    for m in URL.finditer(text):
        out += [(False, text[at:m.start()]), (True, m.group())]
        at = m.end()
    return [p for p in [*out, (False, text[at:])] if p[1]]


def md_escape(text: str, block: bool = False) -> str:
    """Plain text as Markdown that renders as the same text and reads as it in the raw file (URLs become
    autolinks). `block`: the text starts a block (a paragraph, a list item), so what would open another is escaped."""
    def plain(s: str) -> str:
        return MD_MARKUP.sub(lambda m: " " if m.group() == "\n" else "\\" + m.group(), s)

    out = "".join(f"<{p}>" if is_url else plain(p) for is_url, p in _pieces(text))
    if block and (start := MD_BLOCK_START.match(out)):
        at = start.end()  # before the `.` of `1.`, or after the one character that opens a block
        out = out[:at] + "\\" + out[at:] if start.group()[0].isdigit() else "\\" + out
    return out


def markdown(df: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(md_escape(str(c)) for c in df.columns) + " |",
             "|" + "|".join(" --- " for _ in df.columns) + "|"]
    lines += ["| " + " | ".join(md_escape(cell(v)) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _powers(text: str) -> list[str | tuple[str, str]]:
    """'2^10 x' -> [('2', '10'), ' x']."""
    parts = re.split(r"\b(\d+)\^(\d+)\b", text)
    return [parts[i] if i % 3 == 0 else (parts[i], parts[i + 1]) for i in range(0, len(parts)) if i % 3 != 2]


LATEX_TABLE = str.maketrans(LATEX_SPECIAL)
NOT_LATIN1 = re.compile(r"[^\x00-\xff]")


def latex_escape(text: str) -> str:
    """Plain text as LaTeX that prints as the same text. Characters the document's fonts lack (outside ASCII and
    Latin-1, and not mapped above) print as '?', rather than stopping pdflatex."""
    def plain(s: str) -> str:  # powers of two (2^10, as the benchmark names lengths) as math
        return "".join(f"${p[0]}^{{{p[1]}}}$" if isinstance(p, tuple) else NOT_LATIN1.sub("?", p.translate(LATEX_TABLE))
                       for p in _powers(s))

    def url(s: str) -> str:  # \url inside another command's argument needs % and # escaped
        return r"\url{" + s.replace("%", r"\%").replace("#", r"\#").replace("{", "").replace("}", "") + "}"

    return "".join(url(p) if is_url else plain(p) for is_url, p in _pieces(text))


WIDE = 48  # characters: a column with longer cells wraps (column type L) instead of widening the table


def column_spec(df: pd.DataFrame) -> str:
    """l for text, r for numbers, L (a wrapping paragraph column the document defines) for long text."""
    spec = []
    for col in df.columns:
        cells = [cell(v) for v in df[col]]
        if max((len(c) for c in cells), default=0) > WIDE:
            spec.append("L")
        elif cells and all(re.fullmatch(r"[-+]?[0-9.,]+[KMG%]?|—|", c) for c in cells):
            spec.append("r")
        else:
            spec.append("l")
    return "".join(spec)


def latex_tabular(df: pd.DataFrame, spec: str | None = None) -> str:
    """A booktabs tabular of the whole frame (header, rules, every row)."""
    spec = spec or column_spec(df).replace("L", "l")
    lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(str(c)) for c in df.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(cell(v)) for v in row) + r" \\" for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def latex(df: pd.DataFrame, caption: str = "", label: str = "") -> str:
    """The table alone as a booktabs `table` float, for pasting into a paper (`latex/<name>.tex`)."""
    lines = [r"\begin{table}[ht]", r"\centering", r"\small", latex_tabular(df).rstrip("\n")]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def html_text(text: str) -> str:
    """Plain text as HTML, URLs as links."""
    return "".join(f'<a href="{html.escape(p)}">{html.escape(p)}</a>' if is_url else html.escape(p)
                   for is_url, p in _pieces(text))


def html_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{html_text(cell(v))}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    # In a box of its own that scrolls sideways: a wide table (many machines, long data names) moves alone, not the
    # page with every figure on it.
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
