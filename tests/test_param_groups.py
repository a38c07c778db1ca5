"""Optimizer parameter groups as the published code makes them.

tests/golden/param_groups.json holds, for every paper preset, the learning rate and weight decay the published
code's optimizer gives each parameter, under our names (made by running the published grouping, see
tests/golden/README.md). Here each preset's model is built from its config alone (on fake tensors: names, shapes
and optimizer hints only) and `harness.optim.param_groups` must give every parameter the same two numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from torch import nn

from harness import preflight
from harness.config import OptimConfig
from harness.errors import ConfigError
from harness.optim import param_groups
from harness.task import TaskSpec
from models import MODELS
from tests.helpers import ROOT, compose_run

GOLDEN = json.loads((Path(__file__).parent / "golden" / "param_groups.json").read_text())
PRESETS = sorted(p.stem for p in (ROOT / "sweeps" / "experiment").glob("*.yaml") if p.stem != "bench_scaling")


def settings(groups: list[dict], default_lr: float) -> dict[str, tuple[float, float]]:
    """Parameter name -> (lr, weight decay), from groups of names."""
    return {name: (float(g.get("lr", default_lr)), float(g["weight_decay"])) for g in groups for name in g["params"]}


def test_every_preset_has_its_published_groups() -> None:
    assert sorted(GOLDEN) == PRESETS


@pytest.mark.parametrize("name", PRESETS)
def test_preset_groups_equal_the_published_ones(tmp_path: Path, name: str) -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode  # imports torch._dynamo: only here

    cfg = compose_run(tmp_path, f"+experiment={name}")
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = MODELS.build(cfg.model, preflight.task_spec(cfg))
    names = {id(p): n for n, p in model.named_parameters()}
    ours = [{**g, "params": [names[id(p)] for p in g["params"]]} for g in param_groups(model, cfg.optim)]
    assert settings(ours, cfg.optim.lr) == settings(GOLDEN[name]["groups"], cfg.optim.lr)


SPEC = TaskSpec(name="t", input="signal", d_input=3, seq_len=16, n_outputs=4, metric="accuracy")


def exempt_names(rule: str) -> set[str]:
    """Names in the weight-decay-free group of a one-block pre-norm S4D (encoder and decoder Linear, a final norm)."""
    model = MODELS.build(MODELS.config("s4d", d_model=8, d_state=4, n_layers=1, prenorm=True), SPEC)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = param_groups(model, OptimConfig(weight_decay=0.1, decay_exempt=rule))
    free = [g for g in groups if g["weight_decay"] == 0.0 and "lr" not in g]
    assert len(free) <= 1
    assert sum(len(g["params"]) for g in groups) == len(names)
    return {names[id(p)] for g in free for p in g["params"]}


def test_decay_exempt_rules_name_the_published_sets() -> None:
    blocks = {"blocks.0.channel_mixer.linear.bias", "blocks.0.norm.norm.weight", "blocks.0.norm.norm.bias",
              "final_norm.norm.weight", "final_norm.norm.bias"}
    assert exempt_names("none") == set()
    assert exempt_names("norms_and_biases") == blocks | {"encoder.proj.bias", "decoder.bias"}
    assert exempt_names("backbone_norms_and_biases") == blocks  # v4.1 hooks only the SequenceModel


def test_optimizer_hints_win_over_every_rule() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
    model[1].bias._optim = {"lr": 1e-4}  # a bias with a hint: its group keeps the global weight decay
    for rule in ("none", "norms_and_biases", "backbone_norms_and_biases"):
        groups = param_groups(model, OptimConfig(weight_decay=0.1, decay_exempt=rule))
        assert [g for g in groups if "lr" in g] == [{"params": [model[1].bias], "lr": 1e-4, "weight_decay": 0.1}]


def test_unknown_rule_is_refused_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"optim.decay_exempt='biases' is not one of 'norms_and_biases'"):
        OptimConfig(decay_exempt="biases")
