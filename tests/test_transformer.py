"""Transformer: attention against an explicit softmax, KV-cache stepping with learned positions, CLS pooling with
padding, the LRA config. The contract every model keeps (shapes, causality, stepping, padding) is in
test_models.py."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from harness.errors import ConfigError
from harness.task import TaskSpec
from models.backbone import ResidualBlock
from models.transformer import (
    MLP,
    PositionalEncoder,
    SelfAttention,
    TransformerConfig,
    build,
    sinusoidal_positions,
)

ROOT = Path(__file__).resolve().parent.parent

TOKENS = TaskSpec(name="toy", input="tokens", seq_len=32, n_outputs=10, metric="accuracy", vocab_size=18,
                  variable_length=True)
DENSITY = TaskSpec(name="ar", input="signal", seq_len=24, n_outputs=7, metric="bpd", d_input=3, output="sequence",
                   causal=True)
TOKEN_DENSITY = TaskSpec(name="ar_tokens", input="tokens", seq_len=20, n_outputs=11, metric="bpd", vocab_size=11,
                         output="sequence", causal=True)

SMALL = dict(d_model=16, n_layers=2, n_heads=2, d_ff=32)


def explicit_attention(attn: SelfAttention, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(hd) + mask) v with the (L x L) matrix built by hand; keep [L, L] bool per batch row."""
    b, t, _ = x.shape
    q, k, v = attn.qkv(x).view(b, t, 3, attn.n_heads, -1).permute(2, 0, 3, 1, 4)
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    logits = logits.masked_fill(~keep[:, None], float("-inf"))
    y = torch.softmax(logits, dim=-1) @ v
    return attn.out(y.transpose(1, 2).reshape(b, t, -1))


def test_attention_matches_explicit_softmax_with_key_mask_and_causal() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 9, 12, dtype=torch.float64)
    attn = SelfAttention(12, 3, qkv_dim=6, bias=False).double()
    lengths = torch.tensor([9, 4])
    keep = (torch.arange(9)[None, None, :] < lengths[:, None, None]).expand(2, 9, 9)
    torch.testing.assert_close(attn(x, lengths), explicit_attention(attn, x, keep))
    attn.causal = True
    causal = torch.ones(9, 9, dtype=torch.bool).tril().expand(2, 9, 9)
    torch.testing.assert_close(attn(x), explicit_attention(attn, x, causal))


def random_inputs(spec: TaskSpec, b: int, t: int) -> torch.Tensor:
    if spec.input == "tokens":
        return torch.randint(0, spec.vocab_size, (b, t))
    return torch.randn(b, t, spec.d_input)


@pytest.mark.parametrize("spec", [DENSITY, TOKEN_DENSITY])
def test_kv_cache_stepping_with_learned_positions_equals_parallel_forward(spec: TaskSpec) -> None:
    torch.manual_seed(2)
    model = build(TransformerConfig(**SMALL, positions="learned", attn_dropout=0.1), spec).eval()
    x = random_inputs(spec, 3, spec.seq_len)
    with torch.no_grad():
        full = model(x)
        state = model.init_state(3, "cpu")
        steps = []
        for t in range(spec.seq_len):
            y_t, state = model.step(x[:, t], state)
            steps.append(y_t)
    assert steps[0].shape == (3, spec.n_outputs)
    torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_cls_pooled_padded_example_equals_unpadded() -> None:
    """Keys at padding are masked, so padding (with any token ids in it) changes nothing for the CLS token."""
    torch.manual_seed(3)
    model = build(TransformerConfig(**SMALL, pooling="cls", head="mlp"), TOKENS).eval()
    short, long = torch.randint(1, 18, (1, 7)), torch.randint(1, 18, (1, 20))
    batch = torch.cat([torch.cat([short, torch.randint(0, 18, (1, 13))], dim=1), long])
    out = model(batch, lengths=torch.tensor([7, 20]))
    torch.testing.assert_close(out[0], model(short)[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1], model(long)[0], atol=1e-5, rtol=1e-5)


def test_sinusoidal_table_matches_lra_formula_and_cls_takes_position_zero() -> None:
    length, dim = 11, 8
    pos = np.arange(length)[:, None]
    div = np.exp(np.arange(0, dim, 2) * -(np.log(10000.0) / dim))
    want = np.zeros((length, dim))
    want[:, 0::2], want[:, 1::2] = np.sin(pos * div), np.cos(pos * div)
    np.testing.assert_allclose(sinusoidal_positions(length, dim).numpy(), want, atol=1e-6)
    enc = PositionalEncoder(TOKENS, dim, "sinusoidal", cls_token=True)
    h = enc(torch.randint(0, 18, (2, 5)))
    assert h.shape == (2, 6, dim)
    torch.testing.assert_close(h[:, 0], sinusoidal_positions(1, dim)[0].expand(2, dim))  # CLS (zero) + pos 0
    learned = PositionalEncoder(TOKENS, dim, "learned")
    assert learned.table.requires_grad and learned.table.shape == (TOKENS.seq_len, dim)


def lra_params(vocab: int, d: int, layers: int, qkv: int, mlp: int, classes: int) -> int:
    """Parameter count of the LRA TransformerEncoder classifier from its shapes (bias-free attention)."""
    per_layer = 2 * d + 4 * d * qkv + 2 * d + (d * mlp + mlp + mlp * d + d)
    return vocab * d + d + layers * per_layer + 2 * d + (d * mlp + mlp + mlp * classes + classes)


def test_lra_preset_builds_the_reference_shapes() -> None:
    preset = yaml.safe_load((ROOT / "sweeps" / "experiment" / "transformer_lra_listops.yaml").read_text())
    assert {"override /task": "listops"} in preset["defaults"]
    assert {"override /model": "transformer"} in preset["defaults"]
    assert set(preset["model"]) <= set(TransformerConfig.__dataclass_fields__)
    cfg = TransformerConfig(**preset["model"])
    model = build(cfg, TaskSpec(name="listops", input="tokens", seq_len=2000, n_outputs=10, metric="accuracy",
                                vocab_size=18))
    assert sum(p.numel() for p in model.parameters()) == lra_params(18, 512, 4, 512, 1024, 10)
    assert isinstance(model.blocks[0], ResidualBlock) and isinstance(model.blocks[0].mixer, SelfAttention)
    assert isinstance(model.blocks[1].mixer, MLP)
    assert model.blocks[0].norm.norm.eps == 1e-6
    # xavier-uniform kernels: |w| <= sqrt(6 / (fan_in + fan_out)) with the bound nearly reached
    w = model.blocks[0].mixer.qkv.weight
    bound = math.sqrt(6 / (512 + 512))
    assert w.abs().max() <= bound and w.abs().max() > 0.99 * bound


def test_bad_options() -> None:
    for key, bad in (("pooling", "max"), ("head", "conv"), ("positions", "rotary"), ("n_heads", 3)):
        with pytest.raises(ConfigError, match=f"model.{key}="):
            build(TransformerConfig(**{**SMALL, key: bad}), TOKENS)
    with pytest.raises(ConfigError, match="pooling=cls"):
        build(TransformerConfig(**SMALL, pooling="cls"), DENSITY)
