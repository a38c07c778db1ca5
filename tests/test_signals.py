"""A stop signal ends the whole process: the running run checkpoints (harness.checkpoint) and `run.py` exits with
128 + the signal instead of going on to the next point of a local sweep or the next model of the quickstart."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT

# Small ListOps, and epochs of about a second: the signal comes during the second epoch of the first run.
SMALL = ["task=listops", "task.n_train=600", "task.n_val=50", "task.n_test=50", "task.min_length=20",
         "task.max_length=80", "task.max_depth=4", "task.l_max=80", "model=s4d", "model.d_model=32",
         "model.n_layers=2", "train.epochs=4", "train.batch_size=8"]


def stop(tmp_path: Path, sig: signal.Signals, when: str, *args: str) -> tuple[int, str, list[dict]]:
    """Run `python run.py ARGS`, send `sig` once a file matching `when` exists under paths.root; its exit status,
    stderr and the records it left, after checking that no second run started."""
    results = tmp_path / "results"
    flags = [a for a in args if a.startswith("-")]
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *flags, f"paths.root={results}",
                             f"paths.data={tmp_path / 'data'}", "train.progress=false",
                             *(a for a in args if not a.startswith("-"))],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)})
    deadline = time.monotonic() + 300
    while not list(results.glob(when)):
        assert proc.poll() is None and time.monotonic() < deadline, f"the process ended before {when} existed"
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    records = [json.loads(p.read_text()) for p in (results / "store").glob("*.json")]
    assert len(list((results / "runs").glob("*"))) <= 1, "a second run started"
    return proc.returncode, err, records


FIRST_EPOCH = "runs/*/metrics.jsonl"


def test_sigterm_ends_a_local_sweep_with_the_running_point_checkpointed(tmp_path: Path) -> None:
    status, err, records = stop(tmp_path, signal.SIGTERM, FIRST_EPOCH, "-m", *SMALL, "seed=0,1")
    assert status == 128 + signal.SIGTERM, err[-2000:]
    assert [(r["seed"], r["status"]) for r in records] == [(0, "preempted")]
    assert "checkpoint written, rerun the same command to resume" in err and "Traceback" not in err
    assert list((tmp_path / "results" / "runs").glob("*/last.pt"))


@pytest.mark.slow  # each of these two: a process of 8 to 15 s
def test_a_signal_between_trainings_ends_a_local_sweep_too(tmp_path: Path) -> None:
    # Sent as soon as the sweep is checked (its manifest is written before the first point starts): the first point
    # is being set up, or has started training; either way nothing goes on after it.
    status, err, records = stop(tmp_path, signal.SIGUSR1, "hydra/multirun/*/seqbench_sweep.json", "-m", *SMALL,
                                "seed=0,1")
    assert status == 128 + signal.SIGUSR1, err[-2000:]
    assert all(r["seed"] == 0 and r["status"] == "preempted" for r in records) and "Traceback" not in err


@pytest.mark.slow
def test_sigint_ends_the_quickstart_with_the_running_model_checkpointed(tmp_path: Path) -> None:
    quickstart = ["quickstart.models=[s4d,transformer]", "quickstart.n_train=600", "quickstart.n_val=50",
                  "quickstart.n_test=50", "quickstart.min_length=20", "quickstart.max_length=80",
                  "quickstart.max_depth=4", "quickstart.epochs=4", "quickstart.batch_size=8"]
    status, err, records = stop(tmp_path, signal.SIGINT, FIRST_EPOCH, *quickstart)
    assert status == 128 + signal.SIGINT, err[-2000:]
    assert [(r["model"], r["status"]) for r in records] == [("s4d", "preempted")]
    assert "checkpoint written, rerun the same command to resume" in err and "Traceback" not in err
