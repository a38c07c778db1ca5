"""S4D: the diagonal state-space layer, in plain PyTorch.

Paper: Gu, Gupta, Goel & Ré, "On the Parameterization and Initialization of Diagonal State Space Models",
NeurIPS 2022. Published code: state-spaces/s4, `models/s4/s4d.py` and `src/models/sequence/kernels/ssm.py`
(SSMKernelDiag). The state matrix is diagonal: S4D-Lin (A_n = -1/2 + i pi n, the default), S4D-Inv, or the
diagonal part of HiPPO-LegS; ZOH or bilinear discretisation per mode. The kernel K_l = 2 Re sum_n C_n B_bar_n
A_bar_n^l is one `exp_sum` (models.s4), the convolution `models.longconv`'s, and stepping is the O(N) recurrence
s <- A_bar s + B_bar u, y = 2 Re C s + D u.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.errors import ConfigError
from harness.task import TaskSpec
from models import MODELS
from models.s4 import (
    S4Config,
    SSMLayer,
    check_ssm_config,
    exp_sum,
    exp_sum_pairs,
    hippo_legs_nplr,
    pair_over,
    pair_times,
    state_matrix,
    state_matrix_pair,
    tile,
    tiled_pair,
)
from models.s4block import check_causal, s4_backbone


@dataclass
class S4DConfig(S4Config):
    """S4D: diagonal state-space layers (Gu et al. 2022, S4D-Lin by default)."""

    name: str = "s4d"
    mode: str = "diag"  # diag (the only S4D kernel)
    init: str = "diag-lin"  # diag-lin | diag-inv | legs
    disc: str = "zoh"  # zoh | bilinear
    # dt = exp(log dt) as in v3 (src/models/sequence/ss/kernel.py, SSKernelDiag), the code of the S4D paper's
    # results; softplus came with v4 (its configs/model/layer/s4.yaml: "use 'exp' for backwards-compatible ...").
    dt_transform: str = "exp"  # exp | softplus

    def __post_init__(self) -> None:
        check_ssm_config(self, modes=("diag",), inits=tuple(DIAG_INITS), discs=("zoh", "bilinear"))


def _lin(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = torch.arange(N // 2, dtype=torch.float64)
    return -0.5 - 1j * math.pi * n, torch.ones(N // 2, dtype=torch.complex128)


def _inv(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = torch.arange(N // 2, dtype=torch.float64)
    return -0.5 - 1j * (N / math.pi) * (N / (2 * n + 1) - 1), torch.ones(N // 2, dtype=torch.complex128)


def _legs(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    lam, _, B = hippo_legs_nplr(N)
    return lam, B


# init -> (Lambda, B), each [N/2] complex128, from the state size N.
DIAG_INITS: dict[str, Callable[[int], tuple[torch.Tensor, torch.Tensor]]] = {
    "diag-lin": _lin, "diag-inv": _inv, "legs": _legs, "diag-legs": _legs,
}


class S4DLayer(SSMLayer):
    """S4D convolution layer, [B, L, H] -> [B, L, H]; parameters as `SSMLayer` (no P)."""

    def __init__(self, cfg: S4Config, l_max: int):
        lam, B = DIAG_INITS[cfg.init](cfg.d_state)
        super().__init__(cfg, l_max, (lam, torch.zeros_like(B), B), low_rank=False)
        self.disc = cfg.disc

    def batch_key(self) -> tuple[Any, ...]:
        return (*super().batch_key(), self.disc)

    @classmethod
    def stacked_taps(cls, layers: list[S4DLayer], L: int) -> torch.Tensor:
        """K_l = 2 Re sum_n C_n B_bar_n A_bar_n^l for l < min(L, l_max), of each layer."""
        tensors = cls.stacked_params(layers, ("A_real", "A_imag", "B", "C"))
        return s4d_taps(tensors, L, layers[0].l_max, layers[0].disc)

    def discrete(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log A_bar [H, N/2], B_bar [H, N/2], C [Ch, H, N/2] (ZOH or bilinear per diagonal mode)."""
        p = self.params()
        return (*discretise(p["dt"], p["A"], p["B"], self.disc), p["C"])

    def init_state(self, batch_size: int, device: torch.device | str) -> torch.Tensor:
        """The SSM state s [B, H, N/2] (complex), zero before position 0."""
        if self.bidirectional:
            raise ConfigError("step() needs a causal layer; set model.bidirectional=false")
        return torch.zeros(batch_size, self.H, self.N2, dtype=torch.complex64, device=device)

    def step(self, x_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """s <- A_bar s + B_bar u;  y = 2 Re(C s) + D u  (one position, O(H N))."""
        u = x_t.float()
        log_a, b_bar, C = self.discrete()
        state = torch.exp(log_a) * state + b_bar * u[..., None]
        y = 2 * (C[0] * state).sum(-1).real + self.D[0] * u
        return self.drop(self.act(self.drop_inner(y.to(x_t.dtype)))), state


def discretise(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, disc: str) -> tuple[torch.Tensor, torch.Tensor]:
    """log A_bar and B_bar of each diagonal mode, ZOH or bilinear; dt [..., H, 1], A and B [..., H, N/2]."""
    dtA = dt * A
    if disc == "zoh":
        return dtA, B * torch.expm1(dtA) / A
    return torch.log((1 + dtA / 2) / (1 - dtA / 2)), B * dt / (1 - dtA / 2)


def s4d_taps(tensors: list[torch.Tensor], L: int, l_max: int, disc: str) -> torch.Tensor:
    """Taps [Y, Ch, H, min(L, l_max)] of Y stacked S4D layers from their real parameters: dt [Y, H, 1], A_real,
    A_imag [Y, S, N/2], B [Y, S, N/2, 2], C [Y, Ch, H, N/2, 2]; disc the discretisation.

    Eager code computes them in complex arithmetic, as the published kernel does. Under torch.compile the same
    maths runs on pairs of real tensors (`_s4d_taps_pairs`), which Inductor traces, fuses and differentiates
    itself (an opaque custom op, as this kernel was before, recomputed the kernel in its backward in many small
    launches: that made the compiled S4D step slower than the eager one). The compiled kernel is always l_max
    long, then cut: a batch's length may be symbolic there (variable-length tasks), and the power split of
    `exp_sum_pairs` needs a number."""
    if torch.compiler.is_compiling():
        return _s4d_taps_pairs(tensors, l_max, disc)[..., :L]
    return _s4d_taps_complex(tensors, min(L, l_max), disc)


def _s4d_taps_complex(tensors: list[torch.Tensor], L: int, disc: str) -> torch.Tensor:
    dt, A_real, A_imag, B, C = tensors
    H = dt.shape[-2]
    log_a, b_bar = discretise(dt, tile(state_matrix(A_real, A_imag), H), tile(torch.view_as_complex(B), H), disc)
    return exp_sum(torch.view_as_complex(C) * b_bar.unsqueeze(-3), log_a, L)


def _s4d_taps_pairs(tensors: list[torch.Tensor], L: int, disc: str) -> torch.Tensor:
    """`_s4d_taps_complex` with every complex number held as (real part, imaginary part)."""
    dt, A_real, A_imag, B, C = tensors
    H = dt.shape[-2]
    a = state_matrix_pair(A_real, A_imag, H)
    x = dt * a[0], dt * a[1]  # dt A
    if disc == "zoh":  # log A_bar = dt A, B_bar = B (exp(dt A) - 1) / A
        log_a = x
        grown = torch.expm1(x[0])
        # exp(dt A) - 1 by parts; cos - 1 = -2 sin^2(./2) keeps its precision for a small angle
        step = grown * torch.cos(x[1]) - 2 * torch.sin(x[1] / 2) ** 2, (grown + 1) * torch.sin(x[1])
        b_bar = pair_times(pair_over(step, a), tiled_pair(B, H))
    else:  # bilinear: log A_bar = log(1 + dt A/2) - log(1 - dt A/2) (equal powers A_bar^l), B_bar = B dt / (1 - dt A/2)
        ahead, behind = (1 + x[0] / 2, x[1] / 2), (1 - x[0] / 2, -x[1] / 2)
        log_a = (0.5 * torch.log((ahead[0] ** 2 + ahead[1] ** 2) / (behind[0] ** 2 + behind[1] ** 2)),
                 torch.atan2(ahead[1], ahead[0]) - torch.atan2(behind[1], behind[0]))
        b = tiled_pair(B, H)
        b_bar = pair_over((dt * b[0], dt * b[1]), behind)
    return exp_sum_pairs(pair_times(tiled_pair(C), (b_bar[0].unsqueeze(-3), b_bar[1].unsqueeze(-3))), log_a, L)


@MODELS.register("s4d", S4DConfig)
def build(cfg: S4DConfig, spec: TaskSpec) -> nn.Module:
    """S4D: diagonal state-space layers (Gu et al. 2022, S4D-Lin by default)."""
    check_causal(cfg, spec)
    l_max = cfg.l_max or spec.seq_len
    return s4_backbone(cfg, spec, [S4DLayer(cfg, l_max) for _ in range(cfg.n_layers)])
