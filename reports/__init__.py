"""Reports from the results store: leaderboards (Markdown, LaTeX, HTML), ablations, statistics, plots.

Regenerate every published table and figure of the repo from a store with one command:

    python -m reports --store results/store --out results/reports [--sweep NAME]

or from Python (the end-of-sweep hook): `reports.build(store, out, sweep=None) -> Path` of the Markdown file.
"""

from reports.build import build

__all__ = ["build"]
