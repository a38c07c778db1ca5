"""Fault injection: a run SIGKILLed at random moments, also between writing a file and renaming it into place, and
rerun until it completes, ends with exactly the record metrics and metrics log of a run never interrupted.

Each attempt is this file run as a script (`python -m tests.test_faults ROOT OVERRIDES...`): the wrapper below, the
only reader of its environment variables, slows the toy task's batches down so that random kills land inside
training, and kills its own process from inside `harness.files.atomic_write` when told to. Production code has no
test hooks.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT

KILL_AT_WRITE = "SEQBENCH_TEST_KILL_AT_WRITE"  # SIGKILL itself in its Nth atomic write, the file written, not renamed
BATCH_DELAY = "SEQBENCH_TEST_BATCH_DELAY"  # seconds of sleep per batch
BATCHES = "SEQBENCH_TEST_BATCHES"  # a file that grows by a byte per batch
DELAY = 0.02
EPOCHS = 6
# Writes of a fresh attempt: config.yaml, then last.pt and metrics.jsonl per epoch, then the record.
FINAL_METRICS_WRITE = 1 + 2 * EPOCHS
ARGS = ["task=toy", "model=transformer", "model.d_model=16", "model.n_layers=1", "train.batch_size=16",
        f"train.epochs={EPOCHS}"]


def _attempt(root: Path, kill_after_batches: int | None = None, kill_at_write: int | None = None,
             seed: int = 0, extra: tuple[str, ...] = (), signum: int = signal.SIGKILL) -> tuple[int, str]:
    """Run the wrapper once, SIGKILLing it at a random moment after its `kill_after_batches`th batch (counted across
    training and evaluation, so independent of the machine's load) or inside its `kill_at_write`th atomic write;
    returns its exit status and output. Another `signum` goes to the wrapper's whole process group, as a terminal's
    Ctrl-C or SLURM's signals do."""
    batches = root.parent / f"{root.name}.batches"
    batches.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", BATCH_DELAY: str(DELAY), BATCHES: str(batches)}
    if kill_at_write is not None:
        env[KILL_AT_WRITE] = str(kill_at_write)
    proc = subprocess.Popen([sys.executable, "-m", "tests.test_faults", str(root), *ARGS, *extra], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    if kill_after_batches is not None:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if batches.exists() and batches.stat().st_size >= kill_after_batches:
                time.sleep(random.Random(seed).uniform(0, 2 * DELAY))  # anywhere in the step, or the next
                if signum == signal.SIGKILL:
                    proc.kill()
                else:
                    os.killpg(proc.pid, signum)
                break
            time.sleep(0.002)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out + err


def _outcome(root: Path) -> tuple[dict[str, Any], str]:
    [record_path] = (root / "store").glob("*.json")
    record = json.loads(record_path.read_text())
    assert record["status"] == "complete"
    return record["metrics"], (root / "runs" / record["run_id"] / "metrics.jsonl").read_text()


def _complete(root: Path) -> bool:
    return any(json.loads(p.read_text())["status"] == "complete" for p in (root / "store").glob("*.json"))


def _assert_clean(root: Path) -> None:
    """No temporary file of a killed writer and no lock are left once the run has completed."""
    assert not list(root.rglob(".*.tmp")) and not list(root.rglob("run.lock*"))


@pytest.mark.slow  # ten processes of a few seconds each
def test_killed_at_random_the_rerun_run_ends_as_an_uninterrupted_one(tmp_path: Path) -> None:
    code, log = _attempt(tmp_path / "reference")
    assert code == 0, log[-3000:]
    reference = _outcome(tmp_path / "reference")

    rng = random.Random(0)
    root = tmp_path / "killed"
    attempts = []
    # Alternately a kill at a random moment and a kill inside one of the next writes; then reruns until complete.
    for kind in ["moment", "write"] * 2 + ["none"] * 3:
        if _complete(root):
            break
        if kind == "moment":
            # A whole run loads EPOCHS x 8 batches (training and validation) and 2 of the test split.
            code, log = _attempt(root, kill_after_batches=rng.randint(1, 20), seed=rng.randrange(2**32))
        elif kind == "write":
            code, log = _attempt(root, kill_at_write=rng.randint(1, 5))
        else:
            code, log = _attempt(root)
        assert code in (0, -signal.SIGKILL), log[-3000:]
        attempts.append((kind, code))
    assert sum(code == -signal.SIGKILL for _, code in attempts) >= 3, f"too few attempts were killed: {attempts}"
    assert _outcome(root) == reference
    _assert_clean(root)

    # Killed right after the final checkpoint, before the metrics log of the last epoch is renamed into place.
    last = tmp_path / "after-final-checkpoint"
    code, log = _attempt(last, kill_at_write=FINAL_METRICS_WRITE)
    assert code == -signal.SIGKILL, log[-3000:]
    run_dir = next((last / "runs").iterdir())
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == EPOCHS - 1
    assert list(run_dir.glob(".metrics.jsonl.*.tmp"))
    code, log = _attempt(last)
    assert code == 0, log[-3000:]
    assert "taking over the lock" in log
    assert _outcome(last) == reference
    _assert_clean(last)


@pytest.mark.slow  # two processes of a few seconds each
def test_a_scheduler_signal_to_the_process_group_preempts_a_run_with_loader_workers(tmp_path: Path) -> None:
    """SLURM signals every process of a job, the loader's workers too: the run still checkpoints and is recorded
    preempted, not failed by a worker that died of the signal."""
    code, log = _attempt(tmp_path, kill_after_batches=10, extra=("train.num_workers=2",), signum=signal.SIGTERM)
    assert code != 0 and "Preempted: stopped by signal 15" in log, log[-3000:]
    [record] = (tmp_path / "store").glob("*.json")
    assert json.loads(record.read_text())["status"] == "preempted"


def _kill_inside_write(n: int) -> None:
    """Make the process SIGKILL itself in its `n`th atomic write, once the temporary file is whole."""
    from harness import checkpoint, files, results, runner, train

    write = files.atomic_write
    count = 0

    def killing_write(path: Path, content: Any) -> None:
        nonlocal count
        count += 1
        if count != n:
            return write(path, content)

        def write_then_die(tmp: Path) -> None:
            if callable(content):
                content(tmp)
            else:
                tmp.write_bytes(content.encode() if isinstance(content, str) else content)
            os.kill(os.getpid(), signal.SIGKILL)

        return write(path, write_then_die)

    for module in (files, checkpoint, results, runner, train):
        module.atomic_write = killing_write


def _slow_batches(seconds: float, count: Path) -> None:
    import tests.toy as toy

    collate = toy.collate

    def slow(items: list[Any]) -> Any:
        with open(count, "a") as f:
            f.write(".")
        time.sleep(seconds)
        return collate(items)

    toy.collate = slow


def main(root: str, *overrides: str) -> None:
    import tests.toy  # noqa: F401  (registers the toy task)
    from harness import runner
    from tests.helpers import compose_run

    if KILL_AT_WRITE in os.environ:
        _kill_inside_write(int(os.environ[KILL_AT_WRITE]))
    _slow_batches(float(os.environ[BATCH_DELAY]), Path(os.environ[BATCHES]))
    runner.run(compose_run(Path(root), *overrides))


if __name__ == "__main__":
    main(*sys.argv[1:])
