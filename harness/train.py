"""The training loop: fit a model to a task, validating each epoch (or every N steps) and testing the best state.

How long a run trains is counted as the published trainers count it (`plan`): it stops after `train.epochs` epochs
or `train.max_steps` steps, or earlier by early stopping; the learning-rate schedule may be sized apart from the
run (`train.schedule_steps`). With `train.eval_every_steps` validation follows the step count instead of the
epochs, and each line of the history (metrics.jsonl) is one validation: `epoch` is then the epochs trained by then
(a fraction inside an epoch), `step` the steps, `train_loss` the mean since the previous validation.

Resuming is exact: the data order of every epoch is a function of (seed, epoch), and the
checkpoint holds the RNG states and the position inside the epoch, so an interrupted run that is
restarted computes the same numbers as one that never stopped.

A non-finite training loss or validation metric stops the run (Diverged). The loss is summed on the
device and read about ten times an epoch, never once per step, which would wait for the device at every step.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness import checkpoint
from harness.batches import EpochBatches, batch_tokens, loader, to_device
from harness.config import OptimConfig, TrainConfig, check_param_groups, rate_keys
from harness.device import autocast_for, peak_bytes, set_precision
from harness.distributed import Dist
from harness.errors import ConfigError
from harness.files import RunLock, atomic_write
from harness.loggers import Loggers
from harness.optim import lr_factor, make_optimizer
from harness.progress import ProgressLog
from harness.results import strict_json
from harness.task import Batch, Task


@dataclass
class FitResult:
    """What a finished fit reports: the best-validation epoch's scores and the run's speed and memory."""

    metric: str
    higher_is_better: bool
    val: float
    test: float
    test_details: dict[str, Any]  # the metric's extra output on the test split (per-label AUROC, skipped labels)
    best_epoch: int | float  # of the tested state; a fraction when validation follows the steps (eval_every_steps)
    history: list[dict[str, Any]]
    steps: int
    epochs: int
    tested: str  # the state the test split scored: best (validation) or last (train.test_on)
    stopped_early: bool  # by train.early_stop_patience_steps, before the run's planned end
    train_samples_per_s: float
    train_tokens_per_s: float
    peak_bytes: int
    memory_kind: str
    cost: dict[str, Any]  # summed over every piece of a resumed run: see `cost`


def evaluate(model: nn.Module, task: Task, split: str, cfg: TrainConfig, device: torch.device) -> float:
    return score(model, task, split, cfg, device)[0]


@torch.no_grad()
def score(model: nn.Module, task: Task, split: str, cfg: TrainConfig,
          device: torch.device) -> tuple[float, dict[str, Any]]:
    """The split's metric and its details (e.g. per-label AUROC and the labels skipped for having one class)."""
    model.eval()
    metric = task.objective.metric()
    batch_size = cfg.eval_batch_size or cfg.batch_size
    sampler = EpochBatches(len(task.splits[split]), batch_size, shuffle=False)
    with autocast_for(device, cfg.precision):
        for i, batch in enumerate(loader(task, split, cfg, sampler, device)):
            if cfg.limit_eval_batches is not None and i >= cfg.limit_eval_batches:
                break
            batch = to_device(batch, device)
            metric.update(model(batch["x"], lengths=batch.get("lengths")).float(), batch)
    return metric.compute(), metric.details()


class Diverged(Exception):
    """Training produced a non-finite loss or validation metric: the run stops, recorded as `diverged`."""

    def __init__(self, what: str, epoch: int, step: int, history: list[dict[str, Any]], lr: float,
                 lr_key: str = "optim.lr"):
        super().__init__(f"{what} at epoch {epoch}, step {step}: lower {lr_key} (now {lr:g}), clip gradients "
                         f"(train.grad_clip) or warm up longer (train.warmup_epochs)")
        self.epoch, self.step, self.history = epoch, step, history


def improves(val: float, best: float | None, higher_is_better: bool, ties_later: bool = True) -> bool:
    """Is `val` a new best? A tie is one when `ties_later` (MultiresNet's >=), not otherwise (the > of Lightning's
    ModelCheckpoint and of WavSpA's train_best.py). A non-finite value never is, also not the first one."""
    if not math.isfinite(val):
        return False
    if best is None:
        return True
    if val == best:
        return ties_later
    return val > best if higher_is_better else val < best


class LossMeter:
    """The epoch's summed training loss, kept on the device so that adding a step's loss does not wait for it."""

    def __init__(self, device: torch.device, total: float, n: int):
        # float64: the sum of the float32 step losses is then what Python floats would give, on any device.
        self.sum = torch.tensor(total, dtype=torch.float64, device=device)
        self.n = n
        # Steps of the epoch before the first non-finite loss: a non-finite sum stays non-finite.
        self.finite = torch.tensor(n, dtype=torch.int64, device=device)

    def add(self, loss: torch.Tensor | float) -> None:
        self.sum += loss
        self.finite += torch.isfinite(self.sum)
        self.n += 1

    def read(self) -> tuple[float, int | None]:
        """The sum (waiting for the device) and, when it is not finite, the epoch's first step (1-based) whose loss
        was not."""
        total = float(self.sum)
        return total, None if math.isfinite(total) else int(self.finite) + 1


@dataclass
class Plan:
    """How long a run trains, in optimizer steps and epochs, and how its learning-rate schedule is sized."""

    steps_per_epoch: int
    total_steps: int  # where the run stops, unless early stopping stops it sooner
    epochs: int  # the epochs begun by then
    schedule_steps: int  # the schedule's length: total_steps unless train.schedule_steps sizes it
    warmup_steps: int
    # Batches of an epoch after which the summed loss is read (a wait for the device): every tenth of an epoch.
    checks: frozenset[int]


def plan(train: TrainConfig, n_train: int) -> Plan:
    """The run's length for `n_train` training examples. An epoch is ceil(n_train / batch) steps, or
    n_train // batch with train.drop_last (as Lightning's loaders with drop_last=True); the run stops after
    train.epochs epochs or train.max_steps steps, whatever the data's size, as the published trainers do."""
    if n_train == 0:
        raise ConfigError("the task has no training examples (a test-only set, e.g. a ListOps length bin): train "
                          "on a task with a training split, and evaluate a trained run on this one with job=eval")
    steps_per_epoch = len(EpochBatches(n_train, train.batch_size, shuffle=True))
    if train.drop_last:
        steps_per_epoch = n_train // train.batch_size
    if train.limit_train_batches is not None:
        steps_per_epoch = min(steps_per_epoch, train.limit_train_batches)
    if steps_per_epoch == 0:
        raise ConfigError(f"train.drop_last=true leaves no step in an epoch of {n_train} training examples at "
                          f"train.batch_size={train.batch_size}; lower the batch size or set train.drop_last=false")
    total = train.max_steps if train.max_steps is not None else train.epochs * steps_per_epoch
    warmup = train.warmup_steps if train.warmup_steps is not None else round(train.warmup_epochs * steps_per_epoch)
    return Plan(steps_per_epoch, total, math.ceil(total / steps_per_epoch), train.schedule_steps or total, warmup,
                frozenset(math.ceil(steps_per_epoch * i / 10) for i in range(1, 10)))


def validation_due(train: TrainConfig, step: int) -> bool:
    """With train.eval_every_steps = N, is validation due after the run's `step`th step? As the LRA loops (WavSpA's
    train_best.py among them) decide it: after the step of 0-based index i when i % N == 0 and i > 0."""
    n = train.eval_every_steps
    return n is not None and step > 1 and (step - 1) % n == 0


def patience_over(train: TrainConfig, progress: dict[str, Any]) -> bool:
    """Early stopping as WavSpA's train_best.py: more than train.early_stop_patience_steps steps since the step of
    the last new best (since the start before there is one), once past the step of 0-based index
    train.early_stop_start_step."""
    if train.early_stop_patience_steps is None:
        return False
    since = progress["step"] - (progress["best"]["step"] if progress["best"] else 0)
    return since > train.early_stop_patience_steps and progress["step"] - 1 > train.early_stop_start_step


@dataclass
class Fit:
    """One fit in progress: what set_up built and the progress the steps below advance (all of it checkpointed)."""

    model: nn.Module
    net: nn.Module  # the model as trained: wrapped for several processes, compiled
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    task: Task
    train: TrainConfig
    optim: OptimConfig
    seed: int
    run_dir: Path
    device: torch.device
    dist: Dist
    lock: RunLock | None
    plan: Plan
    progress: dict[str, Any]
    log: ProgressLog
    loggers: Loggers
    started: float  # time.perf_counter() when this piece of the run began
    earlier_s: float  # the wall time of the run's earlier pieces
    identity: checkpoint.Identity | None = None  # what the checkpoint names as its run and data

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.progress["history"]

    @property
    def finished(self) -> bool:
        return (self.progress["epoch"] >= self.plan.epochs or self.progress["step"] >= self.plan.total_steps
                or patience_over(self.train, self.progress))

    def save(self) -> None:
        self.progress["wall_s"] = self.earlier_s + time.perf_counter() - self.started
        self.progress["peak_bytes"] = max(self.progress.get("peak_bytes", 0), peak_bytes(self.device)[0])
        if not self.dist.is_main:
            return
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "rng": checkpoint.rng_state(), "progress": self.progress}
        if self.identity is not None:
            state["identity"] = asdict(self.identity)
        checkpoint.save(state, self.run_dir / "last.pt")
        if self.lock is not None:
            self.lock.refresh()


def fit(model: nn.Module, task: Task, train: TrainConfig, optim: OptimConfig, seed: int, run_dir: Path,
        device: torch.device, dist: Dist | None = None, lock: RunLock | None = None,
        identity: checkpoint.Identity | None = None, loggers: Loggers | None = None,
        piece: dict[str, Any] | None = None) -> FitResult:
    """Train, validate each epoch (or every train.eval_every_steps steps), keep the best-validation state, test it.
    Resumes from run_dir/last.pt.

    With `dist` (several processes, harness.distributed) each rank trains on its share of every batch and only
    rank 0 writes files. `lock`, the run directory's lock, is refreshed as training advances. With `identity` (the
    runner's), the checkpoints name their run and data, and only a checkpoint of the same is resumed. `loggers` get
    the curves (harness.loggers). `piece` says what this piece of the run runs on (the runner's: commit, device,
    compile settings); the checkpoint keeps every piece's, from the step it started at (`segments`). Raises Diverged
    on a non-finite training loss or validation metric, checkpoint.Preempted after checkpointing on a stop signal.
    """
    state = set_up(model, task, train, optim, seed, run_dir, device, dist or Dist(), lock, identity,
                   loggers or Loggers.none(), piece)
    stop = checkpoint.StopFlag()
    try:
        with stop.installed():
            while not state.finished:
                train_epoch(state, stop)
                end_epoch(state)
                # A stop asked for during the evaluation: this epoch's checkpoint is written, so stop here.
                _, asked = state.dist.reduce_step(0.0, bool(stop))
                if asked and not state.finished:
                    stop_here(state, stop, f"after epoch {state.progress['epoch']}")
    finally:
        state.log.close()
        state.loggers.close()
    return final_test(state)


def set_up(model: nn.Module, task: Task, train: TrainConfig, optim: OptimConfig, seed: int, run_dir: Path,
           device: torch.device, dist: Dist, lock: RunLock | None, identity: checkpoint.Identity | None = None,
           loggers: Loggers | None = None, piece: dict[str, Any] | None = None) -> Fit:
    """The model on its device, the optimizer and schedule, and the progress: from run_dir/last.pt if there is one
    (then every RNG is where the checkpoint left it), else from the start, seeded. With `identity`, a checkpoint
    made for another run or other data is refused (checkpoint.CheckpointError), before anything of it is used."""
    started = time.perf_counter()
    model.to(device)
    net = dist.wrap(model, device)  # the model itself when there is one process
    if train.compile:
        # Fuses the many small element-wise kernels (launch-bound at short lengths); the first steps compile. A
        # second batch length makes the lengths dynamic (torch's default), so variable-length batches compile twice.
        net = torch.compile(net, mode=None if train.compile_mode == "default" else train.compile_mode)
        if train.compile_mode == "reduce-overhead" and not task.spec.one_batch_shape and device.type == "cuda":
            # A graph per batch length is the point here (the published padding kept): torch's advice, past eight
            # lengths, to pad batches to a few shapes would change what BatchNorm sees.
            import torch._inductor.config as inductor

            inductor.triton.cudagraph_dynamic_shape_warn_limit = None
            print("seqbench: CUDA graphs: one recorded for each batch length as it first comes; batches keep their "
                  "padding to their longest example", flush=True)
    set_precision(device, train.precision)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    optimizer = make_optimizer(model, optim)
    check_param_groups(optimizer.param_groups, rate_options_of(identity, optim))
    the_plan = plan(train, len(task.splits["train"]))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, the_plan.schedule_steps, the_plan.warmup_steps, train.schedule))

    state = checkpoint.load(run_dir / "last.pt")
    if state is not None:
        if identity is not None:
            checkpoint.check_identity(state, identity, run_dir / "last.pt")
        restore(run_dir / "last.pt", state, model, optimizer, scheduler)
        progress = state["progress"]
        if dist.is_main:  # a kill between the checkpoint and the metrics log left the log one epoch short
            write_history(run_dir, progress["history"])
    else:
        checkpoint.seed_everything(seed)
        progress = {"epoch": 0, "batch": 0, "step": 0, "history": [], "best": None, "best_state": None,
                    "train_time": 0.0, "samples": 0, "tokens": 0, "loss_sum": 0.0, "loss_n": 0}
    progress["pieces"] = progress.get("pieces", 0) + 1  # checkpoints from before pieces were counted: one so far
    # A run resumed on other code or another machine is several pieces: each one's say what ran which steps. A
    # checkpoint from before they were kept has steps no piece accounts for.
    segments = progress.setdefault("segments", [{"from_step": 0, "unrecorded": True}] if progress["step"] else [])
    segments.append({"from_step": progress["step"], **(piece or {})})
    history = progress["history"]
    log = ProgressLog(train.progress, the_plan.epochs, the_plan.steps_per_epoch, the_plan.total_steps,
                      task.objective.metric().name, progress["step"], val=history[-1]["val"] if history else None,
                      active=dist.is_main)
    return Fit(model, net, optimizer, scheduler, task, train, optim, seed, run_dir, device, dist, lock, the_plan,
               progress, log, loggers or Loggers.none(), started, progress.get("wall_s", 0.0), identity)


def restore(path: Path, state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """The model, optimizer, schedule and RNGs as the checkpoint `state` left them; CheckpointError if its tensors do
    not fit this model (a checkpoint without an identity, or code changed under the same version)."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (RuntimeError, ValueError, KeyError) as exc:
        said = " ".join(str(exc).split())[:300] or type(exc).__name__  # torch's message spans lines
        raise checkpoint.CheckpointError(f"{path} does not fit this run's model ({said}): delete it to start this "
                                         f"run over, or rerun with force=true") from None
    checkpoint.set_rng_state(state["rng"])


def train_step(state: Fit, batch: Batch, global_size: int) -> torch.Tensor:
    """One optimizer step on one batch; returns the loss (on the device, not waited for)."""
    with autocast_for(state.device, state.train.precision):
        output = state.net(batch["x"], lengths=batch.get("lengths"))
    loss = state.task.objective.loss(output, batch) * state.dist.loss_scale(global_size)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if state.train.grad_clip > 0:
        nn.utils.clip_grad_norm_(state.model.parameters(), state.train.grad_clip)
    state.optimizer.step()
    state.scheduler.step()
    return loss.detach()


def train_epoch(state: Fit, stop: checkpoint.StopFlag) -> None:
    """The rest of the current epoch's training steps (from the batch a resumed run stopped at), validating where
    train.eval_every_steps says, until the epoch or the run ends (also by early stopping)."""
    progress, train, plan_, dist = state.progress, state.train, state.plan, state.dist
    n_train = len(state.task.splits["train"])
    state.model.train()
    sampler = EpochBatches(n_train, train.batch_size, True, state.seed, progress["epoch"], start=progress["batch"])
    meter = LossMeter(state.device, progress["loss_sum"], progress["loss_n"])
    state.log.start_epoch(progress["epoch"], progress["batch"])
    started = time.perf_counter()
    for batch in loader(state.task, "train", train, dist.shard(sampler), state.device):
        if progress["batch"] >= plan_.steps_per_epoch or progress["step"] >= plan_.total_steps:
            break
        global_size = min(train.batch_size, n_train - progress["batch"] * train.batch_size)
        batch = to_device(batch, state.device)
        loss = train_step(state, batch, global_size)
        if dist.enabled:  # the ranks agree at every step on the loss and on stopping
            mean_loss, asked = dist.reduce_step(float(loss), bool(stop))
            meter.add(mean_loss)
        else:
            meter.add(loss)
            asked = bool(stop)
        tokens = batch_tokens(batch) * dist.world
        progress["batch"] += 1
        progress["step"] += 1
        progress["samples"] += global_size if dist.enabled else int(batch["x"].shape[0])
        progress["tokens"] += tokens
        state.log.step(tokens)
        due = state.loggers.due(progress["step"])
        if asked or progress["batch"] in plan_.checks or due:
            progress["loss_sum"], progress["loss_n"] = read_loss(state, meter)
            state.log.check(progress["step"], progress["batch"], progress["loss_sum"] / progress["loss_n"])
            if due:
                state.loggers.train_point(progress, state.optimizer.param_groups[0]["lr"])
            if state.lock is not None:
                state.lock.refresh()
        if validation_due(train, progress["step"]):  # before a stop: a resumed run would not validate here
            progress["loss_sum"], progress["loss_n"] = read_loss(state, meter)  # also waits for the device
            progress["train_time"] += time.perf_counter() - started  # training time only, checkpointed
            validate(state, round(progress["epoch"] + progress["batch"] / plan_.steps_per_epoch, 4))
            save_and_log(state)
            started = time.perf_counter()
            meter = LossMeter(state.device, 0.0, 0)
            state.model.train()
        if asked:
            progress["train_time"] += time.perf_counter() - started
            stop_here(state, stop, f"at step {progress['step']}")
        if patience_over(train, progress):
            break
    if state.device.type == "cuda":
        torch.cuda.synchronize(state.device)
    progress["train_time"] += time.perf_counter() - started
    progress["loss_sum"], progress["loss_n"] = read_loss(state, meter)
    state.log.end_training()


def end_epoch(state: Fit) -> None:
    """The end of an epoch (or of the run inside one): validate, checkpoint, log. When validation follows the steps
    (train.eval_every_steps) it is left out here, unless the run ends without one (there must be a state to test)."""
    progress, epoch = state.progress, state.progress["epoch"]
    ends_run = state.finished or epoch + 1 >= state.plan.epochs
    # The state to test must have been validated: the best one, or the last one with train.test_on=last.
    last_unscored = state.train.test_on == "last" and (
        not state.history or state.history[-1]["step"] != progress["step"])
    if state.train.eval_every_steps is None or (ends_run and (progress["best"] is None or last_unscored)):
        validate(state, epoch + 1)
    progress.update(epoch=epoch + 1, batch=0)
    save_and_log(state)
    last = state.history[-1] if state.history else {"train_loss": math.nan, "val": None}
    # By steps, the loss since the last validation; else (or right after one) the validation line's.
    loss = progress["loss_sum"] / progress["loss_n"] if progress["loss_n"] else last["train_loss"]
    state.log.end_epoch(progress["step"], loss, last["val"])


def validate(state: Fit, epochs_done: float) -> None:
    """Score the validation split, add its line to the history (the training loss: the mean since the previous
    validation), keep the state if it is a new best (train.best_tie says what a tie is)."""
    progress = state.progress
    metric = state.task.objective.metric()
    val = evaluate(state.model, state.task, "val", state.train, state.device)
    check_finite(state, f"validation {metric.name}", val, progress["step"])
    row = {"epoch": epochs_done, "step": progress["step"],
           "train_loss": progress["loss_sum"] / max(1, progress["loss_n"]),
           "val": val, "lr": state.optimizer.param_groups[0]["lr"]}
    state.history.append(row)
    state.loggers.epoch_point(row, metric.name)  # before the checkpoint: a resumed run never logs it again
    best = None if progress["best"] is None else progress["best"]["val"]
    if improves(val, best, metric.higher_is_better, ties_later=state.train.best_tie == "later"):
        progress["best"] = {"val": val, "epoch": epochs_done, "step": progress["step"]}
        progress["best_state"] = {k: v.detach().cpu().clone() for k, v in state.model.state_dict().items()}
    progress.update(loss_sum=0.0, loss_n=0)


def save_and_log(state: Fit) -> None:
    """The checkpoint, then the metrics log from its history (rank 0 writes both)."""
    state.save()
    if state.dist.is_main:
        write_history(state.run_dir, state.history)


def final_test(state: Fit) -> FitResult:
    """The best-validation state (or the last, train.test_on=last) scored on the test split, with the run's speed,
    memory and cost; the tested weights kept in the run folder (best.pt, or final.pt with train.test_on=last) for
    later evaluations (harness.evaluate), which score the same state."""
    progress, metric = state.progress, state.task.objective.metric()
    tested, chosen = state.model, state.history[-1]
    if state.train.test_on == "best":
        tested, chosen = copy.deepcopy(state.model), progress["best"]
        tested.load_state_dict(progress["best_state"])
    test, test_details = score(tested, state.task, "test", state.train, state.device)
    if state.dist.is_main:
        checkpoint.save_weights(tested.state_dict(), state.run_dir / checkpoint.TESTED_FILES[state.train.test_on])
    peak, kind = peak_bytes(state.device)
    peak = max(peak, progress.get("peak_bytes", 0))
    elapsed = max(progress["train_time"], 1e-9)
    early = progress["step"] < state.plan.total_steps and progress["epoch"] < state.plan.epochs
    return FitResult(metric=metric.name, higher_is_better=metric.higher_is_better,
                     val=chosen["val"], test=test, test_details=test_details, best_epoch=chosen["epoch"],
                     history=state.history, steps=progress["step"], epochs=progress["epoch"],
                     tested=state.train.test_on, stopped_early=early,
                     train_samples_per_s=progress["samples"] / elapsed,
                     train_tokens_per_s=progress["tokens"] / elapsed, peak_bytes=peak, memory_kind=kind,
                     cost=cost(state))


def cost(state: Fit) -> dict[str, Any]:
    """What the run cost, summed over its pieces (a preempted run resumed is several): the wall time from setting up
    to the test (training, validation and checkpoints; what a piece computed after its last checkpoint and then lost
    is not counted), in device-hours (wall time times the processes, one device each), and the training time."""
    wall = state.earlier_s + time.perf_counter() - state.started
    return {"wall_s": wall, "train_s": state.progress["train_time"], "pieces": state.progress["pieces"],
            "segments": state.progress["segments"],
            "devices": state.dist.world, "device": state.device.type,
            "device_hours": wall * state.dist.world / 3600.0}


def stop_here(state: Fit, stop: checkpoint.StopFlag, where: str) -> None:
    """The stop rule: on a stop signal, checkpoint where training is and end the run; rerunning it resumes there."""
    state.save()
    progress = {"metric": state.task.objective.metric().name, "epoch": state.progress["epoch"],
                "step": state.progress["step"], "history": list(state.history),
                "segments": list(state.progress["segments"])}
    raise checkpoint.Preempted(f"stopped by signal {stop.requested} {where}", stop.requested, progress=progress)


def check_finite(state: Fit, what: str, value: float, step: int) -> None:
    """The divergence rule: a non-finite training loss or validation metric ends the run as `diverged`."""
    if not math.isfinite(value):
        lr, key = largest_rate(state)
        raise Diverged(f"{what} is {value}", state.progress["epoch"] + 1, step, state.history, lr, key)


def largest_rate(state: Fit) -> tuple[float, str]:
    """The largest base learning rate of the optimizer's groups and the option(s) that set it, for the divergence
    hint: S4's or SGConv's own rates (model.ssm_lr, model.kernel_lr) may be the ones to lower, not optim.lr."""
    lr = max(group["initial_lr"] for group in state.optimizer.param_groups)
    return lr, " or ".join(rate_keys(rate_options_of(state.identity, state.optim), lr)) or "the learning rate"


def rate_options_of(identity: checkpoint.Identity | None, optim: OptimConfig) -> dict[str, Any]:
    """The config that names the optimizer groups' rates: the run's (with the model's own rates), else optim's."""
    return identity.config if identity is not None else {"optim": asdict(optim)}


def read_loss(state: Fit, meter: LossMeter) -> tuple[float, int]:
    """The epoch's summed training loss and its step count (a wait for the device), checked for divergence."""
    loss_sum, bad = meter.read()
    if bad is not None:
        check_finite(state, "the training loss", loss_sum, state.progress["step"] - meter.n + bad)
    return loss_sum, meter.n


def write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """The per-epoch metrics log, rewritten whole from the checkpointed history (never out of step with it)."""
    atomic_write(run_dir / "metrics.jsonl", "".join(strict_json(row) + "\n" for row in history))
