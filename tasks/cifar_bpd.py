"""CIFAR-10 density estimation in bits per dimension, as MultiresNet's published code does it.

Data: CIFAR-10 as its publisher ships it (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html; read by
tasks/_cifar.py). Follows thjashin/multires-conv `autoregressive.py`; the likelihood is PixelCNN++'s (Salimans et
al., ICLR 2017; openai/pixel-cnn `pixel_cnn_pp/nn.py`, discretized_mix_logistic_loss).

Each image is 1024 positions (raster order) of 3 channels with values 2k/255 - 1 in [-1, 1]. The TASK does
the causal shift: x[t] = pixel t-1 (x[0] = 0), y[t] = pixel t; the model (spec.causal) maps x to
[B, 1024, n_outputs] parameters of p(pixel t | pixels < t).

Likelihoods (`likelihood`):
  dmol     PixelCNN++ discretised mixture of 10 logistics, 100 outputs per position: [0:10] mixture logits,
           then for colour c in (R, G, B) a block at 10 + 30c of 10 means, 10 log-scales (clamped >= -7) and
           10 raw coefficients (tanh). Colours are autoregressive inside a pixel through the means:
           mean_G += alpha * x_R, mean_B += beta * x_R + gamma * x_G (alpha from R's coefficient block, beta
           from G's, gamma from B's). Bins have half-width 1/255; the edge bins take the logistic's tails.
  softmax  a 256-way softmax per sub-pixel, 768 outputs: [256c : 256(c+1)] are colour c's logits. The three
           colours of one pixel are then conditionally independent given the previous pixels (as S4's
           `cifargenf`), which the mixture does not assume.

Loss: mean NLL per sub-pixel in nats (total / (B * 1024 * 3)), so loss / ln 2 is the batch's bits per dim.
Metric `bpd` = total NLL nats / (ln 2 * 3072 * N), accumulated over the split (lower is better).
Split: 48,000 / 2,000 (val_split 0.04, seed 42) of the training images, 10,000 test. No augmentation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from harness.config import TaskConfig, one_of, positive
from harness.errors import ConfigError
from harness.registry import TASKS
from harness.task import Batch, Metric, Objective, Task, TaskSpec
from tasks._cifar import SOURCES, load_cifar10, split_indices

N_MIX = 10
OUTPUTS = {"dmol": 10 * N_MIX, "softmax": 3 * 256}
BIN = 1.0 / 255.0  # half the distance between neighbouring values 2k/255 - 1


@dataclass
class CifarBpdConfig(TaskConfig):
    name: str = "cifar_bpd"
    likelihood: str = "dmol"  # dmol (100 outputs) | softmax (768 outputs)
    val_size: int = 2000
    seed: int = 42
    limit: int | None = None  # keep at most this many examples per split (smoke runs)
    source: str = "auto"  # auto | python | parquet
    download: bool = True  # fetch the official tarball when no copy is found
    hf_cache_dir: str | None = None  # `datasets` cache for the Parquet route (None: its default)

    def __post_init__(self) -> None:
        one_of("task.likelihood", self.likelihood, OUTPUTS)
        one_of("task.source", self.source, SOURCES)
        positive("task.val_size", self.val_size, integer=True)
        positive("task.limit", self.limit, integer=True, optional=True)


# ----------------------------------------------------------------------------------------------------------------
# Likelihoods


def split_dmol(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """[..., 100] -> logits [..., K], means [..., 3, K], log_scales [..., 3, K] (clamped), coeffs [..., 3, K]."""
    logits = params[..., :N_MIX]
    rest = params[..., N_MIX:].unflatten(-1, (3, 3, N_MIX))  # colour, (means | log_scales | coeffs), component
    means, log_scales, coeffs = rest[..., 0, :], rest[..., 1, :].clamp(min=-7.0), torch.tanh(rest[..., 2, :])
    return logits, means, log_scales, coeffs


def conditional_means(means: torch.Tensor, coeffs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Shift G's and B's means by the pixel's earlier colours: x [..., 3] -> means [..., 3, K]."""
    r, g = x[..., 0:1], x[..., 1:2]
    mean_g = means[..., 1, :] + coeffs[..., 0, :] * r
    mean_b = means[..., 2, :] + coeffs[..., 1, :] * r + coeffs[..., 2, :] * g
    return torch.stack([means[..., 0, :], mean_g, mean_b], dim=-2)


def discretized_logistic_logprob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(value x) of a logistic(mean, exp(log_scale)) discretised to the 256 bins of [-1, 1].

    Bin k covers [x - 1/255, x + 1/255]; the lowest bin extends to -inf and the highest to +inf so the 256
    masses sum to one. Where a bin's mass underflows (< 1e-5) the density at its centre times the bin
    width (2/255, i.e. - log 127.5) is used instead, as PixelCNN++ does, to keep gradients finite.
    """
    centred = x - mean
    inv_s = torch.exp(-log_scale)
    plus_in = inv_s * (centred + BIN)
    min_in = inv_s * (centred - BIN)
    log_cdf_plus = plus_in - F.softplus(plus_in)  # log sigmoid(plus_in): mass of the lowest bin
    log_one_minus_cdf_min = -F.softplus(min_in)  # log (1 - sigmoid(min_in)): mass of the highest bin
    mid_in = inv_s * centred
    # The bin mass as a difference of CDFs; in the upper tail both are near 1 and float32 cancels, so there
    # use the equal difference of upper-tail probabilities sigmoid(-min) - sigmoid(-plus) instead.
    cdf_delta = torch.where(mid_in > 0, torch.sigmoid(-min_in) - torch.sigmoid(-plus_in),
                            torch.sigmoid(plus_in) - torch.sigmoid(min_in))
    log_pdf_mid = mid_in - log_scale - 2.0 * F.softplus(mid_in)
    inner = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid - math.log(127.5))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, inner))


def dmol_logprob(params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(pixel) [...] of pixels x [..., 3] in [-1, 1] under mixture parameters [..., 100]."""
    logits, means, log_scales, coeffs = split_dmol(params.float())
    means = conditional_means(means, coeffs, x.float())
    per_colour = discretized_logistic_logprob(x.float().unsqueeze(-1), means, log_scales)  # [..., 3, K]
    # One component is chosen per pixel (shared by R, G, B): sum colours inside the component, then mix.
    return torch.logsumexp(per_colour.sum(-2) + F.log_softmax(logits, dim=-1), dim=-1)


def to_levels(x: torch.Tensor) -> torch.Tensor:
    """Values 2k/255 - 1 -> integers k in 0..255."""
    return torch.round((x.float() + 1.0) * 127.5).clamp(0, 255).long()


def softmax_logprob(params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(pixel) [...] under independent 256-way softmaxes per colour (params [..., 768])."""
    logp = F.log_softmax(params.float().unflatten(-1, (3, 256)), dim=-1)
    return logp.gather(-1, to_levels(x).unsqueeze(-1)).squeeze(-1).sum(-1)


LOGPROBS = {"dmol": dmol_logprob, "softmax": softmax_logprob}


def total_nll(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum of -log p over all pixels, in nats; the likelihood is told apart by the output width."""
    width = output.shape[-1]
    kind = {v: k for k, v in OUTPUTS.items()}.get(width)
    if kind is None:
        raise ConfigError(f"cifar_bpd output has {width} channels per position; expected 100 (dmol) or 768 (softmax)")
    return -LOGPROBS[kind](output, target).sum()


def nll_per_subpixel(output: torch.Tensor, batch: Batch) -> torch.Tensor:
    """The training loss: mean NLL per sub-pixel in nats (divide by ln 2 for bits per dim)."""
    return total_nll(output, batch["y"]) / batch["y"].numel()


class BitsPerDim(Metric):
    """Total NLL over the split / (ln 2 x sub-pixels): 3072 sub-pixels per image."""

    name = "bpd"
    higher_is_better = False

    def __init__(self) -> None:
        self.nats = 0.0
        self.count = 0

    def update(self, output: torch.Tensor, batch: Batch) -> None:
        self.nats += float(total_nll(output.detach(), batch["y"]))
        self.count += batch["y"].numel()

    def compute(self) -> float:
        return self.nats / (math.log(2) * self.count) if self.count else float("nan")


# ----------------------------------------------------------------------------------------------------------------
# Data


class ShiftedImages(Dataset):
    """uint8 images [N, 32, 32, 3] -> {"x": previous pixels [1024, 3] (zero first), "y": pixels [1024, 3]}."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        y = torch.from_numpy(np.ascontiguousarray(self.images[i])).float().reshape(1024, 3) * (2.0 / 255.0) - 1.0
        x = torch.cat([torch.zeros(1, 3), y[:-1]])
        return {"x": x, "y": y}


def task_spec(cfg: CifarBpdConfig) -> TaskSpec:
    """1024 causal steps of 3 channels, the likelihood's outputs per step: fixed by the config."""
    return TaskSpec(name="cifar_bpd", input="signal", seq_len=1024, n_outputs=OUTPUTS[cfg.likelihood],
                    metric="bpd", d_input=3, output="sequence", causal=True)


def release_sizes(cfg: CifarBpdConfig) -> dict[str, int]:
    """Rows per split, from the config alone: CIFAR-10's 50,000 training images less the validation split, and its
    10,000 test images (for projecting a run's steps without the data)."""
    return {"train": 50_000 - cfg.val_size, "val": cfg.val_size, "test": 10_000}


@TASKS.register("cifar_bpd", CifarBpdConfig)
def build(cfg: CifarBpdConfig, data_root: Path) -> Task:
    """CIFAR-10 autoregressive density (1024 steps x 3 channels, bits per dim)."""
    data_root = Path(data_root)
    data, source, fingerprint = load_cifar10([data_root, data_root.parent / "scifar"], cfg.source, cfg.download,
                                             cfg.hf_cache_dir, cache_dir=data_root / "cache")
    train_img, test_img = data["train"][0], data["test"][0]
    tr, va = split_indices(len(train_img), cfg.val_size, cfg.seed)
    te = np.arange(len(test_img))
    lim = slice(None, cfg.limit)
    splits = {
        "train": ShiftedImages(train_img[tr.numpy()[lim]]),
        "val": ShiftedImages(train_img[va.numpy()[lim]]),
        "test": ShiftedImages(test_img[te[lim]]),
    }
    info = {"source": source, "sizes": {k: len(v) for k, v in splits.items()}, "likelihood": cfg.likelihood,
            "loss": "mean NLL per sub-pixel (nats)", "fingerprint": fingerprint}
    return Task(spec=task_spec(cfg), splits=splits, objective=Objective(nll_per_subpixel, BitsPerDim), info=info)


# ----------------------------------------------------------------------------------------------------------------
# Sampling with the models' step mode


def sample_pixels(params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one pixel [B, 3] in [-1, 1] per row of parameters [B, 100] (dmol) or [B, 768] (softmax)."""
    params = params.float()
    b = params.shape[0]
    if params.shape[-1] == OUTPUTS["softmax"]:
        probs = F.softmax(params.unflatten(-1, (3, 256)), dim=-1).reshape(b * 3, 256)
        levels = torch.multinomial(probs, 1, generator=generator).reshape(b, 3)
        return levels.float() * (2.0 / 255.0) - 1.0
    logits, means, log_scales, coeffs = split_dmol(params)
    # Gumbel-max picks one component per pixel; the three colours share it.
    u = torch.rand(logits.shape, generator=generator, device=logits.device).clamp(1e-5, 1 - 1e-5)
    k = (logits - torch.log(-torch.log(u))).argmax(-1)

    def pick(t: torch.Tensor) -> torch.Tensor:  # [B, 3, K] -> [B, 3]
        return t.gather(-1, k[:, None, None].expand(b, 3, 1)).squeeze(-1)

    mean, log_s, coef = pick(means), pick(log_scales), pick(coeffs)
    u = torch.rand((b, 3), generator=generator, device=params.device).clamp(1e-5, 1 - 1e-5)
    noise = torch.exp(log_s) * (torch.log(u) - torch.log1p(-u))  # logistic(0, s) by inverting its CDF
    r = (mean[:, 0] + noise[:, 0]).clamp(-1, 1)
    g = (mean[:, 1] + coef[:, 0] * r + noise[:, 1]).clamp(-1, 1)
    b_ = (mean[:, 2] + coef[:, 1] * r + coef[:, 2] * g + noise[:, 2]).clamp(-1, 1)
    return torch.stack([r, g, b_], dim=-1)


def save_grid(images: torch.Tensor, path: str | Path, ncol: int | None = None, pad: int = 2) -> None:
    """uint8 images [N, H, W, 3] -> one PNG, ncol per row (default: a square-ish grid), `pad` px black gaps."""
    from PIL import Image

    n, h, w, _ = images.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    grid = np.zeros((nrow * (h + pad) + pad, ncol * (w + pad) + pad, 3), dtype=np.uint8)
    for i, img in enumerate(images.cpu().numpy()):
        r, c = divmod(i, ncol)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = img
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)


@torch.no_grad()
def sample(model: torch.nn.Module, n: int, device: torch.device | str, path: str | Path | None = None,
           length: int = 1024, generator: torch.Generator | None = None, quantize: bool = True) -> torch.Tensor:
    """Draw n images with the model's step mode and save them as a PNG grid at `path`; returns uint8 [n,32,32,3].

    Generation contract: `model.init_state(batch, device) -> state`, `model.step(x_t [B, 3], state) ->
    (y_t [B, n_outputs], state)`, where x_t is the previous pixel (zeros at t = 0) exactly as the task's shifted
    inputs. `quantize` rounds each drawn pixel to the 256 levels the model was trained on before feeding it back
    (MultiresNet's sampler feeds unrounded values; the saved images are 8-bit either way).
    """
    was_training = model.training
    model.eval()
    state = model.init_state(n, device)
    x_t = torch.zeros(n, 3, device=device)
    pixels = []
    for _ in range(length):
        y_t, state = model.step(x_t, state)
        x_t = sample_pixels(y_t, generator)
        if quantize:
            x_t = to_levels(x_t).float() * (2.0 / 255.0) - 1.0
        pixels.append(x_t)
    model.train(was_training)
    side = int(round(math.sqrt(length)))
    images = to_levels(torch.stack(pixels, dim=1)).to(torch.uint8).reshape(n, side, side, 3).cpu()
    if path is not None:
        save_grid(images, path)
    return images
