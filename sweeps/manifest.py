"""What a sweep leaves in its directory for `python -m sweeps status|collect` to read later.

`seqbench_sweep.json` (written by the sweeper): the sweep's `sweep_id` (its folder's name, the id every record of
the sweep carries) and every point: run id, task, model, seed, sweep name, overrides, store, job number and config
(so that a point whose job ended before its run wrote a record can still get one: sweeps.status.settle).
`seqbench_jobs.json` (written by the SLURM launcher) maps job numbers to SLURM job ids.

Each sweep has a folder of its own, whatever the clock says: its name (`hydra.sweep.dir` in sweeps/config.yaml) is
the start time to the second and a random tag (`${seqbench.sweep_tag:}`), so that two sweeps started in the same
second never share a manifest.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from harness.errors import UserError
from harness.files import atomic_write

MANIFEST = "seqbench_sweep.json"
JOBS = "seqbench_jobs.json"

# Cached, like Hydra's `now`: every resolution in this process gives the same tag, and so do the sweep's SLURM jobs
# (Hydra copies the resolver cache into each job's config). Imported wherever a sweep folder is resolved: run.py,
# the sweeper and the SLURM launcher (a job unpickles the launcher, importing this module).
OmegaConf.register_new_resolver("seqbench.sweep_tag", lambda: secrets.token_hex(3), use_cache=True, replace=True)


def sweep_id(sweep_dir: Path) -> str:
    """The id of the sweep invocation that writes into `sweep_dir`: the folder's name (unique per sweep)."""
    return sweep_dir.resolve().name


def write_points(sweep_dir: Path, points: Sequence[Mapping[str, Any]]) -> None:
    text = json.dumps({"created": datetime.now(UTC).isoformat(timespec="seconds"), "sweep_id": sweep_id(sweep_dir),
                       "points": list(points)}, indent=1)
    atomic_write(sweep_dir / MANIFEST, text + "\n")


def read_manifest(sweep_dir: Path) -> dict[str, Any]:
    """The manifest: `points` (each with at least run_id, store, overrides, job_num) and `sweep_id` (None in
    manifests written before it existed)."""
    path = sweep_dir / MANIFEST
    if not path.is_file():
        raise UserError(f"{sweep_dir} is not a seqbench sweep directory (no {MANIFEST}); sweeps run with "
                        f"hydra/sweeper=seqbench write one")
    try:
        manifest = json.loads(path.read_text())
        points = manifest["points"]
        keys = ("run_id", "store", "overrides", "job_num")
        if not isinstance(points, list) or not all(isinstance(p, dict) and all(k in p for k in keys) for p in points):
            raise ValueError(f"not a list of points with {', '.join(keys)}")
    except (ValueError, KeyError, TypeError) as exc:  # cut short or overwritten (JSONDecodeError is a ValueError)
        raise UserError(f"{path} is not a readable sweep manifest ({type(exc).__name__}: {exc}); rerun the sweep's "
                        f"command (it writes a new sweep directory and skips complete points), or give another "
                        f"sweep directory") from None
    return {"sweep_id": manifest.get("sweep_id"), "points": points}


def read_points(sweep_dir: Path) -> list[dict[str, Any]]:
    return read_manifest(sweep_dir)["points"]


def record_jobs(sweep_dir: Path, jobs: Mapping[int, str]) -> None:
    """Add job number -> SLURM job id; a sweep launched in batches records each batch's jobs in turn."""
    known = read_jobs(sweep_dir)
    known.update({str(num): job_id for num, job_id in jobs.items()})
    atomic_write(sweep_dir / JOBS, json.dumps(known, indent=1) + "\n")


def read_jobs(sweep_dir: Path) -> dict[str, str]:
    path = sweep_dir / JOBS
    if not path.exists():
        return {}
    try:
        jobs = json.loads(path.read_text())
        if not isinstance(jobs, dict):
            raise ValueError("not a map of job numbers to SLURM job ids")
    except ValueError as exc:
        raise UserError(f"{path} is not a readable list of the sweep's SLURM jobs ({type(exc).__name__}: {exc}); "
                        f"delete it (states then come from the store alone)") from None
    return jobs


def find_sweep(root: Path) -> Path:
    """The newest sweep directory under a `paths.root`."""
    manifests = sorted(root.glob(f"hydra/multirun/*/{MANIFEST}"), key=lambda p: p.stat().st_mtime)
    if not manifests:
        raise UserError(f"no sweep found under {root}/hydra/multirun; give the sweep directory")
    return manifests[-1].parent
