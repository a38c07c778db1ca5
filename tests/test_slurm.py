"""Sweeps on a real SLURM cluster (harness/cluster/slurm_local.sh start): submit, wait or collect later, requeue.

Skipped when `sinfo` does not answer. Each test uses its own results root (fresh submitit folders) and cancels
whatever jobs it submitted.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import runner, sweep
from harness.manifest import JOBS, MANIFEST, find_sweep
from harness.results import Store
from tests.helpers import ROOT, compose_run, run_py

pytestmark = pytest.mark.slurm


@functools.cache
def _sinfo_answers() -> bool:
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Path]:
    if not _sinfo_answers():
        pytest.skip("no SLURM cluster answers `sinfo`: start one with `bash harness/cluster/slurm_local.sh start` "
                    "(root, Debian)")
    yield tmp_path
    for jobs in tmp_path.glob(f"results/hydra/multirun/*/{JOBS}"):  # leave nothing running
        ids = sorted({job.split("_")[0] for job in json.loads(jobs.read_text()).values()})
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


def tiny(n_train: int, epochs: int) -> list[str]:
    return ["task=listops", f"task.n_train={n_train}", "task.n_val=32", "task.n_test=32", "task.min_length=10",
            "task.max_length=40", "task.max_depth=3", "task.l_max=48", "model=transformer", "model.d_model=16",
            "model.n_layers=1", "model.n_heads=2", f"train.epochs={epochs}", "train.batch_size=16",
            "train.progress=false"]


def submit(tmp_path: Path, *args: str, timeout: int) -> subprocess.CompletedProcess[str]:
    """A sweep through the local cluster; results under `tmp_path / "results"`. From the repo root: the jobs import
    harness from their working directory."""
    return run_py(tmp_path, "-m", "hydra/sweeper=seqbench", "hydra/launcher=slurm_local", *args, timeout=timeout,
                  cwd=ROOT)


def test_a_sweep_runs_through_slurm_and_every_record_lands(cluster: Path) -> None:
    out = submit(cluster, *tiny(64, 1), "seed=0,1", timeout=150)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    sweep_dir = find_sweep(cluster / "results")
    jobs = json.loads((sweep_dir / JOBS).read_text())
    records = {r["run_id"]: r for r in Store(cluster / "results" / "store").records()}
    manifest = json.loads((sweep_dir / MANIFEST).read_text())
    assert {p["run_id"] for p in manifest["points"]} == set(records) and len(records) == 2
    for point in manifest["points"]:
        record = records[point["run_id"]]
        assert record["status"] == "complete" and f"seed={record['seed']}" in point["overrides"]
        slurm = record["env"]["slurm"]  # the record was written inside the SLURM job the launcher submitted
        assert f"{slurm['array_job_id']}_{slurm['array_task_id']}" == jobs[str(point["job_num"])]
    assert {r["state"] for r in sweep.sweep_status(sweep_dir)} == {"done"}

    again = submit(cluster, *tiny(64, 1), "seed=0,1", timeout=60)  # idempotent: nothing left to submit
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 already complete (skipped), 0 to run" in again.stdout and "submitted" not in again.stdout


def _wait_for(condition, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.3)


def test_stopped_jobs_are_requeued_and_finish_as_if_never_stopped(cluster: Path) -> None:
    """Submit and return; stop one job the way a time limit does (USR2, submitit's checkpoint signal) and one
    with `scontrol requeue` (SIGTERM, then SLURM restarts it); both resume from their checkpoints."""
    args = [*tiny(480, 5), "seed=0,1"]
    out = submit(cluster, *args, "hydra.sweeper.wait=false", timeout=90)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    sweep_dir = find_sweep(cluster / "results")
    assert {r["state"] for r in sweep.sweep_status(sweep_dir)} <= {"queued", "running"}  # submitted, not waited for
    jobs = json.loads((sweep_dir / JOBS).read_text())
    points = json.loads((sweep_dir / MANIFEST).read_text())["points"]
    for point, how in zip(points, (["scancel", "--signal=USR2"], ["scontrol", "requeue"])):
        last = cluster / "results" / "runs" / point["run_id"] / "last.pt"
        _wait_for(last.exists, 90, f"the first checkpoint of {point['run_id']}")  # after epoch 1 of 5
        subprocess.run([*how, jobs[str(point["job_num"])]], check=True, capture_output=True, timeout=30)

    # Meanwhile, the same runs uninterrupted, here (another results root, the same data: the same run ids).
    references = [runner.run(compose_run(cluster / "reference", *tiny(480, 5), f"seed={s}",
                                         f"paths.data={cluster / 'data'}")) for s in (0, 1)]

    def all_done() -> bool:
        return {r["state"] for r in sweep.sweep_status(sweep_dir)} == {"done"}

    _wait_for(all_done, 150, "both requeued jobs to finish")
    store = Store(cluster / "results" / "store")
    for point, signame in zip(points, ("SIGUSR2", "SIGTERM")):  # the run itself checkpointed mid-training
        log = "".join(f.read_text() for f in sweep_dir.glob(f".submitit/{jobs[str(point['job_num'])]}/*.err"))
        assert f"seqbench: stopped by signal {signame}, checkpoint written" in log
    for reference in references:
        record = store.get(reference["run_id"])
        assert record["env"]["slurm"]["restart_count"] == "1"  # it was stopped and started again
        assert record["metrics"]["history"] == reference["metrics"]["history"]  # losses and metrics, exactly
        assert (record["metrics"]["val"], record["metrics"]["test"]) == (reference["metrics"]["val"],
                                                                         reference["metrics"]["test"])
    collected = subprocess.run([sys.executable, "-m", "harness.sweep", "collect", str(sweep_dir)], cwd=ROOT,
                               capture_output=True, text=True, timeout=60)
    assert collected.returncode == 0, collected.stderr
    assert sorted(json.loads(line)["run_id"] for line in collected.stdout.splitlines()) == sorted(
        r["run_id"] for r in references)
