"""SGConv: structured global convolution with a multi-scale kernel.

Paper: Li, Cai, Zhang, Chen & Dey, "What Makes Convolutional Models Great on Long Sequence Modeling?", ICLR 2023.
Published code: ctlllll/SGConv, `gconv_standalone.py` (GConv), run in the state-spaces/s4 backbone with the
configs `configs/experiment/lra/gconv-lra-*.yaml`. The kernel of each feature is assembled from n small sub-kernels
of kernel_dim taps: sub-kernel i is upsampled by 2^max(0, i-1) (linear interpolation, align_corners=False),
weighted by m_h^(n-1-i) (the finest scale gets the largest factor, so scale i carries the paper's alpha^i decay,
alpha = 1/m) and concatenated; n = 1 + ceil(log2(l_max / K)). The full-length kernel is divided by its L2 norm at
initialisation (a frozen buffer, as published).

Speed: only the scales that start before the batch length are built (the others still get zero gradients, as in
the published layer, which builds every scale and crops the kernel), the kernels of all layers are assembled
together, one interpolation and one product per scale for the whole model (`models.longconv.share_taps`), in fp32,
and the convolution is one fp32 rfft/irfft of size 2L (autocast disabled), shared with S4 (`models.longconv`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.config import ModelConfig, positive
from harness.errors import ConfigError
from harness.task import TaskSpec
from models import MODELS
from models._validate import at_least
from models.longconv import ConvLayer, stacked
from models.s4block import check_block_config, check_causal, s4_backbone


@dataclass
class SGConvConfig(ModelConfig):
    """SGConv: multi-scale global convolution (Li et al. 2023), defaults of the published LRA configs."""

    name: str = "sgconv"
    d_model: int = 128
    n_layers: int = 4
    kernel_dim: int = 64
    n_scales: int | None = None  # null: 1 + ceil(log2(l_max / kernel_dim)) - init_scale
    init_scale: int = 0
    mode: str = "cat_randn"  # cat|sum _ randn|cos [_nearest] [_learnable[_fixed]]
    decay_min: float = 2.0
    decay_max: float = 2.0
    kernel_lr: float | None = 0.001  # lr of the sub-kernels (null: global)
    bidirectional: bool = False
    activation: str = "gelu"  # gelu | silu | swish | id | none
    final_act: str = "glu"  # glu | gelu | id
    dropout: float = 0.0
    tie_dropout: bool = True  # residual dropout tied over length (the S4 codebase's model default)
    prenorm: bool = True
    norm: str = "layer"  # layer | batch | none
    l_max: int | None = None  # null: the task's seq_len
    d_state: int = 64  # not used by the layer (published signature); part of existing run ids

    def __post_init__(self) -> None:
        check_block_config(self)
        positive("model.kernel_dim", self.kernel_dim, integer=True)
        positive("model.n_scales", self.n_scales, integer=True, optional=True)
        at_least("model.init_scale", self.init_scale, 0)
        if ("cat" in self.mode) == ("sum" in self.mode) or ("randn" in self.mode) == ("cos" in self.mode):
            raise ConfigError(f"model.mode={self.mode!r} must contain one of cat, sum and one of randn, cos "
                              "(e.g. cat_randn, sum_cos, cat_randn_learnable_fixed)")


class SGConvLayer(ConvLayer):
    """[B, L, H] -> multi-scale global convolution (+ D u) -> activation -> dropout (no length masking)."""

    def __init__(self, cfg: SGConvConfig, l_max: int):
        # SGConv's dropout sits after the activation and is elementwise (transposed=False in the LRA configs).
        super().__init__(cfg.d_model, l_max=l_max, bidirectional=cfg.bidirectional, activation=cfg.activation,
                         dropout=cfg.dropout, tie_dropout=False, inner_dropout=False, mask_lengths=False)
        H, K, mode = cfg.d_model, cfg.kernel_dim, cfg.mode
        if l_max < K * 2 ** cfg.init_scale:
            raise ConfigError(f"SGConv needs l_max >= kernel_dim * 2^init_scale, got l_max={l_max}, "
                              f"model.kernel_dim={K}, model.init_scale={cfg.init_scale}")
        self.mode, self.K, self.s0 = mode, K, cfg.init_scale
        self.n = cfg.n_scales if cfg.n_scales is not None else 1 + math.ceil(math.log2(l_max / K)) - cfg.init_scale
        self.interp = "nearest" if "nearest" in mode else "linear"
        channels = 2 if cfg.bidirectional else 1
        self.kernel_list = nn.ParameterList()
        for _ in range(self.n):
            if "randn" in mode:
                w = torch.randn(channels, H, K)
            else:  # row h = cos(linspace(0, 2 pi h, K)), rows randomly permuted
                w = torch.stack([torch.cos(torch.linspace(0, 2 * math.pi * h, K)) for h in range(H)])
                w = w[torch.randperm(H)].expand(channels, H, K).clone()
            p = nn.Parameter(w)
            if cfg.kernel_lr is not None:
                # Published: only the lr is overridden; the kernel keeps the global weight decay.
                p._optim = {"lr": cfg.kernel_lr}  # type: ignore[attr-defined]
            self.kernel_list.append(p)
        if "learnable" in mode:  # polynomial envelope (t+1)^-a_h instead of per-scale weights
            self.decay = nn.Parameter(torch.rand(H) * (cfg.decay_max - cfg.decay_min) + cfg.decay_min,
                                      requires_grad="fixed" not in mode)
            if "fixed" not in mode and cfg.kernel_lr is not None:
                self.decay._optim = {"lr": cfg.kernel_lr}  # type: ignore[attr-defined]
            self.register_buffer("multiplier", torch.ones(1, H, 1))
        else:
            self.register_buffer("multiplier", torch.linspace(cfg.decay_min, cfg.decay_max, H).view(1, H, 1))
        self.D = nn.Parameter(torch.randn(1, H))
        # Normalise by the norm of the full kernel at initialisation, then keep that constant (published).
        self.register_buffer("kernel_norm", torch.ones(channels, H, 1))
        with torch.no_grad():
            self.kernel_norm.copy_(self.raw_kernel(self.full_length).norm(dim=-1, keepdim=True))

    @property
    def full_length(self) -> int:
        return self.K * 2 ** (self.n - 1 + self.s0)

    def batch_key(self) -> tuple[Any, ...]:
        return (*super().batch_key(), self.n, self.K, self.s0, self.mode)

    def raw_kernel(self, L: int) -> torch.Tensor:
        """Un-normalised kernel [C, H, min(L, full_length)], building only the scales that start before L."""
        return self.stacked_raw_kernels([self], L)[0]

    @classmethod
    def stacked_raw_kernels(cls, layers: list[SGConvLayer], L: int) -> torch.Tensor:
        """`raw_kernel` of Y layers with equal `batch_key`s at once: [Y, C, H, min(L, full_length)]."""
        first = layers[0]
        # Scale-major, so that each scale's sub-kernels of all layers are one contiguous [Y, C, H, K] block.
        scales = stacked([layer.kernel_list[i] for i in range(first.n) for layer in layers])
        multiplier = stacked([layer.multiplier for layer in layers])
        decay = stacked([layer.decay for layer in layers]) if "learnable" in first.mode else None
        return sgconv_taps(scales, multiplier, decay, min(L, first.full_length), first.n, first.K, first.s0, first.mode)

    @classmethod
    def stacked_taps(cls, layers: list[SGConvLayer], L: int) -> torch.Tensor:
        return cls.stacked_raw_kernels(layers, L) / stacked([layer.kernel_norm for layer in layers])


def scale_of(i: int, K: int, s0: int, mode: str) -> tuple[int, int]:
    """(upsampling factor, start position) of sub-kernel i of K taps (s0: the first scale's exponent)."""
    if "cat" in mode:
        return 2 ** (max(0, i - 1) + s0), (0 if i == 0 else K * 2 ** (s0 + i - 1))
    return 2 ** (i + s0), 0


def sgconv_taps(scales: torch.Tensor, multiplier: torch.Tensor, decay: torch.Tensor | None, L: int, n: int, K: int,
                s0: int, mode: str) -> torch.Tensor:
    """[Y, C, H, L] un-normalised kernels of Y stacked layers from their n scales' sub-kernels of K taps: scales
    [n Y, C, H, K] (scale-major), multipliers [Y, 1, H, 1], decays [Y, H] (learnable modes, else None)."""
    Y = multiplier.shape[0]
    dtype = torch.promote_types(scales.dtype, torch.float32)  # float64 only for a float64 layer
    interp = "nearest" if "nearest" in mode else "linear"
    parts = []
    # A scale that starts past L is left out; unbind's backward still gives its sub-kernels a zero gradient (not
    # None), as the published layer, which builds every scale and crops: AdamW's weight decay and moments act on it.
    for i, w in enumerate(scales.to(dtype).unflatten(0, (n, Y)).unbind(0)):
        f, start = scale_of(i, K, s0, mode)
        if start >= L:
            continue
        up = upsample(w.flatten(0, 1), f, interp).unflatten(0, (Y, -1)) if f > 1 else w
        parts.append(up * multiplier ** (n - 1 - i))
    full_length = K * 2 ** (n - 1 + s0)
    if "cat" in mode:
        total = torch.cat(parts, dim=-1)
    else:
        total = sum(F.pad(p, (0, full_length - p.shape[-1])) for p in parts)  # type: ignore[assignment]
    total = total[..., :L]
    if decay is not None:  # the learnable modes
        t = torch.arange(L, device=total.device, dtype=dtype)
        total = total * torch.exp(-decay.to(dtype)[:, None, :, None] * torch.log1p(t))
    return total


def upsample(w: torch.Tensor, f: int, interp: str) -> torch.Tensor:
    """F.interpolate(w, scale_factor=f, mode=interp) along the last dim (linear: align_corners=False) for an integer
    f. Under torch.compile the same as shifted copies of w and constant weights: Inductor's CPU code for
    F.interpolate's backward (a scatter) fails on some shapes. Equal up to the rounding of the weights."""
    if not torch.compiler.is_compiling():
        return F.interpolate(w, scale_factor=f, mode=interp)
    if interp == "nearest":
        return w.unsqueeze(-1).expand(*w.shape, f).flatten(-2)
    # Output r of each input sits t_r inputs after it; at the ends the neighbour is the input itself (the clamp).
    t = ((torch.arange(f, dtype=torch.float64, device=w.device) + 0.5) / f - 0.5).to(w.dtype)  # no host copy
    before, after = (-t).clamp(min=0), t.clamp(min=0)
    previous = torch.cat([w[..., :1], w[..., :-1]], dim=-1)[..., None]
    following = torch.cat([w[..., 1:], w[..., -1:]], dim=-1)[..., None]
    return (previous * before + w[..., None] * (1 - before - after) + following * after).flatten(-2)


@MODELS.register("sgconv", SGConvConfig)
def build(cfg: SGConvConfig, spec: TaskSpec) -> nn.Module:
    """SGConv: multi-scale global convolution (Li et al. 2023), defaults of the published LRA configs."""
    check_causal(cfg, spec)
    l_max = cfg.l_max or spec.seq_len
    return s4_backbone(cfg, spec, [SGConvLayer(cfg, l_max) for _ in range(cfg.n_layers)])
