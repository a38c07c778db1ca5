"""Independent reference computations that several model test modules check against (brute force, float64)."""

from __future__ import annotations

import torch


def direct_conv(u: torch.Tensor, k: torch.Tensor, bidirectional: bool) -> torch.Tensor:
    """Brute-force loop of the published causal / bidirectional convolution: u [B, H, L], k [C, H, L] -> [B, H, L].

    y[t] = sum_{s<=t} k0[t-s] u[s], and when bidirectional also + sum_{s>t} k1[s-t-1] u[s] (the backward
    kernel starts at the next step, as in state-spaces/s4's FFTConv).
    """
    B, H, L = u.shape
    y = torch.zeros(B, H, L, dtype=torch.float64)
    for t in range(L):
        for s in range(L):
            if s <= t:
                y[..., t] += k[0, :, t - s].double() * u[..., s].double()
            elif bidirectional:
                y[..., t] += k[1, :, s - t - 1].double() * u[..., s].double()
    return y


def legs_dense(N: int) -> torch.Tensor:
    """The dense HiPPO-LegS matrix (N x N): A_nk = -sqrt(2n+1) sqrt(2k+1) (n > k), -(n+1) (n = k), 0 above."""
    n = torch.arange(N, dtype=torch.float64)
    r = torch.sqrt(2 * n + 1)
    return torch.tril(-(r[:, None] * r[None, :]), -1) - torch.diag(n + 1)
