"""Sweeps on a real SLURM cluster (sweeps/cluster/slurm_local.sh start): submit, wait or collect later, requeue,
cancel, an unreachable controller, torch's threads in a job; and, without a cluster, how `python -m sweeps.status`
reads SLURM's accounting and scopes a sweep's report.

The cluster tests are skipped when `sinfo` does not answer. Each uses its own results root (fresh submitit folders)
and cancels whatever jobs it submitted.
"""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from harness import runner
from harness.results import Store
from sweeps import manifest, slurm, status
from sweeps.manifest import JOBS, MANIFEST, find_sweep
from tests.helpers import ROOT, TINY_LISTOPS, compose_run, run_py

cluster_test = pytest.mark.slurm


@functools.cache
def _sinfo_answers() -> bool:
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Path]:
    if not _sinfo_answers():
        pytest.skip("no SLURM cluster answers `sinfo`: start one with `bash sweeps/cluster/slurm_local.sh start` "
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


def submit(tmp_path: Path, *args: str, timeout: int,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A sweep through the local cluster; results under `tmp_path / "results"`. From the repo root: the jobs import
    harness from their working directory."""
    return run_py(tmp_path, "-m", "hydra/sweeper=seqbench", "hydra/launcher=slurm_local", *args, timeout=timeout,
                  cwd=ROOT, env=env)


def job_log(sweep_dir: Path, job_id: str) -> str:
    return "".join(f.read_text() for f in sweep_dir.glob(f".submitit/{job_id}/*.err"))


@cluster_test
@pytest.mark.slow  # a sweep through the cluster: about 15 s
def test_a_sweep_runs_through_slurm_and_every_record_lands(cluster: Path) -> None:
    """Also: the jobs size torch's threads to their CPUs (1 each here), not to the node's cores nor to an
    OMP_NUM_THREADS they inherit (none here); and a blocking sweep does not warn about accounting."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = submit(cluster, *tiny(64, 1), "seed=0,1", timeout=150, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "sacct error" not in out.stderr  # submitit reads job states from the cluster's accounting
    sweep_dir = find_sweep(cluster / "results")
    jobs = json.loads((sweep_dir / JOBS).read_text())
    for job in jobs.values():
        assert f"seqbench: SLURM job {job}: 1 CPUs allocated, torch threads 1\n" in job_log(sweep_dir, job)
    records = {r["run_id"]: r for r in Store(cluster / "results" / "store").records()}
    manifest = json.loads((sweep_dir / MANIFEST).read_text())
    assert {p["run_id"] for p in manifest["points"]} == set(records) and len(records) == 2
    for point in manifest["points"]:
        record = records[point["run_id"]]
        assert record["status"] == "complete" and f"seed={record['seed']}" in point["overrides"]
        slurm = record["env"]["slurm"]  # the record was written inside the SLURM job the launcher submitted
        assert f"{slurm['array_job_id']}_{slurm['array_task_id']}" == jobs[str(point["job_num"])]
    assert {r["state"] for r in status.sweep_status(sweep_dir)} == {"done"}

    again = submit(cluster, *tiny(64, 1), "seed=0,1", timeout=60)  # idempotent: nothing left to submit
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 already complete (skipped), 0 to run" in again.stdout and "submitted" not in again.stdout


def _wait_for(condition, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.3)


@cluster_test
@pytest.mark.slow  # two requeues waited for: about 30 s
def test_stopped_jobs_are_requeued_and_finish_as_if_never_stopped(cluster: Path) -> None:
    """Submit and return; stop one job the way a time limit does (USR2, submitit's checkpoint signal) and one
    with `scontrol requeue` (SIGTERM, then SLURM restarts it); both resume from their checkpoints."""
    args = [*tiny(480, 5), "seed=0,1"]
    out = submit(cluster, *args, "hydra.sweeper.wait=false", timeout=90)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    sweep_dir = find_sweep(cluster / "results")
    assert {r["state"] for r in status.sweep_status(sweep_dir)} <= {"queued", "running"}  # submitted, not waited for
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
        return {r["state"] for r in status.sweep_status(sweep_dir)} == {"done"}

    _wait_for(all_done, 150, "both requeued jobs to finish")
    store = Store(cluster / "results" / "store")
    for point, signame in zip(points, ("SIGUSR2", "SIGTERM")):  # the run itself checkpointed mid-training
        log = job_log(sweep_dir, jobs[str(point["job_num"])])
        assert f"seqbench: stopped by signal {signame}, checkpoint written" in log
    for reference in references:
        record = store.get(reference["run_id"])
        assert record["env"]["slurm"]["restart_count"] == "1"  # it was stopped and started again
        assert record["metrics"]["history"] == reference["metrics"]["history"]  # losses and metrics, exactly
        assert (record["metrics"]["val"], record["metrics"]["test"]) == (reference["metrics"]["val"],
                                                                         reference["metrics"]["test"])
    collected = subprocess.run([sys.executable, "-m", "sweeps", "collect", str(sweep_dir)], cwd=ROOT,
                               capture_output=True, text=True, timeout=60)
    assert collected.returncode == 0, collected.stderr
    assert sorted(json.loads(line)["run_id"] for line in collected.stdout.splitlines()) == sorted(
        r["run_id"] for r in references)


@cluster_test
@pytest.mark.slow  # three jobs, two cancelled, each waited for: about a minute
def test_cancelled_jobs_end_a_waiting_sweep_and_read_as_cancelled(cluster: Path) -> None:
    """Three jobs on two CPUs: cancel the pending one and a running one. The blocking sweep ends (SLURM's accounting
    says the jobs ended) naming both, the third completes, and `status` says cancelled for the two."""
    command = [sys.executable, str(ROOT / "run.py"), "-m", f"paths.root={cluster / 'results'}",
               f"paths.data={cluster / 'data'}", "hydra/sweeper=seqbench", "hydra/launcher=slurm_local",
               *tiny(480, 5), "seed=0,1,2"]
    waiting = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        _wait_for(lambda: bool(list((cluster / "results").glob(f"hydra/multirun/*/{JOBS}"))), 90, "the submission")
        sweep_dir = find_sweep(cluster / "results")
        jobs = json.loads((sweep_dir / JOBS).read_text())
        running, _, pending = (jobs[str(n)] for n in range(3))

        def started() -> bool:
            queue = status.squeue() or {}
            return queue.get(running) == "RUNNING" and queue.get(pending) == "PENDING"

        _wait_for(started, 60, "two jobs running and the third pending")
        subprocess.run(["scancel", pending], check=True, capture_output=True, timeout=30)
        point = json.loads((sweep_dir / MANIFEST).read_text())["points"][0]
        last = cluster / "results" / "runs" / point["run_id"] / "last.pt"  # the run handles SIGTERM from here on
        _wait_for(last.exists, 90, "the first checkpoint of the running job")
        subprocess.run(["scancel", running], check=True, capture_output=True, timeout=30)
        out, err = waiting.communicate(timeout=240)
    finally:
        waiting.kill()
    assert waiting.returncode == 2, out[-3000:] + err[-3000:]
    assert "2 of 3 runs did not complete" in err and "sacct error" not in err
    for job in (running, pending):
        assert f"cancelled: JobEndedWithoutResult: SLURM job {job} ended CANCELLED without a result" in err
    rows = status.sweep_status(sweep_dir)
    assert {r["job_id"]: r["state"] for r in rows} == {running: "cancelled", jobs["1"]: "done", pending: "cancelled"}
    # The store says the same, so the report does: the running job recorded it itself after checkpointing (it
    # asked the controller), the pending one never started and its record comes from accounting.
    records = {r["job_id"]: r["record_data"] for r in rows}
    assert records[running]["status"] == records[pending]["status"] == "cancelled"
    assert records[running]["error"].startswith("cancelled by SLURM (scancel); stopped by signal 15")
    assert records[pending]["error"].startswith(f"SLURM job {pending} ended CANCELLED (sacct) before its run wrote")
    assert {r["sweep_id"] for r in records.values()} == {sweep_dir.name}
    shown = subprocess.run([sys.executable, "-m", "sweeps", "status", str(sweep_dir)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "3 points: 1 done, 2 cancelled" in shown.stdout, shown.stdout + shown.stderr


@cluster_test
@pytest.mark.slow  # two jobs waited for without accounting: about 30 s
def test_a_waiting_sweep_ends_while_accounting_does_not_answer(cluster: Path) -> None:
    """Two jobs of two CPUs each on the two-CPU node: one runs, one waits. With slurmdbd stopped, cancel the waiting
    one: the blocking sweep still ends once the other has handed back its result and the cancelled one has left the
    queue, and it says what it could not confirm; `status` says that job's state is unknown, and once accounting
    answers again, cancelled (its record written then)."""
    command = [sys.executable, str(ROOT / "run.py"), "-m", f"paths.root={cluster / 'results'}",
               f"paths.data={cluster / 'data'}", "hydra/sweeper=seqbench", "hydra/launcher=slurm_local",
               "hydra.launcher.cpus_per_task=2", *tiny(64, 1), "seed=0,1"]
    waiting = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    script = ["bash", str(ROOT / "sweeps" / "cluster" / "slurm_local.sh")]
    try:
        _wait_for(lambda: bool(list((cluster / "results").glob(f"hydra/multirun/*/{JOBS}"))), 90, "the submission")
        sweep_dir = find_sweep(cluster / "results")
        jobs = json.loads((sweep_dir / JOBS).read_text())
        running, pending = jobs["0"], jobs["1"]

        def started() -> bool:
            queue = status.squeue() or {}
            return queue.get(running) == "RUNNING" and queue.get(pending) == "PENDING"

        _wait_for(started, 60, "one job running and the other pending")
        subprocess.run([*script, "stop-accounting"], check=True, capture_output=True, timeout=60)
        assert status.sacct([running]) is None  # no answer now
        subprocess.run(["scancel", pending], check=True, capture_output=True, timeout=30)
        out, err = waiting.communicate(timeout=180)
        rows = {r["job_id"]: r["state"] for r in status.sweep_status(sweep_dir)}
        assert status.main(["status", str(sweep_dir)]) == 0
    finally:
        waiting.kill()
        subprocess.run([*script, "start-accounting"], check=True, capture_output=True, timeout=120)
    assert waiting.returncode == 2, out[-3000:] + err[-3000:]
    assert rows == {running: "done", pending: "unknown"}
    assert "1 of 2 runs did not complete" in err and "sacct error" not in err
    assert (f"unknown: JobEndedWithoutResult: SLURM job {pending} left the queue without a result, and SLURM's "
            f"accounting (sacct) gave no answer: how it ended (cancelled, out of memory, killed) is not "
            f"confirmed") in err
    assert "(SLURM's accounting (sacct) gave no answer for 1 job that left the queue" in err
    assert ": 1 without a record is unknown (cancelled, out of memory, killed?)" in err

    # Back, slurmdbd first hears of the jobs from the controller's backlog (still PENDING: not an end).
    def settled() -> bool:
        return {r["job_id"]: r["state"] for r in status.sweep_status(sweep_dir)} == {running: "done",
                                                                                     pending: "cancelled"}

    _wait_for(settled, 90, "accounting to say the waiting job was cancelled")
    records = {r["seed"]: r["status"] for r in Store(cluster / "results" / "store").records()}
    assert records == {0: "complete", 1: "cancelled"}  # so the report says what status says


@cluster_test
@pytest.mark.slow  # one job: about 20 s
def test_a_run_that_fails_on_slurm_is_recorded(cluster: Path) -> None:
    """A point whose data is missing fails in its job, after the sweep's check: a `failed` record with the cause,
    the sweep's message and `status` say failed; one point and one job, in the singular."""
    out = submit(cluster, *tiny(64, 1), "task.root=/empty", timeout=120)
    assert out.returncode == 2, out.stdout[-3000:] + out.stderr[-3000:]
    sweep_dir = find_sweep(cluster / "results")
    assert f"seqbench: sweep {sweep_dir.name} of 1 point: " in out.stdout and "submitted 1 SLURM job (" in out.stdout
    [record] = Store(cluster / "results" / "store").records()
    assert record["status"] == "failed" and record["error"].startswith("DataError: ListOps directory /empty does not")
    assert record["sweep_id"] == sweep_dir.name and record["env"]["slurm"] and record["env"]["cuda"] is None
    assert f"1 of 1 run did not complete (their records say why; `python -m sweeps status {sweep_dir}`)" in out.stderr
    assert f"{record['run_id']} (" in out.stderr and "): failed: DataError: ListOps directory /empty" in out.stderr
    assert [r["state"] for r in status.sweep_status(sweep_dir)] == ["failed"]


@cluster_test
@pytest.mark.slow  # a sweep's submission: a few seconds
def test_an_unreachable_controller_is_one_line_and_exit_2(cluster: Path) -> None:
    """The cluster's configuration with the controller on a closed port, for this one submission only."""
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).read_text().splitlines()
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    closed = cluster / "slurm.conf"
    # MessageTimeout=1: sbatch would otherwise retry for 9 s before it gives up.
    closed.write_text("\n".join([f"SlurmctldPort={port}", "MessageTimeout=1", *(
        line for line in conf if not line.startswith(("SlurmctldPort=", "MessageTimeout=")))]) + "\n")
    out = submit(cluster, *tiny(64, 1), "seed=0,1", timeout=120,
                 env={**os.environ, "OMP_NUM_THREADS": "1", "SLURM_CONF": str(closed)})
    assert out.returncode == 2, out.stdout[-3000:] + out.stderr[-3000:]
    assert re.fullmatch(r"seqbench: error: SLURM controller not reachable \(sbatch: error: .*Unable to contact slurm "
                        r"controller.*\); is slurmctld running\? .*slurm_local\.sh status`\)\n", out.stderr), out.stderr


@cluster_test
@pytest.mark.slow  # three jobs through the cluster: about 15 s
def test_a_sweep_over_models_with_model_options_runs_through_slurm(cluster: Path) -> None:
    """`model=a,b model.d_model=16`: each job composes its own model with the option (sweeps.sweeper)."""
    args = [*(a for a in tiny(64, 1) if not a.startswith("model")), "model=transformer,s4d,multires",
            "model.d_model=16"]
    out = submit(cluster, *args, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    records = list(Store(cluster / "results" / "store").records())
    assert sorted(r["model"] for r in records) == ["multires", "s4d", "transformer"]
    assert {r["status"] for r in records} == {"complete"} and all(r["env"]["slurm"] for r in records)
    assert {r["config"]["model"]["d_model"] for r in records} == {16}


def test_status_reads_how_a_job_ended_from_slurm_accounting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """sacct's lines, a pending array's tasks folded into one (`7_[2-3%8]`), and what they make of each point."""
    lines = [["7_0", "CANCELLED by 0"], ["7_1", "OUT_OF_MEMORY"], ["7_[2-3%8]", "CANCELLED by 0"], ["7_4", "FAILED"],
             ["7_5", "COMPLETED"]]
    monkeypatch.setattr(status, "_query", lambda command: lines if command[0] == "sacct" else [])
    assert status.expand_array("7_[0-2,5%4]") == ["7_0", "7_1", "7_2", "7_5"]
    assert status.sacct(["7_0", "7_3"]) == {"7_0": "CANCELLED", "7_1": "OUT_OF_MEMORY", "7_2": "CANCELLED",
                                          "7_3": "CANCELLED", "7_4": "FAILED", "7_5": "COMPLETED"}
    store = Store(tmp_path / "store")
    base = {"kind": "train", "task": "toy", "model": "m", "seed": 0, "config": {}}
    store.write({**base, "run_id": "a", "status": "preempted", "error": "stopped by signal 15 at step 3"})
    store.write({**base, "run_id": "f", "status": "preempted"})  # ended, not cancelled: rerunning resumes it
    names = "abcdef"
    (tmp_path / MANIFEST).write_text(json.dumps({"sweep_id": "sw1", "points": [
        {"run_id": n, "overrides": [f"seed={i}"], "store": str(store.root), "job_num": i, "sweep": "s",
         "sweep_id": "sw1", "task": "toy", "model": "m", "seed": i, "config": {"seed": i}}
        for i, n in enumerate(names)]}))
    (tmp_path / JOBS).write_text(json.dumps({str(i): f"7_{i}" for i in range(6)}))
    expected = {"a": "cancelled", "b": "oom", "c": "cancelled", "d": "cancelled", "e": "failed", "f": "preempted"}
    assert {r["run_id"]: r["state"] for r in status.sweep_status(tmp_path)} == expected
    # What accounting alone knew is now in the store, so a report (which reads the store) says the same, also once
    # accounting and the queue stop answering.
    assert {r["run_id"]: r["status"] for r in store.records()} == expected
    settled = store.get("c")
    assert (settled["sweep"], settled["sweep_id"], settled["seed"], settled["config"]) == ("s", "sw1", 2, {"seed": 2})
    assert settled["error"].startswith("SLURM job 7_2 ended CANCELLED (sacct) before its run wrote a record")
    assert "stopped by signal 15 at step 3" in store.get("a")["error"]
    monkeypatch.setattr(status, "_query", lambda command: None)  # no squeue, no sacct: the store alone
    assert {r["run_id"]: r["state"] for r in status.sweep_status(tmp_path)} == expected


def test_sacct_without_rows_is_no_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """While slurmdbd is down sacct can exit 0 and print nothing ("Problem getting jobs for cluster"): for jobs that
    have run, that is no answer, not "no such job"."""
    monkeypatch.setattr(status, "_query", lambda command: [])
    assert status.sacct(["7_0"]) is None and status.sacct([]) == {}
    monkeypatch.setattr(status, "_query", lambda command: None)
    assert status.sacct(["7_0"]) is None


@pytest.mark.slow  # two runs and two reports: about 20 s
def test_a_sweep_report_holds_its_own_points_unless_pooled(tmp_path: Path) -> None:
    """Two sweeps of the same (default) name share a store: the second sweep's report has its own point only."""
    records = [runner.run(compose_run(tmp_path, *TINY_LISTOPS, "model.d_model=16", f"seed={s}")) for s in (0, 1)]
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    manifest.write_points(sweep_dir, [{"run_id": rid, "overrides": [f"seed={s}"], "store": str(tmp_path / "store"),
                                       "job_num": None, "sweep": records[0]["sweep"]}
                                      for s, rid in ((1, records[1]["run_id"]), (2, "not-run-yet"))])
    assert status.main(["collect", str(sweep_dir), "--report", str(tmp_path / "own")]) == 1  # seed 2 is missing
    assert sorted(p.name for p in (sweep_dir / status.RECORDS).iterdir()) == [f"{records[1]['run_id']}.json"]
    row = r"\| transformer \|.*\| {n} complete \| {n} \|"  # n: the complete runs the row pools
    assert re.search(row.format(n=1), (tmp_path / "own" / "leaderboard.md").read_text())
    assert status.main(["collect", str(sweep_dir), "--report", str(tmp_path / "pooled"), "--pool"]) == 1
    assert re.search(row.format(n=2), (tmp_path / "pooled" / "leaderboard.md").read_text())


def test_torch_threads_follow_the_cpus_slurm_gave_the_task(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))  # no binding: the node's 8 cores
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # inherited from the submitting shell; restored after the test
    allocations = [({"SLURM_CPUS_PER_TASK": "2", "SLURM_CPUS_ON_NODE": "4"}, 2),
                   ({"SLURM_CPUS_ON_NODE": "6", "SLURM_NTASKS_PER_NODE": "3"}, 2),  # no --cpus-per-task
                   ({"SLURM_CPUS_PER_TASK": "16"}, 8),  # never more than the cores it may run on
                   ({}, 8)]
    before = torch.get_num_threads()
    try:
        for env, cpus in allocations:
            for key in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE", "SLURM_NTASKS_PER_NODE"):
                monkeypatch.delenv(key, raising=False)
            for key, value in env.items():
                monkeypatch.setenv(key, value)
            assert slurm.use_allocated_cpus() == cpus == torch.get_num_threads() == int(os.environ["OMP_NUM_THREADS"])
    finally:
        torch.set_num_threads(before)
