"""Hostile inputs to one run (issue 26): none may end in a wrong result recorded as right, or in a traceback.

A checkpoint resumes only the run and the data it was made for; every learning rate and weight decay, the model's
own included, is in range before any work; a full disk or a file-size limit inside torch's zip writer, a folder that
cannot be written and a stop signal before training each end in one line naming the cause and the fix, leaving no
lock and nothing half-written; closing the terminal (SIGHUP) checkpoints like SIGTERM; two sweeps never share a
folder. In-process where the case allows it; through `run.py` where the exit status and the printed line are the
point.
"""

from __future__ import annotations

import errno
import io
import json
import os
import pty
import random
import resource
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir

import tests.toy as toy
from harness import checkpoint, runner
from harness import train as train_module
from harness.config import OptimConfig, TrainConfig
from harness.errors import ConfigError
from harness.files import DiskFull, WriteError
from harness.identity import run_id
from harness.jobs import dispatch
from harness.registry import MODELS, SWEEPS, TASKS
from tests.helpers import ROOT, TINY_LISTOPS, compose_run, run_py

TOY = ("task=toy", "model=transformer", "model.d_model=16", "model.n_layers=1", "train.batch_size=16")


def rid_of(cfg: Any) -> str:
    return run_id(runner.plain_config(cfg))


def last_pt(cfg: Any) -> Path:
    return runner.run_dir_for(cfg, rid_of(cfg)) / "last.pt"


def assert_nothing_left(cfg: Any) -> None:
    """No lock and no temporary file of a writer in the run's folder or the store."""
    root = Path(cfg.paths.root)
    assert not list(root.rglob("run.lock*")) and not list(root.rglob(".*.tmp"))


def stop_after_first_epoch(monkeypatch: pytest.MonkeyPatch, signum: int = signal.SIGTERM) -> None:
    """The next run gets `signum` right after its first epoch's checkpoint, as from a scheduler."""
    end_epoch = train_module.end_epoch

    def then_signal(state: train_module.Fit) -> None:
        end_epoch(state)
        if state.progress["epoch"] == 1:
            signal.raise_signal(signum)

    monkeypatch.setattr(train_module, "end_epoch", then_signal)


# ----------------------------------------------------------------------------------------------------------------
# A checkpoint resumes only its own run and data


@pytest.mark.parametrize(("donor", "differs"), [
    pytest.param(("seed=1", "optim.lr=0.01"), "optim.lr 0.01 there, 0.001 here; seed 1 there, 0 here",
                 id="another-seed-and-lr"),
    pytest.param(("model.d_model=32",), "model.d_model 32 there, 16 here", id="another-width"),
    pytest.param(("model=s4d", "model.n_layers=1"), "model.name s4d there, transformer here", id="another-model"),
])
def test_another_runs_checkpoint_is_refused_naming_what_differs(tmp_path: Path, donor: tuple[str, ...],
                                                                 differs: str) -> None:
    other = compose_run(tmp_path, *TOY, "train.epochs=1", *donor)
    assert runner.run(other)["status"] == "complete"
    cfg = compose_run(tmp_path, *TOY, "train.epochs=1")
    mine = last_pt(cfg)
    mine.parent.mkdir(parents=True)
    shutil.copy(last_pt(other), mine)  # planted where this run looks for its own

    with pytest.raises(checkpoint.CheckpointError) as refused:
        runner.run(cfg)
    message = str(refused.value)
    assert message.startswith(f"{mine} is the checkpoint of run {rid_of(other)}, not of {rid_of(cfg)} (")
    assert differs in message and "\n" not in message
    assert message.endswith("delete it to start this run over, or rerun with force=true")
    assert runner.store_for(cfg).get(rid_of(cfg)) is None  # no record claims the donor's training
    assert_nothing_left(cfg)
    assert runner.run(compose_run(tmp_path, *TOY, "train.epochs=1", "force=true"))["status"] == "complete"


def test_a_checkpoint_that_names_no_run_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As every checkpoint written before checkpoints named their run."""
    cfg = compose_run(tmp_path, *TOY, "train.epochs=2")
    stop_after_first_epoch(monkeypatch)
    with pytest.raises(checkpoint.Preempted):
        runner.run(cfg)
    monkeypatch.undo()
    state = torch.load(last_pt(cfg), weights_only=True)
    del state["identity"]
    torch.save(state, last_pt(cfg))
    with pytest.raises(checkpoint.CheckpointError, match="does not say which run and data it was made for .* "
                                                         "delete it to start this run over, or rerun with force=true"):
        runner.run(cfg)
    assert_nothing_left(cfg)


def test_a_checkpoint_whose_tensors_do_not_fit_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its identity matches (code changed under the same version, say), its shapes do not."""
    cfg = compose_run(tmp_path, *TOY, "train.epochs=2")
    stop_after_first_epoch(monkeypatch)
    with pytest.raises(checkpoint.Preempted):
        runner.run(cfg)
    monkeypatch.undo()
    state = torch.load(last_pt(cfg), weights_only=True)
    name = next(iter(state["model"]))
    state["model"][name] = torch.zeros(3, 5)
    torch.save(state, last_pt(cfg))
    with pytest.raises(checkpoint.CheckpointError) as refused:
        runner.run(cfg)
    assert str(refused.value).startswith(f"{last_pt(cfg)} does not fit this run's model (Error(s) in loading")
    assert "\n" not in str(refused.value)


def write_listops(root: Path, seed: int = 0) -> None:
    """A small release in the LRA format (a header, then expression and label, tab-separated)."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 64), ("val", 16), ("test", 16)):
        rows = []
        for _ in range(n):
            a, b, c = (rng.randrange(10) for _ in range(3))
            rows.append(f"( ( ( [MAX {a} ) {b} ) [MIN {c} {a} ] ) ] )\t{max(a, b, min(c, a))}\n")
        (root / f"basic_{split}.tsv").write_text("Source\tTarget\n" + "".join(rows))


def test_data_changed_between_stop_and_resume_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "lra"
    write_listops(data)
    args = (*TINY_LISTOPS, f"task.root={data}", "model.d_model=16", "train.epochs=3")
    cfg = compose_run(tmp_path, *args)
    stop_after_first_epoch(monkeypatch)
    with pytest.raises(checkpoint.Preempted):
        runner.run(cfg)
    monkeypatch.undo()
    train_file = data / "basic_train.tsv"
    original = train_file.read_bytes()
    lines = original.decode().splitlines(keepends=True)
    train_file.write_text(lines[0] + "".join(f"{line.rsplit(chr(9), 1)[0]}\t0\n" for line in lines[1:]))  # relabelled

    with pytest.raises(checkpoint.CheckpointError) as refused:
        runner.run(cfg)
    message = str(refused.value)
    assert message.startswith(f"{last_pt(cfg)} was written while training on other data (fingerprint ")
    assert "the data changed since this run stopped; put the data back to resume, or rerun with force=true" in message
    assert runner.store_for(cfg).get(rid_of(cfg))["status"] == "preempted"  # as the stop left it
    assert_nothing_left(cfg)

    train_file.write_bytes(original)  # the data as the run began with it: resumed
    assert runner.run(cfg)["status"] == "complete"


# ----------------------------------------------------------------------------------------------------------------
# Rates and ranges, before any work


@pytest.mark.parametrize(("args", "line"), [
    (("model=s4d", "model.ssm_lr=-1"), "model.ssm_lr=-1.0 must be a finite number > 0"),
    (("model=s4d", "model.dt_lr=-1"), "model.dt_lr=-1.0 must be a finite number > 0"),
    (("model=s4d", "model.ssm_weight_decay=-1"), "model.ssm_weight_decay=-1.0 must be a finite number >= 0"),
    (("model=sgconv", "model.kernel_lr=-1"), "model.kernel_lr=-1.0 must be a finite number > 0"),
    (("model=s4d", "model.ssm_lr=nan"), "model.ssm_lr=nan must be a finite number > 0"),
    (("model=s4d", "model.ssm_lr=inf"), "model.ssm_lr=inf must be a finite number > 0"),
    (("model=s4d", "model.c_lr=nan"), "model.c_lr=nan must be a finite number > 0"),
    (("model=s4d", "model.ssm_lr=1e9"), "model.ssm_lr=1000000000.0 must be at most 1e+06"),
    (("optim.lr=1e38",), "optim.lr=1e+38 must be at most 1e+06 (a larger rate overflows the optimizer's float32"),
    (("optim.lr=1e300",), "optim.lr=1e+300 must be at most 1e+06"),
    (("optim.weight_decay=1e300",), "optim.weight_decay=1e+300 must be at most 1e+06"),
    (("optim.eps=1e300",), "optim.eps=1e+300 must be at most 1e+06"),
    (("train.warmup_epochs=1e308",), "train.warmup_epochs=1e+308 must be at most 1e+06"),
    (("seed=100000000000000000000000",), "seed=100000000000000000000000 must be an integer from -4294967295 to"),
])
def test_rates_and_ranges_are_checked_before_any_work(tmp_path: Path, args: tuple[str, ...], line: str) -> None:
    cfg = compose_run(tmp_path, *TOY, *args)
    with pytest.raises(ConfigError) as refused:
        dispatch(cfg)
    assert str(refused.value).startswith(line) and "\n" not in str(refused.value)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "store").exists()


def test_a_rate_a_model_declares_under_any_name_is_checked(tmp_path: Path) -> None:
    """A parameter group (`p._optim`) whose rate no `*_lr` option names is still checked before training."""
    task = toy.build(toy.ToyConfig(), tmp_path)
    model = MODELS.build(MODELS.config("transformer", d_model=16, n_layers=1, n_heads=2, d_ff=32), task.spec)
    next(model.parameters())._optim = {"lr": -1.0}
    with pytest.raises(ConfigError, match=r"the lr of a parameter group the model declares \(p._optim\)=-1.0 must "):
        train_module.fit(model, task, TrainConfig(epochs=1, batch_size=16, progress=False), OptimConfig(), 0,
                         tmp_path / "run", torch.device("cpu"))
    assert not (tmp_path / "run" / "last.pt").exists()


def test_divergence_names_the_option_of_the_largest_rate(tmp_path: Path) -> None:
    record = runner.run(compose_run(tmp_path, *TOY, "model=s4d", "model.ssm_lr=1000", "train.epochs=2"))
    assert record["status"] == "diverged"
    assert ": lower model.ssm_lr (now 1000), clip gradients" in record["error"]


# ----------------------------------------------------------------------------------------------------------------
# Disks, limits and folders


class _Filling(io.RawIOBase):
    """A file that takes `room` bytes and then fails every write with `code`, as a disk that fills up does."""

    def __init__(self, f: io.BufferedWriter, room: int, code: int):
        self.f, self.room, self.code = f, room, code

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if len(data) > self.room:
            raise OSError(self.code, os.strerror(self.code))
        self.room -= len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        super().close()  # flushes first
        self.f.close()


@pytest.mark.parametrize(("code", "start"), [(errno.ENOSPC, "no space left on the disk of "),
                                             (errno.EFBIG, "")])
def test_a_write_failing_inside_torchs_zip_writer_is_one_line_and_keeps_the_last_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, start: str) -> None:
    """torch.save's zip writer turns the OSError of a failed write into `RuntimeError: [enforce fail at
    inline_container.cc] unexpected pos`; the disk-full (or file-size limit) line must still come out."""
    cfg = compose_run(tmp_path, *TOY, "train.epochs=2")
    stop_after_first_epoch(monkeypatch)
    with pytest.raises(checkpoint.Preempted):
        runner.run(cfg)
    monkeypatch.undo()
    before = last_pt(cfg).read_bytes()
    monkeypatch.setattr(checkpoint, "open", lambda path, mode: _Filling(open(path, mode), 4096, code), raising=False)

    with pytest.raises(DiskFull if code == errno.ENOSPC else WriteError) as error:
        runner.run(cfg)
    message = str(error.value)
    assert message.startswith(f"{start}{last_pt(cfg)}") and "\n" not in message
    assert "previous version of it is intact" in message and "rerun the same command to resume" in message
    if code == errno.EFBIG:
        assert "file-size limit (`ulimit -f`)" in message
    assert isinstance(error.value.__cause__.__cause__, RuntimeError)  # what torch raised
    assert last_pt(cfg).read_bytes() == before
    assert_nothing_left(cfg)
    monkeypatch.undo()
    assert runner.run(cfg)["status"] == "complete"  # the rerun resumes from the intact checkpoint


@pytest.mark.slow  # a process of 5 to 10 s
def test_a_file_size_limit_through_run_py_is_one_line(tmp_path: Path) -> None:
    """A real `ulimit -f`: the first checkpoint (about 2 MB) is over it, the small files are not."""
    limit = 256 * 1024

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    args = [f"paths.root={tmp_path / 'results'}", f"paths.data={tmp_path / 'data'}", *TINY_LISTOPS]
    out = subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=limited)
    assert out.returncode == 2, out.stderr[-3000:]
    [line] = [s for s in out.stderr.splitlines() if s.startswith("seqbench: error:")]
    assert "would exceed this shell's file-size limit (`ulimit -f`)" in line and "last.pt" in line
    assert "Traceback" not in out.stderr
    assert not list((tmp_path / "results").rglob("run.lock*")) and not list((tmp_path / "results").rglob(".*.tmp"))
    assert not list((tmp_path / "results").rglob("last.pt"))


def test_a_results_folder_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    """Hydra creates its output folder under paths.root before any of ours runs."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = run_py(tmp_path, *TINY_LISTOPS, f"paths.root={blocker / 'results'}")
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.startswith(f"seqbench: error: cannot write {blocker / 'results'}")
    assert "(Not a directory): point paths.root (results) or paths.data" in out.stderr
    assert len(out.stderr.splitlines()) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_results_folder_is_one_line(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    results.chmod(0o555)
    try:
        out = run_py(tmp_path, *TINY_LISTOPS)
    finally:
        results.chmod(0o755)
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1, out.stderr[-3000:]
    assert out.stderr.startswith(f"seqbench: error: cannot write {results}") and "(Permission denied)" in out.stderr


def test_a_run_folder_that_cannot_be_written_is_one_line_in_process(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = compose_run(blocker, *TOY, "train.epochs=1")
    with pytest.raises(WriteError, match=f"cannot write {blocker}/runs/.* point paths.root"):
        runner.run(cfg)


# ----------------------------------------------------------------------------------------------------------------
# Stop signals outside training, SIGHUP


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP])
def test_a_stop_while_the_data_is_prepared_ends_the_run_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               signum: int) -> None:
    monkeypatch.setattr(checkpoint, "_is_terminal", lambda fd: False)  # never silence the terminal running the tests
    build = TASKS.build

    def signalled(*args: Any, **kwargs: Any) -> Any:
        signal.raise_signal(signum)
        raise AssertionError("the signal did not stop the run")

    monkeypatch.setattr(TASKS, "build", signalled)
    handlers = [signal.getsignal(s) for s in checkpoint.STOP_SIGNALS]
    cfg = compose_run(tmp_path, *TOY, "train.epochs=1")
    with pytest.raises(checkpoint.Preempted) as stopped:
        runner.run(cfg)
    assert (stopped.value.signum, stopped.value.checkpointed) == (signum, False)
    assert str(stopped.value).startswith(f"stopped by signal {signum} ({signal.Signals(signum).name}) outside "
                                         f"training")
    assert [signal.getsignal(s) for s in checkpoint.STOP_SIGNALS] == handlers
    assert runner.store_for(cfg).get(rid_of(cfg))["status"] == "preempted"
    assert_nothing_left(cfg)
    monkeypatch.setattr(TASKS, "build", build)
    assert runner.run(cfg)["status"] == "complete"


def test_sighup_checkpoints_like_sigterm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint, "_is_terminal", lambda fd: False)
    cfg = compose_run(tmp_path, *TOY, "train.epochs=2")
    stop_after_first_epoch(monkeypatch, signal.SIGHUP)
    with pytest.raises(checkpoint.Preempted) as stopped:
        runner.run(cfg)
    assert (stopped.value.signum, stopped.value.checkpointed) == (signal.SIGHUP, True)
    assert torch.load(last_pt(cfg), weights_only=True)["progress"]["epoch"] == 1
    assert_nothing_left(cfg)


def _run_py_command(tmp_path: Path, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "run.py"), f"paths.root={tmp_path / 'results'}",
            f"paths.data={tmp_path / 'data'}", "train.progress=false", *args]


@pytest.mark.slow  # a process of 5 to 10 s
def test_ctrl_c_while_the_data_is_generated_is_one_line_and_leaves_no_lock(tmp_path: Path) -> None:
    """Full-size ListOps takes minutes to generate: the Ctrl-C lands in it."""
    results = tmp_path / "results"
    proc = subprocess.Popen(_run_py_command(tmp_path, "task=listops", "model=transformer"), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not list(results.glob("runs/*/run.lock")):
        assert proc.poll() is None and time.monotonic() < deadline, "the run never started"
        time.sleep(0.02)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    # The generator's progress bar, left open by the interrupt, may share the line.
    said = [line[line.index("seqbench:"):] for line in err.splitlines() if "seqbench:" in line]
    assert said == ["seqbench: stopped by signal 2 (SIGINT) outside training (preparing the data or the model, or "
                    "testing the best state); rerun the same command to resume"]
    assert not list(results.rglob("run.lock*"))
    [record] = (results / "store").glob("*.json")
    assert json.loads(record.read_text())["status"] == "preempted"


def _in_a_terminal(args: list[str], cwd: Path, ready: Callable[[bytes], bool]) -> int:
    """Run `args` in a session whose terminal is a pseudo-terminal; once `ready(its output so far)`, close the
    terminal, as closing its window does (the kernel hangs it up and sends SIGHUP). Returns its exit status."""
    pid, master = pty.fork()
    if pid == 0:  # the child: a session of its own with the pseudo-terminal as its terminal
        os.chdir(cwd)
        os.execve(sys.executable, args, {**os.environ, "OMP_NUM_THREADS": "1"})
    output = b""
    deadline = time.monotonic() + 120
    while not ready(output):
        assert time.monotonic() < deadline, output.decode(errors="replace")[-3000:]
        if select.select([master], [], [], 0.05)[0]:
            output += os.read(master, 65536)
    os.close(master)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_after_a_hangup_what_the_run_still_prints_goes_nowhere() -> None:
    """Writing to a terminal that was hung up fails (EIO): the checkpoint that follows SIGHUP must not fail with it
    (tqdm's bars give up quietly; a plain line, such as the epoch's, would raise)."""
    code = ("import sys, time\n"
            "from harness.checkpoint import StopFlag\n"
            "stop = StopFlag()\n"
            "with stop.installed():\n"
            "    print('ready', flush=True)\n"
            "    while not stop:\n"
            "        time.sleep(0.01)\n"
            "    print('seqbench: epoch 2/3 done', file=sys.stderr, flush=True)\n"
            "sys.exit(128 + stop.requested)\n")
    status = _in_a_terminal([sys.executable, "-c", code], ROOT, lambda output: b"ready" in output)
    assert status == 128 + signal.SIGHUP


@pytest.mark.slow  # a process of 10 to 20 s
def test_closing_the_terminal_checkpoints_and_exits_129(tmp_path: Path) -> None:
    results = tmp_path / "results"
    args = _run_py_command(tmp_path, *TINY_LISTOPS, "model.d_model=16", "train.epochs=50")
    status = _in_a_terminal(args, tmp_path, lambda _: bool(list(results.glob("runs/*/metrics.jsonl"))))
    assert status == 128 + signal.SIGHUP
    [record] = (results / "store").glob("*.json")
    record = json.loads(record.read_text())
    assert record["status"] == "preempted" and record["error"].startswith("stopped by signal 1 ")
    assert torch.load(next(results.glob("runs/*/last.pt")), weights_only=True)["progress"]["epoch"] >= 1
    assert not list(results.rglob("run.lock*")) and not list(results.rglob(".*.tmp"))


# ----------------------------------------------------------------------------------------------------------------
# Sweep folders


def test_two_sweeps_started_in_the_same_second_get_folders_of_their_own(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import hydra.core.utils

    import sweeps.manifest  # noqa: F401  (registers the resolver the sweep folder's name uses)

    class StoppedClock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:
            return datetime(2026, 12, 6, 12, 0, 0)

    monkeypatch.setattr(hydra.core.utils, "datetime", StoppedClock)  # what Hydra's `now` resolver reads

    def sweep_dir() -> str:
        with initialize_config_dir(config_dir=str(SWEEPS), version_base="1.3"):
            cfg = compose("config", overrides=[f"paths.root={tmp_path}"], return_hydra_config=True)
        return str(cfg.hydra.sweep.dir)

    first, second = sweep_dir(), sweep_dir()
    prefix = f"{tmp_path}/hydra/multirun/2026-12-06_12-00-00_"
    assert first.startswith(prefix) and second.startswith(prefix) and first != second
