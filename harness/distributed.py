"""One run on several processes of one node: PyTorch DDP (NCCL on GPUs, gloo on CPU).

Start the processes with either

    torchrun --standalone --nproc_per_node=4 run.py task=... model=...                 (RANK, WORLD_SIZE set)
    python run.py -m hydra/launcher=slurm hydra.launcher.tasks_per_node=4 \\
        hydra.launcher.gpus_per_node=4 task=... model=...                              (SLURM_NTASKS, submitit)

and the run itself is unchanged: the same config gives the same run id and, up to float reduction order, the
same numbers as one process with the same `train.batch_size`, because

- `train.batch_size` is the global batch: every process draws the same epoch order (a function of seed and
  epoch) and takes a disjoint share of each batch (`ShardedBatches`);
- each process weights its loss by its share of the batch, and DDP averages the gradients, so the update is the
  gradient of the mean loss over the global batch (exact for losses that are means over samples);
- only rank 0 writes checkpoints, the metrics log and the record; every rank resumes from the same `last.pt`;
- evaluation is not sharded: every rank evaluates the whole split (the same number everywhere, no gathering).

Limits: BatchNorm sees per-process statistics (as without SyncBatchNorm), dropout masks differ from a one-process
run, and the RNG state saved is rank 0's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import nn
from torch.utils.data import Sampler


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: rank among `world` processes, `local_rank` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """One GPU per process: `cuda` becomes `cuda:<local rank>` (CUDA_VISIBLE_DEVICES may leave only one)."""
        if self.enabled and device.type == "cuda" and device.index is None:
            return torch.device("cuda", self.local_rank % max(1, torch.cuda.device_count()))
        return device

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def shard(self, batches: Any) -> Any:
        return ShardedBatches(batches, self.rank, self.world) if self.enabled else batches

    def loss_scale(self, global_size: int) -> float:
        """Factor for this rank's mean loss so that DDP's gradient average is the global batch's mean gradient."""
        if not self.enabled:
            return 1.0
        return self.world * shard_size(global_size, self.rank, self.world) / global_size

    def reduce_step(self, loss: float, stop: bool) -> tuple[float, bool]:
        """The global batch's mean loss (from each rank's scaled loss) and whether any rank was told to stop.

        Every rank must stop at the same step, or the others would wait forever in the next gradient all-reduce.
        """
        if not self.enabled:
            return loss, stop
        t = torch.tensor([loss / self.world, float(stop)], dtype=torch.float64)
        if torch_dist.get_backend() == "nccl":
            t = t.cuda()
        torch_dist.all_reduce(t)
        return float(t[0]), bool(t[1] > 0)

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()


def shard_size(global_size: int, rank: int, world: int) -> int:
    """How many of a batch's `global_size` samples rank `rank` gets (strided split: sizes differ by at most 1)."""
    return len(range(rank, global_size, world))


class ShardedBatches(Sampler[list[int]]):
    """Rank `rank`'s disjoint share of every batch of a batch sampler (the samples at positions rank, rank+world...).

    A batch smaller than the world (the tail of an epoch) leaves some ranks without samples; they get the batch's
    first sample with loss weight 0 (`Dist.loss_scale`), because every rank has to take part in each step.
    """

    def __init__(self, batches: Any, rank: int, world: int):
        self.batches, self.rank, self.world = batches, rank, world
        self.seed, self.epoch = getattr(batches, "seed", 0), getattr(batches, "epoch", 0)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            yield batch[self.rank::self.world] or batch[:1]

    def __len__(self) -> int:
        return len(self.batches)


def from_env() -> Dist:
    """Rank and world from torchrun's variables, else from SLURM's when a submitit job has several tasks."""
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        return Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
        import submitit

        # MASTER_ADDR (first node), MASTER_PORT (from the job id), RANK, WORLD_SIZE, LOCAL_RANK.
        env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        return Dist(env.rank, env.world_size, env.local_rank)
    return Dist()


def setup(device: torch.device) -> Dist:
    """Join the process group of this run (once per process); a one-process run returns Dist() and does nothing."""
    dist = from_env()
    if dist.enabled and not torch_dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(dist.device(device))
        torch_dist.init_process_group(backend, rank=dist.rank, world_size=dist.world)
    return dist
