"""Long convolutions through the FFT, shared by S4, S4D, SGConv and MultiresNet.

- `fft_conv`: act(conv(mask * x, kernel)) on [B, L, H] as one custom op (`seqbench::fft_conv`, torch.library)
  whose backward is written out (`seqbench::fft_conv_backward`): torch.compile sees one opaque call with real
  inputs and outputs, so no complex spectrum reaches Inductor. Kernel layouts: the circular [H, 2L] kernel of the
  S4 codebase (`circular_kernel`), a causal kernel of Lk taps with an FFT size n >= L + Lk - 1 (MultiresNet, its
  1/n folded into the kernel), or a layer's taps [Ch, H, Lk] with the skip term D, placed on the circle inside
  the op (a causal part, an optional anti-causal part and D in one spectrum).
- `ConvLayer`: the sequence layer of S4, S4D and SGConv, "kernel (+ D u) -> dropout -> activation -> dropout",
  as the published FFTConv module (state-spaces/s4 `models/s4/s4.py`); subclasses only say how the kernel is made,
  for several layers at once (`share_taps`: a model's forward makes all its layers' kernels in one batch).
- `ChannelDropout`: dropout of whole channels, one mask per (example, channel) for every position.
- `next_fast_len`: FFT sizes cuFFT and pocketfft handle fastest.

On CUDA the paired path's copy out of its FFT buffers and its backward's products are Triton kernels
(`models.fft_kernels`); the CPU runs the same steps in torch.

Kernels and FFTs run in fp32 even under bf16 autocast: cuFFT half needs power-of-two sizes, and the kernels'
dynamic range does not fit bf16.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import ConfigError
from models import fft_kernels
from models.backbone import length_mask

Tensor = torch.Tensor

# Pointwise activations the FFT convolution applies on its way out: (forward .out op, backward .grad_input op).
_ACTS = {
    "gelu": (torch.ops.aten.gelu.out, torch.ops.aten.gelu_backward.grad_input),
    "silu": (torch.ops.aten.silu.out, torch.ops.aten.silu_backward.grad_input),
}
ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU, "swish": nn.SiLU, "id": nn.Identity, "none": nn.Identity}


def next_fast_len(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (sizes cuFFT and pocketfft handle fastest)."""
    best = 1 << max(n - 1, 0).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def _padded_spectrum(x: torch.Tensor, n: int, dtype: torch.dtype, mask: torch.Tensor | None = None,
                     act_backward: tuple[Any, torch.Tensor] | None = None) -> torch.Tensor:
    """rfft over time of [B, L, H] zero-padded to n: [B, H, n // 2 + 1], contiguous; one copy of x on the way.

    The copy is (mask * x), or act's backward at the saved pre-activation z [B, H, L] with x as the incoming
    gradient. B = 1: the FFT reads the [n, H] buffer with stride H (cuFFT's batch-interleaved layout), so no
    transposing copy is made; B > 1: torch would copy-transpose internally anyway, so transpose while padding.
    """
    B, L, H = x.shape
    single = B == 1
    buf = x.new_empty((B, n, H) if single else (B, H, n), dtype=dtype)
    head, tail = (buf[:, :L], buf[:, L:]) if single else (buf[..., :L], buf[..., L:])
    tail.zero_()
    src = x if single else x.transpose(1, 2)
    if act_backward is not None:
        op, z = act_backward
        op(src, z.transpose(1, 2) if single else z, grad_input=head)
    elif mask is not None:
        torch.mul(src, mask[:, :, None] if single else mask[:, None, :], out=head)
    else:
        head.copy_(src)
    if single:
        return torch.fft.rfft(buf, dim=1).transpose(1, 2).contiguous()
    return torch.fft.rfft(buf, dim=-1)


def _pair_view(t: torch.Tensor) -> torch.Tensor:
    """[B, L, H] -> its view [B/2, H, L, 2]: examples 2p and 2p+1 side by side, as the real and imaginary parts of
    one complex signal."""
    return t.unflatten(0, (t.shape[0] // 2, 2)).permute(0, 3, 2, 1)


def _pair_factor(sign: float, mask: Tensor | None, dtype: torch.dtype, device: torch.device) -> Tensor | None:
    """What the torch copies multiply the pairs by, broadcast over [B/2, H, L, 2]: mask * [1, sign]."""
    if sign == 1.0:
        return None if mask is None else _pair_view(mask[..., None])
    # [1, -1] made on the device: a tensor from Python numbers is a host-to-device copy, which would wait for the
    # GPU at every call and cannot be captured in a CUDA graph.
    signs = torch.linspace(1.0, sign, 2, dtype=dtype, device=device)
    return signs if mask is None else _pair_view(mask[..., None]).to(dtype) * signs


def _paired_spectrum(x: torch.Tensor, n: int, dtype: torch.dtype, sign: float = 1.0, mask: Tensor | None = None,
                     act_backward: tuple[Any, torch.Tensor] | None = None, inverse: bool = False) -> torch.Tensor:
    """Unscaled C2C transform (forward, or inverse) of the pairs of `_pair_view(x)` as complex signals
    mask x[2p] + i sign mask x[2p+1], zero-padded to n: [B/2, H, n] complex; one copy of x on the way, or one
    through act's backward at the saved pre-activations z [B/2, H, L, 2]."""
    B, L, H = x.shape
    buf = x.new_empty((B // 2, H, n, 2), dtype=dtype)
    buf[:, :, L:].zero_()
    head, src = buf[:, :, :L], _pair_view(x)
    factor = _pair_factor(sign, mask, dtype, x.device)
    if act_backward is not None:
        op, z = act_backward
        op(src, z, grad_input=head)
    elif factor is not None:
        torch.mul(src, factor, out=head)
    else:
        head.copy_(src)
    spectrum = torch.view_as_complex(buf)
    return torch.fft.ifft(spectrum, norm="forward") if inverse else torch.fft.fft(spectrum)


@torch.library.custom_op("seqbench::fft_conv", mutates_args=())
def _fft_conv(x: Tensor, taps: Tensor, skip: Tensor | None, mask: Tensor | None, n: int, act: str,
              scaled: bool, paired: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """y = act(circular_conv_n(mask * x, kernel)[:L]), x [B, L, H] -> [B, L, H], with a hand-written backward.

    A custom op (`torch.library`) so that torch.compile sees one opaque call with real inputs and outputs: the
    complex spectra inside never reach Inductor, which has no code generation for them. The kernel is
    `_kernel_spectrum`'s: taps [Ch, H, Lk] and the skip term. Returns y and what the backward needs: the input's
    spectrum and K = the kernel's (real views, [..., 2]) and, for gelu/silu, the pre-activations (else an empty
    tensor). `paired` (B even): the examples go two by two through complex (C2C) transforms, see `_fft_conv_paired`.

    Why not autograd through torch.fft: its rfft backward builds a two-sided complex [B, H, n] buffer (4 x the
    activation) and runs a C2C FFT on it, and every elementwise step around the FFTs is one more pass over
    [B, H, L]. Here each pass over activation-sized data does something needed, and the transposes
    [B, L, H] <-> [B, H, n] ride inside passes that are needed anyway (zero-pad copy, activation, its backward,
    the copy out of the gradient). With A = B*L*H*4 bytes (one fp32 activation) and n = 2L, per call:
      forward  : pad-zero 1A + transposed (masked) copy 2A | rfft 4A | U*K 4A | irfft (torch clones the input
                 for cuFFT C2R) 8A | act out, transposed to [B, L, H] 2A                 = 21A,  7 big launches
      backward : pad-zero 1A + act-backward into the pad 3A | rfft 4A | sum_b G conj(U): conj copy 4A (torch's
                 conj fallback) + mul 6A + sum 2A | G *= conj(K) 4A | irfft 8A | transposed copy out 2A
                                                                                           = 34A, 10 big launches
    (autograd through torch.fft with D u as a separate term: 27A / 9 launches forward, 53A / 16 backward, its
    rfft backward alone 16A through a two-sided complex buffer); paired: 17A (+2A with an activation) and 26A.
    The gradients are correlations: grad_x = irfft(G conj(K)), grad_kernel = irfft(sum_b G conj(U)).
    The compute dtype is the kernel's (fp32 in the layers; fp64 in the gradient checks). `scaled`: the 1/n of
    the inverse FFT is already in the kernel (norm="forward"), which saves a pass over the output.
    """
    if paired:
        return _fft_conv_paired(x, taps, skip, mask, n, act, scaled)
    B, L, H = x.shape
    u_f = _padded_spectrum(x, n, taps.dtype, mask)  # [B, H, n/2+1]
    k_f = _kernel_spectrum(taps, skip, n)  # [H, n/2+1]
    z = torch.fft.irfft(u_f * k_f, n=n, norm=_norm(scaled))  # [B, H, n]; the pre-activation is z[..., :L]
    y = x.new_empty(B, L, H, dtype=taps.dtype)
    if act in _ACTS:
        _ACTS[act][0](z[..., :L].transpose(1, 2), out=y)
    else:
        y.copy_(z[..., :L].transpose(1, 2))
    return y, torch.view_as_real(u_f), torch.view_as_real(k_f), z if act in _ACTS else z.new_empty(0)


def _fft_conv_paired(x: Tensor, taps: Tensor, skip: Tensor | None, mask: Tensor | None, n: int, act: str,
                     scaled: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """`_fft_conv` on examples paired into complex signals w_p = u[2p] - i u[2p+1] (u = mask * x), through C2C
    transforms.

    The kernel is real, so conv(w_p, k) = y[2p] - i y[2p+1]: one C2C transform does two examples' R2C, and the
    inverse C2C needs no copy of its input (cuFFT's C2R overwrites its input, so torch clones it: 4A a call).
    Packing u[2p+1] with a minus sign (free: the copy in multiplies anyway) makes the backward need no
    conjugate: with the gradient packed as g_p = g[2p] + i g[2p+1] and transformed by the (unscaled) inverse
    DFT, G_p K is the spectrum of the correlation of g_p with k (grad_x, no sign to undo), and G_p W_p that of
    its correlation with w_p, whose real part sum_t g[2p] u[2p] + g[2p+1] u[2p+1] is the kernel's gradient.
    Returns y, W [B/2, H, n, 2], the full kernel spectrum [H, n, 2] and, with an activation, the pre-activations
    [B/2, H, n, 2] (examples 2p, 2p+1 in the last axis)."""
    B, L, H = x.shape
    w_f = _paired_spectrum(x, n, taps.dtype, -1.0, mask)  # [B/2, H, n]
    k_f = _kernel_spectrum(taps, skip, n, two_sided=True)  # [H, n]
    z = torch.view_as_real(torch.fft.ifft(w_f * k_f, norm=_norm(scaled)))  # [B/2, H, n, 2]: y[2p], -y[2p+1]
    if act not in _ACTS and fft_kernels.available(x):
        y = fft_kernels.unpack_pairs(z, L, taps.dtype, -1.0)
    else:
        y = x.new_empty(B, L, H, dtype=taps.dtype)
        sign = _pair_factor(-1.0, None, taps.dtype, x.device)
        if act in _ACTS:
            z[:, :, :L].mul_(sign)  # the pre-activations themselves, as the backward needs them
            _ACTS[act][0](z[:, :, :L], out=_pair_view(y))
        else:
            torch.mul(z[:, :, :L], sign, out=_pair_view(y))
    return y, torch.view_as_real(w_f), torch.view_as_real(k_f), z if act in _ACTS else z.new_empty(0)


@_fft_conv.register_fake
def _(x: Tensor, taps: Tensor, skip: Tensor | None, mask: Tensor | None, n: int, act: str,
      scaled: bool, paired: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    B, L, H = x.shape
    f = n if paired else n // 2 + 1
    spectra = (B // 2, H, n, 2) if paired else (B, H, f, 2)
    z = x.new_empty(((B // 2, H, n, 2) if paired else (B, H, n)) if act in _ACTS else (0,), dtype=taps.dtype)
    return (x.new_empty(B, L, H, dtype=taps.dtype), x.new_empty(spectra, dtype=taps.dtype),
            x.new_empty(H, f, 2, dtype=taps.dtype), z)


@torch.library.custom_op("seqbench::fft_conv_backward", mutates_args=())
def _fft_conv_backward(g: Tensor, u: Tensor, k: Tensor, z: Tensor, mask: Tensor | None, n: int, act: str,
                       scaled: bool, paired: bool, taps_shape: list[int], x_dtype: torch.dtype,
                       needs: list[bool]) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients (x, taps, skip) of `_fft_conv` from the gradient g of y; those not in `needs` are empty."""
    B, L, H = g.shape
    u_f, k_f = torch.view_as_complex(u), torch.view_as_complex(k)
    act_backward = (_ACTS[act][1], z[..., :L, :] if paired else z[..., :L]) if act in _ACTS else None
    grad_x = grad_taps = grad_skip = g.new_empty(0)
    if paired:
        # The correlations' spectra G K and G W (see _fft_conv_paired), transformed forward: 1/n where the
        # forward's inverse transform had it.
        g_f = _paired_spectrum(g, n, u.dtype, act_backward=act_backward, inverse=True)
        back = lambda spectrum: torch.fft.fft(spectrum, norm="backward" if scaled else "forward")  # noqa: E731
        kernels = fft_kernels.available(g)
        if kernels:
            gk, cross = fft_kernels.grad_products(g_f, u_f, k_f, needs[0], needs[1] or needs[2])
        else:
            gk = g_f * k_f if needs[0] else None
            cross = g_f.mul_(u_f).sum(0) if needs[1] or needs[2] else None
        circle = torch.view_as_real(back(cross))[..., 0] if cross is not None else None
        gu = torch.view_as_real(back(gk)) if gk is not None else None
        if gu is not None and kernels:
            grad_x, gu = fft_kernels.unpack_pairs(gu, L, x_dtype, 1.0, mask), None
        elif gu is not None:
            gu = gu[:, :, :L]
        grad_view = _pair_view
        mask_view = _pair_factor(1.0, mask, u.dtype, g.device)
    else:
        norm = _norm(scaled)
        g_f = _padded_spectrum(g, n, u.dtype, act_backward=act_backward)
        circle = None
        if needs[1] or needs[2]:
            # dLoss/dkernel[m] = sum_{b,t} g[t] u[t-m]: a correlation, spectrum sum_b G conj(U).
            cross = g_f[0] * u_f[0].conj() if B == 1 else (g_f * u_f.conj()).sum(0)
            circle = torch.fft.irfft(cross, n=n, norm=norm)  # [H, n]: the gradient of the circular kernel
        # dLoss/du[s] = sum_t g[t] kernel[t-s]: correlation with the kernel, spectrum G conj(K).
        gu = torch.fft.irfft(g_f.mul_(k_f.conj_physical()), n=n, norm=norm)[..., :L] if needs[0] else None
        grad_view = lambda t: t.transpose(1, 2)  # noqa: E731
        mask_view = None if mask is None else mask[:, None, :]
    if circle is not None:
        Ch, _, Lk = taps_shape
        if needs[1]:
            grad_taps = (circle[:, :Lk][None] if Ch == 1 else
                         torch.stack([circle[:, :Lk], circle[:, n - Lk:].flip(-1)])).contiguous()
        if needs[2]:
            grad_skip = circle[:, 0].contiguous()  # the skip term sits at lag 0
    if gu is not None:
        grad_x = g.new_empty(B, L, H, dtype=x_dtype)
        if mask_view is None:
            grad_view(grad_x).copy_(gu)
        else:
            torch.mul(gu, mask_view, out=grad_view(grad_x))
    return grad_x, grad_taps, grad_skip


@_fft_conv_backward.register_fake
def _(g: Tensor, u: Tensor, k: Tensor, z: Tensor, mask: Tensor | None, n: int, act: str, scaled: bool,
      paired: bool, taps_shape: list[int], x_dtype: torch.dtype, needs: list[bool]) -> tuple[Tensor, Tensor, Tensor]:
    B, L, H = g.shape
    return (g.new_empty((B, L, H) if needs[0] else (0,), dtype=x_dtype),
            u.new_empty(taps_shape if needs[1] else (0,)), u.new_empty((H,) if needs[2] else (0,)))


def _setup_fft_conv(ctx: Any, inputs: tuple, output: tuple) -> None:
    x, taps, skip, mask, ctx.n, ctx.act, ctx.scaled, ctx.paired = inputs
    _, u, k, z = output
    ctx.taps_shape, ctx.x_dtype = list(taps.shape), x.dtype
    ctx.save_for_backward(u, k, z, mask)
    ctx.mark_non_differentiable(u, k, z)
    ctx.set_materialize_grads(False)  # else autograd fills activation-sized zero gradients for u, k and z


def _fft_conv_grad(ctx: Any, g: Tensor | None, *unused: Tensor | None) -> tuple[Tensor | None, ...]:
    if g is None:  # y's gradient undefined: zero, and not materialised (set_materialize_grads)
        return (None,) * 8
    u, k, z, mask = ctx.saved_tensors
    needs = list(ctx.needs_input_grad[:3])
    grads = _fft_conv_backward(g, u, k, z, mask, ctx.n, ctx.act, ctx.scaled, ctx.paired, ctx.taps_shape,
                               ctx.x_dtype, needs)
    return (*(grad if need else None for grad, need in zip(grads, needs, strict=True)), None, None, None, None, None)


_fft_conv.register_autograd(_fft_conv_grad, setup_context=_setup_fft_conv)


def _norm(scaled: bool) -> str:
    return "forward" if scaled else "backward"


def _kernel_spectrum(taps: Tensor, skip: Tensor | None, n: int, two_sided: bool = False) -> Tensor:
    """rfft (size n; `two_sided`: the full fft) of the circular kernel [H, n]: taps[0] at lags 0..Lk-1, taps[1]
    (when Ch = 2) at lags -1..-Lk (positions n-1..n-Lk, the published off-by-one of the backward kernel), skip [H]
    added at lag 0."""
    Ch, H, Lk = taps.shape
    if Ch == 1:
        circle = taps[0]  # rfft zero-pads it to n
    else:
        gap = [taps.new_zeros(H, n - 2 * Lk)] if n > 2 * Lk else []
        circle = torch.cat([taps[0], *gap, taps[1].flip(-1)], dim=-1)
    k_f = torch.fft.fft(circle, n=n) if two_sided else torch.fft.rfft(circle, n=n)
    if skip is not None:  # a tap of skip at lag 0 adds skip to every frequency
        k_f.add_(skip.to(taps.dtype)[:, None])
    return k_f


def fft_conv(x: torch.Tensor, kernel: torch.Tensor, mask: torch.Tensor | None = None, act: str = "id", *,
             n: int | None = None, scaled: bool = False, skip: torch.Tensor | None = None,
             paired: bool | None = None) -> torch.Tensor:
    """act(convolution of mask * x [B, L, H] with the kernel (+ skip * x)) -> [B, L, H] in the kernel's dtype.

    Three kernel layouts:
    - [H, 2L], n None: the circular kernel of `circular_kernel`; the FFT size is 2L (a power of two for
      power-of-two L, which cuFFT likes best).
    - [H, Lk] with n given: causal (lag s at kernel[:, s]); n >= L + Lk - 1 makes the convolution linear;
      `scaled` says the kernel already holds the inverse FFT's 1/n.
    - [Ch, H, Lk] taps of a layer, Lk <= L, n None: channel 0 at lags 0..Lk-1, channel 1 (Ch = 2, bidirectional)
      at lags -1..-Lk (as `circular_kernel` places it), zero beyond; FFT size 2L. `skip` [H] adds skip * x.
    mask [B, L] (bool or float, or None) multiplies x first; act is gelu, silu or id, applied in the same pass as
    the crop. `paired`: transform the examples two by two as complex signals (B even). None: paired on CUDA, where
    it saves a fifth of the passes over the data (`_fft_conv_paired`); one by one elsewhere (on a CPU pairing is
    no faster, and the CPU's results stay what they were, bit for bit).
    """
    if act not in _ACTS and act != "id":
        raise ConfigError(f"fft_conv act must be one of gelu, silu, id, got {act!r}")
    B, L, H = x.shape
    if kernel.dim() == 3:
        if n is not None or kernel.shape[0] not in (1, 2) or kernel.shape[1] != H or kernel.shape[2] > L:
            raise ConfigError(f"kernel taps {tuple(kernel.shape)} do not fit input {tuple(x.shape)}: "
                              "need [1 or 2, H, Lk <= L] and no n")
        taps, n = kernel, 2 * L
    elif n is None:
        if kernel.shape != (H, 2 * L):
            raise ConfigError(f"kernel shape {tuple(kernel.shape)} does not fit input {tuple(x.shape)}: need [H, 2L]")
        taps, n = kernel[None], 2 * L
    elif kernel.shape[0] != H or n < L + kernel.shape[-1] - 1:
        raise ConfigError(f"kernel shape {tuple(kernel.shape)} and FFT size {n} do not fit input {tuple(x.shape)}: "
                          f"need [H, Lk] with n >= L + Lk - 1")
    else:
        taps = kernel[None]
    if skip is not None and scaled:
        raise ConfigError("fft_conv: a skip term needs an unscaled kernel (scaled=False)")
    if paired is None:
        paired = x.is_cuda and B % 2 == 0
    elif paired and B % 2:
        raise ConfigError(f"fft_conv: paired=True needs an even batch, got {B}")
    return _fft_conv(x, taps, None if skip is None else skip.reshape(H), mask, n, act, scaled, paired)[0]


def circular_kernel(k: torch.Tensor, D: torch.Tensor, bidirectional: bool) -> torch.Tensor:
    """Length-2L circular kernel [H, 2L] of the layer, D skip term included, from k [C, H, L] and D [1, H].

    Causal:        y[t] = sum_{s<=t} k[t-s] u[s] + D u[t].
    Bidirectional: also + sum_{s>t} k1[s-t-1] u[s]  (the published off-by-one: the backward kernel starts at
                   the next step; its last tap is unused).
    Lags 0..L-1 hold k0 (lag 0 also D, so D u rides in the spectrum: no separate pass over [B, H, L]);
    lags -L..-1 (positions L..2L-1) hold the reversed k1, or zeros when causal. All of it is [H, 2L]: tiny.
    """
    k0 = k[0]
    head = torch.cat([k0[:, :1] + D.reshape(-1, 1).to(k0.dtype), k0[:, 1:]], dim=-1)
    tail = k[1].flip(-1) if bidirectional else torch.zeros_like(k0)
    return torch.cat([head, tail], dim=-1)


class ChannelDropout(nn.Module):
    """Dropout of whole channels on [B, L, D] (or [B, D]): one mask per (example, channel), the same at every step.

    Two ways to draw the mask, kept so that each model's training runs draw the masks they always drew:
    "bernoulli" is torch's nn.Dropout1d (MultiresNet, as published; the scaled mask makes it one pass over x),
    "uniform" the S4 codebase's DropoutNd (uniforms >= p; S4, S4D and SGConv).
    """

    def __init__(self, p: float, draw: str = "bernoulli"):
        super().__init__()
        if draw not in ("bernoulli", "uniform"):
            raise ValueError(f"draw must be bernoulli or uniform, got {draw!r}")
        self.p, self.draw = p, draw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        if self.draw == "uniform":
            keep = torch.rand(shape, device=x.device) >= self.p
            return x * keep.to(x.dtype) / (1.0 - self.p)
        scaled_keep = torch.empty(shape, device=x.device, dtype=x.dtype).bernoulli_(1 - self.p).div_(1 - self.p)
        return x * scaled_keep

    def extra_repr(self) -> str:
        return f"p={self.p}, draw={self.draw}"


def s4_dropout(p: float, tie: bool) -> nn.Module:
    """The S4 codebase's dropout: none at p = 0, else DropoutNd (one mask per channel) when tied, else elementwise."""
    if p <= 0:
        return nn.Identity()
    return ChannelDropout(p, draw="uniform") if tie else nn.Dropout(p)


class ConvLayer(nn.Module):
    """Base of a long-convolution sequence layer: [B, L, H] -> conv (+ D u) -> dropout -> act -> dropout.

    Subclasses provide `stacked_taps(layers, L)`, the kernel taps of several layers at once, `batch_key` (what
    layers must share to be computed together) and the parameter `D` [1, H]. A layer's own kernel is the batch of
    one; a model's forward computes all its layers' kernels in one call first (`share_taps`, a few launches
    instead of a few per layer) and each layer then finds its own in `given_taps`.
    `inner_dropout`: the published S4 FFTConv applies elementwise dropout to the conv output before the
    activation and S4Block a (tied) one after it; SGConv only the one after the activation.
    `mask_lengths`: zero the padding before the convolution (S4, S4D), so that a bidirectional kernel cannot
    carry it back. Stepping keeps the input history and applies the causal kernel, which equals the convolution
    exactly; S4D overrides it with its O(N) recurrence.
    """

    D: nn.Parameter

    def __init__(self, d_model: int, *, l_max: int, bidirectional: bool, activation: str, dropout: float,
                 tie_dropout: bool, inner_dropout: bool, mask_lengths: bool):
        super().__init__()
        self.d_model, self.l_max, self.bidirectional, self.mask_lengths = d_model, l_max, bidirectional, mask_lengths
        self.drop_inner = nn.Dropout(dropout) if (inner_dropout and dropout > 0) else nn.Identity()
        self.act = ACTIVATIONS[activation]()
        self.act_name = {"swish": "silu", "none": "id"}.get(activation, activation)
        self.drop = s4_dropout(dropout, tie_dropout)
        self.given_taps: torch.Tensor | None = None  # set by share_taps for one forward of the model

    @classmethod
    def stacked_taps(cls, layers: list[Any], L: int) -> torch.Tensor:
        """Kernel taps [len(layers), Ch, H, Lk] of layers with equal `batch_key`s for inputs of length L (Lk <= L:
        lags from Lk on are zero), in fp32 (float64 for float64 layers)."""
        raise NotImplementedError

    def batch_key(self) -> tuple[Any, ...]:
        """Layers with equal keys can share one `stacked_taps` call."""
        return (type(self), self.d_model, self.l_max, self.bidirectional, self.D.dtype, self.D.device)

    def taps(self, L: int) -> torch.Tensor:
        """This layer's kernel taps [Ch, H, Lk] (Ch = 2 when bidirectional) for inputs of length L."""
        return self.stacked_taps([self], L)[0]

    def kernel(self, L: int) -> torch.Tensor:
        """The convolution kernel [Ch, H, L]: the taps, zero-padded to L."""
        k = self.taps(L)
        return k if k.shape[-1] == L else F.pad(k, (0, L - k.shape[-1]))

    def extend_length(self, L: int) -> None:
        """Run inputs of up to L positions (an evaluation beyond the training length): the step mode's kernel and,
        where a layer's kernel is cut at l_max (S4, S4D), the kernel itself reach L."""
        self.l_max = max(self.l_max, L)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        mask = length_mask(lengths, x.shape[1], x.device) if self.mask_lengths else None
        # The activation is fused into the FFT convolution unless an active dropout sits between them.
        inner = self.training and isinstance(self.drop_inner, nn.Dropout) and self.drop_inner.p > 0
        act = self.act_name if (self.act_name != "id" and not inner) else "id"
        # fp32 at least (bf16 autocast must not reach the FFT), float64 when the layer is float64.
        dtype = torch.float64 if self.D.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=x.device.type, enabled=False):
            taps = self.given_taps if self.given_taps is not None else self.taps(x.shape[1])
            y = fft_conv(x, taps.to(dtype), mask, act, skip=self.D.to(dtype)).to(x.dtype)
        if act == "id":
            y = self.act(self.drop_inner(y))
        return self.drop(y)

    def init_state(self, batch_size: int, device: torch.device | str) -> dict[str, torch.Tensor]:
        """No inputs yet, and the causal kernel over the l_max positions the layer was built for."""
        if self.bidirectional:
            raise ConfigError("step() needs a causal layer; set model.bidirectional=false")
        with torch.no_grad():
            k = self.kernel(self.l_max)[0].float()  # [H, l_max]
        return {"u": torch.zeros(batch_size, self.d_model, 0, device=device), "k": k}

    def step(self, x_t: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x_t [B, H] -> y_t [B, H]: the causal kernel against the inputs so far, plus D u."""
        u_t = x_t.float()
        hist = torch.cat([state["u"], u_t[..., None]], dim=-1)  # [B, H, t+1]
        t = hist.shape[-1]
        k = state["k"]
        if t > k.shape[-1]:
            raise ConfigError(f"step beyond the kernel length {k.shape[-1]}; build with a larger model.l_max")
        y = (hist.flip(-1) * k[None, :, :t]).sum(-1) + self.D.float()[0] * u_t
        return self.drop(self.act(self.drop_inner(y.to(x_t.dtype)))), {"u": hist, "k": k}


def stacked(tensors: list[torch.Tensor]) -> torch.Tensor:
    """torch.stack, or a view for a single tensor (no copy)."""
    return tensors[0][None] if len(tensors) == 1 else torch.stack(tensors)


def share_taps(layers: list[Any], L: int) -> None:
    """Give each ConvLayer among `layers` its kernel taps for length L in `given_taps`, computed in one
    `stacked_taps` call per group of layers with equal `batch_key`s; the caller clears them after its forward.

    Why: a layer's kernel comes from a few dozen small operations on [H, N]-sized tensors, each a kernel launch on
    a GPU; a model of 8 layers launching them per layer is bound by the launches, not by the work."""
    groups: dict[tuple[Any, ...], list[ConvLayer]] = {}
    for layer in layers:
        if isinstance(layer, ConvLayer):
            groups.setdefault(layer.batch_key(), []).append(layer)
    for group in groups.values():
        if len(group) > 1:
            with torch.autocast(device_type=group[0].D.device.type, enabled=False):
                for layer, taps in zip(group, type(group[0]).stacked_taps(group, L).unbind(0), strict=True):
                    layer.given_taps = taps
