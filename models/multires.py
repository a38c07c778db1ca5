"""MultiresNet: causal multiresolution (wavelet-tree) convolutions.

Paper: Shi, Wang & Fox, "Sequence Modeling with Multiresolution Convolutional Memory", ICML 2023.
Published code: thjashin/multires-conv, `layers/multireslayer.py` (MultiresLayer), `classification.py`
(MultiresNet) and `autoregressive.py` (MultiresAR).

The sequence layer, MultiresConv, runs an undecimated (a-trous) wavelet cascade per channel: one pair of
filters h0 (low-pass) and h1 (high-pass) of K taps, shared across all J levels, applied causally with the
dilation doubling at every level:

    lo_0 = x,   hi_j = h1 *_{2^(j-1)} lo_{j-1},   lo_j = h0 *_{2^(j-1)} lo_{j-1}     (j = 1..J)

with (h *_d s)(t) = sum_k h[k] s(t - (K-1-k) d) and s(t) = 0 for t < 0. A "tree selection" reads a memory
out of these coefficients and mixes it with per-channel weights w, plus a skip weight on x:

    fading:  y = w[:,0] lo_J + sum_j w[:, J+1-j] hi_j + w[:, -1] x      (the newest value of every level)
    uniform: the coarse-to-fine levels contribute several past taps each, spaced by the level's stride in a
             decimated tree, until `memory_size` weights are used (see `uniform_taps`).

Output: channel dropout(GELU(y)). Parameter names and shapes follow the published layer (h0, h1: [D, 1, K];
w: [D, m+1]) so its weights load here and ours load there (`MultiresNet.load_published_state_dict`).

x -> y is linear and time-invariant per channel, so y is a causal depthwise convolution of x with the layer's
impulse response (length RF = (K-1)(2^J-1)+1). Two implementations:
  * impl="direct": the level-by-level cascade on the data (the published algorithm, 2J dilated convolutions over
    the batch, J full-length intermediates kept for the backward pass);
  * impl="fft" (default): build the impulse response, cropped to L, coarse to fine on decimated supports
    (`tree_kernels`: elementwise ops, cost independent of the batch, a hand-written backward), then one real FFT
    convolution in fp32 with a hand-written backward (`models.longconv.fft_conv`). MultiresNet builds the
    kernels of all its layers in one pass down the tree before the first block runs, so a training step
    dispatches a few operators per tree level, not per level and layer: a step was launch-bound on the GPU.
For generation, `step` advances the cascade one position at a time with a ring buffer of (K-1)*2^(j-1) past
inputs per level: O(J*K) work per step.

The classifier (MultiresNet) is post-norm: norm(x + dropout(GLU(Linear_{d->2d}(layer(x))))), masked mean pooling
and a linear decoder; the autoregressive variant (spec.output == "sequence") adds a Linear_{d->d} after the
GLU's channel dropout, as the published AR model does, and decodes every position.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from harness.config import ModelConfig, one_of, positive
from harness.errors import ConfigError
from harness.task import TaskSpec
from models import MODELS
from models._validate import at_least, probability
from models.backbone import Backbone, Encoder, ResidualBlock, masked_mean
from models.longconv import ChannelDropout, fft_conv, next_fast_len


@dataclass
class MultiresConfig(ModelConfig):
    """MultiresNet: causal multiresolution (wavelet-tree) convolutions, post-norm GLU blocks."""

    name: str = "multires"
    compiles_any_length: ClassVar[bool] = False  # its FFT and tree sizes are Python ints of the length
    d_model: int = 128
    n_layers: int = 4
    kernel_size: int = 2  # K, taps of h0/h1 (published default 2); must equal the wavelet's length with wavelet_init
    depth: int | None = None  # J levels; None: the smallest J whose receptive field covers spec.seq_len
    tree_select: str = "fading"  # fading | uniform
    memory_size: int | None = None  # M weights of the uniform selection (ignored by fading)
    wavelet_init: str | None = None  # a PyWavelets name ('haar', 'db2', ...); None: random init as published
    indep_res_init: bool = False  # skip weight w[:, -1] ~ U(-1, 1) instead of the scaled init
    # Ablation: True (the paper) shares one h0/h1 pair across all levels of a layer; False gives each level
    # its own pair (the "untied" ablation of the maintainer's answer in thjashin/multires-conv issue #1).
    share_filters: bool = True
    dropout: float = 0.1  # channel dropout after the layer's GELU and after the GLU
    norm: str = "layer"  # layer | batch (the ListOps script uses BatchNorm)
    impl: str = "fft"  # fft | direct

    def __post_init__(self) -> None:
        positive("model.d_model", self.d_model, integer=True)
        positive("model.n_layers", self.n_layers, integer=True)
        at_least("model.kernel_size", self.kernel_size, 2)  # the tree needs two taps per filter
        positive("model.depth", self.depth, integer=True, optional=True)
        one_of("model.tree_select", self.tree_select, ("fading", "uniform"))
        if self.tree_select == "uniform":
            at_least("model.memory_size", self.memory_size, 2)  # the uniform selection's weights
        one_of("model.impl", self.impl, ("fft", "direct"))
        one_of("model.norm", self.norm, ("layer", "batch"))
        probability("model.dropout", self.dropout)
        if self.wavelet_init is not None:
            taps = wavelet_filters(self.wavelet_init)[0].numel()
            if taps != self.kernel_size:
                # The published layer pads and sizes the tree with kernel_size and crashes on a mismatch.
                raise ConfigError(f"model.wavelet_init={self.wavelet_init!r} has {taps}-tap filters but "
                                  f"model.kernel_size={self.kernel_size}; set model.kernel_size={taps}")

    def canonical(self, spec: TaskSpec) -> MultiresConfig:
        """The same model with the values that change nothing as null (the run id hashes this, harness.identity):
        memory_size under the fading tree, which ignores it, and a depth equal to the automatic one."""
        auto = self.depth is not None and self.depth == max_depth(spec.seq_len, self.kernel_size)
        return replace(self, memory_size=None if self.tree_select == "fading" else self.memory_size,
                       depth=None if auto else self.depth)


# --------------------------------------------------------------------------------------------------------------
# Geometry of the tree


def receptive_field(depth: int, kernel_size: int) -> int:
    """Length of the impulse response of a J-level cascade of K-tap filters."""
    return (kernel_size - 1) * (2**depth - 1) + 1


def max_depth(seq_len: int, kernel_size: int) -> int:
    """ceil(log2((L-1)/(K-1) + 1)) as published, in integers: the smallest J with receptive field >= L.

    At least 1 (the published float formula gives 0 for L = 1, a layer without a tree).
    """
    assert kernel_size >= 2, "the tree needs two taps per filter"
    depth = 1
    while receptive_field(depth, kernel_size) < seq_len:
        depth += 1
    return depth


def fading_taps(depth: int) -> list[tuple[int, int, int, int]]:
    """(level k, first w column, taps, spacing) of 'fading': the newest value of each detail level.

    Levels are ordered coarse to fine: c_0 = lo_J (column 0), c_k = hi_{J+1-k} (column k).
    """
    return [(k, k, 1, 1) for k in range(1, depth + 1)]


def uniform_taps(depth: int, kernel_size: int, memory_size: int) -> list[tuple[int, int, int, int]]:
    """(level k, first w column, taps, spacing) of 'uniform' selection, as the published code walks it.

    Level c_k gets n_k taps (n_1 = 1, n_{k+1} = 2(n_k - 1) + K) spaced by the stride it would have in a
    decimated tree (2^(J-k+1)), so every level covers about the same span of the past; the walk stops when
    `memory_size` columns of w (column 0 is c_0's) are used, truncating the last level.
    """
    plan = []
    offset, n = 1, 1
    for k in range(1, depth + 1):
        n = min(n, memory_size - offset)
        spacing = 1 if k == 1 else 2 ** (depth - k + 1)
        plan.append((k, offset, n, spacing))
        offset += n
        if offset >= memory_size:
            break
        n = 2 * (n - 1) + kernel_size
    return plan


# --------------------------------------------------------------------------------------------------------------
# Two primitives: sum_i taps[:, i] * s(t - i * spacing) on the data (conv1d) and into a buffer (slice adds)


def causal_taps(s: torch.Tensor, taps: torch.Tensor, spacing: int) -> torch.Tensor:
    """out(t) = sum_i taps[:, i] s(t - i*spacing), s(t<0) = 0; s [B, D, L], taps [D, n] -> [B, D, L]."""
    n = taps.shape[-1]
    padded = F.pad(s, ((n - 1) * spacing, 0))
    # conv1d is a cross-correlation: the kernel's last entry meets the newest sample.
    return F.conv1d(padded, taps.flip(-1)[:, None, :].to(s.dtype), dilation=spacing, groups=s.shape[1])


def polyphase(f: torch.Tensor) -> torch.Tensor:
    """f [..., K] -> [..., P, 2], entry [r, phase] = f[2r + phase], P = ceil(K/2) (odd K gets a zero tap)."""
    if f.shape[-1] % 2:
        f = F.pad(f, (0, 1))
    return f.unflatten(-1, (f.shape[-1] // 2, 2))


def upsample_filter(a: torch.Tensor, fr: torch.Tensor) -> torch.Tensor:
    """(upsample-by-2(a) conv f) in polyphase form: a [..., N], fr = polyphase(f) [..., P, 2] -> [..., N + P - 1, 2].

    Flattened, entry m = sum_i f[i] a[(m - i) / 2] over even m - i; entry [q, phase] = sum_r fr[r, phase] a[q - r].
    K = 2 is one broadcast multiply; larger K adds P - 1 shifted products.
    """
    p = fr.shape[-2]
    if p == 1:
        return a[..., None] * fr[..., 0, None, :]
    n = a.shape[-1]
    padded = F.pad(a, (p - 1, p - 1))  # padded[i] = a[i - (p - 1)]
    out = padded[..., p - 1:2 * p - 2 + n, None] * fr[..., 0, None, :]
    for r in range(1, p):
        out = torch.addcmul(out, padded[..., p - 1 - r:2 * p - 2 - r + n, None], fr[..., r, None, :])
    return out


class TreeKernel(torch.autograd.Function):
    """The impulse responses of C channels, composed coarse to fine by Horner's rule on decimated supports.

        a_{J+1} = top,   a_j = crop(upsample-by-2(a_{j+1}) conv f_j + sel_j),   kernel = a_1 (+ skip at lag 0)

    a_j is level j's partial response decimated by 2^(j-1), cropped to keeps[j-1] entries; f_j the flipped
    low-pass filter h0 (fr: [Jf, C, P, 2] polyphase, Jf = 1 when the levels share it); sel_j the level's selection
    filter, also decimated and polyphase (sel: [J, C, S, 2]); top [C, 1] the weight of lo_J; skip [C].
    A level costs about a dozen operators, forward and backward together, whatever C, so the layers of a network
    share them (`tree_kernels`). Autograd through the same loop dispatched about 50 a level and layer (a zero-fill
    and a copy for every crop, pad and in-place add): most of a training step's operators.

    Backward of one level, with g = dLoss/da_j zero-extended to [C, M, 2] (M = N + P - 1, N = len(a_{j+1})) and
    windows[q] = g.flatten()[2q : 2q + 2P] (q < N):
        dLoss/da_{j+1}[q] = sum_k fr_flat[k] windows[q, k],   dLoss/dfr_flat[k] = sum_q a_{j+1}[q] windows[q, k],
    two batched matrix products over the same windows; dLoss/dsel_j is the head of g.
    """

    @staticmethod
    def forward(ctx: Any, top: torch.Tensor, fr: torch.Tensor, sel: torch.Tensor,  # type: ignore[override]
                skip: torch.Tensor, keeps: tuple[int, ...]) -> torch.Tensor:
        a, inputs = top, []
        for level in range(len(keeps), 0, -1):
            inputs.append(a)
            acc = upsample_filter(a, fr[min(level, len(fr)) - 1])  # [C, M, 2], a new tensor
            head = min(sel.shape[2], acc.shape[1])
            s = sel[level - 1, :, :head]
            if level == 1:  # the skip weight rides on lag 0 of the finest level
                s = s.clone()
                s[:, 0, 0] += skip
            acc[:, :head] += s
            a = acc.flatten(1)[:, :keeps[level - 1]]
        ctx.save_for_backward(fr, *inputs[::-1])  # inputs of levels 1..J
        ctx.sel_shape = sel.shape
        return a

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        fr, *inputs = ctx.saved_tensors
        shared, p = len(fr) == 1, fr.shape[2]
        grad_sel = g.new_zeros(ctx.sel_shape)
        grad_fr = []
        for level, a in enumerate(inputs, start=1):
            n = a.shape[1]
            m = n + p - 1
            g = F.pad(g, (0, 2 * m - g.shape[1])) if g.shape[1] < 2 * m else g.contiguous()
            head = min(grad_sel.shape[2], m)
            grad_sel[level - 1, :, :head] = g.view(-1, m, 2)[:, :head]
            windows = g.unfold(1, 2 * p, 2).contiguous()  # [C, N, 2P]
            grad_fr.append(torch.bmm(a[:, None, :], windows))  # [C, 1, 2P]
            f = fr[0 if shared else level - 1].flatten(1)  # [C, 2P]
            g = torch.bmm(windows, f[:, :, None])[..., 0]  # [C, N]
        grad_skip = grad_sel[0, :, 0, 0].clone()
        stacked = torch.cat(grad_fr, dim=1).unflatten(-1, (p, 2))  # [C, J, P, 2], level 1 first
        grad_fr_out = stacked.sum(1, keepdim=True) if shared else stacked
        return g, grad_fr_out.transpose(0, 1), grad_sel, grad_skip, None


# --------------------------------------------------------------------------------------------------------------
# The layer


class MultiresConv(nn.Module):
    """One MultiresConv layer on [B, L, D]: tree of causal dilated depthwise filters, GELU, channel dropout."""

    def __init__(self, d_model: int, *, kernel_size: int, depth: int, tree_select: str = "fading",
                 memory_size: int | None = None, wavelet_init: str | None = None, indep_res_init: bool = False,
                 share_filters: bool = True, dropout: float = 0.0, impl: str = "fft"):
        super().__init__()
        self.d_model, self.kernel_size, self.depth = d_model, kernel_size, depth
        self.tree_select, self.impl, self.share_filters = tree_select, impl, share_filters
        if tree_select == "fading":
            self.m = depth + 1
            self.plan = fading_taps(depth)
        else:
            assert memory_size is not None
            self.m = memory_size
            self.plan = uniform_taps(depth, kernel_size, memory_size)
        n_filters = 1 if share_filters else depth
        with torch.no_grad():
            if wavelet_init is not None:
                h0, h1 = wavelet_filters(wavelet_init)
                # [D, n_filters, K]: the same wavelet in every channel (and every level when untied).
                self.h0 = nn.Parameter(h0.repeat(d_model, n_filters, 1))
                self.h1 = nn.Parameter(h1.repeat(d_model, n_filters, 1))
            else:
                bound = (2.0 / (2 * kernel_size)) ** 0.5  # published: U(-1,1) * sqrt(2 / 2K)
                self.h0 = nn.Parameter(torch.empty(d_model, n_filters, kernel_size).uniform_(-bound, bound))
                self.h1 = nn.Parameter(torch.empty(d_model, n_filters, kernel_size).uniform_(-bound, bound))
            w = torch.empty(d_model, self.m + 1).uniform_(-1.0, 1.0) * (2.0 / (2 * self.m + 2)) ** 0.5
            if indep_res_init:
                # "initialize w2 independent of z size in <w,[z,x]>": the skip weight is not scaled down.
                w[:, -1] = torch.empty(d_model).uniform_(-1.0, 1.0)
            self.w = nn.Parameter(w)
        self.dropout = ChannelDropout(dropout)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, kernel_size={self.kernel_size}, depth={self.depth}, "
                f"tree_select={self.tree_select}, m={self.m}, share_filters={self.share_filters}, impl={self.impl}")

    @property
    def receptive_field(self) -> int:
        return receptive_field(self.depth, self.kernel_size)

    def filters(self, level: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(h0, h1) of level `level` (1-based), each [D, K]."""
        i = 0 if self.share_filters else level - 1
        return self.h0[:, i], self.h1[:, i]

    # ---- parallel forward

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None,
                kernel: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, L, D] -> [B, L, D]. `lengths` is not needed: the layer is causal, right padding never leaks.
        `kernel`: this layer's impulse response as `tree_kernels` made it for x (impl=fft), else composed here."""
        return self.dropout(F.gelu(self.linear(x, kernel)))

    def linear(self, x: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
        """The pre-activation y (the LTI part of the layer), [B, L, D] -> [B, L, D]."""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"MultiresConv expects [batch, length, {self.d_model}], got {tuple(x.shape)}")
        if self.impl == "direct":
            return self._direct(x.transpose(1, 2)).transpose(1, 2)
        return self._fft(x, kernel)

    def cascade(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The cascade on data [B, D, L]: [lo_J, hi_J, ..., hi_1] (coarse to fine), each [B, D, L]."""
        lo, highs = x, []
        for level in range(1, self.depth + 1):
            h0, h1 = self.filters(level)
            dilation = 2 ** (level - 1)
            highs.append(causal_taps(lo, h1.flip(-1), dilation))
            lo = causal_taps(lo, h0.flip(-1), dilation)
        return [lo] + highs[::-1]

    def _direct(self, x: torch.Tensor) -> torch.Tensor:
        coeffs = self.cascade(x)
        w = self.w.to(x.dtype)
        y = w[:, -1:] * x + w[:, :1] * coeffs[0]
        for k, col, n, spacing in self.plan:
            if n == 1:
                y = y + w[:, col:col + 1] * coeffs[k]
            else:
                y = y + causal_taps(coeffs[k], w[:, col:col + n], spacing)
        return y

    @property
    def geometry(self) -> tuple[Any, ...]:
        """What the shape of the tree depends on: layers of one geometry compose their kernels together."""
        return self.depth, self.kernel_size, self.share_filters, tuple(self.plan)

    def fft_size(self, length: int) -> int:
        """FFT size of a linear (not circular) convolution of `length` inputs with the kernel cropped to them."""
        return next_fast_len(length + min(length, self.receptive_field) - 1)

    def level_lengths(self, length: int) -> tuple[int, ...]:
        """Entries of each level's decimated partial response (level 1 first): its support (grown by K - 2 and
        doubled a level), cropped to the positions j * 2^(level-1) < min(length, RF)."""
        size = min(length, self.receptive_field)
        lengths, support = [], 1
        for level in range(self.depth, 0, -1):
            support = 2 * support + self.kernel_size - 2
            lengths.append(min(support, -(-size // 2 ** (level - 1))))
        return tuple(lengths[::-1])

    def impulse_response(self, length: int, dtype: torch.dtype = torch.float32, scale: float = 1.0) -> torch.Tensor:
        """The pre-activation impulse response times `scale`, cropped to min(length, RF): [D, min(length, RF)]."""
        return tree_kernels([self], length, dtype, scale)

    def _fft(self, x: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
        # Cost model (GPU, fp32; U = bytes of x = B*L*D*4; n = 2L at the auto depth, so a spectrum is ~2U):
        #   kernel: `TreeKernel`, ~3 bytes per kernel byte forward (each level written once, read once), a few
        #           launches a level for all layers of a network together. Kernel size D * min(L, RF) = U / B:
        #           negligible for B >= 16, as large as x at B = 1.
        #   data:   forward  pad 3U, rfft 4U, X*K 4U, irfft 8U (torch clones its input), crop+transpose 2U;
        #           backward pad 3U, rfft 4U, cross-spectrum sum_b G conj(X) ~8U, G*conj(K) 4U, irfft 8U,
        #           crop+transpose 2U. ~50U in all, with GELU/dropout, against ~100U for autograd through
        #           torch.fft (its rfft backward is a full-length complex FFT of a zero-filled 4U buffer, its
        #           irfft/rfft on dim 1 copy-transpose the data, and 1/n is an extra pass; here 1/n is folded
        #           into w and the transforms run on [B, D, n] buffers, or cuFFT-strided when B = 1).
        #   Saved for backward: X (2U) and K (2U/B) spectra; peak well under half of the direct cascade's.
        #   On CUDA the examples go two by two through C2C transforms (`fft_conv`'s paired path): no clone for
        #   the inverse transforms and no conjugate copy, ~43U in all (one H100: 1.29 against 1.47 ms a layer).
        length = x.shape[1]
        n = self.fft_size(length)
        # fp32 even under bf16 autocast (bf16 FFTs are inexact and limited to powers of two); fp64 stays fp64.
        dtype = torch.float64 if torch.float64 in (x.dtype, self.w.dtype) else torch.float32
        with torch.autocast(device_type=x.device.type, enabled=False):
            if kernel is None:
                kernel = self.impulse_response(length, dtype, scale=1.0 / n)  # 1/n of the inverse FFT folded in
            # x as it comes: fft_conv's first pass copies it into its fp32 buffer, and its backward writes the
            # gradient in x's dtype, so a bf16 x costs no pass of casting either way.
            y = fft_conv(x, kernel, n=n, scaled=True)
        return y.to(x.dtype)

    # ---- generation: one step at a time

    def init_state(self, batch_size: int, device: torch.device | str) -> dict[str, Any]:
        """Ring buffers: (K-1)*2^(j-1) past inputs of level j, and (n-1)*spacing past values of each level
        whose uniform selection reads n > 1 taps. All zero: the sequence starts at t = 0."""
        zeros = lambda size: self.w.new_zeros(batch_size, self.d_model, size, device=device)  # noqa: E731
        cascade = [zeros((self.kernel_size - 1) * 2 ** (level - 1)) for level in range(1, self.depth + 1)]
        selection = [zeros((n - 1) * spacing) if n > 1 else None for _, _, n, spacing in self.plan]
        return {"t": 0, "cascade": cascade, "selection": selection}

    @torch.no_grad()
    def step(self, x_t: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        """x_t [B, D] at position t -> (layer output at t [B, D], state at t + 1). For inference (no grad):
        the state's buffers are updated in place."""
        t = state["t"]
        x_t = x_t.to(self.w.dtype)
        lo, highs = x_t, []
        for level, buf in enumerate(state["cascade"], start=1):
            h0, h1 = self.filters(level)
            dilation = 2 ** (level - 1)
            # lo_{level-1} at t - (K-1-k)*dilation for k = 0..K-1 (the last one is the current input).
            past = [read_ring(buf, t, (self.kernel_size - 1 - k) * dilation) for k in range(self.kernel_size - 1)]
            window = torch.stack(past + [lo], dim=-1)  # [B, D, K]
            write_ring(buf, t, lo)
            highs.append((window * h1).sum(-1))
            lo = (window * h0).sum(-1)
        coeffs = [lo] + highs[::-1]
        w = self.w
        y = w[:, -1] * x_t + w[:, 0] * coeffs[0]
        for (k, col, n, spacing), buf in zip(self.plan, state["selection"]):
            y = y + w[:, col] * coeffs[k]
            for i in range(1, n):
                y = y + w[:, col + i] * read_ring(buf, t, i * spacing)
            if buf is not None:
                write_ring(buf, t, coeffs[k])
        state["t"] = t + 1
        return self.dropout(F.gelu(y)), state


def read_ring(buf: torch.Tensor, t: int, lag: int) -> torch.Tensor:
    """The value written at time t - lag (1 <= lag <= buffer size); zero before time 0."""
    return buf[..., (t - lag) % buf.shape[-1]]


def write_ring(buf: torch.Tensor, t: int, value: torch.Tensor) -> None:
    """Store the value of time t, over the one of time t - size (no longer needed)."""
    buf[..., t % buf.shape[-1]] = value


def tree_kernels(layers: Sequence[MultiresConv], length: int, dtype: torch.dtype = torch.float32,
                 scale: float = 1.0) -> torch.Tensor:
    """The pre-activation impulse responses of layers of one geometry, times `scale`, cropped to min(length, RF):
    [len(layers) * D, min(length, RF)], layer i in rows i*D to (i+1)*D - 1.

    Composed coarse to fine (Horner's rule on the tree): T_{J+1} = w_0 delta and
        T_j = T_{j+1} conv g(h0_j, 2^(j-1)) + sel_j conv g(h1_j, 2^(j-1)),   kernel = T_1 + w_skip delta,
    where g(h, d) is the dilated filter (tap h[k] at lag (K-1-k) d) and sel_j the selection weights of hi_j
    (fading: one tap; uniform: its taps at spacing 2^j). T_j is nonzero only at multiples of 2^(j-1), so it is
    stored decimated: a level is "upsample by 2, filter with flip(h0)" (`TreeKernel`). The layers' channels are
    stacked, so a network's kernels take the launches of one layer's: a level's work is elementwise and tiny.
    """
    first = layers[0]
    assert all(layer.geometry == first.geometry for layer in layers), "one tree shape for all layers"
    join = lambda tensors: tensors[0] if len(tensors) == 1 else torch.cat(tensors)  # noqa: E731
    w = join([layer.w for layer in layers]).to(dtype) * scale  # the kernel is linear in w: scaling w scales it
    # [Jf, C, P, 2]: flipped (tap h[k] acts at lag K-1-k), level-major, polyphase.
    h0, h1 = (polyphase(join([getattr(layer, name) for layer in layers]).to(dtype).flip(-1).transpose(0, 1))
              for name in ("h0", "h1"))
    sel = selection_filters(w, h1, first.plan, first.depth, fading=first.tree_select == "fading")
    return TreeKernel.apply(w[:, :1], h0, sel, w[:, -1], first.level_lengths(length))


def selection_filters(w: torch.Tensor, h1: torch.Tensor, plan: Sequence[tuple[int, int, int, int]], depth: int,
                      fading: bool) -> torch.Tensor:
    """sel_j conv g(h1_j) of every level, decimated by 2^(j-1), polyphase [J, C, S, 2] (small: S ~ taps).

    w [C, m+1] (the skip weight, last, is left out here); h1 = polyphase(flipped h1) [Jf, C, P, 2]. Level j's
    detail hi_j is column J + 1 - j of the coarse-to-fine order."""
    if fading:  # one tap a level: sel_j = w_{J+1-j} flip(h1)
        return w[:, 1:depth + 1].flip(1).t()[:, :, None, None] * h1
    n_max = max(n for _, _, n, _ in plan)
    columns = [w.new_zeros(w.shape[0], n_max) for _ in range(depth)]
    for k, col, n, _ in plan:
        columns[depth - k] = F.pad(w[:, col:col + n], (0, n_max - n))
    return upsample_filter(torch.stack(columns), h1)  # taps [J, C, n_max], spaced 2^j: 2 apart decimated


def wavelet_filters(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(h0, h1) from a PyWavelets wavelet: its decomposition filters reversed, so that conv1d's
    cross-correlation computes the true convolution with dec_lo / dec_hi."""
    import pywt

    try:
        wavelet = pywt.Wavelet(name)
    except ValueError as err:
        raise ConfigError(f"model.wavelet_init={name!r} is not a PyWavelets discrete wavelet "
                          f"(e.g. haar, db2, sym4; see pywt.wavelist(kind='discrete')): {err}") from None
    return (torch.tensor(wavelet.dec_lo[::-1], dtype=torch.float32),
            torch.tensor(wavelet.dec_hi[::-1], dtype=torch.float32))


# --------------------------------------------------------------------------------------------------------------
# The network


class MultiresBlock(ResidualBlock):
    """The post-norm residual block, norm(x + dropout(mixing(layer(x)))), handed its layer's kernel."""

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None,
                kernel: torch.Tensor | None = None) -> torch.Tensor:
        return self.norm(x + self.dropout(self.channel_mixer(self.mixer(x, lengths, kernel=kernel))))


class MultiresNet(Backbone):
    """The backbone, its layers' kernels composed together (`layer_kernels`), plus conversion to and from the state
    dicts of the published MultiresNet / MultiresAR (Conv1d 1x1 layers, [B, D, L] layout)."""

    blocks: nn.ModuleList

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Backbone.forward, with every block's kernel made before the first block runs."""
        h = self.embed_dropout(self.encoder(x))
        for block, kernel in zip(self.blocks, self.layer_kernels(x.shape[1]), strict=True):
            h = block(h, lengths, kernel=kernel)
        h = self.final_norm(h)
        if self.spec.output == "sequence":
            return self.decoder(h)
        return self.decoder(masked_mean(h, lengths))

    def layer_kernels(self, length: int) -> list[torch.Tensor | None]:
        """Each block's kernel for inputs of `length` steps, composed in one pass down the tree for all layers
        (one layer's launches, not n_layers times them); None for impl=direct, which needs none."""
        layers = [block.mixer for block in self.blocks]
        if any(layer.impl != "fft" for layer in layers):
            return [None] * len(layers)
        w = layers[0].w
        dtype = torch.float64 if w.dtype == torch.float64 else torch.float32  # as MultiresConv._fft chooses
        with torch.autocast(device_type=w.device.type, enabled=False):
            bank = tree_kernels(layers, length, dtype, scale=1.0 / layers[0].fft_size(length))
        return list(bank.unflatten(0, (len(layers), -1)).unbind(0))

    def _published_item(self, key: str, value: torch.Tensor) -> tuple[str, torch.Tensor]:
        """Our (name, tensor) -> the published one. 1x1 convolutions carry a trailing kernel axis."""
        conv = lambda v: v[:, :, None]  # noqa: E731  Linear [out, in] -> Conv1d [out, in, 1]
        if key.startswith("encoder.proj."):
            linear = isinstance(self.encoder.proj, nn.Linear) and key.endswith("weight")
            return "encoder." + key.removeprefix("encoder.proj."), conv(value) if linear else value
        if m := re.fullmatch(r"blocks\.(\d+)\.mixer\.(\w+)", key):
            return f"seq_layers.{m[1]}.{m[2]}", value
        if m := re.fullmatch(r"blocks\.(\d+)\.channel_mixer\.(\d+)\.(\w+)", key):
            return f"mixing_layers.{m[1]}.{m[2]}.{m[3]}", conv(value) if m[3] == "weight" else value
        if m := re.fullmatch(r"blocks\.(\d+)\.norm\.norm\.(\w+)", key):
            return f"norms.{m[1]}.{m[2]}", value
        if key.startswith("decoder.") and self.spec.output == "sequence":  # MultiresAR: Conv1d decoder
            return key, conv(value) if key.endswith("weight") else value
        if key.startswith("decoder."):  # MultiresNet: Linear output_mapping
            return "output_mapping." + key.removeprefix("decoder."), value
        raise KeyError(f"no published counterpart for {key!r}")

    def published_state_dict(self) -> dict[str, torch.Tensor]:
        """This model's weights under the published names and shapes (for the published code to load)."""
        return dict(self._published_item(k, v) for k, v in self.state_dict().items())

    def load_published_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True) -> Any:
        """Load weights saved by the published code (a DDP 'module.' prefix is stripped)."""
        ours = self.state_dict()
        names = {self._published_item(k, v)[0]: k for k, v in ours.items()}  # published name -> ours
        converted = {}
        for key, value in state_dict.items():
            key = key.removeprefix("module.")
            if key not in names:
                if strict:
                    raise ConfigError(f"published weight {key!r} has no counterpart in this model")
                continue
            target = names[key]
            if value.numel() != ours[target].numel():
                raise ConfigError(f"published weight {key!r} has shape {tuple(value.shape)}, this model's "
                                  f"{target!r} has {tuple(ours[target].shape)}: build it with the same settings")
            converted[target] = value.reshape(ours[target].shape)
        return self.load_state_dict(converted, strict=strict)


@MODELS.register("multires", MultiresConfig)
def build(cfg: MultiresConfig, spec: TaskSpec) -> nn.Module:
    """MultiresNet: causal multiresolution (wavelet-tree) convolutions, post-norm GLU blocks."""
    depth = cfg.depth if cfg.depth is not None else max_depth(spec.seq_len, cfg.kernel_size)
    d = cfg.d_model
    autoregressive = spec.output == "sequence"
    blocks = []
    for _ in range(cfg.n_layers):
        mixer = MultiresConv(d, kernel_size=cfg.kernel_size, depth=depth, tree_select=cfg.tree_select,
                             memory_size=cfg.memory_size, wavelet_init=cfg.wavelet_init,
                             indep_res_init=cfg.indep_res_init, share_filters=cfg.share_filters, dropout=cfg.dropout,
                             impl=cfg.impl)
        # Linear on [B, L, D] == the published 1x1 Conv1d on [B, D, L] (same parameters and default init).
        if autoregressive:
            # Published AR mixing: Conv1d(d, 2d) -> GLU -> Dropout1d -> Conv1d(d, d); no dropout after it.
            channel_mixer = nn.Sequential(nn.Linear(d, 2 * d), nn.GLU(dim=-1), ChannelDropout(cfg.dropout),
                                          nn.Linear(d, d))
            dropout: nn.Module = nn.Identity()
        else:
            channel_mixer = nn.Sequential(nn.Linear(d, 2 * d), nn.GLU(dim=-1))
            dropout = ChannelDropout(cfg.dropout)
        blocks.append(MultiresBlock(mixer, d, norm=cfg.norm, prenorm=False, channel_mixer=channel_mixer,
                                    dropout_module=dropout))
    # Embedding without padding_idx, as published: the pad token's embedding is learned.
    return MultiresNet(spec, d, blocks, final_norm="none", encoder=Encoder(spec, d))
