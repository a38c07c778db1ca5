"""Speech Commands: raw 16 kHz waveforms of spoken words, one channel, 16,000 steps (zero-padded), as S4 runs it.

Data: Speech Commands v0.02 as Google publishes it (Warden, "Speech Commands: A Dataset for Limited-Vocabulary
Speech Recognition", arXiv:1804.03209, 2018; speech_commands_v0.02.tar.gz from download.tensorflow.org): one
folder per word of 16-bit PCM .wav files, `validation_list.txt` and `testing_list.txt` (paths `word/file.wav`);
train = every other file of the chosen words. The download is checked against the archive's published sha256
(pytorch/audio `torchaudio/datasets/speechcommands.py`, _CHECKSUMS; tensorflow/datasets
`tensorflow_datasets/datasets/speech_commands/checksums.tsv`).

Classes (`all_classes`): all 35 words by default, as S4's default dataset config does (state-spaces/s4
`configs/dataset/sc.yaml`, all_classes: true; loader `src/dataloaders/datasets/sc.py`, `_process_all`), with the
official split lists; they are numbered in alphabetical order here (S4 lists them in another fixed order, which
only renames the outputs). `all_classes=false` gives the ten-word subset SC10 (yes, no, up, down, left, right, on,
off, stop, go, in that order), also from the official lists (S4's SC10 loader, `_process_data`, instead drops
clips shorter than 16,000 samples and splits 70/15/15 at random).

Samples are scaled to [-1, 1) (int16 / 32768, as torchaudio loads them), zero-padded to 16,000 and, with
`normalize` (default), standardised by one mean/std over the training split (padding included), as S4's
`normalize_all_data`. Two details of S4's code are not copied: it divides torchaudio's already scaled samples by
2^15 once more and adds 1e-5 to the std, which gives its inputs a std of s / (s + 0.328) instead of 1 (s the
training std of the [-1, 1) samples); and it uses the unbiased std.

Zero-shot change of rate (`train_rate`, `eval_rate`): the training and validation splits are at `train_rate`, the
test split at `eval_rate`. `resample=subsample` (default) keeps every k-th sample, k = 16000 / rate, as S4's
published code evaluates at half rate (`x[::2]`, `subsample` in sc.py, eval_resolutions [1, 2] of
`configs/pipeline/sc.yaml`), with no low-pass filter; `resample=sinc` resamples with torchaudio's windowed sinc
filter (torchaudio.functional.resample), which also reaches rates that are not 16000 / k. spec.seq_len is the
longer of the two lengths.

Decoded clips are cached as int16 arrays (tasks/_cache.py: keyed by the split lists and the files' names, sizes
and mtimes; a damaged cache is rebuilt). The record's data fingerprint is the sha256 of every file read (lists and
clips) and of the archive when the task downloaded it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from harness.config import TaskConfig, one_of, positive
from harness.errors import ConfigError, DataError
from harness.registry import TASKS
from harness.task import Task, TaskSpec
from tasks._cache import cached_array
from tasks._download import downloaded, fetch_and_extract
from tasks._fingerprint import files_fingerprint
from tasks._text import read_text

SC10_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
ALL_WORDS = tuple(sorted(SC10_WORDS + (
    "backward", "bed", "bird", "cat", "dog", "eight", "five", "follow", "forward", "four", "happy", "house", "learn",
    "marvin", "nine", "one", "seven", "sheila", "six", "three", "tree", "two", "visual", "wow", "zero")))
URL = "https://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
SHA256 = "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58"  # 2,428,923,189 bytes
RATE, LENGTH = 16000, 16000
MAX_RATE = 4 * RATE  # the highest train_rate / eval_rate accepted (Hz)
LISTS = {"val": "validation_list.txt", "test": "testing_list.txt"}


def subsample(x: torch.Tensor, rate: int) -> torch.Tensor:
    return x[:: RATE // rate]


def sinc(x: torch.Tensor, rate: int) -> torch.Tensor:
    import torchaudio.functional as AF

    return AF.resample(x, RATE, rate)


RESAMPLERS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {"subsample": subsample, "sinc": sinc}


@dataclass
class SpeechCommandsConfig(TaskConfig):
    name: str = "speech_commands"
    all_classes: bool = True  # the 35 words, as S4's default; false: the ten-word subset SC10
    train_rate: int = 16000  # rate of the train and val splits (Hz)
    eval_rate: int = 16000  # rate of the test split: 8000 for the zero-shot half-rate study
    resample: str = "subsample"  # subsample (every k-th sample, S4) | sinc (torchaudio's resample)
    normalize: bool = True  # standardise by the training split's mean/std
    cache_dir: str | None = None  # None: <data root>/cache
    download: bool = False  # fetch the v0.02 archive (2.3 GB) when the data is missing

    def __post_init__(self) -> None:
        one_of("task.resample", self.resample, RESAMPLERS)
        for key in ("train_rate", "eval_rate"):
            rate = getattr(self, key)
            positive(f"task.{key}", rate, integer=True)
            if rate > MAX_RATE:
                raise ConfigError(f"task.{key}={rate} is above {MAX_RATE}; give a rate in Hz, e.g. 16000 or 8000")
            if self.resample == "subsample" and RATE % rate:
                raise ConfigError(f"task.{key}={rate} is not 16000 / k for a whole k, so task.resample=subsample "
                                  f"(every k-th sample) cannot reach it; use e.g. 8000, or task.resample=sinc")


def words_of(cfg: SpeechCommandsConfig) -> tuple[str, ...]:
    return ALL_WORDS if cfg.all_classes else SC10_WORDS


# ----------------------------------------------------------------------------------------------------------------
# Finding and fetching the archive


def fetch_instructions(root: Path, offer_download: bool = False) -> str:
    """How to fetch the archive by hand; `offer_download`: also suggest task.download=true, where the data is not
    there at all and the task did not try (the download runs only then)."""
    download = "\n(or set task.download=true on a machine with network)." if offer_download else ""
    return (
        f"Download Speech Commands v0.02 (sha256 {SHA256}) and extract it so that {root}/yes/ and "
        f"{root}/validation_list.txt exist:\n  mkdir -p {root} && curl -L {URL} | tar xz -C {root}{download}"
    )


def download_speech_commands(root: Path, url: str = URL, checksum: str | None = SHA256) -> None:
    """Fetch the archive and extract it into `root` (the archive has no top-level folder), the validation list last."""
    fetch_and_extract(url, root, LISTS["val"], instructions=fetch_instructions(root),
                      checksum=f"sha256:{checksum}" if checksum else None)


def find_root(root: Path) -> Path:
    """`root` or the S4-style `root/SpeechCommands`: the folder with validation_list.txt and the word folders."""
    for candidate in (root, root / "SpeechCommands"):
        if (candidate / LISTS["val"]).is_file() or (candidate / SC10_WORDS[0]).is_dir():
            return candidate
    raise DataError(f"Speech Commands not found in {root} (no {LISTS['val']} nor {SC10_WORDS[0]}/).\n"
                    f"{fetch_instructions(root, offer_download=True)}")


# ----------------------------------------------------------------------------------------------------------------
# Reading


def read_wav(path: Path) -> np.ndarray:
    """int16 samples [n] of a mono 16 kHz 16-bit PCM file; DataError for a truncated or different file.

    The header is always checked with the stdlib `wave` module: it gives the declared frame count, so a
    truncated file is caught (libsndfile, behind soundfile, silently returns the shorter data). Samples are
    decoded by torchaudio when it can load files here; torchaudio 2.11's `load` needs torchcodec (and FFmpeg),
    which are often absent, and then `wave` decodes the PCM itself, which is exact for this format.
    """
    fix = f"delete it and extract it again from {URL}"
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError, OSError) as e:
        raise DataError(f"{path} is not a readable WAV file ({e}); {fix}") from e
    if (channels, width, rate) != (1, 2, RATE):
        raise DataError(f"{path}: {channels} channel(s), {8 * width}-bit, {rate} Hz; expected mono 16-bit 16 kHz")
    if len(raw) != n * width:
        raise DataError(f"{path} is truncated: its header declares {n} samples but it holds {len(raw) // width}; "
                        f"{fix}")
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
        text = read_text(path, f"delete it and extract it again from {URL}")
        out[split] = {line.strip() for line in text.splitlines() if line.strip()}
    return out


def list_files(root: Path, words: tuple[str, ...]) -> dict[str, list[tuple[str, int]]]:
    """(relative path 'word/file.wav', class index) per split, sorted; every word must be in every split."""
    lists = read_lists(root)
    files: dict[str, list[tuple[str, int]]] = {"train": [], "val": [], "test": []}
    for label, word in enumerate(words):
        folder = root / word
        if not folder.is_dir():
            raise DataError(f"{folder} is missing: Speech Commands v0.02 has one folder per word ({len(words)} are "
                            f"used).\n{fetch_instructions(root)}")
        for path in sorted(folder.glob("*.wav")):
            rel = f"{word}/{path.name}"
            split = "val" if rel in lists["val"] else "test" if rel in lists["test"] else "train"
            files[split].append((rel, label))
    for split, rel in ((s, r) for s in ("val", "test") for r in sorted(lists[s])):
        if rel.split("/")[0] in words and not (root / rel).is_file():
            raise DataError(f"{root / rel} is listed in {LISTS[split]} but missing; re-extract the archive from {URL}")
    for split, items in files.items():
        absent = sorted(set(range(len(words))) - {label for _, label in items})
        if absent:
            raise DataError(f"Speech Commands in {root}: the {split} split has no clip of {words[absent[0]]!r} "
                            f"({len(absent)} of the {len(words)} words have none); the archive is incomplete: "
                            f"delete {root} and download it again from {URL}")
    return files


def cache_key(root: Path, files: dict[str, list[tuple[str, int]]]) -> str:
    """Hash of the split lists and of every file's name, label, size and mtime (cheap to recompute)."""
    h = hashlib.sha256(b"sc-v2\n")
    for name in LISTS.values():
        h.update((root / name).read_bytes())
    for split, items in files.items():
        for rel, label in items:
            st = (root / rel).stat()
            h.update(f"{split} {rel} {label} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def load_split(root: Path, items: list[tuple[str, int]], path: Path, key: str) -> np.ndarray:
    """int16 [n, 16000] zero-padded clips, from the cache file `path` (made from the files of `cache_key` `key`) or
    by decoding every WAV (2.7 GB for the training split of the 35 words: filled as a memory map, not in memory)."""

    def fill(clips: np.ndarray) -> None:
        for i, (rel, _) in enumerate(items):
            audio = read_wav(root / rel)
            if len(audio) > LENGTH:
                raise DataError(f"{root / rel} has {len(audio)} samples; Speech Commands clips are at most {LENGTH}")
            clips[i, :len(audio)] = audio
            clips[i, len(audio):] = 0

    return cached_array(path, (len(items), LENGTH), np.int16, fill, {"key": key, "clips": len(items)})


def data_fingerprint(root: Path, files: dict[str, list[tuple[str, int]]], cache_dir: Path) -> dict[str, Any]:
    """The sha256 of every file read (computed once, cached in `cache_dir`), and of the archive if we downloaded it."""
    paths = [root / name for name in LISTS.values()] + [root / rel for items in files.values() for rel, _ in items]
    fingerprint = files_fingerprint(paths, root, cache_dir)
    archive = downloaded(root)
    return {**fingerprint, "archive": archive} if archive else fingerprint


# ----------------------------------------------------------------------------------------------------------------
# Task


class Clips(Dataset):
    """int16 clips [N, 16000] -> {"x": float32 [L, 1] at `rate`, "y": int64 word index}."""

    def __init__(self, clips: np.ndarray, labels: np.ndarray, mean: float, std: float, rate: int, resample: str):
        self.clips, self.labels, self.mean, self.std = clips, labels, mean, std
        self.rate, self.resample = rate, RESAMPLERS[resample]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = (torch.from_numpy(np.asarray(self.clips[i], dtype=np.float32)) / 32768.0 - self.mean) / self.std
        if self.rate != RATE:
            x = self.resample(x, self.rate)
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
    """Length of a 16,000-sample clip at `rate`: ceil(16000 * rate / 16000), for both ways of resampling."""
    return -(-LENGTH * rate // RATE)


def task_spec(cfg: SpeechCommandsConfig) -> TaskSpec:
    """One channel, the longer of the two rates' lengths, 35 (or 10) words: fixed by the config."""
    seq_len = max(resampled_length(cfg.train_rate), resampled_length(cfg.eval_rate))
    return TaskSpec(name="speech_commands", input="signal", seq_len=seq_len, n_outputs=len(words_of(cfg)),
                    metric="accuracy", d_input=1)


# Speech Commands v0.02's split lists: utterances of the 35 words in training (the rest), validation_list.txt and
# testing_list.txt (the counts torchaudio's SPEECHCOMMANDS gives for each subset).
RELEASE_35 = {"train": 84_843, "val": 9_981, "test": 11_005}


def release_sizes(cfg: SpeechCommandsConfig) -> dict[str, int] | None:
    """Rows per split, from the config alone, for projecting a run's steps without the data: the 35-word release's;
    None for the ten-word subset (not counted here)."""
    return dict(RELEASE_35) if cfg.all_classes else None


@TASKS.register("speech_commands", SpeechCommandsConfig)
def build(cfg: SpeechCommandsConfig, data_root: Path) -> Task:
    """Speech Commands raw audio (16,000 steps x 1 channel, 35 words or the ten of SC10, accuracy)."""
    data_root = Path(data_root)
    if cfg.download and not any((c / LISTS["val"]).is_file() for c in (data_root, data_root / "SpeechCommands")):
        download_speech_commands(data_root)
    root = find_root(data_root)
    words = words_of(cfg)
    files = list_files(root, words)
    key = cache_key(root, files)
    cache = Path(cfg.cache_dir) if cfg.cache_dir else root / "cache"
    clips = {s: load_split(root, items, cache / f"sc{len(words)}_{s}_{key}.npy", key) for s, items in files.items()}
    labels = {s: np.array([label for _, label in items], dtype=np.int64) for s, items in files.items()}
    mean, std = statistics(clips["train"]) if cfg.normalize else (0.0, 1.0)
    rates = {"train": cfg.train_rate, "val": cfg.train_rate, "test": cfg.eval_rate}
    splits = {s: Clips(clips[s], labels[s], mean, std, rates[s], cfg.resample) for s in files}
    info = {"source": str(root), "sizes": {k: len(v) for k, v in splits.items()}, "classes": list(words),
            "rates": rates, "resample": cfg.resample, "standardisation": [mean, std],
            "fingerprint": data_fingerprint(root, files, cache)}
    return Task(spec=task_spec(cfg), splits=splits, info=info)
