"""The contract every registered model keeps (models/backbone.py), checked on every model at once.

A new file in models/ is tested here with no further wiring: it builds for token and signal tasks, gives outputs
of the task's shape, validates its config, exposes its sequence layer to the benchmark, and on a causal task
either refuses to build (with a ConfigError) or is causal, invariant to padding and steps exactly as it runs.
What each model computes is checked against independent references in its own test module.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from harness.errors import ConfigError
from harness.registry import MODELS
from harness.task import TaskSpec
from models.backbone import ResidualBlock

TOKENS = TaskSpec("tokens", "tokens", 32, 10, "accuracy", vocab_size=18, variable_length=True)
SIGNAL = TaskSpec("signal", "signal", 32, 5, "accuracy", d_input=3)
CAUSAL_SIGNAL = TaskSpec("ar", "signal", 24, 7, "bpd", d_input=3, output="sequence", causal=True)
CAUSAL_TOKENS = TaskSpec("ar_tokens", "tokens", 20, 11, "bpd", vocab_size=11, output="sequence", causal=True)

# Small sizes for whichever of these fields a model's config has (the rest keep their defaults).
SMALL = {"d_model": 16, "n_layers": 2, "d_state": 8, "kernel_dim": 4, "n_heads": 2, "qkv_dim": 8, "d_ff": 32,
         "wlen": 4}


def small_config(name: str, **overrides: Any) -> Any:
    fields = {f.name for f in dataclasses.fields(MODELS.get(name).config_cls)}
    return MODELS.config(name, **{k: v for k, v in SMALL.items() if k in fields}, **overrides)


def inputs(spec: TaskSpec, batch: int, length: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if spec.input == "tokens":
        assert spec.vocab_size is not None
        return torch.randint(1, spec.vocab_size, (batch, length), generator=g)
    return torch.randn(batch, length, spec.d_input, generator=g)


def check_pooled(name: str, spec: TaskSpec) -> None:
    torch.manual_seed(0)
    cfg = small_config(name)
    model = MODELS.build(cfg, spec)
    # The DictConfig Hydra composes builds the same model (the registry turns it into the dataclass).
    torch.manual_seed(0)
    again = MODELS.build(OmegaConf.structured(cfg), spec)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))

    # The benchmark's contract: blocks[0] is a residual block around the sequence layer, both [B, L, D] -> same.
    block = model.blocks[0]
    assert isinstance(block, ResidualBlock)
    h = torch.randn(2, 20, cfg.d_model)
    assert block.mixer(h, None).shape == h.shape and block(h, None).shape == h.shape

    x = inputs(spec, 3, spec.seq_len, seed=1)
    lengths = torch.tensor([spec.seq_len, 13, 5]) if spec.variable_length else None
    model.train()
    out = model(x, lengths=lengths)
    assert out.shape == (3, spec.n_outputs) and out.dtype == torch.float32
    out.square().sum().backward()
    for pname, p in model.named_parameters():
        assert not p.requires_grad or (p.grad is not None and torch.isfinite(p.grad).all()), pname

    model.eval()
    with torch.no_grad():
        if lengths is not None:
            # What lies past an example's length changes nothing: each example gets the output it gets alone.
            noisy = x.clone()
            noisy[1, 13:] = inputs(spec, 1, spec.seq_len - 13, seed=2)
            noisy[2, 5:] = 0
            padded = model(noisy, lengths=lengths)
            for i, n in enumerate(lengths.tolist()):
                torch.testing.assert_close(padded[i], model(x[i:i + 1, :n])[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="causal"):
        model.init_state(2, "cpu")


def check_causal(name: str, spec: TaskSpec) -> None:
    torch.manual_seed(0)
    try:
        model = MODELS.build(small_config(name), spec)
    except ConfigError:
        return  # not a causal model: it refuses causal tasks
    x = inputs(spec, 2, spec.seq_len, seed=1)
    model.train()
    model(x)  # BatchNorm statistics away from their initial values
    model.eval()
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, spec.seq_len, spec.n_outputs)
        # No look-ahead: changing positions > t leaves outputs <= t as they were.
        t = spec.seq_len // 2
        changed = x.clone()
        changed[:, t + 1:] = inputs(spec, 2, spec.seq_len - t - 1, seed=3)
        changed_out = model(changed)
        torch.testing.assert_close(changed_out[:, : t + 1], out[:, : t + 1], atol=1e-5, rtol=1e-5)
        assert (changed_out[:, t + 1:] - out[:, t + 1:]).abs().max() > 1e-4
        # One position at a time from a fresh state: the same outputs.
        state = model.init_state(2, "cpu")
        steps = []
        for i in range(spec.seq_len):
            y_t, state = model.step(x[:, i], state)
            steps.append(y_t)
        torch.testing.assert_close(torch.stack(steps, dim=1), out, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", MODELS.names())
def test_model_contract(name: str) -> None:
    with pytest.raises(ConfigError, match=r"model\.d_model=0"):
        MODELS.config(name, d_model=0)
    for spec in (TOKENS, SIGNAL):
        check_pooled(name, spec)
    for spec in (CAUSAL_SIGNAL, CAUSAL_TOKENS):
        check_causal(name, spec)
