"""Sequential CIFAR-10: each image is a 1024-step sequence (raster order, t = 32 * row + col) of 3 channels.

Data: CIFAR-10 as its publisher ships it (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html; read by
tasks/_cifar.py). Follows the published pipelines of S4 (state-spaces/s4 `src/dataloaders/basic.py`, class
CIFAR10) and MultiresNet (thjashin/multires-conv `classification.py`): ToTensor -> per-channel Normalize ->
(h w) c; the 50k training images are split 45,000 / 5,000 exactly as
`random_split(..., generator=torch.Generator().manual_seed(42))` does; the official 10k test set.
The two published pipelines differ only in the normalisation std (`norm`): S4 uses the true CIFAR-10 stds
(0.247, 0.243, 0.261), MultiresNet (and S4's example.py) the widely copied (0.2023, 0.1994, 0.2010).

Augmentation presets (`augment`), those of S4's config options (`dataset.augment`, `dataset.cutout`); every
published sCIFAR config uses none:
  none              no augmentation
  crop_flip         RandomCrop(32, padding=4, padding_mode='symmetric') + RandomHorizontalFlip
  crop_flip_cutout  the above, then after normalisation one 16x16 hole zeroed (Cutout(1, 16))
Augmentation applies to the training split only (S4 splits val off the augmented training set, so its val
images are augmented too when augment is on; we keep val deterministic).
`grayscale` gives the LRA "Image" variant (PIL luma, normalised by 122.6/255 and 61.0/255, d_input 1), as S4's
`grayscale` option of the same class does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from harness.config import TaskConfig, one_of, positive
from harness.registry import TASKS
from harness.task import Task, TaskSpec
from tasks._cifar import SOURCES, load_cifar10, split_indices

NORMS = {
    "s4": ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)),
    "multires": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
}
GRAY_NORM = ((122.6 / 255.0,), (61.0 / 255.0,))
AUGMENTS = ("none", "crop_flip", "crop_flip_cutout")


@dataclass
class SCifarConfig(TaskConfig):
    name: str = "scifar"
    augment: str = "none"  # none | crop_flip | crop_flip_cutout
    norm: str = "s4"  # s4 | multires (std of the normalisation, see module doc)
    grayscale: bool = False  # LRA Image variant: 1 channel
    val_size: int = 5000  # held out of the 50k training images
    seed: int = 42  # of the train/val split
    limit: int | None = None  # keep at most this many examples per split (smoke runs)
    source: str = "auto"  # auto | python | parquet
    download: bool = True  # fetch the official tarball when no copy is found
    hf_cache_dir: str | None = None  # `datasets` cache for the Parquet route (None: its default)

    def __post_init__(self) -> None:
        one_of("task.augment", self.augment, AUGMENTS)
        one_of("task.norm", self.norm, NORMS)
        one_of("task.source", self.source, SOURCES)
        positive("task.val_size", self.val_size, integer=True)
        positive("task.limit", self.limit, integer=True, optional=True)


# ----------------------------------------------------------------------------------------------------------------
# Images to sequences, augmentation


def to_grayscale(images: np.ndarray) -> np.ndarray:
    """PIL's 'L' conversion (ITU-R 601-2 luma, integer arithmetic), as torchvision's Grayscale uses."""
    from PIL import Image

    n = len(images)
    if n == 0:
        return np.zeros((0, 32, 32, 1), dtype=np.uint8)
    # One tall image converts all of them in a single call.
    gray = np.asarray(Image.fromarray(images.reshape(n * 32, 32, 3)).convert("L"))
    return gray.reshape(n, 32, 32, 1)


def random_crop_flip(img: np.ndarray, generator: torch.Generator | None = None) -> np.ndarray:
    """RandomCrop(32, padding=4, padding_mode='symmetric') then RandomHorizontalFlip(p=0.5) on HWC uint8."""
    h, w = img.shape[:2]
    padded = np.pad(img, ((4, 4), (4, 4), (0, 0)), mode="symmetric")
    i = int(torch.randint(0, 9, (1,), generator=generator))
    j = int(torch.randint(0, 9, (1,), generator=generator))
    out = padded[i:i + h, j:j + w]
    if float(torch.rand(1, generator=generator)) < 0.5:
        out = out[:, ::-1]
    return out


def cutout(x: torch.Tensor, length: int = 16, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero one square of side `length` centred at a uniform pixel, clipped at the borders ([H, W, C])."""
    h, w = x.shape[:2]
    cy = int(torch.randint(0, h, (1,), generator=generator))
    cx = int(torch.randint(0, w, (1,), generator=generator))
    x = x.clone()
    x[max(cy - length // 2, 0):min(cy + length // 2, h), max(cx - length // 2, 0):min(cx + length // 2, w)] = 0
    return x


class ImageSequences(Dataset):
    """uint8 images [N, 32, 32, C] -> {"x": float32 [1024, C] normalised, "y": int64 class}."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: tuple, std: tuple, augment: str = "none"):
        self.images, self.labels, self.augment = images, labels, augment
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        img = self.images[i]
        if self.augment != "none":
            img = random_crop_flip(img)
        x = (torch.from_numpy(np.ascontiguousarray(img)).float() / 255.0 - self.mean) / self.std
        if self.augment == "crop_flip_cutout":
            x = cutout(x)
        return {"x": x.reshape(-1, x.shape[-1]), "y": torch.tensor(int(self.labels[i]))}


def _take(images: np.ndarray, labels: np.ndarray, idx: np.ndarray, limit: int | None) -> tuple:
    idx = idx[:limit]  # limit None keeps all
    return images[idx], labels[idx]


def task_spec(cfg: SCifarConfig) -> TaskSpec:
    """1024 steps of 3 channels (1 in grayscale), 10 classes: fixed by the config."""
    return TaskSpec(name="scifar", input="signal", seq_len=1024, n_outputs=10, metric="accuracy",
                    d_input=1 if cfg.grayscale else 3)


def release_sizes(cfg: SCifarConfig) -> dict[str, int]:
    """Rows per split, from the config alone: CIFAR-10's 50,000 training images less the validation split, and its
    10,000 test images (for projecting a run's steps without the data)."""
    return {"train": 50_000 - cfg.val_size, "val": cfg.val_size, "test": 10_000}


@TASKS.register("scifar", SCifarConfig)
def build(cfg: SCifarConfig, data_root: Path) -> Task:
    """Sequential CIFAR-10 classification (1024 steps x 3 channels, 10 classes, accuracy)."""
    data_root = Path(data_root)
    # The cifar_bpd task reads the same files: look in its directory too before asking for a download.
    data, source, fingerprint = load_cifar10([data_root, data_root.parent / "cifar_bpd"], cfg.source, cfg.download,
                                             cfg.hf_cache_dir, cache_dir=data_root / "cache")
    (train_img, train_lab), (test_img, test_lab) = data["train"], data["test"]
    if cfg.grayscale:
        train_img, test_img = to_grayscale(train_img), to_grayscale(test_img)
    mean, std = GRAY_NORM if cfg.grayscale else NORMS[cfg.norm]
    tr, va = split_indices(len(train_img), cfg.val_size, cfg.seed)
    te = np.arange(len(test_img))
    splits = {
        "train": ImageSequences(*_take(train_img, train_lab, tr.numpy(), cfg.limit), mean, std, cfg.augment),
        "val": ImageSequences(*_take(train_img, train_lab, va.numpy(), cfg.limit), mean, std),
        "test": ImageSequences(*_take(test_img, test_lab, te, cfg.limit), mean, std),
    }
    info = {"source": source, "sizes": {k: len(v) for k, v in splits.items()}, "normalisation": [mean, std],
            "fingerprint": fingerprint}
    return Task(spec=task_spec(cfg), splits=splits, info=info)
