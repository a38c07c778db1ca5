"""One self-contained HTML page: every table, and the figures embedded as base64 PNG (no other files)."""

from __future__ import annotations

import base64
import html as html_lib
from pathlib import Path

from reports.render import html_text

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1800px; }
.wide { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 0.8em 0 1.6em; font-size: 0.85em; }
th, td { border-top: 1px solid #ccc; border-bottom: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { border-bottom: 2px solid #444; }
td:nth-child(n+3) { white-space: nowrap; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
.note { color: #555; font-size: 0.85em; }
"""
# Sets data-images-loaded to the number of images that decoded, so a headless browser can check them.
CHECK = """<script>
window.addEventListener('load', function () {
  var n = Array.from(document.images).filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-loaded', String(n));
  document.body.setAttribute('data-images-total', String(document.images.length));
});
</script>"""


def image(path: Path, alt: str, caption: str = "") -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html_lib.escape(alt)}" src="data:image/png;base64,{data}"><figcaption class="note">' \
           f"{html_lib.escape(caption or alt)}</figcaption></figure>"


def page(title: str, sections: list[tuple[str, str]]) -> str:
    """`sections` are (heading, HTML body) pairs; headings are escaped here, bodies are already HTML."""
    body = "".join(f"<h2>{html_lib.escape(h)}</h2>\n{b}\n" for h, b in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html_lib.escape(title)}</title>'
            f"<style>{STYLE}</style></head>\n<body><h1>{html_lib.escape(title)}</h1>\n{body}{CHECK}</body></html>\n")


def paragraph(text: str, cls: str = "") -> str:
    """Plain text as a paragraph; URLs in it become links."""
    attr = f' class="{cls}"' if cls else ""
    return f"<p{attr}>{html_text(text)}</p>"


def html_escape(text: str) -> str:
    return html_lib.escape(text)
