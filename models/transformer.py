"""Transformer baseline: pre-norm blocks of multi-head self-attention and an MLP.

Attention goes through `F.scaled_dot_product_attention`, so GPUs use the fused flash or
memory-efficient kernels and no (L x L) matrix is kept for the backward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.config import ModelConfig
from models import MODELS
from models.backbone import Backbone, Encoder, ResidualBlock, length_mask
from tasks.base import TaskSpec


@dataclass
class TransformerConfig(ModelConfig):
    """Pre-norm Transformer encoder (causal for autoregressive tasks)."""

    name: str = "transformer"
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 512
    dropout: float = 0.1
    attn_dropout: float = 0.0
    positions: str = "sinusoidal"  # sinusoidal | learned | none


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """[length, dim]: sin on even channels, cos on odd ones (Vaswani et al.)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table


class PositionalEncoder(nn.Module):
    """The task's encoder plus fixed sinusoidal or learned absolute positions."""

    def __init__(self, spec: TaskSpec, d_model: int, kind: str):
        super().__init__()
        self.inner = Encoder(spec, d_model)
        self.kind = kind
        if kind == "learned":
            self.table = nn.Parameter(torch.randn(spec.seq_len, d_model) * 0.02)
        elif kind == "sinusoidal":
            self.register_buffer("table", sinusoidal_positions(spec.seq_len, d_model), persistent=False)
        elif kind != "none":
            raise ValueError(f"positions must be sinusoidal, learned or none, got {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inner(x)
        if self.kind == "none":
            return h
        return h + self.table[: h.shape[1]].to(h.dtype)


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, causal: bool = False):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.causal = causal
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        mask = None
        if not self.causal:
            keys = length_mask(lengths, t, x.device)
            mask = None if keys is None else keys[:, None, None, :]
        # With causal attention, padding sits after every real position and is never attended to.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=self.causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(d_ff, d_model))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)


@MODELS.register("transformer", TransformerConfig)
def build(cfg: TransformerConfig, spec: TaskSpec) -> nn.Module:
    """Pre-norm Transformer encoder (causal for autoregressive tasks)."""
    blocks: list[nn.Module] = []
    for _ in range(cfg.n_layers):
        attn = SelfAttention(cfg.d_model, cfg.n_heads, cfg.attn_dropout, causal=spec.causal)
        blocks.append(ResidualBlock(attn, cfg.d_model, "layer", prenorm=True, dropout=cfg.dropout))
        blocks.append(ResidualBlock(MLP(cfg.d_model, cfg.d_ff, cfg.dropout), cfg.d_model, "layer",
                                    prenorm=True, dropout=cfg.dropout))
    return Backbone(spec, cfg.d_model, blocks, final_norm="layer",
                    encoder=PositionalEncoder(spec, cfg.d_model, cfg.positions), embed_dropout=cfg.dropout)
