"""Evaluate trained runs on other data: the weights their test scored, another task config, one record each.

    python run.py job=eval eval.runs=[RUN_ID] task=listops task.n_test=500 ...   a run (or eval.sweep=NAME's runs)
    python run.py job=lengths eval.sweep=NAME                                     ListOps at longer lengths, in bins
    python run.py job=redraw eval.runs=[RUN_ID] eval.seed=7 eval.n_test=10000     a fresh draw of the run's own set

A training run keeps the weights its test scored in its run folder: the best-validation state (`best.pt`), or the
last one where `train.test_on=last` (`final.pt`); runs finished before that are read from their `last.pt`. The
model is built from the training record's config, at its training length, loads those weights and is then extended
to the evaluation task's length in its natural way
(harness.task.extend_length: each model's `extend_length`): S4 and S4D kernels computed to the new length (S4's
C-tilde re-attuned by doubling, as its published kernel does), SGConv's kernel its trained taps and zeros beyond (as
published), MultiresNet unchanged (its tree covers the training length; beyond, the same filters), the Transformer's
and WavSpA's sinusoidal positions extended (learned ones cannot be: the record says `not_applicable`), WavSpA's fixed
padding to the new length. A model out of memory is recorded as `oom`. Never a number for either.

An evaluation record (`kind: eval`) has its own id, `eval-<training run id>-<hash>` (of the evaluation task config,
the split, batch size, precision and code versions), names the training run (`train_run_id`) and leaves the
training record untouched; a complete one is not computed again (force=true does).

`job=lengths` makes test-only ListOps sets with the training set's generator rules (depth, arguments) and its
own seed (eval.seed) in length bins: eval.bins, or three doublings above the run's task.max_length (2-4K, 4-8K and
8-16K for LRA's 500-2,000 tokens); a default bin that the generator refuses as (almost) never drawn under those
rules is left out, saying so (under LRA's max_depth 10 and max_args 10, 8-16K: about 1 draw in 8 million). Each
bin's l_max holds its longest expression (plus <eos>): nothing is cut.

`job=redraw` evaluates each run on a fresh test-only draw of its own generated task (ListOps): the run's task config
with the generator's seed set to eval.seed and eval.n_test expressions, everything else (lengths, l_max, <eos>,
padding) the run's. A generated test split of 2,000 moves an accuracy near 60% by about 1.1 points (one standard
error) before its mix of expressions is counted; a larger fresh draw says how much of a run's distance from a
published number is its split's draw. An eval.seed equal to the run's own generator seed is refused (the same
draws as its training data).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from harness import checkpoint, env, versions
from harness.config import EvalConfig, TrainConfig
from harness.device import peak_bytes, resolve_device
from harness.errors import ConfigError, UserError, is_oom
from harness.registry import MODELS, TASKS
from harness.results import Store
from harness.task import LengthNotSupported, TaskSpec, extend_length
from harness.train import score


@dataclass
class Target:
    """One evaluation to make: a training record, a task config (plain data) and the bin it stands for, if any."""

    train: dict[str, Any]
    task: dict[str, Any]
    label: str | None = None  # e.g. "2-4K"
    bounds: tuple[int, int] | None = None  # the bin's (min_length, max_length), exclusive


def eval_options(cfg: DictConfig) -> EvalConfig:
    node = cfg.get("eval")
    return EvalConfig(**OmegaConf.to_container(node, resolve=True)) if node is not None else EvalConfig()


def training_records(cfg: DictConfig, opts: EvalConfig) -> list[dict[str, Any]]:
    """The complete training records named by eval.runs, or every one of eval.sweep, in the run's store."""
    store = Store(Path(cfg.paths.root) / "store")
    if bool(opts.runs) == bool(opts.sweep):
        raise ConfigError("name the trained runs to evaluate: eval.runs=[RUN_ID,...] or eval.sweep=NAME (one of "
                          "the two)")
    if opts.runs:
        records = []
        for rid in opts.runs:
            record = store.get(rid)
            if record is None or record.get("kind", "train") != "train":
                raise UserError(f"no training record {rid} in {store.root}: check the id (`ls {store.root}`) and "
                                f"paths.root")
            records.append(record)
    else:
        records = [r for r in store.records() if r.get("sweep") == opts.sweep and r.get("kind", "train") == "train"]
        if not records:
            raise UserError(f"no training record of sweep {opts.sweep!r} in {store.root}: check the name and "
                            f"paths.root")
    done = [r for r in records if r["status"] == "complete"]
    for r in records:
        if r["status"] != "complete":
            print(f"seqbench: {r['run_id']} is {r['status']}, not evaluated (only complete runs have best weights)")
    return done


def task_module(task: dict[str, Any]) -> ModuleType:
    """The module that registers a task: its hooks (task_spec, length_bins, length_variant, redraw) live there."""
    return sys.modules[TASKS.get(task["name"]).builder.__module__]


def redraw_targets(records: list[dict[str, Any]], opts: EvalConfig) -> list[Target]:
    """Each run on a fresh test-only draw of its own generated task (the task module's `redraw` hook)."""
    targets = []
    for record in records:
        task = record["config"]["task"]
        hook = getattr(task_module(task), "redraw", None)
        if not callable(hook) or task.get("root"):
            raise ConfigError(f"job=redraw needs a run trained on a generated task (ListOps without task.root); "
                              f"{record['run_id']} was trained on {task.get('root') or task['name']}: evaluate it on "
                              f"another task config with job=eval")
        if opts.seed == task.get("seed"):
            raise ConfigError(f"eval.seed={opts.seed} is the generator seed {record['run_id']} was trained on: its "
                              f"draws would repeat that set's; choose another seed")
        fields = hook(task, seed=opts.seed, n_test=opts.n_test)
        TASKS.config(task["name"], **{k: v for k, v in fields.items() if k != "name"})  # checked before any work
        targets.append(Target(record, fields))
    return targets


def length_hooks(task: dict[str, Any]) -> tuple[Callable[..., list[tuple[int, int]]], Callable[..., dict[str, Any]]]:
    """The task module's `length_bins(fields)` (default bins above its training lengths) and
    `length_variant(fields, low, high, seed, n_test)` (a test-only set of those rules at other lengths); a task
    that cannot make longer inputs has neither."""
    module = task_module(task)
    bins, variant = getattr(module, "length_bins", None), getattr(module, "length_variant", None)
    if not (callable(bins) and callable(variant)):
        raise ConfigError(f"job=lengths needs a task that can make its inputs at other lengths (ListOps can); "
                          f"{task['name']} cannot: evaluate on another task config with job=eval")
    return bins, variant


def _short(n: int) -> str:
    return f"{n // 1000}" if n % 1000 == 0 else str(n)


def bin_label(low: int, high: int) -> str:
    """(2000, 4000) -> '2-4K', (100, 200) -> '100-200'."""
    if low % 1000 == 0 and high % 1000 == 0:
        return f"{low // 1000}-{high // 1000}K"
    return f"{low}-{high}"


def length_targets(records: list[dict[str, Any]], opts: EvalConfig) -> list[Target]:
    """One test-only set per bin for each run, from the task module's hooks (e.g. ListOps: the run's own generator
    rules, a bin's lengths, eval.seed)."""
    targets = []
    for record in records:
        task = record["config"]["task"]
        default_bins, variant = length_hooks(task)
        for low, high in [(int(lo), int(hi)) for lo, hi in opts.bins] or default_bins(task):
            fields = variant(task, low, high, seed=opts.seed, n_test=opts.n_test)
            try:  # checked before any work: e.g. the generator refuses lengths its rules (almost) never draw
                TASKS.config(task["name"], **{k: v for k, v in fields.items() if k != "name"})
            except ConfigError as exc:
                if opts.bins:
                    raise
                print(f"seqbench: bin {bin_label(low, high)} left out for {record['run_id']}: {exc}")
                continue
            targets.append(Target(record, fields, bin_label(low, high), (low, high)))
    return targets


def task_targets(records: list[dict[str, Any]], cfg: DictConfig) -> list[Target]:
    """Every run on the task config of the command (`task=...`)."""
    if cfg.get("task") is None:
        raise ConfigError("job=eval needs the task config to evaluate on: add task=<name> and its options")
    task = OmegaConf.to_container(cfg.task, resolve=True)
    assert isinstance(task, dict)
    TASKS.from_node(cfg.task)
    return [Target(record, task) for record in records]


def spec_of(task: dict[str, Any]) -> TaskSpec:
    """A task's spec from its config alone (harness.task: every task module's `task_spec`)."""
    return task_module(task).task_spec(TASKS.config(task["name"], **{
        k: v for k, v in task.items() if k != "name"}))


def batch_size(train: TrainConfig, trained: TaskSpec, evaluated: TaskSpec, opts: EvalConfig) -> int:
    """eval.batch_size, or as many tokens a batch as the run evaluated with (fewer sequences when they are longer)."""
    if opts.batch_size:
        return opts.batch_size
    base = train.eval_batch_size or train.batch_size
    return max(1, base * trained.seq_len // max(evaluated.seq_len, trained.seq_len))


def eval_id(target: Target, settings: dict[str, Any]) -> str:
    config = {"model": target.train["config"]["model"], "task": target.task}
    tree = {"train_run_id": target.train["run_id"], "task": target.task, "settings": settings,
            "versions": versions.of_config(config)}
    digest = hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"eval-{target.train['run_id']}-{digest}"


def _check_compatible(trained: TaskSpec, evaluated: TaskSpec, rid: str) -> None:
    """The evaluation data must be the model's kind of input and output (e.g. ListOps tokens, 10 classes)."""
    for field in ("input", "vocab_size", "d_input", "n_outputs", "output", "metric"):
        if getattr(trained, field) != getattr(evaluated, field):
            raise ConfigError(f"{rid} was trained on {trained.name} with {field}={getattr(trained, field)!r}; "
                              f"{evaluated.name} as configured has {getattr(evaluated, field)!r}: evaluate on data "
                              f"of the same form")


def tested_state(record: dict[str, Any]) -> str:
    """The state a training run's test scored: best (validation) or last (train.test_on=last)."""
    tested = (record.get("metrics") or {}).get("tested")
    return tested if tested in checkpoint.TESTED_FILES else "best"


def load_tested(record: dict[str, Any], root: Path) -> dict[str, torch.Tensor]:
    """The weights the run's test scored: best.pt (final.pt with train.test_on=last), or that state in last.pt."""
    run_dir, state = root / "runs" / record["run_id"], tested_state(record)
    name = checkpoint.TESTED_FILES[state]
    for path in (run_dir / name, run_dir / "last.pt"):
        weights = checkpoint.load_weights(path, state)
        if weights is not None:
            return weights
    raise UserError(f"{run_dir} holds neither {name} (the {state} state, which the run's test scored) nor last.pt: "
                    f"the run's weights are gone; rerun it with force=true to evaluate it")


def evaluate(target: Target, cfg: DictConfig, opts: EvalConfig, device: torch.device) -> dict[str, Any]:
    """Evaluate one target and write its record (skipped when a complete one exists, unless force=true)."""
    root = Path(cfg.paths.root)
    store = Store(root / "store", force=cfg.force)
    train_cfg = target.train["config"]
    trained, evaluated = spec_of(train_cfg["task"]), spec_of(target.task)
    _check_compatible(trained, evaluated, target.train["run_id"])
    known = {f.name for f in dataclasses.fields(TrainConfig)}  # records of other versions may hold other keys
    train = TrainConfig(**{**{k: v for k, v in train_cfg["train"].items() if k in known},
                           "device": cfg.train.device, "progress": False})
    size = batch_size(train, trained, evaluated, opts)
    rid = eval_id(target, {"split": "test", "batch_size": size, "precision": train.precision})
    existing = store.get(rid)
    if existing is not None and existing["status"] in ("complete", "not_applicable") and not cfg.force:
        print(f"seqbench: {rid} already {existing['status']}, skipped (force=true evaluates again)")
        return existing
    base = {"run_id": rid, "kind": "eval", "train_run_id": target.train["run_id"], "sweep": target.train["sweep"],
            "task": target.task["name"], "model": target.train["model"], "seed": target.train["seed"],
            "config": {"task": target.task, "eval": {"batch_size": size, "precision": train.precision}},
            "eval": {"split": "test", "bin": target.label, "min_length": target.bounds and target.bounds[0],
                     "max_length": target.bounds and target.bounds[1], "seq_len": evaluated.seq_len,
                     "trained_seq_len": trained.seq_len, "state": tested_state(target.train)},
            "versions": versions.of_config({"model": train_cfg["model"], "task": target.task}),
            "env": env.capture(device)}
    started, t0 = datetime.now(UTC).isoformat(timespec="seconds"), time.perf_counter()

    def record(status: str, **fields: Any) -> dict[str, Any]:
        rec = {**base, "status": status, "error": None, **fields,
               "timing": {"started": started, "finished": datetime.now(UTC).isoformat(timespec="seconds"),
                          "wall_s": time.perf_counter() - t0}}
        store.write(rec)
        return rec

    data_root = Path(target.task["root"]) if target.task.get("root") else Path(cfg.paths.data) / target.task["name"]
    task = TASKS.build(OmegaConf.create(target.task), data_root)
    model = MODELS.build(OmegaConf.create(train_cfg["model"]), trained)
    model.load_state_dict(load_tested(target.train, root))
    try:
        extend_length(model, evaluated.seq_len)
    except LengthNotSupported as exc:
        print(f"seqbench: {rid} not applicable: {exc}")
        return record("not_applicable", error=str(exc))
    model.to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train = dataclasses.replace(train, eval_batch_size=size, limit_eval_batches=None)
    t_eval = time.perf_counter()
    try:
        value, details = score(model, task, "test", train, device)
    except Exception as exc:
        if not is_oom(exc):
            record("failed", error="".join(traceback.format_exception(exc))[-4000:])
            raise
        print(f"seqbench: {rid} out of memory at length {evaluated.seq_len} (batch {size})")
        return record("oom", error=f"out of memory at length {evaluated.seq_len}, batch {size}")
    seconds = time.perf_counter() - t_eval
    peak, kind = peak_bytes(device)
    metric = task.objective.metric()
    rec = record("complete", metrics={"metric": metric.name, "higher_is_better": metric.higher_is_better,
                                      "test": value, "test_details": details},
                 throughput={"eval_samples_per_s": len(task.splits["test"]) / max(seconds, 1e-9)},
                 memory={"peak_bytes": peak, "kind": kind}, data=task.info)
    print(f"seqbench: {rid} ({target.train['model']}{f', {target.label}' if target.label else ''}) "
          f"{metric.name}={value:.4f} -> {store.path(rid)}")
    return rec


def plan_line(target: Target, opts: EvalConfig) -> dict[str, Any]:
    """What a dry run prints for one target: nothing is read or generated."""
    trained, evaluated = spec_of(target.train["config"]["task"]), spec_of(target.task)
    return {"job": "eval", "train_run_id": target.train["run_id"], "model": target.train["model"],
            "bin": target.label, "seq_len": evaluated.seq_len, "trained_seq_len": trained.seq_len,
            "n_test": target.task.get("n_test")}


def run(cfg: DictConfig, job: str) -> list[dict[str, Any]]:
    """job=eval, job=lengths or job=redraw: every target evaluated, one record each; with dry_run, one JSON line per
    target (or one for the plan when there is no run yet)."""
    opts = eval_options(cfg)
    if job == "redraw" and cfg.get("task") is not None:
        raise ConfigError("job=redraw evaluates each run on a new draw of its own task config: leave task=... out "
                          "(job=eval takes a task config of yours)")
    if cfg.dry_run and not Store(Path(cfg.paths.root) / "store").root.is_dir():
        print(json.dumps({"job": job, "runs": opts.runs, "sweep": opts.sweep,
                          "bins": opts.bins, "n_test": opts.n_test, "seed": opts.seed,
                          "note": "no store yet: nothing to evaluate"}), flush=True)
        return []
    records = training_records(cfg, opts)
    if job == "eval":
        targets = task_targets(records, cfg)
    else:
        targets = (length_targets if job == "lengths" else redraw_targets)(records, opts)
    if cfg.dry_run:
        for target in targets:
            print(json.dumps(plan_line(target, opts)), flush=True)
        return []
    device = resolve_device(cfg.train.device)
    return [evaluate(target, cfg, opts, device) for target in targets]
