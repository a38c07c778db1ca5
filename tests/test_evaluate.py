"""Evaluating trained runs on other data: models extended to longer inputs, the evaluation record and its link to
the training run, ListOps length bins, what a run cost over its pieces, and the reports' cost and length columns."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import tests.toy as toy
from harness import checkpoint, evaluate, runner
from harness.config import EvalConfig, OptimConfig, TrainConfig
from harness.errors import ConfigError
from harness.jobs import dispatch
from harness.registry import MODELS
from harness.results import Store
from harness.task import LengthNotSupported, TaskSpec, extend_length
from harness.train import fit
from models.s4 import S4Config, S4Layer
from models.s4d import S4DConfig, S4DLayer
from models.transformer import PositionalEncoder
from reports import build
from reports.cost import pareto_front
from tasks import listops
from tests.helpers import TINY_LISTOPS, compose_run

SPEC = TaskSpec("t", "tokens", 32, 10, "accuracy", vocab_size=18, variable_length=True)


@pytest.mark.parametrize(("layer", "cfg"), [(S4Layer, S4Config(d_model=4, d_state=8)),
                                            (S4DLayer, S4DConfig(d_model=4, d_state=8))])
def test_an_ssm_kernel_extended_to_a_length_is_the_kernel_of_one_built_for_it(layer: Any, cfg: Any) -> None:
    torch.manual_seed(0)
    short = layer(cfg, 16)
    torch.manual_seed(0)
    long = layer(cfg, 64)  # the same draws: the same SSM, its kernel computed (S4: C-tilde attuned) for 64 at once
    with torch.no_grad():
        assert not short.kernel(64)[..., 16:].any()  # as published: cut at l_max
        short.extend_length(64)  # S4: C-tilde doubled twice, 16 -> 32 -> 64
        extended, built = short.kernel(64), long.kernel(64)
    assert extended[..., 16:].abs().max() > 1e-3
    torch.testing.assert_close(extended, built, rtol=1e-4, atol=1e-5 * float(built.abs().max()))


def test_sinusoidal_positions_extend_and_learned_ones_cannot() -> None:
    enc = PositionalEncoder(SPEC, 8, "sinusoidal", cls_token=True)
    enc.extend_length(100)
    pos = np.arange(101)[:, None]
    angle = pos / 10000 ** (np.arange(0, 8, 2) / 8)  # Vaswani et al.: sin on even channels, cos on odd ones
    assert enc.table.shape == (101, 8)
    np.testing.assert_allclose(enc.table[:, 0::2].numpy(), np.sin(angle), atol=2e-5)
    np.testing.assert_allclose(enc.table[:, 1::2].numpy(), np.cos(angle), atol=2e-5)
    learned = PositionalEncoder(SPEC, 8, "learned")
    learned.extend_length(32)  # within its table: nothing to do
    with pytest.raises(LengthNotSupported, match="learned positions end at 32"):
        learned.extend_length(33)


def _small(name: str) -> Any:
    fields = {f.name for f in dataclasses.fields(MODELS.get(name).config_cls)}
    options = {"d_model": 8, "n_layers": 1, "kernel_dim": 8, "n_heads": 2, "d_ff": 16, "qkv_dim": 8}
    return MODELS.config(name, **{k: v for k, v in options.items() if k in fields})


@pytest.mark.parametrize("name", MODELS.names())
def test_an_extended_model_runs_longer_inputs_and_keeps_its_outputs_on_short_ones(name: str) -> None:
    torch.manual_seed(0)
    model = MODELS.build(_small(name), SPEC).eval()
    x = torch.randint(3, 18, (2, 20))
    lengths = torch.tensor([20, 13])
    with torch.no_grad():
        before = model(x, lengths=lengths)
        extend_length(model, 128)
        long = model(torch.randint(3, 18, (2, 128)), lengths=torch.tensor([128, 90]))
        after = model(x, lengths=lengths)
    assert long.shape == (2, 10) and torch.isfinite(long).all()
    if name != "wavspa":  # WavSpA pads every batch to the task's length, now the longer one: outputs change
        torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------------------------
# The evaluation job


def _train(tmp_path: Path, *overrides: str) -> dict[str, Any]:
    rec = runner.run(compose_run(tmp_path, *TINY_LISTOPS, "sweep=tiny", "train.epochs=2", *overrides))
    assert rec["status"] == "complete"
    return rec


def _by_hand(model: torch.nn.Module, examples: list[tuple[list[int], int]]) -> float:
    """Accuracy one example at a time, unpadded."""
    with torch.no_grad():
        hits = [int(model(torch.tensor([ids]), lengths=torch.tensor([len(ids)])).argmax()) == label
                for ids, label in examples]
    return sum(hits) / len(hits)


def _test_examples(data_dir: Path) -> list[tuple[list[int], int]]:
    """The test split of a generated set: its source tokens read here (ListOps: ']' is 'X', no parentheses)."""
    from tasks.listops import EOS, VOCAB

    rows = (data_dir / "basic_test.tsv").read_text().splitlines()[1:]
    out = []
    for row in rows:
        source, label = row.split("\t")
        tokens = source.replace("(", " ").replace(")", " ").replace("]", "X").split()
        out.append(([VOCAB[t] for t in tokens] + [EOS], int(label)))
    return out


def test_a_run_evaluated_on_other_data_gets_its_own_record_from_its_best_weights(tmp_path: Path) -> None:
    trained = _train(tmp_path)
    rid = trained["run_id"]
    run_dir = tmp_path / "runs" / rid
    best = torch.load(run_dir / checkpoint.BEST, weights_only=True)
    assert set(best) == {"model"}  # the weights alone
    last = torch.load(run_dir / "last.pt", weights_only=True)
    assert all(torch.equal(best["model"][k], v) for k, v in last["progress"]["best_state"].items())
    train_record = (tmp_path / "store" / f"{rid}.json").read_bytes()

    other = [o.replace("task.n_test=16", "task.n_test=24") for o in TINY_LISTOPS if not o.startswith("model")]
    cfg = compose_run(tmp_path, "job=eval", f"eval.runs=[{rid}]", *other, "task.seed=7")
    report = dispatch(cfg)
    evals = [r for r in Store(tmp_path / "store").records() if r.get("kind") == "eval"]
    assert len(evals) == 1 and report is not None and report.sweep == "tiny"
    rec = evals[0]
    assert rec["train_run_id"] == rid and rec["run_id"].startswith(f"eval-{rid}-") and rec["status"] == "complete"
    assert rec["data"]["seed"] == 7 and rec["data"]["sizes"]["test"] == 24
    assert (tmp_path / "store" / f"{rid}.json").read_bytes() == train_record  # the training record untouched

    model = MODELS.build(compose_run(tmp_path, *TINY_LISTOPS).model, SPEC_OF_TINY).eval()
    model.load_state_dict(best["model"])
    assert rec["metrics"]["test"] == pytest.approx(_by_hand(model, _test_examples(Path(rec["data"]["dir"]))))

    path = tmp_path / "store" / f"{rec['run_id']}.json"
    mtime = path.stat().st_mtime_ns
    dispatch(cfg)  # complete: not evaluated again
    assert path.stat().st_mtime_ns == mtime


def test_a_run_tested_on_its_last_state_is_evaluated_on_that_state(tmp_path: Path) -> None:
    """train.test_on=last (the LRA Transformer's --test_only run): final.pt keeps the last state, job=eval scores it
    and says so, and a run folder left with last.pt alone gives the same state, not the best-validation one."""
    trained = _train(tmp_path, "train.test_on=last")
    assert trained["metrics"]["tested"] == "last"
    run_dir = tmp_path / "runs" / trained["run_id"]
    final = torch.load(run_dir / checkpoint.FINAL, weights_only=True)
    assert set(final) == {"model"} and not (run_dir / checkpoint.BEST).exists()
    last = torch.load(run_dir / "last.pt", weights_only=True)
    assert all(torch.equal(final["model"][k], v) for k, v in last["model"].items())

    other = [o.replace("task.n_test=16", "task.n_test=24") for o in TINY_LISTOPS if not o.startswith("model")]
    dispatch(compose_run(tmp_path, "job=eval", f"eval.runs=[{trained['run_id']}]", *other, "task.seed=7"))
    rec = next(r for r in Store(tmp_path / "store").records() if r.get("kind") == "eval")
    assert rec["eval"]["state"] == "last"
    model = MODELS.build(compose_run(tmp_path, *TINY_LISTOPS).model, SPEC_OF_TINY).eval()
    model.load_state_dict(final["model"])
    assert rec["metrics"]["test"] == pytest.approx(_by_hand(model, _test_examples(Path(rec["data"]["dir"]))))

    # Only last.pt left (a run from before final.pt): its current weights for a last-state run, its best state else.
    (run_dir / checkpoint.FINAL).unlink()
    nudged = {k: v + 1 if v.is_floating_point() else v for k, v in last["model"].items()}
    torch.save({**last, "progress": {**last["progress"], "best_state": nudged}}, run_dir / "last.pt")
    got = evaluate.load_tested(trained, tmp_path)
    assert all(torch.equal(got[k], v) for k, v in last["model"].items())
    got = evaluate.load_tested({**trained, "metrics": {**trained["metrics"], "tested": "best"}}, tmp_path)
    assert all(torch.equal(got[k], v) for k, v in nudged.items())


def test_the_report_shows_a_runs_evaluations_on_other_data_beside_its_own_test(tmp_path: Path) -> None:
    from reports.build import build as build_report
    from reports.other_evals import other_settings

    trained = _train(tmp_path)
    own = float(trained["metrics"]["test"])
    rid = trained["run_id"]
    dispatch(compose_run(tmp_path, "job=redraw", f"eval.runs=[{rid}]", "eval.seed=7", "eval.n_test=24"))
    dispatch(compose_run(tmp_path, "job=eval", f"eval.runs=[{rid}]", *[o for o in TINY_LISTOPS
                                                                       if not o.startswith("model")]))
    fresh, again = sorted((r for r in Store(tmp_path / "store").records() if r.get("kind") == "eval"),
                          key=lambda r: r["data"]["seed"], reverse=True)
    # The run's own task config, another draw: only the generator's seed and the split sizes differ.
    changed = {k for k in trained["config"]["task"] if fresh["config"]["task"][k] != trained["config"]["task"][k]}
    assert changed <= {"seed", "n_train", "n_val", "n_test"} and fresh["data"]["sizes"] == {"train": 0, "val": 0,
                                                                                              "test": 24}
    text = build_report(tmp_path / "store", tmp_path / "report").read_text()
    lines = text.split("complete runs evaluated again on other data:")[1].strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = sorted((dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
                   for line in lines[2:4]), key=lambda row: "seed 7" in row["evaluated on"])  # own set, seed 7
    p = fresh["metrics"]["test"]
    assert rows[1]["evaluated on"] == f"generated, seed 7, sha256 {fresh['data']['fingerprint']['sha256'][:12]}"
    assert rows[1]["examples"] == "24" and rows[1]["test acc (%)"] == f"{100 * p:.2f}"
    assert rows[1]["SE"] == f"{100 * (p * (1 - p) / 24) ** 0.5:.2f}"
    assert rows[1]["run's own test acc (%)"] == f"{100 * own:.2f}"
    assert rows[1]["difference"] == f"{100 * (p - own):.2f}"
    assert rows[0]["evaluated on"].endswith("(the run's own set)") and rows[0]["examples"] == "16"
    assert rows[0]["other task settings"] == rows[1]["other task settings"] == "—"  # the same reading of the data
    assert other_settings({"name": "listops", "seed": 7, "l_max": 96, "append_eos": True},
                          {"name": "listops", "seed": 0, "l_max": 48, "append_eos": True}) == "l_max=96"
    assert rows[0]["test acc (%)"] == f"{100 * again['metrics']['test']:.2f}" == f"{100 * own:.2f}"


def test_a_redraw_that_would_repeat_the_training_data_or_has_no_generator_is_refused(tmp_path: Path) -> None:
    rid = _train(tmp_path)["run_id"]
    with pytest.raises(ConfigError, match="eval.seed=0 is the generator seed"):
        dispatch(compose_run(tmp_path, "job=redraw", f"eval.runs=[{rid}]", "eval.seed=0"))
    with pytest.raises(ConfigError, match="leave task=... out"):
        dispatch(compose_run(tmp_path, "job=redraw", f"eval.runs=[{rid}]", "task=listops"))
    toy = runner.run(compose_run(tmp_path, "task=toy", "model=transformer", "model.d_model=16", "model.n_layers=1",
                                 "train.epochs=1"))
    with pytest.raises(ConfigError, match="job=redraw needs a run trained on a generated task"):
        dispatch(compose_run(tmp_path, "job=redraw", f"eval.runs=[{toy['run_id']}]"))
    assert not [r for r in Store(tmp_path / "store").records() if r.get("kind") == "eval"]


SPEC_OF_TINY = TaskSpec("listops", "tokens", 48, 10, "accuracy", vocab_size=18, variable_length=True)


def test_default_bins_are_three_doublings_above_the_training_lengths() -> None:
    assert listops.length_bins({"max_length": 2000}) == [(2000, 4000), (4000, 8000), (8000, 16000)]
    assert [evaluate.bin_label(*b) for b in listops.length_bins({"max_length": 2000})] == ["2-4K", "4-8K", "8-16K"]
    with pytest.raises(ConfigError, match=r"eval.bins entry \[100, 101\] must be"):
        EvalConfig(bins=[[100, 101]])


def test_length_bins_say_what_a_model_cannot_run_and_reach_the_leaderboard(tmp_path: Path) -> None:
    _train(tmp_path)
    _train(tmp_path, "model.positions=learned")
    report = dispatch(compose_run(tmp_path, "job=lengths", "eval.sweep=tiny", "eval.bins=[[40,60]]",
                                  "eval.n_test=20"))
    statuses = sorted(r["status"] for r in Store(tmp_path / "store").records() if r.get("kind") == "eval")
    assert statuses == ["complete", "not_applicable"]
    done = next(r for r in Store(tmp_path / "store").records() if r.get("status") == "complete"
                and r.get("kind") == "eval")
    assert done["eval"] == {"split": "test", "bin": "40-60", "min_length": 40, "max_length": 60, "seq_len": 60,
                            "trained_seq_len": 48, "state": "best"}
    assert done["data"]["seed"] == 1 and done["data"]["max_depth"] == 3  # its own seed, the training rules
    lengths = [len(ids) - 1 for ids, _ in _test_examples(Path(done["data"]["dir"]))]
    assert len(lengths) == 20 and all(40 < n < 60 for n in lengths)

    assert report is not None
    text = build(report.store, report.out, sweep=report.sweep).read_text()
    assert "40-60 test acc (%)" in text and "| n/a: learned positions end at 48 |" in text
    assert (report.out / "figures" / "lengths_listops.png").exists()
    assert (report.out / "figures" / "cost_listops.png").exists()


def test_an_unknown_run_or_neither_runs_nor_sweep_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="eval.runs=.RUN_ID,....* or eval.sweep=NAME"):
        dispatch(compose_run(tmp_path, "job=lengths"))
    with pytest.raises(Exception, match="no training record nope"):
        dispatch(compose_run(tmp_path, "job=lengths", "eval.runs=[nope]"))


# ------------------------------------------------------------------------------------------------------------------
# Cost


def test_a_resumed_run_costs_the_sum_of_its_pieces(tmp_path: Path) -> None:
    task = toy.build(toy.ToyConfig(), tmp_path)
    collate, calls = task.collate, {"n": 0}

    def stopping(items: list[Any]) -> Any:
        calls["n"] += 1
        if calls["n"] == 9:  # inside the second epoch
            signal.raise_signal(signal.SIGUSR2)
        return collate(items)

    pieces = iter(range(1, 4))

    def run() -> Any:
        checkpoint.seed_everything(0)
        model = MODELS.build(_small("transformer"), task.spec)
        return fit(model, task, TrainConfig(epochs=3, batch_size=16, progress=False), OptimConfig(), 0, tmp_path,
                   torch.device("cpu"), piece={"piece": next(pieces)})

    task.collate = stopping
    with pytest.raises(checkpoint.Preempted):
        run()
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    first = saved["progress"]
    assert first["pieces"] == 1 and first["wall_s"] > 0 and first["segments"] == [{"from_step": 0, "piece": 1}]
    task.collate = collate
    result = run()
    assert result.cost["pieces"] == 2 and result.cost["devices"] == 1 and result.cost["device"] == "cpu"
    assert result.cost["wall_s"] > first["wall_s"] and result.cost["train_s"] < result.cost["wall_s"]
    assert result.cost["device_hours"] == pytest.approx(result.cost["wall_s"] / 3600)
    # Each piece says what it ran on, from the step it began at.
    assert result.cost["segments"] == [{"from_step": 0, "piece": 1}, {"from_step": first["step"], "piece": 2}]

    # A checkpoint from before pieces were kept: the steps before the resume are accounted to no known piece.
    del saved["progress"]["segments"]
    torch.save(saved, tmp_path / "last.pt")
    assert run().cost["segments"] == [{"from_step": 0, "unrecorded": True}, {"from_step": first["step"], "piece": 3}]


def test_the_pareto_front_is_what_no_point_beats() -> None:
    rng = random.Random(0)
    points = [(rng.choice([1.0, 2.0, 3.0, 4.0]), rng.choice([0.1, 0.2, 0.3])) for _ in range(30)] + [(0.5, 0.0)]
    # By a sweep: sorted by cost (ties: best score first), a point is on the front when it beats the best so far.
    front, best = set(), -math.inf
    for i in sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1])):
        if points[i][1] > best:
            front.add(points[i])
            best = points[i][1]
    got = pareto_front(points)
    assert {points[i] for i in got} == front
    assert [points[i][0] for i in got] == sorted(points[i][0] for i in got)
    assert {points[i] for i in pareto_front([(c, -s) for c, s in points], higher_is_better=False)} == {
        (c, s) for c, s in front}  # lower is better: the same points with the scores negated


def test_the_leaderboard_shows_each_rows_mean_cost(tmp_path: Path) -> None:
    from reports.build import build as build_report

    store = Store(tmp_path / "store")
    config = json.loads(json.dumps(runner.plain_config(compose_run(tmp_path, *TINY_LISTOPS))))
    for seed, hours in ((0, 2.0), (1, 4.0)):
        store.write({"run_id": f"r{seed}", "kind": "train", "sweep": "s", "task": "listops", "model": "transformer",
                     "seed": seed, "status": "complete", "config": {**config, "seed": seed}, "params": 1000,
                     "metrics": {"metric": "accuracy", "higher_is_better": True, "val": 0.5, "test": 0.5},
                     "throughput": {"train_samples_per_s": 10.0 * (seed + 1), "train_tokens_per_s": 1e4},
                     "memory": {"peak_bytes": 2**30 * (seed + 1)},
                     "cost": {"wall_s": hours * 3600, "device_hours": hours, "device": "cuda", "devices": 1}})
    text = build_report(tmp_path / "store", tmp_path / "out").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| model |"))
    row = next(line for line in text.splitlines() if line.startswith("| transformer |"))
    cells = dict(zip(header.split("|"), row.split("|"), strict=True))
    assert cells[" train GPU-h "].strip() == "3"  # the mean of 2 and 4 GPU-hours
    assert cells[" train samples/s "].strip() == "15"
    assert cells[" peak memory "].strip() == "1.5 GiB"
