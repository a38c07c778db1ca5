"""The results store: one JSON record per run, `<store>/<run_id>.json`.

A record is written atomically (harness.files), so a reader sees either the previous record or the
new one and never half of one, also with many jobs writing at once on a shared filesystem. Readers
skip files that do not parse (and say so) instead of treating them as results.

Record fields: schema, run_id, kind (train | bench | eval), sweep, task, model, seed, status
(complete | failed | oom | preempted | cancelled | diverged | not_applicable), config, metrics, throughput, memory,
params, cost, timing, env, error; a diverged run has `diverged` (epoch, step, history) instead of metrics, and one
stopped in training (preempted, cancelled) `progress` (metric, epoch, step, history: how far it got; segments).
`cost.segments` (and `progress.segments`) lists the pieces of a resumed run: the step each began at, its commit,
device and compile settings (the record's `env` is the last piece's). `sweep_id`
names the sweep invocation that launched the run (its sweep folder), null outside a sweep. `cancelled`: SLURM
cancelled the job (scancel); nothing requeues it, rerunning the sweep resumes it from its checkpoint. An evaluation
(harness.evaluate) also names its training run, `train_run_id`, and what it evaluated on, `eval`.

Records are strict JSON: a non-finite number (a diverged loss) is written as null.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.files import atomic_write

SCHEMA = 1
# not_applicable: an evaluation a model cannot make (harness.evaluate), e.g. learned positions past their length.
STATUSES = ("complete", "failed", "oom", "preempted", "cancelled", "diverged", "not_applicable")


def strict_json(obj: Any, **kwargs: Any) -> str:
    """`obj` as standard JSON, which has no NaN or Infinity: non-finite numbers become null."""
    return json.dumps(_finite(obj), allow_nan=False, **kwargs)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


class Store:
    """A directory of run records.

    A complete record is replaced only by another complete one, unless the store is opened for a forced rerun
    (`force`): a stray or late writer never turns a finished result into a failure.
    """

    def __init__(self, root: str | os.PathLike[str], force: bool = False):
        self.root = Path(root)
        self.force = force

    def path(self, run_id: str) -> Path:
        return self.root / f"{run_id}.json"

    def write(self, record: dict[str, Any]) -> Path | None:
        """Write `record` over any earlier one of its run id; returns its path, or None when refused (see Store)."""
        if record.get("status") not in STATUSES:
            raise ValueError(f"record status must be one of {STATUSES}, got {record.get('status')!r}")
        record = {"schema": SCHEMA, **record}
        path = self.path(record["run_id"])
        if record["status"] != "complete" and not self.force and self.is_complete(record["run_id"]):
            print(f"seqbench: {path} is complete: not replacing it with a {record['status']} record "
                  f"(force=true reruns the run)", file=sys.stderr)
            return None
        atomic_write(path, strict_json(record, indent=1, sort_keys=True, default=str) + "\n")
        return path

    def get(self, run_id: str) -> dict[str, Any] | None:
        path = self.path(run_id)
        if not path.exists():
            return None
        return _parse(path)

    def is_complete(self, run_id: str) -> bool:
        record = self.get(run_id)
        return record is not None and record.get("status") == "complete"

    def records(self, warn: bool = True) -> Iterator[dict[str, Any]]:
        """Every readable record; unreadable files are reported on stderr and skipped."""
        if not self.root.is_dir():
            return
        for path in sorted(self.root.glob("*.json")):
            record = _parse(path)
            if record is None:
                if warn:
                    print(f"seqbench: skipping unreadable record {path}", file=sys.stderr)
                continue
            yield record


def _parse(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or "run_id" not in record or record.get("status") not in STATUSES:
        return None
    return record
