"""The benchmark's tables from its records (the docstring of harness/bench.py says what each figure means): a row
per series (model, scope, pass, dtype), a column per length, the fitted scaling exponents, and published code
against ours. One device's records per table: numbers from different machines do not share a column."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd

from harness.bench import BenchResult
from harness.timing import fit_exponent
from reports import render
from reports.leaderboard import fmt_bytes, fmt_count
from reports.load import BENCH_COLUMNS, bench_row, is_cpu

SERIES = ["model", "scope", "pass", "dtype"]
NOT_RUN = "—"
NOT_MEASURED = "n/a"
CELL_STATUS = {"failed": "fail", "oom": "oom"}  # what a point that did not complete shows instead of its number
LEGEND = ("Cells: the point's value where it completed; oom = out of memory (recorded); fail = another error (its "
          "record holds the traceback); skip = not run, its call predicted over the time budget (bench.max_call_s "
          "or bench.max_total_s; the run prints it, no record); — = no record for that length; n/a = the record "
          "has no such figure (e.g. ceilings fractions of published code). Blank p_time or p_mem: fewer than two "
          "complete points to fit.")
Key = tuple[str, str, str, str]  # a row: SERIES, the model labelled with its implementation unless ours


def frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Records (e.g. a run's, before any store is read) as the frame `reports.load.load` gives."""
    return pd.DataFrame([bench_row(r) for r in records], columns=BENCH_COLUMNS)


def model_label(model: str, impl: str) -> str:
    return model if impl == "ours" else f"{model} ({impl})"


def length_label(n: int) -> str:
    k = int(math.log2(n)) if n > 0 else -1
    return f"2^{k}" if 2**k == n else str(n)


def digits(n: int) -> Callable[[Any], str]:
    """A formatter to n significant digits; empty for a missing value."""
    return lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{n}g}"


def _rows(bench: pd.DataFrame) -> list[dict[str, Any]]:
    return bench.to_dict("records")


def _key(row: dict[str, Any]) -> Key:
    return (model_label(row["model"], row["impl"]), row["scope"], row["pass"], row["dtype"])


def exponents(bench: pd.DataFrame) -> dict[Key, tuple[float | None, float | None, int]]:
    """Per row: (exponent of time per sequence, of peak memory per sequence, number of complete points)."""
    done: dict[Key, list[dict[str, Any]]] = {}
    for row in _rows(bench):
        if row["status"] == "complete":
            done.setdefault(_key(row), []).append(row)
    out = {}
    for key, rows in done.items():
        lengths = [r["length"] for r in rows]
        out[key] = (fit_exponent(lengths, [r["time_ms"] / r["batch_size"] for r in rows]),
                    fit_exponent(lengths, [r["peak_bytes"] / r["batch_size"] for r in rows]), len(rows))
    return out


def bench_table(bench: pd.DataFrame, column: str = "tokens_per_s", fmt: Callable[[Any], str] = fmt_count,
                with_exponents: bool = False, skipped: Iterable[tuple[Key, int]] = ()) -> pd.DataFrame:
    """A row per series, a column per length. Cells: `fmt` of `column` where the point completed, oom or fail
    where not, `skip` where `skipped` lists it (over a budget, so no record), — where no record (LEGEND).
    `with_exponents` adds p_time and p_mem. A rerun overwrites its record, so each cell has one record."""
    cells: dict[Key, dict[int, str]] = {}
    for row in _rows(bench):
        status = str(row["status"])
        text = (fmt(row[column]) or NOT_MEASURED) if status == "complete" else CELL_STATUS.get(status, status)
        cells.setdefault(_key(row), {})[int(row["length"])] = text
    for key, length in skipped:
        cells.setdefault(key, {}).setdefault(length, "skip")
    if not cells:
        return pd.DataFrame()
    lengths = sorted({n for row in cells.values() for n in row})
    fits = exponents(bench) if with_exponents else {}
    table = []
    for key in sorted(cells):
        row = dict(zip(SERIES, key, strict=True)) | {length_label(n): cells[key].get(n, NOT_RUN) for n in lengths}
        if with_exponents:
            p_time, p_mem, _ = fits.get(key, (None, None, 0))
            row |= {"p_time": digits(2)(p_time), "p_mem": digits(2)(p_mem)}
        table.append(row)
    return pd.DataFrame(table)


def speedup_table(bench: pd.DataFrame) -> pd.DataFrame:
    """Every published point beside ours of the same sweep, series and length: tokens/s, peak memory, and the
    speed-up (ours / published tokens/s)."""
    keys = ["sweep", "model", "scope", "pass", "dtype", "length"]
    published = bench[bench["impl"] == "published"]
    if published.empty:
        return pd.DataFrame()
    ours = bench[bench["impl"] == "ours"].drop_duplicates(keys, keep="last")
    pairs = published.drop_duplicates(keys, keep="last").merge(ours, on=keys, how="left", suffixes=("_pub", "_ours"))

    def value(row: pd.Series, column: str, side: str, fmt: Callable[[Any], str]) -> str:
        status = row[f"status_{side}"]
        return fmt(row[f"{column}_{side}"]) if status == "complete" else ("no record" if pd.isna(status) else status)

    table = []
    for _, row in pairs.sort_values(keys).iterrows():
        both = row["status_pub"] == "complete" and row["status_ours"] == "complete"
        table.append({"sweep": row["sweep"], "model": row["model"], "scope": row["scope"], "pass": row["pass"],
                      "dtype": row["dtype"], "L": length_label(int(row["length"])),
                      "published tokens/s": value(row, "tokens_per_s", "pub", fmt_count),
                      "ours tokens/s": value(row, "tokens_per_s", "ours", fmt_count),
                      "speed-up": f"{row['tokens_per_s_ours'] / row['tokens_per_s_pub']:.2f}×" if both else "",
                      "published peak": value(row, "peak_bytes", "pub", fmt_bytes),
                      "ours peak": value(row, "peak_bytes", "ours", fmt_bytes)})
    return pd.DataFrame(table)


def ceilings_line(ceilings: dict[str, float]) -> str:
    return (f"ceilings: copy {ceilings['copy_gbps']:.4g} GB/s (read + write), matmul fp32/TF32 "
            f"{ceilings['matmul_tflops_fp32']:.4g} TFLOP/s, bf16 {ceilings['matmul_tflops_bf16']:.4g} TFLOP/s")


def _devices(bench: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    groups = [(str(device), rows) for device, rows in bench.groupby("device", dropna=False, sort=True)]
    return groups if len(groups) > 1 else [("", bench)]


def bench_tables(bench: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(caption, table) of every benchmark table, per device."""
    out = []
    for device, rows in _devices(bench):
        at = f"{device}: " if device else ""
        kind = next((k for k in rows["memory_kind"] if isinstance(k, str)), "")
        out += [(f"{at}time per call (ms, median); p_time, p_mem: fitted exponents of time and peak memory per "
                 "sequence against L (1 linear, 2 quadratic)", bench_table(rows, "time_ms", digits(3), True)),
                (f"{at}tokens/s per length", bench_table(rows, "tokens_per_s", fmt_count)),
                (f"{at}peak memory above the baseline per length {f'({kind})' if kind else ''}".rstrip(),
                 bench_table(rows, "peak_bytes", fmt_bytes))]
        # A CPU's ceilings are measured on a machine other work shares: a fraction of them is not of its limit.
        caveat = (", measured on this CPU in the same run, under whatever else it ran then: not the hardware's "
                  "limit, and not comparable between runs") if rows["device"].map(is_cpu).all() else ""
        for column, what in (("frac_bandwidth", "copy bandwidth (bytes_assumed / time)"),
                             ("frac_matmul", "matmul rate (flops_assumed / time)")):
            if rows[column].notna().any():
                out.append((f"{at}fraction of the {what}{caveat}", bench_table(rows, column, digits(2))))
        if (rows["impl"] == "published").any():
            out.append((f"{at}published code against ours", speedup_table(rows)))
    return out


def _tokens(n: object) -> str:
    """262144 -> '2^18 = 262,144'."""
    if not isinstance(n, int) or n <= 0:
        return str(n)
    return f"{length_label(n)} = {n:,}" if length_label(n).startswith("2^") else f"{n:,}"


def bench_settings(bench: pd.DataFrame) -> list[str]:
    """Per device: the benchmark's settings, software and ceilings, as its first record states them (printed with
    the tables: a number means little without them)."""
    out = []
    for device, rows in _devices(bench):
        first = rows.iloc[0]
        env, opts, ceilings = first["env"], first["bench_config"], first["ceilings"]
        parts = [f"Settings on {device or first['device']} (device {opts.get('device', '?')})" if opts else
                 f"Settings on {device or first['device']}"]
        if opts:
            tokens = (f"fixed batch {opts['batch_size']}" if opts.get("batch_size") else
                      f"{_tokens(opts.get('tokens_per_batch'))} tokens per call (batch x L; batch 1 once L reaches it)")
            parts += [f"d_model {opts.get('d_model')}, {tokens}",
                      f"dtypes {', '.join(sorted(set(rows['dtype'].dropna())))} (fp32 allows TF32; bf16 is autocast "
                      "over fp32 weights)",
                      f"warm-up {opts.get('warmup')} calls, then {opts.get('repeats')} timed repeats (fewer, at least "
                      f"3, where a point would pass its {opts.get('point_budget_s')} s budget); a series stops at the "
                      f"first call predicted over {opts.get('max_call_s')} s, the run after "
                      f"{opts.get('max_total_s')} s",
                      f"model overrides {opts.get('model_overrides') or 'none'}"]
        if env:
            parts.append(f"torch {env.get('torch')}, CUDA {env.get('cuda')}, git {env.get('git_commit')}"
                         f"{' (dirty)' if env.get('git_dirty') else ''}, host {env.get('host')}")
        if ceilings:
            parts.append(ceilings_line(ceilings))
        out.append("; ".join(parts) + ". Method and counts: the docstring of harness/bench.py.")
    return out


def summary(result: BenchResult) -> str:
    """What a finished run prints: its ceilings and its time table, with the points skipped over a budget."""
    skipped = [((model_label(p.model, p.impl), p.scope, p.pass_, p.dtype), p.length) for p, _ in result.skipped]
    table = bench_table(frame(result.records), "time_ms", digits(3), True, skipped)
    return ceilings_line(result.ceilings) + "\n\n" + (render.markdown(table) if not table.empty else "no points\n")
