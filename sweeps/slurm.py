"""SLURM: the launcher that submits a sweep's points as a job array, what a job does before its run, and what a
stopped job does to be requeued.

    python run.py -m hydra/launcher=slurm hydra.launcher.partition=gpu ... +experiment=...   (sweeps/hydra/launcher)
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import submitit
import torch
from hydra.core.plugins import Plugins
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from harness.errors import UserError
from harness.progress import plural
from sweeps import status
from sweeps.manifest import record_jobs

Plugins.instance()  # before importing the plugin's classes: sweeps/hydra_plugins.py says why
from hydra_plugins.hydra_submitit_launcher import submitit_launcher  # noqa: E402
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf  # noqa: E402


class JobEndedWithoutResult(RuntimeError):
    """A job SLURM ended (cancelled, out of memory, killed) before it handed back a result."""


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """hydra-submitit-launcher's SLURM launcher (same parameters, same requeue through its `checkpoint`), which
    also writes each job's SLURM id beside the sweep (for `status`), with `wait` false returns as soon as the jobs
    are submitted, and in each job sizes torch's threads to the job's CPUs."""

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
        jobs = submit(executor, self, calls)
        record_jobs(sweep_dir, {n: job.job_id for n, job in zip(nums, jobs)})
        print(f"seqbench: submitted {plural(len(jobs), 'SLURM job')} ({jobs[0].job_id.split('_')[0]}), logs in "
              f"{Path(str(self.params['submitit_folder'])).parent}", flush=True)
        if not self.wait:
            return [JobReturn(overrides=list(o), status=JobStatus.COMPLETED, _return_value=job.job_id)
                    for o, job in zip(job_overrides, jobs)]
        return wait_for(jobs, job_overrides)

    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        """The job itself, on the node (also after a requeue)."""
        cpus = use_allocated_cpus()
        print(f"seqbench: SLURM job {submitit.JobEnvironment().job_id}: {cpus} CPUs allocated, torch threads "
              f"{torch.get_num_threads()}", file=sys.stderr, flush=True)
        return super().__call__(*args, **kwargs)


def submit(executor: submitit.AutoExecutor, function: Any, calls: Sequence[tuple[Any, ...]]) -> list[submitit.Job]:
    """One job array; a refusal by sbatch (controller down, unknown partition or account) as one UserError."""
    echoed = io.StringIO()
    try:
        with contextlib.redirect_stderr(echoed):  # submitit prints sbatch's error before it raises it
            jobs = executor.map_array(function, *zip(*calls))
    except submitit.core.utils.FailedJobError as exc:
        said = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        if "Unable to contact slurm controller" in said:
            raise UserError(f"SLURM controller not reachable ({said}); is slurmctld running? `scontrol ping` (the "
                            f"local test cluster: `bash sweeps/cluster/slurm_local.sh status`)") from None
        raise UserError(f"sbatch refused the sweep's jobs ({said}); check hydra.launcher (partition, account, qos, "
                        f"resources)") from None
    except FileNotFoundError as exc:
        raise UserError(f"sbatch not found ({exc}): hydra/launcher=slurm submits from a machine with the SLURM "
                        f"client commands") from None
    sys.stderr.write(echoed.getvalue())
    return jobs


def wait_for(jobs: Sequence[submitit.Job], overrides: Sequence[Sequence[str]], grace_s: float = 15.0,
             most_s: float = 30.0) -> list[JobReturn]:
    """Wait until every job has handed back its result or left SLURM's queue without one; what each handed back.

    The queue (`squeue`) says whether a job is still there, asked every few seconds at first and every `most_s`
    later. A job gone from it gets `grace_s` for its result file to appear (a shared filesystem can lag; submitit
    waits as long), then counts as ended, in the state SLURM's accounting gives, or unconfirmed where accounting
    does not answer; one that accounting says was killed (cancelled, out of memory, its node failed) ends at once.
    submitit's own wait reads accounting alone, so a sweep waited forever while slurmdbd was down; here accounting
    only names how a job ended. Where squeue does not answer, submitit's state (accounting) decides, and the wait
    goes on until one of them answers.
    """
    returns: dict[int, JobReturn] = {}
    gone: dict[int, float] = {}  # job index -> when it was first seen out of the queue
    t0, warned = time.monotonic(), False
    while len(returns) < len(jobs):
        queue = status.squeue()
        if queue is None and not warned:
            print("seqbench: squeue does not answer (is slurmctld up? `scontrol ping`); still waiting for the jobs",
                  file=sys.stderr, flush=True)
            warned = True
        now = time.monotonic()
        for i, job in enumerate(jobs):
            if i in returns:
                continue
            if job.paths.result_pickle.exists():
                returns[i] = job_return(overrides[i], job)
            elif queue is not None and job.job_id not in queue:
                if now - gone.setdefault(i, now) >= grace_s or killed(job.job_id):
                    returns[i] = ended_without_result(overrides[i], job)
            elif queue is None and job.done():  # submitit's state, from accounting
                returns[i] = ended_without_result(overrides[i], job)
            else:
                gone.pop(i, None)  # back in the queue (requeued), or never left it
        if len(returns) < len(jobs):
            time.sleep(min(most_s, 2.0 + (time.monotonic() - t0) / 20))
    return [returns[i] for i in range(len(jobs))]


# How a job ends when it is killed from outside: no result can be on its way, so the wait for a lagging result file
# is pointless. (A FAILED job may still hand back its traceback, a COMPLETED one its result.)
KILLED = {"CANCELLED", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}


def killed(job_id: str) -> bool:
    """Does SLURM's accounting say the job, gone from the queue, was killed (KILLED)? No answer: not known, no."""
    return status.job_state(job_id, {}, status.sacct([job_id])) in KILLED


def job_return(overrides: Sequence[str], job: submitit.Job) -> JobReturn:
    """What a job that wrote its result handed back (a job that raised outside the run: that error)."""
    try:
        return job.results()[0]
    except submitit.core.utils.FailedJobError as exc:
        return JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=exc)


def ended_without_result(overrides: Sequence[str], job: submitit.Job) -> JobReturn:
    """A failure for a job that left the queue without handing anything back, in the state accounting gives."""
    state = status.job_state(job.job_id, {}, status.sacct([job.job_id]))  # an end state, or None (no answer yet)
    if state:
        how = f"ended {state} without a result"
    else:
        how = ("left the queue without a result, and SLURM's accounting (sacct) gave no answer: how it ended "
               "(cancelled, out of memory, killed) is not confirmed")
    error = JobEndedWithoutResult(f"SLURM job {job.job_id} {how}; its log: {job.paths.stderr}")
    return JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=error)


def use_allocated_cpus() -> int:
    """Size torch's threads (and OpenMP's, for child processes) to the CPUs SLURM gave this task; returns them.

    Without this torch starts one thread per core of the node, whatever the job was given: jobs sharing a node
    then run more busy threads than it has cores, and each runs several times slower.
    """
    cpus = len(os.sched_getaffinity(0))  # where SLURM binds tasks to cores; all the node's cores where it does not
    env = os.environ
    if "SLURM_CPUS_PER_TASK" in env:
        cpus = min(cpus, int(env["SLURM_CPUS_PER_TASK"]))
    elif "SLURM_CPUS_ON_NODE" in env:  # no --cpus-per-task: the job's CPUs on this node, shared by its tasks here
        cpus = min(cpus, int(env["SLURM_CPUS_ON_NODE"]) // int(env.get("SLURM_NTASKS_PER_NODE", "1")))
    cpus = max(1, cpus)
    torch.set_num_threads(cpus)
    os.environ["OMP_NUM_THREADS"] = str(cpus)
    return cpus


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
