"""The training loop: optimizer groups, schedule, exact resume, divergence, checkpoint safety, progress logs, and
the runner's records and run lock."""

from __future__ import annotations

import errno
import io
import json
import math
import multiprocessing as mp
import os
import random
import re
import signal
from pathlib import Path
from typing import Any, NoReturn

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

import tests.toy as toy
from harness import checkpoint, env, runner
from harness import train as train_module
from harness.batches import EpochBatches, loader
from harness.config import OptimConfig, TrainConfig
from harness.device import set_precision
from harness.errors import UserError
from harness.files import DiskFull
from harness.identity import run_id
from harness.optim import lr_factor, param_groups
from harness.progress import ProgressLog
from harness.registry import MODELS, TASKS
from harness.task import Batch, Task, TaskSpec
from harness.train import Diverged, FitResult, fit, improves
from tests.helpers import compose_run

TOY = ("task=toy", "model=transformer", "model.d_model=16", "model.n_layers=1", "train.batch_size=16")


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
    everything = param_groups(model, OptimConfig(weight_decay=0.1, decay_exempt="none"))
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


def test_cosine_goes_on_past_its_end_as_hf_s() -> None:
    """HF's get_cosine_schedule_with_warmup is not clamped: past num_training_steps T the factor
    0.5 (1 + cos(pi (s - W) / (T - W))) rises again, back to 1 after another T - W steps."""
    t, w = 200_000, 1_000
    assert lr_factor(t, t, w, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(t + (t - w) // 2, t, w, "cosine") == pytest.approx(0.5)
    assert lr_factor(t + (t - w), t, w, "cosine") == pytest.approx(1.0)
    # S4's Speech Commands run: its last step (0-based 212,079) is 12,079 steps past the end; cos(pi (1 + x)) is
    # -cos(pi x).
    assert lr_factor(212_079, t, w, "cosine") == pytest.approx(0.5 * (1 - math.cos(math.pi * 12_079 / 199_000)))


@pytest.mark.parametrize(("train", "n_train", "expected"), [
    # 84,843 // 16 = 5,302 steps an epoch: 40 epochs are 212,080 steps; the schedule keeps its 200,000.
    (dict(epochs=40, batch_size=16, drop_last=True, schedule_steps=200_000, warmup_steps=1000), 84_843,
     (5302, 212_080, 40, 200_000, 1000)),
    (dict(epochs=40, batch_size=16, schedule_steps=200_000, warmup_steps=1000), 84_843,
     (5303, 212_120, 40, 200_000, 1000)),
    # 100 examples at batch 50: still 40 epochs (of 2 steps), as a Lightning run of max_epochs 40.
    (dict(epochs=40, batch_size=50, drop_last=True, schedule_steps=80_000, warmup_steps=1000), 100,
     (2, 80, 40, 80_000, 1000)),
    # Steps, not epochs: 80,000 steps whatever the data's size; the schedule spans the run.
    (dict(epochs=None, max_steps=80_000, batch_size=400, warmup_steps=1000), 96_000, (240, 80_000, 334, 80_000, 1000)),
    (dict(epochs=None, max_steps=80_000, batch_size=400, warmup_steps=1000), 4_000, (10, 80_000, 8000, 80_000, 1000)),
    (dict(epochs=100, batch_size=50, warmup_epochs=1), 96_000, (1920, 192_000, 100, 192_000, 1920)),
])
def test_plan_counts_epochs_steps_and_the_schedule_as_published(train: dict[str, Any], n_train: int,
                                                                expected: tuple[int, ...]) -> None:
    got = train_module.plan(TrainConfig(**train), n_train)
    assert (got.steps_per_epoch, got.total_steps, got.epochs, got.schedule_steps, got.warmup_steps) == expected


@pytest.mark.parametrize(("train", "message"), [
    (dict(epochs=6, max_steps=80_000), "train.epochs=6 and train.max_steps=80000 both say when the run stops: set one "
     "of them to null (train.max_steps=null stops after 6 epochs, train.epochs=null after 80000 steps)"),
    (dict(epochs=None), "train.epochs and train.max_steps are both null: set one to say when the run stops, e.g. "
     "train.epochs=10"),
    (dict(schedule="rsqrt", schedule_steps=1000), "train.schedule_steps=1000 sizes the cosine schedule only, not "
     "train.schedule=rsqrt; set train.schedule_steps=null"),
    (dict(early_stop_start_step=5000), "train.early_stop_start_step=5000 has no effect without "
     "train.early_stop_patience_steps; set both or neither"),
    (dict(best_tie="first"), "train.best_tie='first' is not one of 'later', 'earlier'"),
    (dict(eval_every_steps=0), "train.eval_every_steps=0 must be an integer > 0 (or null)"),
])
def test_train_options_that_cannot_mean_one_thing_are_refused(train: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError) as error:
        TrainConfig(**train)
    assert str(error.value) == message


def test_drop_last_with_fewer_examples_than_a_batch_is_refused() -> None:
    with pytest.raises(UserError, match="train.drop_last=true leaves no step in an epoch of 40 training examples at "
                                        "train.batch_size=50"):
        train_module.plan(TrainConfig(batch_size=50, drop_last=True), 40)


def _published_early_stopping(scores: list[float], steps: int, every: int, patience: int, start: int
                              ) -> tuple[list[int], int, int]:
    """What EvanZhuang/wavspa's lra_benchmarks/listops/train_best.py does (restated here, its model replaced by the
    validation `scores` in order): (the steps after which it validated, the step of the best state it restores,
    the steps it trained). Its loop runs over 0-based step indices: after index i it counts one more step of
    patience, validates when i % every == 0 and i > 0 (a strictly higher accuracy resets the count and saves the
    state), and stops when the count exceeds `patience` and i > `start`."""
    validated, best_step, best, count, scores_left = [], 0, 0.0, 0, iter(scores)
    for i in range(steps):
        count += 1
        if i > 0 and i % every == 0:
            accuracy = next(scores_left)
            validated.append(i + 1)
            if accuracy > best:
                best, best_step, count = accuracy, i + 1, 0
        if count > patience and i > start:
            return validated, best_step, i + 1
    return validated, best_step, steps


@pytest.mark.parametrize(("scores", "patience", "start"), [
    ([0.5, 0.6, 0.6, 0.6, 0.55, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], 5, 3),  # ties do not reset the patience
    ([0.5, 0.6, 0.7, 0.8, 0.9, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], 1, 12),  # not before step index 12
    ([0.5] * 20, 100, 0),  # never stops early: runs its max_steps
])
def test_step_validation_and_early_stopping_follow_wavspa_train_best(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     scores: list[float], patience: int,
                                                                     start: int) -> None:
    task = toy.build(toy.ToyConfig(), tmp_path)  # 6 steps an epoch
    returned = iter(scores)
    monkeypatch.setattr(train_module, "evaluate", lambda *args, **kwargs: next(returned))
    result = _fit(task, tmp_path / "run", epochs=None, max_steps=30, eval_every_steps=2,
                  early_stop_patience_steps=patience, early_stop_start_step=start, best_tie="earlier")
    validated, best_step, trained = _published_early_stopping(scores, 30, 2, patience, start)
    assert [row["step"] for row in result.history] == validated
    assert result.steps == trained
    [best] = [row for row in result.history if row["step"] == best_step]
    assert result.val == best["val"] and result.best_epoch == best["epoch"] == round(best_step / 6, 4)


@pytest.mark.parametrize("test_on", ["best", "last"])
def test_the_test_split_scores_the_best_or_the_last_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         test_on: str) -> None:
    """Validation scores 0.9, 0.2, 0.1: best is epoch 1's state, last is epoch 3's (the LRA Transformer's test)."""
    task = toy.build(toy.ToyConfig(), tmp_path)
    scores = iter([0.9, 0.2, 0.1])
    monkeypatch.setattr(train_module, "evaluate", lambda *args, **kwargs: next(scores))
    states: list[dict[str, torch.Tensor]] = []
    real_score = train_module.score

    def spy(model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        return real_score(model, *args, **kwargs)

    monkeypatch.setattr(train_module, "score", spy)
    result = _fit(task, tmp_path / test_on, epochs=3, test_on=test_on)
    last = torch.load(tmp_path / test_on / "last.pt", weights_only=True)
    tested, = states
    same_as_last = all(torch.equal(tested[k], v) for k, v in last["model"].items())
    assert (result.tested, result.val, result.best_epoch, same_as_last) == (
        ("best", 0.9, 1, False) if test_on == "best" else ("last", 0.1, 3, True))
    assert not result.stopped_early


def test_a_tie_is_a_new_best_only_when_ties_go_to_the_later() -> None:
    assert train_module.improves(0.5, 0.5, True) and train_module.improves(2.0, 2.0, False)
    assert not train_module.improves(0.5, 0.5, True, ties_later=False)
    assert not train_module.improves(2.0, 2.0, False, ties_later=False)
    assert train_module.improves(1.5, 2.0, False, ties_later=False)


@pytest.mark.parametrize(("precision", "tf32"), [("fp32", False), ("tf32", True), ("bf16", True), ("auto", True)])
def test_fp32_means_fp32_matmuls_unless_tf32_is_asked_for(monkeypatch: pytest.MonkeyPatch, precision: str,
                                                          tf32: bool) -> None:
    """On CUDA `fp32` turns TF32 off for matmuls and cuDNN (torch's matmul default), `tf32` on (as the published
    S4, SGConv and MultiresNet trainers do); the record's environment says which. Off CUDA nothing is set."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        set_precision(torch.device("cuda"), precision)  # the flags are process settings: no GPU needed
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (tf32, tf32)
        set_precision(torch.device("cpu"), "fp32" if tf32 else "tf32")
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (tf32, tf32)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "a GPU")
    assert env.capture(torch.device("cuda"), precision)["tf32"] is tf32
    assert env.capture(torch.device("cpu"), precision)["tf32"] is None


def test_epoch_batches_are_a_function_of_seed_and_epoch() -> None:
    a = list(EpochBatches(10, 3, True, seed=1, epoch=2))
    assert sorted(i for b in a for i in b) == list(range(10))
    assert a == list(EpochBatches(10, 3, True, seed=1, epoch=2))
    assert a != list(EpochBatches(10, 3, True, seed=1, epoch=3))
    assert list(EpochBatches(10, 3, True, seed=1, epoch=2, start=2)) == a[2:]


def test_the_loader_pins_batches_for_a_gpu_only(tmp_path: Path) -> None:
    # Unpinned, a batch's copy to the GPU waits for every kernel queued before it; the CPU needs no pinning.
    task, cfg = toy.build(toy.ToyConfig(), tmp_path), TrainConfig(batch_size=4)
    sampler = EpochBatches(len(task.splits["train"]), 4, False)
    assert loader(task, "train", cfg, sampler, torch.device("cuda")).pin_memory
    assert not loader(task, "train", cfg, sampler, torch.device("cpu")).pin_memory


def _fit(task: Task, run_dir: Path, epochs: int = 3, progress: bool = False, **train: Any) -> FitResult:
    checkpoint.seed_everything(0)
    model = small_model(task.spec)
    return fit(model, task, TrainConfig(epochs=epochs, batch_size=16, progress=progress, warmup_epochs=0.5, **train),
               OptimConfig(lr=3e-3), 0, run_dir, torch.device("cpu"))


# Validation after steps 3, 5, 7, ... (0-based indices 2, 4, 6, ...) and early stopping.
BY_STEPS = {"eval_every_steps": 2, "early_stop_patience_steps": 4, "early_stop_start_step": 6, "best_tie": "earlier"}


# Collate calls: 1-6 the first epoch's 6 training batches, 7-8 its validation, 9- the second epoch. At the first
# epoch's last batch by a scheduler's SIGTERM; inside the second epoch by submitit's SIGUSR2; during the first
# validation by Ctrl-C (the run stops once that epoch's checkpoint is written). Validating by steps (BY_STEPS),
# calls 1-3 train, 4-5 validate, 6-7 train, 8-9 validate, 10-11 train (the last step of epoch 1, the first of
# epoch 2), ... until early stopping after step 8: stopped inside the second validation, and in epoch 2.
@pytest.mark.parametrize(("stop_at_call", "signum", "train"), [
    pytest.param(6, signal.SIGTERM, {}, id="SIGTERM-after-epoch-1"),
    pytest.param(9, signal.SIGUSR2, {}, id="SIGUSR2-in-epoch-2"),
    pytest.param(7, signal.SIGINT, {}, id="Ctrl-C-in-validation"),
    pytest.param(8, signal.SIGTERM, BY_STEPS, id="by-steps-SIGTERM-in-validation"),
    pytest.param(11, signal.SIGUSR2, BY_STEPS, id="by-steps-SIGUSR2-in-epoch-2")])
def test_interrupted_run_resumes_to_the_same_result(tmp_path: Path, stop_at_call: int, signum: int,
                                                    train: dict[str, Any]) -> None:
    task = toy.build(toy.ToyConfig(), tmp_path)
    reference = _fit(task, tmp_path / "uninterrupted", **train)
    if train:  # validated by steps, several times an epoch, and stopped early
        assert [row["step"] for row in reference.history][:3] == [3, 5, 7] and reference.steps < 3 * 6

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
        _fit(task, tmp_path / "interrupted", **train)
    assert stopped.value.signum == signum  # what the entry point hands on to the scheduler
    assert [signal.getsignal(s) for s in checkpoint.STOP_SIGNALS] == handlers  # restored after the stop
    assert (tmp_path / "interrupted" / "last.pt").exists()
    torch.load(tmp_path / "interrupted" / "last.pt", weights_only=True)  # tensors and plain data only
    task.collate = collate
    resumed = _fit(task, tmp_path / "interrupted", **train)
    assert resumed.history == reference.history  # losses, val metrics and lrs, exactly
    assert (resumed.val, resumed.test, resumed.best_epoch, resumed.steps) == (
        reference.val, reference.test, reference.best_epoch, reference.steps)


@pytest.mark.slow  # about half a minute of compiling
def test_compiled_training_computes_what_eager_training_computes(tmp_path: Path) -> None:
    """A tiny S4D on variable-length ListOps batches (BatchNorm sees each batch's padding, as published): compiled as
    train.compile=true compiles it, the same losses as eager, and at most two compilations for many lengths (the
    second makes the length dynamic) rather than one a length."""
    from torch._dynamo.utils import counters

    from tasks import listops

    task = listops.build(listops.ListOpsConfig(n_train=96, n_val=16, n_test=16, min_length=10, max_length=60,
                                               max_depth=4, l_max=64), tmp_path / "data")
    lengths = {min(int(task.splits["train"][i][0].shape[0]), 64) for i in range(96)}
    results = []
    for compile in (False, True):
        checkpoint.seed_everything(0)
        torch._dynamo.reset()
        counters.clear()
        # Without dropout: compiled code draws its random numbers differently.
        model = MODELS.build(MODELS.config("s4d", d_model=16, n_layers=2, d_state=8, norm="batch", dropout=0.0),
                             task.spec)
        train = TrainConfig(epochs=1, batch_size=16, progress=False, compile=compile)
        results.append(fit(model, task, train, OptimConfig(lr=3e-3), 0, tmp_path / str(compile), torch.device("cpu")))
    eager, compiled = results
    assert compiled.history[0]["train_loss"] == pytest.approx(eager.history[0]["train_loss"], rel=1e-4)
    assert compiled.val == pytest.approx(eager.val, abs=1 / 16)
    assert len(lengths) > 10 and counters["stats"]["unique_graphs"] <= 2  # evaluation runs the model uncompiled


def test_runner_writes_a_record_then_skips_the_completed_run(tmp_path: Path) -> None:
    cfg = compose_run(tmp_path, "task=toy", "model=transformer", "model.d_model=16", "model.n_layers=1",
                      "train.epochs=2", "train.batch_size=16")
    first = runner.run(cfg)
    assert first["status"] == "complete"
    assert first["metrics"]["metric"] == "accuracy" and 0.0 <= first["metrics"]["test"] <= 1.0
    assert len(first["metrics"]["history"]) == 2
    assert first["params"] == sum(p.numel() for p in small_model_for(cfg).parameters())
    assert first["throughput"]["train_samples_per_s"] > 0 and first["memory"]["peak_bytes"] > 0
    assert first["env"]["torch"] == torch.__version__ and first["env"]["tf32"] is None  # a CPU run: no TF32 to set
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


def test_a_second_ctrl_c_interrupts_at_once() -> None:
    stop = checkpoint.StopFlag()
    with stop.installed():
        signal.raise_signal(signal.SIGINT)  # the first asks for a checkpoint and a stop
        assert stop.requested == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)


# Divergence


def _refuse_non_standard(name: str) -> NoReturn:
    raise AssertionError(f"{name} in a JSON file")


def test_a_huge_learning_rate_ends_diverged_never_complete(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = compose_run(tmp_path, *TOY, "train.epochs=3", "optim.lr=1e6")
    record = runner.run(cfg)
    assert record["status"] == "diverged" and "metrics" not in record
    assert re.match(r"the training loss is (nan|inf) at epoch 1, step \d: lower optim.lr \(now 1e\+06\)",
                    record["error"])
    assert record["diverged"]["epoch"] == 1 and 1 <= record["diverged"]["step"] <= 6
    assert record["diverged"]["history"] == []
    path = runner.store_for(cfg).path(record["run_id"])
    stored = json.loads(path.read_text(), parse_constant=_refuse_non_standard)
    assert stored["status"] == "diverged" and stored["diverged"]["step"] == record["diverged"]["step"]
    assert f"{record['run_id']} diverged: the training loss is" in capsys.readouterr().err
    # A diverged run is a result: rerunning computes the same again, so it is skipped like a complete one.
    assert runner.run(cfg)["status"] == "diverged"
    assert "already diverged, skipped (force=true reruns it)" in capsys.readouterr().out


def _best_epoch(values: list[float], higher_is_better: bool) -> int | None:
    best, epoch = None, None
    for i, value in enumerate(values):
        if improves(value, best, higher_is_better):
            best, epoch = value, i
    return epoch


def test_a_non_finite_validation_stops_the_run_and_is_never_best(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    nan, inf = float("nan"), float("inf")
    assert _best_epoch([nan, 0.5, 0.7, inf, 0.7], higher_is_better=True) == 4  # ties go to the later epoch
    assert _best_epoch([nan, 2.0, -inf, 1.5], higher_is_better=False) == 3
    assert _best_epoch([nan], higher_is_better=True) is None

    task = toy.build(toy.ToyConfig(), tmp_path)
    for vals, epoch, step in (([nan], 1, 6), ([0.5, nan], 2, 12)):
        returned = iter(vals)
        monkeypatch.setattr(train_module, "evaluate", lambda *args, returned=returned, **kwargs: next(returned))
        with pytest.raises(Diverged, match=f"validation accuracy is nan at epoch {epoch}, step {step}") as stopped:
            _fit(task, tmp_path / str(epoch))
        assert [row["val"] for row in stopped.value.history] == vals[:-1]
        assert (stopped.value.epoch, stopped.value.step) == (epoch, step)


# Checkpoints and the files of a run


class _Executes:
    """Unpickling this runs code: it creates the file `path`."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return open, (self.path, "w")


def _damage(kind: str, path: Path, marker: Path) -> None:
    if kind == "truncated":
        checkpoint.save({key: {"w": torch.zeros(4096)} for key in checkpoint.KEYS}, path)
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    elif kind == "random-bytes":
        path.write_bytes(random.Random(0).randbytes(5000))
    elif kind == "code":
        torch.save({key: _Executes(marker) for key in checkpoint.KEYS}, path)
    else:  # a readable file that is not a checkpoint
        torch.save({"weights": torch.zeros(3)}, path)


@pytest.mark.parametrize("kind", ["truncated", "random-bytes", "code", "not-a-checkpoint"])
def test_an_unreadable_checkpoint_is_refused_in_one_line_and_never_recorded(tmp_path: Path, kind: str) -> None:
    cfg = compose_run(tmp_path, *TOY, "train.epochs=1")
    rid = run_id(runner.plain_config(cfg))
    path = runner.run_dir_for(cfg, rid) / "last.pt"
    path.parent.mkdir(parents=True)
    marker = tmp_path / "code-ran"
    _damage(kind, path, marker)
    for _ in range(2):  # the same refusal each time, never a `failed` record
        with pytest.raises(UserError) as error:
            runner.run(cfg)
        message = str(error.value)
        assert message == (f"{path} is not a readable seqbench checkpoint (truncated, from an older seqbench or from "
                           f"an untrusted source): delete it to start this run over, or rerun with force=true")
        assert runner.store_for(cfg).get(rid) is None and not (path.parent / runner.LOCK).exists()
    assert not marker.exists(), "loading the checkpoint ran code from it"
    if kind == "code":  # the file really is dangerous to load the old way
        torch.load(path, weights_only=False)
        assert marker.exists()
    assert runner.run(compose_run(tmp_path, *TOY, "train.epochs=1", "force=true"))["status"] == "complete"


def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_last_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    task = toy.build(toy.ToyConfig(), tmp_path)
    _fit(task, tmp_path, epochs=1)
    before = (tmp_path / "last.pt").read_bytes()

    def full(*args: Any, **kwargs: Any) -> NoReturn:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskFull) as error:
        _fit(task, tmp_path, epochs=2)
    message = str(error.value)
    assert message.startswith(f"no space left on the disk of {tmp_path / 'last.pt'}") and "\n" not in message
    assert (tmp_path / "last.pt").read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_resuming_rewrites_a_metrics_log_left_short(tmp_path: Path) -> None:
    task = toy.build(toy.ToyConfig(), tmp_path)
    first = _fit(task, tmp_path, epochs=2)
    log = tmp_path / "metrics.jsonl"
    whole = log.read_text()
    log.write_text(whole.splitlines(keepends=True)[0])  # killed after the last checkpoint, before the log
    assert _fit(task, tmp_path, epochs=2).history == first.history
    assert log.read_text() == whole


# Progress logs

LINE = re.compile(r"seqbench: epoch \d+/\d+( done)? step \d+/\d+ loss \d\.\d{4}( val accuracy \d\.\d{4})? \| "
                  r"[\d.]+[kM]? tokens/s \| ETA (\d+h\d\dm|\d+m\d\ds)")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _simulate(log: ProgressLog, epochs: int, steps: int) -> str:
    """What fit() tells the log: a loss reading every tenth of an epoch, then the epoch's end."""
    checks = {math.ceil(steps * i / 10) for i in range(1, 10)}
    step = 0
    for epoch in range(epochs):
        log.start_epoch(epoch, 0)
        for batch in range(1, steps + 1):
            step += 1
            log.step(1000)
            if batch in checks:
                log.check(step, batch, 0.5)
        log.end_training()
        log.end_epoch(step, 0.5, 0.75)
    log.close()
    return log.stream.getvalue()


@pytest.mark.parametrize(("show", "epochs", "lines"), [(True, 100, 300), (True, 10, 100), (True, 1, 10),
                                                       (False, 100, 100)])
def test_plain_progress_lines_are_bounded(monkeypatch: pytest.MonkeyPatch, show: bool, epochs: int,
                                          lines: int) -> None:
    """Not on a terminal (a file, a SLURM job): one line per epoch and a few inside, about 300 at most for a run."""
    monkeypatch.setattr(ProgressLog, "MIN_INTERVAL_S", 0.0)
    out = _simulate(ProgressLog(show, epochs, 50, epochs * 50, "accuracy", 0, stream=io.StringIO()), epochs,
                    50).splitlines()
    assert len(out) == lines
    assert all(LINE.fullmatch(line) for line in out), out[:3]
    assert sum(" done " in line for line in out) == epochs
    first_done = next(i for i, line in enumerate(out) if " done " in line)
    assert [" val accuracy 0.7500 " in line for line in out] == [i >= first_done for i in range(len(out))]


def test_a_terminal_gets_bars_and_the_epoch_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ProgressLog, "MIN_INTERVAL_S", 0.0)
    text = _simulate(ProgressLog(True, 3, 50, 150, "accuracy", 0, stream=_Terminal()), 3, 50)
    assert "\r" in text and "epoch 1/3:" in text and "loss=0.5000" in text  # tqdm's bar
    assert len([line for line in text.split("\r") if LINE.fullmatch(line.strip())]) == 3


def test_fit_writes_plain_lines_when_stderr_is_not_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ProgressLog, "MIN_INTERVAL_S", 0.0)
    _fit(toy.build(toy.ToyConfig(), tmp_path), tmp_path, epochs=2, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert all(LINE.fullmatch(line) for line in lines) and len(lines) > 2
    assert [line.split()[2] for line in lines if " done " in line] == ["1/2", "2/2"]


# One process per run id


def _run_paused(config: dict[str, Any], started: Any, resume: Any) -> None:
    """In its own process: run `config`, pausing at the first batch until `resume` is set."""
    import tests.toy as toy_module  # registers the toy task here too

    MODELS.discover()
    collate = toy_module.collate

    def paused(items: list[Any]) -> Batch:
        if not started.is_set():
            started.set()
            resume.wait(120)
        return collate(items)

    toy_module.collate = paused
    runner.run(OmegaConf.create(config))


def test_one_process_at_a_time_runs_a_run_id(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = compose_run(tmp_path, *TOY, "train.epochs=2")
    rid = run_id(runner.plain_config(cfg))
    store = runner.store_for(cfg)
    ctx = mp.get_context("spawn")
    started, resume = ctx.Event(), ctx.Event()
    first = ctx.Process(target=_run_paused, args=(OmegaConf.to_container(cfg), started, resume))
    first.start()
    try:
        assert started.wait(120), "the first process did not start training"
        assert runner.run(cfg) is None  # the second process: skipped, says so, records nothing
        out = capsys.readouterr().out
        assert f"{rid} is already running (pid {first.pid} on " in out and "skipped" in out
        assert store.get(rid) is None
    finally:
        resume.set()
        first.join(120)
    assert first.exitcode == 0
    record = store.get(rid)
    assert record["status"] == "complete"
    assert runner.run(cfg) == record and "already complete, skipped" in capsys.readouterr().out
    assert not (runner.run_dir_for(cfg, rid) / runner.LOCK).exists()


def test_compiled_runs_keep_torch_s_compile_cache_under_paths_root(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    runner.use_compile_cache(tmp_path / "results")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str((tmp_path / "results" / "cache" / "torchinductor").resolve())
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/mine")  # the user's wins
    runner.use_compile_cache(tmp_path / "results")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/mine"
