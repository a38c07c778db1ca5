"""State and results of a sweep, later (the sweep itself: harness.sweeper).

    python -m harness.sweep status [SWEEP_DIR]                 done / running / queued / failed / oom / preempted
    python -m harness.sweep collect [SWEEP_DIR] [--report OUT]     one JSON line per finished point

The sweep's manifest (harness.manifest) names every point's run id; the store is the source of truth, plus
`squeue` for jobs not yet done (no `sacct` needed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from harness.errors import UserError, exit_with
from harness.manifest import find_sweep, read_jobs, read_points
from harness.results import Store

RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "RESIZING"}
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "PREEMPTED"}
STATES = ("done", "running", "queued", "failed", "oom", "preempted", "missing")
REPO = Path(__file__).resolve().parent.parent


def squeue() -> dict[str, str] | None:
    """{job id: state} of this user's jobs (array tasks one by one), or None where squeue does not answer."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-u", os.environ.get("USER") or str(os.getuid()),
                              "-o", "%i|%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return dict(line.strip().split("|", 1) for line in out.stdout.splitlines() if "|" in line)


def classify(record: dict[str, Any] | None, job_state: str | None) -> str:
    """The store first (a complete record is done whatever the queue says), then the queue, then the record."""
    if record is not None and record["status"] == "complete":
        return "done"
    if job_state in RUNNING:
        return "running"
    if job_state in QUEUED:
        return "queued"
    if record is not None:
        return record["status"]  # failed | oom | preempted (rerun the sweep to resume it)
    return "missing"  # never started, or killed before it wrote anything: rerunning the sweep runs it


def sweep_status(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per point: run id, state (see STATES), SLURM job id and state, record status, overrides."""
    points = read_points(sweep_dir)
    jobs = read_jobs(sweep_dir)
    queue = squeue() if jobs else {}
    rows = []
    for p in points:
        record = Store(p["store"]).get(p["run_id"])
        job = jobs.get(str(p["job_num"])) if p["job_num"] is not None else None
        job_state = (queue or {}).get(job) if job else None
        rows.append({"run_id": p["run_id"], "state": classify(record, job_state), "job_id": job,
                     "slurm": job_state, "record": record["status"] if record else None, "overrides": p["overrides"],
                     "queue_known": queue is not None, "record_data": record})
    return rows


def build_report(sweep_dir: Path, out: Path) -> None:
    """The report of the sweep's records, through `python -m reports` (the mechanism does not import reports/)."""
    points = read_points(sweep_dir)
    stores = {p["store"] for p in points}
    if len(stores) != 1:
        raise UserError("--report needs every point of the sweep in one store (one paths.root)")
    names = {p["sweep"] for p in points}
    command = [sys.executable, "-m", "reports", "--store", stores.pop(), "--out", str(out.resolve()),
               *(["--sweep", names.pop()] if len(names) == 1 else [])]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    sys.stderr.write(done.stdout + done.stderr)  # stdout holds the collected JSON lines
    if done.returncode != 0:
        sys.exit(done.returncode)


def _status(args: argparse.Namespace) -> int:
    sweep_dir = args.sweep or find_sweep(Path(args.root))
    rows = sweep_status(sweep_dir)
    counts = Counter(r["state"] for r in rows)
    if args.json:
        for r in rows:
            print(json.dumps({k: v for k, v in r.items() if k != "record_data"}))
        return 0
    print(f"sweep {sweep_dir}: {len(rows)} points: " + ", ".join(f"{counts[s]} {s}" for s in STATES if counts[s]))
    if rows and not rows[0]["queue_known"]:
        print("  (squeue did not answer: states come from the store only)")
    shared = set.intersection(*(set(r["overrides"]) for r in rows)) if rows else set()
    for r in rows:  # only what differs between the points
        job = f"job {r['job_id']}" if r["job_id"] else "no job"
        varied = " ".join(o for o in r["overrides"] if o not in shared)
        print(f"  {r['state']:<9} {r['run_id']}  {job:<14} {varied}")
    return 0


def _collect(args: argparse.Namespace) -> int:
    sweep_dir = args.sweep or find_sweep(Path(args.root))
    rows = sweep_status(sweep_dir)
    for r in rows:
        rec = r["record_data"]
        if r["state"] != "done":
            print(f"seqbench: {r['run_id']} is {r['state']}, not collected", file=sys.stderr)
            continue
        metrics = rec.get("metrics") or {}
        print(json.dumps({"run_id": r["run_id"], "task": rec["task"], "model": rec["model"], "seed": rec["seed"],
                          "overrides": r["overrides"], "metric": metrics.get("metric"), "val": metrics.get("val"),
                          "test": metrics.get("test"), "params": rec.get("params")}), flush=True)
    if args.report:
        build_report(sweep_dir, args.report)
    return 0 if all(r["state"] == "done" for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.sweep", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("status", "state of every point: done, running, queued, failed, oom, preempted, "
                                       "missing"),
                            ("collect", "one JSON line per finished point (exit 1 while some are not done)")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("sweep", nargs="?", type=Path, help="the sweep directory (default: the newest under --root)")
        p.add_argument("--root", default="results", help="paths.root of the sweep (default: results)")
        if name == "status":
            p.add_argument("--json", action="store_true", help="one JSON line per point")
        else:
            p.add_argument("--report", type=Path, help="also build the report of the sweep's records into this folder")
    args = parser.parse_args(argv)
    try:
        return _status(args) if args.command == "status" else _collect(args)
    except UserError as exc:
        exit_with(exc)


if __name__ == "__main__":
    sys.exit(main())
