"""The run configuration: one dataclass tree, registered in Hydra's ConfigStore.

Tasks and models add their own groups (`task=...`, `model=...`) through the registries; experiment
files in `sweeps/` only say what they change. Everything a run does is decided here, so the same
resolved config always names the same run (see `harness.identity`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, get_type_hints

from hydra.core.config_store import ConfigStore
from hydra.errors import MissingConfigException, OverrideParseException
from omegaconf import MISSING
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

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
    # Can torch.compile trace the model for inputs of any length (dynamic shapes)? A model whose Python code
    # computes sizes from the length (MultiresNet's FFT and tree sizes) recompiles at every new length instead.
    compiles_any_length: ClassVar[bool] = True


# Checks for a config's __post_init__; `key` is the option as the user types it, e.g. "task.norm".


def one_of(key: str, value: Any, choices: Iterable[Any]) -> None:
    """ConfigError unless `value` is one of `choices`."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(map(repr, choices))}")


def _number(key: str, value: Any, *, integer: bool, optional: bool, zero: bool) -> None:
    if value is None and optional:
        return
    kinds = (int,) if integer else (int, float)
    if (isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value)
            or not (value >= 0 if zero else value > 0)):
        what = ("an integer" if integer else "a finite number") + (" >= 0" if zero else " > 0")
        raise ConfigError(f"{key}={value!r} must be {what}{' (or null)' if optional else ''}")


def positive(key: str, value: Any, *, integer: bool = False, optional: bool = False) -> None:
    """ConfigError unless `value` is a finite number above 0 (an int if `integer`; None allowed if `optional`)."""
    _number(key, value, integer=integer, optional=optional, zero=False)


def non_negative(key: str, value: Any, *, integer: bool = False, optional: bool = False) -> None:
    """ConfigError unless `value` is a finite number >= 0 (an int if `integer`; None allowed if `optional`)."""
    _number(key, value, integer=integer, optional=optional, zero=True)


# Learning rates, weight decays and Adam's eps are at most this: far above any rate that trains (the tests make a run
# diverge with 1e6), far below what overflows torch's float32 optimizer arithmetic (Adam's first step is
# lr / (1 - beta1) <= 1e6 / 1.1e-16 ~ 1e22, against a float32 maximum of 3.4e38; lr 1e38 raised a RuntimeError).
MAX_RATE = 1e6
# A seed goes to torch, NumPy (modulo 2**32) and every epoch's batch order (seed * 100_003 + epoch, which torch takes
# as a 64-bit integer): 32 bits of either sign fit them all.
MAX_SEED = 2**32 - 1
# A warm-up of more epochs than this is a typo; the bound keeps its step count finite (1e308 epochs overflowed).
MAX_WARMUP_EPOCHS = 1e6
LR_OPTION = re.compile(r"(.+_)?lr")  # optim.lr and a model's own rates: S4's ssm_lr, dt_lr, c_lr, SGConv's kernel_lr
DECAY_OPTION = re.compile(r"(.+_)?weight_decay")  # optim.weight_decay, S4's ssm_weight_decay


def rate(key: str, value: Any, *, zero: bool = False, optional: bool = False) -> None:
    """ConfigError unless `value` is a finite number in (0, MAX_RATE] ([0, MAX_RATE] if `zero`; None if `optional`)."""
    _number(key, value, integer=False, optional=optional, zero=zero)
    if value is not None and value > MAX_RATE:
        raise ConfigError(f"{key}={value!r} must be at most {MAX_RATE:g} (a larger rate overflows the optimizer's "
                          f"float32 arithmetic)")


def rate_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """Every learning rate and weight decay a run config (plain data) sets, by dotted key: optim.lr,
    optim.weight_decay and each `model.*_lr` and `model.*_weight_decay`, whatever the model."""
    return {f"{section}.{key}": value for section in ("optim", "model")
            for key, value in (config.get(section) or {}).items()
            if LR_OPTION.fullmatch(key) or DECAY_OPTION.fullmatch(key)}


def check_rates(config: Mapping[str, Any]) -> None:
    """ConfigError naming the first learning rate or weight decay of `config` (plain data) out of range. A model's
    own may be None (the global one applies), where its type allows it (OmegaConf refuses it elsewhere)."""
    for key, value in rate_options(config).items():
        if value is not None or not key.startswith("model."):
            rate(key, value, zero=bool(DECAY_OPTION.fullmatch(key.partition(".")[2])))


def rate_keys(config: Mapping[str, Any], value: float, kind: str = "lr") -> list[str]:
    """The options of `config` of this `kind` (lr | weight_decay) set to `value`: where an optimizer group's rate
    came from."""
    pattern = LR_OPTION if kind == "lr" else DECAY_OPTION
    return [key for key, v in rate_options(config).items() if pattern.fullmatch(key.partition(".")[2]) and v == value]


def check_param_groups(groups: Iterable[Mapping[str, Any]], config: Mapping[str, Any]) -> None:
    """ConfigError unless every optimizer group's lr and weight decay is in range, named by the option that set it.
    A model declares its own groups (`p._optim` hints, harness.optim) from options of any name: checked here too."""
    for group in groups:
        for kind, zero in (("lr", False), ("weight_decay", True)):
            keys = rate_keys(config, group[kind], kind)
            named = " or ".join(keys) or f"the {kind} of a parameter group the model declares (p._optim)"
            rate(named, group[kind], zero=zero)


def closest(key: str, options: Iterable[str]) -> str:
    """' (did you mean X?)' for the option (a dotted key) whose last part is most like `key`'s, or ''."""
    by_name = {option.rpartition(".")[2]: option for option in options}
    match = difflib.get_close_matches(key.rpartition(".")[2], list(by_name), n=1, cutoff=0.6)
    return f" (did you mean {by_name[match[0]]}?)" if match else ""


def check_keys(values: Mapping[str, Any], cls: type, prefix: str) -> None:
    """ConfigError naming the first key of `values` that the config dataclass `cls` has no field for.

    Hydra refuses an unknown `train.epoch=5`, but `+train.epoch=5` adds the key, which nothing would read."""
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            hint = closest(f"{prefix}{key}", (prefix + n for n in names))
            raise ConfigError(f"{prefix}{key} is not an option{hint}; drop it (`python -m harness list` shows every "
                              f"task and model option)")


def composition_error(exc: Exception) -> str:
    """A Hydra or OmegaConf error met while composing the config, as one line that names the key and the fix."""
    if isinstance(exc.__cause__, ConfigError):  # raised by our sweeper or launcher while Hydra instantiated it
        return str(exc.__cause__)
    if isinstance(exc, OverrideParseException):
        return (f"cannot parse {exc.override!r}: {exc.message.splitlines()[0]} (the grammar: "
                f"https://hydra.cc/docs/advanced/override_grammar/basic)")
    if isinstance(exc, MissingConfigException) and exc.options:
        missing = str(exc).splitlines()[0].removeprefix("In 'config': ")
        return f"{missing}; choose one of {', '.join(exc.options)}"
    cause = exc if isinstance(exc, OmegaConfBaseException) else exc.__cause__
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.full_key:
        key, group = cause.full_key, cause.full_key.split(".")[0]
        if cause.object_type is dict and group in ("model", "task"):
            return (f"{key} is an option of the {group}, but no {group} is chosen: add {group}=<name> (`python -m "
                    f"harness list` shows them)")
        if dataclasses.is_dataclass(cause.object_type):
            parent = key.rpartition(".")[0]
            names = [f"{parent}.{f.name}" if parent else f.name for f in dataclasses.fields(cause.object_type)]
            return (f"{key} is not an option{closest(key, names)}; `python -m harness list` shows every task and "
                    f"model option")
    if isinstance(cause, OmegaConfBaseException) and str(cause).strip():
        first = str(cause).strip().splitlines()[0]  # the other lines repeat the key and its type
        return f"{cause.full_key}: {first}" if cause.full_key else first
    return " ".join(str(exc).split())


# Names the owners check (harness.preflight.check calls them): optim.optimizer (harness.optim.OPTIMIZERS),
# train.schedule (harness.optim.SCHEDULES), train.precision (harness.device.autocast_for), job (harness.jobs.JOBS).


DECAY_EXEMPT = ("norms_and_biases", "backbone_norms_and_biases", "none")  # the rules of harness.optim.exempt_from_decay


@dataclass
class OptimConfig:
    optimizer: str = "adamw"  # adamw | adam
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    # Which parameters AdamW exempts from weight decay (a parameter's own `_optim` hint wins over the rule):
    # norms_and_biases: every bias and norm weight (the common recipe); backbone_norms_and_biases: those of the blocks,
    # not of the encoder or decoder (state-spaces/s4 from v4.1); none: no parameter (every paper preset's code).
    decay_exempt: str = "norms_and_biases"

    def __post_init__(self) -> None:
        rate("optim.lr", self.lr)
        rate("optim.weight_decay", self.weight_decay, zero=True)
        rate("optim.eps", self.eps)
        one_of("optim.decay_exempt", self.decay_exempt, DECAY_EXEMPT)
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.betas={list(self.betas)!r} must be two numbers in [0, 1), e.g. [0.9,0.999]")


@dataclass
class TrainConfig:
    # When the run stops: after `epochs` epochs or after `max_steps` optimizer steps; set one, the other null.
    epochs: int | None = 10
    max_steps: int | None = None
    batch_size: int = 32
    eval_batch_size: int | None = None  # None: same as batch_size
    # Leave out each epoch's last, smaller batch (a DataLoader's drop_last=True, as the S4 codebase's loaders set).
    drop_last: bool = False
    schedule: str = "cosine"  # cosine | constant | rsqrt
    # The cosine's length in steps when it differs from the run's (null: it spans the run). Past its end the
    # learning rate rises again, as in HF's get_cosine_schedule_with_warmup.
    schedule_steps: int | None = None
    warmup_epochs: float = 0.0
    warmup_steps: int | None = None  # overrides warmup_epochs when set
    # Validation every this many steps (null: at the end of every epoch). Steps are counted as the LRA loops count
    # them: after the steps of 0-based index N, 2N, ... (the N+1st, 2N+1st step).
    eval_every_steps: int | None = None
    # Stop once this many steps have passed since the last new best validation (null: no early stopping), but
    # only after the step of 0-based index early_stop_start_step.
    early_stop_patience_steps: int | None = None
    early_stop_start_step: int = 0
    # A validation score equal to the best so far: `later` makes it the best (>=), `earlier` keeps the old one (>).
    best_tie: str = "later"
    # The state the test split scores: the best validation state (`best`), or the last one (`last`, as the LRA
    # Transformer's --test_only run on its final checkpoint).
    test_on: str = "best"
    grad_clip: float = 0.0  # max global grad norm; 0 disables
    compile: bool = False  # torch.compile the model for training (compiling takes the first steps)
    # torch.compile's mode: default, or reduce-overhead (CUDA graphs: a captured graph replayed each step; one per
    # distinct batch length where batches vary, which torch records as each length first comes), or max-autotune.
    compile_mode: str = "default"
    # auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp32 (fp32 matmuls and convolutions) | tf32 (fp32 with
    # TF32 matmuls and convolutions on CUDA, as the published S4, SGConv and MultiresNet trainers set)
    precision: str = "auto"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_workers: int = 0
    progress: bool = True  # a bar on a terminal, a few plain lines in a file (a SLURM log)
    # Evaluate on this many batches at most (None: the whole split); for smoke runs only.
    limit_eval_batches: int | None = None
    limit_train_batches: int | None = None

    def __post_init__(self) -> None:
        positive("train.batch_size", self.batch_size, integer=True)
        for key in ("epochs", "max_steps", "eval_batch_size", "schedule_steps", "eval_every_steps",
                    "early_stop_patience_steps", "limit_eval_batches", "limit_train_batches"):
            positive(f"train.{key}", getattr(self, key), integer=True, optional=True)
        non_negative("train.warmup_epochs", self.warmup_epochs)
        if self.warmup_epochs > MAX_WARMUP_EPOCHS:
            raise ConfigError(f"train.warmup_epochs={self.warmup_epochs!r} must be at most {MAX_WARMUP_EPOCHS:g}; "
                              f"for a warm-up counted in steps set train.warmup_steps")
        non_negative("train.warmup_steps", self.warmup_steps, integer=True, optional=True)
        non_negative("train.early_stop_start_step", self.early_stop_start_step, integer=True)
        non_negative("train.grad_clip", self.grad_clip)
        non_negative("train.num_workers", self.num_workers, integer=True)
        one_of("train.best_tie", self.best_tie, ("later", "earlier"))
        one_of("train.test_on", self.test_on, ("best", "last"))
        one_of("train.compile_mode", self.compile_mode, ("default", "reduce-overhead", "max-autotune"))
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"train.device={self.device!r} must be auto, cpu, cuda or cuda:N")
        self._check_stop()

    def _check_stop(self) -> None:
        """One option says when the run stops, and none is set that nothing would read."""
        if self.epochs is not None and self.max_steps is not None:
            raise ConfigError(f"train.epochs={self.epochs} and train.max_steps={self.max_steps} both say when the run "
                              f"stops: set one of them to null (train.max_steps=null stops after {self.epochs} "
                              f"epochs, train.epochs=null after {self.max_steps} steps)")
        if self.epochs is None and self.max_steps is None:
            raise ConfigError("train.epochs and train.max_steps are both null: set one to say when the run stops, "
                              "e.g. train.epochs=10")
        if self.schedule_steps is not None and self.schedule != "cosine":
            raise ConfigError(f"train.schedule_steps={self.schedule_steps} sizes the cosine schedule only, not "
                              f"train.schedule={self.schedule}; set train.schedule_steps=null")
        if self.early_stop_start_step and self.early_stop_patience_steps is None:
            raise ConfigError(f"train.early_stop_start_step={self.early_stop_start_step} has no effect without "
                              f"train.early_stop_patience_steps; set both or neither")


@dataclass
class PathsConfig:
    root: str = "results"  # store/, runs/ and reports/ live under it
    data: str = "data"  # datasets: <data>/<task name> unless task.root is set

    def __post_init__(self) -> None:
        for key in ("root", "data"):
            if not str(getattr(self, key)).strip():
                raise ConfigError(f"paths.{key} is empty; give a folder")


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

    def __post_init__(self) -> None:
        for key in ("d_model", "n_layers", "n_train", "n_val", "n_test", "min_length", "max_length", "max_depth",
                    "epochs", "batch_size"):
            positive(f"quickstart.{key}", getattr(self, key), integer=True)
        rate("quickstart.lr", self.lr)
        for seed in self.seeds:
            check_seed("quickstart.seeds", seed)
        if self.min_length > self.max_length:
            raise ConfigError(f"quickstart.min_length={self.min_length} is above quickstart.max_length="
                              f"{self.max_length}")
        if not self.seeds:
            raise ConfigError("quickstart.seeds is empty; give at least one seed, e.g. quickstart.seeds=[0]")


@dataclass
class BenchConfig:
    """`python run.py job=bench`: time and memory of sequence layers and blocks against length (harness/bench.py).

    Checked when built: `BenchConfig(**OmegaConf.to_container(cfg.bench))`. Lengths come out sorted and without
    repeats. What the grid leaves null (lengths, dtypes, d_model, tokens_per_batch) is chosen for the device it runs
    on: `resolved(kind)`, from DEVICE_DEFAULTS."""

    # Not fields (no annotation): what each list may hold.
    SCOPES = ("layer", "block")  # the sequence layer alone (blocks[0].mixer) or its residual block (blocks[0])
    PASSES = ("fwd", "fwd_bwd")
    DTYPES = ("fp32", "bf16")
    # The GPU study (sweeps/experiment/bench_scaling.yaml), and a grid that two CPU cores finish in minutes.
    DEVICE_DEFAULTS = {
        "cuda": {"lengths": tuple(2**k for k in range(10, 21)), "dtypes": ("fp32", "bf16"), "d_model": 256,
                 "tokens_per_batch": 2**18},
        "cpu": {"lengths": tuple(2**k for k in range(8, 13)), "dtypes": ("fp32",), "d_model": 64,
                "tokens_per_batch": 2**12},
    }

    models: list[str] = field(default_factory=list)  # empty: every registered model
    scope: list[str] = field(default_factory=lambda: ["layer", "block"])
    lengths: list[int] | None = None  # null: DEVICE_DEFAULTS
    passes: list[str] = field(default_factory=lambda: ["fwd", "fwd_bwd"])
    dtypes: list[str] | None = None  # null: DEVICE_DEFAULTS
    d_model: int | None = None  # null: DEVICE_DEFAULTS
    batch_size: int | None = None  # fixed batch; None: hold batch x length at tokens_per_batch
    tokens_per_batch: int | None = None  # null: DEVICE_DEFAULTS
    warmup: int = 3
    repeats: int = 10
    device: str = "auto"
    model_overrides: Any = None  # per-model config fields, e.g. {s4: {d_state: 64}} (Any: Hydra adds keys freely)
    max_call_s: float | None = None  # skip a series' longer lengths once a call is predicted longer than this
    point_budget_s: float | None = None  # shrink repeats (to 3 at least) so one point costs about this
    max_total_s: float | None = None  # skip the remaining points after this much wall time

    def __post_init__(self) -> None:
        for key, allowed in (("scope", self.SCOPES), ("passes", self.PASSES), ("dtypes", self.DTYPES)):
            values = getattr(self, key)
            if values is None and key in self.DEVICE_DEFAULTS["cpu"]:
                continue
            if not values:
                raise ConfigError(f"bench.{key} must be a non-empty list of {', '.join(allowed)}")
            for value in values:
                one_of(f"bench.{key}", value, allowed)
        if self.lengths is not None:
            if not self.lengths:
                raise ConfigError("bench.lengths must be a non-empty list of positive integers")
            for length in self.lengths:
                positive("bench.lengths", length, integer=True)
            self.lengths = sorted(set(self.lengths))
        for key in ("d_model", "tokens_per_batch"):
            positive(f"bench.{key}", getattr(self, key), integer=True, optional=True)
        positive("bench.repeats", self.repeats, integer=True)
        positive("bench.batch_size", self.batch_size, integer=True, optional=True)
        non_negative("bench.warmup", self.warmup, integer=True)
        for key in ("max_call_s", "point_budget_s", "max_total_s"):
            positive(f"bench.{key}", getattr(self, key), optional=True)
        overrides = self.model_overrides or {}
        if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
            raise ConfigError("bench.model_overrides must map a model name to a dict of its config fields, "
                              "e.g. '++bench.model_overrides={s4:{d_state:64}}'")

    def unset(self) -> list[str]:
        """The options left null, which `resolved` chooses by device."""
        return [key for key in self.DEVICE_DEFAULTS["cpu"] if getattr(self, key) is None]

    def resolved(self, kind: str) -> BenchConfig:
        """This config with what it leaves null set for a device of `kind` (cuda | cpu); set options win."""
        one_of("device kind", kind, self.DEVICE_DEFAULTS)
        chosen = {key: list(v) if isinstance(v, tuple) else v for key, v in self.DEVICE_DEFAULTS[kind].items()}
        return dataclasses.replace(self, **{key: chosen[key] for key in self.unset()})

    def batch_for(self, length: int) -> int:
        """`batch_size`, or as many sequences as fit in `tokens_per_batch` (at least one)."""
        return self.batch_size or max(1, self.tokens_per_batch // length)

    def overrides(self, model: str) -> dict[str, Any]:
        """`model_overrides[model]`: the config fields set for this model."""
        return dict((self.model_overrides or {}).get(model) or {})


LOGGERS = ("tensorboard", "wandb")  # harness.loggers.BACKENDS
WANDB_MODES = ("auto", "online", "offline")


def logger_names(value: Any) -> list[str]:
    """`logger` as a list of names: null, none or [] for no logger, one name, or a list of them."""
    if value is None or value == "none":
        return []
    names = [value] if isinstance(value, str) else list(value) if isinstance(value, Sequence) else None
    if names is None or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"logger={value!r} must be none, tensorboard, wandb or a list of them, e.g. "
                          f"logger=[tensorboard,wandb]")
    for name in names:
        one_of("logger", name, LOGGERS)
    return list(dict.fromkeys(names))


@dataclass
class LogConfig:
    """Live curves (`logger=tensorboard`, `logger=wandb`): harness/loggers.py."""

    every_n_steps: int = 50  # the training loss (mean since the last point) and the learning rate, every N steps
    wandb_project: str = "seqbench"
    wandb_mode: str = "auto"  # auto: online when W&B's server answers, else offline | online | offline

    def __post_init__(self) -> None:
        positive("log.every_n_steps", self.every_n_steps, integer=True)
        one_of("log.wandb_mode", self.wandb_mode, WANDB_MODES)
        if not str(self.wandb_project).strip():
            raise ConfigError("log.wandb_project is empty; give a project name, e.g. log.wandb_project=seqbench")


@dataclass
class EvalConfig:
    """`job=eval`, `job=lengths` and `job=redraw`: evaluate trained runs on other data (harness/evaluate.py)."""

    runs: list[str] = field(default_factory=list)  # run ids; or every complete training run of `sweep`
    sweep: str | None = None  # the training sweep whose complete runs are evaluated
    # job=lengths: test-only ListOps bins [[min_length, max_length], ...] (exclusive bounds, as task.min/max_length);
    # null: three doublings above each run's own task.max_length (2-4K, 4-8K, 8-16K for LRA's 500-2,000).
    bins: list[list[int]] | None = None
    n_test: int = 2000  # expressions per bin (job=lengths) or in the fresh draw (job=redraw)
    seed: int = 1  # the generator seed of the bins or the fresh draw (the training set's is task.seed)
    batch_size: int | None = None  # null: the run's train.eval_batch_size or train.batch_size

    def __post_init__(self) -> None:
        positive("eval.n_test", self.n_test, integer=True)
        positive("eval.batch_size", self.batch_size, integer=True, optional=True)
        for low_high in self.bins or []:
            if len(low_high) != 2 or not all(isinstance(v, int) and v > 0 for v in low_high) or \
                    low_high[1] - low_high[0] < 2:
                raise ConfigError(f"eval.bins entry {list(low_high)!r} must be [min_length, max_length], two "
                                  f"integers at least 2 apart, e.g. eval.bins=[[2000,4000],[4000,8000]]")


@dataclass
class RunConfig:
    job: str = "train"  # train | bench | quickstart | eval | lengths | redraw
    task: Any = None
    model: Any = None
    seed: int = 0
    sweep: str = "default"  # a name grouping runs in reports, chosen by the user (sweep=my_ablation)
    # The sweep folder's name of the one sweep invocation that launched the run (set by the sweeper); null for a run
    # outside any sweep. Reports tell two sweeps of one name apart by it.
    sweep_id: str | None = None
    force: bool = False  # rerun even when a complete record exists
    # true: check the config and count the parameters, train nothing; memory: that and the activation memory
    # estimated on fake tensors (about 2 s more: they import torch's compiler stack). Any: OmegaConf has no bool | str.
    dry_run: Any = False
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    quickstart: QuickstartConfig = field(default_factory=QuickstartConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    # Live curves: none by default; tensorboard, wandb or both ([tensorboard,wandb]). Any: a name or a list.
    logger: Any = None
    log: LogConfig = field(default_factory=LogConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        check_seed("seed", self.seed)
        logger_names(self.logger)
        if self.dry_run not in (False, True, "memory"):
            raise ConfigError(f"dry_run={self.dry_run!r} must be true, false or memory (true and the activation "
                              f"memory estimated)")
        # The sweep names the runs it groups (in records, reports and file names): a name, never a path.
        if not isinstance(self.sweep, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.=,+-]*", self.sweep):
            raise ConfigError(f"sweep={self.sweep!r} must be a plain name (letters, digits, _ . = , + -, no / and "
                              f"not starting with .), e.g. sweep=my_ablation")
        if self.sweep_id is not None and not (isinstance(self.sweep_id, str)
                                              and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.=,+-]*", self.sweep_id)):
            raise ConfigError(f"sweep_id={self.sweep_id!r} must be a plain name (a sweep folder's); the sweeper sets "
                              f"it, leave it out")


def check_seed(key: str, seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or abs(seed) > MAX_SEED:
        raise ConfigError(f"{key}={seed!r} must be an integer from -{MAX_SEED} to {MAX_SEED} (32 bits, either sign)")


def run_config(values: Mapping[str, Any]) -> RunConfig:
    """The composed config (as plain data) as a RunConfig, every section built and so checked by its __post_init__;
    ConfigError naming the first unknown key or bad value. `task` and `model` stay as given (their registries
    check them)."""
    values = {k: v for k, v in values.items() if k != "hydra"}
    check_keys(values, RunConfig, "")
    sections = {name: cls for name, cls in get_type_hints(RunConfig).items() if dataclasses.is_dataclass(cls)}
    built = {}
    for name, cls in sections.items():
        if name in values:
            check_keys(values[name], cls, f"{name}.")
            built[name] = cls(**values[name])
    return RunConfig(**{**values, **built})


# Keys that do not change what a run computes: they are left out of its identity.
NON_SEMANTIC_KEYS = (
    "job",
    "sweep",
    "sweep_id",
    "force",
    "dry_run",
    "paths",
    "quickstart",
    "bench",
    "logger",
    "log",
    "eval",
    "hydra",
    "train.progress",
    "train.num_workers",
    "train.device",
    "train.compile",
    "train.compile_mode",
)

ConfigStore.instance().store(name="run_schema", node=RunConfig)

