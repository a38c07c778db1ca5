"""Reports from the results store: leaderboards (Markdown, LaTeX, HTML), ablations, statistics, plots.

Regenerate every published table and figure of the repo from a store with one command:

    python -m reports --store results/store --out results/reports [--sweep NAME] [--pool]

or from Python (the end-of-sweep hook): `reports.build(store, out, sweep=None, pool=False) -> Path` of the Markdown
file. A report is written aside and swapped in whole (reports/output.py); `python -m reports.scale_bench` times the
build on a synthetic store of 10,000 runs.
"""

from reports.build import build

__all__ = ["build"]
