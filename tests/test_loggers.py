"""Live curves: TensorBoard event files and W&B offline runs, read back with their own readers, equal metrics.jsonl,
on one step axis across a resume, without a duplicated point."""

from __future__ import annotations

import json
import math
import signal
import struct
from pathlib import Path
from typing import Any

import pytest
import torch

import tests.toy as toy
from harness import checkpoint, loggers, preflight
from harness.config import LogConfig, OptimConfig, TrainConfig
from harness.errors import ConfigError, UserError
from harness.loggers import Loggers
from harness.registry import MODELS
from harness.task import Batch, Task
from harness.train import fit
from tests.helpers import compose_run

EVERY = 2  # steps between training points; an epoch of the toy task is 6 steps
EPOCHS = 3
LR = 3e-3


def _fit(task: Task, run_dir: Path, names: Any) -> None:
    checkpoint.seed_everything(0)
    model = MODELS.build(MODELS.config("transformer", d_model=16, n_layers=1, n_heads=2, d_ff=32), task.spec)
    run_dir.mkdir(parents=True, exist_ok=True)
    logs = Loggers.open(names, LogConfig(every_n_steps=EVERY, wandb_mode="auto"), run_dir, "toy-run-1",
                        {"model": {"name": "transformer"}, "seed": 0})
    fit(model, task, TrainConfig(epochs=EPOCHS, batch_size=16, progress=False), OptimConfig(lr=LR), 0, run_dir,
        torch.device("cpu"), loggers=logs)


def tensorboard_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the run folder's event files as TensorBoard's own reader gives them: {tag: [(step, value)]}.
    Without its purge of points whose step goes back, so that a point written twice shows twice."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(run_dir), purge_orphaned_data=False)
    reader.Reload()
    return {tag: [(e.step, e.value) for e in reader.Scalars(tag)] for tag in reader.Tags()["scalars"]}


def _wandb_records(path: Path) -> list[bytes]:
    """The records of a W&B run file (`run-<id>.wandb`): a 7-byte header (":W&B", magic, version), then records in
    LevelDB's log format (32 KiB blocks; each piece: crc32c, length, type FULL 1 | FIRST 2 | MIDDLE 3 | LAST 4)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pos, partial = [], 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        piece, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            records.append(piece)
        elif kind == 2:
            partial = piece
        elif kind == 3:
            partial += piece
        elif kind == 4:
            records.append(partial + piece)
    return records


def wandb_history(run_dir: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """(the run id of each offline piece, oldest first; the history rows of all of them, in order)."""
    from wandb.proto import wandb_internal_pb2

    ids, rows = [], []
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"), key=lambda p: p.stat().st_mtime_ns):
        for raw in _wandb_records(path):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(raw)
            kind = record.WhichOneof("record_type")
            if kind == "run":
                ids.append(record.run.run_id)
            elif kind == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return ids, rows


class Crash(Exception):
    """A process that dies without checkpointing (as under kill -9, but its loggers still close)."""


def _interrupting(task: Task, at_call: int, how: str) -> None:
    """Make the task's collate stop the run at its `at_call`-th call: by SIGUSR2 (the run checkpoints there) or by
    a crash (the run resumes from its last epoch's checkpoint and recomputes steps whose points were written)."""
    calls, collate = {"n": 0}, task.collate

    def interrupting(items: list[Any]) -> Batch:
        calls["n"] += 1
        if calls["n"] == at_call:
            if how == "crash":
                raise Crash
            signal.raise_signal(signal.SIGUSR2)
        return collate(items)

    task.collate = interrupting


def _check_curves(scalars: dict[str, list[tuple[int, float]]], history: list[dict[str, Any]]) -> None:
    """The curves of one run against its metrics.jsonl and against computations of their own."""
    for points in scalars.values():
        steps = [s for s, _ in points]
        assert steps == sorted(set(steps)), f"a step twice or out of order: {steps}"
    rows = {row["step"]: row for row in history}
    assert [s for s, _ in scalars["val/accuracy"]] == list(rows)
    for tag, key in (("val/accuracy", "val"), ("epoch/train_loss", "train_loss"), ("epoch/lr", "lr")):
        for step, value in scalars[tag]:
            assert value == pytest.approx(rows[step][key], rel=1e-6, abs=1e-9)  # TensorBoard keeps float32
    per_epoch = 6
    total = EPOCHS * per_epoch
    assert [s for s, _ in scalars["train/loss"]] == list(range(EVERY, total + 1, EVERY))
    for step, lr in scalars["train/lr"]:  # cosine without warm-up, after `step` scheduler steps
        assert lr == pytest.approx(LR * 0.5 * (1 + math.cos(math.pi * step / total)), rel=1e-6, abs=1e-9)
    for epoch in range(EPOCHS):  # each epoch's points average its steps in equal windows: their mean is the epoch's
        window = [v for s, v in scalars["train/loss"] if epoch * per_epoch < s <= (epoch + 1) * per_epoch]
        assert sum(window) / len(window) == pytest.approx(rows[(epoch + 1) * per_epoch]["train_loss"], rel=1e-6)


def _history(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# Collate calls 1-6: the first epoch's training batches, 7-8 its validation, 9-14 the second epoch's training. A stop
# at call 11 checkpoints at step 9 (the point of step 8 gathered); a crash at call 14 leaves the points of steps 8
# and 10 written after the last checkpoint (step 6), and the resumed run computes those steps again.
@pytest.mark.parametrize(("how", "at_call", "stopped"), [("signal", 11, checkpoint.Preempted), ("crash", 14, Crash)])
def test_curves_equal_metrics_jsonl_and_a_resumed_run_continues_them_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str, at_call: int, stopped: type[Exception]) -> None:
    monkeypatch.setattr(loggers, "wandb_reachable", lambda timeout_s=3.0: False)  # no network: W&B offline
    task = toy.build(toy.ToyConfig(), tmp_path)
    _fit(task, tmp_path / "whole", ["tensorboard", "wandb"])

    _interrupting(task, at_call, how)
    with pytest.raises(stopped):
        _fit(task, tmp_path / "resumed", ["tensorboard", "wandb"])
    task = toy.build(toy.ToyConfig(), tmp_path)
    _fit(task, tmp_path / "resumed", ["tensorboard", "wandb"])

    whole, resumed = tensorboard_scalars(tmp_path / "whole"), tensorboard_scalars(tmp_path / "resumed")
    assert len(list((tmp_path / "resumed").glob("events.out.tfevents.*"))) == 2  # one file per piece
    assert resumed == whole  # the same points, once each
    _check_curves(whole, _history(tmp_path / "whole"))

    ids, rows = wandb_history(tmp_path / "resumed")
    assert ids == ["toy-run-1", "toy-run-1"]  # two offline pieces of one W&B run
    as_scalars: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for key, value in row.items():
            if not key.startswith("_"):
                as_scalars.setdefault(key, []).append((row["_step"], value))
    assert as_scalars.keys() == whole.keys()
    _check_curves(as_scalars, _history(tmp_path / "resumed"))


def test_tensorboard_holds_the_config_and_the_run_id_as_text(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    task = toy.build(toy.ToyConfig(), tmp_path)
    _fit(task, tmp_path, "tensorboard")
    reader = EventAccumulator(str(tmp_path))
    reader.Reload()
    texts = {tag: reader.Tensors(tag)[0].tensor_proto.string_val[0].decode()
             for tag in ("config/text_summary", "run_id/text_summary")}
    assert texts["run_id/text_summary"] == "toy-run-1"
    assert "name: transformer" in texts["config/text_summary"]


def test_no_logger_writes_nothing_and_the_options_are_checked(tmp_path: Path) -> None:
    task = toy.build(toy.ToyConfig(), tmp_path)
    _fit(task, tmp_path, None)
    assert not list(tmp_path.glob("events.*")) and not (tmp_path / "wandb").exists()
    assert not (tmp_path / loggers.SIDECAR).exists()
    for bad, says in (("logger=comet", "logger='comet' is not one of 'tensorboard', 'wandb'"),
                      ("log.every_n_steps=0", "log.every_n_steps=0 must be an integer > 0")):
        with pytest.raises(ConfigError, match=says):
            preflight.check(compose_run(tmp_path, "task=toy", "model=transformer", bad))


def test_a_missing_package_is_one_line_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = loggers.importlib.util.find_spec
    monkeypatch.setattr(loggers.importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name))
    cfg = compose_run(tmp_path, "task=toy", "model=transformer", "logger=[tensorboard,wandb]")
    with pytest.raises(UserError, match=r"^logger=wandb needs the wandb package: pip install wandb$"):
        preflight.check(cfg)
