"""How long `python -m reports` takes on a large store: a synthetic store, then the report command, timed.

    python -m reports.scale_bench                            10,000 configurations of one seed each
    python -m reports.scale_bench --configs 10 --seeds 1000  10 configurations of 1,000 seeds each
    python -m reports.scale_bench --keep DIR                 keep the store and the report under DIR

The records are written the way the runner writes them (a composed ListOps config per model, a history of
`--epochs` epochs, throughput, memory, data sizes, code versions, the environment), all complete, in one sweep.
Configurations differ in the learning rate and the width, cycling through the models, so every configuration is a
row of one leaderboard and of one ablation table: the largest tables a store of that many records can give.

The report is built by the command a user runs (`python -m reports --store S --out O`, in a child process), and
its wall time, CPU time and peak resident memory (the child's, from wait4) are printed with the machine's load
average before and after: on a shared machine the wall time depends on what else runs, the CPU time much less.
Nothing is asserted: this is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from harness.registry import compose_config
from harness.results import Store

MODELS = ("s4d", "s4", "multires", "sgconv", "transformer")
REPO = Path(__file__).resolve().parent.parent


def base_configs() -> dict[str, dict[str, Any]]:
    """The config a run of each model on full-size ListOps records (composed as run.py composes it)."""
    out = {}
    for model in MODELS:
        tree = OmegaConf.to_container(compose_config(["task=listops", f"model={model}"]), resolve=True)
        assert isinstance(tree, dict)
        tree.pop("hydra", None)
        out[model] = tree
    return out


ENV = {"git_commit": "0" * 40, "git_dirty": False, "python": "3.11.2", "torch": "2.11.0", "cuda": "13.0",
       "packages": {"torch": "2.11.0", "numpy": "2.4.6", "pandas": "3.1.1", "hydra-core": "1.3.2"},
       "host": "gpu-node-1", "platform": "Linux-6.1-x86_64", "cpu_count": 16, "torch_threads": 16,
       "device": "NVIDIA H100 80GB HBM3", "slurm": None, "argv": ["run.py"]}


def record(i: int, seed: int, base: dict[str, dict[str, Any]], epochs: int) -> dict[str, Any]:
    """Configuration `i` (of its model: a learning rate and a width of its own), run with `seed`."""
    model = MODELS[i % len(MODELS)]
    config = copy.deepcopy(base[model])
    config["optim"]["lr"] = round(1e-4 * (1 + i // len(MODELS)), 6)
    config["model"]["d_model"] = 32 * (1 + i % 4)
    config.update(seed=seed, sweep="scale")
    test = 0.3 + 0.4 * ((i * 7919 + seed * 104729) % 1000) / 1000
    history = [{"epoch": e, "step": 100 * e, "train_loss": 2.0 / e, "val": test * e / epochs, "lr": 1e-3}
               for e in range(1, epochs + 1)]
    return {"run_id": f"scale-{i:05d}-{seed:04d}", "kind": "train", "sweep": "scale", "sweep_id": "scale-0",
            "task": "listops", "model": model, "seed": seed, "status": "complete", "config": config,
            "versions": {"model": 1, "task": 1, "harness": 1}, "env": ENV, "params": 100_000 + 997 * i,
            "error": None,
            "metrics": {"metric": "accuracy", "higher_is_better": True, "val": test + 0.01, "test": test,
                        "test_details": {}, "best_epoch": epochs, "epochs": epochs, "steps": 100 * epochs,
                        "history": history},
            "throughput": {"train_samples_per_s": 500.0, "train_tokens_per_s": 5e5},
            "memory": {"peak_bytes": 2**30, "kind": "cuda"},
            "data": {"sizes": {"train": 96_000, "val": 2_000, "test": 2_000}},
            "timing": {"started": "2026-12-01T00:00:00+00:00", "finished": "2026-12-01T01:00:00+00:00",
                       "wall_s": 3600.0}}


def make_store(root: Path, configs: int, seeds: int, epochs: int) -> Path:
    store = Store(root / "store")
    base = base_configs()
    for i in range(configs):
        for seed in range(seeds):
            store.write(record(i, seed, base, epochs))
    return store.root


def time_report(store: Path, out: Path) -> tuple[float, float, int, int, str]:
    """(wall seconds, CPU seconds, peak resident bytes, exit status, stderr) of `python -m reports`, a child."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "reports", "--store", str(store), "--out", str(out)], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert child.stderr is not None
    err = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, child.returncode, err


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.scale_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", type=int, default=10_000, help="configurations (default 10,000)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per configuration (default 1)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of history per record (default 20)")
    parser.add_argument("--keep", type=Path, help="write the store and the report here and keep them")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="seqbench-scale-") as tmp:
        root = args.keep or Path(tmp)
        t0 = time.perf_counter()
        store = make_store(root, args.configs, args.seeds, args.epochs)
        size = sum(p.stat().st_size for p in store.glob("*.json"))
        print(f"store: {args.configs:,} configurations x {args.seeds:,} seeds = {args.configs * args.seeds:,} "
              f"records, {size / 2**20:.0f} MiB, written in {time.perf_counter() - t0:.1f} s", flush=True)
        load_before = os.getloadavg()
        wall, cpu, peak, rc, err = time_report(store, root / "report")
        load_after = os.getloadavg()
        # One thread: on an idle machine the wall time is about the CPU time; on a busy one, more.
        print(f"python -m reports: {wall:.1f} s wall, {cpu:.1f} s CPU, peak resident memory {peak / 2**30:.2f} GiB "
              f"(imports alone about 0.7 GiB), exit {rc}")
        print(f"machine: {os.cpu_count()} CPUs; load average (1 min) {load_before[0]:.2f} before, "
              f"{load_after[0]:.2f} after")
        if rc != 0:
            print(err, file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
