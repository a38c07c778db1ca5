"""What several test modules share: the repo root, composing a run config, running `run.py`, running a Triton
check in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from harness.registry import compose_config

ROOT = Path(__file__).resolve().parent.parent

# Tiny generated ListOps and a one-layer Transformer: a run takes about a second.
TINY_LISTOPS = ["task=listops", "task.n_train=64", "task.n_val=16", "task.n_test=16", "task.min_length=10",
                "task.max_length=40", "task.max_depth=3", "task.l_max=48", "model=transformer", "model.n_layers=1",
                "train.epochs=1", "train.batch_size=16", "train.progress=false"]


def compose_run(root: Path, *overrides: str) -> DictConfig:
    """The config `run.py` would compose, with every output under `root`."""
    return compose_config([f"paths.root={root}", f"paths.data={root / 'data'}", "train.progress=false", *overrides])


def run_py(tmp_path: Path, *args: str, timeout: int = 300, cwd: Path | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python run.py ARGS` as a user runs it, with results and data under `tmp_path`."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    paths = [f"paths.root={tmp_path / 'results'}", f"paths.data={tmp_path / 'data'}", "train.progress=false"]
    flags = [a for a in args if a.startswith("-")]  # Hydra's (-m): its parser takes no option after an override
    overrides = [a for a in args if not a.startswith("-")]
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *flags, *paths, *overrides], cwd=cwd or tmp_path,
                          capture_output=True, text=True, timeout=timeout,
                          env=env or {**os.environ, "OMP_NUM_THREADS": "1"})


def run_named_check(namespace: dict[str, Any]) -> None:
    """The other end of `run_triton_check`, under a test module's `if __name__ == "__main__"`: call the function of
    `namespace` (the module's globals) that argv names, and say that it returned."""
    namespace[sys.argv[1]]()
    print(f"{sys.argv[1]}: ok")


def run_triton_check(test_file: str, check: str, interpret: bool = True, **env: str) -> None:
    """Run the function `check` of the test module `test_file` in a fresh Python (`python TEST_FILE CHECK`, which
    prints "CHECK: ok" when it returns) and assert that it passed. Under Triton's interpreter by default: it must be
    chosen before triton is imported, hence the fresh process; `interpret=False` compiles for real instead."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    if interpret:
        environ |= {"TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    else:
        environ.pop("TRITON_INTERPRET", None)
    done = subprocess.run([sys.executable, test_file, check], cwd=ROOT, env=environ, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and f"{check}: ok" in done.stdout, done.stderr[-3000:]
