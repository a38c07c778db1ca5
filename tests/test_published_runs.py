"""The paper presets against the facts of their published runs (tests/published_runs.py).

Compared here: the settings that have one meaning on both sides today (batch, optimizer, learning rate, weight
decay and its exemptions, betas, eps, gradient clipping). The run-length, schedule, evaluation and precision facts
(`train.max_steps`, `train.schedule_steps`, `train.eval_every_steps`, `train.tf32`, ...) are read by the trainer's
own tests once it has those keys.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.helpers import ROOT, compose_run
from tests.published_runs import RUNS

PRESETS = sorted(p.stem for p in (ROOT / "sweeps" / "experiment").glob("*.yaml") if p.stem != "bench_scaling")
COMPARED = ("train.batch_size", "train.grad_clip", "optim.optimizer", "optim.lr", "optim.weight_decay",
            "optim.betas", "optim.eps", "optim.decay_exempt")


def test_every_preset_has_the_facts_of_its_published_run() -> None:
    assert sorted(RUNS) == PRESETS
    keys = set(RUNS["s4_listops"])
    assert all(set(run) == keys for run in RUNS.values())
    assert all(fact.source for run in RUNS.values() for fact in run.values())


@pytest.mark.parametrize("name", PRESETS)
def test_preset_trains_as_its_published_run(tmp_path: Path, name: str) -> None:
    cfg = compose_run(tmp_path, f"+experiment={name}")
    ours = {key: OmegaConf.to_object(OmegaConf.select(cfg, key)) if key == "optim.betas" else
            OmegaConf.select(cfg, key) for key in COMPARED}
    assert ours == {key: RUNS[name][key].value for key in COMPARED}
