"""The training loop: optimizer groups, schedule, exact resume, and the runner's records."""

from __future__ import annotations

import math
import signal
from pathlib import Path
from typing import Any, NoReturn

import pytest
import torch
from omegaconf import DictConfig

import tests.toy as toy
from harness import checkpoint, runner
from harness.config import OptimConfig, TrainConfig
from harness.errors import UserError
from harness.optim import lr_factor, param_groups
from harness.registry import MODELS, TASKS
from harness.task import Batch, Task, TaskSpec
from harness.train import EpochBatches, FitResult, fit
from tests.helpers import compose_run


def small_model(spec: TaskSpec) -> torch.nn.Module:
    return MODELS.build(MODELS.config("transformer", d_model=16, n_layers=1, n_heads=2, d_ff=32), spec)


def test_param_groups_exempt_norms_and_biases_and_honour_hints() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2, bias=False))
    model[2].weight._optim = {"lr": 1e-4, "weight_decay": 0.0}
    groups = param_groups(model, OptimConfig(weight_decay=0.1))
    by_id = {id(p): g for g in groups for p in g["params"]}
    assert by_id[id(model[0].weight)]["weight_decay"] == 0.1
    assert by_id[id(model[0].bias)]["weight_decay"] == 0.0
    assert by_id[id(model[1].weight)]["weight_decay"] == 0.0
    assert by_id[id(model[2].weight)] == {"params": [model[2].weight], "lr": 1e-4, "weight_decay": 0.0}
    model[2].weight._optim = {"lr": 1e-4}  # names no weight decay: the global one applies
    assert param_groups(model, OptimConfig(weight_decay=0.1))[-1]["weight_decay"] == 0.1
    everything = param_groups(model, OptimConfig(weight_decay=0.1, decay_norm_and_bias=True))
    assert everything[0]["weight_decay"] == 0.1 and len(everything[0]["params"]) == 4


def test_cosine_schedule_with_linear_warmup() -> None:
    assert lr_factor(0, 100, 10, "cosine") == 0.0
    assert lr_factor(5, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(37, 100, 0, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.37)))
    assert lr_factor(99, 100, 10, "constant") == 1.0
    assert lr_factor(500, 80_000, 1000, "rsqrt") == pytest.approx(0.5)
    assert lr_factor(4000, 80_000, 1000, "rsqrt") == pytest.approx(0.5)  # sqrt(1000 / 4000)
    assert lr_factor(0, 80_000, 0, "rsqrt") == 0.0 and lr_factor(4, 80_000, 0, "rsqrt") == pytest.approx(0.5)
    with pytest.raises(UserError, match="train.schedule must be one of cosine, constant, rsqrt"):
        lr_factor(0, 100, 10, "step")


def test_epoch_batches_are_a_function_of_seed_and_epoch() -> None:
    a = list(EpochBatches(10, 3, True, seed=1, epoch=2))
    assert sorted(i for b in a for i in b) == list(range(10))
    assert a == list(EpochBatches(10, 3, True, seed=1, epoch=2))
    assert a != list(EpochBatches(10, 3, True, seed=1, epoch=3))
    assert list(EpochBatches(10, 3, True, seed=1, epoch=2, start=2)) == a[2:]


def _fit(task: Task, run_dir: Path, epochs: int = 3) -> FitResult:
    checkpoint.seed_everything(0)
    model = small_model(task.spec)
    return fit(model, task, TrainConfig(epochs=epochs, batch_size=16, progress=False, warmup_epochs=0.5),
               OptimConfig(lr=3e-3), 0, run_dir, torch.device("cpu"))


# After the first epoch's 6 batches, by a scheduler's SIGTERM; inside the second epoch, by submitit's SIGUSR2.
@pytest.mark.parametrize(("stop_at_call", "signum"), [pytest.param(6, signal.SIGTERM, id="SIGTERM-after-epoch-1"),
                                                     pytest.param(9, signal.SIGUSR2, id="SIGUSR2-in-epoch-2")])
def test_interrupted_run_resumes_to_the_same_result(tmp_path: Path, stop_at_call: int, signum: int) -> None:
    task = toy.build(toy.ToyConfig(), tmp_path)
    reference = _fit(task, tmp_path / "uninterrupted")

    calls = {"n": 0}
    collate = task.collate

    def signalling_collate(items: list[Any]) -> Batch:
        calls["n"] += 1
        if calls["n"] == stop_at_call:
            signal.raise_signal(signum)
        return collate(items)

    task.collate = signalling_collate
    handlers = [signal.getsignal(s) for s in checkpoint.STOP_SIGNALS]
    with pytest.raises(checkpoint.Preempted) as stopped:
        _fit(task, tmp_path / "interrupted")
    assert stopped.value.signum == signum  # what the entry point hands on to the scheduler
    assert [signal.getsignal(s) for s in checkpoint.STOP_SIGNALS] == handlers  # restored after the stop
    assert (tmp_path / "interrupted" / "last.pt").exists()
    task.collate = collate
    resumed = _fit(task, tmp_path / "interrupted")
    assert resumed.history == reference.history  # losses, val metrics and lrs, exactly
    assert (resumed.val, resumed.test, resumed.best_epoch, resumed.steps) == (
        reference.val, reference.test, reference.best_epoch, reference.steps)


@pytest.mark.slow  # about a minute of compiling
def test_compiled_training_computes_what_eager_training_computes(tmp_path: Path) -> None:
    task = toy.build(toy.ToyConfig(n=64), tmp_path)
    results = []
    for compile in (False, True):
        checkpoint.seed_everything(0)
        # Without dropout: compiled code draws its random numbers differently.
        model = MODELS.build(MODELS.config("transformer", d_model=16, n_layers=1, n_heads=2, d_ff=32, dropout=0.0),
                             task.spec)
        train = TrainConfig(epochs=1, batch_size=16, progress=False, compile=compile)
        results.append(fit(model, task, train, OptimConfig(lr=3e-3), 0, tmp_path / str(compile), torch.device("cpu")))
    eager, compiled = results
    assert compiled.history[0]["train_loss"] == pytest.approx(eager.history[0]["train_loss"], rel=1e-4)
    assert compiled.val == pytest.approx(eager.val, abs=1 / 16)


def test_runner_writes_a_record_then_skips_the_completed_run(tmp_path: Path) -> None:
    cfg = compose_run(tmp_path, "task=toy", "model=transformer", "model.d_model=16", "model.n_layers=1",
                      "train.epochs=2", "train.batch_size=16")
    first = runner.run(cfg)
    assert first["status"] == "complete"
    assert first["metrics"]["metric"] == "accuracy" and 0.0 <= first["metrics"]["test"] <= 1.0
    assert len(first["metrics"]["history"]) == 2
    assert first["params"] == sum(p.numel() for p in small_model_for(cfg).parameters())
    assert first["throughput"]["train_samples_per_s"] > 0 and first["memory"]["peak_bytes"] > 0
    assert first["env"]["torch"] == torch.__version__
    record_path = tmp_path / "store" / f"{first['run_id']}.json"
    mtime = record_path.stat().st_mtime_ns
    lines = (tmp_path / "runs" / first["run_id"] / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2

    again = runner.run(cfg)
    assert again == first and record_path.stat().st_mtime_ns == mtime  # skipped, not rerun
    forced = runner.run(compose_run(tmp_path, "task=toy", "model=transformer", "model.d_model=16",
                                    "model.n_layers=1", "train.epochs=2", "train.batch_size=16", "force=true"))
    assert forced["run_id"] == first["run_id"] and record_path.stat().st_mtime_ns != mtime


def small_model_for(cfg: DictConfig) -> torch.nn.Module:
    return MODELS.build(cfg.model, TASKS.build(cfg.task, Path("unused")).spec)


@pytest.mark.parametrize(("error", "status"), [(RuntimeError("boom"), "failed"),
                                              (torch.OutOfMemoryError("CUDA out of memory"), "oom")])
def test_a_crashing_run_writes_its_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception,
                                          status: str) -> None:
    def crash(*args: Any, **kwargs: Any) -> NoReturn:
        raise error

    monkeypatch.setattr(runner, "fit", crash)
    cfg = compose_run(tmp_path, "task=toy", "model=transformer", "model.d_model=16", "train.epochs=1")
    with pytest.raises(type(error)):
        runner.run(cfg)
    record = next(runner.store_for(cfg).records())
    assert record["status"] == status and str(error) in record["error"]
    assert record["params"] > 0 and record["config"]["model"]["d_model"] == 16


def test_bad_values_fail_before_training(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="model.n_heads.*model.d_model=15"):
        runner.run(compose_run(tmp_path, "task=toy", "model=transformer", "model.d_model=15", "model.n_heads=2"))
    with pytest.raises(UserError, match="adamw or adam"):
        runner.run(compose_run(tmp_path, "task=toy", "model=transformer", "model.d_model=16", "optim.optimizer=sgd"))
    assert not list(runner.store_for(compose_run(tmp_path)).records())


def test_missing_model_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no model chosen"):
        runner.run(compose_run(tmp_path, "task=toy"))
    with pytest.raises(Exception, match="Could not find 'model/nosuch'"):
        compose_run(tmp_path, "task=toy", "model=nosuch")
