"""The run configuration: one dataclass tree, registered in Hydra's ConfigStore.

Tasks and models add their own groups (`task=...`, `model=...`) through the registries; experiment
files in `sweeps/` only say what they change. Everything a run does is decided here, so the same
resolved config always names the same run (see `harness.identity`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from harness.errors import ConfigError


@dataclass
class TaskConfig:
    """Base of every task's config. `root` None means `<paths.data>/<name>`."""

    name: str = MISSING
    root: str | None = None


@dataclass
class ModelConfig:
    """Base of every model's config."""

    name: str = MISSING


# Checks for a config's __post_init__; `key` is the option as the user types it, e.g. "task.norm".


def one_of(key: str, value: Any, choices: Iterable[Any]) -> None:
    """ConfigError unless `value` is one of `choices`."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(map(repr, choices))}")


def positive(key: str, value: Any, *, integer: bool = False, optional: bool = False) -> None:
    """ConfigError unless `value` is a number above 0 (an int if `integer`; None allowed if `optional`)."""
    if value is None and optional:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
        what = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"{key}={value!r} must be {what}{' (or null)' if optional else ''}")


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
    """`python run.py job=bench`: time and memory of sequence layers and blocks against length (harness/bench.py).

    Checked once, when built: `BenchConfig(**OmegaConf.to_container(cfg.bench))`. Lengths come out sorted and
    without repeats."""

    # Not fields (no annotation): what each list may hold.
    SCOPES = ("layer", "block")  # the sequence layer alone (blocks[0].mixer) or its residual block (blocks[0])
    PASSES = ("fwd", "fwd_bwd")
    DTYPES = ("fp32", "bf16")

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

    def __post_init__(self) -> None:
        for key, allowed in (("scope", self.SCOPES), ("passes", self.PASSES), ("dtypes", self.DTYPES)):
            if not getattr(self, key):
                raise ConfigError(f"bench.{key} must be a non-empty list of {', '.join(allowed)}")
            for value in getattr(self, key):
                one_of(f"bench.{key}", value, allowed)
        if not self.lengths:
            raise ConfigError("bench.lengths must be a non-empty list of positive integers")
        for length in self.lengths:
            positive("bench.lengths", length, integer=True)
        self.lengths = sorted(set(self.lengths))
        for key in ("d_model", "tokens_per_batch", "repeats"):
            positive(f"bench.{key}", getattr(self, key), integer=True)
        positive("bench.batch_size", self.batch_size, integer=True, optional=True)
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ConfigError(f"bench.warmup={self.warmup!r} must be an integer >= 0")
        for key in ("max_call_s", "point_budget_s", "max_total_s"):
            positive(f"bench.{key}", getattr(self, key), optional=True)
        overrides = self.model_overrides or {}
        if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
            raise ConfigError("bench.model_overrides must map a model name to a dict of its config fields, "
                              "e.g. '++bench.model_overrides={s4:{d_state:64}}'")

    def batch_for(self, length: int) -> int:
        """`batch_size`, or as many sequences as fit in `tokens_per_batch` (at least one)."""
        return self.batch_size or max(1, self.tokens_per_batch // length)

    def overrides(self, model: str) -> dict[str, Any]:
        """`model_overrides[model]`: the config fields set for this model."""
        return dict((self.model_overrides or {}).get(model) or {})


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
    """`hydra/sweeper=seqbench` (harness.sweeper.Sweeper): Hydra's basic sweeper that first composes and checks
    every point (a sweep with a bad point is refused whole), skips points already complete, and can vary
    keys together (`zip`) or submit without waiting (`wait: false`)."""

    _target_: str = "hydra_plugins.harness.sweeper.Sweeper"  # the name harness/hydra_plugins.py gives it in Hydra
    max_batch_size: int | None = None
    params: dict[str, str] | None = None
    # Groups of keys varied together instead of crossed, e.g. [[model, optim.lr]]: their i-th values form one point.
    zip: list[list[str]] = field(default_factory=list)
    wait: bool = True  # false: return once submitted (hydra/launcher=slurm); `python -m harness.sweep status` later


ConfigStore.instance().store(group="hydra/sweeper", name="seqbench", node=SweeperConfig)
