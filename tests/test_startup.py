"""Commands that do not train start quickly: they import none of the heavy libraries that only training, reports or
SLURM need (checked in sys.modules of a fresh process, not by timing). torch._dynamo (with sympy, 1.5 s) comes
with torch's first optimizer and with fake and meta tensors: a plain dry run uses none of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

HEAVY = ("pandas", "scipy", "matplotlib", "seaborn", "submitit", "torch._dynamo", "sympy")
REPORT = (f"import atexit, json, sys; atexit.register(lambda: print('IMPORTED', json.dumps([m for m in {HEAVY!r} "
          f"if m in sys.modules])))")


def imported(tmp_path: Path, run: str) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    """The heavy modules a fresh interpreter has imported when `run` (Python code) ends, however it ends."""
    out = subprocess.run([sys.executable, "-c", f"{REPORT}\n{run}"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    line = next(line for line in out.stdout.splitlines() if line.startswith("IMPORTED "))
    return json.loads(line.removeprefix("IMPORTED ")), out


def test_harness_list_imports_nothing_heavy(tmp_path: Path) -> None:
    modules, out = imported(tmp_path, "import runpy; sys.argv = ['harness', 'list']; "
                                      "runpy.run_module('harness', run_name='__main__', alter_sys=True)")
    assert out.returncode == 0 and "model.d_model" in out.stdout, out.stderr[-2000:]
    assert modules == []


@pytest.mark.parametrize(("args", "status"), [
    (["--help"], 0),
    (["task=listops"], 2),  # a config error from the job
    (["task=listops", "model=s4d", "task.n_train=64", "dry_run=true"], 0),
])
def test_run_py_without_training_imports_nothing_heavy(tmp_path: Path, args: list[str], status: int) -> None:
    argv = ["run.py", f"paths.root={tmp_path}", f"paths.data={tmp_path}", *args]
    modules, out = imported(tmp_path, f"import runpy; sys.argv = {argv!r}; "
                                      f"runpy.run_path({str(ROOT / 'run.py')!r}, run_name='__main__')")
    assert out.returncode == status, out.stderr[-2000:]
    assert modules == []
