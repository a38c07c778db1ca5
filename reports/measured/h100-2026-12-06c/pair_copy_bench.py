"""fft_conv forward + backward at the ListOps presets' sizes, paired, three ways: torch alone; the Triton copies in
and out of the FFT buffers (models/fft_kernels.py); those and the backward's fused products. Times (CUDA events,
medians of 50 after 10 warm-up calls) and the differences of outputs and gradients against torch alone."""
import statistics

import torch

from models import fft_kernels
from models.longconv import circular_kernel, fft_conv, next_fast_len

torch.backends.cuda.matmul.allow_tf32 = True
dev = "cuda"
B, L, H = 50, 2048, 128
available, grad_products = fft_kernels.available, fft_kernels.grad_products


def torch_products(g, w, k, want_gk, want_cross):
    return (g * k if want_gk else None), ((g * w).sum(0) if want_cross else None)


def timed(fn, reps=50, warm=10):
    for _ in range(warm):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def use(way):
    fft_kernels.available = available if way != "torch" else (lambda t: False)
    fft_kernels.grad_products = grad_products if way == "copies+products" else torch_products


x = torch.randn(B, L, H, device=dev, requires_grad=True)
n = next_fast_len(2 * L - 1)
kc = (torch.randn(H, L, device=dev) / n).requires_grad_()
k2 = torch.randn(2, H, L, device=dev, requires_grad=True)
D = torch.randn(1, H, device=dev, requires_grad=True)
mask = torch.arange(L, device=dev)[None] < torch.randint(L // 2, L + 1, (B, 1), device=dev)
g = torch.randn(B, L, H, device=dev)
cases = {
    "multires (causal, scaled, id)": (lambda: fft_conv(x, kc, n=n, scaled=True, paired=True), [x, kc]),
    "s4d (bidirectional, mask, gelu)": (lambda: fft_conv(x, circular_kernel(k2, D, True), mask, "gelu", paired=True),
                                        [x, k2, D]),
}
for name, (f, params) in cases.items():
    outs = {}
    for way in ("torch", "copies", "copies+products"):
        use(way)
        y = f()
        outs[way] = (y, *torch.autograd.grad(y, params, g))
        fwd = timed(f)
        both = timed(lambda f=f: torch.autograd.backward(f(), g))
        diff = [float((a - b).abs().max() / b.abs().max()) for a, b in zip(outs[way], outs["torch"])]
        print(f"{name}: {way}: forward {fwd:.3f} ms, forward+backward {both:.3f} ms; "
              f"max |diff| / max |torch| of y and grads: {', '.join(f'{d:.1e}' for d in diff)}")
use("copies+products")
xs = torch.randn(B, L, H, device=dev)
sign, buf = torch.tensor([1.0, -1.0], device=dev), torch.empty(B // 2, H, n, 2, device=dev)
n_bytes = B * L * H * 4
for what, fn in {"pack_pairs (zero tail included)": lambda: fft_kernels.pack_pairs(xs, n, torch.float32, -1.0),
                 "torch pair copy (no zero tail)": lambda: torch.mul(xs.unflatten(0, (B // 2, 2)).permute(0, 3, 2, 1),
                                                                     sign, out=buf[:, :, :L])}.items():
    ms = timed(fn)
    print(f"{what}: {ms:.3f} ms, {2 * n_bytes / ms / 1e6:.0f} GB/s (read x + write its pairs)")
torch.cuda.set_sync_debug_mode("error")  # a host-device synchronisation inside the op would raise here
for f, _ in cases.values():
    torch.autograd.backward(f(), g)
torch.cuda.set_sync_debug_mode(0)
print("no synchronisation")
