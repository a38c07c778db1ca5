"""The shared backbone: encoder -> residual blocks -> norm -> pooling -> decoder, and its step interface.

Activations are [batch, length, d_model] throughout. A sequence layer ("mixer") is any module called as
``mixer(x, lengths)`` returning a tensor of the same shape; models build their blocks from ``ResidualBlock``
with the norm placement of their published configs.

Causal models also run one position at a time (generation, e.g. `tasks.cifar_bpd.sample`). Every sequence
layer of such a model implements `Recurrent`; `Backbone.init_state` / `Backbone.step` is the one step loop
over the blocks, and stepping t = 0..L-1 from a fresh state equals ``model(x)[:, t]`` in eval mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import nn

from harness.errors import ConfigError
from harness.task import TaskSpec


class Recurrent(Protocol):
    """The step interface of a sequence layer: one position at a time, [B, D] in and out."""

    def init_state(self, batch_size: int, device: torch.device | str) -> Any:
        """The state before position 0."""
        ...

    def step(self, x_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """x_t [B, D] at position t -> (the layer's output at t [B, D], the state after t)."""
        ...


def length_mask(lengths: torch.Tensor | None, seq_len: int, device: torch.device) -> torch.Tensor | None:
    """[B, L] bool, True at real (non-padding) positions; None when all positions are real."""
    if lengths is None:
        return None
    return torch.arange(seq_len, device=device)[None, :] < lengths.to(device)[:, None]


class Encoder(nn.Module):
    """Token embedding for token tasks, a linear map of each step's channels for signal tasks."""

    def __init__(self, spec: TaskSpec, d_model: int):
        super().__init__()
        if spec.input == "tokens":
            assert spec.vocab_size is not None
            self.proj: nn.Module = nn.Embedding(spec.vocab_size, d_model)
        else:
            assert spec.d_input is not None
            self.proj = nn.Linear(spec.d_input, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)

    def step(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """One position ([B] tokens or [B, d_input]) -> [B, 1, D]; `t` is for encoders that add positions."""
        return self.proj(x_t[:, None])


_NORMS = {
    "layer": lambda d_model, eps: nn.LayerNorm(d_model, eps=eps),
    "batch": lambda d_model, eps: nn.BatchNorm1d(d_model, eps=eps),
    "none": lambda d_model, eps: nn.Identity(),
}
NORMS = tuple(_NORMS)


class Norm(nn.Module):
    """LayerNorm over channels, or BatchNorm over (batch, length) per channel, on [B, L, D]."""

    def __init__(self, kind: str, d_model: int, eps: float = 1e-5):
        super().__init__()
        self.kind = kind
        self.norm: nn.Module = _NORMS[kind](d_model, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "batch":
            return self.norm(x.transpose(1, 2)).transpose(1, 2)
        return self.norm(x)


class ResidualBlock(nn.Module):
    """One residual block around a sequence layer.

    branch(h) = dropout(channel_mixer(mixer(h, lengths))), channel_mixer optional (e.g. 1x1 conv + GLU);
    pre-norm: x + branch(norm(x)); post-norm: norm(x + branch(x)).
    `mixer` is "the sequence layer alone" and the block is "a full residual block" for the
    scaling benchmark, so every model keeps its sequence layer in `mixer`.
    """

    def __init__(self, mixer: nn.Module, d_model: int, norm: str = "layer", prenorm: bool = True,
                 dropout: float = 0.0, channel_mixer: nn.Module | None = None,
                 dropout_module: nn.Module | None = None, norm_eps: float = 1e-5):
        super().__init__()
        self.mixer = mixer
        self.channel_mixer = channel_mixer if channel_mixer is not None else nn.Identity()
        self.norm = Norm(norm, d_model, eps=norm_eps)
        self.prenorm = prenorm
        if dropout_module is not None:
            self.dropout = dropout_module
        else:
            self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def branch(self, h: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        return self.dropout(self.channel_mixer(self.mixer(h, lengths)))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if self.prenorm:
            return x + self.branch(self.norm(x), lengths)
        return self.norm(x + self.branch(x, lengths))

    def step(self, h: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """`forward` at one position: h [B, 1, D]. Everything but the mixer acts per position, so it sees a
        length-1 sequence (BatchNorm in eval mode)."""
        z = self.norm(h) if self.prenorm else h
        y, state = self.mixer.step(z[:, 0], state)
        branch = self.dropout(self.channel_mixer(y[:, None]))
        return (h + branch if self.prenorm else self.norm(h + branch)), state


def masked_mean(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Mean over time of [B, L, D], over the first `lengths[b]` positions of each example."""
    if lengths is None:
        return x.mean(dim=1)
    mask = length_mask(lengths, x.shape[1], x.device)
    assert mask is not None
    summed = (x * mask[..., None].to(x.dtype)).sum(dim=1)
    return summed / lengths.clamp(min=1).to(x.device, x.dtype)[:, None]


class Backbone(nn.Module):
    """Encoder, blocks, final norm, masked mean pooling (pooled tasks) and a linear decoder."""

    def __init__(self, spec: TaskSpec, d_model: int, blocks: Sequence[nn.Module],
                 final_norm: str = "none", encoder: nn.Module | None = None,
                 embed_dropout: float = 0.0):
        super().__init__()
        self.spec = spec
        self.encoder = encoder if encoder is not None else Encoder(spec, d_model)
        self.embed_dropout = nn.Dropout(embed_dropout) if embed_dropout > 0 else nn.Identity()
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = Norm(final_norm, d_model)
        self.decoder = nn.Linear(d_model, spec.n_outputs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        h = self.embed_dropout(self.encoder(x))
        for block in self.blocks:
            h = block(h, lengths)
        h = self.final_norm(h)
        if self.spec.output == "sequence":
            return self.decoder(h)
        return self.decoder(masked_mean(h, lengths))

    # -- one position at a time (causal tasks) ---------------------------------------------------------------

    def init_state(self, batch_size: int, device: torch.device | str) -> dict[str, Any]:
        """The state before position 0: the position and one state per block's sequence layer."""
        if not self.spec.causal:
            raise ConfigError(f"step mode is for causal (autoregressive) tasks; {self.spec.name} is not causal")
        return {"t": 0, "layers": [block.mixer.init_state(batch_size, device) for block in self.blocks]}

    def step(self, x_t: torch.Tensor, state: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        """x_t [B] tokens or [B, d_input] at position t -> (y_t [B, n_outputs], the state after t)."""
        t = state["t"]
        h = self.embed_dropout(self.encoder.step(x_t, t))  # [B, 1, D]
        layers = []
        for block, layer_state in zip(self.blocks, state["layers"], strict=True):
            h, layer_state = block.step(h, layer_state)
            layers.append(layer_state)
        return self.decoder(self.final_norm(h))[:, 0], {"t": t + 1, "layers": layers}
