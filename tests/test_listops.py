"""ListOps: the generator against an independent evaluator and against the files the reference code wrote, the
release format, the tokeniser, the spec from the config, the integrity of generated sets, the data fingerprint,
and one-line errors for bad files."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from harness.errors import ConfigError, DataError
from harness.files import HOST_TAG
from tasks import listops
from tasks import listops_generator as gen
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
    monkeypatch.setattr(gen, "STALL_LIMIT", 2000)
    # 0 < tokens < 2 admits only the ten single digits.
    with pytest.raises(ConfigError, match="found only 10 of 30 distinct"):
        listops.generate(GeneratorSettings(n_train=10, n_val=10, n_test=10, min_length=0, max_length=2))


def test_reference_string_format_and_median_rounding() -> None:
    tree = (((gen.MED, 2), ((((gen.MAX, 1), 5), gen.END))), gen.END)
    assert gen.to_string(tree) == "( ( ( [MED 2 ) ( ( ( [MAX 1 ) 5 ) ] ) ) ] )"
    assert gen.to_value(tree) == 3  # median of [2, 5] = 3.5, rounded down as int(np.median(...))
    assert gen.apply(gen.MED, [1, 2, 3, 4]) == 2
    assert gen.apply(gen.SUM_MOD, [9, 9, 3]) == 1


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


def csv_rows(path: Path) -> list[tuple[str, int]]:
    """The rows of a release file as the csv module reads them."""
    with open(path, newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        next(reader)
        return [(source, int(label)) for source, label in reader]


def test_lra_reading_appends_no_eos_and_cuts_nothing(tmp_path: Path) -> None:
    task = listops.build(ListOpsConfig(**{**TINY.__dict__, "append_eos": False}), tmp_path)
    rows = csv_rows(Path(task.info["dir"]) / "basic_val.tsv")
    assert len(task.splits["val"]) == len(rows) == 10
    for i, (source, target) in enumerate(rows):
        ids, label = task.splits["val"][i]
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
    v = listops.VOCAB
    assert split.tokens(0) == [v["[SM"]] + [v["1"]] * 70_000 + [v["X"]] and split.labels.tolist() == [0]
    assert csv.field_size_limit() >= len(long)
    task = listops.build(ListOpsConfig(root=str(tmp_path), l_max=64), tmp_path)
    assert task.splits["train"][0][0].tolist() == [v["[SM"]] + [v["1"]] * 62 + [listops.EOS]  # cut as S4 cuts


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


# ----------------------------------------------------------------------------------------------------------------
# The same draws as the reference, fast

# sha256 of basic_{train,val,test}.tsv as the generator of commit ca1564a wrote them (the reference's recursive
# generate_tree, to_string and to_value, csv.writer; listops.generate then write_release). At LRA size (the defaults
# of GeneratorSettings) they were 4e224f77e844c6be6e3df7b23704359e6da069fde11d9c164cfea340687560d1,
# bacd62f5900e2e0f46021703defabb78bcd8d3326e68edc9c31e1d7cadbbc265 and
# 80916b0067d998ca3f00dc3a1cbf85913e195f9cdb139a22f15bdd63925c68e2 (too slow for the suite: check with
# `python -m tasks.listops generate --out DIR` and `sha256sum DIR/*.tsv`).
REFERENCE_FILES = {  # name: (settings in the order of GeneratorSettings' fields), then the three sha256
    "small": ((60, 20, 20, 10, 60, 4, 10, 3), "a3a53e94766c10bb003040fc6ca3a232a9de1c870646b4ea7ccac6a5b617243f",
              "9222fe4c1b07b2124545a32f4f46a1e577e3d63828eedbe41e98548b75c4a2a3",
              "1325a7674592bca1f95418a7f228d31448f39c1ecf9d4ac7117418065b0c31f9"),
    "quickstart": ((4000, 500, 500, 20, 100, 4, 10, 0),
                   "be99ccbc92583f2178f3a5b804b1ee1989f1afc8075b5de89f1f7218b3fcd050",
                   "ab26ccf7dded3d118d53202c25bfc431dc1ddc2b536bcff013ae1df7dcfb9366",
                   "e2687add7d47692c3e97c1e895a412c9593e08e6c1c292c2884d3ebca336be5d"),
    "lra_lengths": ((500, 50, 50, 500, 2000, 10, 10, 1),
                    "013ce6050ca7d65fb651489038cf56d174d5b7582e8a35ef7e1faea417323bf3",
                    "d52ea6b16388343588a757e640521d9669a03c2f8613e3f718281dd1f0c06adf",
                    "254c7fe1f860fdc300b5e1764cba6ba4a4722833747cebf06239ccbdb1ac139d"),
    "duplicates": ((40, 10, 10, 0, 8, 3, 3, 5), "807e4060fd579bcf45e7d749de3fda20cdd2a13303a62d7af08123514a52a435",
                   "a753f9361b4a7f0416b4800ea57e5b5e76f690ea0b218fbd20b498c4d04c44bf",
                   "71175c918869d711cbcf654402f63663f1f1436f8a3986044d515e7c217e9b52"),
    "args5_depth6": ((300, 30, 30, 30, 300, 6, 5, 7),
                     "1d454226fcc2a7a6a5753428fad6070a7c4790e6da09a920a54325bd56070a59",
                     "e5b182d2525001249a4c18b8db68d59b103403b22611e179b3ff2768c395212f",
                     "4e82d84c8646420aea27d764828c7bb68cb3d1459860df99a63bc721e355c926"),
    "args2": ((50, 10, 10, 4, 40, 8, 2, 11), "2381143ac2023fc1e4a0351f493bc4c9194d095e5891beb8cc3e30f99bf5efc8",
              "98d6165302b6b729f98fe010e4230c3b535e2e6e2fa2f49ef10beded7c8bde7c",
              "8dbbffede4919c062f9294130ad13fd69231ce9609f08b8540de64f007c9e41f"),
    "args17": ((100, 10, 10, 20, 400, 4, 17, 12), "15907063afec4899752d21b47375533b0d3eafc8f210ba06d99febfc56b6a74e",
               "c52f179f891b5a87ddf59e55d1fec4d93120fc91fa86e09f3ec95c00d8c23140",
               "13447333ac02002b98e13ee8a22878195dcb7e9dcd54a1c8baeca64e3cfefabb"),
    "depth1": ((6, 2, 2, 0, 2, 1, 10, 13), "fe6e09cf317d564000528aeb9ef7fc900138ab21bd1477befb36223a53bc0cbd",
               "0b320853b09d37af02391ff69d030ee2202540c6bdce9b8284b8b3d3f42d7073",
               "c3605d8f57d84c37a81c4c1d8a16c8ac0054784ce450277c9e103cc721bf9961"),
}


def reference_case(name: str) -> tuple[GeneratorSettings, list[str]]:
    numbers, *digests = REFERENCE_FILES[name]
    return GeneratorSettings(*numbers), digests


def file_digests(rows: dict[str, list[tuple[str, int]]]) -> list[str]:
    """sha256 of each split as the reference writes it: csv.writer, tab-delimited."""
    digests = []
    for split in ("train", "val", "test"):
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter="\t")
        writer.writerow(["Source", "Target"])
        writer.writerows(rows[split])
        digests.append(hashlib.sha256(buffer.getvalue().encode()).hexdigest())
    return digests


@pytest.mark.parametrize("name", list(REFERENCE_FILES))
def test_generated_files_are_those_the_reference_code_wrote(tmp_path: Path, name: str) -> None:
    settings, digests = reference_case(name)
    rows = listops.generate(settings, workers=1)
    assert file_digests(rows) == digests
    written = listops.write_release(rows, tmp_path)  # our writer writes the csv module's bytes
    assert [written[f"basic_{split}.tsv"]["sha256"] for split in ("train", "val", "test")] == digests


def test_segments_drawn_in_parallel_give_the_same_files(monkeypatch: pytest.MonkeyPatch) -> None:
    # Small segments that start almost where they end: the pool's segments, their speculative starts and the
    # parent's bridges between them all run.
    settings, digests = reference_case("lra_lengths")
    monkeypatch.setattr(gen, "SEGMENT_WORDS", 1 << 16)
    monkeypatch.setattr(gen, "OVERLAP_WORDS", 1 << 8)
    bridges, walk = [], gen._walk
    monkeypatch.setattr(gen, "_walk", lambda *a, **k: bridges.append(k) or walk(*a, **k))
    assert file_digests(listops.generate(settings, workers=2)) == digests
    assert sum(1 for k in bridges if k.get("meet")) > 5  # the parent drew where a worker had not met the sequence
    assert not multiprocessing.active_children()


@pytest.mark.parametrize(("max_depth", "max_args", "max_length"), [(10, 10, 2000), (10, 10, 40), (5, 3, 12),
                                                                    (3, 17, 100), (7, 2, 9), (1, 10, 2)])
def test_fast_draws_are_the_reference_draws(max_depth: int, max_args: int, max_length: int) -> None:
    reference, fast = gen.random.Random(7), gen.random.Random(7)
    draw = gen._draw_function(fast, max_depth, max_args, max_length)
    for _ in range(300):
        tree, length = gen.generate_tree(reference, 1, max_depth, max_args)
        tokens, _, source, value = draw()
        assert tokens == length
        if length < max_length:
            assert source == gen.to_string(tree) and value == evaluate_string(source)
        else:
            assert source is None  # not rendered, its draws made all the same
        assert fast.getstate() == reference.getstate()


def test_a_python_whose_random_draws_otherwise_falls_back_to_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    settings, digests = reference_case("small")
    monkeypatch.setitem(gen._CHECKED, "fast", False)
    with pytest.warns(UserWarning, match="generating with the reference code"):
        assert file_digests(listops.generate(settings)) == digests


def test_ctrl_c_during_generation_ends_the_pool_and_writes_nothing(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gen, "SEGMENT_WORDS", 1 << 16)
    calls = []

    def interrupted(segment: gen.Segment, i: int) -> gen.Segment:
        calls.append(i)
        raise KeyboardInterrupt  # as Ctrl-C while the pool draws

    monkeypatch.setattr(gen, "_tail", interrupted)
    settings = listops.settings_of(ListOpsConfig(n_train=400, n_val=50, n_test=50, l_max=2048))
    with pytest.raises(KeyboardInterrupt):
        listops.load_generated(tmp_path, settings)
    assert calls and not multiprocessing.active_children()
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no file, whole or temporary, to read later


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_ctrl_c_of_the_generate_command_is_one_line(tmp_path: Path) -> None:
    # LRA size with two processes: minutes of work, interrupted once its workers draw; the terminal's Ctrl-C
    # reaches the whole process group.
    command = [sys.executable, "-m", "tasks.listops", "generate", "--out", str(tmp_path / "out"), "--workers", "2"]
    # A program started in the background of a non-interactive shell (`pytest &` in a script) inherits SIGINT
    # ignored, and Python then never raises KeyboardInterrupt: the command started here is a foreground one.
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=default_sigint)
    wait_for_workers(process, 2)
    os.killpg(process.pid, signal.SIGINT)
    rest = process.communicate(timeout=60)[1]
    assert process.returncode == 130
    assert "interrupted; no file of" in rest and "Traceback" not in rest
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def default_sigint() -> None:
    """In the child before exec: Ctrl-C's default action, whatever this process inherited."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_workers(process: subprocess.Popen, workers: int) -> None:
    """Until the process (a group leader) and its pool's `workers` are running: generation has begun."""
    deadline = time.monotonic() + 60
    while len(group_members(process.pid)) < 1 + workers:
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no pool of {workers} workers started: {process.communicate()[1][-2000:]}")
        time.sleep(0.01)


def group_members(group: int) -> list[int]:
    """The processes of a process group (Linux /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_generation_killed_outright_leaves_no_worker_and_no_traceback() -> None:
    # SIGTERM's default action ends the parent with no chance to end its pool: the workers must go too, silently.
    script = ("from tasks import listops_generator as g; g.SEGMENT_WORDS = 1 << 14; "
              "g.generate(g.GeneratorSettings(), progress=True, workers=2)")
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wait_for_workers(process, 2)
    process.terminate()
    rest = process.communicate(timeout=60)[1]
    deadline = time.monotonic() + 10
    while group_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not group_members(process.pid) and "Traceback" not in rest


# ----------------------------------------------------------------------------------------------------------------
# Generated sets are read only as written, for the settings asked


def test_generated_files_are_read_by_the_fast_path_as_csv_reads_them(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    task = listops.build(TINY, tmp_path)
    directory = Path(task.info["dir"])
    monkeypatch.setattr(listops, "_parse_csv", lambda *a: pytest.fail("csv read a generated file"))
    again = listops.build(TINY, tmp_path)
    for split in ("train", "val", "test"):
        rows = csv_rows(directory / f"basic_{split}.tsv")
        assert [(again.splits[split][i][0].tolist(), again.splits[split][i][1]) for i in range(len(rows))] == \
            [(listops.tokenize(source, TINY.l_max), label) for source, label in rows]


def manifest_of(task: listops.Task) -> Path:
    return Path(task.info["dir"]) / "manifest.json"


def test_a_cut_set_whose_manifest_lists_no_files_is_generated_again(tmp_path: Path) -> None:
    cfg = ListOpsConfig(n_train=400, n_val=10, n_test=10, min_length=10, max_length=50, max_depth=4)
    first = listops.build(cfg, tmp_path)
    manifest = json.loads(manifest_of(first).read_text())
    manifest["files"] = {}
    manifest_of(first).write_text(json.dumps(manifest))
    train = Path(first.info["dir"]) / "basic_train.tsv"
    train.write_bytes(b"".join(train.read_bytes().splitlines(keepends=True)[:201]))  # 200 of 400 rows
    with pytest.warns(UserWarning, match="does not list basic_train.tsv with 400 rows"):
        again = listops.build(cfg, tmp_path)
    assert again.info["sizes"]["train"] == 400


def test_a_manifest_for_other_row_counts_is_not_read(tmp_path: Path) -> None:
    # Files and manifest agree with each other (a set of 20 training rows), not with the settings (40).
    first = listops.build(TINY, tmp_path)
    train = Path(first.info["dir"]) / "basic_train.tsv"
    rows = train.read_bytes().splitlines(keepends=True)[:21]
    train.write_bytes(b"".join(rows))
    manifest = json.loads(manifest_of(first).read_text())
    manifest["files"]["basic_train.tsv"] = {"rows": 20, "bytes": len(b"".join(rows)),
                                            "sha256": hashlib.sha256(b"".join(rows)).hexdigest()}
    manifest_of(first).write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="does not list basic_train.tsv with 40 rows"):
        assert listops.build(TINY, tmp_path).info["sizes"]["train"] == 40


@pytest.mark.parametrize("manifest", ["null", "[]", "{}", '{"generator_version": 1}', "{broken", ""])
def test_a_manifest_without_files_is_generated_again(tmp_path: Path, manifest: str) -> None:
    first = listops.build(TINY, tmp_path)
    manifest_of(first).write_text(manifest)
    with pytest.warns(UserWarning, match="lists no files|is unreadable"):
        again = listops.build(TINY, tmp_path)
    assert again.info["sizes"] == {"train": 40, "val": 10, "test": 10}
    assert json.loads(manifest_of(again).read_text())["files"]["basic_val.tsv"]["rows"] == 10


def test_temporary_files_of_killed_writers_are_removed(tmp_path: Path) -> None:
    settings = listops.settings_of(TINY)
    directory = listops.generated_dir(tmp_path, settings)
    directory.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = directory / f".basic_train.tsv.{HOST_TAG}-{int(dead.stdout)}.x1y2.tmp"
    stale.write_text("half a file")
    with pytest.warns(UserWarning, match="its generation never completed"):
        listops.build(TINY, tmp_path)
    assert not stale.exists()


def test_a_test_only_set_generates_and_reads_its_test_split_only(tmp_path: Path) -> None:
    cfg = ListOpsConfig(n_train=0, n_val=0, n_test=12, min_length=60, max_length=120, max_depth=6, seed=5,
                        l_max=120)
    task = listops.build(cfg, tmp_path)
    assert task.info["sizes"] == {"train": 0, "val": 0, "test": 12}
    assert sorted(p.name for p in Path(task.info["dir"]).iterdir()) == ["basic_test.tsv", "manifest.json"]
    for i in range(12):
        ids, label = task.splits["test"][i]
        assert 60 < len(ids) - 1 < 120 and ids[-1] == listops.EOS
    with pytest.raises(ConfigError, match="task.n_train=task.n_val=0 for a test-only set"):
        ListOpsConfig(n_train=0, n_val=5, n_test=12)


def test_length_bins_are_test_only_configs_whose_l_max_holds_every_expression() -> None:
    for name in ("2-4K", "4-8K"):
        low, high = listops.LENGTH_BINS[name]
        cfg = listops.length_bin_config(name, n_test=100, seed=3)
        assert (cfg.n_train, cfg.n_val, cfg.n_test, cfg.min_length, cfg.max_length) == (0, 0, 100, low, high)
        assert cfg.l_max == high and listops.length_bin_config(name, append_eos=False).l_max == high - 1
    with pytest.raises(ConfigError, match=r"task.l_max=2048 would cut generated expressions of up to 3999 tokens"):
        ListOpsConfig(min_length=2000, max_length=4000)
    assert ListOpsConfig(min_length=2000, max_length=4000, l_max=3999, append_eos=False).l_max == 3999


def test_settings_whose_expressions_are_too_rare_are_refused_before_a_draw() -> None:
    with pytest.raises(ConfigError, match=r"task.min_length=8000 < tokens < task.max_length=16000 are 1 draw in "
                                          r"8,395,5\d\d under task.max_depth=10, task.max_args=10: 2,000 of them take "
                                          r"about 16,79\d,\d{3},\d{3} draws; .* raise task.max_depth or task.max_args"):
        listops.length_bin_config("8-16K")
    assert listops.length_bin_config("8-16K", max_depth=12).max_depth == 12  # 1 draw in 836


def test_acceptance_is_the_frequency_of_the_draws() -> None:
    # The exact probability of a length window (by convolutions of the tree's length distribution) against the
    # frequency in 40,000 draws: within 4 standard deviations.
    settings = GeneratorSettings(min_length=15, max_length=60, max_depth=6, max_args=4)
    draw = gen._draw_function(gen.random.Random(11), settings.max_depth, settings.max_args, 1)
    n = 40_000
    hits = sum(settings.min_length < draw()[0] < settings.max_length for _ in range(n))
    p = gen.acceptance(settings)
    assert abs(hits - n * p) < 4 * (n * p * (1 - p)) ** 0.5 and 0.05 < p < 0.5
    assert abs(gen.acceptance(GeneratorSettings()) - 0.082755) < 1e-6  # LRA: 248,292 of 3 million draws of seed 5


# ----------------------------------------------------------------------------------------------------------------
# Release files: one line naming the file and the line


def test_a_split_that_is_a_directory_is_named(tmp_path: Path) -> None:
    write_splits(tmp_path, b"Source\tTarget\n( [MAX 1 2 ] )\t2\n")
    (tmp_path / "basic_test.tsv").unlink()
    (tmp_path / "basic_test.tsv").mkdir()
    with pytest.raises(DataError, match=r"basic_test.tsv is a directory, not a file") as err:
        listops.build(ListOpsConfig(root=str(tmp_path)), tmp_path)
    assert "\n" not in str(err.value)


def test_an_unclosed_quote_is_reported_where_it_opens(tmp_path: Path) -> None:
    lines = ["( [MAX 1 2 ] )\t2"] * 400
    lines[39] = '"( [MAX 1 2 ] )\t2'  # line 41 of the file: the header is line 1
    write_splits(tmp_path, ("Source\tTarget\n" + "\n".join(lines) + "\n").encode())
    with pytest.raises(DataError, match=r"basic_train.tsv, line 41: .*a quote on line 41 runs on to line 401"):
        listops.read_release(tmp_path)


def test_a_directory_where_a_generated_file_belongs_is_named(tmp_path: Path) -> None:
    directory = listops.generated_dir(tmp_path, listops.settings_of(TINY))
    (directory / "basic_val.tsv").mkdir(parents=True)
    with pytest.raises(DataError, match=r"basic_val.tsv is a directory where a generated file belongs"), \
            pytest.warns(UserWarning, match="never completed"):
        listops.build(TINY, tmp_path)
