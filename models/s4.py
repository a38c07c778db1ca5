"""S4 (diagonal plus low rank, HiPPO-LegS) and S4D (diagonal) state-space layers in plain PyTorch.

Written from the papers and /work/shared/specs/s4_lra.md (state-spaces/s4 v4 semantics). Each feature h of
the input runs its own linear SSM x' = A x + B u, y = C x + D u, discretised with step dt_h; the layer
convolves the input with the SSM's length-L kernel K_l = C A_bar^l B_bar through an FFT.

Speed without compiled extensions (the published code needs a CUDA extension or pykeops for long L):
- Every kernel is a sum of damped complex exponentials K_l = 2 Re sum_n v_n lambda_n^l. We evaluate it
  with a two-level power split l = qT + j (T ~ sqrt(L)): K[q, j] = 2 Re sum_n (v_n lambda_n^{qT}) lambda_n^j,
  i.e. one real batched matmul of shapes (R*L/T, 2N) x (2N, T) per feature. Nothing of size N x L is
  materialised, autograd goes through the matmul, and the cost is that of a GEMM.
- S4's Cauchy kernel 1/(z - w) at the L roots of unity is rewritten as the DFT of such an exponential
  sum: v/(z_k - w) = (1 + omega_k) * v/((2 - w)(1 - lambda^L)) * sum_{l<L} lambda^l omega_k^l with
  lambda = (2 + w)/(2 - w) the bilinear diagonal. So the four Cauchy sums of the Woodbury formula are
  rffts of power-split exponential sums, and the 1/(1 + omega) singularity at the Nyquist frequency
  cancels analytically (see `dplr_kernel`).
- Kernels and FFTs always run in fp32 (autocast disabled), as cuFFT half needs power-of-two sizes and
  the kernel's dynamic range does not fit bf16.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from harness.config import ModelConfig
from harness.errors import ConfigError
from models import MODELS
from models.backbone import Backbone, ResidualBlock, length_mask
from harness.task import TaskSpec

# ----------------------------------------------------------------------------------------------------------
# Shared pieces (also used by models/sgconv.py): dropout, output linear, FFT convolution, stepping backbone.
# ----------------------------------------------------------------------------------------------------------


class TiedDropout(nn.Module):
    """Dropout on [B, L, D] with one mask per (sample, channel), shared over the length (published DropoutNd)."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        mask = torch.rand(x.shape[0], 1, x.shape[-1], device=x.device) >= self.p
        return x * mask.to(x.dtype) / (1.0 - self.p)


def make_dropout(p: float, tie: bool) -> nn.Module:
    if p <= 0.0:
        return nn.Identity()
    return TiedDropout(p) if tie else nn.Dropout(p)


class OutputLinear(nn.Module):
    """Position-wise Linear(D -> D) followed by an activation; 'glu' doubles the width and gates it."""

    def __init__(self, d_model: int, final_act: str | None):
        super().__init__()
        self.final_act = final_act
        if final_act == "glu":
            self.linear = nn.Linear(d_model, 2 * d_model)
        elif final_act in (None, "id", "gelu"):
            self.linear = nn.Linear(d_model, d_model)
        else:
            raise ConfigError(f"final_act must be glu, gelu, id or null, got {final_act!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        if self.final_act == "glu":
            return F.glu(y, dim=-1)
        if self.final_act == "gelu":
            return F.gelu(y)
        return y


def activation_fn(name: str) -> nn.Module:
    if name == "gelu":
        return nn.GELU()
    if name in ("id", "none"):
        return nn.Identity()
    if name in ("silu", "swish"):
        return nn.SiLU()
    raise ConfigError(f"activation must be gelu, silu or id, got {name!r}")


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


# Pointwise activations the FFT convolution applies on its way out: (forward .out op, backward .grad_input op).
_ACTS = {
    "gelu": (torch.ops.aten.gelu.out, torch.ops.aten.gelu_backward.grad_input),
    "silu": (torch.ops.aten.silu.out, torch.ops.aten.silu_backward.grad_input),
}


class _FFTConv(torch.autograd.Function):
    """y = act(circular_conv(mask * x, kk)[:L]), x [B, L, H] -> [B, L, H], with a hand-written backward.

    Why not autograd through torch.fft: its rfft backward builds a two-sided complex [B, H, 2L] buffer (4 x the
    activation) and runs a C2C FFT on it, and every elementwise step around the FFTs is one more pass over
    [B, H, L]. Here each pass over activation-sized data does something needed, and the transposes
    [B, L, H] <-> [B, H, 2L] ride inside passes that are needed anyway (zero-pad copy, activation, its backward,
    the copy out of the gradient). With A = B*L*H*4 bytes (one fp32 activation) and n = 2L, per call:
      forward  : pad-zero 1A + transposed (masked) copy 2A | rfft 4A | U*K 4A | irfft (torch clones the input
                 for cuFFT C2R) 8A | act out, transposed to [B, L, H] 2A                 = 21A,  7 big launches
      backward : pad-zero 1A + act-backward into the pad 3A | rfft 4A | sum_b G conj(U): conj copy 4A (torch's
                 conj fallback) + mul 6A + sum 2A | G *= conj(K) 4A | irfft 8A | transposed copy out 2A
                                                                                           = 34A, 10 big launches
    (the autograd path it replaces, D u as a separate term: 27A / 9 launches forward, 53A / 16 backward, its
    rfft backward alone 16A through a two-sided complex buffer). Left on the table: cuFFT C2R overwrites its
    input, so torch clones it (4A per irfft); pairing two real signals in one C2C transform would avoid that.
    Saved for backward: U = rfft(u) (2A) and, for gelu/silu, the pre-activation (a view of a 2A buffer).
    The compute dtype is kk's (fp32 in the layers; fp64 in the gradient check).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, kk: torch.Tensor, mask: torch.Tensor | None,  # type: ignore[override]
                act: str) -> torch.Tensor:
        B, L, H = x.shape
        n = kk.shape[-1]
        u = x.new_empty(B, H, n, dtype=kk.dtype)
        u[..., L:].zero_()
        if mask is None:
            u[..., :L].copy_(x.transpose(1, 2))
        else:
            torch.mul(x.transpose(1, 2), mask[:, None, :], out=u[..., :L])
        k_f = torch.fft.rfft(kk, n=n)  # [H, n/2+1]
        u_f = torch.fft.rfft(u, n=n)  # [B, H, n/2+1]
        del u
        z = torch.fft.irfft(u_f * k_f, n=n)[..., :L]  # [B, H, L] pre-activation, a view
        out = x.new_empty(B, L, H, dtype=kk.dtype)
        if act in _ACTS:
            _ACTS[act][0](z.transpose(1, 2), out=out)
        else:
            out.copy_(z.transpose(1, 2))
        ctx.act, ctx.x_dtype = act, x.dtype
        ctx.save_for_backward(u_f, k_f, mask, z if act in _ACTS else None)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        u_f, k_f, mask, z = ctx.saved_tensors
        B, L, H = g.shape
        n = 2 * (u_f.shape[-1] - 1)
        gp = g.new_empty(B, H, n, dtype=u_f.real.dtype)
        gp[..., L:].zero_()
        if ctx.act in _ACTS:
            _ACTS[ctx.act][1](g.transpose(1, 2), z, grad_input=gp[..., :L])
        else:
            gp[..., :L].copy_(g.transpose(1, 2))
        g_f = torch.fft.rfft(gp, n=n)
        del gp
        grad_x = grad_kk = None
        if ctx.needs_input_grad[1]:
            # dLoss/dkk[m] = sum_{b,t} g[t] u[t-m]: a correlation, spectrum sum_b G conj(U).
            grad_kk = torch.fft.irfft((g_f * u_f.conj()).sum(0), n=n)
        if ctx.needs_input_grad[0]:
            # dLoss/du[s] = sum_t g[t] kk[t-s]: correlation with the kernel, spectrum G conj(K).
            gu = torch.fft.irfft(g_f.mul_(k_f.conj_physical()), n=n)[..., :L]
            grad_x = g.new_empty(B, L, H, dtype=ctx.x_dtype)
            if mask is None:
                grad_x.transpose(1, 2).copy_(gu)
            else:
                torch.mul(gu, mask[:, None, :], out=grad_x.transpose(1, 2))
        return grad_x, grad_kk, None, None


def fft_conv(x: torch.Tensor, kk: torch.Tensor, mask: torch.Tensor | None = None, act: str = "id") -> torch.Tensor:
    """act(linear convolution of x [B, L, H] with the circular kernel kk [H, 2L]) -> [B, L, H] in kk's dtype.

    kk comes from `circular_kernel`; mask [B, L] (or None) multiplies x first; act is gelu, silu or id.
    The FFT size is n = 2L (a power of two for power-of-two L, which cuFFT likes best).
    """
    if act not in _ACTS and act != "id":
        raise ConfigError(f"fft_conv act must be gelu, silu or id, got {act!r}")
    if kk.shape != (x.shape[-1], 2 * x.shape[1]):
        raise ConfigError(f"kernel shape {tuple(kk.shape)} does not fit input {tuple(x.shape)}: need [H, 2L]")
    return _FFTConv.apply(x, kk, None if mask is None else mask.to(kk.dtype), act)


class ConvMixer(nn.Module):
    """Base of a long-convolution sequence layer: [B, L, H] -> conv (+ D u) -> dropout -> act -> dropout.

    Subclasses provide `kernel(L) -> [C, H, L]` (C = 2 when bidirectional) and the parameter `D` [1, H].
    Stepping (one token at a time) keeps the input history and applies the causal kernel, which equals the
    convolution exactly; S4D overrides it with its O(N) recurrence.
    """

    bidirectional: bool
    mask_lengths: bool = False
    D: nn.Parameter

    def __init__(self, d_model: int, activation: str, dropout: float, tie_dropout: bool,
                 inner_dropout: bool):
        super().__init__()
        self.d_model = d_model
        # The published S4 FFTConv applies elementwise dropout to the conv output before the activation
        # and S4Block a (tied) dropout after it; SGConv only the one after the activation.
        self.drop_inner = nn.Dropout(dropout) if (inner_dropout and dropout > 0) else nn.Identity()
        self.act = activation_fn(activation)
        self.act_name = {"swish": "silu", "none": "id"}.get(activation, activation)
        self.drop = make_dropout(dropout, tie_dropout)

    def kernel(self, L: int) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        mask = length_mask(lengths, x.shape[1], x.device) if (self.mask_lengths and lengths is not None) else None
        # The activation is fused into the FFT convolution unless an active dropout sits between them.
        inner = self.training and isinstance(self.drop_inner, nn.Dropout) and self.drop_inner.p > 0
        act = self.act_name if (self.act_name != "id" and not inner) else "id"
        with torch.autocast(device_type=x.device.type, enabled=False):
            # Kernel and FFTs in fp32 (cuFFT half needs power-of-two sizes; the kernel's range exceeds bf16).
            kk = circular_kernel(self.kernel(x.shape[1]).float(), self.D.float(), self.bidirectional)
            y = fft_conv(x, kk, mask, act).to(x.dtype)
        if act == "id":
            y = self.act(self.drop_inner(y))
        return self.drop(y)

    # --- recurrent interface ---------------------------------------------------------------------------
    def init_state(self, batch_size: int, device: torch.device | str, l_max: int) -> dict[str, Any]:
        if self.bidirectional:
            raise ConfigError("step() needs a causal layer; set bidirectional=false")
        with torch.no_grad():
            k = self.kernel(l_max)[0].float()  # [H, l_max]
        return {"u": torch.zeros(batch_size, self.d_model, 0, device=device), "k": k}

    def step(self, x: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        """x [B, 1, H] -> y [B, 1, H]; state holds the inputs so far and the causal kernel."""
        u_t = x[:, 0].float()
        hist = torch.cat([state["u"], u_t[..., None]], dim=-1)  # [B, H, t+1]
        t = hist.shape[-1]
        k = state["k"]
        if t > k.shape[-1]:
            raise ConfigError(f"step beyond the kernel length {k.shape[-1]}; build with a larger seq_len")
        y = (hist.flip(-1) * k[None, :, :t]).sum(-1) + self.D.float()[0] * u_t
        y = self.drop(self.act(self.drop_inner(y[:, None].to(x.dtype))))
        return y, {"u": hist, "k": k}


class SeqBackbone(Backbone):
    """The shared Backbone plus the generation interface: init_state / step one position at a time."""

    def init_state(self, batch_size: int, device: torch.device | str) -> list[Any]:
        if self.spec.output != "sequence":
            raise ConfigError("step() is for sequence-output (autoregressive) tasks")
        return [blk.mixer.init_state(batch_size, device, self.spec.seq_len) for blk in self.blocks]

    def step(self, x_t: torch.Tensor, state: list[Any]) -> tuple[torch.Tensor, list[Any]]:
        """x_t [B] tokens or [B, d_input] -> (y_t [B, n_outputs], new state). Equals forward(x)[:, t] in eval."""
        h = self.embed_dropout(self.encoder(x_t))[:, None]  # [B, 1, D]
        new_state = []
        for blk, s in zip(self.blocks, state):
            z = blk.norm(h) if blk.prenorm else h
            m, s = blk.mixer.step(z, s)
            branch = blk.dropout(blk.channel_mixer(m))
            h = h + branch if blk.prenorm else blk.norm(h + branch)
            new_state.append(s)
        return self.decoder(self.final_norm(h))[:, 0], new_state


def build_backbone(cfg: Any, spec: TaskSpec, mixers: list[nn.Module]) -> SeqBackbone:
    """Published S4-codebase block: x + Drop(OutLinear+GLU(layer(x))), norm pre or post; final norm if prenorm."""
    if cfg.norm not in ("layer", "batch", "none"):
        raise ConfigError(f"model.norm must be layer, batch or none, got {cfg.norm!r}")
    blocks = [
        ResidualBlock(mixer, cfg.d_model, cfg.norm, prenorm=cfg.prenorm, channel_mixer=OutputLinear(cfg.d_model,
                      cfg.final_act), dropout_module=make_dropout(cfg.dropout, cfg.tie_dropout))
        for mixer in mixers
    ]
    return SeqBackbone(spec, cfg.d_model, blocks, final_norm=cfg.norm if cfg.prenorm else "none")


def check_causal(cfg: Any, spec: TaskSpec) -> None:
    if spec.causal and cfg.bidirectional:
        raise ConfigError(f"task {spec.name!r} is causal (autoregressive) but model.bidirectional=true; "
                          "set model.bidirectional=false")


# ----------------------------------------------------------------------------------------------------------
# Kernel math
# ----------------------------------------------------------------------------------------------------------


def exp_sum(v: torch.Tensor, x: torch.Tensor, L: int) -> torch.Tensor:
    """K[r, h, l] = 2 Re sum_n v[r, h, n] exp(x[h, n] l), l < L, as one real batched matmul.

    v [R, H, N] complex, x [H, N] complex (log of the discrete eigenvalues). Split l = q T + j:
    K[r, h, q, j] = 2 Re sum_n (v exp(x q T))[r, h, n, q] exp(x j)[h, n, j]; with T ~ sqrt(L) both factors are
    O(N sqrt(L)) and the product is a GEMM over 2N (real and imaginary parts).
    """
    R, H, N = v.shape
    T = 1 << max(0, math.ceil(math.log2(max(L, 1)) / 2))
    Q = -(-L // T)
    j = torch.arange(T, device=x.device, dtype=torch.float32)
    q = torch.arange(Q, device=x.device, dtype=torch.float32) * T
    W = torch.exp(x[..., None] * j)  # [H, N, T]
    U = v[..., None] * torch.exp(x[..., None] * q)  # [R, H, N, Q]
    W_r = torch.cat([W.real, W.imag], dim=1)  # [H, 2N, T]
    U_r = torch.cat([U.real, -U.imag], dim=2)  # [R, H, 2N, Q]: Re(u w) = Re u Re w - Im u Im w
    U_r = U_r.permute(1, 0, 3, 2).reshape(H, R * Q, 2 * N)
    out = torch.bmm(U_r, W_r).view(H, R, Q * T)[..., :L]
    return 2.0 * out.transpose(0, 1)


def dplr_kernel(w: torch.Tensor, B: torch.Tensor, C: torch.Tensor, P: torch.Tensor, dt: torch.Tensor,
                L: int) -> torch.Tensor:
    """S4 kernel [C, H, L] of the bilinear-discretised SSM with state matrix diag(w/dt) - P P^*.

    w = dt * Lambda [H, N] (half of each conjugate pair), B [H, N], C [Ch, H, N] (the C-tilde attuned to L),
    P [H, N], dt [H, 1]. The Cauchy sums r_xy(z_k) = sum_{n, conj} dt x_n y_n / (z_k - w_n) at
    z_k = 2 (1 - omega_k)/(1 + omega_k), omega_k = exp(-2 pi i k / L), equal (1 + omega_k) s_hat_xy[k] with
    s_xy[l] = 2 Re sum_n u_n lambda_n^l, u_n = dt x_n y_n / ((2 - w_n)(1 - lambda_n^L)), lambda = (2+w)/(2-w).
    Woodbury + the bilinear factor 2/(1 + omega) then give
    K_hat = 2 [s_CB - (1 + omega) s_CP s_QB / (1 + (1 + omega) s_QP)],  K = irfft(K_hat, L).
    """
    Ch = C.shape[0]
    Q = P.conj()
    lam_log = torch.log((2 + w) / (2 - w))  # [H, N]
    denom = (2 - w) * (1 - torch.exp(lam_log * L))  # [H, N]
    left = torch.cat([C, Q[None]], dim=0)  # [Ch+1, H, N]: C-side rows
    right = torch.stack([B, P], dim=0)  # [2, H, N]: B-side rows
    v = (left[:, None] * right[None]) * (dt / denom)  # [Ch+1, 2, H, N]
    s = exp_sum(v.reshape(-1, *w.shape), lam_log, L).view(Ch + 1, 2, w.shape[0], L)
    s_f = torch.fft.rfft(s, n=L)  # [Ch+1, 2, H, L//2+1]
    k = torch.arange(L // 2 + 1, device=w.device, dtype=torch.float64)
    one_plus_omega = (1 + torch.exp(-2j * math.pi * k / L)).to(torch.complex64)
    cb, cp = s_f[:Ch, 0], s_f[:Ch, 1]
    qb, qp = s_f[Ch, 0], s_f[Ch, 1]
    k_f = 2 * (cb - one_plus_omega * cp * qb / (1 + one_plus_omega * qp))
    return torch.fft.irfft(k_f, n=L)


def hippo_legs_nplr(N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normal-plus-low-rank form of HiPPO-LegS (N x N): returns (Lambda, P, B) for N/2 conjugate pairs.

    A_nk = -sqrt(2n+1) sqrt(2k+1) (n > k), -(n+1) (n = k); B_n = sqrt(2n+1); P_n = sqrt(n + 1/2) makes
    A + P P^T = -I/2 + skew. Diagonalise the skew part (Hermitian after * -i) in float64, keep the
    eigenvalues with Im <= 0, project B and P on the eigenvectors, clip Im(B) to [-2, 2] (published B_clip).
    """
    n = torch.arange(N, dtype=torch.float64)
    r = torch.sqrt(2 * n + 1)
    A = torch.tril(-(r[:, None] * r[None, :]), -1) - torch.diag(n + 1)
    P = torch.sqrt(n + 0.5)
    AP = A + P[:, None] * P[None, :]
    w_re = torch.diagonal(AP).mean()
    w_im, V = torch.linalg.eigh((AP - w_re * torch.eye(N, dtype=torch.float64)) * -1j)
    order = torch.argsort(w_im)[: N // 2]
    lam = w_re + 1j * w_im[order]
    Vh = V[:, order].conj().T
    B_t = Vh @ r.to(torch.complex128)
    B_t = B_t.real + 1j * torch.clamp(B_t.imag, -2.0, 2.0)
    return lam, Vh @ P.to(torch.complex128), B_t


def legs_dense(N: int) -> torch.Tensor:
    """The dense HiPPO-LegS matrix (for tests)."""
    n = torch.arange(N, dtype=torch.float64)
    r = torch.sqrt(2 * n + 1)
    return torch.tril(-(r[:, None] * r[None, :]), -1) - torch.diag(n + 1)


def transform(p: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "softplus":
        return F.softplus(p)
    if kind == "exp":
        return torch.exp(p)
    raise ConfigError(f"dt_transform must be softplus or exp, got {kind!r}")


def inverse_transform(p: torch.Tensor, kind: str) -> torch.Tensor:
    p = p.clamp(min=1e-4)
    if kind == "softplus":
        return torch.log(torch.expm1(p))
    if kind == "exp":
        return torch.log(p)
    raise ConfigError(f"dt_transform must be softplus or exp, got {kind!r}")


def dense_discretisation(lam: torch.Tensor, P: torch.Tensor, B: torch.Tensor, dt: torch.Tensor,
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear A_bar [H, 2N, 2N], B_bar [H, 2N] of the full (conjugate-completed) DPLR matrix, complex128."""
    full = lambda z: torch.cat([z, z.conj()], dim=-1)  # noqa: E731
    lam, P, B, dt = full(lam).cdouble(), full(P).cdouble(), full(B).cdouble(), dt.double()[..., None]
    N2 = lam.shape[-1]
    A = torch.diag_embed(lam) - P[..., :, None] * P.conj()[..., None, :]
    eye = torch.eye(N2, dtype=torch.complex128, device=lam.device)
    back = eye - dt / 2 * A
    A_bar = torch.linalg.solve(back, eye + dt / 2 * A)
    B_bar = torch.linalg.solve(back, dt[..., 0] * B)
    return A_bar, B_bar


# ----------------------------------------------------------------------------------------------------------
# The S4 / S4D layer
# ----------------------------------------------------------------------------------------------------------


def _sync_attuned_length(module: S4Layer, incompatible_keys: Any) -> None:
    """After load_state_dict: refresh the Python mirror of the loaded l_kernel (one host sync, once)."""
    module._lk = int(module.l_kernel)


class S4Layer(ConvMixer):
    """S4 (mode 'dplr') or S4D (mode 'diag') convolution layer, [B, L, H] -> [B, L, H].

    Trainable SSM tensors are stored as real views of complex tensors (as published, so AdamW and weight
    decay act on real and imaginary parts): inv_dt [H, 1], A_real / A_imag [S, N/2], B [S, N/2, 2],
    P [S, N/2, 2] (S4 only), C [Ch, H, N/2, 2], D [1, H]. A, B, P are shared by H/S features (n_ssm = S).
    """

    mask_lengths = True

    def __init__(self, d_model: int, d_state: int = 64, mode: str = "dplr", init: str = "legs",
                 disc: str = "bilinear", l_max: int = 1024, bidirectional: bool = False, n_ssm: int | None = 1,
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_transform: str = "softplus",
                 ssm_lr: float | None = 0.001, dt_lr: float | None = 0.001, c_lr: float | None = None,
                 ssm_weight_decay: float = 0.0, activation: str = "gelu", dropout: float = 0.0,
                 tie_dropout: bool = True):
        super().__init__(d_model, activation, dropout, tie_dropout, inner_dropout=True)
        H, N = d_model, d_state
        S = H if n_ssm is None else n_ssm
        if mode not in ("dplr", "diag"):
            raise ConfigError(f"S4 mode must be dplr (S4) or diag (S4D), got {mode!r}")
        if N % 2 or N < 2:
            raise ConfigError(f"d_state must be even (conjugate pairs), got {N}")
        if S < 1 or H % S:
            raise ConfigError(f"n_ssm={n_ssm} must divide d_model={H}")
        if disc not in ("zoh", "bilinear"):
            raise ConfigError(f"disc must be zoh or bilinear, got {disc!r}")
        if mode == "dplr" and disc != "bilinear":
            raise ConfigError("S4 (mode dplr) uses the bilinear discretisation; set disc=bilinear")
        if not 0 < dt_min <= dt_max:
            raise ConfigError(f"need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        self.mode, self.disc, self.bidirectional = mode, disc, bidirectional
        self.dt_transform = dt_transform
        self.H, self.N2, self.S = H, N // 2, S
        channels = 2 if bidirectional else 1

        lam, P, B = self._init_AB(init, N)  # each [N/2] complex128
        log_dt = torch.rand(H, 1) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        C = torch.randn(channels, H, N // 2, dtype=torch.complex64)  # real, imag parts ~ N(0, 1/2)

        ssm_opt = {"weight_decay": ssm_weight_decay} | ({"lr": ssm_lr} if ssm_lr is not None else {})
        dt_opt = {"weight_decay": ssm_weight_decay} | ({"lr": dt_lr} if dt_lr is not None else {})
        self.inv_dt = self._param(inverse_transform(torch.exp(log_dt), dt_transform), dt_opt)
        self.A_real = self._param(torch.log((-lam.real).clamp(min=1e-4)).float().expand(S, -1).clone(), ssm_opt)
        self.A_imag = self._param((-lam.imag).clamp(min=1e-4).float().expand(S, -1).clone(), ssm_opt)
        self.B = self._param(torch.view_as_real(B.to(torch.complex64)).expand(S, -1, -1).clone(), ssm_opt)
        if mode == "dplr":
            self.P = self._param(torch.view_as_real(P.to(torch.complex64)).expand(S, -1, -1).clone(), ssm_opt)
        self.C = self._param(torch.view_as_real(C).clone(), {"lr": c_lr} if c_lr is not None else None)
        self.D = nn.Parameter(torch.randn(1, H))
        if mode == "dplr":
            # S4 trains C-tilde = C (I - A_bar^L) for the length L it is attuned to (published "C tilde").
            self.register_buffer("l_kernel", torch.tensor(0))
            # Python mirror of l_kernel: reading the buffer in kernel() would sync host and GPU on every call,
            # leaving the GPU idle while the ~100 small kernel-generation ops are launched.
            self._lk = 0
            self.register_load_state_dict_post_hook(_sync_attuned_length)
            self._attune(l_max)

    @staticmethod
    def _param(t: torch.Tensor, optim: dict[str, float] | None) -> nn.Parameter:
        p = nn.Parameter(t)
        if optim:
            p._optim = dict(optim)  # type: ignore[attr-defined]
        return p

    def _init_AB(self, init: str, N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = torch.arange(N // 2, dtype=torch.float64)
        ones = torch.ones(N // 2, dtype=torch.complex128)
        if init in ("legs", "diag-legs"):
            return hippo_legs_nplr(N)
        if self.mode == "dplr":
            raise ConfigError(f"S4 (mode dplr) supports init=legs, got {init!r}")
        if init == "diag-lin":
            return -0.5 - 1j * math.pi * n, ones * 0, ones
        if init == "diag-inv":
            return -0.5 - 1j * (N / math.pi) * (N / (2 * n + 1) - 1), ones * 0, ones
        raise ConfigError(f"S4D init must be diag-lin, diag-inv or legs, got {init!r}")

    # --- parameters in complex form, broadcast to H features -----------------------------------------
    def params(self) -> dict[str, torch.Tensor]:
        rep = self.H // self.S
        dt = transform(self.inv_dt, self.dt_transform)  # [H, 1]
        A = -torch.exp(self.A_real) - 1j * self.A_imag  # [S, N/2]
        out = {"dt": dt, "A": A.repeat(rep, 1), "B": torch.view_as_complex(self.B).repeat(rep, 1),
               "C": torch.view_as_complex(self.C)}
        if self.mode == "dplr":
            out["P"] = torch.view_as_complex(self.P).repeat(rep, 1)
        return out

    def discrete(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """S4D: log A_bar [H, N/2], B_bar [H, N/2], C [Ch, H, N/2] (ZOH or bilinear per diagonal mode)."""
        p = self.params()
        dtA = p["dt"] * p["A"]
        if self.disc == "zoh":
            return dtA, p["B"] * torch.expm1(dtA) / p["A"], p["C"]
        return torch.log((1 + dtA / 2) / (1 - dtA / 2)), p["B"] * p["dt"] / (1 - dtA / 2), p["C"]

    @torch.no_grad()
    def _attune(self, L: int) -> None:
        """Set C-tilde for length L (first call), or double its length (C (I - A^2L) = C~ (I + A^L))."""
        while self._lk < L:
            cur = self._lk
            p = self.params()
            A_bar, _ = dense_discretisation(p["A"], p["P"], p["B"], p["dt"])
            power = torch.linalg.matrix_power(A_bar, cur if cur else L)  # [H, 2N, 2N]
            C = torch.view_as_complex(self.C).cdouble()
            C_full = torch.cat([C, C.conj()], dim=-1)
            prod = torch.einsum("chn,hnm->chm", C_full, power)
            C_new = C_full + prod if cur else C_full - prod
            self.C.copy_(torch.view_as_real(C_new[..., : self.N2].to(torch.complex64)))
            self._lk = 2 * cur if cur else L
            self.l_kernel.fill_(self._lk)

    def kernel(self, L: int) -> torch.Tensor:
        """[Ch, H, L] fp32 convolution kernel (Ch = 2 when bidirectional)."""
        if self.mode == "diag":
            log_a, b_bar, C = self.discrete()
            return exp_sum(C * b_bar, log_a, L)
        if L > self._lk:
            self._attune(L)
        p = self.params()
        Lk = self._lk
        k = dplr_kernel(p["dt"] * p["A"], p["B"], p["C"], p["P"], p["dt"], Lk)
        return k[..., :L]

    # --- S4D recurrence --------------------------------------------------------------------------------
    def init_state(self, batch_size: int, device: torch.device | str, l_max: int) -> Any:
        if self.mode == "dplr":
            return super().init_state(batch_size, device, l_max)
        if self.bidirectional:
            raise ConfigError("step() needs a causal layer; set bidirectional=false")
        return torch.zeros(batch_size, self.H, self.N2, dtype=torch.complex64, device=device)

    def step(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """S4D: s <- A_bar s + B_bar u;  y = 2 Re(C s) + D u  (one token, O(H N))."""
        if self.mode == "dplr":
            return super().step(x, state)
        u = x[:, 0].float()
        log_a, b_bar, C = self.discrete()
        state = torch.exp(log_a) * state + b_bar * u[..., None]
        y = 2 * (C[0] * state).sum(-1).real + self.D[0] * u
        return self.drop(self.act(self.drop_inner(y[:, None].to(x.dtype)))), state


# ----------------------------------------------------------------------------------------------------------
# Configs and builders
# ----------------------------------------------------------------------------------------------------------


@dataclass
class S4Config(ModelConfig):
    """S4: HiPPO-LegS DPLR state-space layers (Gu et al. 2022), state-spaces/s4 v4 defaults."""

    name: str = "s4"
    d_model: int = 128
    n_layers: int = 4
    d_state: int = 64
    mode: str = "dplr"  # dplr (S4) | diag (S4D)
    init: str = "legs"  # S4: legs; S4D: diag-lin | diag-inv | legs
    disc: str = "bilinear"  # S4D: zoh | bilinear; S4 is always bilinear
    n_ssm: int | None = 1  # independent (A, B, P) copies; null: one per feature
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_transform: str = "softplus"  # softplus (v4) | exp (v1-v3 log-dt)
    ssm_lr: float | None = 0.001  # lr of A, B, P (null: global lr)
    dt_lr: float | None = 0.001  # lr of dt (null: global lr)
    c_lr: float | None = None  # lr of C (null: global lr and weight decay)
    ssm_weight_decay: float = 0.0  # weight decay of dt, A, B, P
    bidirectional: bool = False
    activation: str = "gelu"
    final_act: str = "glu"
    dropout: float = 0.0
    tie_dropout: bool = True
    prenorm: bool = True
    norm: str = "layer"  # layer | batch | none
    l_max: int | None = None  # kernel length; null: the task's seq_len


@dataclass
class S4DConfig(S4Config):
    """S4D: diagonal state-space layers (Gu et al. 2022, S4D-Lin by default)."""

    name: str = "s4d"
    mode: str = "diag"
    init: str = "diag-lin"
    disc: str = "zoh"


def _build_s4(cfg: Any, spec: TaskSpec) -> SeqBackbone:
    check_causal(cfg, spec)
    l_max = cfg.l_max or spec.seq_len
    mixers = [
        S4Layer(cfg.d_model, cfg.d_state, cfg.mode, cfg.init, cfg.disc, l_max, cfg.bidirectional, cfg.n_ssm,
                cfg.dt_min, cfg.dt_max, cfg.dt_transform, cfg.ssm_lr, cfg.dt_lr, cfg.c_lr, cfg.ssm_weight_decay,
                cfg.activation, cfg.dropout, cfg.tie_dropout)
        for _ in range(cfg.n_layers)
    ]
    return build_backbone(cfg, spec, mixers)


@MODELS.register("s4", S4Config)
def build_s4(cfg: S4Config, spec: TaskSpec) -> nn.Module:
    """S4: HiPPO-LegS DPLR state-space layers (Gu et al. 2022), state-spaces/s4 v4 defaults."""
    return _build_s4(cfg, spec)


@MODELS.register("s4d", S4DConfig)
def build_s4d(cfg: S4DConfig, spec: TaskSpec) -> nn.Module:
    """S4D: diagonal state-space layers (Gu et al. 2022, S4D-Lin by default)."""
    return _build_s4(cfg, spec)
