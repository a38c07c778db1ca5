"""The run configuration: one dataclass tree, registered in Hydra's ConfigStore.

Tasks and models add their own groups (`task=...`, `model=...`) through the registries; experiment
files in `sweeps/` only say what they change. Everything a run does is decided here, so the same
resolved config always names the same run (see `harness.identity`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class TaskConfig:
    """Base of every task's config. `root` None means `<paths.data>/<name>`."""

    name: str = MISSING
    root: str | None = None


@dataclass
class ModelConfig:
    """Base of every model's config."""

    name: str = MISSING


@dataclass
class OptimConfig:
    optimizer: str = "adamw"  # adamw | adam
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    # Most recipes exempt norms and biases from weight decay; MultiresNet's published code does not.
    decay_norm_and_bias: bool = False


@dataclass
class TrainConfig:
    epochs: int = 10
    max_steps: int | None = None  # stop after this many optimizer steps (the schedule spans them)
    batch_size: int = 32
    eval_batch_size: int | None = None  # None: same as batch_size
    schedule: str = "cosine"  # cosine | constant | rsqrt
    warmup_epochs: float = 0.0
    warmup_steps: int | None = None  # overrides warmup_epochs when set
    grad_clip: float = 0.0  # max global grad norm; 0 disables
    compile: bool = False  # torch.compile the model for training (about a minute of compiling first)
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp32
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_workers: int = 0
    progress: bool = True  # tqdm bar
    # Evaluate on this many batches at most (None: the whole split); for smoke runs only.
    limit_eval_batches: int | None = None
    limit_train_batches: int | None = None


@dataclass
class PathsConfig:
    root: str = "results"  # store/, runs/ and reports/ live under it
    data: str = "data"  # datasets: <data>/<task name> unless task.root is set


@dataclass
class QuickstartConfig:
    """`python run.py` with no task and no model: every registered model, small, on generated ListOps."""

    models: list[str] = field(default_factory=list)  # empty: every registered model
    seeds: list[int] = field(default_factory=lambda: [0])
    d_model: int = 32
    n_layers: int = 2
    n_train: int = 4000
    n_val: int = 500
    n_test: int = 500
    min_length: int = 20
    max_length: int = 100  # also the models' l_max: every expression (plus <eos>) fits
    max_depth: int = 4
    epochs: int = 5
    batch_size: int = 32
    lr: float = 3e-3


@dataclass
class BenchConfig:
    """`python run.py job=bench`: time and memory of sequence layers and blocks against length."""

    models: list[str] = field(default_factory=list)  # empty: every registered model
    scope: list[str] = field(default_factory=lambda: ["layer", "block"])
    lengths: list[int] = field(default_factory=lambda: [2**k for k in range(10, 21)])
    passes: list[str] = field(default_factory=lambda: ["fwd", "fwd_bwd"])
    dtypes: list[str] = field(default_factory=lambda: ["fp32", "bf16"])
    d_model: int = 256
    batch_size: int | None = None  # fixed batch; None: hold batch x length at tokens_per_batch
    tokens_per_batch: int = 2**18
    warmup: int = 3
    repeats: int = 10
    device: str = "auto"
    model_overrides: Any = None  # per-model config fields, e.g. {s4: {d_state: 64}} (Any: Hydra adds keys freely)
    max_call_s: float | None = None  # skip a series' longer lengths once a call is predicted longer than this
    point_budget_s: float | None = None  # shrink repeats (to 3 at least) so one point costs about this
    max_total_s: float | None = None  # skip the remaining points after this much wall time


@dataclass
class RunConfig:
    job: str = "train"  # train | bench | quickstart
    task: Any = None
    model: Any = None
    seed: int = 0
    sweep: str = "default"
    force: bool = False  # rerun even when a complete record exists
    dry_run: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    quickstart: QuickstartConfig = field(default_factory=QuickstartConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)


# Keys that do not change what a run computes: they are left out of its identity.
NON_SEMANTIC_KEYS = (
    "job",
    "sweep",
    "force",
    "dry_run",
    "paths",
    "quickstart",
    "bench",
    "hydra",
    "train.progress",
    "train.num_workers",
    "train.device",
    "train.compile",
)

ConfigStore.instance().store(name="run_schema", node=RunConfig)


@dataclass
class SweeperConfig:
    """`hydra/sweeper=seqbench` (harness.sweep.Sweeper): Hydra's basic sweeper that first composes and checks
    every point (a sweep with a bad point is refused whole), skips points already complete, and can vary
    keys together (`zip`) or submit without waiting (`wait: false`)."""

    _target_: str = "hydra_plugins.seqbench.Sweeper"  # harness.sweep.Sweeper, registered with Hydra there
    max_batch_size: int | None = None
    params: dict[str, str] | None = None
    # Groups of keys varied together instead of crossed, e.g. [[model, optim.lr]]: their i-th values form one point.
    zip: list[list[str]] = field(default_factory=list)
    wait: bool = True  # false: return once submitted (hydra/launcher=slurm); `python -m harness.sweep status` later


ConfigStore.instance().store(group="hydra/sweeper", name="seqbench", node=SweeperConfig)
