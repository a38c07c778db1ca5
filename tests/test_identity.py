"""Run ids from the config as it acts: settings that build the same model get the same id, others do not; the
MultiresNet ablation preset composes on any task."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness import runner
from harness.identity import run_id, semantic_config
from harness.preflight import task_spec
from harness.registry import MODELS
from tests.helpers import compose_run

ABLATION = "+experiment=multires_ablation"
SMALL = ("model.d_model=32", "model.n_layers=2")  # the preset's model, narrower and shallower: the same question


Built = tuple[dict[str, torch.Tensor], torch.Tensor]


def built(cfg) -> Built:  # noqa: ANN001
    """The model's initial state, seeded, and its output on one fixed input: two configs that build the same model
    give the same tensors and compute the same function."""
    spec = task_spec(cfg)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model, spec).eval()
    generator = torch.Generator().manual_seed(1)
    if spec.input == "tokens":
        x = torch.randint(1, spec.vocab_size, (1, spec.seq_len), generator=generator)
    else:
        x = torch.randn(1, spec.seq_len, spec.d_input, generator=generator)
    with torch.no_grad():
        return model.state_dict(), model(x, lengths=torch.tensor([spec.seq_len]))


def same_model(a: Built, b: Built) -> bool:
    (sa, ya), (sb, yb) = a, b
    same_state = sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)
    return same_state and torch.equal(ya, yb)


@pytest.mark.parametrize(("task", "same", "different"), [
    # sCIFAR (L = 1024, K = 2): the automatic depth is 10, the fading tree ignores memory_size.
    ("scifar", [["model.depth=10"], ["model.memory_size=11"], ["model.depth=10", "model.memory_size=5"]],
     [["model.depth=9"], ["model.tree_select=uniform", "model.memory_size=11"], ["model.kernel_size=3"]]),
    # ListOps (L = 2048): the automatic depth is 11, so depth 10 is another model there.
    ("listops", [["model.depth=11"], ["model.memory_size=11"]], [["model.depth=10"]]),
])
def test_settings_that_build_the_baseline_share_its_run_id(tmp_path: Path, task: str, same: list[list[str]],
                                                           different: list[list[str]]) -> None:
    baseline = compose_run(tmp_path, ABLATION, f"task={task}", *SMALL)
    base_id, base_state = run_id(runner.plain_config(baseline)), built(baseline)
    for overrides in same:
        cfg = compose_run(tmp_path, ABLATION, f"task={task}", *SMALL, *overrides)
        assert same_model(built(cfg), base_state), overrides  # the independent check: the same tensors
        assert run_id(runner.plain_config(cfg)) == base_id, overrides
    ids = {base_id}
    for overrides in different:
        cfg = compose_run(tmp_path, ABLATION, f"task={task}", *SMALL, *overrides)
        assert not same_model(built(cfg), base_state), overrides
        ids.add(run_id(runner.plain_config(cfg)))
    assert len(ids) == 1 + len(different)


def test_the_ablation_baseline_is_the_paper_preset_run(tmp_path: Path) -> None:
    """`+experiment=multires_ablation` at its baseline trains what `+experiment=multires_scifar` trains: one run."""
    ablation = runner.plain_config(compose_run(tmp_path, ABLATION, "model.depth=10"))
    preset = runner.plain_config(compose_run(tmp_path, "+experiment=multires_scifar"))
    assert run_id(ablation) == run_id(preset)


def test_the_ablation_preset_composes_on_any_task(tmp_path: Path) -> None:
    """sCIFAR gets the published normalisation (a key only sCIFAR has); ListOps its own padding; a task without a
    file of its own gets the model settings alone."""
    assert compose_run(tmp_path, ABLATION).task.norm == "multires"
    assert compose_run(tmp_path, ABLATION, "task.norm=s4").task.norm == "s4"  # the command line wins
    listops = compose_run(tmp_path, ABLATION, "task=listops").task
    assert "norm" not in listops and (listops.l_max, listops.pad_to_max) == (2048, True)
    bpd = compose_run(tmp_path, ABLATION, "task=cifar_bpd")
    assert bpd.task.name == "cifar_bpd" and bpd.model.d_model == 256
    assert "norm" not in compose_run(tmp_path, "task=listops", "model=multires").task  # no experiment, no file


def test_a_config_this_code_cannot_build_keeps_its_keys() -> None:
    """Old records (an option since dropped, an unregistered model) and partial configs are hashed as written."""
    old = {"task": {"name": "scifar"}, "model": {"name": "multires", "depth": 10, "dropped_option": 1}, "seed": 0}
    assert semantic_config(old)["model"] == {"name": "multires", "depth": 10, "dropped_option": 1}
    unknown = {"task": {"name": "scifar"}, "model": {"name": "nosuch", "depth": 10}, "seed": 0}
    assert semantic_config(unknown)["model"] == {"name": "nosuch", "depth": 10}
    partial = {"task": {"name": "scifar"}, "model": {"name": "multires", "depth": 10}, "seed": 0}
    assert semantic_config(partial)["model"] == {"name": "multires", "depth": None}  # K 2 at L 1024: automatic
