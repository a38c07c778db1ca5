"""What `run.py` does with a composed config: train one run, run the quickstart, or benchmark."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from harness import runner
from harness.errors import ConfigError, UserError
from harness.registry import MODELS, TASKS


def dispatch(cfg: DictConfig) -> None:
    job = cfg.job
    if job == "train" and cfg.get("task") is None and cfg.get("model") is None:
        job = "quickstart"
    if job == "train" and cfg.dry_run:
        from harness.sweep import dry_run  # composes nothing, trains nothing: one JSON line

        dry_run(cfg)
    elif job == "train":
        runner.run(cfg)
    elif job == "quickstart":
        quickstart(cfg)
    elif job == "bench":
        from harness import bench

        bench.run(cfg)
    else:
        raise ConfigError(f"job must be train, quickstart or bench, got {job!r}")


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


def quickstart(cfg: DictConfig) -> Path:
    from reports import build as build_reports

    failed = []
    for run_cfg in quickstart_configs(cfg):
        print(f"seqbench: quickstart: {run_cfg.model.name} seed {run_cfg.seed}")
        try:
            runner.run(run_cfg)
        except UserError:
            raise
        except Exception as exc:  # the record says what failed; the other models still run
            failed.append(f"{run_cfg.model.name} (seed {run_cfg.seed}): {type(exc).__name__}: {exc}")
    root = Path(cfg.paths.root)
    path = build_reports(root / "store", root / "reports", sweep="quickstart")
    print(f"seqbench: leaderboard written to {path}")
    if failed:
        raise UserError("quickstart runs failed:\n  " + "\n  ".join(failed))
    return path
