"""S4: the diagonal-plus-low-rank (HiPPO-LegS) state-space layer, in plain PyTorch.

Paper: Gu, Goel & Ré, "Efficiently Modeling Long Sequences with Structured State Spaces", ICLR 2022.
Published code: state-spaces/s4, `models/s4/s4.py` (FFTConv, SSMKernelDPLR) and `src/models/sequence/kernels/ssm.py`,
v4 semantics (softplus dt, C-tilde attuned to the length). Each feature h of the input runs its own linear SSM
x' = A x + B u, y = C x + D u, discretised with step dt_h; the layer convolves the input with the SSM's length-L
kernel K_l = C A_bar^l B_bar through an FFT (`models.longconv`). S4D (`models.s4d`) shares the parameterisation
and `exp_sum` defined here.

Speed without compiled extensions (the published code needs a CUDA extension or pykeops for long L):
- Every kernel is a sum of damped complex exponentials K_l = 2 Re sum_n v_n lambda_n^l. We evaluate it
  with a two-level power split l = qT + j (T ~ sqrt(L)): K[q, j] = 2 Re sum_n (v_n lambda_n^{qT}) lambda_n^j,
  i.e. one complex batched matmul of shapes (R*L/T, N) x (N, T) per feature (and layer: the kernels of all
  layers are made together, `models.longconv.share_taps`). Nothing of size N x L is materialised and the cost
  is that of a GEMM.
- Inductor takes no complex arithmetic. Under torch.compile the kernels of S4 and S4D run on pairs of real
  tensors (`_s4_taps_pairs`, `exp_sum_pairs`; complex values only inside the FFTs, custom ops with real inputs
  and outputs), which the compiler fuses and differentiates itself; eager code runs the complex arithmetic.
- S4's Cauchy kernel 1/(z - w) at the L roots of unity is rewritten as the DFT of such an exponential
  sum: v/(z_k - w) = (1 + omega_k) * v/((2 - w)(1 - lambda^L)) * sum_{l<L} lambda^l omega_k^l with
  lambda = (2 + w)/(2 - w) the bilinear diagonal. So the four Cauchy sums of the Woodbury formula are
  rffts of power-split exponential sums, and the 1/(1 + omega) singularity at the Nyquist frequency
  cancels analytically (see `dplr_kernel`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.config import ModelConfig, one_of, positive
from harness.errors import ConfigError
from harness.task import TaskSpec
from models import MODELS
from models._validate import divides, even
from models.longconv import ConvLayer, stacked
from models.s4block import check_block_config, check_causal, s4_backbone


@dataclass
class S4Config(ModelConfig):
    """S4: HiPPO-LegS DPLR state-space layers (Gu et al. 2022), state-spaces/s4 v4 defaults."""

    name: str = "s4"
    d_model: int = 128
    n_layers: int = 4
    d_state: int = 64
    mode: str = "dplr"  # dplr (the only S4 kernel; S4D is model=s4d)
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
    activation: str = "gelu"  # gelu | silu | swish | id | none
    final_act: str = "glu"  # glu | gelu | id
    dropout: float = 0.0
    tie_dropout: bool = True
    prenorm: bool = True
    norm: str = "layer"  # layer | batch | none
    l_max: int | None = None  # kernel length; null: the task's seq_len

    def __post_init__(self) -> None:
        check_ssm_config(self, modes=("dplr",), inits=("legs", "diag-legs"), discs=("bilinear",))


def check_ssm_config(cfg: S4Config, modes: tuple[str, ...], inits: tuple[str, ...], discs: tuple[str, ...]) -> None:
    """The checks of S4 and S4D, each with its own kernel modes, initialisations and discretisations."""
    check_block_config(cfg)
    one_of("model.mode", cfg.mode, modes)
    one_of("model.init", cfg.init, inits)
    one_of("model.disc", cfg.disc, discs)
    one_of("model.dt_transform", cfg.dt_transform, DT_TRANSFORMS)
    even("model.d_state", cfg.d_state)  # conjugate pairs
    positive("model.n_ssm", cfg.n_ssm, integer=True, optional=True)
    if cfg.n_ssm is not None:
        divides("model.n_ssm", cfg.n_ssm, "model.d_model", cfg.d_model)
    positive("model.dt_min", cfg.dt_min)
    positive("model.dt_max", cfg.dt_max)
    if cfg.dt_min > cfg.dt_max:
        raise ConfigError(f"model.dt_min={cfg.dt_min} must be <= model.dt_max={cfg.dt_max}")


# ----------------------------------------------------------------------------------------------------------
# Kernel maths


# dt = transform(inv_dt): (transform, inverse), the inverse from dt >= 1e-4.
DT_TRANSFORMS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]] = {
    "softplus": (F.softplus, lambda dt: torch.log(torch.expm1(dt))),
    "exp": (torch.exp, torch.log),
}


def exp_sum(v: torch.Tensor, x: torch.Tensor, L: int) -> torch.Tensor:
    """K[..., r, h, l] = 2 Re sum_n v[..., r, h, n] exp(x[..., h, n] l), l < L, as one real batched matmul.

    v [..., R, H, N] complex, x [..., H, N] complex (log of the discrete eigenvalues), any leading (batch) dims.
    Split l = q T + j: K[r, h, q, j] = 2 Re sum_n (v exp(x q T))[r, h, n, q] exp(x j)[h, n, j]; with T ~ sqrt(L)
    both factors are O(N sqrt(L)) and the product is a GEMM over 2N (real and imaginary parts), half the work of
    a complex one. Both sets of powers come from one exp.
    """
    T, steps = _power_steps(L, x.real)
    powers = torch.exp(x[..., None] * steps)  # [..., H, N, T + Q]
    W, Z = powers[..., :T], powers[..., T:]
    U = v[..., None] * Z.unsqueeze(-4)  # [..., R, H, N, Q]
    return _power_gemm(W.real, W.imag, U.real, U.imag, L)


def exp_sum_pairs(v: tuple[torch.Tensor, torch.Tensor], x: tuple[torch.Tensor, torch.Tensor], L: int) -> torch.Tensor:
    """`exp_sum` with v and x given as (real part, imaginary part) and no complex tensor anywhere, for
    torch.compile (Inductor takes no complex tensors): exp(x s) = exp(Re x s) (cos(Im x s) + i sin(Im x s))."""
    (v_re, v_im), (x_re, x_im) = v, x
    T, steps = _power_steps(L, x_re)
    size, angle = torch.exp(x_re[..., None] * steps), x_im[..., None] * steps  # [..., H, N, T + Q]
    p_re, p_im = size * torch.cos(angle), size * torch.sin(angle)
    z_re, z_im = p_re[..., T:].unsqueeze(-4), p_im[..., T:].unsqueeze(-4)
    v_re, v_im = v_re[..., None], v_im[..., None]
    return _power_gemm(p_re[..., :T], p_im[..., :T], v_re * z_re - v_im * z_im, v_re * z_im + v_im * z_re, L)


def _power_steps(L: int, like: torch.Tensor) -> tuple[int, torch.Tensor]:
    """T ~ sqrt(L) and the exponents [0, 1, ..., T-1, 0, T, 2T, ..., (Q-1) T] (Q T >= L) of `exp_sum`."""
    T = 1 << max(0, math.ceil(math.log2(max(L, 1)) / 2))
    Q = -(-L // T)
    arange = functools.partial(torch.arange, device=like.device, dtype=like.dtype)  # float64 for a float64 layer
    return T, torch.cat([arange(T), arange(Q) * T])


def _power_gemm(w_re: torch.Tensor, w_im: torch.Tensor, u_re: torch.Tensor, u_im: torch.Tensor,
                L: int) -> torch.Tensor:
    """2 Re sum_n U[..., r, h, n, q] W[..., h, n, j] at l = q T + j < L, as a real GEMM over 2N:
    W [..., H, N, T] and U [..., R, H, N, Q] by parts."""
    *lead, R, H, N, Q = u_re.shape
    T = w_re.shape[-1]
    W_r = torch.cat([w_re, w_im], dim=-2)  # [..., H, 2N, T]
    U_r = torch.cat([u_re, -u_im], dim=-2)  # [..., R, H, 2N, Q]: Re(u w) = Re u Re w - Im u Im w
    U_r = U_r.transpose(-4, -3).transpose(-1, -2).reshape(*lead, H, R * Q, 2 * N)
    out = torch.matmul(U_r, W_r).reshape(*lead, H, R, Q * T)[..., :L]
    return 2.0 * out.transpose(-3, -2)


def dplr_kernel(w: torch.Tensor, B: torch.Tensor, C: torch.Tensor, P: torch.Tensor, dt: torch.Tensor,
                L: int) -> torch.Tensor:
    """S4 kernel [..., C, H, L] of the bilinear-discretised SSM with state matrix diag(w/dt) - P P^*.

    w = dt * Lambda [..., H, N] (half of each conjugate pair), B [..., H, N], C [..., Ch, H, N] (the C-tilde
    attuned to L), P [..., H, N], dt [..., H, 1]; leading dims batch several layers. The Cauchy sums
    r_xy(z_k) = sum_{n, conj} dt x_n y_n / (z_k - w_n) at
    z_k = 2 (1 - omega_k)/(1 + omega_k), omega_k = exp(-2 pi i k / L), equal (1 + omega_k) s_hat_xy[k] with
    s_xy[l] = 2 Re sum_n u_n lambda_n^l, u_n = dt x_n y_n / ((2 - w_n)(1 - lambda_n^L)), lambda = (2+w)/(2-w).
    Woodbury + the bilinear factor 2/(1 + omega) then give
    K_hat = 2 [s_CB - (1 + omega) s_CP s_QB / (1 + (1 + omega) s_QP)],  K = irfft(K_hat, L).
    """
    Ch = C.shape[-3]
    Q = P.conj()
    lam_log = torch.log((2 + w) / (2 - w))  # [..., H, N]
    denom = (2 - w) * (1 - torch.exp(lam_log * L))  # [..., H, N]
    left = torch.cat([C, Q.unsqueeze(-3)], dim=-3)  # [..., Ch+1, H, N]: C-side rows
    right = torch.stack([B, P], dim=-3)  # [..., 2, H, N]: B-side rows
    v = (left.unsqueeze(-3) * right.unsqueeze(-4)) * (dt / denom)[..., None, None, :, :]  # [..., Ch+1, 2, H, N]
    s = exp_sum(v.flatten(-4, -3), lam_log, L).unflatten(-3, (Ch + 1, 2))  # [..., Ch+1, 2, H, L]
    s_f = torch.fft.rfft(s, n=L)  # [..., Ch+1, 2, H, L//2+1]
    k = torch.arange(L // 2 + 1, device=w.device, dtype=torch.float64)
    one_plus_omega = (1 + torch.exp(-2j * math.pi * k / L)).to(s_f.dtype)  # complex64, or complex128 in float64
    cb, cp = s_f[..., :Ch, 0, :, :], s_f[..., :Ch, 1, :, :]
    qb, qp = s_f[..., Ch:, 0, :, :], s_f[..., Ch:, 1, :, :]
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
# Layers


def _with_optim(t: torch.Tensor, optim: dict[str, float] | None) -> nn.Parameter:
    """A parameter carrying its own optimizer settings (read by harness.optim)."""
    p = nn.Parameter(t)
    if optim:
        p._optim = dict(optim)  # type: ignore[attr-defined]
    return p


class SSMLayer(ConvLayer):
    """The parameters S4 and S4D share, [B, L, H] -> [B, L, H].

    Trainable SSM tensors are stored as real views of complex tensors (as published, so AdamW and weight
    decay act on real and imaginary parts): inv_dt [H, 1], A_real / A_imag [S, N/2], B [S, N/2, 2],
    P [S, N/2, 2] (S4 only, `low_rank`), C [Ch, H, N/2, 2], D [1, H]. A, B, P are shared by H/S features
    (n_ssm = S). `init` is (Lambda, P, B), each [N/2] complex128.
    """

    def __init__(self, cfg: S4Config, l_max: int, init: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                 low_rank: bool):
        super().__init__(cfg.d_model, l_max=l_max, bidirectional=cfg.bidirectional, activation=cfg.activation,
                         dropout=cfg.dropout, tie_dropout=cfg.tie_dropout, inner_dropout=True, mask_lengths=True)
        H, N = cfg.d_model, cfg.d_state
        S = H if cfg.n_ssm is None else cfg.n_ssm
        self.dt_transform = cfg.dt_transform
        self.H, self.N2, self.S = H, N // 2, S
        channels = 2 if cfg.bidirectional else 1

        lam, P, B = init
        log_dt = torch.rand(H, 1) * (math.log(cfg.dt_max) - math.log(cfg.dt_min)) + math.log(cfg.dt_min)
        C = torch.randn(channels, H, N // 2, dtype=torch.complex64)  # real, imag parts ~ N(0, 1/2)

        ssm_opt = {"weight_decay": cfg.ssm_weight_decay} | ({"lr": cfg.ssm_lr} if cfg.ssm_lr is not None else {})
        dt_opt = {"weight_decay": cfg.ssm_weight_decay} | ({"lr": cfg.dt_lr} if cfg.dt_lr is not None else {})
        inverse = DT_TRANSFORMS[cfg.dt_transform][1]
        self.inv_dt = _with_optim(inverse(torch.exp(log_dt).clamp(min=1e-4)), dt_opt)
        self.A_real = _with_optim(torch.log((-lam.real).clamp(min=1e-4)).float().expand(S, -1).clone(), ssm_opt)
        self.A_imag = _with_optim((-lam.imag).clamp(min=1e-4).float().expand(S, -1).clone(), ssm_opt)
        self.B = _with_optim(torch.view_as_real(B.to(torch.complex64)).expand(S, -1, -1).clone(), ssm_opt)
        if low_rank:
            self.P = _with_optim(torch.view_as_real(P.to(torch.complex64)).expand(S, -1, -1).clone(), ssm_opt)
        self.C = _with_optim(torch.view_as_real(C).clone(), {"lr": cfg.c_lr} if cfg.c_lr is not None else None)
        self.D = nn.Parameter(torch.randn(1, H))

    def batch_key(self) -> tuple[Any, ...]:
        return (*super().batch_key(), self.N2, self.S, self.dt_transform, self.C.shape[0])

    @classmethod
    def stacked_params(cls, layers: list[SSMLayer], names: tuple[str, ...]) -> list[torch.Tensor]:
        """dt [Y, H, 1] and the named parameters of the Y layers, stacked (a view for a single layer)."""
        dt = DT_TRANSFORMS[layers[0].dt_transform][0](stacked([layer.inv_dt for layer in layers]))
        return [dt] + [stacked([getattr(layer, name) for layer in layers]) for name in names]

    def params(self) -> dict[str, torch.Tensor]:
        """dt [H, 1], A [H, N/2], B [H, N/2], C [Ch, H, N/2] in complex form, broadcast to the H features."""
        dt = DT_TRANSFORMS[self.dt_transform][0](self.inv_dt)  # [H, 1]
        return {"dt": dt, "A": tile(state_matrix(self.A_real, self.A_imag), self.H),
                "B": tile(torch.view_as_complex(self.B), self.H), "C": torch.view_as_complex(self.C)}


def state_matrix(A_real: torch.Tensor, A_imag: torch.Tensor) -> torch.Tensor:
    """The diagonal of A (complex) from its stored parameters: A = -exp(A_real) - i A_imag."""
    return -torch.exp(A_real) - 1j * A_imag


def tile(z: torch.Tensor, H: int) -> torch.Tensor:
    """[..., S, N] -> [..., H, N]: feature h uses copy h % S (torch.repeat's order)."""
    S = z.shape[-2]
    return z if S == H else z.repeat(*([1] * (z.dim() - 2)), H // S, 1)


def _sync_attuned_length(module: S4Layer, incompatible_keys: Any) -> None:
    """After load_state_dict: refresh the Python mirror of the loaded l_kernel (one host sync, once)."""
    module._lk = int(module.l_kernel)


class S4Layer(SSMLayer):
    """S4 convolution layer: HiPPO-LegS DPLR state matrix, bilinear discretisation, [B, L, H] -> [B, L, H].

    Steps through the convolution's history (`ConvLayer.step`): the published DPLR recurrence needs the
    dense state matrix per step.
    """

    def __init__(self, cfg: S4Config, l_max: int):
        super().__init__(cfg, l_max, hippo_legs_nplr(cfg.d_state), low_rank=True)
        # S4 trains C-tilde = C (I - A_bar^L) for the length L it is attuned to (published "C tilde").
        self.register_buffer("l_kernel", torch.tensor(0))
        # _lk, the Python mirror of l_kernel: reading the buffer in kernel() would sync host and GPU on every call,
        # leaving the GPU idle while the ~100 small kernel-generation ops are launched.
        self.register_load_state_dict_post_hook(_sync_attuned_length)
        self._attune(l_max)

    def params(self) -> dict[str, torch.Tensor]:
        """`SSMLayer.params` and the low-rank term P [H, N/2]."""
        return super().params() | {"P": tile(torch.view_as_complex(self.P), self.H)}

    @torch.no_grad()
    def _attune(self, L: int) -> None:
        """Replace C by C-tilde = C (I - A_bar^L), attuned to the kernel length L (once, at construction)."""
        p = self.params()
        A_bar, _ = dense_discretisation(p["A"], p["P"], p["B"], p["dt"])
        C = torch.view_as_complex(self.C).cdouble()
        C_full = torch.cat([C, C.conj()], dim=-1)
        C_new = C_full - torch.einsum("chn,hnm->chm", C_full, torch.linalg.matrix_power(A_bar, L))
        self.C.copy_(torch.view_as_real(C_new[..., : self.N2].to(torch.complex64)))
        self._lk = L
        self.l_kernel.fill_(L)

    @torch.no_grad()
    def extend_length(self, L: int) -> None:
        """The kernel computed to L: as the published kernel does when asked for more than it is attuned to
        (state-spaces/s4 SSMKernelDPLR._setup_C), C-tilde is attuned to twice the length, C~ (I + A_bar^l), until
        l >= L ((I - A^l)(I + A^l) = I - A^2l)."""
        super().extend_length(L)
        while self._lk < L:
            p = self.params()
            A_bar, _ = dense_discretisation(p["A"], p["P"], p["B"], p["dt"])
            C = torch.view_as_complex(self.C).cdouble()
            C_full = torch.cat([C, C.conj()], dim=-1)
            C_new = C_full + torch.einsum("chn,hnm->chm", C_full, torch.linalg.matrix_power(A_bar, self._lk))
            self.C.copy_(torch.view_as_real(C_new[..., : self.N2].to(torch.complex64)))
            self._lk *= 2
            self.l_kernel.fill_(self._lk)

    def batch_key(self) -> tuple[Any, ...]:
        return (*super().batch_key(), self._lk)

    @classmethod
    def stacked_taps(cls, layers: list[S4Layer], L: int) -> torch.Tensor:
        """The first min(L, l_max) taps of each layer's kernel of length l_kernel, the one its C-tilde is attuned
        to (as published: an input longer than l_max sees no lag of l_max or more)."""
        tensors = cls.stacked_params(layers, ("A_real", "A_imag", "B", "P", "C"))
        return s4_taps(tensors, min(L, layers[0].l_max), layers[0]._lk)


def s4_taps(tensors: list[torch.Tensor], L: int, l_kernel: int) -> torch.Tensor:
    """Taps [Y, Ch, H, L] of Y stacked S4 layers (L <= l_kernel) from their real parameters: dt [Y, H, 1], A_real,
    A_imag [Y, S, N/2], B, P [Y, S, N/2, 2], C [Y, Ch, H, N/2, 2]; l_kernel the length C-tilde is attuned to.

    Eager code computes them in complex arithmetic, as the published kernel does. Under torch.compile, which
    takes no complex arithmetic, the same maths runs on pairs of real tensors (`_s4_taps_pairs`), which Inductor
    traces, fuses and differentiates: one opaque op for the whole would recompute the kernel in its backward. Only
    its two FFTs are opaque (`rfft_pairs`, `irfft_pairs`: real in, real out), so no complex tensor reaches it."""
    if torch.compiler.is_compiling():
        return _s4_taps_pairs(tensors, l_kernel)[..., :L]
    return _s4_taps_complex(tensors, l_kernel)[..., :L]


def _s4_taps_complex(tensors: list[torch.Tensor], L: int) -> torch.Tensor:
    dt, A_real, A_imag, B, P, C = tensors
    H = dt.shape[-2]
    w = dt * tile(state_matrix(A_real, A_imag), H)
    return dplr_kernel(w, tile(torch.view_as_complex(B), H), torch.view_as_complex(C),
                       tile(torch.view_as_complex(P), H), dt, L)


def _s4_taps_pairs(tensors: list[torch.Tensor], L: int) -> torch.Tensor:
    """`dplr_kernel` of `_s4_taps_complex` with every complex number held as (real part, imaginary part)."""
    dt, A_real, A_imag, B, P, C = tensors
    H = dt.shape[-2]
    A = state_matrix_pair(A_real, A_imag, H)
    w = dt * A[0], dt * A[1]
    B, P, C = tiled_pair(B, H), tiled_pair(P, H), tiled_pair(C)
    ahead, behind = (2 + w[0], w[1]), (2 - w[0], -w[1])
    # log lambda, lambda = (2 + w)/(2 - w): both real parts are positive (Re w < 0), so the difference of the two
    # arguments is the principal one the complex log gives
    lam_log = (0.5 * torch.log((ahead[0] ** 2 + ahead[1] ** 2) / (behind[0] ** 2 + behind[1] ** 2)),
               torch.atan2(ahead[1], ahead[0]) - torch.atan2(behind[1], behind[0]))
    size, angle = torch.exp(lam_log[0] * L), lam_log[1] * L
    denom = pair_times(behind, (1 - size * torch.cos(angle), -size * torch.sin(angle)))
    scale = pair_over((dt.expand_as(denom[0]), torch.zeros_like(denom[0])), denom)  # dt / denom
    left = [torch.cat([c, q.unsqueeze(-3)], dim=-3).unsqueeze(-3) for c, q in zip(C, (P[0], -P[1]), strict=True)]
    right = [torch.stack([b, p], dim=-3).unsqueeze(-4) for b, p in zip(B, P, strict=True)]
    v = pair_times(pair_times(left, right), (scale[0][..., None, None, :, :], scale[1][..., None, None, :, :]))
    Ch = C[0].shape[-3]
    s = exp_sum_pairs((v[0].flatten(-4, -3), v[1].flatten(-4, -3)), lam_log, L).unflatten(-3, (Ch + 1, 2))
    s_f = rfft_pairs(s, L)  # [..., Ch+1, 2, H, L//2+1, 2]
    k = torch.arange(L // 2 + 1, device=s.device, dtype=torch.float64) * (-2 * math.pi / L)
    opo = (1 + torch.cos(k)).to(s.dtype), torch.sin(k).to(s.dtype)  # 1 + omega_k
    c, q = slice(None, Ch), slice(Ch, None)  # rows of C, and the row of Q
    cb, cp, qb, qp = (tiled_pair(s_f[..., rows, col, :, :, :]) for rows, col in ((c, 0), (c, 1), (q, 0), (q, 1)))
    opo_qp = pair_times(opo, qp)
    woodbury = pair_over(pair_times(pair_times(opo, cp), qb), (1 + opo_qp[0], opo_qp[1]))
    k_f = torch.stack([2 * (cb[0] - woodbury[0]), 2 * (cb[1] - woodbury[1])], dim=-1)
    return irfft_pairs(k_f, L)


# The two FFTs of `_s4_taps_pairs` as custom ops (torch.library) with real inputs and outputs, spectra as
# torch.view_as_real gives them ([..., n//2+1, 2]): so no complex tensor reaches Inductor, which has no complex
# code generation, and each backward is the FFT's adjoint written out.


def _scale_edge_bins(spectrum: torch.Tensor, n: int, factor: float) -> torch.Tensor:
    """`spectrum` [..., n//2+1, 2] (owned, changed in place) with its DC bin, and for even n its Nyquist bin, times
    `factor`: the bins a length-n real signal's half spectrum holds once, where every other bin stands for two."""
    spectrum[..., 0, :] *= factor
    if n % 2 == 0:
        spectrum[..., -1, :] *= factor
    return spectrum


@torch.library.custom_op("seqbench::rfft_pairs", mutates_args=())
def rfft_pairs(x: torch.Tensor, n: int) -> torch.Tensor:
    """torch.view_as_real(torch.fft.rfft(x, n=n)): x [..., m] float32 or float64 (the kernels are made with
    autocast off, models.longconv.share_taps), m <= n."""
    return torch.view_as_real(torch.fft.rfft(x, n=n)).contiguous()  # the fake's layout, whatever x's


@rfft_pairs.register_fake
def _(x: torch.Tensor, n: int) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], n // 2 + 1, 2))


def _rfft_pairs_grad(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
    # y_k = sum_t x_t e^{-2 pi i k t / n} for k <= n/2, its real and imaginary parts independent: the gradient is
    # sum_k Re(g_k e^{+2 pi i k t / n}), which is n/2 irfft(g) once g's first (and, n even, last) bin is doubled:
    # irfft doubles every other bin, and ignores imaginary parts only where their sines vanish at every t.
    return _rfft_pairs_backward(g, ctx.n, ctx.m), None


@torch.library.custom_op("seqbench::rfft_pairs_backward", mutates_args=())
def _rfft_pairs_backward(g: torch.Tensor, n: int, m: int) -> torch.Tensor:
    spectrum = _scale_edge_bins(g.clone(memory_format=torch.contiguous_format), n, 2.0)  # pairs adjacent
    return (torch.fft.irfft(torch.view_as_complex(spectrum), n=n)[..., :m] * (n / 2)).contiguous()


@_rfft_pairs_backward.register_fake
def _(g: torch.Tensor, n: int, m: int) -> torch.Tensor:
    return g.new_empty((*g.shape[:-2], m))


def _setup_rfft_pairs(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
    ctx.n, ctx.m = inputs[1], inputs[0].shape[-1]


rfft_pairs.register_autograd(_rfft_pairs_grad, setup_context=_setup_rfft_pairs)


@torch.library.custom_op("seqbench::irfft_pairs", mutates_args=())
def irfft_pairs(z: torch.Tensor, n: int) -> torch.Tensor:
    """torch.fft.irfft(torch.view_as_complex(z), n=n): z [..., n//2+1, 2], the result [..., n] real."""
    return torch.fft.irfft(torch.view_as_complex(z.contiguous()), n=n).contiguous()


@irfft_pairs.register_fake
def _(z: torch.Tensor, n: int) -> torch.Tensor:
    return z.new_empty((*z.shape[:-2], n))


def _irfft_pairs_grad(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
    # x_t = (1/n) sum_k c_k Re(z_k e^{2 pi i k t / n}), c_k = 2 but 1 at k = 0 and the Nyquist bin (whose imaginary
    # parts irfft ignores, as their sines vanish at every t): the gradient is c_k / n times rfft(g).
    return _irfft_pairs_backward(g, ctx.n), None


@torch.library.custom_op("seqbench::irfft_pairs_backward", mutates_args=())
def _irfft_pairs_backward(g: torch.Tensor, n: int) -> torch.Tensor:
    return _scale_edge_bins((torch.view_as_real(torch.fft.rfft(g, n=n)) * (2.0 / n)).contiguous(), n, 0.5)


@_irfft_pairs_backward.register_fake
def _(g: torch.Tensor, n: int) -> torch.Tensor:
    return g.new_empty((*g.shape[:-1], n // 2 + 1, 2))


def _setup_irfft_pairs(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
    ctx.n = inputs[1]


irfft_pairs.register_autograd(_irfft_pairs_grad, setup_context=_setup_irfft_pairs)


Pair = tuple[torch.Tensor, torch.Tensor]  # (real part, imaginary part) of a complex tensor


def state_matrix_pair(A_real: torch.Tensor, A_imag: torch.Tensor, H: int) -> Pair:
    """`state_matrix`, tiled to the H features, as a pair."""
    return tile(-torch.exp(A_real), H), tile(-A_imag, H)


def tiled_pair(z: torch.Tensor, H: int | None = None) -> Pair:
    """A tensor stored as torch.view_as_real ([..., 2]) as a pair, tiled to the H features when H is given."""
    if H is None:
        return z[..., 0], z[..., 1]
    return tile(z[..., 0], H), tile(z[..., 1], H)


def pair_times(u: Pair, v: Pair) -> Pair:
    return u[0] * v[0] - u[1] * v[1], u[0] * v[1] + u[1] * v[0]


def pair_over(u: Pair, v: Pair) -> Pair:
    size = v[0] ** 2 + v[1] ** 2
    return (u[0] * v[0] + u[1] * v[1]) / size, (u[1] * v[0] - u[0] * v[1]) / size


# ----------------------------------------------------------------------------------------------------------
# Builder


@MODELS.register("s4", S4Config)
def build(cfg: S4Config, spec: TaskSpec) -> nn.Module:
    """S4: HiPPO-LegS DPLR state-space layers (Gu et al. 2022), state-spaces/s4 v4 defaults."""
    check_causal(cfg, spec)
    l_max = cfg.l_max or spec.seq_len
    return s4_backbone(cfg, spec, [S4Layer(cfg, l_max) for _ in range(cfg.n_layers)])
