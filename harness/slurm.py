"""SLURM: the launcher that submits a sweep's points as a job array, and what a stopped job does to be requeued.

    python run.py -m hydra/launcher=slurm hydra.launcher.partition=gpu ... +experiment=...   (sweeps/hydra/launcher)
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import submitit
from hydra.core.plugins import Plugins
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from harness.manifest import record_jobs

Plugins.instance()  # before importing the plugin's classes: harness/hydra_plugins.py says why
from hydra_plugins.hydra_submitit_launcher import submitit_launcher  # noqa: E402
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf  # noqa: E402


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """hydra-submitit-launcher's SLURM launcher (same parameters, same requeue through its `checkpoint`), which
    also writes each job's SLURM id beside the sweep (for `status`) and, with `wait` false, returns as soon as
    the jobs are submitted."""

    wait = True  # set by the sweeper from `hydra.sweeper.wait`

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        init_keys = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(folder=self.params["submitit_folder"], cluster=self._EXECUTOR,
                                         slurm_max_num_timeout=self.params["max_num_timeout"])
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in shared else f"{self._EXECUTOR}_{k}": v
                                      for k, v in self.params.items() if k not in init_keys})
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        nums = [initial_job_idx + i for i in range(len(job_overrides))]
        calls = [(list(o), "hydra.sweep.dir", n, f"job_id_for_{n}", Singleton.get_state())
                 for n, o in zip(nums, job_overrides)]
        jobs = executor.map_array(self, *zip(*calls))
        record_jobs(sweep_dir, {n: job.job_id for n, job in zip(nums, jobs)})
        print(f"seqbench: submitted {len(jobs)} SLURM jobs ({jobs[0].job_id.split('_')[0]}), logs in "
              f"{Path(str(self.params['submitit_folder'])).parent}", flush=True)
        if not self.wait:
            return [JobReturn(overrides=list(o), status=JobStatus.COMPLETED, _return_value=job.job_id)
                    for o, job in zip(job_overrides, jobs)]
        return [job.results()[0] for job in jobs]


def after_preemption(signum: int | None) -> None:
    """Called by the entry point once a stopped run has written its checkpoint and its `preempted` record.

    In a submitit job on SLURM: for submitit's signal (USR2, sent before the time limit or by
    `scancel --signal=USR2`) or SIGUSR1, hand over to submitit's handler, which resubmits the same call through
    the launcher's `checkpoint` (`scontrol requeue`, up to `max_num_timeout` times for time-outs) and exits
    without a result, so the sweep keeps waiting; the requeued job resumes from `runs/<run_id>/last.pt`. For
    SIGTERM (`scontrol requeue`, preemption, `scancel`) SLURM itself ends the job after its KillWait: wait for
    that (or for submitit's signal) instead of reporting a failure. Elsewhere, return: the caller reports the stop.
    """
    if signum is None or os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return
    usr = submitit.JobEnvironment._usr_sig()
    print(f"seqbench: stopped by signal {signal.Signals(signum).name}, checkpoint written", file=sys.stderr, flush=True)
    if signum in (usr, signal.SIGUSR1):
        handler = signal.getsignal(usr)
        if callable(handler):
            handler(usr, None)  # requeues and exits on rank 0; returns on the other ranks
    print("seqbench: waiting for SLURM to end or requeue the job", file=sys.stderr, flush=True)
    time.sleep(300)  # interrupted by SIGKILL, or by USR2 (submitit's handler requeues and exits)
