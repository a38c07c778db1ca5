"""seqbench entry point (a Hydra app).

    python run.py                                   the quickstart: a small leaderboard on generated ListOps
    python run.py task=listops model=transformer    train, evaluate, write one record
    python run.py -m task=listops model=transformer,multires seed=0,1,2     a sweep
    python run.py +experiment=multires_scifar       a paper preset from sweeps/experiment/
    python run.py job=bench ...                     the throughput and memory benchmark
    python -m harness list                          registered tasks and models with their options
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from harness import config as _config  # noqa: F401  (registers the run schema)
from harness import hydra_plugins as _hydra_plugins  # noqa: F401  (our sweeper and SLURM launcher, for Hydra)
from harness.checkpoint import Preempted
from harness.errors import UserError, exit_with
from harness.jobs import Report, dispatch
from harness.registry import MODELS, TASKS
from harness.slurm import after_preemption

# Registration must happen before Hydra composes the config, so that task=... and model=... resolve.
TASKS.discover()
MODELS.discover()


def write_report(report: Report) -> None:
    from reports.build import build  # pandas, scipy and matplotlib: only for a job that leaves a report

    path = build(report.store, report.out, sweep=report.sweep)
    print(f"seqbench: leaderboard written to {path}")
    if report.failed:
        raise UserError(f"{report.sweep} runs failed:\n  " + "\n  ".join(report.failed))


@hydra.main(version_base="1.3", config_path="sweeps", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        report = dispatch(cfg)
        if report is not None:
            write_report(report)
    except UserError as exc:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # a sweep's job: the launcher records the failure (exiting would leave a SLURM job without result)
        exit_with(exc)
    except Preempted as exc:
        signum = getattr(exc, "signum", None)
        after_preemption(signum)  # in a submitit job on SLURM: hand over to submitit's requeue; elsewhere returns
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        print(f"seqbench: {exc}; checkpoint written, rerun the same command to resume", file=sys.stderr)
        sys.exit(128 + (signum or 15))  # as a process ended by that signal reports it


if __name__ == "__main__":
    main()
