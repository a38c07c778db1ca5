"""State and results of a sweep, later (the sweep itself: sweeps.sweeper).

    python -m sweeps status [SWEEP_DIR]          each point's state (STATES)
    python -m sweeps collect [SWEEP_DIR] [--report OUT] [--pool]     one JSON line per finished point

The sweep's manifest (sweeps.manifest) names every point's run id; the store is the source of truth, then the
queue (`squeue`) for jobs not yet done, then SLURM's accounting (`sacct`, where the cluster keeps it) for jobs that
have left the queue without a complete record: cancelled, out of memory, failed.

What accounting says of a job that ended before its run could write a record (a pending job cancelled, a job killed
for its memory), or of a run SLURM cancelled after it checkpointed, is written to the store as that run's record
by whichever reads it first (the waiting sweep, `status`, `collect`), so the store, `status` and the report say the
same. Where accounting gives no answer (no slurmdbd, or one that has stopped answering), a job that left the queue
without a record is `unknown`, and `status` says so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.errors import UserError, exit_with
from harness.progress import plural
from harness.results import Store
from sweeps.manifest import find_sweep, read_jobs, read_manifest

RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "RESIZING"}
QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "PREEMPTED"}
ENDED = {"CANCELLED": "cancelled", "OUT_OF_MEMORY": "oom", "FAILED": "failed", "NODE_FAIL": "failed",
         "BOOT_FAIL": "failed", "TIMEOUT": "failed", "DEADLINE": "failed"}  # accounting's end states -> ours
FINAL = {*ENDED, "COMPLETED"}
# unknown: the job left the queue without a record and accounting did not say how it ended;
# missing: no record and no job (never launched, or skipped because another process was running it).
STATES = ("done", "running", "queued", "failed", "oom", "diverged", "preempted", "cancelled", "unknown", "missing")
REPO = Path(__file__).resolve().parent.parent
RECORDS = "records"  # in the sweep directory: links to its points' records, what its report is built from


def _query(command: list[str]) -> list[list[str]] | None:
    """The `|`-separated fields of each line a SLURM command prints, or None where it does not answer."""
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return [line.strip().split("|") for line in out.stdout.splitlines() if "|" in line]


def squeue() -> dict[str, str] | None:
    """{job id: state} of this user's jobs (array tasks one by one), or None where squeue does not answer."""
    lines = _query(["squeue", "-h", "-r", "-u", os.environ.get("USER") or str(os.getuid()), "-o", "%i|%T"])
    return None if lines is None else {job: state for job, state in lines}


def expand_array(job_id: str) -> list[str]:
    """`12_[0-2,5%4]` (a job array's pending tasks, as sacct names them) -> 12_0, 12_1, 12_2, 12_5."""
    match = re.fullmatch(r"(\d+)_\[([^\]%]*)(?:%\d+)?\]", job_id)
    if match is None:
        return [job_id]
    base, tasks = match.groups()
    ids = []
    for part in tasks.split(","):
        first, _, last = part.partition("-")
        ids += [f"{base}_{i}" for i in range(int(first), int(last or first) + 1)]
    return ids


def sacct(job_ids: Iterable[str]) -> dict[str, str] | None:
    """{job id: state} from SLURM's accounting (the latest attempt of each), or None where it gives no answer.

    No answer: the command fails (no accounting), or it prints no line at all for jobs that have run, which is how
    `sacct` answers (exit 0, "Problem getting jobs" on stderr) while slurmdbd is down.
    """
    jobs = sorted({job.split("_")[0] for job in job_ids})
    if not jobs:
        return {}
    lines = _query(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(jobs)])
    # A state can carry a reason ("CANCELLED by 0"); the word is what matters.
    states = {job: state.split()[0] for ids, state in lines or [] for job in expand_array(ids) if state}
    return states or None


def job_state(job: str, queue: dict[str, str] | None, accounting: dict[str, str] | None) -> str | None:
    """The job's state: the queue's while it is there; once it has left, how accounting says it ended. Accounting
    lags (slurmdbd catching up after an outage still says RUNNING): for a job the queue no longer lists, only an
    end state counts, anything else is not known yet."""
    if queue is not None and job in queue:
        return queue[job]
    state = (accounting or {}).get(job)
    return state if queue is None or state in FINAL else None


def classify(record: dict[str, Any] | None, job: str | None, slurm: str | None) -> str:
    """The store first (a complete record is done whatever SLURM says), then the queue, then how the job ended;
    `slurm`: the job's state (job_state)."""
    status = record["status"] if record is not None else None
    if status == "complete":
        return "done"
    if slurm == "COMPLETING" and status is not None:  # its run has ended and written how
        return status
    if slurm in RUNNING:
        return "running"
    if slurm in QUEUED:
        return "queued"
    ended = ENDED.get(slurm or "")
    if ended == "cancelled":  # before the record: a job cancelled mid-run may have written `preempted`
        return ended
    if status is not None:
        return status  # failed | oom | diverged | preempted | cancelled (rerun the sweep to resume it)
    if ended:
        return ended
    return "unknown" if job and slurm is None else "missing"


def settle(point: dict[str, Any], record: dict[str, Any] | None, job: str, slurm: str,
           state: str) -> dict[str, Any] | None:
    """The record of a point whose job SLURM ended (`slurm`, accounting's end state) without one (cancelled while
    pending, killed for its memory), or whose run wrote `preempted` before SLURM cancelled it; None where the
    store already says the state."""
    if record is not None and not (record["status"] == "preempted" and state == "cancelled"):
        return None
    if record is None:
        record = {"run_id": point["run_id"], "kind": "train", "sweep": point.get("sweep"),
                  "sweep_id": point.get("sweep_id"), "task": point.get("task"), "model": point.get("model"),
                  "seed": point.get("seed"), "config": point.get("config"), "env": {"slurm": {"job_id": job}}}
        why = "before its run wrote a record; rerunning the sweep runs it"
    else:
        why = f"after its run stopped ({record.get('error')}); rerunning the sweep resumes it from its checkpoint"
    settled = {**record, "status": state, "error": f"SLURM job {job} ended {slurm} (sacct) {why}"}
    Store(point["store"]).write(settled)
    return settled


def sweep_status(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per point: run id, state (see STATES), SLURM job id and state, record status, overrides; and
    whether squeue and sacct answered. What accounting alone knows is written to the store first (`settle`)."""
    jobs = read_jobs(sweep_dir)
    points = [(p, Store(p["store"]).get(p["run_id"]), jobs.get(str(p["job_num"])) if p["job_num"] is not None
               else None) for p in read_manifest(sweep_dir)["points"]]
    open_jobs = [job for _, record, job in points if job and (record is None or record["status"] != "complete")]
    queue = squeue() if open_jobs else {}
    gone = [job for job in open_jobs if job not in (queue or {})]
    accounting = sacct(gone)
    rows = []
    for p, record, job in points:
        slurm = job_state(job, queue, accounting) if job else None
        state = classify(record, job, slurm)
        if job and slurm in ENDED:
            record = settle(p, record, job, slurm, state) or record
        rows.append({"run_id": p["run_id"], "state": state, "job_id": job, "slurm": slurm,
                     "record": record["status"] if record else None, "overrides": p["overrides"],
                     "queue_known": queue is not None, "accounting_known": accounting is not None or not gone,
                     "record_data": record})
    return rows


def unconfirmed(rows: list[dict[str, Any]]) -> str | None:
    """A line on what SLURM did not answer about jobs no longer running, None when it answered for every one: their
    states then come from their records alone, or are unknown where there is none."""
    unsure = [r for r in rows if r["job_id"] and r["slurm"] is None and r["state"] != "done"]
    if not unsure:
        return None
    unknown = sum(r["state"] == "unknown" for r in unsure)
    if not rows[0]["queue_known"]:
        said = "squeue did not answer (is slurmctld up? `scontrol ping`)"
    else:
        said = (f"SLURM's accounting (sacct) gave no answer for {plural(len(unsure), 'job')} that left the queue "
                f"(it can lag behind the queue, or be down)")
    return (f"{said}: {unknown} without a record {'is' if unknown == 1 else 'are'} unknown (cancelled, out of "
            f"memory, killed?), the others read as their records say; `python -m sweeps status` again later")


def link_records(sweep_dir: Path) -> Path:
    """A store of the sweep's own records (links into the stores its points wrote to), rebuilt each time."""
    records = sweep_dir / RECORDS
    if records.exists():
        shutil.rmtree(records)
    records.mkdir()
    for p in read_manifest(sweep_dir)["points"]:
        path = Store(p["store"]).path(p["run_id"]).resolve()
        if path.exists():
            (records / path.name).symlink_to(path)
    return records


def build_report(sweep_dir: Path, out: Path, pool: bool = False) -> None:
    """The report of the sweep's records, through `python -m reports` (the mechanism does not import reports/).

    Only the points of this sweep (its manifest's run ids), unless `pool`: then every record in the store that
    carries the sweep's name, earlier sweeps of the same name included.
    """
    if pool:
        points = read_manifest(sweep_dir)["points"]
        stores = {p["store"] for p in points}
        if len(stores) != 1:
            raise UserError("--pool needs every point of the sweep in one store (one paths.root); leave it out to "
                            "report this sweep's own points")
        names = {p["sweep"] for p in points}
        # --pool: the report merges the sweep's invocations (sweep ids) into one table per name.
        source = [stores.pop(), *(["--sweep", names.pop()] if len(names) == 1 else []), "--pool"]
    else:
        source = [str(link_records(sweep_dir).resolve())]
    command = [sys.executable, "-m", "reports", "--store", *source, "--out", str(out.resolve())]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    sys.stderr.write(done.stdout + done.stderr)  # stdout holds the collected JSON lines
    if done.returncode != 0:
        sys.exit(done.returncode)


def table(rows: list[list[str]]) -> list[str]:
    """Rows of cells as lines with every column as wide as its widest cell."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def _status(args: argparse.Namespace) -> int:
    sweep_dir = args.sweep or find_sweep(Path(args.root))
    rows = sweep_status(sweep_dir)
    counts = Counter(r["state"] for r in rows)
    if args.json:
        for r in rows:
            print(json.dumps({k: v for k, v in r.items() if k != "record_data"}))
        return 0
    print(f"sweep {sweep_dir}: {plural(len(rows), 'point')}: "
          + ", ".join(f"{counts[s]} {s}" for s in STATES if counts[s]))
    note = unconfirmed(rows)
    if note:
        print(f"  ({note})")
    shared = set.intersection(*(set(r["overrides"]) for r in rows)) if rows else set()
    cells = [["state", "run id", "job", "overrides"]]
    for r in rows:  # only what differs between the points
        varied = " ".join(o for o in r["overrides"] if o not in shared)
        cells.append([r["state"], r["run_id"], r["job_id"] or "-", varied])
    for line in table(cells):
        print(f"  {line}")
    return 0


def _collect(args: argparse.Namespace) -> int:
    sweep_dir = args.sweep or find_sweep(Path(args.root))
    rows = sweep_status(sweep_dir)
    note = unconfirmed(rows)
    if note:
        print(f"seqbench: {note}", file=sys.stderr)
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
        build_report(sweep_dir, args.report, args.pool)
    return 0 if all(r["state"] == "done" for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("status", f"state of every point: {', '.join(STATES)}"),
                            ("collect", "one JSON line per finished point (exit 1 while some are not done)")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("sweep", nargs="?", type=Path, help="the sweep directory (default: the newest under --root)")
        p.add_argument("--root", default="results", help="paths.root of the sweep (default: results)")
        if name == "status":
            p.add_argument("--json", action="store_true", help="one JSON line per point")
        else:
            p.add_argument("--report", type=Path, help="also build the report of the sweep's records into this folder")
            p.add_argument("--pool", action="store_true", help="the report takes every record in the store with the "
                           "sweep's name (earlier sweeps of that name too), not only this sweep's points")
    args = parser.parse_args(argv)
    try:
        return _status(args) if args.command == "status" else _collect(args)
    except UserError as exc:
        exit_with(exc)


if __name__ == "__main__":
    sys.exit(main())
