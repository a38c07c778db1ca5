"""What `run.py` does with a composed config: train one run (or check it: dry_run), run the quickstart, or
benchmark. A job that leaves a report to build returns a Report; the entry point builds it, since the mechanism
never imports reports/.

Every job's config is checked before it does any work (harness.config.run_config; a training run also through
harness.preflight.check). What a job needs is imported when it runs, so that a command that stops early (a config
error, a dry run) starts quickly.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from harness.checkpoint import Preempted
from harness.config import BenchConfig, run_config
from harness.errors import ConfigError, UserError
from harness.registry import MODELS, TASKS


@dataclass
class Report:
    """The report of `sweep`'s records in `store`, to be written into `out`; `failed` names the runs that
    failed (the entry point raises them once the report is written)."""

    store: Path
    out: Path
    sweep: str | None
    failed: list[str] = field(default_factory=list)


def dispatch(cfg: DictConfig) -> Report | None:
    job = cfg.job
    if job == "train" and cfg.get("task") is None and cfg.get("model") is None:
        job = "quickstart"
    if job not in JOBS:
        raise ConfigError(f"job must be one of {', '.join(JOBS)}, got {job!r}")
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    run_config(plain)
    return JOBS[job](cfg)


def train(cfg: DictConfig) -> None:
    from harness import preflight, runner

    if cfg.dry_run:
        preflight.dry_run(cfg)  # reads no data, trains nothing: one JSON line
    else:
        preflight.check(cfg)
        runner.run(cfg)


def quickstart_configs(cfg: DictConfig) -> list[DictConfig]:
    """One run config per (model, seed): every registered model, small, on small generated ListOps."""
    q = cfg.quickstart
    names = list(q.models) or MODELS.names()
    task = TASKS.config("listops", n_train=q.n_train, n_val=q.n_val, n_test=q.n_test, min_length=q.min_length,
                        max_length=q.max_length, max_depth=q.max_depth, l_max=q.max_length)
    configs = []
    for name in names:
        fields = {f.name for f in dataclasses.fields(MODELS.get(name).config_cls)}
        model = MODELS.config(name, **{k: v for k, v in (("d_model", q.d_model), ("n_layers", q.n_layers))
                                       if k in fields})
        for seed in q.seeds:
            run_cfg = cfg.copy()
            with open_dict(run_cfg):
                run_cfg.job = "train"
                run_cfg.sweep = "quickstart"
                run_cfg.seed = seed
                run_cfg.task = OmegaConf.structured(task)
                run_cfg.model = OmegaConf.structured(model)
                run_cfg.train.epochs = q.epochs
                run_cfg.train.batch_size = q.batch_size
                run_cfg.optim.lr = q.lr
            configs.append(run_cfg)
    return configs


def quickstart(cfg: DictConfig) -> Report | None:
    from harness import preflight, runner

    configs = quickstart_configs(cfg)
    if cfg.dry_run:
        for run_cfg in configs:
            print(json.dumps(preflight.describe(run_cfg, activations=cfg.dry_run == "memory")), flush=True)
        return None
    failed = []
    for run_cfg in configs:
        print(f"seqbench: quickstart: {run_cfg.model.name} seed {run_cfg.seed}")
        try:
            runner.run(run_cfg)
        except (UserError, Preempted):
            raise
        except Exception as exc:  # the record says what failed; the other models still run
            failed.append(f"{run_cfg.model.name} (seed {run_cfg.seed}): {type(exc).__name__}: {exc}")
    root = Path(cfg.paths.root)
    return Report(root / "store", root / "reports", "quickstart", failed)


def eval_job(cfg: DictConfig) -> Report | None:
    """`job=eval`: trained runs (eval.runs or eval.sweep) on the task config of the command."""
    return _evaluate(cfg, "eval")


def lengths_job(cfg: DictConfig) -> Report | None:
    """`job=lengths`: trained ListOps runs on longer ListOps, in length bins; then their report."""
    return _evaluate(cfg, "lengths")


def redraw_job(cfg: DictConfig) -> Report | None:
    """`job=redraw`: trained runs on a fresh draw of their own generated task (eval.seed, eval.n_test)."""
    return _evaluate(cfg, "redraw")


def _evaluate(cfg: DictConfig, job: str) -> Report | None:
    from harness import evaluate

    records = evaluate.run(cfg, job)
    if cfg.dry_run or not records:
        return None
    root = Path(cfg.paths.root)
    sweeps = {r["sweep"] for r in records}
    # The report of the evaluated sweep, now with its evaluations (of every sweep when runs of several were named).
    return Report(root / "store", root / "reports", sweeps.pop() if len(sweeps) == 1 else None)


def bench_plan(cfg: DictConfig) -> None:
    """`job=bench dry_run=true`: one JSON line per model, the grid it would be timed on; nothing is measured.
    The grid is the one for the device asked for, whether or not this machine has it."""
    import torch

    from harness import bench

    opts = BenchConfig(**OmegaConf.to_container(cfg.bench, resolve=True))
    kind = "cpu" if opts.device == "cpu" or (opts.device == "auto" and not torch.cuda.is_available()) else "cuda"
    opts = opts.resolved(kind)
    for name, model in bench.model_configs(opts).items():
        print(json.dumps({"job": "bench", "model": name, "device": opts.device, "defaults_for": kind,
                          "config": dataclasses.asdict(model), "scope": opts.scope, "passes": opts.passes,
                          "dtypes": opts.dtypes, "lengths": opts.lengths,
                          "batch_sizes": [opts.batch_for(length) for length in opts.lengths]}), flush=True)


def bench_job(cfg: DictConfig) -> None:
    from harness import bench

    if cfg.dry_run:
        bench_plan(cfg)
    else:
        bench.run(cfg)


JOBS: dict[str, Callable[[DictConfig], Report | None]] = {"train": train, "quickstart": quickstart,
                                                           "bench": bench_job, "eval": eval_job,
                                                           "lengths": lengths_job, "redraw": redraw_job}
