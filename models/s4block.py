"""The residual block of the state-spaces/s4 codebase, shared by S4, S4D and SGConv.

Block: x + Dropout(OutputLinear(layer(x))) with the norm before the layer (prenorm) or after the sum, and a
final norm after pre-norm blocks: state-spaces/s4 `src/models/sequence/backbones/block.py`
(SequenceResidualBlock) and `src/models/sequence/backbones/model.py` (SequenceModel). The output linear and its
activation ("glu" doubles the width and gates it) are the ones of S4Block, `src/models/sequence/modules/s4block.py`.
SGConv's published code (ctlllll/SGConv) runs its layer in the same backbone.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.config import one_of, positive
from harness.errors import ConfigError
from harness.task import TaskSpec
from models._validate import probability
from models.backbone import NORMS, Backbone, ResidualBlock
from models.longconv import ACTIVATIONS, s4_dropout, share_taps

FINAL_ACTS = ("glu", "gelu", "id", None)


def check_block_config(cfg: Any) -> None:
    """The options every S4-codebase model shares (its config's `__post_init__` calls this)."""
    positive("model.d_model", cfg.d_model, integer=True)
    positive("model.n_layers", cfg.n_layers, integer=True)
    positive("model.l_max", cfg.l_max, integer=True, optional=True)
    one_of("model.activation", cfg.activation, ACTIVATIONS)
    one_of("model.final_act", cfg.final_act, FINAL_ACTS)
    one_of("model.norm", cfg.norm, NORMS)
    probability("model.dropout", cfg.dropout)


def check_causal(cfg: Any, spec: TaskSpec) -> None:
    if spec.causal and cfg.bidirectional:
        raise ConfigError(f"task {spec.name!r} is causal (autoregressive) but model.bidirectional=true; "
                          "set model.bidirectional=false")


class OutputLinear(nn.Module):
    """Position-wise Linear(D -> D) followed by an activation; 'glu' doubles the width and gates it."""

    def __init__(self, d_model: int, final_act: str | None):
        super().__init__()
        self.final_act = final_act
        self.linear = nn.Linear(d_model, 2 * d_model if final_act == "glu" else d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        if self.final_act == "glu":
            return F.glu(y, dim=-1)
        if self.final_act == "gelu":
            return F.gelu(y)
        return y


class ConvBackbone(Backbone):
    """The backbone of long-convolution layers (`models.longconv.ConvLayer`): before the blocks run, the kernels
    of all layers come from one batched computation (`share_taps`), a few launches instead of a few per layer."""

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        layers = [block.mixer for block in self.blocks]
        try:
            share_taps(layers, x.shape[1])
            return super().forward(x, lengths)
        finally:
            for layer in layers:
                layer.given_taps = None


def s4_backbone(cfg: Any, spec: TaskSpec, mixers: list[nn.Module]) -> Backbone:
    """The blocks around the given sequence layers; the residual dropout is tied over the length with
    `tie_dropout` (the codebase's DropoutNd)."""
    blocks = [
        ResidualBlock(mixer, cfg.d_model, cfg.norm, prenorm=cfg.prenorm, channel_mixer=OutputLinear(cfg.d_model,
                      cfg.final_act), dropout_module=s4_dropout(cfg.dropout, cfg.tie_dropout))
        for mixer in mixers
    ]
    return ConvBackbone(spec, cfg.d_model, blocks, final_norm=cfg.norm if cfg.prenorm else "none")
