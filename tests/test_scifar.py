"""Sequential CIFAR-10: both published formats, the split, normalisation, augmentation, the spec from the config,
the data fingerprint, download, bad data."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from harness.errors import ConfigError, DataError
from harness.registry import TASKS
from tasks import _cifar, scifar
from tasks.scifar import NORMS, cutout, random_crop_flip
from tests.fixtures import cifar_tarball, write_cifar_parquet, write_cifar_python
from tests.helpers import compose_run


@pytest.fixture(scope="module")
def python_root(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("cifar_py")
    return root, write_cifar_python(root, n_train=50, n_test=10)


def build(root: Path, **overrides):
    overrides = {"val_size": 10, "download": False, **overrides}
    return TASKS.build(TASKS.config("scifar", **overrides), root)


def expected_x(img: np.ndarray, mean, std) -> torch.Tensor:
    """Independent reference: element by element, t = 32 * row + col, channel c."""
    out = torch.empty(1024, img.shape[-1])
    for row in range(32):
        for col in range(32):
            for c in range(img.shape[-1]):
                out[32 * row + col, c] = (img[row, col, c] / 255.0 - mean[c]) / std[c]
    return out


def test_python_release_split_and_normalisation(python_root):
    root, written = python_root
    task = build(root, norm="multires")
    assert task.spec == scifar.task_spec(TASKS.config("scifar", norm="multires"))
    assert task.spec.input == "signal" and task.spec.seq_len == 1024 and task.spec.d_input == 3
    assert task.spec.n_outputs == 10 and task.spec.metric == "accuracy" and task.spec.output == "pooled"
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 40, "val": 10, "test": 10}
    # The split is torch's random_split with seed 42, as in both published pipelines.
    ref_train, ref_val = torch.utils.data.random_split(range(50), [40, 10], generator=torch.Generator().manual_seed(42))
    images, labels = written["train"]
    mean, std = NORMS["multires"]
    for split, ref in (("train", ref_train), ("val", ref_val)):
        for pos in (0, len(ref) - 1):
            item = task.splits[split][pos]
            src = ref.indices[pos]
            assert int(item["y"]) == labels[src]
            torch.testing.assert_close(item["x"], expected_x(images[src], mean, std))
    test_images, test_labels = written["test"]
    item = task.splits["test"][3]
    assert int(item["y"]) == test_labels[3]
    torch.testing.assert_close(item["x"], expected_x(test_images[3], mean, std))
    batch = next(iter(DataLoader(task.splits["train"], batch_size=4)))
    assert batch["x"].shape == (4, 1024, 3) and batch["x"].dtype == torch.float32 and batch["y"].dtype == torch.int64


def test_default_split_is_45000_5000_like_random_split():
    train, val = _cifar.split_indices(50_000, 5_000, 42)
    assert len(train) == 45_000 and len(val) == 5_000
    ref_train, ref_val = torch.utils.data.random_split(range(50_000), [45_000, 5_000],
                                                       generator=torch.Generator().manual_seed(42))
    assert train.tolist() == ref_train.indices and val.tolist() == ref_val.indices
    assert TASKS.config("scifar").val_size == 5000 and TASKS.config("scifar").name == "scifar"


def test_parquet_matches_python_release(tmp_path, python_root):
    root, _ = python_root
    write_cifar_parquet(tmp_path / "pq", n_train=50, n_test=10)  # same seeds -> the same images
    a, b = build(root), build(tmp_path / "pq", hf_cache_dir=str(tmp_path / "hf"))
    assert "parquet" in b.info["source"]
    for split in ("train", "val", "test"):
        assert len(a.splits[split]) == len(b.splits[split])
        for i in range(len(a.splits[split])):
            assert torch.equal(a.splits[split][i]["x"], b.splits[split][i]["x"])
            assert torch.equal(a.splits[split][i]["y"], b.splits[split][i]["y"])


def test_reads_the_hub_cache(tmp_path, monkeypatch, python_root):
    snapshot = tmp_path / "hub" / "datasets--uoft-cs--cifar10" / "snapshots" / "abc123"
    write_cifar_parquet(snapshot, n_train=50, n_test=10)
    write_cifar_parquet(tmp_path / "hub" / "datasets--uoft-cs--cifar10" / "snapshots" / "old", n_train=20, n_test=5)
    (tmp_path / "hub" / "datasets--uoft-cs--cifar10" / "refs").mkdir()
    (tmp_path / "hub" / "datasets--uoft-cs--cifar10" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    task = build(tmp_path / "empty", hf_cache_dir=str(tmp_path / "hf"))
    assert "abc123" in task.info["source"]
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 40, "val": 10, "test": 10}
    ref = build(python_root[0])
    assert torch.equal(task.splits["val"][2]["x"], ref.splits["val"][2]["x"])


def test_grayscale_variant(python_root):
    assert build(python_root[0], grayscale=True).spec == scifar.task_spec(TASKS.config("scifar", grayscale=True))
    root, written = python_root
    task = build(root, grayscale=True)
    assert task.spec.d_input == 1
    img = written["test"][0][0].astype(np.int64)
    luma = (img[..., 0] * 299 + img[..., 1] * 587 + img[..., 2] * 114) / 1000  # ITU-R 601-2
    x = task.splits["test"][0]["x"][:, 0] * (61.0 / 255.0) + 122.6 / 255.0
    assert np.abs(x.numpy() * 255 - luma.reshape(-1)).max() <= 1.0 + 1e-3


def test_crop_flip_is_a_window_of_the_symmetric_padding():
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    padded = np.pad(img, ((4, 4), (4, 4), (0, 0)), mode="symmetric")
    candidates = [w for i in range(9) for j in range(9) for w in (padded[i:i + 32, j:j + 32],
                                                                   padded[i:i + 32, j:j + 32][:, ::-1])]
    g = torch.Generator().manual_seed(3)
    flips = 0
    for _ in range(20):
        out = random_crop_flip(img, g)
        assert out.shape == img.shape
        matches = [k for k, c in enumerate(candidates) if np.array_equal(out, c)]
        assert matches
        flips += any(k % 2 for k in matches) and not any(k % 2 == 0 for k in matches)
    assert 0 < flips < 20  # both flipped and unflipped outcomes occur


def test_cutout_zeroes_one_clipped_square():
    g = torch.Generator().manual_seed(1)
    for _ in range(10):
        x = cutout(torch.ones(32, 32, 3), 16, g)
        zero_rows = torch.nonzero((x == 0).all(-1).any(1)).flatten()
        zero_cols = torch.nonzero((x == 0).all(-1).any(0)).flatten()
        assert 1 <= len(zero_rows) <= 16 and 1 <= len(zero_cols) <= 16
        assert int((x == 0).all(-1).sum()) == len(zero_rows) * len(zero_cols)  # one rectangle


def test_augmentation_applies_to_train_only(python_root):
    root, _ = python_root
    plain, aug = build(root), build(root, augment="crop_flip_cutout")
    torch.manual_seed(0)
    assert any(not torch.equal(plain.splits["train"][i]["x"], aug.splits["train"][i]["x"]) for i in range(5))
    for split in ("val", "test"):
        assert torch.equal(plain.splits[split][0]["x"], aug.splits[split][0]["x"])


def test_limit_caps_each_split(python_root):
    task = build(python_root[0], limit=3)
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 3, "val": 3, "test": 3}


def test_download_checks_md5_and_extracts(tmp_path, python_root):
    md5 = cifar_tarball(python_root[1]["dir"], tmp_path / "cifar.tar.gz")
    url = (tmp_path / "cifar.tar.gz").as_uri()
    with pytest.raises(DataError, match="md5"):
        _cifar.download_cifar(tmp_path / "bad", url=url, md5="0" * 32)
    assert not (tmp_path / "bad" / "cifar-10-batches-py").exists()
    assert list((tmp_path / "bad").iterdir()) == []  # no partial download or extraction left behind
    directory = _cifar.download_cifar(tmp_path / "good", url=url, md5=md5)
    assert sorted(p.name for p in (tmp_path / "good").iterdir()) == ["cifar-10-batches-py", "download.json"]
    train_images, _ = _cifar.read_python_split(directory, train=True)
    assert np.array_equal(train_images, python_root[1]["train"][0])
    archive = build(tmp_path / "good").info["fingerprint"]["archive"]
    sha256 = hashlib.sha256((tmp_path / "cifar.tar.gz").read_bytes()).hexdigest()
    assert archive["sha256"] == sha256 and archive["checked"] == f"md5:{md5}"
    with pytest.raises(DataError, match="failed") as err:
        _cifar.download_cifar(tmp_path / "none", url=(tmp_path / "missing.tar.gz").as_uri())
    assert "cifar-10-python.tar.gz" in str(err.value)  # says how to fetch it by hand


def test_fingerprint_is_the_digest_of_the_files_read(tmp_path, python_root):
    first = build(python_root[0]).info["fingerprint"]
    assert first["files"] == 6 and len(first["sha256"]) == 64
    parquet = tmp_path / "pq"
    write_cifar_parquet(parquet, n_train=10, n_test=5)
    other = build(parquet, val_size=2, hf_cache_dir=str(tmp_path / "hf")).info["fingerprint"]
    assert other["files"] == 2 and other["sha256"] != first["sha256"]
    assert build(python_root[0], grayscale=True).info["fingerprint"] == first  # the same files


def test_missing_root_says_what_to_fetch(tmp_path):
    with pytest.raises(DataError) as err:
        build(tmp_path / "nowhere")
    assert "cifar-10-python.tar.gz" in str(err.value) and str(tmp_path / "nowhere") in str(err.value)


def test_truncated_batch_names_the_file(tmp_path):
    write_cifar_python(tmp_path, n_train=20, n_test=5)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="data_batch_3"):
        build(tmp_path, val_size=2)


def test_missing_batch_and_wrong_content(tmp_path):
    write_cifar_python(tmp_path, n_train=20, n_test=5)
    (tmp_path / "cifar-10-batches-py" / "data_batch_5").unlink()
    with pytest.raises(DataError, match="data_batch_5"):
        build(tmp_path, val_size=2)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_5", "wb") as f:
        pickle.dump({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}, f)
    with pytest.raises(DataError, match="3072"):
        build(tmp_path, val_size=2)


def test_parquet_without_expected_columns(tmp_path):
    write_cifar_parquet(tmp_path, n_train=10, n_test=5, columns=("image", "label"))
    with pytest.raises(DataError, match="img"):
        build(tmp_path, val_size=2, hf_cache_dir=str(tmp_path / "hf"))


def test_bad_config(python_root, tmp_path):
    root, _ = python_root
    with pytest.raises(ConfigError, match="task.augment"):
        build(root, augment="mixup")
    with pytest.raises(ConfigError, match="task.norm"):
        build(root, norm="imagenet")
    with pytest.raises(ConfigError, match="task.val_size"):
        build(root, val_size=5000)  # the fixture has 50 training images
    with pytest.raises(ConfigError, match="task.val_size"):
        build(root, val_size=0)
    with pytest.raises(ConfigError, match="task.source"):
        build(root, source="tfds")
    with pytest.raises(ConfigError, match="task.limit"):
        build(root, limit=0)
    # Composed by Hydra (as run.py does), the same check runs when the task is built.
    cfg = compose_run(tmp_path, "task=scifar", "model=transformer", "task.augment=mixup")
    with pytest.raises(ConfigError, match="task.augment"):
        TASKS.build(cfg.task, root)
