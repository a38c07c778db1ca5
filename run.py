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
from harness import sweep as _sweep  # noqa: F401  (registers the sweeper and SLURM launcher with Hydra)
from harness.checkpoint import Preempted
from harness.errors import UserError
from harness.jobs import dispatch
from harness.registry import MODELS, TASKS

# Registration must happen before Hydra composes the config, so that task=... and model=... resolve.
TASKS.discover()
MODELS.discover()


@hydra.main(version_base="1.3", config_path="sweeps", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        dispatch(cfg)
    except UserError as exc:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # a sweep's job: the launcher records the failure (exiting would leave a SLURM job without result)
        print(f"seqbench: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Preempted as exc:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        print(f"seqbench: {exc}; checkpoint written, rerun the same command to resume", file=sys.stderr)
        sys.exit(128 + (getattr(exc, "signum", None) or 15))  # as a process ended by that signal reports it


if __name__ == "__main__":
    main()
