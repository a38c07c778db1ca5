"""CIFAR-10 bits/dim: the shifted data, the PixelCNN++ likelihood against direct computations, the metric,
and the sampler driven through a tiny causal model's step mode."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from harness.errors import ConfigError
from harness.registry import TASKS
from tasks.cifar_bpd import (
    BitsPerDim,
    discretized_logistic_logprob,
    dmol_logprob,
    nll_per_subpixel,
    sample,
    sample_pixels,
    task_spec,
)
from tests.fixtures import write_cifar_python

LEVELS = torch.arange(256, dtype=torch.float64) * (2.0 / 255.0) - 1.0


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("cifar_bpd")
    return root, write_cifar_python(root, n_train=50, n_test=10)


def random_params(n: int, generator: torch.Generator, scale_range=(-4.0, -1.0)) -> torch.Tensor:
    """[n, 100] mixture parameters with moderate scales (log-scale uniform in scale_range)."""
    p = torch.randn(n, 100, generator=generator)
    rest = p[:, 10:].view(n, 3, 3, 10)
    rest[:, :, 0] = torch.rand(n, 3, 10, generator=generator) * 1.6 - 0.8  # means inside the range
    lo, hi = scale_range
    rest[:, :, 1] = torch.rand(n, 3, 10, generator=generator) * (hi - lo) + lo
    return p


def test_task_shifts_and_scales(cifar_root):
    root, written = cifar_root
    task = TASKS.build(TASKS.config("cifar_bpd", val_size=10, download=False), root)
    spec = task.spec
    assert spec == task_spec(TASKS.config("cifar_bpd")) and len(task.info["fingerprint"]["sha256"]) == 64
    assert (spec.input, spec.seq_len, spec.d_input, spec.n_outputs) == ("signal", 1024, 3, 100)
    assert spec.output == "sequence" and spec.causal and spec.metric == "bpd"
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 40, "val": 10, "test": 10}
    assert TASKS.config("cifar_bpd").val_size == 2000 and TASKS.config("cifar_bpd").seed == 42
    item = task.splits["test"][2]
    img = written["test"][0][2]
    for t in (0, 1, 33, 1023):
        row, col = divmod(t, 32)
        for c in range(3):
            assert item["y"][t, c].item() == pytest.approx(2 * int(img[row, col, c]) / 255 - 1, abs=1e-6)
    assert torch.equal(item["x"][0], torch.zeros(3)) and torch.equal(item["x"][1:], item["y"][:-1])
    metric = task.objective.metric()
    assert metric.name == "bpd" and metric.higher_is_better is False
    soft = TASKS.build(TASKS.config("cifar_bpd", val_size=10, download=False, likelihood="softmax"), root)
    assert soft.spec.n_outputs == 768 and soft.spec == task_spec(TASKS.config("cifar_bpd", likelihood="softmax"))
    with pytest.raises(ConfigError, match="task.likelihood"):
        TASKS.config("cifar_bpd", likelihood="flow")
    with pytest.raises(ConfigError, match="task.limit"):
        TASKS.config("cifar_bpd", limit=-1)
    with pytest.raises(ConfigError, match="task.source"):
        TASKS.config("cifar_bpd", source="tfds")


@pytest.mark.parametrize("mean,log_scale", [(0.0, -3.0), (0.37, -5.0), (-0.99, -2.0), (0.999, -4.5), (0.2, 0.5)])
def test_sub_pixel_masses_sum_to_one(mean, log_scale):
    logp = discretized_logistic_logprob(LEVELS, torch.tensor(mean, dtype=torch.float64),
                                        torch.tensor(log_scale, dtype=torch.float64))
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-6)


def test_pixel_distribution_sums_to_one():
    """Sum over B of the full likelihood equals p(R, G) built from per-sub-pixel masses, and p(R, G) sums to 1
    over all 256 x 256 values: so the 256^3 pixel probabilities sum to one (enumerating them all takes a minute)."""
    g = torch.Generator().manual_seed(0)
    params = random_params(1, g, scale_range=(-3.0, -1.5))[0].double()
    params[30:40], params[60:70], params[90:100] = 0.8, -0.5, 0.3  # alpha, beta, gamma (before tanh)
    weights = torch.softmax(params[:10], 0)
    r, gg = torch.meshgrid(LEVELS, LEVELS, indexing="ij")
    p_rg = torch.zeros(256, 256, dtype=torch.float64)
    for k in range(10):
        p_r = discretized_logistic_logprob(r, params[10 + k], params[20 + k]).exp()
        p_g = discretized_logistic_logprob(gg, params[40 + k] + torch.tanh(params[30 + k]) * r, params[50 + k]).exp()
        p_rg += weights[k] * p_r * p_g
    assert p_rg.sum().item() == pytest.approx(1.0, abs=1e-6)  # tiny bins use the density approximation
    pairs = torch.randint(0, 256, (40, 2), generator=g)
    pairs[0] = torch.tensor([0, 255])
    x = torch.stack([LEVELS[pairs[:, 0]].repeat_interleave(256), LEVELS[pairs[:, 1]].repeat_interleave(256),
                     LEVELS.repeat(len(pairs))], dim=1)
    summed_over_b = dmol_logprob(params.expand(len(x), 100), x).double().exp().view(len(pairs), 256).sum(1)
    torch.testing.assert_close(summed_over_b, p_rg[pairs[:, 0], pairs[:, 1]], rtol=1e-4, atol=1e-9)


def reference_logprob(p: list[float], x: tuple[float, float, float]) -> float:
    """PixelCNN++ log-likelihood of one pixel, scalar by scalar, written from the paper's description."""

    def sigmoid(v: float) -> float:
        return 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))

    def softplus(v: float) -> float:
        return max(v, 0.0) + math.log1p(math.exp(-abs(v)))

    def log_bin(v: float, m: float, log_s: float) -> float:
        inv = math.exp(-log_s)
        up, down = inv * (v - m + 1 / 255), inv * (v - m - 1 / 255)
        if v < -0.999:
            return up - softplus(up)
        if v > 0.999:
            return -softplus(down)
        mass = sigmoid(up) - sigmoid(down)
        if mass > 1e-5:
            return math.log(mass)
        mid = inv * (v - m)
        return mid - log_s - 2 * softplus(mid) - math.log(127.5)

    logits = p[:10]
    log_norm = max(logits) + math.log(sum(math.exp(v - max(logits)) for v in logits))
    terms = []
    for k in range(10):
        def block(c: int, j: int, k: int = k) -> float:  # colour c, field j (mean, log-scale, coeff)
            return p[10 + 30 * c + 10 * j + k]

        means = [block(c, 0) for c in range(3)]
        scales = [max(block(c, 1), -7.0) for c in range(3)]
        alpha, beta, gamma = (math.tanh(block(c, 2)) for c in range(3))
        means[1] += alpha * x[0]
        means[2] += beta * x[0] + gamma * x[1]
        terms.append(logits[k] - log_norm + sum(log_bin(x[c], means[c], scales[c]) for c in range(3)))
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def test_loss_equals_loop_computation():
    g = torch.Generator().manual_seed(1)
    params = random_params(6, g)
    params[3, 10 + 10:10 + 20] = -9.0  # log-scales below the clamp
    params[4, 10:40] = torch.linspace(-0.9, 0.9, 30)  # R means far from some targets ...
    params[4, 20:30] = -7.0  # ... with tiny scales: bin masses underflow -> the density branch
    levels = torch.randint(0, 256, (6, 3), generator=g)
    levels[0] = torch.tensor([0, 255, 128])  # both edge bins
    levels[4] = torch.tensor([255, 0, 3])
    x = levels.float() * (2 / 255) - 1
    output, target = params.view(2, 3, 100), x.view(2, 3, 3)
    loss = nll_per_subpixel(output, {"y": target})
    ref = -sum(reference_logprob(params[i].tolist(), tuple(x[i].tolist())) for i in range(6)) / 18
    assert loss.item() == pytest.approx(ref, rel=1e-5, abs=1e-5)


def test_softmax_likelihood_and_bpd_metric():
    g = torch.Generator().manual_seed(2)
    output = torch.randn(2, 5, 768, generator=g)
    levels = torch.randint(0, 256, (2, 5, 3), generator=g)
    y = levels.float() * (2 / 255) - 1
    direct = F.cross_entropy(output.view(-1, 256), levels.reshape(-1), reduction="mean")
    assert nll_per_subpixel(output, {"y": y}).item() == pytest.approx(direct.item(), rel=1e-5)
    metric = BitsPerDim()
    dmol_out = random_params(2 * 5, g).view(2, 5, 100)
    metric.update(dmol_out[:1], {"y": y[:1]})
    metric.update(dmol_out[1:], {"y": y[1:]})
    total = -sum(reference_logprob(dmol_out.view(10, 100)[i].tolist(), tuple(y.view(10, 3)[i].tolist()))
                 for i in range(10))
    assert metric.compute() == pytest.approx(total / (math.log(2) * 2 * 5 * 3), rel=1e-5)
    with pytest.raises(ConfigError, match="100"):
        nll_per_subpixel(torch.zeros(1, 2, 50), {"y": torch.zeros(1, 2, 3)})


def test_drawn_pixels_follow_the_likelihood():
    g = torch.Generator().manual_seed(3)
    params = random_params(1, g, scale_range=(-3.0, -2.0))[0]
    params[10 + 20:10 + 30] = 1.0  # alpha: G depends on R
    n = 20_000
    drawn = sample_pixels(params.expand(n, 100), g)
    levels = torch.round((drawn + 1) * 127.5).long()
    # p(R, G) = sum_k pi_k p_k(R) p_k(G | R) from the per-sub-pixel likelihood (itself checked above).
    r, gg = torch.meshgrid(LEVELS, LEVELS, indexing="ij")
    weights = torch.softmax(params[:10].double(), 0)
    p_rg = torch.zeros(256, 256, dtype=torch.float64)
    for k in range(10):
        mean_r, mean_g = params[10 + k].double(), params[40 + k].double()
        log_s_r, log_s_g = params[20 + k].double(), params[50 + k].double()
        alpha = torch.tanh(params[30 + k].double())
        p_r = discretized_logistic_logprob(r, mean_r, log_s_r).exp()
        p_g = discretized_logistic_logprob(gg, mean_g + alpha * r, log_s_g).exp()
        p_rg += weights[k] * p_r * p_g
    assert p_rg.sum().item() == pytest.approx(1.0, abs=1e-6)
    emp_r = torch.bincount(levels[:, 0], minlength=256).double() / n
    emp_g = torch.bincount(levels[:, 1], minlength=256).double() / n
    assert 0.5 * (emp_r - p_rg.sum(1)).abs().sum() < 0.05
    assert 0.5 * (emp_g - p_rg.sum(0)).abs().sum() < 0.05


def test_drawn_blue_uses_beta_and_gamma():
    """One component, small scales: B - (mean_B + beta R + gamma G) is logistic noise centred at 0."""
    params = torch.zeros(100)
    params[:10] = torch.tensor([30.0] + [0.0] * 9)  # component 0 always
    params[10], params[40], params[70] = 0.3, -0.2, 0.1  # means of R, G, B
    params[20:30], params[50:60], params[80:90] = -5.0, -5.0, -5.0  # log-scales
    params[30], params[60], params[90] = 0.4, 0.9, -0.6  # raw alpha, beta, gamma
    drawn = sample_pixels(params.expand(5000, 100), torch.Generator().manual_seed(6))
    r, g, b = drawn.unbind(-1)
    alpha, beta, gamma = (math.tanh(v) for v in (0.4, 0.9, -0.6))
    for residual in (r - 0.3, g - (-0.2 + alpha * r), b - (0.1 + beta * r + gamma * g)):
        assert residual.mean().abs() < 1e-3 and residual.abs().quantile(0.99) < 0.05


def test_softmax_sampler_follows_its_probabilities():
    g = torch.Generator().manual_seed(4)
    params = torch.randn(768, generator=g) * 2
    drawn = sample_pixels(params.expand(20_000, 768), g)
    levels = torch.round((drawn + 1) * 127.5).long()
    for c in range(3):
        emp = torch.bincount(levels[:, c], minlength=256).double() / 20_000
        assert 0.5 * (emp - torch.softmax(params[256 * c:256 * (c + 1)].double(), 0)).abs().sum() < 0.08


class TinyCausalAR(torch.nn.Module):
    """A causal model whose output at t is a linear map of the previous pixel (input t), with a step mode."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3, 100)
        torch.nn.init.normal_(self.proj.weight, std=0.5)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        return self.proj(x)

    def init_state(self, batch_size: int, device) -> dict:
        self.seen = []
        return {"t": 0}

    def step(self, x_t: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        self.seen.append(x_t.clone())
        return self.proj(x_t), {"t": state["t"] + 1}


def test_sample_uses_step_mode_and_writes_a_grid(tmp_path):
    torch.manual_seed(0)
    model = TinyCausalAR()
    path = tmp_path / "samples" / "grid.png"
    images = sample(model, 4, "cpu", path, generator=torch.Generator().manual_seed(5))
    assert images.shape == (4, 32, 32, 3) and images.dtype == torch.uint8
    # The contract: zeros first, then each drawn pixel is the next step's input.
    assert len(model.seen) == 1024 and torch.equal(model.seen[0], torch.zeros(4, 3))
    fed = torch.stack(model.seen[1:], 1)  # [4, 1023, 3]
    drawn = images.reshape(4, 1024, 3)[:, :-1].float() * (2 / 255) - 1
    torch.testing.assert_close(fed, drawn)
    grid = np.asarray(Image.open(path))
    assert grid.shape == (2 * 34 + 2, 2 * 34 + 2, 3)
    assert np.array_equal(grid[2:34, 36:68], images[1].numpy())  # second image: first row, second column
    again = sample(model, 4, "cpu", None, generator=torch.Generator().manual_seed(5))
    assert torch.equal(images, again)
    # Step mode and the full causal forward agree on the parameters of every position.
    x = torch.cat([torch.zeros(4, 1, 3), drawn], 1)
    torch.testing.assert_close(model(x)[:, 5], model.proj(model.seen[5]))
