"""Speech Commands SC10: raw 16 kHz waveforms of ten words, one channel, 16,000 steps (zero-padded).

Data: Speech Commands v0.02 as Google publishes it (Warden, "Speech Commands: A Dataset for Limited-Vocabulary
Speech Recognition", arXiv:1804.03209, 2018; speech_commands_v0.02.tar.gz from download.tensorflow.org): one
folder per word of 16-bit PCM .wav files, `validation_list.txt` and `testing_list.txt` (paths
`word/file.wav`); train = every other file of the ten words.
Classes in the order yes, no, up, down, left, right, on, off, stop, go. Samples are scaled to [-1, 1)
(int16 / 32768, as torchaudio loads them) and, with `normalize` (default, as S4's loader does), standardised by
one mean/std over the training split (padding included).

Zero-shot change of rate (`train_rate`, `eval_rate`): the training and validation splits are resampled to
`train_rate`, the test split to `eval_rate` (torchaudio.functional.resample from 16 kHz), e.g. train at 16 kHz
and test at 8 kHz (length 8,000). spec.seq_len is the longer of the two lengths.

Decoded clips are cached as int16 arrays (keyed by a fingerprint of the file list and the files' sizes/mtimes),
written to temporary files and renamed, so a crashed run never leaves a cache that looks complete.

Note S4's SC10 loader (state-spaces/s4 `src/dataloaders/datasets/sc.py`, `_SpeechCommands._process_data`) instead
drops clips shorter than 16,000 samples and splits 70/15/15 at random; we use the official lists, which is what
the dataset's publisher and most later papers use.
"""

from __future__ import annotations

import hashlib
import importlib.util
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from harness.config import TaskConfig, positive
from harness.errors import ConfigError, DataError
from harness.registry import TASKS
from harness.task import Task, TaskSpec
from tasks._cache import fill_cached
from tasks._download import fetch_and_extract

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
URL = "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
RATE, LENGTH = 16000, 16000
MAX_RATE = 4 * RATE  # the highest train_rate / eval_rate accepted (Hz)
LISTS = {"val": "validation_list.txt", "test": "testing_list.txt"}


@dataclass
class SpeechCommandsConfig(TaskConfig):
    name: str = "speech_commands"
    train_rate: int = 16000  # rate of the train and val splits (Hz)
    eval_rate: int = 16000  # rate of the test split: 8000 for the zero-shot half-rate study
    normalize: bool = True  # standardise by the training split's mean/std
    cache_dir: str | None = None  # None: <data root>/cache
    download: bool = False  # fetch the v0.02 archive (2.3 GB) when the data is missing

    def __post_init__(self) -> None:
        for key in ("train_rate", "eval_rate"):
            rate = getattr(self, key)
            positive(f"task.{key}", rate, integer=True)
            if rate > MAX_RATE:
                raise ConfigError(f"task.{key}={rate} is above {MAX_RATE}; give a rate in Hz, e.g. 16000 or 8000")


# ----------------------------------------------------------------------------------------------------------------
# Finding and fetching the archive


def fetch_instructions(root: Path) -> str:
    return (
        f"Download Speech Commands v0.02 and extract it so that {root}/yes/ and {root}/validation_list.txt exist:\n"
        f"  mkdir -p {root} && curl -L {URL} | tar xz -C {root}\n"
        f"(or set task.download=true on a machine with network)."
    )


def download_speech_commands(root: Path, url: str = URL) -> None:
    """Fetch the archive and extract it into `root` (the archive has no top-level folder), the validation list last."""
    fetch_and_extract(url, root, LISTS["val"], instructions=fetch_instructions(root))


def find_root(root: Path) -> Path:
    """`root` or the S4-style `root/SpeechCommands`: the folder with validation_list.txt and the word folders."""
    for candidate in (root, root / "SpeechCommands"):
        if (candidate / LISTS["val"]).is_file() or (candidate / WORDS[0]).is_dir():
            return candidate
    raise DataError(f"Speech Commands not found in {root} (no {LISTS['val']} nor {WORDS[0]}/).\n"
                    f"{fetch_instructions(root)}")


# ----------------------------------------------------------------------------------------------------------------
# Reading


def read_wav(path: Path) -> np.ndarray:
    """int16 samples [n] of a mono 16 kHz 16-bit PCM file; DataError for a truncated or different file.

    The header is always checked with the stdlib `wave` module: it gives the declared frame count, so a
    truncated file is caught (libsndfile, behind soundfile, silently returns the shorter data). Samples are
    decoded by torchaudio when it can load files here; torchaudio 2.11's `load` needs torchcodec (and FFmpeg),
    which are often absent, and then `wave` decodes the PCM itself, which is exact for this format.
    """
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError, OSError) as e:
        raise DataError(f"{path} is not a readable WAV file ({e}); re-extract it from {URL}") from e
    if (channels, width, rate) != (1, 2, RATE):
        raise DataError(f"{path}: {channels} channel(s), {8 * width}-bit, {rate} Hz; expected mono 16-bit 16 kHz")
    if len(raw) != n * width:
        raise DataError(f"{path} is truncated: its header declares {n} samples but it holds {len(raw) // width}; "
                        f"re-extract it from {URL}")
    if _torchaudio_can_load():
        import torchaudio

        audio, _ = torchaudio.load(str(path))  # always float32 scaled by 1/32768 (torchcodec ignores normalize)
        return np.round(audio.reshape(-1).numpy() * 32768.0).clip(-32768, 32767).astype(np.int16)
    return np.frombuffer(raw, dtype="<i2").astype(np.int16)


def _torchaudio_can_load() -> bool:
    return importlib.util.find_spec("torchcodec") is not None


def read_lists(root: Path) -> dict[str, set[str]]:
    out = {}
    for split, name in LISTS.items():
        path = root / name
        if not path.is_file():
            raise DataError(f"{path} is missing; it comes with the Speech Commands archive.\n"
                            f"{fetch_instructions(root)}")
        out[split] = {line.strip() for line in path.read_text().splitlines() if line.strip()}
    return out


def list_files(root: Path) -> dict[str, list[tuple[str, int]]]:
    """(relative path 'word/file.wav', class index) per split, sorted."""
    lists = read_lists(root)
    files: dict[str, list[tuple[str, int]]] = {"train": [], "val": [], "test": []}
    for label, word in enumerate(WORDS):
        folder = root / word
        if not folder.is_dir():
            raise DataError(f"{folder} is missing: Speech Commands must have one folder per word.\n"
                            f"{fetch_instructions(root)}")
        for path in sorted(folder.glob("*.wav")):
            rel = f"{word}/{path.name}"
            split = "val" if rel in lists["val"] else "test" if rel in lists["test"] else "train"
            files[split].append((rel, label))
    for split, rel in ((s, r) for s in ("val", "test") for r in sorted(lists[s])):
        if rel.split("/")[0] in WORDS and not (root / rel).is_file():
            raise DataError(f"{root / rel} is listed in {LISTS[split]} but missing; re-extract the archive from {URL}")
    for split, items in files.items():
        if not items:
            raise DataError(f"Speech Commands in {root}: the {split} split of the ten words is empty")
    return files


def fingerprint(root: Path, files: dict[str, list[tuple[str, int]]]) -> str:
    h = hashlib.sha256(b"sc10-v1\n")
    for name in LISTS.values():
        h.update((root / name).read_bytes())
    for split, items in files.items():
        for rel, label in items:
            st = (root / rel).stat()
            h.update(f"{split} {rel} {label} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def load_split(root: Path, items: list[tuple[str, int]], path: Path) -> np.ndarray:
    """int16 [n, 16000] zero-padded clips, from the cache file `path` or by decoding every WAV.

    A new cache is filled as a memory map in a temporary file (the training split is about 1 GB) and renamed
    to `path` only when complete, so a crashed run never leaves a file that looks like a cache.
    """
    shape = (len(items), LENGTH)
    try:
        cached = np.load(path, mmap_mode="r")
        if cached.shape == shape and cached.dtype == np.int16:
            return cached
    except (OSError, ValueError):
        pass  # absent or unreadable: rebuild

    def fill(clips: np.ndarray) -> None:
        for i, (rel, _) in enumerate(items):
            audio = read_wav(root / rel)
            if len(audio) > LENGTH:
                raise DataError(f"{root / rel} has {len(audio)} samples; Speech Commands clips are at most {LENGTH}")
            clips[i, :len(audio)] = audio
            clips[i, len(audio):] = 0

    return fill_cached(path, shape, np.int16, fill)


# ----------------------------------------------------------------------------------------------------------------
# Task


class Clips(Dataset):
    """int16 clips [N, 16000] -> {"x": float32 [L, 1] at `rate`, "y": int64 word index}."""

    def __init__(self, clips: np.ndarray, labels: np.ndarray, mean: float, std: float, rate: int):
        self.clips, self.labels, self.mean, self.std, self.rate = clips, labels, mean, std, rate

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = (torch.from_numpy(np.asarray(self.clips[i], dtype=np.float32)) / 32768.0 - self.mean) / self.std
        if self.rate != RATE:
            import torchaudio.functional as AF

            x = AF.resample(x, RATE, self.rate)
        return {"x": x.unsqueeze(-1), "y": torch.tensor(int(self.labels[i]))}


def statistics(clips: np.ndarray, chunk: int = 2048) -> tuple[float, float]:
    """Mean and (population) std of all samples of the split, scaled to [-1, 1)."""
    total, total_sq, count = 0.0, 0.0, 0
    for start in range(0, len(clips), chunk):
        block = np.asarray(clips[start:start + chunk], dtype=np.float64) / 32768.0
        total, total_sq, count = total + block.sum(), total_sq + np.square(block).sum(), count + block.size
    mean = total / count
    std = float(np.sqrt(max(total_sq / count - mean * mean, 0.0)))
    return float(mean), std if std > 0 else 1.0


def resampled_length(rate: int) -> int:
    """Length of a 16,000-sample clip after torchaudio's resample to `rate` (ceil(16000 * rate / 16000))."""
    return -(-LENGTH * rate // RATE)


@TASKS.register("speech_commands", SpeechCommandsConfig)
def build(cfg: SpeechCommandsConfig, data_root: Path) -> Task:
    """Speech Commands SC10 raw audio (16,000 steps x 1 channel, 10 words, accuracy)."""
    data_root = Path(data_root)
    if cfg.download and not any((c / LISTS["val"]).is_file() for c in (data_root, data_root / "SpeechCommands")):
        download_speech_commands(data_root)
    root = find_root(data_root)
    files = list_files(root)
    key = fingerprint(root, files)
    cache = Path(cfg.cache_dir) if cfg.cache_dir else root / "cache"
    clips = {s: load_split(root, items, cache / f"sc10_{s}_{key}.npy") for s, items in files.items()}
    labels = {s: np.array([label for _, label in items], dtype=np.int64) for s, items in files.items()}
    mean, std = statistics(clips["train"]) if cfg.normalize else (0.0, 1.0)
    rates = {"train": cfg.train_rate, "val": cfg.train_rate, "test": cfg.eval_rate}
    splits = {s: Clips(clips[s], labels[s], mean, std, rates[s]) for s in files}
    seq_len = max(resampled_length(cfg.train_rate), resampled_length(cfg.eval_rate))
    spec = TaskSpec(name="speech_commands", input="signal", seq_len=seq_len, n_outputs=len(WORDS),
                    metric="accuracy", d_input=1)
    info = {"source": str(root), "sizes": {k: len(v) for k, v in splits.items()}, "classes": list(WORDS),
            "rates": rates, "standardisation": [mean, std], "fingerprint": key}
    return Task(spec=spec, splits=splits, info=info)
