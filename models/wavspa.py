"""WavSpA: attention in a learnable wavelet space.

Paper: Zhuang et al., "WavSpA: Wavelet Space Attention for Boosting Transformers' Long Sequence Learning
Ability", arXiv 2210.01989. Published code (JAX): EvanZhuang/wavspa @ 0610f76, `wavspa/conv_fwt_learn.py`,
`wavspa/wavelet_lifting.py`, `lra_benchmarks/models/wavspa/wavspa_learn.py`, with the ListOps configs
`lra_benchmarks/listops/configs/wavspa-exp*.py`. Where that code is ambiguous or departs from the paper, the
comments say which behaviour is kept ("reference" is the published code).

Each block transforms the sequence with a multi-level wavelet decomposition (learnable filters, one per
feature), runs a separate self-attention on every band, transforms back and crops to the input length.

Parametrisations (`wavelet`):
- `ada`   AdaWavSpA: free filters (wlen, D), every column initialised to Daubechies db{wlen/2} dec_lo.
- `ortho` OrthoWavSpA: filters built from wlen/2 rotation angles per feature (always unit norm and
          orthogonal to their even shifts), angles ~ U[0, 2 pi).
- `lift`  LiftWavSpA as the released configs run it: the fixed CDF-5/3 lifting (split, predict, update),
          no trainable transform parameters.
- `adalift` the learnable lifting of the same code (`liftdec_learn`): predict/update filters (wlen, D)
          ~ N(0, 0.02^2) inside SiLU; which of `lift`/`adalift` produced the README rows is not recorded.

Shapes: activations [B, T, D] (time on axis 1, as the reference); filters [N, D] (N = wlen taps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.config import ModelConfig, one_of, positive
from harness.errors import ConfigError
from harness.task import TaskSpec
from models import MODELS, flash_attention
from models._validate import divides, even, probability
from models.backbone import ResidualBlock, length_mask
from models.transformer import HEADS, MLP, POOLINGS, POSITIONS, PositionalEncoder, SequenceModel, lra_init_


@dataclass
class WavSpAConfig(ModelConfig):
    """WavSpA (wavelet-space attention) encoder; defaults follow the ListOps configs (wavspa-exp0)."""

    name: str = "wavspa"
    d_model: int = 128  # emb_dim
    n_layers: int = 4  # the ListOps configs use 8 (see the presets)
    n_heads: int = 1
    qkv_dim: int = 64
    d_ff: int = 128  # mlp_dim: MLP hidden width and the classifier head's hidden width
    wavelet: str = "ada"  # ada | ortho | lift | adalift
    wlen: int = 16  # filter taps N (even); ada initialises with db{wlen/2}
    levels: int = 1  # decomposition levels; levels + 1 bands, each with its own attention
    attention: str = "softmax"  # softmax (full, fused SDPA) | linear (elu+1 feature map, Katharopoulos et al.)
    # How softmax attention runs on fp32 inputs: sdpa (torch's fused kernels; on a GPU the memory-efficient one,
    # which emulates full fp32 products) | flash_tf32 (models.flash_attention: TF32 products, as JAX computes fp32
    # matmuls on a GPU; compiled once per band length, so with pad_to_seq_len=true once). Where TF32 does not exist
    # (a CPU, a GPU before Ampere) or the inputs are not fp32 (bf16 autocast), SDPA runs, as train.precision=tf32
    # runs fp32 there.
    attention_kernel: str = "sdpa"
    dropout: float = 0.1
    attn_dropout: float = 0.1  # on the attention weights (softmax only)
    positions: str = "sinusoidal"  # sinusoidal | learned | none
    pooling: str = "cls"  # cls (the reference always pools the CLS token) | mean
    head: str = "mlp"  # mlp (LRA classifier head) | linear
    # Reference quirk: `jnp.flip` without an axis also reverses the low-pass filter over features, so
    # feature d pairs the low-pass of feature D-1-d with its own high-pass. True = reference behaviour.
    reverse_channels: bool = True
    # The LRA pipelines pad every batch to the full length (2000 tokens), and WavSpA attends over padding,
    # so outputs depend on the padded length. True pads each batch to the task's seq_len (reference).
    pad_to_seq_len: bool = True

    def __post_init__(self) -> None:
        for key in ("d_model", "n_layers", "n_heads", "qkv_dim", "d_ff", "levels"):
            positive(f"model.{key}", getattr(self, key), integer=True)
        divides("model.n_heads", self.n_heads, "model.qkv_dim", self.qkv_dim)
        one_of("model.wavelet", self.wavelet, ("ada", "ortho", "lift", "adalift"))
        one_of("model.attention", self.attention, ("softmax", "linear"))
        one_of("model.attention_kernel", self.attention_kernel, ("sdpa", "flash_tf32"))
        even("model.wlen", self.wlen)
        if self.wavelet == "ada" and self.wlen > 2 * MAX_DAUBECHIES:
            raise ConfigError(f"model.wlen={self.wlen} is above {2 * MAX_DAUBECHIES} (db1..db{MAX_DAUBECHIES}), "
                              "the Daubechies filters model.wavelet=ada starts from. The reference switches to its "
                              "own `daubcqf` above db20, which is numerically broken from wlen 48 on")
        probability("model.dropout", self.dropout)
        probability("model.attn_dropout", self.attn_dropout)
        one_of("model.positions", self.positions, POSITIONS)
        one_of("model.pooling", self.pooling, POOLINGS)
        one_of("model.head", self.head, HEADS)


MAX_DAUBECHIES = 38  # PyWavelets' db1..db38


# ------------------------------------------------------------------------------------------------------------------
# Filters


def daubechies_lowpass(wlen: int) -> torch.Tensor:
    """db{wlen/2} decomposition low-pass (PyWavelets `filter_bank[0]`), float32 [wlen]."""
    import pywt  # local import: only the `ada` initialisation needs it

    return torch.tensor(pywt.Wavelet(f"db{wlen // 2}").filter_bank[0], dtype=torch.float32)


def ortho_filter(thetas: torch.Tensor) -> torch.Tensor:
    """Orthogonal low-pass filters [2L, D] from rotation angles [L, D] (reference `parametrized_wavelet`).

    Start from e_0 in R^{2L}; for each angle: c <- c R(theta) S with R the block diagonal of L copies of
    [[sin, cos], [cos, -sin]] and S the cyclic shift (c S = roll(c, +1)); finally undo one shift. Every step
    is orthogonal and commutes with even shifts, so the result has unit norm and is orthogonal to its even
    shifts for any angles (the CQF condition), but no vanishing moments are imposed.
    """
    n_angles, d = thetas.shape
    c = thetas.new_zeros(d, 2 * n_angles)
    c[:, 0] = 1.0
    for theta in thetas:
        s, co = torch.sin(theta)[:, None], torch.cos(theta)[:, None]
        even, odd = c[:, 0::2], c[:, 1::2]
        c = torch.stack([even * s + odd * co, even * co - odd * s], dim=-1).reshape(d, 2 * n_angles)
        c = torch.roll(c, 1, dims=1)
    return torch.roll(c, -1, dims=1).T


def analysis_filters(w: torch.Tensor, reverse_channels: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) [N, D] applied by cross-correlation: lo[n, d] = w[N-1-n, D-1-d] (time- and, with the reference
    quirk, feature-reversed), hi[n, d] = (-1)^n w[n, d]. With identical columns this is the usual
    quadrature-mirror pair; the synthesis uses the same two filters (it is their adjoint)."""
    lo = w.flip(0, 1) if reverse_channels else w.flip(0)
    sign = torch.ones(w.shape[0], dtype=w.dtype, device=w.device)
    sign[1::2] = -1
    return lo, w * sign[:, None]


# ------------------------------------------------------------------------------------------------------------------
# Convolutional wavelet transform


def reflect_pad(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """NumPy 'reflect' padding (no edge repeat) of [B, T, D] along time, including NumPy's repeated reflection
    when the pad exceeds T - 1 (`F.pad` refuses that case). The signal is extended as its even periodic
    extension of period 2(T-1)."""
    t = x.shape[1]
    if left == 0 and right == 0:
        return x
    pos = torch.arange(-left, t + right, device=x.device)
    if t == 1:
        idx = torch.zeros_like(pos)
    else:
        period = 2 * (t - 1)
        idx = pos % period
        idx = torch.where(idx >= t, period - idx, idx)
    return x[:, idx]


def _filter_bank(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """[2D, 1, N] conv weight, rows 2d (lo of feature d) and 2d+1 (hi of feature d), for groups = D."""
    n, d = lo.shape
    return torch.stack([lo, hi], dim=1).permute(2, 1, 0).reshape(2 * d, 1, n)


def _analysis(xpad: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Circular cross-correlation at even offsets of a padded signal [B, P, D] (P even) -> (A, Dt) [B, P/2, D]:
    A[k] = sum_n lo[n] xpad[(2k + n) mod P]. The reference computes it by FFT; here the first N-2 samples are
    appended (the circular wrap-around) and one grouped strided conv1d does the rest."""
    b, p, d = xpad.shape
    n = lo.shape[0]
    ext = torch.cat([xpad, xpad[:, : n - 2]], dim=1) if n > 2 else xpad
    out = F.conv1d(ext.transpose(1, 2), _filter_bank(lo, hi), stride=2, groups=d)  # [B, 2D, P/2]
    out = out.view(b, d, 2, p // 2)
    return out[:, :, 0].transpose(1, 2), out[:, :, 1].transpose(1, 2)


def _synthesis(a: torch.Tensor, det: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """The adjoint of `_analysis`: [B, M, D] twice -> [B, 2M, D], y[m] = sum_{k,n} (lo[n] A[k] + hi[n] Dt[k])
    [m = 2k + n mod 2M] (reference: zero-upsample, circular convolution, sum). A transposed conv, then the
    samples past 2M are folded back onto the start."""
    b, m, d = a.shape
    n = lo.shape[0]
    inp = torch.stack([a, det], dim=3).reshape(b, m, 2 * d).transpose(1, 2)  # channel 2d + band
    y = F.conv_transpose1d(inp, _filter_bank(lo, hi), stride=2, groups=d)  # [B, D, 2M + N - 2]
    p = 2 * m
    y = y[..., :p] + F.pad(y[..., p:], (0, p - (n - 2))) if n > 2 else y
    return y.transpose(1, 2)


def wavedec(x: torch.Tensor, w: torch.Tensor, levels: int, reverse_channels: bool = True) -> list[torch.Tensor]:
    """Multi-level analysis of [B, T, D] with filters [N, D] -> [A_J, D_J, ..., D_1], each [B, M_j, D].

    Per level (length T_j): reflect-pad N-2 on the left and N-2 + (T_j mod 2) on the right, then `_analysis`;
    M_j = ceil(T_j / 2) + N - 2. With Daubechies filters the first floor((T + N - 1) / 2) level-1 coefficients
    equal `pywt.wavedec(mode='reflect')`; the last N/2 - 1 are extra circular wrap-around coefficients.
    """
    lo, hi = analysis_filters(w, reverse_channels)
    pad = w.shape[0] - 2  # (2N - 3) // 2
    coeffs = []
    a = x
    for _ in range(levels):
        a, det = _analysis(reflect_pad(a, pad, pad + a.shape[1] % 2), lo, hi)
        coeffs.append(det)
    coeffs.append(a)
    return coeffs[::-1]


def waverec(coeffs: list[torch.Tensor], w: torch.Tensor, reverse_channels: bool = True) -> torch.Tensor:
    """Inverse of `wavedec` (reference `waverec_learn`): per band pair from the coarsest, `_synthesis`, then drop
    N-2 samples at each end; before a further level, drop one more at the end if the length exceeds the next
    detail band. The result is 2 ceil(T/2) long: the caller crops to T. Perfect reconstruction holds when every
    feature's (lo, hi) is an orthonormal CQF pair (db init; ortho with shared angles or without the flip)."""
    lo, hi = analysis_filters(w, reverse_channels)
    crop = w.shape[0] - 2
    a = coeffs[0]
    for i, det in enumerate(coeffs[1:]):
        if a.shape[1] != det.shape[1]:
            raise ValueError(f"band lengths differ at step {i}: {a.shape[1]} vs {det.shape[1]}")
        y = _synthesis(a, det, lo, hi)
        a = y[:, crop: y.shape[1] - crop]
        if i < len(coeffs) - 2 and a.shape[1] != coeffs[i + 2].shape[1]:
            a = a[:, :-1]
    return a


# ------------------------------------------------------------------------------------------------------------------
# Lifting transforms


def _pad_even(a: torch.Tensor) -> torch.Tensor:
    return F.pad(a, (0, 0, 0, a.shape[1] % 2))


def _interleave(even: torch.Tensor, odd: torch.Tensor) -> torch.Tensor:
    b, n, d = even.shape
    return torch.stack([even, odd], dim=2).reshape(b, 2 * n, d)


def liftdec(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Fixed CDF-5/3 lifting with circular boundaries -> [s_J, d_J, ..., d_1]. Zero-pad to even length, split
    e = a[0::2], o = a[1::2]; predict d = o - (e[k] + e[k+1]) / 2; update s = e + (d[k-1] + d[k]) / 4 (the
    reference's out-of-range gather index clamps to the last element, i.e. wraps around). Deliberate deviation:
    autograd gives the exact gradient, while the reference's reverse-mode gradient lacks that wrap-around term
    (JAX transposes the clamped gather into a scatter that drops the out-of-range index; same in `liftrec`)."""
    a = _pad_even(x)
    coeffs = []
    for _ in range(levels):
        e, o = a[:, 0::2], a[:, 1::2]
        det = o - 0.5 * (e + e.roll(-1, 1))
        s = e + 0.25 * (det.roll(1, 1) + det)
        coeffs.append(det)
        a = _pad_even(s)
    coeffs.append(s)
    return coeffs[::-1]


def liftrec(coeffs: list[torch.Tensor]) -> torch.Tensor:
    """Reference inverse of `liftdec`: zero-pads each detail band on the right to the running length instead of
    cropping the approximation, so it is exact only while no intermediate length was odd."""
    s = coeffs[0]
    for det in coeffs[1:]:
        det = F.pad(det, (0, 0, 0, s.shape[1] - det.shape[1]))
        lo = s - 0.25 * (det.roll(1, 1) + det)
        hi = det + 0.5 * (lo + lo.roll(-1, 1))
        s = _interleave(lo, hi)
    return s


def circular_corr(v: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Per-feature circular cross-correlation: out[k] = sum_{n < min(N, len)} f[n] v[(k + n) mod len] for v [B, len,
    D], f [N, D] (the reference's rfft with n = len truncates longer filters)."""
    b, length, d = v.shape
    f = f[:length]
    n = f.shape[0]
    ext = torch.cat([v, v[:, : n - 1]], dim=1)
    return F.conv1d(ext.transpose(1, 2), f.T[:, None, :], groups=d).transpose(1, 2)


def liftdec_learn(x: torch.Tensor, w_est: torch.Tensor, w_pred: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Learnable lifting (reference `liftdec_learn`): d = o - SiLU(corr(e, w_est)) / 2, s = e + SiLU(corr(d,
    w_pred)) / 4, the same filters at every level."""
    a = _pad_even(x)
    coeffs = []
    for _ in range(levels):
        e, o = a[:, 0::2], a[:, 1::2]
        det = o - 0.5 * F.silu(circular_corr(e, w_est))
        s = e + 0.25 * F.silu(circular_corr(det, w_pred))
        coeffs.append(det)
        a = _pad_even(s)
    coeffs.append(s)
    return coeffs[::-1]


def liftrec_learn(coeffs: list[torch.Tensor], w_est: torch.Tensor, w_pred: torch.Tensor) -> torch.Tensor:
    """Exact inverse of `liftdec_learn`: crop the approximation to the detail length, undo update and predict."""
    s = coeffs[0]
    for det in coeffs[1:]:
        s = s[:, : det.shape[1]]
        lo = s - 0.25 * F.silu(circular_corr(det, w_pred))
        hi = det + 0.5 * F.silu(circular_corr(lo, w_est))
        s = _interleave(lo, hi)
    return s


# ------------------------------------------------------------------------------------------------------------------
# Attention on one band


class BandAttention(nn.Module):
    """Self-attention over one wavelet band [B, M, D], no padding mask (the reference attends over everything).

    softmax: Flax `SelfAttention(use_bias=False)`: q/k/v D -> qkv_dim, out qkv_dim -> D, logits scaled by
    head_dim^-1/2, dropout on the attention weights; runs through `F.scaled_dot_product_attention` (fused flash
    or memory-efficient kernels on GPU, no L x L matrix), or with `kernel="flash_tf32"` on fp32 CUDA inputs
    through `models.flash_attention` (TF32 products). linear: the reference `LinearAttention` (biases,
    elu + 1 feature map, eps 1e-6) followed, in the block, by dropout on its output.
    """

    def __init__(self, d_model: int, *, n_heads: int, qkv_dim: int, kind: str, attn_dropout: float, dropout: float,
                 kernel: str = "sdpa"):
        super().__init__()
        self.kind, self.kernel = kind, kernel
        self.n_heads = n_heads
        self.attn_dropout = attn_dropout
        bias = kind == "linear"
        self.q, self.k, self.v = (nn.Linear(d_model, qkv_dim, bias=bias) for _ in range(3))
        self.out = nn.Linear(qkv_dim, d_model, bias=bias)
        for lin in (self.q, self.k, self.v, self.out):
            nn.init.xavier_uniform_(lin.weight)  # Flax xavier on the flattened (in, out) kernel
            if lin.bias is not None:
                nn.init.normal_(lin.bias, std=1e-6)
        self.out_dropout = nn.Dropout(dropout) if kind == "linear" and dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, m, _ = x.shape
        q, k, v = (proj(x).view(b, m, self.n_heads, -1).transpose(1, 2) for proj in (self.q, self.k, self.v))
        p = self.attn_dropout if self.training else 0.0
        if self.kind == "softmax" and self.kernel == "flash_tf32" and flash_attention.available(q):
            y = flash_attention.flash_attention_tf32(q, k, v, p)
        elif self.kind == "softmax":
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        else:
            y = linear_attention(q, k, v)
        return self.out_dropout(self.out(y.transpose(1, 2).reshape(b, m, -1)))


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Non-causal linear attention on [B, H, M, hd]: phi(q) (phi(k)^T v) / (phi(q) . sum phi(k) + eps),
    phi = elu + 1; linear in M (reference `middle_layer_linear.linear_attention`)."""
    qf, kf = F.elu(q) + 1, F.elu(k) + 1
    kv = torch.einsum("bhsd,bhsm->bhdm", kf, v)
    z = 1.0 / (torch.einsum("bhld,bhd->bhl", qf, kf.sum(dim=2)) + eps)
    return torch.einsum("bhld,bhdm->bhlm", qf, kv) * z[..., None]


# ------------------------------------------------------------------------------------------------------------------
# The sequence layer and the block


class WavSpALayer(nn.Module):
    """The WavSpA sequence layer: transform -> attention per band -> inverse -> crop to the input length.

    Called as `layer(x [B, T, D], lengths)`; `lengths` is unused because the reference applies no mask in
    wavelet space (padding is zeroed before the block's LayerNorm, see `WavSpABlock`). The transforms run in
    at least float32 even under autocast (the reference is fp32; they are cheap next to attention); a float64
    layer stays float64.
    """

    def __init__(self, d_model: int, *, n_heads: int = 1, qkv_dim: int = 64, wavelet: str = "ada", wlen: int = 16,
                 levels: int = 1, attention: str = "softmax", attn_dropout: float = 0.0, dropout: float = 0.0,
                 reverse_channels: bool = True, attention_kernel: str = "sdpa"):
        super().__init__()
        self.wavelet, self.levels, self.reverse_channels = wavelet, levels, reverse_channels
        if wavelet == "ada":
            self.filters = nn.Parameter(daubechies_lowpass(wlen)[:, None].repeat(1, d_model))
        elif wavelet == "ortho":
            self.thetas = nn.Parameter(torch.rand(wlen // 2, d_model) * (2 * math.pi))
        elif wavelet == "adalift":
            self.w_est = nn.Parameter(torch.randn(wlen, d_model) * 0.02)
            self.w_pred = nn.Parameter(torch.randn(wlen, d_model) * 0.02)
        # 'lift' has no parameters (the reference creates two unused (wlen, D) arrays for it; left out).
        self.attn = nn.ModuleList(BandAttention(d_model, n_heads=n_heads, qkv_dim=qkv_dim, kind=attention,
                                                attn_dropout=attn_dropout, dropout=dropout, kernel=attention_kernel)
                                  for _ in range(levels + 1))

    def filter(self) -> torch.Tensor:
        """The current low-pass filters [wlen, D] (ada, ortho)."""
        return self.filters if self.wavelet == "ada" else ortho_filter(self.thetas)

    def decompose(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.wavelet == "lift":
            return liftdec(x, self.levels)
        if self.wavelet == "adalift":
            return liftdec_learn(x, self.w_est.to(x.dtype), self.w_pred.to(x.dtype), self.levels)
        return wavedec(x, self.filter().to(x.dtype), self.levels, self.reverse_channels)

    def reconstruct(self, bands: list[torch.Tensor]) -> torch.Tensor:
        if self.wavelet == "lift":
            return liftrec(bands)
        dtype = bands[0].dtype
        if self.wavelet == "adalift":
            return liftrec_learn(bands, self.w_est.to(dtype), self.w_pred.to(dtype))
        return waverec(bands, self.filter().to(dtype), self.reverse_channels)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        t = x.shape[1]
        dtype = torch.promote_types(x.dtype, torch.float32)  # fp16/bf16 -> float32; float32, float64 kept
        with torch.autocast(x.device.type, enabled=False):
            bands = self.decompose(x.to(dtype))
        bands = [attn(band) for attn, band in zip(self.attn, bands, strict=True)]
        with torch.autocast(x.device.type, enabled=False):
            y = self.reconstruct([band.to(dtype) for band in bands])
        return y[:, :t].to(x.dtype)


class WavSpABlock(ResidualBlock):
    """Reference `WavspaBlock`:  x0 = where(mask, x, 0);  x = x0 + layer(LN(x0));
    return x + MLP(dropout(x)), the MLP being Dense -> tanh-GELU -> Dropout -> Dense -> Dropout.

    Unlike the LRA Transformer block there is no LayerNorm before the MLP and the dropout sits on the MLP input.
    `mixer` (the WavSpA layer alone) and `norm` (LayerNorm eps 1e-6, the Flax default) keep the
    `ResidualBlock` names the scaling benchmark relies on.
    """

    def __init__(self, mixer: WavSpALayer, d_model: int, d_ff: int, dropout: float, norm_eps: float = 1e-6):
        super().__init__(mixer, d_model, "layer", prenorm=True, dropout=0.0, norm_eps=norm_eps)
        self.mlp_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.mlp = nn.Sequential(MLP(d_model, d_ff, dropout, approximate="tanh"), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        mask = length_mask(lengths, x.shape[1], x.device)
        if mask is not None:
            x = x * mask[..., None].to(x.dtype)  # padding zeroed; this is also the residual
        x = x + self.mixer(self.norm(x), lengths)
        return x + self.mlp(self.mlp_dropout(x))


@MODELS.register("wavspa", WavSpAConfig)
def build(cfg: WavSpAConfig, spec: TaskSpec) -> nn.Module:
    """WavSpA: self-attention on learnable wavelet bands (Ada/Ortho/Lift), LRA encoder conventions."""
    if spec.causal:
        raise ConfigError(f"wavspa is not causal (the wavelet transform mixes past and future), but {spec.name} "
                          f"needs a causal model")
    blocks = [WavSpABlock(WavSpALayer(cfg.d_model, n_heads=cfg.n_heads, qkv_dim=cfg.qkv_dim, wavelet=cfg.wavelet,
                                      wlen=cfg.wlen, levels=cfg.levels, attention=cfg.attention,
                                      attn_dropout=cfg.attn_dropout, dropout=cfg.dropout,
                                      reverse_channels=cfg.reverse_channels, attention_kernel=cfg.attention_kernel),
                          cfg.d_model, cfg.d_ff, cfg.dropout)
              for _ in range(cfg.n_layers)]
    encoder = PositionalEncoder(spec, cfg.d_model, cfg.positions, cls_token=cfg.pooling == "cls")
    model = SequenceModel(spec, cfg.d_model, blocks, encoder, embed_dropout=cfg.dropout, pooling=cfg.pooling,
                          head=cfg.head, head_dim=cfg.d_ff, norm_eps=1e-6,
                          pad_to=spec.seq_len if cfg.pad_to_seq_len else None)
    lra_init_(model)  # MLP kernels xavier-uniform, biases N(0, 1e-6^2); band attention inits itself
    return model
