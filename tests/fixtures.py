"""Writers of tiny datasets in the real on-disk formats, so tests read them through the tasks' real code paths.

Each writer returns what it wrote (arrays, tables) so a test can compare a loader's output with the truth
computed independently of the loader.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import tarfile
import wave
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

CIFAR_LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# ----------------------------------------------------------------------------------------------------------------
# CIFAR-10


def cifar_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random images uint8 [n, 32, 32, 3] (HWC) and labels cycling through the 10 classes."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), np.arange(n, dtype=np.int64) % 10


def write_cifar_python(root: Path, n_train: int = 50, n_test: int = 10, seed: int = 0) -> dict:
    """The official `cifar-10-batches-py` release: 5 training batches, test_batch, batches.meta (protocol 2)."""
    directory = Path(root) / "cifar-10-batches-py"
    directory.mkdir(parents=True, exist_ok=True)
    train, test = cifar_arrays(n_train, seed), cifar_arrays(n_test, seed + 1)

    def dump(name: str, images: np.ndarray, labels: np.ndarray, batch_label: str) -> None:
        # Rows: 1024 R values, 1024 G, 1024 B, each in raster order (CHW flattened).
        data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
        obj = {b"batch_label": batch_label.encode(), b"labels": [int(v) for v in labels], b"data": data,
               b"filenames": [f"img_{i}.png".encode() for i in range(len(images))]}
        with open(directory / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)

    for i, idx in enumerate(np.array_split(np.arange(n_train), 5), start=1):
        dump(f"data_batch_{i}", train[0][idx], train[1][idx], f"training batch {i} of 5")
    dump("test_batch", *test, "testing batch 1 of 1")
    with open(directory / "batches.meta", "wb") as f:
        meta = {b"num_cases_per_batch": max(n_train // 5, 1), b"label_names": [s.encode() for s in CIFAR_LABELS],
                b"num_vis": 3072}
        pickle.dump(meta, f, protocol=2)
    return {"train": train, "test": test, "dir": directory}


def cifar_tarball(python_dir: Path, out: Path) -> str:
    """Pack a `cifar-10-batches-py` folder as the official tarball does; returns its md5."""
    with tarfile.open(out, "w:gz") as tar:
        tar.add(python_dir, arcname="cifar-10-batches-py")
    return hashlib.md5(out.read_bytes()).hexdigest()


def write_cifar_parquet(root: Path, n_train: int = 50, n_test: int = 10, seed: int = 0,
                        columns: tuple[str, str] = ("img", "label")) -> dict:
    """The Hugging Face `uoft-cs/cifar10` layout: plain_text/{train,test}-00000-of-00001.parquet with an
    `img` struct {bytes: PNG, path} and an int64 `label`, plus the `huggingface` schema metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    directory = Path(root) / "plain_text"
    directory.mkdir(parents=True, exist_ok=True)
    img_col, label_col = columns
    features = {img_col: {"_type": "Image"}, label_col: {"names": CIFAR_LABELS, "_type": "ClassLabel"}}
    out = {}
    for split, (n, s) in {"train": (n_train, seed), "test": (n_test, seed + 1)}.items():
        images, labels = cifar_arrays(n, s)
        cells = []
        for img in images:
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            cells.append({"bytes": buf.getvalue(), "path": None})
        schema = pa.schema([(img_col, pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                            (label_col, pa.int64())],
                           metadata={"huggingface": json.dumps({"info": {"features": features}})})
        table = pa.table({img_col: cells, label_col: labels}, schema=schema)
        pq.write_table(table, directory / f"{split}-00000-of-00001.parquet")
        out[split] = (images, labels)
    return out


# ----------------------------------------------------------------------------------------------------------------
# PTB-XL

LEAD_NAMES = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
STATEMENT_COLUMNS = ["description", "diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass",
                     "Statement Category", "SCP-ECG Statement Description", "AHA code", "aECG REFID", "CDISC Code",
                     "DICOM Code"]
# code: (diagnostic, form, rhythm, class, subclass): the 71 rows of PTB-XL 1.0.3's scp_statements.csv (its flags,
# diagnostic classes and subclasses; the descriptive columns are not read by the task).
STATEMENTS = {
    "NDT": (1.0, 1.0, None, "STTC", "STTC"),
    "NST_": (1.0, 1.0, None, "STTC", "NST_"),
    "DIG": (1.0, 1.0, None, "STTC", "STTC"),
    "LNGQT": (1.0, 1.0, None, "STTC", "STTC"),
    "NORM": (1.0, None, None, "NORM", "NORM"),
    "IMI": (1.0, None, None, "MI", "IMI"),
    "ASMI": (1.0, None, None, "MI", "AMI"),
    "LVH": (1.0, None, None, "HYP", "LVH"),
    "LAFB": (1.0, None, None, "CD", "LAFB/LPFB"),
    "ISC_": (1.0, None, None, "STTC", "ISC_"),
    "IRBBB": (1.0, None, None, "CD", "IRBBB"),
    "1AVB": (1.0, None, None, "CD", "_AVB"),
    "IVCD": (1.0, None, None, "CD", "IVCD"),
    "ISCAL": (1.0, None, None, "STTC", "ISCA"),
    "CRBBB": (1.0, None, None, "CD", "CRBBB"),
    "CLBBB": (1.0, None, None, "CD", "CLBBB"),
    "ILMI": (1.0, None, None, "MI", "IMI"),
    "LAO/LAE": (1.0, None, None, "HYP", "LAO/LAE"),
    "AMI": (1.0, None, None, "MI", "AMI"),
    "ALMI": (1.0, None, None, "MI", "AMI"),
    "ISCIN": (1.0, None, None, "STTC", "ISCI"),
    "INJAS": (1.0, None, None, "MI", "AMI"),
    "LMI": (1.0, None, None, "MI", "LMI"),
    "ISCIL": (1.0, None, None, "STTC", "ISCI"),
    "LPFB": (1.0, None, None, "CD", "LAFB/LPFB"),
    "ISCAS": (1.0, None, None, "STTC", "ISCA"),
    "INJAL": (1.0, None, None, "MI", "AMI"),
    "ISCLA": (1.0, None, None, "STTC", "ISCA"),
    "RVH": (1.0, None, None, "HYP", "RVH"),
    "ANEUR": (1.0, None, None, "STTC", "STTC"),
    "RAO/RAE": (1.0, None, None, "HYP", "RAO/RAE"),
    "EL": (1.0, None, None, "STTC", "STTC"),
    "WPW": (1.0, None, None, "CD", "WPW"),
    "ILBBB": (1.0, None, None, "CD", "ILBBB"),
    "IPLMI": (1.0, None, None, "MI", "IMI"),
    "ISCAN": (1.0, None, None, "STTC", "ISCA"),
    "IPMI": (1.0, None, None, "MI", "IMI"),
    "SEHYP": (1.0, None, None, "HYP", "SEHYP"),
    "INJIN": (1.0, None, None, "MI", "IMI"),
    "INJLA": (1.0, None, None, "MI", "AMI"),
    "PMI": (1.0, None, None, "MI", "PMI"),
    "3AVB": (1.0, None, None, "CD", "_AVB"),
    "INJIL": (1.0, None, None, "MI", "IMI"),
    "2AVB": (1.0, None, None, "CD", "_AVB"),
    "ABQRS": (None, 1.0, None, None, None),
    "PVC": (None, 1.0, None, None, None),
    "STD_": (None, 1.0, None, None, None),
    "VCLVH": (None, 1.0, None, None, None),
    "QWAVE": (None, 1.0, None, None, None),
    "LOWT": (None, 1.0, None, None, None),
    "NT_": (None, 1.0, None, None, None),
    "PAC": (None, 1.0, None, None, None),
    "LPR": (None, 1.0, None, None, None),
    "INVT": (None, 1.0, None, None, None),
    "LVOLT": (None, 1.0, None, None, None),
    "HVOLT": (None, 1.0, None, None, None),
    "TAB_": (None, 1.0, None, None, None),
    "STE_": (None, 1.0, None, None, None),
    "PRC(S)": (None, 1.0, None, None, None),
    "SR": (None, None, 1.0, None, None),
    "AFIB": (None, None, 1.0, None, None),
    "STACH": (None, None, 1.0, None, None),
    "SARRH": (None, None, 1.0, None, None),
    "SBRAD": (None, None, 1.0, None, None),
    "PACE": (None, None, 1.0, None, None),
    "SVARR": (None, None, 1.0, None, None),
    "BIGU": (None, None, 1.0, None, None),
    "AFLT": (None, None, 1.0, None, None),
    "SVTAC": (None, None, 1.0, None, None),
    "PSVT": (None, None, 1.0, None, None),
    "TRIGU": (None, None, 1.0, None, None),
}
DIAGNOSTIC = [code for code, flags in STATEMENTS.items() if flags[0] == 1.0]
FORM_ONLY = [code for code, flags in STATEMENTS.items() if flags[1] == 1.0 and flags[0] != 1.0]
RHYTHM = [code for code, flags in STATEMENTS.items() if flags[2] == 1.0]
DATABASE_COLUMNS = ["ecg_id", "patient_id", "age", "sex", "height", "weight", "nurse", "site", "device",
                    "recording_date", "report", "scp_codes", "heart_axis", "infarction_stadium1",
                    "infarction_stadium2", "validated_by", "second_opinion", "initial_autogenerated_report",
                    "validated_by_human", "baseline_drift", "static_noise", "burst_noise", "electrodes_problems",
                    "extra_beats", "pacemaker", "strat_fold", "filename_lr", "filename_hr"]


def _scp_codes(i: int, n: int) -> dict[str, float]:
    """Every statement labels some record of the n (so that each label set has all its classes, as in the release):
    every record has a rhythm; the diagnostic statements are spread over the records but every 7th, which has none
    (only form or rhythm statements); rhythm and form-only statements are spread over all records. Likelihoods vary
    (the task ignores them)."""
    with_diagnosis = [r for r in range(n) if r % 7 != 6]
    codes = {RHYTHM[i % len(RHYTHM)]: 0.0}
    codes.update({code: 0.0 for j, code in enumerate(RHYTHM) if j % n == i})
    codes.update({code: 0.0 for j, code in enumerate(FORM_ONLY) if j % n == i})
    if i in with_diagnosis:
        mine = [code for j, code in enumerate(DIAGNOSTIC) if j % len(with_diagnosis) == with_diagnosis.index(i)]
        codes.update({code: 100.0 if k == 0 else 50.0 for k, code in enumerate(mine)})
    return codes


def write_ptbxl(root: Path, n_records: int = 30, rates: tuple[int, ...] = (100,), seed: int = 0) -> dict:
    """ptbxl_database.csv, scp_statements.csv and WFDB records (wfdb.wrsamp, 16-bit, 1 uV steps) of 10 s each.

    Folds cycle 1..10 over the records; every label set has all its classes (71 statements). Returns the database
    DataFrame (index ecg_id) and the signals as written, by rate: {rate: float64 [n, 10 * rate, 12]}.
    """
    import wfdb

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = {code: {"description": code, "diagnostic": d, "form": f, "rhythm": r, "diagnostic_class": c,
                   "diagnostic_subclass": s, "Statement Category": "fixture", "SCP-ECG Statement Description": code,
                   "AHA code": None, "aECG REFID": None, "CDISC Code": None, "DICOM Code": None}
            for code, (d, f, r, c, s) in STATEMENTS.items()}
    pd.DataFrame.from_dict(rows, orient="index", columns=STATEMENT_COLUMNS).to_csv(root / "scp_statements.csv")

    rng = np.random.default_rng(seed)
    records, signals = [], {rate: [] for rate in rates}
    for i in range(n_records):
        ecg_id = i + 1
        sub = f"{(ecg_id // 1000) * 1000:05d}"
        record = {c: None for c in DATABASE_COLUMNS}
        record.update(ecg_id=ecg_id, patient_id=1000.0 + i, age=50.0 + i % 30, sex=i % 2, site=0.0,
                      device="CS-12   E", recording_date="1990-01-01 00:00:00", report="fixture",
                      scp_codes=str(_scp_codes(i, n_records)), validated_by_human=True, second_opinion=False,
                      initial_autogenerated_report=False, strat_fold=i % 10 + 1,
                      filename_lr=f"records100/{sub}/{ecg_id:05d}_lr", filename_hr=f"records500/{sub}/{ecg_id:05d}_hr")
        records.append(record)
        for rate in rates:
            t = np.arange(10 * rate) / rate
            sig = 0.5 * np.sin(2 * np.pi * (1 + i % 3) * t)[:, None] + 0.1 * rng.standard_normal((10 * rate, 12))
            sig = np.round(sig, 3)  # whole microvolts: exactly representable with adc_gain 1000
            name = record["filename_lr" if rate == 100 else "filename_hr"]
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            wfdb.wrsamp(Path(name).name, fs=rate, units=["mV"] * 12, sig_name=LEAD_NAMES, p_signal=sig,
                        fmt=["16"] * 12, adc_gain=[1000.0] * 12, baseline=[0] * 12,
                        write_dir=str((root / name).parent))
            signals[rate].append(sig)
    db = pd.DataFrame(records, columns=DATABASE_COLUMNS).set_index("ecg_id")
    db.to_csv(root / "ptbxl_database.csv")
    return {"db": db, "signals": {rate: np.stack(s) for rate, s in signals.items()}}


def ptbxl_zip(root: Path, out: Path, folder: str) -> None:
    """Pack a PTB-XL directory as PhysioNet's zip does: everything inside one versioned `folder` (no caches)."""
    with zipfile.ZipFile(out, "w") as z:
        for path in sorted(Path(root).rglob("*")):
            if path.is_file() and "cache" not in path.parts:
                z.write(path, f"{folder}/{path.relative_to(root)}")


# ----------------------------------------------------------------------------------------------------------------
# Speech Commands

SC_WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
# The 35 word folders of the v0.02 archive (SC_WORDS and 25 others), in alphabetical order.
SC_ALL_WORDS = sorted(SC_WORDS + ["backward", "bed", "bird", "cat", "dog", "eight", "five", "follow", "forward",
                                  "four", "happy", "house", "learn", "marvin", "nine", "one", "seven", "sheila", "six",
                                  "three", "tree", "two", "visual", "wow", "zero"])


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> None:
    """Mono 16-bit PCM WAV with the stdlib writer (independent of the readers under test)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())


def write_speech_commands(root: Path, n_per_word: int = 4, seed: int = 0) -> dict:
    """The v0.02 archive layout: <word>/<hash>_nohash_<k>.wav for the 35 words, validation_list.txt,
    testing_list.txt and a `_background_noise_` folder. Per word, file 0 is in the validation list, file 1 in the
    testing list, the rest are training files; every third clip is shorter than 16,000 samples.
    Returns {split: [(relative path, word, int16 samples)]}.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {"train": [], "val": [], "test": []}
    lists = {"val": [], "test": []}
    for word in SC_ALL_WORDS:
        for k in range(n_per_word):
            n = 16000 if k % 3 != 2 else 11000 + 100 * k
            samples = (rng.standard_normal(n) * 3000).clip(-32768, 32767).astype(np.int16)
            rel = f"{word}/{rng.integers(0, 2**32):08x}_nohash_{k}.wav"
            write_wav(root / rel, samples)
            split = "val" if k == 0 else "test" if k == 1 else "train"
            if split != "train":
                lists[split].append(rel)
            out[split].append((rel, word, samples))
    write_wav(root / "_background_noise_" / "white_noise.wav", (rng.standard_normal(48000) * 1000).astype(np.int16))
    (root / "validation_list.txt").write_text("".join(f"{r}\n" for r in lists["val"]))
    (root / "testing_list.txt").write_text("".join(f"{r}\n" for r in lists["test"]))
    return out


def speech_commands_tarball(root: Path, out: Path) -> None:
    """Pack a Speech Commands directory as the v0.02 archive is packed: no top-level folder (no caches)."""
    with tarfile.open(out, "w:gz") as tar:
        for item in sorted(Path(root).iterdir()):
            if item.name != "cache":
                tar.add(item, arcname=item.name)
