"""What runs print: counters as plain lines in a file (never a bar), a CPU run that says what it will cost and shows
progress within a minute, plural forms, and an environment record without a CUDA it did not use."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import torch

from harness import env, progress
from harness.progress import ProgressLog, bar, plural
from tests.helpers import ROOT


class Clock:
    """time.perf_counter for harness.progress, advanced by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(progress.time, "perf_counter", fake)
    return fake


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plural() -> None:
    assert [plural(n, "point") for n in (0, 1, 2, 1200)] == ["0 points", "1 point", "2 points", "1,200 points"]
    assert plural(1, "SLURM job") == "1 SLURM job" and plural(3, "entry", "entries") == "3 entries"


def test_a_counter_in_a_file_writes_a_few_plain_lines_and_no_bar(clock: Clock) -> None:
    """10 s an item, 20 items: a line once 30 s have passed, then one a minute (at 30, 90, 150 s)."""
    out = io.StringIO()
    for _ in bar(range(20), desc="generating ListOps", unit="expr", stream=out):
        clock.now += 10
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines == [f"seqbench: generating ListOps: {n}/20 ({n / 20:.0%}) expr, ETA {eta}"
                     for n, eta in ((3, "2m50s"), (9, "1m50s"), (15, "0m50s"))]  # 10 s x the items left
    assert bar(total=5, stream=_Terminal()).__class__.__name__ == "tqdm"  # a terminal gets tqdm's bar


def test_a_disabled_counter_prints_nothing(clock: Clock) -> None:
    out = io.StringIO()
    counter = bar(total=100, desc="x", disable=True, stream=out)
    for _ in range(100):
        clock.now += 60
        counter.update(1)
    counter.close()
    assert out.getvalue() == ""


def test_a_long_cpu_run_says_what_it_costs_within_a_minute(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """9 s a step, 3,000 steps an epoch, 10 epochs: after three steps (27 s) one line with the steps, the time and
    how to shrink the run; then a progress line once a minute has passed without one, then every ten minutes."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = io.StringIO()
    log = ProgressLog(True, 10, 3000, 30000, "accuracy", 0, stream=out)
    log.start_epoch(0, 0)
    seen = []
    for _ in range(80):  # 720 s
        clock.now += 9
        log.step(64_000)
        seen.append(out.getvalue().count("\n"))
    lines = out.getvalue().splitlines()
    # After the third step: 7h30m an epoch (3,000 x 9 s), 9 s x 29,997 steps = 269,973 s = 3 days 2 h 59 m left.
    assert lines[0] == ("seqbench: no GPU found: this run trains on the CPU, 9.0 s a step: 30,000 steps (3,000 steps "
                        "an epoch), about 7h30m an epoch and 3d02h to the end. To try it in about 10m00s: "
                        f"train.epochs=null train.max_steps={600 // 9} train.limit_eval_batches=10, or shrink the task "
                        "(its options: `python -m harness list`), or run it on a GPU")
    # Printed at the third step; the first progress line once a minute has passed (step 7, 63 s), the next ten
    # minutes after it (step 74, 666 s).
    assert (seen.index(1), seen.index(2), seen.index(3), seen[-1]) == (2, 6, 73, 3)
    assert all(re.fullmatch(r"seqbench: epoch 1/10 step \d+/30000 \| [\d.]+k tokens/s \| ETA \d+d\d\dh", line)
               for line in lines[1:]), lines[1:]


def test_a_short_cpu_run_says_nothing_more(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = io.StringIO()
    log = ProgressLog(False, 1, 100, 100, "accuracy", 0, stream=out)  # 1 s a step: under ten minutes in all
    log.start_epoch(0, 0)
    for _ in range(100):
        clock.now += 1
        log.step(100)
    assert out.getvalue() == ""


def test_the_environment_names_cuda_only_where_the_run_used_it() -> None:
    assert env.capture(torch.device("cpu"))["cuda"] is None
    assert env.capture(torch.device("cpu"))["torch"] == torch.__version__  # which build it was stays recorded


@pytest.mark.parametrize(("scontrol", "restarts_at_start", "cancelled"), [
    ("JobState=COMPLETING Reason=None Restarts=0 RunTime=00:00:12 TimeLimit=00:30:00 EndTime=2026-12-06T15:00:06",
     None, True),  # scancel: ending, not requeued, time left
    ("JobState=CANCELLED Restarts=2 RunTime=00:00:12 TimeLimit=UNLIMITED", "2", True),
    ("JobState=COMPLETING Restarts=1 RunTime=00:00:00 TimeLimit=UNLIMITED EndTime=Unknown", None, False),  # requeue
    ("JobState=COMPLETING Restarts=0 RunTime=00:30:00 TimeLimit=00:30:00", None, False),  # its time limit
    ("JobState=RUNNING Restarts=0 RunTime=00:00:12 TimeLimit=UNLIMITED", None, False),  # a signal only
])
def test_a_job_knows_whether_slurm_cancelled_it(monkeypatch: pytest.MonkeyPatch, scontrol: str,
                                                restarts_at_start: str | None, cancelled: bool) -> None:
    """`scontrol show job -o` lines as the local cluster printed them inside jobs stopped by scancel and by
    `scontrol requeue` (sweeps/cluster), and the other ways a job is told to stop."""
    monkeypatch.setenv("SLURM_JOB_ID", "14")
    if restarts_at_start is None:
        monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    else:
        monkeypatch.setenv("SLURM_RESTART_COUNT", restarts_at_start)
    asked = []

    def run(command: list[str], **kwargs: object) -> object:
        asked.append(command)
        return type("Done", (), {"returncode": 0, "stdout": f"JobId=14 JobName=x {scontrol} Partition=local\n"})()

    monkeypatch.setattr(env.subprocess, "run", run)
    assert env.slurm_cancelled() is cancelled
    assert asked == [["scontrol", "show", "job", "-o", "14"]]
    monkeypatch.delenv("SLURM_JOB_ID")
    assert env.slurm_cancelled() is False  # outside SLURM: never asks


def test_no_module_writes_a_tqdm_bar_of_its_own() -> None:
    """Counters go through harness.progress.bar, which never draws a bar in a file."""
    users = sorted(str(p.relative_to(ROOT)) for folder in ("harness", "tasks", "models", "sweeps")
                   for p in (ROOT / folder).rglob("*.py") if re.search(r"^from tqdm import", p.read_text(), re.M))
    assert users == ["harness/progress.py"], users


def test_no_progress_bar_reaches_a_run_log(tmp_path: Path) -> None:
    """Fingerprinting enough files to count them, with stderr a file (a SLURM log): no bar in it (tqdm would write
    its `  0%|          | 0/2100` and `100%|██████████|` lines there)."""
    from tasks._fingerprint import files_fingerprint

    files = []
    for i in range(2100):  # over the 2,000 files from which fingerprinting counts
        path = tmp_path / f"{i}.txt"
        path.write_text(str(i))
        files.append(path)
    log = tmp_path / "job.err"
    with log.open("w") as err, pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stderr", err)
        files_fingerprint(files, tmp_path, None)
    assert "%|" not in log.read_text() and "\r" not in log.read_text()
