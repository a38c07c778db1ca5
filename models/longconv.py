"""Long convolutions through the FFT, shared by S4, S4D, SGConv and MultiresNet.

- `fft_conv`: act(conv(mask * x, kernel)) on [B, L, H] with one autograd Function (`FFTConv`) whose backward is
  written out. Two kernel layouts: the circular [H, 2L] kernel of the S4 codebase (`circular_kernel`: a causal
  part, an optional anti-causal part and the skip term D in one spectrum), or a causal kernel of Lk taps with
  an FFT size n >= L + Lk - 1 (MultiresNet, its 1/n folded into the kernel).
- `ConvLayer`: the sequence layer of S4, S4D and SGConv, "kernel (+ D u) -> dropout -> activation -> dropout",
  as the published FFTConv module (state-spaces/s4 `models/s4/s4.py`); subclasses only say how the kernel is made.
- `ChannelDropout`: dropout of whole channels, one mask per (example, channel) for every position.
- `next_fast_len`: FFT sizes cuFFT and pocketfft handle fastest.

Kernels and FFTs run in fp32 even under bf16 autocast: cuFFT half needs power-of-two sizes, and the kernels'
dynamic range does not fit bf16.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from harness.errors import ConfigError
from models.backbone import length_mask

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


class FFTConv(torch.autograd.Function):
    """y = act(circular_conv_n(mask * x, kernel)[:L]), x [B, L, H] -> [B, L, H], with a hand-written backward.

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
    rfft backward alone 16A through a two-sided complex buffer). Left on the table: cuFFT C2R overwrites its
    input, so torch clones it (4A per irfft); pairing two real signals in one C2C transform would avoid that.
    The gradients are correlations: grad_x = irfft(G conj(K)), grad_kernel = irfft(sum_b G conj(U)).
    Saved for backward: U = rfft(u) (2A) and, for gelu/silu, the pre-activation (a view of a 2A buffer).
    The compute dtype is the kernel's (fp32 in the layers; fp64 in the gradient checks). `scaled`: the 1/n of
    the inverse FFT is already in the kernel (norm="forward"), which saves a pass over the output.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, kernel: torch.Tensor, mask: torch.Tensor | None,  # type: ignore[override]
                n: int, act: str, scaled: bool) -> torch.Tensor:
        B, L, H = x.shape
        norm = "forward" if scaled else "backward"
        u_f = _padded_spectrum(x, n, kernel.dtype, mask)  # [B, H, n/2+1]
        k_f = torch.fft.rfft(kernel, n=n)  # [H, n/2+1]
        z = torch.fft.irfft(u_f * k_f, n=n, norm=norm)[..., :L]  # [B, H, L] pre-activation, a view
        out = x.new_empty(B, L, H, dtype=kernel.dtype)
        if act in _ACTS:
            _ACTS[act][0](z.transpose(1, 2), out=out)
        else:
            out.copy_(z.transpose(1, 2))
        ctx.act, ctx.norm, ctx.n, ctx.x_dtype, ctx.kernel_len = act, norm, n, x.dtype, kernel.shape[-1]
        ctx.save_for_backward(u_f, k_f, mask, z if act in _ACTS else None)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        u_f, k_f, mask, z = ctx.saved_tensors
        B, L, H = g.shape
        n, norm = ctx.n, ctx.norm
        g_f = _padded_spectrum(g, n, u_f.real.dtype, act_backward=(_ACTS[ctx.act][1], z) if ctx.act in _ACTS else None)
        grad_x = grad_kernel = None
        if ctx.needs_input_grad[1]:
            # dLoss/dkernel[m] = sum_{b,t} g[t] u[t-m]: a correlation, spectrum sum_b G conj(U).
            cross = g_f[0] * u_f[0].conj() if B == 1 else (g_f * u_f.conj()).sum(0)
            grad_kernel = torch.fft.irfft(cross, n=n, norm=norm)[:, :ctx.kernel_len]
        if ctx.needs_input_grad[0]:
            # dLoss/du[s] = sum_t g[t] kernel[t-s]: correlation with the kernel, spectrum G conj(K).
            gu = torch.fft.irfft(g_f.mul_(k_f.conj_physical()), n=n, norm=norm)[..., :L]
            grad_x = g.new_empty(B, L, H, dtype=ctx.x_dtype)
            if mask is None:
                grad_x.transpose(1, 2).copy_(gu)
            else:
                torch.mul(gu, mask[:, None, :], out=grad_x.transpose(1, 2))
        return grad_x, grad_kernel, None, None, None, None


def fft_conv(x: torch.Tensor, kernel: torch.Tensor, mask: torch.Tensor | None = None, act: str = "id", *,
             n: int | None = None, scaled: bool = False) -> torch.Tensor:
    """act(convolution of mask * x [B, L, H] with kernel [H, Lk]) -> [B, L, H] in the kernel's dtype.

    n None: kernel is the circular [H, 2L] kernel of `circular_kernel` and the FFT size is 2L (a power of two for
    power-of-two L, which cuFFT likes best). n given: kernel is causal (lag s at kernel[:, s]) and n >= L + Lk - 1
    makes the convolution linear; `scaled` says the kernel already holds the inverse FFT's 1/n.
    mask [B, L] (or None) multiplies x first; act is gelu, silu or id, applied in the same pass as the crop.
    """
    if act not in _ACTS and act != "id":
        raise ConfigError(f"fft_conv act must be one of gelu, silu, id, got {act!r}")
    B, L, H = x.shape
    if n is None:
        n = 2 * L
        if kernel.shape != (H, n):
            raise ConfigError(f"kernel shape {tuple(kernel.shape)} does not fit input {tuple(x.shape)}: need [H, 2L]")
    elif kernel.shape[0] != H or n < L + kernel.shape[-1] - 1:
        raise ConfigError(f"kernel shape {tuple(kernel.shape)} and FFT size {n} do not fit input {tuple(x.shape)}: "
                          f"need [H, Lk] with n >= L + Lk - 1")
    return FFTConv.apply(x, kernel, None if mask is None else mask.to(kernel.dtype), n, act, scaled)


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

    Subclasses provide `kernel(L) -> [C, H, L]` (C = 2 when bidirectional) and the parameter `D` [1, H].
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

    def kernel(self, L: int) -> torch.Tensor:
        raise NotImplementedError

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
        dtype = torch.promote_types(self.D.dtype, torch.float32)
        with torch.autocast(device_type=x.device.type, enabled=False):
            kk = circular_kernel(self.kernel(x.shape[1]).to(dtype), self.D.to(dtype), self.bidirectional)
            y = fft_conv(x, kk, mask, act).to(x.dtype)
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
