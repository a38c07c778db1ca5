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
