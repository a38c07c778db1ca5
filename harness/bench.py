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

How it is timed (`harness.timing.time_after_warmup`). Per point: one warm-up call under torch's FlopCounterMode (it
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

Budgets. `bench.max_call_s`: once a series (model, implementation, scope, pass, dtype) predicts a call longer
than this for the next length (from its last point and the local slope of time per sequence, at least linear),
that length and all longer ones of the series are skipped. `bench.max_total_s`: after this much wall time the
remaining points are skipped. Skipped points get no record; they are printed and listed in `BenchResult`.

Records. One per point in `<paths.root>/store` (kind "bench", task null, status complete | oom | failed, a
run id determined by the model, its config, scope, pass, dtype, length, batch and device name, so a rerun
overwrites the same record). An out-of-memory point is recorded as `oom` and the sweep goes on. `metrics.impl`
says whose code ran: "ours" (a registered model), or "published" (a published layer, timed the same way by
sweeps/studies/compare_published.py). The tables are rendered from the records by reports/bench.py
(`python -m reports`): time, tokens/s and memory per length, fractions of the ceilings, published against ours,
and fitted exponents (least-squares slopes of log time per sequence and log peak memory per sequence against
log L over the complete points, so 1 is linear and 2 quadratic in L).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import math
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils import flop_counter

from harness import env as env_capture
from harness.config import BenchConfig
from harness.device import resolve_device
from harness.errors import ConfigError, UserError, is_oom
from harness.registry import MODELS
from harness.results import SCHEMA, Store
from harness.task import TaskSpec
from harness.timing import PeakMemory, measure_ceilings, time_after_warmup

OURS, PUBLISHED = "ours", "published"  # metrics.impl: whose code a point ran


# ------------------------------------------------------------------------------------------------------------------
# What is measured


@dataclass(frozen=True)
class Point:
    model: str
    scope: str
    pass_: str
    dtype: str
    length: int
    batch_size: int
    impl: str = OURS

    @property
    def series(self) -> tuple[str, str, str, str, str]:
        return (self.model, self.impl, self.scope, self.pass_, self.dtype)

    @property
    def tokens(self) -> int:
        return self.length * self.batch_size

    def label(self) -> str:
        impl = "" if self.impl == OURS else f" ({self.impl})"
        return f"{self.model}{impl} {self.scope} {self.pass_} {self.dtype} L={self.length} B={self.batch_size}"


@dataclass(frozen=True)
class Subject:
    """One implementation of a model: `config` is recorded with its points (and is part of their run ids);
    `build(length, device)` makes it on the device as a module whose `.mixer` is the sequence layer, as our
    models' `blocks[0]` is."""

    model: str
    impl: str
    config: dict[str, Any]
    build: Callable[[int, torch.device], nn.Module]


def options(cfg: DictConfig) -> BenchConfig:
    """`cfg.bench` as the checked dataclass, with what it leaves null chosen for its device (and printed)."""
    opts = BenchConfig(**OmegaConf.to_container(cfg.bench, resolve=True))
    kind = resolve_device(opts.device, key="bench.device").type
    resolved = opts.resolved(kind)
    if opts.unset():
        print(f"seqbench: bench: on {kind}: " + ", ".join(f"{k}={getattr(resolved, k)}" for k in opts.unset())
              + " (the defaults for this device; set bench.<option> to choose)", flush=True)
    return resolved


def model_configs(opts: BenchConfig) -> dict[str, Any]:
    """name -> config dataclass (d_model, n_layers=1, overrides) for every chosen model that has a d_model."""
    names = opts.models or MODELS.names()
    unknown = sorted(set(opts.model_overrides or {}) - set(MODELS.names()))
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
        configs[name] = MODELS.config(name, **{**base, **opts.overrides(name)})
    return configs


def ours(opts: BenchConfig) -> list[Subject]:
    """Every chosen registered model, as `build_block` builds it."""
    def builder(name: str, cfg: Any) -> Callable[[int, torch.device], nn.Module]:
        return lambda length, device: build_block(name, cfg, length, opts.d_model, device)

    return [Subject(name, OURS, dataclasses.asdict(cfg), builder(name, cfg))
            for name, cfg in model_configs(opts).items()]


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


def device_label(device: torch.device, env: dict[str, Any]) -> str:
    """The GPU's name, or the CPU's model name (env's `cpu`, from /proc/cpuinfo: its `device`,
    `platform.processor()`, is often just the architecture); it is part of every point's run id."""
    if device.type == "cuda" or env.get("cpu") is None:
        return str(env.get("device"))
    return str(env["cpu"])


def point_run_id(point: Point, config: dict[str, Any], device_name: str) -> str:
    """`bench-<model>-<12 hex digits>` of everything that defines the point (and nothing else); `config` holds the
    record's config sections beside the benchmark's own: the model's, and any other a study adds."""
    key = {"model": point.model, "model_config": config.get("model"), "scope": point.scope, "pass": point.pass_,
           "dtype": point.dtype, "length": point.length, "batch_size": point.batch_size, "device": device_name}
    # Only beyond a layer of ours, so that such points keep the ids they had before studies existed.
    if point.impl != OURS:
        key["impl"] = point.impl
    if config.keys() - {"model"}:
        key["config"] = {k: v for k, v in config.items() if k != "model"}
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
    extra: dict[str, Any] = field(default_factory=dict)  # a study's own figures, added to the record's metrics

    @property
    def time_ms(self) -> float | None:
        return statistics.median(self.times_ms) if self.times_ms else None


def _autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager[Any]:
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_step(module: nn.Module, x: torch.Tensor, point: Point, upstream: torch.Tensor | None,
              seen: dict[str, Any]) -> Callable[[], None]:
    """One call of the point, returning nothing (so no output outlives the call).

    `seen` receives the output's byte size (first call) and the upstream gradient cast to the output's dtype.
    """
    device = x.device

    def forward() -> torch.Tensor:
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


def time_point(module: nn.Module, point: Point, opts: BenchConfig, device: torch.device,
               memory: PeakMemory) -> Outcome:
    """Time one point of a module already on the device; raises what the calls raise."""
    gen = torch.Generator(device=device).manual_seed(point.length)
    x = torch.randn(point.batch_size, point.length, opts.d_model, device=device, generator=gen)
    training = point.pass_ == "fwd_bwd"
    module.zero_grad(set_to_none=True)  # a failed point may have left gradients behind
    module.train(training)
    x.requires_grad_(training)
    upstream = torch.randn(x.shape, device=device, generator=gen) if training else None
    seen: dict[str, Any] = {}
    step = make_step(module, x, point, upstream, seen)

    def reset_grads() -> None:
        x.grad = None
        module.zero_grad(set_to_none=True)

    timing = time_after_warmup(step, device, opts.warmup, opts.repeats, memory, opts.point_budget_s,
                               first=lambda: seen.__setitem__("flops", count_flops(step)), between=reset_grads)
    reset_grads()
    return Outcome("complete", times_ms=timing.times_ms, peak_bytes=timing.peak_bytes, warmup=timing.warmup,
                   flops_assumed=seen["flops"], bytes_assumed=assumed_bytes(x, seen["out_bytes"], module, point.pass_))


def failure(exc: Exception, context: str = "") -> Outcome:
    """The outcome of a point that raised: `oom` when it ran out of memory, `failed` otherwise."""
    return Outcome("oom" if is_oom(exc) else "failed", error=context + "".join(traceback.format_exception(exc))[-4000:])


def attempt(measure: Callable[[], Outcome]) -> Outcome:
    """`measure()`, or the outcome of its failure (a UserError propagates). The caller must `release(device)`
    afterwards: the tensors of a failed call are freed only once the exception and its traceback's frames are
    gone, which is after this function returns."""
    try:
        return measure()
    except UserError:
        raise
    except Exception as exc:
        return failure(exc)


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

    def __init__(self, opts: BenchConfig, t_start: float):
        self.opts = opts
        self.t_start = t_start
        self.history: dict[tuple[str, ...], list[tuple[int, float]]] = {}
        self.capped: dict[tuple[str, ...], str] = {}

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
        "impl": point.impl, "scope": point.scope, "pass": point.pass_, "dtype": point.dtype, "length": point.length,
        "batch_size": point.batch_size, "time_ms": t, "time_ms_all": outcome.times_ms,
        "tokens_per_s": point.tokens / (t * 1e-3) if t else None, "peak_bytes": outcome.peak_bytes,
        "memory_kind": memory_kind, "bytes_assumed": outcome.bytes_assumed, "flops_assumed": outcome.flops_assumed,
        "frac_bandwidth": None, "frac_matmul": None, "ceilings": ceilings, "warmup": outcome.warmup,
        "repeats": len(outcome.times_ms), **outcome.extra,
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


def _summary(record: dict[str, Any]) -> str:
    m = record["metrics"]
    if record["status"] != "complete":
        return record["status"] + " (" + (record["error"] or "").strip().splitlines()[-1][:200] + ")"
    peak = "n/a" if m["peak_bytes"] is None else f"{m['peak_bytes'] / 2**20:.1f} MiB"
    fractions = "".join(f", {name} {m[key]:.2%}" for name, key in (("bw", "frac_bandwidth"), ("matmul", "frac_matmul"))
                        if m[key] is not None)
    return f"{m['time_ms']:.4g} ms, {m['tokens_per_s'] / 1e6:.4g} M tokens/s, peak {peak}{fractions}"


# ------------------------------------------------------------------------------------------------------------------
# A run


@dataclass
class BenchResult:
    records: list[dict[str, Any]]
    skipped: list[tuple[Point, str]]
    ceilings: dict[str, float]


class Session:
    """What the points of one run share: device, store, environment, ceilings (measured when it starts), the
    peak-memory probe and the budgets; and the records written and points skipped so far."""

    def __init__(self, opts: BenchConfig, root: Path, sweep: str, seed: int):
        self.opts, self.sweep, self.seed = opts, sweep, seed
        self.budget = Budget(opts, time.perf_counter())
        self.device = resolve_device(opts.device, key="bench.device")
        self.store = Store(root / "store")
        self.env = env_capture.capture(self.device)
        self.device_name = self.env["device"] = device_label(self.device, self.env)
        print(f"seqbench: bench on {self.device_name}: measuring ceilings", flush=True)
        self.ceilings = measure_ceilings(self.device)
        print("seqbench: bench: " + ", ".join(f"{k}={v:.4g}" for k, v in self.ceilings.items()), flush=True)
        self.memory = PeakMemory(self.device)
        self.records: list[dict[str, Any]] = []
        self.skipped: list[tuple[Point, str]] = []

    def admit(self, points: list[Point]) -> list[Point]:
        """The points within the budgets; the others are noted as skipped."""
        todo = []
        for point in points:
            reason = self.budget.skip_reason(point)
            if reason is None:
                todo.append(point)
            else:
                self.skipped.append((point, reason))
                print(f"seqbench: bench {point.label()}: skipped, {reason}", flush=True)
        return todo

    def measure(self, subject: Subject) -> None:
        """Every point of `subject` (lengths x scopes x passes x dtypes) within the budgets, one build per length."""
        o = self.opts
        for length in o.lengths:
            batch = o.batch_for(length)
            points = self.admit([Point(subject.model, scope, pass_, dtype, length, batch, subject.impl)
                                 for scope in o.scope for pass_ in o.passes for dtype in o.dtypes])
            torch.manual_seed(self.seed)
            self._measure_built(subject, length, points)
            release(self.device)  # the module is gone with _measure_built's frame

    def _measure_built(self, subject: Subject, length: int, points: list[Point]) -> None:
        if not points:
            return
        started, t0 = _now(), time.perf_counter()
        try:
            block = subject.build(length, self.device)
        except UserError:
            raise
        except Exception as exc:
            failed: Outcome | None = failure(exc, "building the model: ")
        else:
            failed = None
        if failed is not None:  # every point of the build gets its outcome
            release(self.device)
            for point in points:
                self.record(point, failed, {"model": subject.config}, None, started, time.perf_counter() - t0)
            return
        for point in points:
            module = block if point.scope == "block" else block.mixer
            params = sum(p.numel() for p in module.parameters())
            self.run_point(point, {"model": subject.config}, partial(time_point, module, point, self.opts, self.device,
                                                          self.memory), params)

    def run_point(self, point: Point, config: dict[str, Any], measure: Callable[[], Outcome],
                  params: int | None) -> dict[str, Any]:
        """Measure one point (a failure becomes its outcome) and write its record; `config` as for `record`."""
        started, t0 = _now(), time.perf_counter()
        outcome = attempt(measure)
        if outcome.status != "complete":
            release(self.device)
        return self.record(point, outcome, config, params, started, time.perf_counter() - t0)

    def record(self, point: Point, outcome: Outcome, config: dict[str, Any], params: int | None, started: str,
               wall_s: float) -> dict[str, Any]:
        """Write the point's record; `config`: its config sections beside job, sweep, seed and bench (`model`,
        and whatever else defines the point), which name its run id."""
        base = {"kind": "bench", "sweep": self.sweep, "task": None, "seed": self.seed, "env": self.env,
                "config": {"job": "bench", "sweep": self.sweep, "seed": self.seed, **config,
                           "bench": dataclasses.asdict(self.opts)}}
        record = make_record(point, outcome, base, point_run_id(point, config, self.device_name), params,
                             self.ceilings, self.memory.kind, started, wall_s)
        self.store.write(record)
        self.records.append(record)
        self.budget.add(point, outcome)
        print(f"seqbench: bench {point.label()}: {_summary(record)}", flush=True)
        return record

    def result(self) -> BenchResult:
        print(f"seqbench: bench: {len(self.records)} points measured, {len(self.skipped)} skipped", flush=True)
        return BenchResult(self.records, self.skipped, self.ceilings)


def run(cfg: DictConfig) -> BenchResult:
    """The benchmark of `cfg.bench` over our models; records in `<paths.root>/store` (reports/ renders them)."""
    opts = options(cfg)
    subjects = ours(opts)
    session = Session(opts, Path(cfg.paths.root), cfg.sweep, cfg.seed)
    for subject in subjects:
        session.measure(subject)
    return session.result()
