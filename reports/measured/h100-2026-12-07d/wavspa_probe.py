"""Where the wavspa_ada_listops step's time goes, piece by piece, at the preset's shapes (GPU only).

The eager step is 636 ms on an H100 (batch 400 x 2,000 tokens, 8 layers; `../h100-2026-12-06/`), GPU-bound, so a
paper run is ~14 GPU-hours. A WavSpA layer is a wavelet analysis (grouped strided conv1d), one softmax attention
per band (two bands of 1,015 at one level, one head of 64, dropout 0.1 on the weights), and the synthesis. This
times each part forward + backward (harness.timing: CUDA events, medians of 10 after 3 warm-up calls, peak memory
above the inputs; an OOM is printed as a result), the attention through each SDPA backend that takes fp32 or a
cast of it:
- `efficient fp32`: what the preset runs now (fp32 inputs at train.precision=tf32 pick the memory-efficient kernel);
- `math tf32`: the unfused attention with TF32 matmuls, the precision the published JAX code gets on a GPU;
- `flash bf16`: q, k, v cast to bf16 (not the preset's precision: for scale only);
- `flash_tf32`: ours (models/flash_attention.py, `model.attention_kernel=flash_tf32`), TF32 products in Triton;
with each one's error against float64 attention (no dropout, batch 8), and prints the costliest CUDA kernels of one
whole layer and of one block, forward + backward, through SDPA and through ours.

    PYTHONPATH=. python reports/measured/h100-2026-12-07d/wavspa_probe.py
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from harness.timing import PeakMemory, tf32, time_after_warmup
from models.flash_attention import available, flash_attention_tf32
from models.wavspa import WavSpABlock, WavSpALayer, analysis_filters, daubechies_lowpass, reflect_pad, wavedec, waverec

SMOKE = not torch.cuda.is_available()  # on a CPU: tiny shapes, each part run once, to check the script
B, T, D, HD = (2, 65, 16, 16) if SMOKE else (400, 2001, 128, 64)  # batch, tokens with CLS, width, head width
M = (T + 1) // 2 + 14  # a band's length: ceil(T / 2) + wlen - 2
dev = torch.device("cpu" if SMOKE else "cuda")
torch.backends.cuda.matmul.allow_tf32 = True  # as train.precision=tf32 (time_after_warmup sets it too; the
torch.backends.cudnn.allow_tf32 = True  # kernel listing runs outside it)


def report(name: str, fn: Callable[[], None]) -> None:
    """The median of 10 calls after 3 warm-up calls, TF32 allowed (harness.timing: CUDA events on a GPU), and the
    peak memory above what was allocated before them."""
    try:
        t = time_after_warmup(fn, dev, warmup=3, repeats=1 if SMOKE else 10, memory=PeakMemory(dev))
        print(f"{name:54s} {t.median_ms:9.2f} ms  {(t.peak_bytes or 0) / 2**20:9.0f} MiB", flush=True)
    except torch.OutOfMemoryError:  # a result, as the benchmark records it
        print(f"{name:54s} OOM", flush=True)
    except RuntimeError as exc:  # a backend that does not take these inputs on this device
        print(f"{name:54s} not run: {str(exc).splitlines()[0][:100]}", flush=True)
    torch.cuda.empty_cache()


def attend(backend: SDPBackend | int, dtype: torch.dtype, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
           p: float) -> torch.Tensor:
    if isinstance(backend, int):  # ours, with this block size
        return flash_attention_tf32(q, k, v, p, block=backend)
    with sdpa_kernel(backend):
        return F.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype), dropout_p=p).float()


def attention(backend: SDPBackend | int, dtype: torch.dtype) -> Callable[[], None]:
    q, k, v = (torch.randn(B, 1, M, HD, device=dev, requires_grad=True) for _ in range(3))
    g = torch.randn(B, 1, M, HD, device=dev)

    def step() -> None:
        attend(backend, dtype, q, k, v, 0.1).backward(g)
    return step


def error(backend: SDPBackend | int, dtype: torch.dtype) -> str:
    """Max |out - exact| / max |exact| without dropout, exact = float64 attention written out."""
    q, k, v = (torch.randn(8, 1, M, HD, device=dev) for _ in range(3))
    exact = torch.softmax(q.double() @ k.double().transpose(-1, -2) / HD**0.5, -1) @ v.double()
    try:
        with tf32(dev):
            got = attend(backend, dtype, q, k, v, 0.0)
    except RuntimeError:
        return "n/a"
    return f"{((got.double() - exact).abs().max() / exact.abs().max()).item():.1e}"


def fft_transforms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """One level of `wavedec` then `waverec` through FFTs, as the published code computes them: the analysis is a
    circular cross-correlation kept at even offsets, the synthesis its adjoint, a circular convolution of the
    zero-upsampled bands (models/wavspa.py does both with grouped strided convolutions). For timing beside it."""
    lo, hi = analysis_filters(w)
    n = w.shape[0]
    xpad = reflect_pad(x, n - 2, n - 2 + x.shape[1] % 2)  # [B, P, D]
    p = xpad.shape[1]
    spectrum = torch.fft.rfft(xpad, dim=1)[..., None]  # [B, P/2+1, D, 1]
    filters = torch.stack([lo, hi], -1)  # [N, D, 2]
    bands = torch.fft.irfft(spectrum * torch.fft.rfft(filters, n=p, dim=0).conj(), n=p, dim=1)[:, 0::2]
    up = bands.new_zeros(bands.shape[0], p, *bands.shape[2:])
    up[:, 0::2] = bands  # [B, P, D, 2]: A and D_t at even positions
    y = torch.fft.irfft((torch.fft.rfft(up, dim=1) * torch.fft.rfft(filters, n=p, dim=0)).sum(-1), n=p, dim=1)
    return y[:, n - 2: p - (n - 2)]


def transforms(kind: str) -> Callable[[], None]:
    x = torch.randn(B, T, D, device=dev, requires_grad=True)
    w = daubechies_lowpass(16)[:, None].repeat(1, D).to(dev).requires_grad_()
    through = {"conv": lambda: waverec(wavedec(x, w, 1), w), "fft": lambda: fft_transforms(x, w)}[kind]

    def step() -> None:
        y = through()[:, :T]
        y.backward(torch.ones_like(y))
    return step


def check_fft_transforms() -> None:
    """fft_transforms computes what wavedec + waverec compute (float64, random filters)."""
    x = torch.randn(2, 37, 6, dtype=torch.float64)
    w = torch.randn(16, 6, dtype=torch.float64)
    torch.testing.assert_close(fft_transforms(x, w)[:, :37], waverec(wavedec(x, w, 1), w)[:, :37])


def module(m: torch.nn.Module) -> Callable[[], None]:
    m = m.to(dev).train()
    x = torch.randn(B, T, D, device=dev, requires_grad=True)
    g = torch.randn(B, T, D, device=dev)

    def step() -> None:
        m(x).backward(g)
    return step


def top_kernels(name: str, fn: Callable[[], None], n: int = 12) -> None:
    fn()
    kind = torch.profiler.ProfilerActivity.CPU if SMOKE else torch.profiler.ProfilerActivity.CUDA
    with torch.profiler.profile(activities=[kind]) as prof:
        fn()
        if not SMOKE:
            torch.cuda.synchronize()
    attr = "self_cpu_time_total" if SMOKE else "self_device_time_total"
    events = sorted(prof.key_averages(), key=lambda e: -getattr(e, attr))
    total = sum(getattr(e, attr) for e in events) / 1e3
    print(f"-- {name}: {total:.1f} ms of {'CPU ops' if SMOKE else 'CUDA kernels'}; the costliest:")
    for e in events[:n]:
        print(f"   {getattr(e, attr) / 1e3:8.2f} ms  {e.count:4d}x  {e.key[:110]}")


print("CPU smoke run" if SMOKE else torch.cuda.get_device_name(), torch.__version__, flush=True)
BACKENDS = {"efficient fp32": (SDPBackend.EFFICIENT_ATTENTION, torch.float32),
            "math tf32": (SDPBackend.MATH, torch.float32),
            "flash bf16": (SDPBackend.FLASH_ATTENTION, torch.bfloat16),
            "efficient bf16": (SDPBackend.EFFICIENT_ATTENTION, torch.bfloat16),
            "flash_tf32 (ours), block 64": (64, torch.float32),
            "flash_tf32 (ours), block 32": (32, torch.float32)}
for name, (backend, dtype) in BACKENDS.items():
    if isinstance(backend, int) and not available(torch.zeros(1, 1, 1, HD, device=dev)):
        continue  # a CPU without Triton's interpreter
    report(f"attention, one band, {name}", attention(backend, dtype))
    print(f"{'':54s} error against float64: {error(backend, dtype)}", flush=True)
check_fft_transforms()
report("wavedec + waverec (db8, one level), grouped conv", transforms("conv"))
report("wavedec + waverec (db8, one level), FFT", transforms("fft"))


def block(kernel: str) -> WavSpABlock:
    return WavSpABlock(WavSpALayer(D, n_heads=1, qkv_dim=HD, wavelet="ada", wlen=16, levels=1, attn_dropout=0.1,
                                   dropout=0.1, attention_kernel=kernel), D, D, 0.1)


for kernel in ("sdpa", "flash_tf32"):
    report(f"WavSpA layer (2 bands), {kernel}", module(block(kernel).mixer))
    report(f"WavSpA block (layer, LayerNorm, MLP), {kernel}", module(block(kernel)))
    top_kernels(f"WavSpA block, {kernel}", module(block(kernel)))
