"""fft_conv forward + backward at the ListOps presets' sizes, examples transformed one by one and in pairs
(CUDA events, medians of 50 after 10 warm-up calls); then both paths once under torch's sync debug mode.
Run from a checkout of the code to time (its models/ on PYTHONPATH) on a CUDA machine."""

import statistics
from collections.abc import Callable

import torch

from models.longconv import circular_kernel, fft_conv, next_fast_len

torch.backends.cuda.matmul.allow_tf32 = True
dev = "cuda"
B, L, H = 50, 2048, 128


def timed(fn: Callable[[], object], reps: int = 50, warm: int = 10) -> float:
    for _ in range(warm):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


x = torch.randn(B, L, H, device=dev, requires_grad=True)
n = next_fast_len(2 * L - 1)
kc = (torch.randn(H, L, device=dev) / n).requires_grad_()
k2 = torch.randn(2, H, L, device=dev, requires_grad=True)
D = torch.randn(1, H, device=dev, requires_grad=True)
mask = torch.arange(L, device=dev)[None] < torch.randint(L // 2, L + 1, (B, 1), device=dev)
g = torch.randn(B, L, H, device=dev)
cases = {
    "multires (causal, scaled, id)": lambda p: fft_conv(x, kc, n=n, scaled=True, paired=p),
    "s4d (bidirectional, mask, gelu)": lambda p: fft_conv(x, circular_kernel(k2, D, True), mask, "gelu", paired=p),
}
for name, f in cases.items():
    ref, got = f(False).detach(), f(True).detach()
    err = float((got - ref).abs().max() / ref.abs().max())
    for p in (False, True):
        fwd = timed(lambda: f(p))  # noqa: B023  (called inside the iteration)
        both = timed(lambda: torch.autograd.backward(f(p), g))  # noqa: B023
        print(f"{name}: paired={p} forward {fwd:.3f} ms, forward+backward {both:.3f} ms")
    print(f"{name}: max |paired - unpaired| / max |y| = {err:.1e}")
torch.cuda.set_sync_debug_mode("error")  # a host-device synchronisation inside the op would raise here
for f in cases.values():
    torch.autograd.backward(f(True), g)
    torch.autograd.backward(f(False), g)
torch.cuda.set_sync_debug_mode(0)
print("no synchronisation in either path")
