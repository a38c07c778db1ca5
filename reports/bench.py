"""The scaling benchmark as a table: a row per (model, scope, pass, dtype), a column per length."""

from __future__ import annotations

import pandas as pd

from reports.leaderboard import fmt_bytes, fmt_count


def bench_table(bench: pd.DataFrame, column: str = "tokens_per_s") -> pd.DataFrame:
    """Cells are `column` formatted (e.g. 1.2M) or the status (oom, failed) where the point has no value."""
    if bench.empty:
        return pd.DataFrame()

    def cell(rows: pd.DataFrame) -> str:
        row = rows.iloc[-1]  # one record per point; a rerun overwrites the same run id
        if row["status"] != "complete":
            return str(row["status"])
        return fmt_bytes(row[column]) if column.endswith("bytes") else fmt_count(row[column])

    keys = ["model", "scope", "pass", "dtype"]
    table = bench.groupby(keys + ["length"], dropna=False).apply(cell, include_groups=False).unstack("length")
    table.columns = [str(int(c)) for c in table.columns]
    return table.fillna("").reset_index()
