"""The scaling benchmark: `python run.py job=bench ...`, time and memory of sequence layers against length.

What is timed. For each model, the full model is built for a synthetic signal task of length L
(`TaskSpec(input="signal", d_input=d_model, seq_len=L, n_outputs=10)`, `n_layers=1`, plus
`bench.model_overrides[name]`) and `model.blocks[0]` is kept: its `.mixer` is the sequence layer alone
(scope `layer`), the block itself is the full residual block (scope `block`: norm, layer, channel mixer,
dropout, residual). Note that the Transformer's block 0 is its attention block; its MLP is block 1 and is not
timed. The input is `x = randn(B, L, d_model)` in fp32 on the device, called as `module(x, None)`.
- `fwd`: the module in eval mode under `torch.no_grad()` (inference).
- `fwd_bwd`: the module in train mode (dropout on, as in training), `x.requires_grad`, then
  `out.backward(g)` with a fixed random upstream gradient `g` of the output's shape and dtype (drawn once, so no
  loss kernels are timed). Parameter and input gradients are set to None between calls, untimed, as
  `zero_grad(set_to_none=True)` does in training: each call allocates them afresh.
- `fp32`: fp32 weights and activations, TF32 allowed in matmuls and cuDNN convolutions (as harness/train.py
  runs). `bf16`: the same fp32 module under `torch.autocast(device, bfloat16)` around the forward (TF32 still
  allowed for what autocast leaves in fp32).
- Batch: `bench.batch_size` if set, otherwise B = max(1, tokens_per_batch // L), so B x L is constant up to
  L = tokens_per_batch and B = 1 beyond.

How it is timed (see harness/timing.py). Per point: one warm-up call under torch's FlopCounterMode (it
counts the FLOPs, and takes module load, cuFFT plans and cuBLAS handles out of the numbers), further warm-up
calls up to `bench.warmup` (at least one call in all), then `bench.repeats` calls each timed on its own:
CUDA events around the call on the device (median of the per-call times; one synchronize after the last),
`time.perf_counter` on CPU. Counted: everything the call puts on the device between its two events, launch
gaps included. Not counted: building the model and the input, moving them to the device, and resetting
gradients between calls. With `bench.point_budget_s` the number of repeats shrinks (to 3 at least) so that
a slow point costs about that budget, and warm-up stops early after half of it. Inputs are random (never
zeros) and, at the default 2^18 tokens x 256 channels (256 MiB), far larger than the L2 cache.

Peak memory. `peak_bytes` is the peak above the level just before the timed calls, whose baseline already
holds the module, x and g. CUDA: `max_memory_allocated` after `reset_peak_memory_stats` (allocated tensors,
not the allocator's cache). CPU: the rise of the resident-set high-water mark (VmHWM), see
`harness.timing.PeakMemory`. `memory_kind` in each record names which.

Ceilings and fractions. The copy bandwidth and matmul rates are measured at the start of the run
(`harness.timing.measure_ceilings`) and stored in every record's `metrics.ceilings`. Each point states the
counts it assumes:
- `bytes_assumed`, the fewest bytes any implementation must move: fwd reads x and the parameters and writes
  the output; fwd_bwd also reads the upstream gradient, writes the input gradient and writes one gradient per
  parameter (2 (|x| + |out|) + 2 |params| bytes). Saved activations, intermediates and FFT buffers are not
  counted, so `frac_bandwidth` = bytes_assumed / time / copy bandwidth is a lower bound on the bandwidth used.
- `flops_assumed`: the matrix-product FLOPs of the call as executed, counted by
  `torch.utils.flop_counter.FlopCounterMode` from operand shapes: Linear layers (2 m n k per product),
  convolutions, bmm/einsum (complex ones counted as real), and fused attention (4 B H L^2 d forward; the
  backward as torch counts it). FFTs and elementwise work are not counted (they belong to the bandwidth
  side). `frac_matmul` = flops_assumed / time / matmul rate of the point's dtype (TF32 rate for fp32).

Budgets. `bench.max_call_s`: once a series (model, scope, pass, dtype) predicts a call longer than this for
the next length (from its last point and the local slope of time per sequence, at least linear), that length
and all longer ones of the series are skipped. `bench.max_total_s`: after this much wall time the remaining
points are skipped. Skipped points get no record; the printed table shows them as `skip`.

Records. One per point in `<paths.root>/store` (kind "bench", task null, status complete | oom | failed, a
run id determined by the model, its config, scope, pass, dtype, length, batch and device name, so a rerun
overwrites the same record). An out-of-memory point is recorded as `oom` and the sweep goes on. The run ends
with a Markdown report `<paths.root>/reports/bench/<sweep>-<device>.md` (time, tokens/s and memory per
length, fractions of the ceilings, and fitted exponents: least-squares slopes of log time per sequence and
log peak memory per sequence against log L over the complete points, so 1 is linear and 2 quadratic in L)
and prints the time table with the exponents.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import math
import re
import statistics
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils import flop_counter

from harness import env as env_capture
from harness.errors import ConfigError, UserError
from harness.registry import MODELS
from harness.results import SCHEMA, Store
from harness.timing import PeakMemory, fit_exponent, measure_ceilings, tf32, time_calls, wall_call_s
from harness.train import resolve_device as train_resolve_device
from harness.task import TaskSpec

SCOPES = ("layer", "block")
PASSES = ("fwd", "fwd_bwd")
DTYPES = ("fp32", "bf16")
MIN_REPEATS = 3  # with a point budget, never fewer timed calls than this (a median of fewer says little)

Fault = Callable[["Point"], None]  # test hook: called at the start of every call of a point; may raise


# ------------------------------------------------------------------------------------------------------------------
# Options and points


@dataclass(frozen=True)
class Point:
    model: str
    scope: str
    pass_: str
    dtype: str
    length: int
    batch_size: int

    @property
    def series(self) -> tuple[str, str, str, str]:
        return (self.model, self.scope, self.pass_, self.dtype)

    @property
    def tokens(self) -> int:
        return self.length * self.batch_size

    def label(self) -> str:
        return f"{self.model} {self.scope} {self.pass_} {self.dtype} L={self.length} B={self.batch_size}"


@dataclass
class Options:
    """`cfg.bench`, checked. Fields not (yet) in BenchConfig are read with their defaults here."""

    models: list[str]
    scopes: list[str]
    lengths: list[int]
    passes: list[str]
    dtypes: list[str]
    d_model: int
    batch_size: int | None
    tokens_per_batch: int
    warmup: int
    repeats: int
    device: str
    model_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_call_s: float | None = None
    point_budget_s: float | None = None
    max_total_s: float | None = None

    @classmethod
    def from_config(cls, bench: DictConfig | dict[str, Any]) -> Options:
        tree = OmegaConf.to_container(bench, resolve=True) if isinstance(bench, DictConfig) else dict(bench)
        assert isinstance(tree, dict)

        def choices(key: str, allowed: tuple[str, ...]) -> list[str]:
            values = list(tree.get(key) or [])
            bad = [v for v in values if v not in allowed]
            if bad or not values:
                raise ConfigError(f"bench.{key} must be a non-empty list of {', '.join(allowed)}, got {values}")
            return values

        lengths = sorted({int(n) for n in tree.get("lengths") or []})
        if not lengths or lengths[0] < 1:
            raise ConfigError(f"bench.lengths must be a non-empty list of positive integers, got {tree.get('lengths')}")
        overrides = tree.get("model_overrides") or {}
        if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
            raise ConfigError("bench.model_overrides must map a model name to a dict of its config fields, "
                              "e.g. '++bench.model_overrides={s4:{d_state:64}}'")
        opts = cls(models=list(tree.get("models") or []), scopes=choices("scope", SCOPES), lengths=lengths,
                   passes=choices("passes", PASSES), dtypes=choices("dtypes", DTYPES),
                   d_model=int(tree.get("d_model", 256)), batch_size=tree.get("batch_size"),
                   tokens_per_batch=int(tree.get("tokens_per_batch", 2**18)), warmup=int(tree.get("warmup", 3)),
                   repeats=int(tree.get("repeats", 10)), device=str(tree.get("device", "auto")),
                   model_overrides=overrides, max_call_s=tree.get("max_call_s"),
                   point_budget_s=tree.get("point_budget_s"), max_total_s=tree.get("max_total_s"))
        for name, value in (("d_model", opts.d_model), ("tokens_per_batch", opts.tokens_per_batch),
                            ("repeats", opts.repeats), ("batch_size", opts.batch_size or 1)):
            if value < 1:
                raise ConfigError(f"bench.{name} must be at least 1, got {value}")
        if opts.warmup < 0:
            raise ConfigError(f"bench.warmup must be >= 0, got {opts.warmup}")
        return opts

    def batch_for(self, length: int) -> int:
        return self.batch_size or max(1, self.tokens_per_batch // length)


def resolve_device(name: str) -> torch.device:
    return train_resolve_device(name, key="bench.device")


def model_configs(opts: Options) -> dict[str, Any]:
    """name -> config dataclass (d_model, n_layers=1, overrides) for every chosen model that has a d_model."""
    names = opts.models or MODELS.names()
    unknown = sorted(set(opts.model_overrides) - set(MODELS.names()))
    if unknown:
        raise ConfigError(f"bench.model_overrides names unregistered model(s) {unknown}; "
                          f"registered: {', '.join(MODELS.names())}")
    configs = {}
    for name in names:
        fields = {f.name for f in dataclasses.fields(MODELS.get(name).config_cls)}
        if "d_model" not in fields:
            print(f"seqbench: bench: skipping {name}: its config has no d_model, so it cannot be built at "
                  f"bench.d_model={opts.d_model}")
            continue
        base: dict[str, Any] = {"d_model": opts.d_model}
        if "n_layers" in fields:
            base["n_layers"] = 1
        configs[name] = MODELS.config(name, **{**base, **opts.model_overrides.get(name, {})})
    return configs


def device_label(device: torch.device, env: dict[str, Any]) -> str:
    """The GPU's name, or the CPU's model name from /proc/cpuinfo (env's `platform.processor()` is often just
    the architecture); it is part of every point's run id."""
    if device.type == "cuda":
        return str(env.get("device"))
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return str(env.get("device"))


def bench_spec(length: int, d_model: int) -> TaskSpec:
    """The synthetic signal task a benchmarked model is built for."""
    return TaskSpec(name="bench", input="signal", d_input=d_model, seq_len=length, n_outputs=10, metric="accuracy")


def build_block(name: str, model_cfg: Any, length: int, d_model: int, device: torch.device) -> nn.Module:
    """`blocks[0]` of the model built for length L, on the device (the rest of the model is dropped)."""
    model = MODELS.build(model_cfg, bench_spec(length, d_model))
    blocks = getattr(model, "blocks", None)
    if not blocks or not hasattr(blocks[0], "mixer"):
        raise TypeError(f"model {name!r} breaks the benchmark contract (models/backbone.py): its builder must "
                        f"return a Backbone whose blocks[0] is a ResidualBlock with the sequence layer in .mixer")
    return blocks[0].to(device)


def point_run_id(point: Point, model_config: dict[str, Any], device_name: str) -> str:
    """`bench-<model>-<12 hex digits>` of everything that defines the point (and nothing else)."""
    key = {"model": point.model, "model_config": model_config, "scope": point.scope, "pass": point.pass_,
           "dtype": point.dtype, "length": point.length, "batch_size": point.batch_size, "device": device_name}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"bench-{point.model}-{digest}"


# ------------------------------------------------------------------------------------------------------------------
# Measuring one point


@dataclass
class Outcome:
    status: str  # complete | oom | failed
    times_ms: list[float] = field(default_factory=list)
    peak_bytes: int | None = None
    bytes_assumed: int | None = None
    flops_assumed: int | None = None
    warmup: int = 0
    error: str | None = None

    @property
    def time_ms(self) -> float | None:
        return statistics.median(self.times_ms) if self.times_ms else None


def _autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager[Any]:
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_step(module: nn.Module, x: torch.Tensor, point: Point, upstream: torch.Tensor | None,
              seen: dict[str, Any], fault: Fault | None) -> Callable[[], None]:
    """One call of the point, returning nothing (so no output outlives the call).

    `seen` receives the output's byte size (first call) and the upstream gradient cast to the output's dtype.
    """
    device = x.device

    def forward() -> torch.Tensor:
        if fault is not None:
            fault(point)
        with _autocast(device, point.dtype):
            out = module(x, None)
        if out.shape != x.shape:
            raise RuntimeError(f"{point.model} {point.scope}: output shape {tuple(out.shape)} != input shape "
                               f"{tuple(x.shape)}; a sequence layer must map [B, L, D] to [B, L, D]")
        seen.setdefault("out_bytes", out.numel() * out.element_size())
        return out

    if point.pass_ == "fwd":
        def step() -> None:
            with torch.no_grad():
                forward()
        return step

    assert upstream is not None

    def step_bwd() -> None:
        out = forward()
        grad = seen.get("grad")
        if grad is None or grad.dtype != out.dtype:
            grad = seen["grad"] = upstream.to(out.dtype)
        out.backward(grad)
    return step_bwd


def _register_cpu_attention_flops() -> None:
    """Count CPU fused attention as torch already counts the CUDA kernels (same formulas), so CPU and GPU
    records state the same FLOPs."""
    aten = torch.ops.aten
    fwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if fwd is not None and fwd not in flop_counter.flop_registry:
        flop_counter.register_flop_formula(fwd)(
            lambda q, k, v, *args, out_shape=None, **kwargs: flop_counter.sdpa_flop_count(q, k, v))
    if bwd is not None and bwd not in flop_counter.flop_registry:
        flop_counter.register_flop_formula(bwd)(
            lambda g, q, k, v, *args, out_shape=None, **kwargs: flop_counter.sdpa_backward_flop_count(g, q, k, v))


def count_flops(step: Callable[[], None]) -> int:
    """Matrix-product FLOPs of one call (this call is also the first warm-up call)."""
    _register_cpu_attention_flops()
    with flop_counter.FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def assumed_bytes(x: torch.Tensor, out_bytes: int, module: nn.Module, pass_: str) -> int:
    """The fewest bytes the call must move (see the module docstring)."""
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    once = x.numel() * x.element_size() + out_bytes + params
    return once if pass_ == "fwd" else 2 * once


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    # CPU: "DefaultCPUAllocator: can't allocate memory"; cuFFT: "CUFFT_ALLOC_FAILED"; some paths raise plain
    # RuntimeErrors that say "out of memory".
    text = str(exc).lower()
    return any(s in text for s in ("out of memory", "can't allocate memory", "cufft_alloc_failed"))


def _n_repeats(opts: Options, call_s: float) -> int:
    if opts.point_budget_s is None or call_s <= 0:
        return opts.repeats
    return min(opts.repeats, max(MIN_REPEATS, int(opts.point_budget_s / call_s)))


def _measure(module: nn.Module, point: Point, opts: Options, device: torch.device, memory: PeakMemory,
             fault: Fault | None) -> Outcome:
    gen = torch.Generator(device=device).manual_seed(point.length)
    x = torch.randn(point.batch_size, point.length, opts.d_model, device=device, generator=gen)
    training = point.pass_ == "fwd_bwd"
    module.zero_grad(set_to_none=True)  # a failed point may have left gradients behind
    module.train(training)
    x.requires_grad_(training)
    upstream = torch.randn(x.shape, device=device, generator=gen) if training else None
    seen: dict[str, Any] = {}
    step = make_step(module, x, point, upstream, seen, fault)

    def reset_grads() -> None:
        x.grad = None
        module.zero_grad(set_to_none=True)

    with tf32(device):
        first_s = wall_call_s(lambda: seen.__setitem__("flops", count_flops(step)), device)
        reset_grads()
        call_s, warm_calls, spent = first_s, 1, 0.0
        while warm_calls < max(1, opts.warmup):
            call_s = wall_call_s(step, device)
            reset_grads()
            warm_calls += 1
            spent += call_s
            if opts.point_budget_s is not None and spent > opts.point_budget_s / 2:
                break
        memory.start()
        times = time_calls(step, device, _n_repeats(opts, call_s), between=reset_grads)
        peak = memory.stop()
    reset_grads()
    return Outcome("complete", times_ms=times, peak_bytes=peak, warmup=warm_calls, flops_assumed=seen["flops"],
                   bytes_assumed=assumed_bytes(x, seen["out_bytes"], module, point.pass_))


def measure_point(module: nn.Module, point: Point, opts: Options, device: torch.device, memory: PeakMemory,
                  fault: Fault | None = None) -> Outcome:
    """Time one point; an out-of-memory error or any other failure becomes the outcome instead of raising.

    The caller must call `release(device)` afterwards: tensors of a failed call are only freed once the
    exception (and its traceback's frames) is gone, which is after this function returns.
    """
    try:
        return _measure(module, point, opts, device, memory, fault)
    except UserError:
        raise
    except Exception as exc:
        status = "oom" if _is_oom(exc) else "failed"
        return Outcome(status, error="".join(traceback.format_exception(exc))[-4000:])


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------------------------
# Budgets


def predicted_call_s(history: list[tuple[int, float]], length: int, batch_size: int) -> float | None:
    """A call's time at `length` from a series' complete points [(length, ms per sequence)], assuming time per
    sequence grows like the local slope of the last two points, and at least linearly."""
    if not history:
        return None
    last_len, last_ms = history[-1]
    slope = 1.0
    if len(history) >= 2:
        prev_len, prev_ms = history[-2]
        if prev_ms > 0 and last_ms > 0 and last_len != prev_len:
            slope = max(1.0, math.log(last_ms / prev_ms) / math.log(last_len / prev_len))
    return last_ms * (length / last_len) ** slope * batch_size / 1e3


class Budget:
    """Which points to skip: series whose next call is predicted over max_call_s, everything after max_total_s."""

    def __init__(self, opts: Options, t_start: float):
        self.opts = opts
        self.t_start = t_start
        self.history: dict[tuple[str, str, str, str], list[tuple[int, float]]] = {}
        self.capped: dict[tuple[str, str, str, str], str] = {}

    def skip_reason(self, point: Point) -> str | None:
        if point.series in self.capped:
            return self.capped[point.series]
        total = self.opts.max_total_s
        if total is not None and time.perf_counter() - self.t_start > total:
            return f"bench.max_total_s={total} reached"
        guess = predicted_call_s(self.history.get(point.series, []), point.length, point.batch_size)
        if self.opts.max_call_s is not None and guess is not None and guess > self.opts.max_call_s:
            self.capped[point.series] = (f"a call predicted at {guess:.3g} s > bench.max_call_s="
                                         f"{self.opts.max_call_s} from L={point.length} on")
            return self.capped[point.series]
        return None

    def add(self, point: Point, outcome: Outcome) -> None:
        if outcome.status == "complete" and outcome.time_ms is not None:
            self.history.setdefault(point.series, []).append((point.length, outcome.time_ms / point.batch_size))


# ------------------------------------------------------------------------------------------------------------------
# Records


def make_record(point: Point, outcome: Outcome, base: dict[str, Any], run_id: str, params: int | None,
                ceilings: dict[str, float], memory_kind: str | None, started: str, wall_s: float) -> dict[str, Any]:
    t = outcome.time_ms
    metrics: dict[str, Any] = {
        "scope": point.scope, "pass": point.pass_, "dtype": point.dtype, "length": point.length,
        "batch_size": point.batch_size, "time_ms": t, "time_ms_all": outcome.times_ms,
        "tokens_per_s": point.tokens / (t * 1e-3) if t else None, "peak_bytes": outcome.peak_bytes,
        "memory_kind": memory_kind, "bytes_assumed": outcome.bytes_assumed, "flops_assumed": outcome.flops_assumed,
        "frac_bandwidth": None, "frac_matmul": None, "ceilings": ceilings, "warmup": outcome.warmup,
        "repeats": len(outcome.times_ms),
    }
    if t and outcome.bytes_assumed is not None:
        metrics["frac_bandwidth"] = outcome.bytes_assumed / (t * 1e-3) / (ceilings["copy_gbps"] * 1e9)
    if t and outcome.flops_assumed is not None:
        rate = ceilings["matmul_tflops_bf16" if point.dtype == "bf16" else "matmul_tflops_fp32"]
        metrics["frac_matmul"] = outcome.flops_assumed / (t * 1e-3) / (rate * 1e12)
    return {"schema": SCHEMA, **base, "run_id": run_id, "model": point.model, "status": outcome.status,
            "params": params, "metrics": metrics, "error": outcome.error,
            "timing": {"started": started, "finished": _now(), "wall_s": wall_s}}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------------------------------
# The sweep


@dataclass
class BenchResult:
    records: list[dict[str, Any]]
    skipped: list[tuple[Point, str]]
    ceilings: dict[str, float]
    report: Path | None = None
    table: str = ""


def plan(opts: Options, names: list[str]) -> Iterator[tuple[str, list[Point]]]:
    """(model, the points of one model and length): one model build serves all of them."""
    for name in names:
        for length in opts.lengths:
            batch = opts.batch_for(length)
            yield name, [Point(name, scope, pass_, dtype, length, batch)
                         for scope in opts.scopes for pass_ in opts.passes for dtype in opts.dtypes]


def measure_group(model_cfg: Any, points: list[Point], opts: Options, device: torch.device, memory: PeakMemory,
                  fault: Fault | None) -> Iterator[tuple[Point, Outcome, int | None, str, float]]:
    """Build the model once for the points' (model, length) and measure each point:
    (point, outcome, parameters of the timed module, start time, wall seconds). A build that fails gives
    every point its outcome. The module lives in this generator's frame only, so it is freed when done."""
    if not points:
        return
    name, length = points[0].model, points[0].length
    started, t0 = _now(), time.perf_counter()
    try:
        block = build_block(name, model_cfg, length, opts.d_model, device)
    except UserError:
        raise
    except Exception as exc:
        failure = Outcome("oom" if _is_oom(exc) else "failed",
                          error="building the model: " + "".join(traceback.format_exception(exc))[-4000:])
    else:
        failure = None
    if failure is not None:
        release(device)
        for point in points:
            yield point, failure, None, started, time.perf_counter() - t0
        return
    for point in points:
        module = block if point.scope == "block" else block.mixer
        params = sum(p.numel() for p in module.parameters())
        started, t0 = _now(), time.perf_counter()
        outcome = measure_point(module, point, opts, device, memory, fault)
        if outcome.status != "complete":
            release(device)
        yield point, outcome, params, started, time.perf_counter() - t0


def run(cfg: DictConfig, fault: Fault | None = None) -> BenchResult:
    """The whole benchmark of `cfg.bench`; records in `<paths.root>/store`, report in `<paths.root>/reports/bench`."""
    opts = Options.from_config(cfg.bench)
    device = resolve_device(opts.device)
    configs = model_configs(opts)
    store = Store(Path(cfg.paths.root) / "store")
    env = env_capture.capture(device)
    device_name = env["device"] = device_label(device, env)
    t_start = time.perf_counter()
    print(f"seqbench: bench on {device_name}: measuring ceilings", flush=True)
    ceilings = measure_ceilings(device)
    print("seqbench: bench: " + ", ".join(f"{k}={v:.4g}" for k, v in ceilings.items()), flush=True)
    memory = PeakMemory(device)
    bench_tree = OmegaConf.to_container(cfg.bench, resolve=True) if isinstance(cfg.bench, DictConfig) else cfg.bench
    records: list[dict[str, Any]] = []
    skipped: list[tuple[Point, str]] = []
    budget = Budget(opts, t_start)

    for name, points in plan(opts, list(configs)):
        model_cfg = dataclasses.asdict(configs[name])
        base = {"kind": "bench", "sweep": cfg.sweep, "task": None, "seed": cfg.seed, "env": env,
                "config": {"job": "bench", "sweep": cfg.sweep, "seed": cfg.seed, "model": model_cfg,
                           "bench": bench_tree}}
        todo = []
        for point in points:
            reason = budget.skip_reason(point)
            if reason is None:
                todo.append(point)
            else:
                skipped.append((point, reason))
        torch.manual_seed(cfg.seed)
        for point, outcome, params, started, wall_s in measure_group(configs[name], todo, opts, device, memory, fault):
            record = make_record(point, outcome, base, point_run_id(point, model_cfg, device_name), params,
                                 ceilings, memory.kind, started, wall_s)
            store.write(record)
            records.append(record)
            budget.add(point, outcome)
            print(f"seqbench: bench {point.label()}: {_summary(record)}", flush=True)
        release(device)  # the group's module is gone with measure_group's frame

    result = BenchResult(records, skipped, ceilings)
    result.table = time_table(records, skipped, opts.lengths)
    result.report = write_report(Path(cfg.paths.root) / "reports" / "bench", cfg.sweep, result, opts, env)
    print(f"\nseqbench: bench: {len(records)} points measured, {len(skipped)} skipped; "
          f"report {result.report}\n")
    print(ceilings_line(ceilings))
    print(result.table, flush=True)
    return result


def _summary(record: dict[str, Any]) -> str:
    m = record["metrics"]
    if record["status"] != "complete":
        return record["status"] + " (" + (record["error"] or "").strip().splitlines()[-1][:200] + ")"
    peak = "n/a" if m["peak_bytes"] is None else f"{m['peak_bytes'] / 2**20:.1f} MiB"
    return (f"{m['time_ms']:.4g} ms, {m['tokens_per_s'] / 1e6:.4g} M tokens/s, peak {peak}, "
            f"bw {m['frac_bandwidth']:.2%}, matmul {m['frac_matmul']:.2%}")


# ------------------------------------------------------------------------------------------------------------------
# Tables and the report


Series = tuple[str, str, str, str]


def _by_series(records: list[dict[str, Any]]) -> dict[Series, dict[int, dict[str, Any]]]:
    out: dict[Series, dict[int, dict[str, Any]]] = {}
    for r in records:
        m = r["metrics"]
        out.setdefault((r["model"], m["scope"], m["pass"], m["dtype"]), {})[m["length"]] = r
    return out


def exponents(records: list[dict[str, Any]]) -> dict[Series, tuple[float | None, float | None, int]]:
    """Series -> (time exponent, memory exponent, number of complete points), per sequence (see docstring)."""
    out = {}
    for series, points in _by_series(records).items():
        done = [r["metrics"] for r in points.values() if r["status"] == "complete"]
        lengths = [m["length"] for m in done]
        time_p = fit_exponent(lengths, [m["time_ms"] / m["batch_size"] for m in done])
        mem_p = fit_exponent(lengths, [None if m["peak_bytes"] is None else m["peak_bytes"] / m["batch_size"]
                                       for m in done])
        out[series] = (time_p, mem_p, len(done))
    return out


def _length_label(n: int) -> str:
    k = int(math.log2(n)) if n > 0 else -1
    return f"2^{k}" if 2**k == n else str(n)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def wide_table(records: list[dict[str, Any]], skipped: list[tuple[Point, str]], lengths: list[int],
               cell: Callable[[dict[str, Any]], str], with_exponents: bool = True) -> str:
    """Markdown: a row per series, a column per length (value, oom, fail or skip), plus fitted exponents."""
    rows = _by_series(records)
    skips: dict[Series, set[int]] = {}
    for point, _ in skipped:
        skips.setdefault(point.series, set()).add(point.length)
        rows.setdefault(point.series, {})
    fits = exponents(records)
    head = ["model", "scope", "pass", "dtype", *(_length_label(n) for n in lengths)]
    if with_exponents:
        head += ["p_time", "p_mem"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for series in sorted(rows):
        cells = []
        for n in lengths:
            rec = rows[series].get(n)
            if rec is None:
                cells.append("skip" if n in skips.get(series, set()) else "")
            elif rec["status"] == "complete":
                cells.append(cell(rec["metrics"]))
            else:
                cells.append("oom" if rec["status"] == "oom" else "fail")
        if with_exponents:
            time_p, mem_p, _ = fits.get(series, (None, None, 0))
            cells += [_fmt(time_p, 2), _fmt(mem_p, 2)]
        lines.append("| " + " | ".join([*series, *cells]) + " |")
    return "\n".join(lines)


def time_table(records: list[dict[str, Any]], skipped: list[tuple[Point, str]], lengths: list[int]) -> str:
    return wide_table(records, skipped, lengths, lambda m: _fmt(m["time_ms"]))


def ceilings_line(ceilings: dict[str, float]) -> str:
    return (f"ceilings: copy {ceilings['copy_gbps']:.4g} GB/s (read + write), matmul fp32/TF32 "
            f"{ceilings['matmul_tflops_fp32']:.4g} TFLOP/s, bf16 {ceilings['matmul_tflops_bf16']:.4g} TFLOP/s")


def long_table(records: list[dict[str, Any]]) -> str:
    head = ["model", "scope", "pass", "dtype", "L", "B", "status", "time ms", "Mtok/s", "peak MiB", "bytes",
            "FLOPs", "frac bw", "frac mm"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = {name: i for i, name in enumerate(SCOPES + PASSES + DTYPES)}
    for r in sorted(records, key=lambda r: (r["model"], r["metrics"]["length"], order[r["metrics"]["scope"]],
                                            order[r["metrics"]["pass"]], order[r["metrics"]["dtype"]])):
        m = r["metrics"]
        peak = None if m["peak_bytes"] is None else m["peak_bytes"] / 2**20
        tok = None if m["tokens_per_s"] is None else m["tokens_per_s"] / 1e6
        cells = [r["model"], m["scope"], m["pass"], m["dtype"], str(m["length"]), str(m["batch_size"]), r["status"],
                 _fmt(m["time_ms"], 4), _fmt(tok), _fmt(peak), _fmt(m["bytes_assumed"]), _fmt(m["flops_assumed"]),
                 _fmt(m["frac_bandwidth"], 2), _fmt(m["frac_matmul"], 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(out_dir: Path, sweep: str, result: BenchResult, opts: Options, env: dict[str, Any]) -> Path:
    device = str(env.get("device"))
    slug = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-") or "device"
    recs, skipped = result.records, result.skipped
    batch = (f"fixed batch {opts.batch_size}" if opts.batch_size
             else f"batch x length = {opts.tokens_per_batch} tokens (batch 1 beyond)")
    kind = recs[0]["metrics"]["memory_kind"] if recs else None
    text = "\n\n".join([
        f"# Scaling benchmark: {device}",
        f"sweep `{sweep}`, {_now()}, torch {env.get('torch')}, CUDA {env.get('cuda')}, git "
        f"{env.get('git_commit')}{' (dirty)' if env.get('git_dirty') else ''}, host {env.get('host')}.\n"
        f"d_model {opts.d_model}, {batch}, warm-up {opts.warmup}, repeats {opts.repeats} (point budget "
        f"{opts.point_budget_s} s, max call {opts.max_call_s} s, max total {opts.max_total_s} s); "
        f"model overrides {opts.model_overrides or 'none'}. Method and counts: the docstring of harness/bench.py.",
        ceilings_line(result.ceilings),
        "## Time per call (ms, median)\n\np_time, p_mem: fitted exponents of time and peak memory per sequence "
        "against L (1 linear, 2 quadratic); skip: over the time budget, no record.\n\n"
        + time_table(recs, skipped, opts.lengths),
        "## Throughput (M tokens/s)\n\n" + wide_table(recs, skipped, opts.lengths,
                                                      lambda m: _fmt(m["tokens_per_s"] / 1e6), False),
        f"## Peak memory above baseline (MiB, {kind})\n\n" + wide_table(
            recs, skipped, opts.lengths,
            lambda m: "n/a" if m["peak_bytes"] is None else _fmt(m["peak_bytes"] / 2**20), False),
        "## Fraction of the copy bandwidth (bytes_assumed / time)\n\n" + wide_table(
            recs, skipped, opts.lengths, lambda m: _fmt(m["frac_bandwidth"], 2), False),
        "## Fraction of the matmul rate (flops_assumed / time)\n\n" + wide_table(
            recs, skipped, opts.lengths, lambda m: _fmt(m["frac_matmul"], 2), False),
        "## All points\n\n" + long_table(recs),
        "## Skipped\n\n" + ("\n".join(f"- {p.label()}: {why}" for p, why in skipped) or "none"),
    ]) + "\n"
    path = out_dir / f"{sweep}-{slug}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def rebuild_reports(root: Path, sweep: str) -> list[Path]:
    """Write the Markdown report of a sweep again from its records in `<root>/store` (one per device), e.g.
    after merging the stores of a study run in parts. Skipped points have no record: their cells stay empty.

        python -m harness.bench <paths.root> <sweep>
    """
    by_device: dict[str, list[dict[str, Any]]] = {}
    for rec in Store(root / "store").records():
        if rec.get("kind") == "bench" and rec.get("sweep") == sweep:
            by_device.setdefault(str(rec["env"].get("device")), []).append(rec)
    paths = []
    for recs in by_device.values():
        opts = Options.from_config(recs[0]["config"]["bench"])
        opts.lengths = sorted({*opts.lengths, *(r["metrics"]["length"] for r in recs)})
        result = BenchResult(recs, [], recs[0]["metrics"]["ceilings"])
        paths.append(write_report(root / "reports" / "bench", sweep, result, opts, recs[0]["env"]))
    return paths


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: python -m harness.bench <paths.root> <sweep>")
    for written in rebuild_reports(Path(sys.argv[1]), sys.argv[2]):
        print(f"seqbench: bench report written to {written}")
