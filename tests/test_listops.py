"""ListOps: the generator against an independent evaluator, the release format, the tokeniser."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.errors import DataError
from tasks import listops
from tasks.listops import GeneratorSettings, ListOpsConfig

SMALL = GeneratorSettings(n_train=60, n_val=20, n_test=20, min_length=10, max_length=60, max_depth=4, seed=3)


def median_floor(args: list[int]) -> int:
    s, n = sorted(args), len(args)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) // 2


OPS = {"[MIN": min, "[MAX": max, "[SM": lambda a: sum(a) % 10, "[MED": median_floor}


def evaluate_string(source: str) -> int:
    """Evaluate a source string with a stack, independently of the generator's trees."""
    stack: list[list] = []
    result = None
    for token in source.replace("(", " ").replace(")", " ").split():
        if token.startswith("["):
            stack.append([token])
        elif token == "]":
            op, *args = stack.pop()
            value = OPS[op](args)
            if stack:
                stack[-1].append(value)
            else:
                result = value
        else:
            if stack:
                stack[-1].append(int(token))
            else:
                result = int(token)
    assert not stack
    return result


def token_count(source: str) -> int:
    return len(source.replace("(", " ").replace(")", " ").split())


def test_generated_labels_lengths_and_uniqueness() -> None:
    rows = listops.generate(SMALL)
    assert [len(rows[s]) for s in ("train", "val", "test")] == [60, 20, 20]
    everything = [r for s in rows.values() for r in s]
    assert len({source for source, _ in everything}) == 100  # duplicates removed
    for source, label in everything:
        assert label == evaluate_string(source)
        assert SMALL.min_length < token_count(source) < SMALL.max_length
        assert source.startswith("( ") and source.endswith(" )")  # the reference's parentheses
    ops = {t for source, _ in everything for t in source.split() if t.startswith("[")}
    assert ops == {"[MIN", "[MAX", "[MED", "[SM"}
    assert listops.generate(SMALL) == rows  # a function of its settings


def test_reference_string_format_and_median_rounding() -> None:
    tree = (((listops.MED, 2), ((((listops.MAX, 1), 5), listops.END))), listops.END)
    assert listops.to_string(tree) == "( ( ( [MED 2 ) ( ( ( [MAX 1 ) 5 ) ] ) ) ] )"
    assert listops.to_value(tree) == 3  # median of [2, 5] = 3.5, rounded down as int(np.median(...))
    assert listops.apply(listops.MED, [1, 2, 3, 4]) == 2
    assert listops.apply(listops.SUM_MOD, [9, 9, 3]) == 1


def test_release_format_round_trip_via_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "lra"
    subprocess.run([sys.executable, "-m", "tasks.listops", "generate", "--out", str(out), "--train", "30",
                    "--val", "5", "--test", "5", "--seed", "1", "--min-length", "8", "--max-length", "40",
                    "--max-depth", "3"], check=True, cwd=Path(__file__).resolve().parent.parent,
                   capture_output=True)
    text = (out / "basic_train.tsv").read_text().splitlines()
    assert text[0] == "Source\tTarget" and len(text) == 31
    source, target = text[1].split("\t")
    assert "(" in source and evaluate_string(source) == int(target)
    rows = listops.read_release(out)
    assert [len(rows[s]) for s in ("train", "val", "test")] == [30, 5, 5]


def test_tokeniser_drops_parentheses_maps_brackets_truncates_and_appends_eos() -> None:
    source = "( ( ( [MAX 2 ) 9 ) ] )"
    v = listops.VOCAB
    assert listops.tokenize(source, 2048) == [v["[MAX"], v["2"], v["9"], v["X"], listops.EOS]
    assert listops.tokenize(source, 3) == [v["[MAX"], v["2"], listops.EOS]
    assert listops.tokenize(source, 3, append_eos=False) == [v["[MAX"], v["2"], v["9"]]
    assert len(listops.VOCAB) == 18 and listops.VOCAB["<pad>"] == 0


def test_collate_pads_and_passes_true_lengths() -> None:
    items = [(torch.tensor([5, 6, 2]), 1), (torch.tensor([7, 2]), 4)]
    batch = listops.make_collate(None)(items)
    assert batch["x"].tolist() == [[5, 6, 2], [7, 2, 0]]
    assert batch["lengths"].tolist() == [3, 2] and batch["y"].tolist() == [1, 4]
    assert listops.make_collate(6)(items)["x"].shape == (2, 6)


def test_task_generates_once_then_reuses_the_cache(tmp_path: Path) -> None:
    cfg = ListOpsConfig(n_train=40, n_val=10, n_test=10, min_length=10, max_length=50, max_depth=4)
    task = listops.build(cfg, tmp_path)
    assert task.spec.vocab_size == 18 and task.spec.n_outputs == 10 and task.spec.variable_length
    assert task.info["sizes"] == {"train": 40, "val": 10, "test": 10}
    directory = Path(task.info["dir"])
    stamp = (directory / "basic_train.tsv").stat().st_mtime_ns
    again = listops.build(cfg, tmp_path)
    assert (directory / "basic_train.tsv").stat().st_mtime_ns == stamp
    assert [again.splits["val"][i][1] for i in range(10)] == [task.splits["val"][i][1] for i in range(10)]
    other = listops.build(ListOpsConfig(n_train=40, n_val=10, n_test=10, min_length=10, max_length=50,
                                        max_depth=4, seed=9), tmp_path)
    assert other.info["dir"] != task.info["dir"]


def test_interrupted_generation_is_not_read(tmp_path: Path) -> None:
    settings = listops.settings_of(ListOpsConfig(n_train=20, n_val=5, n_test=5, min_length=10, max_length=50,
                                                 max_depth=4))
    half = listops.generated_dir(tmp_path, settings)
    half.mkdir(parents=True)
    (half / "basic_train.tsv").write_text("Source\tTarget\n")  # what a killed generation might leave
    out = listops.ensure_generated(tmp_path, settings)
    assert len(listops.read_release(out)["train"]) == 20


@pytest.mark.parametrize(("content", "message"), [
    ("Input\tLabel\n( [MAX 1 ] )\t1\n", "expected the tab-separated columns ['Source', 'Target']"),
    ("Source\tTarget\n", "holds no examples"),
    ("Source\tTarget\n( [MAX 1 ] )\tseven\n", "line 2"),
])
def test_bad_release_files_are_named(tmp_path: Path, content: str, message: str) -> None:
    for split in ("train", "val", "test"):
        (tmp_path / f"basic_{split}.tsv").write_text("Source\tTarget\n( [MAX 1 2 ] )\t2\n")
    (tmp_path / "basic_train.tsv").write_text(content)
    with pytest.raises(DataError, match="basic_train.tsv") as err:
        listops.read_release(tmp_path)
    assert message in str(err.value)


def test_missing_root_or_split_says_where_to_get_the_data(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="lra_release"):
        listops.build(ListOpsConfig(root=str(tmp_path / "nowhere")), tmp_path)
    (tmp_path / "basic_train.tsv").write_text("Source\tTarget\n( [MAX 1 2 ] )\t2\n")
    with pytest.raises(DataError, match="basic_val.tsv is missing"):
        listops.read_release(tmp_path)
