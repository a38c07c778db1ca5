"""ListOps: the generator against an independent evaluator, the release format, the tokeniser, the spec from the
config, the integrity of generated sets, the data fingerprint, and one-line errors for bad files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from harness.errors import ConfigError, DataError
from tasks import listops
from tasks.listops import GeneratorSettings, ListOpsConfig
from tests.helpers import ROOT

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


def test_independent_evaluator_on_hand_worked_expressions() -> None:
    # The evaluator the generator is checked against, checked itself on cases worked by hand.
    assert evaluate_string("( ( ( ( ( [MED 1 ) 2 ) 5 ) 8 ) ] )") == 3  # (2 + 5) / 2 rounded down
    assert evaluate_string("( ( ( [MAX 2 ) ( ( ( [MIN 9 ) 4 ) ] ) ) ] )") == 4
    assert evaluate_string("( ( ( ( [SM 9 ) 9 ) ( ( ( [MED 7 ) 3 ) ] ) ) ] )") == 3  # 9 + 9 + 5 = 23
    assert evaluate_string("7") == 7


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
    other = listops.generate(GeneratorSettings(**{**SMALL.__dict__, "seed": 4}))
    assert other["train"] != rows["train"]


def test_impossible_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="at most 5 tokens"):  # depth 2, 3 args: [OP d d d ] at most
        listops.generate(GeneratorSettings(min_length=10, max_length=60, max_depth=2, max_args=3))
    with pytest.raises(ConfigError, match="strictly between"):
        listops.generate(GeneratorSettings(min_length=10, max_length=11))
    with pytest.raises(ConfigError, match="at least one example per split"):
        listops.generate(GeneratorSettings(n_val=0, min_length=10, max_length=60, max_depth=4))


def test_generation_that_cannot_find_enough_distinct_expressions_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listops, "STALL_LIMIT", 2000)
    # 0 < tokens < 2 admits only the ten single digits.
    with pytest.raises(ConfigError, match="found only 10 of 30 distinct"):
        listops.generate(GeneratorSettings(n_train=10, n_val=10, n_test=10, min_length=0, max_length=2))


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
                    "--max-depth", "3"], check=True, cwd=ROOT,
                   capture_output=True)
    raw = (out / "basic_train.tsv").read_bytes()
    assert raw.startswith(b"Source\tTarget\r\n")  # csv.writer's excel dialect, as the reference writes
    text = raw.decode().splitlines()
    assert len(text) == 31 and all(line.count("\t") == 1 for line in text)
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary files
    source, target = text[1].split("\t")
    assert "(" in source and evaluate_string(source) == int(target)
    rows = listops.read_release(out)
    assert [len(rows[s]) for s in ("train", "val", "test")] == [30, 5, 5]


def test_tokeniser_drops_parentheses_maps_brackets_truncates_and_appends_eos() -> None:
    source = "( ( ( [MAX 2 ) 9 ) ] )"
    v = listops.VOCAB
    assert listops.tokenize(source, 2048) == [4, 10, 17, 7, 2]  # the fixed ids: [MAX, 2, 9, X, <eos>
    assert listops.tokenize(source, 2048) == [v["[MAX"], v["2"], v["9"], v["X"], listops.EOS]
    assert listops.tokenize(source, 3) == [v["[MAX"], v["2"], listops.EOS]
    assert listops.tokenize(source, 3, append_eos=False) == [v["[MAX"], v["2"], v["9"]]
    assert len(listops.VOCAB) == 18 and listops.VOCAB["<pad>"] == 0
    assert listops.tokenize("( ( [SM 3 ) ? )", 10, append_eos=False) == [v["[SM"], v["3"], listops.UNK]
    assert sorted(listops.VOCAB.values()) == list(range(18))


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
    x, y = task.splits["train"][0]
    assert len(x) == task_length(task.splits["train"], 0) and x[-1] == listops.EOS and 0 <= y <= 9
    batch = task.collate([task.splits["train"][i] for i in range(4)])
    assert batch["x"].dtype == torch.long and batch["x"].shape[1] == int(batch["lengths"].max())
    directory = Path(task.info["dir"])
    stamp = (directory / "basic_train.tsv").stat().st_mtime_ns
    again = listops.build(cfg, tmp_path)
    assert (directory / "basic_train.tsv").stat().st_mtime_ns == stamp
    assert [again.splits["val"][i][1] for i in range(10)] == [task.splits["val"][i][1] for i in range(10)]
    other = listops.build(ListOpsConfig(n_train=40, n_val=10, n_test=10, min_length=10, max_length=50,
                                        max_depth=4, seed=9), tmp_path)
    assert other.info["dir"] != task.info["dir"]


def task_length(dataset: Dataset, i: int) -> int:
    return len(dataset[i][0])


def test_task_from_a_release_directory_padded_to_l_max(tmp_path: Path) -> None:
    root = tmp_path / "listops-1000"
    listops.write_release(listops.generate(SMALL), root)
    cfg = ListOpsConfig(root=str(root), l_max=64, pad_to_max=True)
    task = listops.build(cfg, root)  # the runner passes the resolved root as data_root
    assert task.info["source"] == "files" and task.info["root"] == str(root)
    assert task.info["sizes"] == {"train": 60, "val": 20, "test": 20}
    batch = task.collate([task.splits["val"][i] for i in range(3)])
    assert batch["x"].shape == (3, 64) and batch["x"].dtype == torch.long
    for row, n in zip(batch["x"], batch["lengths"].tolist()):
        assert row[n - 1] == listops.EOS and not row[n:].any()
    with pytest.raises(ConfigError, match="task.l_max"):
        ListOpsConfig(root=str(root), l_max=1)
    with pytest.raises(ConfigError, match="task.l_max"):
        ListOpsConfig(root=str(root), l_max=0, append_eos=False)
    assert ListOpsConfig(root=str(root), l_max=1, append_eos=False).l_max == 1


def test_impossible_generator_settings_are_refused_with_the_config() -> None:
    with pytest.raises(ConfigError, match="task.max_depth=2, task.max_args=3 have at most 5 tokens"):
        ListOpsConfig(min_length=10, max_length=60, max_depth=2, max_args=3)
    with pytest.raises(ConfigError, match="task.n_train/task.n_val/task.n_test"):
        ListOpsConfig(n_test=0)
    ListOpsConfig(root="/lra/listops-1000", n_test=0)  # the release is read, not generated: no settings apply


def test_interrupted_generation_is_not_read(tmp_path: Path) -> None:
    settings = listops.settings_of(ListOpsConfig(n_train=20, n_val=5, n_test=5, min_length=10, max_length=50,
                                                 max_depth=4))
    half = listops.generated_dir(tmp_path, settings)
    half.mkdir(parents=True)
    (half / "basic_train.tsv").write_text("Source\tTarget\n")  # what a killed generation might leave
    with pytest.warns(UserWarning, match="never completed"):
        out = listops.ensure_generated(tmp_path, settings)
    assert len(listops.read_release(out)["train"]) == 20


TINY = ListOpsConfig(n_train=40, n_val=10, n_test=10, min_length=10, max_length=50, max_depth=4)


def test_spec_from_the_config_equals_the_built_one(tmp_path: Path) -> None:
    generated = listops.build(TINY, tmp_path)
    assert generated.spec == listops.task_spec(TINY)
    root = tmp_path / "listops-1000"
    listops.write_release(listops.generate(SMALL), root)
    cfg = ListOpsConfig(root=str(root), l_max=2000, append_eos=False)
    assert listops.build(cfg, root).spec == listops.task_spec(cfg)
    assert listops.task_spec(cfg).seq_len == 2000


def test_lra_reading_appends_no_eos_and_cuts_nothing(tmp_path: Path) -> None:
    task = listops.build(ListOpsConfig(**{**TINY.__dict__, "append_eos": False}), tmp_path)
    rows = listops.read_release(Path(task.info["dir"]))["val"].rows
    for (ids, label), (source, target) in zip(task.splits["val"].items, rows):
        assert len(ids) == token_count(source) and listops.EOS not in ids.tolist() and label == target


def test_fingerprint_of_generated_and_released_data(tmp_path: Path) -> None:
    task = listops.build(TINY, tmp_path)
    fp = task.info["fingerprint"]
    assert fp["generator_version"] == listops.GENERATOR_VERSION
    assert fp["settings"] == listops.settings_of(TINY).__dict__ and len(fp["sha256"]) == 64 and fp["files"] == 3
    assert listops.build(TINY, tmp_path / "elsewhere").info["fingerprint"] == fp  # a function of the settings
    root = tmp_path / "release"
    listops.write_release(listops.generate(SMALL), root)
    released = listops.build(ListOpsConfig(root=str(root)), root).info["fingerprint"]
    path = root / "basic_test.tsv"
    path.write_bytes(path.read_bytes().replace(b"\r\n", b"\n"))  # the same examples, other bytes
    again = listops.build(ListOpsConfig(root=str(root)), root).info["fingerprint"]
    assert again["sha256"] != released["sha256"] and again["bytes"] < released["bytes"]


def test_generated_file_cut_to_half_its_rows_is_generated_again(tmp_path: Path) -> None:
    first = listops.build(TINY, tmp_path)
    train = Path(first.info["dir"]) / "basic_train.tsv"
    lines = train.read_bytes().splitlines(keepends=True)
    train.write_bytes(b"".join(lines[: 1 + (len(lines) - 1) // 2]))  # a header and half the rows: a valid file
    assert len(listops.read_split(train)) == 20
    with pytest.warns(UserWarning, match="basic_train.tsv has .* bytes, its manifest.json says"):
        again = listops.build(TINY, tmp_path)
    assert again.info["sizes"]["train"] == 40
    assert [again.splits["train"][i][1] for i in range(40)] == [first.splits["train"][i][1] for i in range(40)]


def test_generated_file_altered_with_its_size_kept_is_generated_again(tmp_path: Path) -> None:
    first = listops.build(TINY, tmp_path)
    val = Path(first.info["dir"]) / "basic_val.tsv"
    raw = val.read_bytes()
    label = raw.rstrip()[-1:]
    val.write_bytes(raw.rstrip()[:-1] + (b"0" if label != b"0" else b"1") + b"\r\n")  # one wrong label
    with pytest.warns(UserWarning, match="basic_val.tsv does not match the sha256"):
        again = listops.build(TINY, tmp_path)
    assert again.splits["val"][9][1] == first.splits["val"][9][1]
    manifest = json.loads((Path(first.info["dir"]) / "manifest.json").read_text())
    assert manifest["files"]["basic_val.tsv"]["rows"] == 10 and manifest["settings"]["seed"] == 0


def write_splits(root: Path, train: bytes) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for split in ("val", "test"):
        (root / f"basic_{split}.tsv").write_text("Source\tTarget\n( [MAX 1 2 ] )\t2\n")
    (root / "basic_train.tsv").write_bytes(train)


def test_unknown_tokens_name_file_and_line_unless_allowed(tmp_path: Path) -> None:
    write_splits(tmp_path, b"Source\tTarget\n( [MAX 1 2 ] )\t2\n\n( [MIN 4 [AVG 3 ] ] )\t3\n")
    with pytest.raises(DataError, match=r"basic_train.tsv, line 4: unknown token '\[AVG'.*task.allow_unk=true"):
        listops.build(ListOpsConfig(root=str(tmp_path)), tmp_path)
    task = listops.build(ListOpsConfig(root=str(tmp_path), allow_unk=True), tmp_path)
    v = listops.VOCAB
    assert task.splits["train"][1][0].tolist() == [v["[MIN"], v["4"], listops.UNK, v["3"], v["X"], v["X"],
                                                   listops.EOS]


def test_bytes_that_are_not_utf8_name_file_and_line(tmp_path: Path) -> None:
    write_splits(tmp_path, b"Source\tTarget\n( [MAX 1 2 ] )\t2\n( [MAX 1 \xb2 ] )\t2\n")
    with pytest.raises(DataError, match=r"basic_train.tsv, line 3: byte 0xb2 is not UTF-8") as err:
        listops.read_release(tmp_path)
    assert "\n" not in str(err.value)  # one line


def test_a_line_over_the_csv_field_limit_is_read(tmp_path: Path) -> None:
    long = "( [SM " + "1 " * 70_000 + "] )"  # 140,000 characters, over csv's default limit of 131,072
    assert len(long) > 131_072
    write_splits(tmp_path, f"Source\tTarget\n{long}\t0\n".encode())
    split = listops.read_split(tmp_path / "basic_train.tsv")
    assert split.rows == [(long, 0)] and csv.field_size_limit() >= len(long)
    task = listops.build(ListOpsConfig(root=str(tmp_path), l_max=64), tmp_path)
    assert len(task.splits["train"][0][0]) == 64  # truncated to l_max as the S4 pipeline does


@pytest.mark.parametrize(("content", "message"), [
    ("Input\tLabel\n( [MAX 1 ] )\t1\n", "expected the tab-separated columns ['Source', 'Target'], found "
                                        "['Input', 'Label']"),
    ("Source,Target\n( [MAX 1 ] ),1\n", "found ['Source,Target']"),
    ("", "is empty"),
    ("Source\tTarget\n", "holds a header but no examples"),
    ("Source\tTarget\n( [MAX 1 ] )\t1\n( [MAX 1 ] )\tseven\n", "line 3"),
    ("Source\tTarget\n( [MAX 1 ] )\t12\n", "label 0-9"),
    ("Source\tTarget\n( [MAX 1 ] )\t1\n( [MAX 3 ] )\t\u0663\n", "line 3: expected an expression and a label 0-9 (an "
                                                              "ASCII digit)"),  # an Arabic-Indic three
    ("Source\tTarget\n( [MAX 1 ] )\n", "line 2"),
])
def test_bad_release_files_are_named(tmp_path: Path, content: str, message: str) -> None:
    for split in ("train", "val", "test"):
        (tmp_path / f"basic_{split}.tsv").write_text("Source\tTarget\n( [MAX 1 2 ] )\t2\n")
    (tmp_path / "basic_train.tsv").write_text(content)
    with pytest.raises(DataError, match="basic_train.tsv") as err:
        listops.read_release(tmp_path)
    assert message in str(err.value)


def test_missing_root_or_split_says_where_to_get_the_data(tmp_path: Path) -> None:
    nowhere = tmp_path / "nowhere"
    with pytest.raises(DataError, match="nowhere does not exist") as err:
        listops.build(ListOpsConfig(root=str(nowhere)), nowhere)
    assert "lra_release.gz" in str(err.value) and "listops-1000" in str(err.value)
    assert "leave task.root unset" in str(err.value)
    (tmp_path / "basic_train.tsv").write_text("Source\tTarget\n( [MAX 1 2 ] )\t2\n")
    with pytest.raises(DataError, match="basic_val.tsv is missing"):
        listops.read_release(tmp_path)
