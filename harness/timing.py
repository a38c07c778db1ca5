"""Timing, memory and ceiling primitives of the benchmarks (`harness.bench` describes the method).

- `time_after_warmup`: the one timing loop. Warm-up calls timed on the host clock (`wall_call_s`, synchronized),
  then `time_calls` of the repeats with the peak memory over them; `Timing` holds the per-call times and their
  median. With a budget, warm-up stops early and the repeats shrink (to `MIN_REPEATS` at least).
- `time_calls`: per-call times in ms. On CUDA a pair of events is recorded around each call on the current
  stream and read after one synchronize at the end, so the figure is device time between the events (launch
  gaps inside a call count, host work between calls does not). On CPU each call is timed with
  `time.perf_counter`.
- `PeakMemory`: peak bytes above a baseline taken at `start()`. CUDA: `torch.cuda.max_memory_allocated` after
  `torch.cuda.reset_peak_memory_stats`, minus `memory_allocated` at start (tensors held by the caching
  allocator but not in use are not counted). CPU: the rise of the process's resident-set high-water mark
  (`VmHWM` in /proc/self/status) over its resident size at start, after `malloc_trim` hands freed heap back to
  the OS and writing "5" to /proc/self/clear_refs resets the high-water mark (Linux >= 4.0). This sees every
  allocation that becomes resident (torch's CPU allocator, NumPy, Python objects), which tracemalloc does not.
- `measure_ceilings`: the machine's device-to-device copy bandwidth (bytes read + bytes written over time) and
  dense matmul rate (2 n^3 over time, fp32 with TF32 allowed as the fp32 points run, and bf16), median of
  repeats on random data.
- `fit_exponent`: least-squares slope of log(value) against log(length).
- `dispatched_ops`: the operators a step dispatches, counted on the CPU (a proxy for GPU kernel launches).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

MIN_REPEATS = 3  # with a budget, never fewer timed calls than this (a median of fewer says little)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(step: Callable[[], None], device: torch.device, n: int,
               between: Callable[[], None] | None = None) -> list[float]:
    """Run `step` n times and return each call's time in ms; `between` runs before each call, untimed."""
    if device.type == "cuda":
        pairs = []
        for _ in range(n):
            if between is not None:
                between()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            pairs.append((start, end))
        torch.cuda.synchronize(device)
        return [start.elapsed_time(end) for start, end in pairs]
    times = []
    for _ in range(n):
        if between is not None:
            between()
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def wall_call_s(step: Callable[[], None], device: torch.device) -> float:
    """One call timed on the host clock, synchronized before and after (for warm-up and budgeting)."""
    synchronize(device)
    t0 = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - t0


def host_call_ms(step: Callable[[], None], device: torch.device, n: int) -> list[float]:
    """n calls timed on the host clock from the call to its return, synchronized before and after each but not
    in between: on CUDA the time to queue a call's kernels. Near the call's whole time (time_calls), the call is
    bound by Python and kernel launches and a faster host makes it faster; far under it, by the GPU."""
    times = []
    for _ in range(n):
        synchronize(device)
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    synchronize(device)
    return times


@contextlib.contextmanager
def tf32(device: torch.device, allowed: bool = True) -> Iterator[None]:
    """Allow (or forbid) TF32 in fp32 matmuls and convolutions on CUDA, restored after.

    Uses the same (legacy) flags as harness.device.set_precision: torch refuses a mix of the legacy and the new
    `fp32_precision` API in one process.
    """
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = allowed
    torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@dataclass
class Timing:
    times_ms: list[float]  # one per timed call
    peak_bytes: int | None  # above the level before the timed calls; None without a PeakMemory or a way to measure
    warmup: int  # calls before the timed ones

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)


def time_after_warmup(step: Callable[[], None], device: torch.device, warmup: int, repeats: int,
                      memory: PeakMemory | None = None, budget_s: float | None = None,
                      first: Callable[[], None] | None = None, between: Callable[[], None] | None = None,
                      allow_tf32: bool = True) -> Timing:
    """Warm up with max(1, warmup) calls, then time `repeats` calls, TF32 allowed throughout unless `allow_tf32` is
    false (a training step at train.precision=fp32).

    `first` stands in for `step` in the first warm-up call (e.g. to count its FLOPs); `between` runs after every
    warm-up call and before every timed call, untimed. With `budget_s`, warm-up stops once it has spent half of
    it, and the repeats shrink (to MIN_REPEATS at least) so that the timed calls cost about `budget_s`.
    """
    between = between or (lambda: None)
    with tf32(device, allow_tf32):
        call_s = wall_call_s(first or step, device)
        between()
        calls, spent = 1, 0.0
        while calls < max(1, warmup) and (budget_s is None or spent <= budget_s / 2):
            call_s = wall_call_s(step, device)
            between()
            calls += 1
            spent += call_s
        if budget_s is not None and call_s > 0:
            repeats = min(repeats, max(MIN_REPEATS, int(budget_s / call_s)))
        if memory is not None:
            memory.start()
        times = time_calls(step, device, repeats, between=between)
        peak = memory.stop() if memory is not None else None
    return Timing(times, peak, calls)


# ------------------------------------------------------------------------------------------------------------------
# Peak memory


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # the kernel reports kB
    raise OSError(f"/proc/self/status has no {field}")


def _malloc_trim() -> None:
    name = ctypes.util.find_library("c")
    if name is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(name).malloc_trim(0)


def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _status_bytes("VmHWM")
    except OSError:
        return False
    return True


class PeakMemory:
    """Peak bytes above the level at `start()`; `kind` names what is measured (None where nothing can be)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.baseline = 0
        if device.type == "cuda":
            self.kind: str | None = "cuda_max_allocated"
        else:
            self.kind = "cpu_rss_hwm" if _reset_rss_peak() else None

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.kind is not None:
            _malloc_trim()
            _reset_rss_peak()
            self.baseline = _status_bytes("VmRSS")

    def stop(self) -> int | None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self.baseline
        if self.kind is None:
            return None
        return max(0, _status_bytes("VmHWM") - self.baseline)


# ------------------------------------------------------------------------------------------------------------------
# Ceilings


@dataclass(frozen=True)
class CeilingSizes:
    copy_bytes: int
    matmul_n: int
    warmup: int
    repeats: int


# Large enough to fill an H100/H200 (a 1 GiB copy is far past the 50 MB L2); small on CPU so CI stays fast.
CEILING_SIZES = {
    "cuda": CeilingSizes(copy_bytes=2**30, matmul_n=8192, warmup=5, repeats=20),
    "cpu": CeilingSizes(copy_bytes=2**25, matmul_n=384, warmup=1, repeats=5),
}


def copy_gbps(device: torch.device, nbytes: int, warmup: int, repeats: int) -> float:
    """Device-to-device copy bandwidth in GB/s, counting the bytes read plus the bytes written."""
    src = torch.randn(nbytes // 4, device=device)
    dst = torch.empty_like(src)

    def step() -> None:
        dst.copy_(src)

    return 2 * nbytes / (time_after_warmup(step, device, warmup, repeats).median_ms * 1e-3) / 1e9


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, warmup: int, repeats: int) -> float:
    """Dense n x n matmul rate in TFLOP/s (2 n^3 per product), TF32 allowed for fp32 on CUDA."""
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=gen).to(dtype)
    b = torch.randn(n, n, device=device, generator=gen).to(dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)

    def step() -> None:
        torch.matmul(a, b, out=out)

    return 2 * n**3 / (time_after_warmup(step, device, warmup, repeats).median_ms * 1e-3) / 1e12


def measure_ceilings(device: torch.device, sizes: CeilingSizes | None = None) -> dict[str, float]:
    """{copy_gbps, matmul_tflops_fp32 (TF32 on CUDA), matmul_tflops_bf16} of this device, measured now."""
    s = sizes or CEILING_SIZES["cuda" if device.type == "cuda" else "cpu"]
    result = {
        "copy_gbps": copy_gbps(device, s.copy_bytes, s.warmup, s.repeats),
        "matmul_tflops_fp32": matmul_tflops(device, torch.float32, s.matmul_n, s.warmup, s.repeats),
        "matmul_tflops_bf16": matmul_tflops(device, torch.bfloat16, s.matmul_n, s.warmup, s.repeats),
    }
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


# ------------------------------------------------------------------------------------------------------------------
# Scaling exponent


def fit_exponent(lengths: Sequence[float], values: Sequence[float | None]) -> float | None:
    """Slope p of log(value) = p log(length) + c by least squares over the points with a positive value.

    None with fewer than two distinct lengths (a slope needs two).
    """
    pts = [(math.log(n), math.log(v)) for n, v in zip(lengths, values, strict=True)
           if v is not None and not math.isnan(v) and v > 0 and n > 0]
    if len({x for x, _ in pts}) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    sxy = sum((x - mx) * (y - my) for x, y in pts)
    return sxy / sxx


# Operators that allocate without computing, and views (that alias an input without writing it): on a GPU neither
# launches a kernel, so `dispatched_ops` leaves them out. `_unsafe_view` is a view whose schema says nothing.
_NOT_WORK = frozenset({"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "resize_",
                       "_unsafe_view"})


def _is_view(name: str) -> bool:
    packet = getattr(torch.ops.aten, name, None)
    if packet is None:
        return False
    overloads = packet.overloads()
    op = getattr(packet, "default" if "default" in overloads else overloads[0])
    return any(ret.alias_info is not None and not ret.alias_info.is_write for ret in op._schema.returns)


def dispatched_ops(step: Callable[[], None]) -> Counter[str]:
    """The operators one call of `step` dispatches, by name: the leaf `aten::` events of torch.profiler on the CPU
    (an operator that calls none other), views and bare allocations left out.

    A proxy for a GPU step's kernel launches that needs no GPU: a step launch-bound on the GPU (a Python loop of
    small operators) shows as thousands here, and a change that batches them shows without a device.
    A multi-tensor operator (`_foreach_*`, `_fused_*`: AdamW's foreach and fused implementations) counts once, as
    on CUDA, where it is one launch per list of up to ~100 tensors; on the CPU it loops over its tensors, each a
    child operator, which are not counted."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], acc_events=True) as prof:
        step()
    counts: Counter[str] = Counter()
    for event in prof.events():
        if not event.name.startswith("aten::") or _inside_multi_tensor(event.cpu_parent):
            continue
        name = event.name.removeprefix("aten::")
        leaf = not any(c.name.startswith("aten::") for c in event.cpu_children)
        if (leaf or name.startswith(_MULTI_TENSOR)) and name not in _NOT_WORK and not _is_view(name):
            counts[name] += 1
    return counts


_MULTI_TENSOR = ("_foreach_", "_fused_")


def _inside_multi_tensor(event: Any) -> bool:
    while event is not None:
        if event.name.removeprefix("aten::").startswith(_MULTI_TENSOR):
            return True
        event = event.cpu_parent
    return False
