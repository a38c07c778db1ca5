"""Every command in the README runs as written.

`run.py` commands (training, sweeps, the benchmark) run with `dry_run=true` appended: every point composed, checked
and its model built on fake tensors, what a real run does before its first step. The others run for real, each in
a fresh folder. A command
that only installs or starts something (pip, tests/setup.sh, the SLURM script, pytest, torchrun) is left to the
tests of that thing, and so is the quickstart (tests/test_quickstart.py).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

README = (ROOT / "README.md").read_text()
ELSEWHERE = ("python -m pip", "bash ", "python -m pytest", "torchrun")


def readme_commands() -> list[str]:
    """The README's shell commands: every line of its bash blocks and every `python ...` in its tables."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words:
                    found.append(shlex.join(words))
    for row in re.findall(r"^\|.*$", README, re.M):  # the Experiments table
        found += re.findall(r"`(python (?:run\.py|-m) [^`]+)`", row)
    placeholders = ("...", "\\|")
    return sorted({c for c in found if not c.startswith(ELSEWHERE) and c != "python run.py"
                   and not any(p in c for p in placeholders)})


COMMANDS = readme_commands()


# From a fresh folder, as from the repo root: `python -m reports` finds the repo's packages.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}


def run(tmp_path: Path, words: list[str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *words[1:]], cwd=tmp_path, capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def as_run(words: list[str], tmp_path: Path) -> list[str]:
    """`python run.py ARGS` from a fresh folder: the repo's run.py, dry, everything written under tmp_path."""
    args = words[2:]
    # A preset or flag first, then the outputs: Hydra takes `-m` only before the overrides.
    flags = [a for a in args if a.startswith("-")]
    rest = [a for a in args if not a.startswith("-")]
    return ["python", str(ROOT / "run.py"), *flags, *rest, "dry_run=true", f"paths.root={tmp_path / 'results'}",
            f"paths.data={tmp_path / 'data'}"]


def test_the_readme_has_commands() -> None:
    assert any(c.startswith("python run.py -m") for c in COMMANDS)
    assert any(c.startswith("python -m reports") for c in COMMANDS)


# Runs `run.py` once per command in one process (Hydra cleared between them): the imports are paid once.
DRIVER = """
import json, runpy, sys
from hydra.core.global_hydra import GlobalHydra
for argv in json.loads(sys.argv[1]):
    GlobalHydra.instance().clear()
    sys.argv = argv
    code = 0
    try:
        runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    sys.stderr.flush()
    print(f"@@exit {code}", flush=True)
"""


@pytest.mark.slow  # every `run.py` command of the README, dry: about half a minute
def test_readme_training_commands_dry_run(tmp_path: Path) -> None:
    commands = [c for c in COMMANDS if c.startswith("python run.py")]
    argvs = [as_run(shlex.split(c), tmp_path)[1:] for c in commands]
    out = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(argvs)], cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=600, env=ENV)
    parts = out.stdout.split("@@exit ")
    assert len(parts) == len(commands) + 1, out.stdout[-3000:]
    for command, before, after in zip(commands, parts, parts[1:]):
        code = int(after.split("\n", 1)[0])
        text = before.split("\n", 1)[1] if before is not parts[0] else before
        assert code == 0 and "Traceback" not in text, f"{command}\n{text[-3000:]}"
        assert any(line.startswith("{") for line in text.splitlines()), f"{command}: no dry-run line\n{text[-2000:]}"
    assert not (tmp_path / "data").exists()  # a dry run reads and generates nothing


OTHERS = [c for c in COMMANDS if not c.startswith("python run.py")]


@pytest.mark.slow  # one process per command: about 5 s each
@pytest.mark.parametrize("command", OTHERS)
def test_readme_command_runs(tmp_path: Path, command: str) -> None:
    words = shlex.split(command)
    if words[1:3] == ["-m", "reports"]:
        # A store to report on: two records of the committed H100 benchmark.
        store = tmp_path / "results" / "store"
        store.mkdir(parents=True)
        for src in sorted((ROOT / "reports" / "measured" / "h100-2026-11-23" / "store").glob("*.json"))[:2]:
            shutil.copy(src, store)
    elif words[1:3] == ["-m", "tasks.listops"]:
        # As written but smaller: the LRA sizes take minutes to generate, the same code either way.
        sizes = {"--train": "40", "--val": "8", "--test": "8"}
        words = [sizes.get(prev, w) for prev, w in zip([""] + words, words)]
    out = run(tmp_path, words)
    assert out.returncode == 0, f"{command}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    assert "Traceback" not in out.stderr
