"""The entry points as a user meets them: listing, and one clear message on every bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.__main__ import list_registered
from harness.registry import MODELS, TASKS

ROOT = Path(__file__).resolve().parent.parent


def run_py(tmp_path: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, str(ROOT / "run.py"), f"paths.root={tmp_path / 'results'}",
                           f"paths.data={tmp_path / 'data'}", "train.progress=false", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=timeout,
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)})


def test_list_shows_every_registered_task_and_model_with_options() -> None:
    text = list_registered()
    for name in TASKS.names() + MODELS.names():
        assert f"  {name}:" in text
    assert "model.d_model: int = 128" in text  # the transformer's option, with its default
    assert {"listops", "scifar", "ptbxl", "cifar_bpd", "speech_commands"} <= set(TASKS.names())
    assert {"transformer", "multires", "s4", "s4d", "sgconv", "wavspa"} <= set(MODELS.names())


@pytest.mark.parametrize(("args", "expected"), [
    (["task=nosuch", "model=transformer"], "Could not find 'task/nosuch'"),
    (["task=listops", "model=nosuch"], "Could not find 'model/nosuch'"),
    (["task=listops", "model=transformer", "train.nosuch=1"], "Key 'nosuch' not in 'TrainConfig'"),
    (["task=listops", "model=transformer", "model.nosuch=1"], "nosuch"),
    (["task=listops"], "no model chosen"),
    (["task=listops", "model=transformer", "task.root=/nonexistent/listops"], "/nonexistent/listops"),
    (["task=scifar", "model=transformer", "task.download=false"], "cifar-10"),
])
def test_bad_input_gets_one_clear_message_and_no_traceback(tmp_path: Path, args: list[str], expected: str) -> None:
    out = run_py(tmp_path, *args)
    assert out.returncode != 0
    assert expected in out.stderr + out.stdout
    assert "Traceback" not in out.stderr + out.stdout
    assert not (tmp_path / "results" / "store").exists() or not any((tmp_path / "results" / "store").iterdir())


def test_a_tsv_with_the_wrong_columns_is_named(tmp_path: Path) -> None:
    root = tmp_path / "lra"
    root.mkdir()
    for split in ("train", "val", "test"):
        (root / f"basic_{split}.tsv").write_text("Input\tLabel\n( [MAX 1 2 ] )\t2\n")
    out = run_py(tmp_path, "task=listops", "model=transformer", f"task.root={root}")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "basic_train.tsv" in out.stderr and "Source" in out.stderr


def test_sigterm_checkpoints_and_the_rerun_ends_as_an_uninterrupted_run(tmp_path: Path) -> None:
    """The user's view of resume: stop a run with SIGTERM after its first epoch, rerun the same command."""
    import json
    import signal
    import time

    args = ["task=listops", "task.n_train=600", "task.n_val=50", "task.n_test=50", "task.min_length=20",
            "task.max_length=80", "task.max_depth=4", "task.l_max=80", "model=s4d", "model.d_model=32",
            "model.n_layers=2", "train.epochs=4", "train.batch_size=8", "seed=3"]
    reference = run_py(tmp_path / "reference", *args)
    assert reference.returncode == 0, reference.stderr[-2000:]

    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(interrupted)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), f"paths.root={interrupted / 'results'}",
                             f"paths.data={interrupted / 'data'}", "train.progress=false", *args],
                            cwd=interrupted, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    while not list((interrupted / "results" / "runs").glob("*/metrics.jsonl")):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its first epoch"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM and "rerun the same command to resume" in err
    assert "Traceback" not in err
    record = json.loads(next((interrupted / "results" / "store").glob("*.json")).read_text())
    assert record["status"] == "preempted"

    resumed = run_py(interrupted, *args)  # the same command again
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    stores = [next((d / "results" / "store").glob("*.json")) for d in (tmp_path / "reference", interrupted)]
    a, b = (json.loads(p.read_text()) for p in stores)
    assert a["run_id"] == b["run_id"] and b["status"] == "complete"
    assert a["metrics"]["history"] == b["metrics"]["history"]
    assert (a["metrics"]["val"], a["metrics"]["test"]) == (b["metrics"]["val"], b["metrics"]["test"])
