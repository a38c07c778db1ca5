"""Transformer baseline: pre-norm blocks of multi-head self-attention and an MLP.

Papers: Vaswani et al., "Attention Is All You Need", NeurIPS 2017; the LRA baseline of Tay et al., "Long Range
Arena: A Benchmark for Efficient Transformers", ICLR 2021. Published code: google-research/long-range-arena,
`lra_benchmarks/models/transformer/transformer.py`.

Attention goes through `F.scaled_dot_product_attention`, so GPUs use the fused flash or
memory-efficient kernels and no (L x L) matrix is kept for the backward pass.

Two flavours from one config:
- the defaults: a plain pre-norm Transformer (biases, exact GELU, LayerNorm eps 1e-5, mean pooling);
- the LRA baseline (preset `sweeps/experiment/transformer_lra_listops.yaml`): bias-free q/k/v/out projections,
  xavier-uniform kernels, biases N(0, 1e-6^2), tanh-GELU (Flax `nn.gelu`), LayerNorm eps 1e-6 (Flax default), a
  learned CLS token (zero init) prepended before the positions, pooled at position 0 and fed to the LRA
  classifier head Dense(mlp_dim) -> ReLU -> Dense(classes).

Causal models (autoregressive density) also run step by step (`models.backbone.Backbone.step`), the attention
with a key-value cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.config import ModelConfig, one_of, positive
from harness.errors import ConfigError
from harness.task import LengthNotSupported, TaskSpec
from models import MODELS
from models._validate import divides, probability
from models.backbone import Backbone, Encoder, Norm, ResidualBlock, length_mask, masked_mean


@dataclass
class TransformerConfig(ModelConfig):
    """Pre-norm Transformer encoder (causal for autoregressive tasks)."""

    name: str = "transformer"
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    qkv_dim: int | None = None  # width of q/k/v (LRA `qkv_dim`); None: d_model
    d_ff: int = 512  # MLP hidden width (LRA `mlp_dim`); also the hidden width of the `mlp` head
    dropout: float = 0.1
    attn_dropout: float = 0.0  # on the attention weights
    positions: str = "sinusoidal"  # sinusoidal | learned | none
    pooling: str = "mean"  # mean (over true lengths) | cls (learned token at position 0, as LRA)
    head: str = "linear"  # linear | mlp (LRA classifier: Dense(d_ff) -> ReLU -> Dense(classes))
    bias: bool = True  # biases in the q/k/v/out projections (LRA: False)
    gelu: str = "exact"  # exact | tanh (Flax nn.gelu is the tanh approximation)
    norm_eps: float = 1e-5  # LayerNorm epsilon (Flax default 1e-6)
    init: str = "default"  # default (PyTorch) | xavier (LRA: xavier-uniform kernels, biases N(0, 1e-6^2))

    def __post_init__(self) -> None:
        for key in ("d_model", "n_layers", "n_heads", "d_ff"):
            positive(f"model.{key}", getattr(self, key), integer=True)
        positive("model.qkv_dim", self.qkv_dim, integer=True, optional=True)
        divides("model.n_heads", self.n_heads, "model.qkv_dim" if self.qkv_dim else "model.d_model",
                self.qkv_dim or self.d_model)
        probability("model.dropout", self.dropout)
        probability("model.attn_dropout", self.attn_dropout)
        one_of("model.positions", self.positions, POSITIONS)
        one_of("model.pooling", self.pooling, POOLINGS)
        one_of("model.head", self.head, HEADS)
        one_of("model.gelu", self.gelu, tuple(GELUS))
        one_of("model.init", self.init, ("default", "xavier"))
        positive("model.norm_eps", self.norm_eps)


POSITIONS = ("sinusoidal", "learned", "none")
POOLINGS = ("mean", "cls")
HEADS = ("linear", "mlp")
GELUS = {"exact": "none", "tanh": "tanh"}  # -> nn.GELU(approximate=...)


# ------------------------------------------------------------------------------------------------------------------
# Positions and the encoder


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """[length, dim]: sin on even channels, cos on odd ones (Vaswani et al.; LRA `sinusoidal_init`)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table


class PositionalEncoder(nn.Module):
    """The task's encoder, an optional CLS token, then fixed sinusoidal or learned absolute positions.

    As in LRA, the CLS token (zero init) is prepended *before* the positions are added, so it takes
    position 0 and the table has `max_len + 1` rows.
    """

    def __init__(self, spec: TaskSpec, d_model: int, kind: str, cls_token: bool = False,
                 max_len: int | None = None):
        super().__init__()
        self.inner = Encoder(spec, d_model)
        self.kind = kind
        self.max_len = (max_len or spec.seq_len) + (1 if cls_token else 0)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model)) if cls_token else None
        if kind == "learned":
            self.table = nn.Parameter(torch.randn(self.max_len, d_model) * 0.02)  # LRA: N(0, 0.02^2)
        elif kind == "sinusoidal":
            self.register_buffer("table", sinusoidal_positions(self.max_len, d_model), persistent=False)

    def extend_length(self, L: int) -> None:
        """Positions for inputs of up to L tokens: the sinusoidal table computed further; learned positions have no
        rows past the training length (LengthNotSupported)."""
        rows = L + (1 if self.cls is not None else 0)
        if rows <= self.max_len or self.kind == "none":
            self.max_len = max(self.max_len, rows)
            return
        if self.kind == "learned":
            raise LengthNotSupported(f"learned positions end at {self.max_len}")
        self.max_len = rows
        self.table = sinusoidal_positions(rows, self.table.shape[1]).to(self.table.device)

    def _add_positions(self, h: torch.Tensor, start: int = 0) -> torch.Tensor:
        if self.kind == "none":
            return h
        end = start + h.shape[1]
        if end > self.max_len:
            raise ConfigError(f"sequence of length {end} is longer than the position table ({self.max_len}); "
                              f"the task's seq_len sets the table size")
        return h + self.table[start:end].to(h.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inner(x)
        if self.cls is not None:
            h = torch.cat([self.cls.expand(h.shape[0], -1, -1).to(h.dtype), h], dim=1)
        return self._add_positions(h)

    def step(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """Embed one step ([B] tokens or [B, d_input]) at position t -> [B, 1, D]."""
        if self.cls is not None:
            raise ConfigError("step mode does not support a CLS token (use model.pooling=mean for causal models)")
        return self._add_positions(self.inner.step(x_t, t), start=t)


# ------------------------------------------------------------------------------------------------------------------
# Attention and MLP


def key_padding_mask(lengths: torch.Tensor | None, seq_len: int, device: torch.device) -> torch.Tensor | None:
    """[B, 1, 1, L] bool (True = attend) for `F.scaled_dot_product_attention`, or None without padding.

    A boolean mask broadcast over heads and queries is a form the memory-efficient kernel accepts (flash
    takes no mask at all); it is never expanded to a materialised (L x L) tensor here.
    """
    keys = length_mask(lengths, seq_len, device)
    return None if keys is None else keys[:, None, None, :]


class SelfAttention(nn.Module):
    """Multi-head softmax self-attention; q/k/v fused in one projection of width 3 * qkv_dim.

    `max_len`: the positions a step cache holds (causal models step through at most that many).
    """

    def __init__(self, d_model: int, n_heads: int, *, dropout: float = 0.0, causal: bool = False,
                 qkv_dim: int | None = None, bias: bool = True, max_len: int | None = None):
        super().__init__()
        qkv_dim = qkv_dim or d_model
        self.n_heads = n_heads
        self.qkv_dim = qkv_dim
        self.causal = causal
        self.dropout = dropout
        self.max_len = max_len
        self.qkv = nn.Linear(d_model, 3 * qkv_dim, bias=bias)
        self.out = nn.Linear(qkv_dim, d_model, bias=bias)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, self.qkv_dim // self.n_heads).permute(2, 0, 3, 1, 4)
        return q, k, v

    def _merge(self, y: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(b, t, self.qkv_dim))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self._heads(x)
        # With causal attention, padding sits after every real position and is never attended to.
        mask = None if self.causal else key_padding_mask(lengths, x.shape[1], x.device)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=self.causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self._merge(y)

    def extend_length(self, L: int) -> None:
        """A step cache of up to L positions (causal models)."""
        if self.max_len is not None:
            self.max_len = max(self.max_len, L)

    def init_state(self, batch_size: int, device: torch.device | str) -> dict[str, Any]:
        """Position 0, no cache yet: the caches take batch, device and dtype from the first step's keys."""
        if not self.causal or self.max_len is None:
            raise ConfigError("step() needs causal attention built with max_len (a causal task)")
        return {"t": 0, "cache": None}

    def step(self, x_t: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        """x_t [B, D] at position t -> [B, D]. The cache ([B, H, max_len, hd] keys and values) is allocated on
        the first step and written in place."""
        t, cache = state["t"], state["cache"]
        q, k, v = self._heads(x_t[:, None])
        if cache is None:
            shape = (x_t.shape[0], self.n_heads, self.max_len, k.shape[-1])
            cache = (k.new_zeros(shape), v.new_zeros(shape))
        keys, values = cache
        keys[:, :, t] = k[:, :, 0].to(keys.dtype)
        values[:, :, t] = v[:, :, 0].to(values.dtype)
        # The query at t sees keys 0..t: exactly row t of the causal forward.
        y = F.scaled_dot_product_attention(q, keys[:, :, : t + 1].to(q.dtype), values[:, :, : t + 1].to(q.dtype),
                                           dropout_p=self.dropout if self.training else 0.0)
        return self._merge(y)[:, 0], {"t": t + 1, "cache": cache}


class MLP(nn.Module):
    """Position-wise Linear -> GELU -> Dropout -> Linear (the output dropout belongs to the residual block)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float, approximate: str = "none"):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(approximate=approximate), nn.Dropout(dropout),
                                 nn.Linear(d_ff, d_model))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)

    def init_state(self, batch_size: int, device: torch.device | str) -> None:
        """Position-wise: nothing to remember."""
        return None

    def step(self, x_t: torch.Tensor, state: None) -> tuple[torch.Tensor, None]:
        return self.net(x_t), state


def lra_init_(module: nn.Module) -> None:
    """LRA/Flax initialisation of attention and MLP layers: xavier-uniform kernels, biases N(0, 1e-6^2).

    Flax initialises the DenseGeneral kernels of q, k, v (D, heads, head_dim) on the flattened (D, heads *
    head_dim) shape, which is the torch Linear weight transposed; xavier is symmetric in fan-in/fan-out, so
    `xavier_uniform_` on each projection's weight gives the same distribution. q, k and v are separate
    Dense layers in Flax, hence the per-chunk init of the fused qkv weight.
    """
    for m in module.modules():
        if isinstance(m, SelfAttention):
            for chunk in m.qkv.weight.data.chunk(3, dim=0):
                nn.init.xavier_uniform_(chunk)
            nn.init.xavier_uniform_(m.out.weight)
            for lin in (m.qkv, m.out):
                if lin.bias is not None:
                    nn.init.normal_(lin.bias, std=1e-6)
        elif isinstance(m, MLP):
            for lin in m.net:
                if isinstance(lin, nn.Linear):
                    nn.init.xavier_uniform_(lin.weight)
                    nn.init.normal_(lin.bias, std=1e-6)


def lecun_normal_(linear: nn.Linear) -> None:
    """Flax Dense default: truncated normal (+-2 std) with variance 1/fan_in, zero bias."""
    std = math.sqrt(1.0 / linear.in_features) / 0.87962566103423978  # stddev of N(0,1) truncated at +-2
    nn.init.trunc_normal_(linear.weight, std=std, a=-2 * std, b=2 * std)
    nn.init.zeros_(linear.bias)


# ------------------------------------------------------------------------------------------------------------------
# The backbone with LRA pooling/head conventions


class SequenceModel(Backbone):
    """`Backbone` plus: CLS or masked-mean pooling, a linear or LRA-MLP head, and optional right padding of every
    batch to a fixed length (the LRA pipelines pad to 2000 and some models depend on it).

    `blocks` keeps the backbone contract: `blocks[i]` are `ResidualBlock`s and `blocks[0].mixer` is the
    sequence layer alone.
    """

    def __init__(self, spec: TaskSpec, d_model: int, blocks: Sequence[nn.Module], encoder: PositionalEncoder, *,
                 embed_dropout: float = 0.0, pooling: str = "mean", head: str = "linear",
                 head_dim: int | None = None, norm_eps: float = 1e-5, pad_to: int | None = None):
        super().__init__(spec, d_model, blocks, final_norm="layer", encoder=encoder, embed_dropout=embed_dropout)
        if pooling == "cls" and (spec.output == "sequence" or spec.causal):
            # Causal attention would also keep the CLS token at position 0 from seeing any other position.
            raise ConfigError(f"model.pooling=cls needs a pooled, non-causal task; {spec.name} is not: "
                              f"use model.pooling=mean")
        assert (pooling == "cls") == (encoder.cls is not None), "the encoder's CLS token and the pooling disagree"
        self.pooling = pooling
        self.pad_to = pad_to
        self.final_norm = Norm("layer", d_model, eps=norm_eps)
        if head == "mlp":
            hidden = head_dim or d_model
            self.decoder = nn.Sequential(nn.Linear(d_model, hidden), nn.ReLU(), nn.Linear(hidden, spec.n_outputs))
            lecun_normal_(self.decoder[0])
            lecun_normal_(self.decoder[2])

    def extend_length(self, L: int) -> None:
        """Fixed-length padding to L (the evaluation task's length), as the reference pads to its task's length."""
        if self.pad_to is not None:
            self.pad_to = max(self.pad_to, L)

    def _encode(self, x: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        length = x.shape[1]
        if self.pad_to is not None and length < self.pad_to:
            # Fixed-length padding: the padded tail is masked like any padding, so lengths must exist.
            if lengths is None:
                lengths = torch.full((x.shape[0],), length, dtype=torch.long, device=x.device)
            extra = self.pad_to - length
            if x.dim() == 2:
                x = F.pad(x, (0, extra), value=self.spec.pad_id)
            else:
                x = F.pad(x, (0, 0, 0, extra))
        h = self.embed_dropout(self.encoder(x))
        if self.pooling == "cls" and lengths is not None:
            lengths = lengths + 1  # the CLS token is a real position (LRA copies the mask of position 0)
        for block in self.blocks:
            h = block(h, lengths)
        return self.final_norm(h), lengths

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        length = x.shape[1]
        h, lengths = self._encode(x, lengths)
        if self.spec.output == "sequence":
            return self.decoder(h[:, :length])
        if self.pooling == "cls":
            return self.decoder(h[:, 0])
        return self.decoder(masked_mean(h, lengths))


# ------------------------------------------------------------------------------------------------------------------
# Builder


@MODELS.register("transformer", TransformerConfig)
def build(cfg: TransformerConfig, spec: TaskSpec) -> nn.Module:
    """Pre-norm Transformer encoder (causal for autoregressive tasks)."""
    blocks: list[nn.Module] = []
    for _ in range(cfg.n_layers):
        attn = SelfAttention(cfg.d_model, cfg.n_heads, dropout=cfg.attn_dropout, causal=spec.causal,
                             qkv_dim=cfg.qkv_dim, bias=cfg.bias, max_len=spec.seq_len)
        mlp = MLP(cfg.d_model, cfg.d_ff, cfg.dropout, approximate=GELUS[cfg.gelu])
        blocks += [ResidualBlock(mixer, cfg.d_model, "layer", prenorm=True, dropout=cfg.dropout,
                                 norm_eps=cfg.norm_eps) for mixer in (attn, mlp)]
    encoder = PositionalEncoder(spec, cfg.d_model, cfg.positions, cls_token=cfg.pooling == "cls")
    model = SequenceModel(spec, cfg.d_model, blocks, encoder, embed_dropout=cfg.dropout, pooling=cfg.pooling,
                          head=cfg.head, head_dim=cfg.d_ff, norm_eps=cfg.norm_eps)
    if cfg.init == "xavier":
        lra_init_(model)
    return model
