"""DDP on CPU (gloo, two processes): disjoint shards, averaged gradients, one writer, the one-process result."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from omegaconf import OmegaConf

import tests.toy  # noqa: F401  (registers the toy task)
from harness import distributed
from harness.batches import EpochBatches
from harness.distributed import Dist, ShardedBatches, shard_size
from tests.helpers import compose_run


def test_shards_are_disjoint_and_cover_every_batch() -> None:
    for n, batch_size, world in ((10, 4, 2), (11, 4, 3), (9, 4, 2), (5, 4, 3)):
        batches = list(EpochBatches(n, batch_size, True, seed=3, epoch=1))
        shards = [list(ShardedBatches(EpochBatches(n, batch_size, True, seed=3, epoch=1), r, world))
                  for r in range(world)]
        for b, batch in enumerate(batches):
            real = [shards[r][b][:shard_size(len(batch), r, world)] for r in range(world)]
            assert sorted(i for part in real for i in part) == sorted(batch)  # disjoint, and the whole batch
            assert all(len(shards[r][b]) >= 1 for r in range(world))  # every rank takes part in every step
            # Loss weights: DDP averages the ranks' gradients of scale * (mean over the rank's samples), so every
            # sample must end up with weight 1 / (batch size), and a rank without samples with weight 0.
            for r in range(world):
                scale = Dist(r, world).loss_scale(len(batch))
                if real[r]:
                    assert scale / (world * len(real[r])) == pytest.approx(1 / len(batch))
                else:
                    assert scale == 0.0
    assert Dist().loss_scale(7) == 1.0 and Dist(2, 3).loss_scale(2) == 0.0  # rank 2 of 3 gets nothing of 2 samples


def test_world_comes_from_torchrun_or_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_NTASKS", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(key, raising=False)
    assert distributed.from_env() == Dist()
    monkeypatch.setenv("SLURM_NTASKS", "4")  # a SLURM job, but not one started by submitit: one process
    assert distributed.from_env() == Dist()
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.from_env() == Dist(3, 4, 1)


# dropout 0: the only difference between one process and two is then the order of float sums.
RUN = ["task=toy", "model=transformer", "model.d_model=16", "model.n_layers=1", "model.n_heads=2",
       "model.dropout=0.0", "train.epochs=2", "train.batch_size=16", "seed=3"]


def _record_first_gradients(path: Path) -> None:
    """Save the gradients the optimizer sees at its first step (after DDP's all-reduce) to `path`."""
    step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if not path.exists():
            torch.save([p.grad.clone() for group in self.param_groups for p in group["params"]], path)
        return step(self, *args, **kwargs)

    torch.optim.AdamW.step = recording_step


def _rank(rank: int, world: int, port: int, config: dict, log_dir: str) -> None:
    """One DDP process: logs the samples it trains on and every file write it makes, then runs the config."""
    from harness import checkpoint, results, runner

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    log = Path(log_dir) / f"rank{rank}.jsonl"

    def note(**entry: object) -> None:
        with open(log, "a") as f:
            f.write(json.dumps(entry) + "\n")

    shard_iter, save, write = ShardedBatches.__iter__, checkpoint.save, results.Store.write

    def logged_iter(self):  # noqa: ANN001, ANN202
        for shard in shard_iter(self):
            note(epoch=self.epoch, shard=shard)
            yield shard

    def logged_save(state, path):  # noqa: ANN001, ANN202
        note(wrote=str(path))
        return save(state, path)

    def logged_write(self, record):  # noqa: ANN001, ANN202
        note(wrote=str(self.path(record["run_id"])))
        return write(self, record)

    ShardedBatches.__iter__, checkpoint.save, results.Store.write = logged_iter, logged_save, logged_write
    _record_first_gradients(Path(log_dir) / f"grads{rank}.pt")
    try:
        runner.run(OmegaConf.create(config))
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two processes with gloo: 10 to 16 s
def test_two_processes_train_like_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import runner

    monkeypatch.setattr(torch.optim.AdamW, "step", torch.optim.AdamW.step)  # restored after the test
    _record_first_gradients(tmp_path / "grads.pt")
    single = runner.run(compose_run(tmp_path / "one", *RUN))
    cfg = compose_run(tmp_path / "two", *RUN)
    mp.spawn(_rank, args=(2, _free_port(), OmegaConf.to_container(cfg), str(tmp_path)), nprocs=2, join=True)

    logs = [[json.loads(line) for line in (tmp_path / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    # Disjoint shards that together are each epoch's training set (96 toy samples, 6 batches of 16).
    for epoch in (0, 1):
        seen = [[i for e in logs[r] if e.get("epoch") == epoch for i in e["shard"]] for r in (0, 1)]
        assert len(seen[0]) == len(seen[1]) == 48 and not set(seen[0]) & set(seen[1])
        assert sorted(seen[0] + seen[1]) == list(range(96))
    # Only rank 0 writes checkpoints and the record.
    assert not [e for e in logs[1] if "wrote" in e]
    wrote = [Path(e["wrote"]).name for e in logs[0] if "wrote" in e]
    assert wrote.count("last.pt") == 2 and f"{single['run_id']}.json" in wrote

    # Each rank computed the gradient of its half; after the all-reduce both hold the whole batch's mean gradient.
    whole = torch.load(tmp_path / "grads.pt")
    for rank in (0, 1):
        for got, want in zip(torch.load(tmp_path / f"grads{rank}.pt"), whole, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)

    [record] = list(runner.store_for(cfg).records())
    assert record["run_id"] == single["run_id"] and record["status"] == "complete"
    # Averaged gradients of the two halves are the gradient of the whole batch: the same training.
    for got, want in zip(record["metrics"]["history"], single["metrics"]["history"]):
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-5)
        assert got["val"] == want["val"] and got["lr"] == pytest.approx(want["lr"])
    assert record["metrics"]["test"] == single["metrics"]["test"]
    two = torch.load(tmp_path / "two" / "runs" / record["run_id"] / "last.pt", weights_only=False)["model"]
    one = torch.load(tmp_path / "one" / "runs" / record["run_id"] / "last.pt", weights_only=False)["model"]
    for name, value in one.items():
        # Adam divides by the gradients' RMS, which magnifies float-order noise in near-zero gradients.
        torch.testing.assert_close(two[name], value, rtol=1e-3, atol=2e-4)
