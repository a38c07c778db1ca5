"""MultiresConv / MultiresNet against independent computations.

References written here, not in models/multires.py: a brute-force loop over levels, time steps and taps
(numpy), the impulse response composed with np.convolve, PyWavelets' DWT for wavelet init, the parameter counts
of the published networks (thjashin/multires-conv) and the published forward pass written out in numpy. The
contract every model keeps (shapes, causality, stepping, padding) is in test_models.py.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import pywt
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from harness import preflight
from harness.errors import ConfigError
from harness.optim import make_optimizer
from harness.registry import MODELS, compose_config
from harness.task import TaskSpec
from harness.timing import dispatched_ops
from models.multires import MultiresConfig, MultiresConv, build, max_depth, tree_kernels

EXPERIMENTS = Path(__file__).resolve().parent.parent / "sweeps" / "experiment"


def scifar(seq_len: int = 1024) -> TaskSpec:
    return TaskSpec("scifar", "signal", seq_len, 10, "accuracy", d_input=3)


def listops(seq_len: int = 2048) -> TaskSpec:
    return TaskSpec("listops", "tokens", seq_len, 10, "accuracy", vocab_size=18, variable_length=True)


def ptbxl(n_labels: int) -> TaskSpec:
    return TaskSpec("ptbxl", "signal", 1000, n_labels, "auroc", d_input=12)


def cifar_bpd(seq_len: int = 1024) -> TaskSpec:
    return TaskSpec("cifar_bpd", "signal", seq_len, 100, "bpd", d_input=3, output="sequence", causal=True)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------------------------
# Independent references (numpy, float64)


def brute_force(x: np.ndarray, h0: np.ndarray, h1: np.ndarray, w: np.ndarray, depth: int,
                memory_size: int | None = None) -> np.ndarray:
    """Pre-activation y of the layer by explicit loops. x [B, L, D]; h0/h1 [D, 1 or depth, K]; w [D, m+1].

    memory_size None: fading selection; otherwise uniform, walked as the published `uniform` tree selection does.
    """
    _, length, _ = x.shape
    k_taps = h0.shape[-1]

    def filt(s: np.ndarray, h: np.ndarray, dilation: int) -> np.ndarray:
        out = np.zeros_like(s)
        for t in range(length):
            for k in range(k_taps):
                tau = t - (k_taps - 1 - k) * dilation
                if tau >= 0:
                    out[:, t] += h[:, k] * s[:, tau]
        return out

    lo, highs = x, []
    for j in range(1, depth + 1):
        f = 0 if h0.shape[1] == 1 else j - 1
        highs.append(filt(lo, h1[:, f], 2 ** (j - 1)))
        lo = filt(lo, h0[:, f], 2 ** (j - 1))
    coarse_to_fine = [lo] + highs[::-1]  # c_0 = lo_J, c_k = hi_{J+1-k}
    y = w[:, 0] * coarse_to_fine[0] + w[:, -1] * x
    if memory_size is None:
        for k in range(1, depth + 1):
            y = y + w[:, k] * coarse_to_fine[k]
        return y
    used, taps = 1, 1
    for k in range(1, depth + 1):
        taps = min(taps, memory_size - used)
        spacing = 2 ** (depth - k + 1)  # irrelevant for k = 1 (one tap)
        for i in range(taps):
            for t in range(i * spacing, length):
                y[:, t] += w[:, used + i] * coarse_to_fine[k][:, t - i * spacing]
        used += taps
        if used >= memory_size:
            break
        taps = 2 * (taps - 1) + k_taps
    return y


def composed_kernel(h0: np.ndarray, h1: np.ndarray, w: np.ndarray, depth: int) -> np.ndarray:
    """One channel's impulse response (fading), composing upsampled filters with np.convolve."""
    k_taps = len(h0)

    def upsampled(h: np.ndarray, dilation: int) -> np.ndarray:
        g = np.zeros((k_taps - 1) * dilation + 1)
        g[::dilation] = h[::-1]  # h[k] acts on the sample (K-1-k)*dilation steps back
        return g

    rf = (k_taps - 1) * (2**depth - 1) + 1
    kernel = np.zeros(rf)
    kernel[0] += w[-1]
    lo = np.ones(1)
    for j in range(1, depth + 1):
        hi = np.convolve(lo, upsampled(h1, 2 ** (j - 1)))
        lo = np.convolve(lo, upsampled(h0, 2 ** (j - 1)))
        kernel[: len(hi)] += w[depth + 1 - j] * hi
    kernel[: len(lo)] += w[0] * lo
    return kernel


def layer_reference(layer: MultiresConv, x: torch.Tensor) -> np.ndarray:
    args = [t.detach().double().numpy() for t in (x, layer.h0, layer.h1, layer.w)]
    memory = layer.m if layer.tree_select == "uniform" else None
    return brute_force(*args, layer.depth, memory)


# ---------------------------------------------------------------------------------------------------------------
# The layer


@pytest.mark.parametrize("seq_len, kernel_size, depth", [(1024, 2, 10), (2048, 4, 10), (1000, 2, 10), (1024, 4, 9)])
def test_depth_of_the_published_settings(seq_len, kernel_size, depth):
    assert max_depth(seq_len, kernel_size) == depth


def test_depth_formula_matches_published_float_formula():
    for kernel_size in (2, 3, 4, 8):
        for seq_len in range(2, 3000, 7):
            assert max_depth(seq_len, kernel_size) == math.ceil(math.log2((seq_len - 1) / (kernel_size - 1) + 1))


@pytest.mark.parametrize("impl", ["fft", "direct"])
@pytest.mark.parametrize("tree_select, memory_size, share", [
    ("fading", None, True), ("fading", None, False), ("uniform", 2, True), ("uniform", 7, True),
    ("uniform", 40, False)])
def test_layer_matches_brute_force(impl, tree_select, memory_size, share):
    torch.manual_seed(0)
    layer = MultiresConv(3, kernel_size=3, depth=4, tree_select=tree_select, memory_size=memory_size,
                         share_filters=share, impl=impl).double()
    assert layer.h0.shape == (3, 1 if share else 4, 3) and layer.w.shape == (3, layer.m + 1)
    x = torch.randn(2, 45, 3, dtype=torch.float64)
    y = layer.linear(x)
    np.testing.assert_allclose(y.detach().numpy(), layer_reference(layer, x), rtol=1e-10, atol=1e-12)
    # dropout 0: the layer's output is exactly GELU (erf form) of the pre-activation
    torch.testing.assert_close(layer(x), F.gelu(y), rtol=0, atol=0)


@pytest.mark.parametrize("kernel_size, depth", [(2, 5), (4, 3), (3, 4)])
def test_impulse_response_is_the_composed_filter(kernel_size, depth):
    torch.manual_seed(1)
    layer = MultiresConv(2, kernel_size=kernel_size, depth=depth).double()
    h0, h1, w = (t.detach().numpy() for t in (layer.h0, layer.h1, layer.w))
    rf = layer.receptive_field
    full = layer.impulse_response(10 * rf, torch.float64).detach().numpy()
    assert full.shape == (2, rf)
    for c in range(2):
        np.testing.assert_allclose(full[c], composed_kernel(h0[c, 0], h1[c, 0], w[c], depth), rtol=1e-12, atol=1e-14)
    cropped = layer.impulse_response(rf // 2, torch.float64).detach().numpy()
    np.testing.assert_array_equal(cropped, full[:, : rf // 2])


@pytest.mark.parametrize("kernel_size, tree_select, memory_size, share, length", [
    (4, "fading", None, True, 200), (3, "uniform", 9, False, 200), (2, "fading", None, False, 11)])
def test_network_kernels_are_each_layers_impulse_response(kernel_size, tree_select, memory_size, share, length):
    """The kernels of several layers composed together (as MultiresNet does) are each layer's response to a unit
    impulse through the brute-force cascade, whole (length >= RF) or cropped."""
    torch.manual_seed(0)
    layers = [MultiresConv(3, kernel_size=kernel_size, depth=4, tree_select=tree_select, memory_size=memory_size,
                           share_filters=share, indep_res_init=True).double() for _ in range(3)]
    kernels = tree_kernels(layers, length, torch.float64).detach().numpy()
    size = min(length, layers[0].receptive_field)
    assert kernels.shape == (9, size)
    impulse = np.zeros((1, length, 3))
    impulse[0, 0] = 1.0
    for i, layer in enumerate(layers):
        response = layer_reference(layer, torch.from_numpy(impulse))[0].T  # [D, L]
        np.testing.assert_allclose(kernels[3 * i:3 * i + 3], response[:, :size], rtol=1e-12, atol=1e-14)
        assert not response[:, size:].any()  # the response ends with the receptive field


def test_gradcheck_network_kernels():
    """The hand-written backward of the kernels of two layers composed together: untied filters, uniform selection,
    odd K (a padded polyphase tap) and a crop inside the receptive field."""
    torch.manual_seed(0)

    class Kernels(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = torch.nn.ModuleList(
                MultiresConv(2, kernel_size=3, depth=3, tree_select="uniform", memory_size=8, share_filters=False)
                for _ in range(2))

        def forward(self) -> torch.Tensor:
            return tree_kernels(list(self.layers), 11, torch.float64, scale=0.5)

    module = Kernels().double()
    names = [name for name, _ in module.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in module.parameters())
    assert torch.autograd.gradcheck(lambda *p: torch.func.functional_call(module, dict(zip(names, p)), ()), params)


def test_kernels_of_many_layers_cost_the_operators_of_one():
    """Composing ten layers' kernels dispatches the operators of one layer's, plus the three concatenations that
    stack the layers' parameters: levels and layers are batched, no operator runs per layer."""

    def operators(n_layers: int) -> int:
        torch.manual_seed(0)
        layers = [MultiresConv(8, kernel_size=4, depth=5) for _ in range(n_layers)]

        def fwd_bwd() -> None:
            for layer in layers:
                layer.zero_grad(set_to_none=True)
            tree_kernels(layers, 40).sum().backward()

        return sum(dispatched_ops(fwd_bwd).values())

    assert operators(10) == operators(1) + 3


def test_wavelet_filters_are_reversed_decomposition_filters():
    layer = MultiresConv(3, kernel_size=4, depth=2, wavelet_init="db2")
    wavelet = pywt.Wavelet("db2")
    for c in range(3):
        np.testing.assert_allclose(layer.h0[c, 0].detach().numpy(), wavelet.dec_lo[::-1], rtol=1e-6)
        np.testing.assert_allclose(layer.h1[c, 0].detach().numpy(), wavelet.dec_hi[::-1], rtol=1e-6)
    haar = MultiresConv(1, kernel_size=2, depth=1, wavelet_init="haar")
    s = 2**-0.5
    np.testing.assert_allclose(haar.h0[0, 0].detach().numpy(), [s, s], rtol=1e-6)
    np.testing.assert_allclose(haar.h1[0, 0].detach().numpy(), [s, -s], rtol=1e-6)


@pytest.mark.parametrize("wavelet, kernel_size", [("haar", 2), ("db2", 4), ("sym3", 6)])
def test_wavelet_cascade_gives_the_dwt_coefficients(wavelet, kernel_size):
    """The undecimated causal cascade holds pywt.wavedec's coefficients: level j's detail n sits at 2^j (n+1) - 1."""
    depth, length = 3, 64
    layer = MultiresConv(1, kernel_size=kernel_size, depth=depth, wavelet_init=wavelet).double()
    signal = np.random.default_rng(0).standard_normal(length)
    coeffs = layer.cascade(torch.from_numpy(signal)[None, None, :])  # [lo_3, hi_3, hi_2, hi_1]
    ours = [c[0, 0].detach().numpy() for c in coeffs]
    theirs = pywt.wavedec(signal, wavelet, mode="zero", level=depth)  # [cA_3, cD_3, cD_2, cD_1]
    for i, (a, b) in enumerate(zip(ours, theirs)):
        stride = 2 ** (depth if i == 0 else depth + 1 - i)
        positions = np.arange(1, len(b) + 1) * stride - 1
        keep = positions < length  # pywt's boundary-extended tail lies beyond the causal window
        assert keep.sum() >= length // stride - 1
        # Tolerance of the float32 filters (stored in float32, as published).
        np.testing.assert_allclose(a[positions[keep]], b[keep], rtol=1e-6, atol=1e-6)


def test_initialisation_scales():
    torch.manual_seed(0)
    layer = MultiresConv(4096, kernel_size=4, depth=10)  # m = 11: w ~ U(+-sqrt(1/12)), h ~ U(+-sqrt(1/4))
    for h in (layer.h0, layer.h1):
        assert h.abs().max() <= 0.5 and h.abs().max() > 0.49
    assert layer.w.abs().max() <= 12**-0.5 and layer.w.abs().max() > 0.28
    indep = MultiresConv(4096, kernel_size=4, depth=10, indep_res_init=True)
    assert indep.w[:, -1].abs().max() > 0.95 and indep.w[:, -1].abs().max() <= 1
    assert indep.w[:, :-1].abs().max() <= 12**-0.5


@pytest.mark.parametrize("impl", ["fft", "direct"])
def test_layer_is_causal(impl):
    """Exact for the cascade; the FFT spreads rounding noise over all positions, so float64 and 1e-12 there."""
    torch.manual_seed(0)
    layer = MultiresConv(4, kernel_size=2, depth=6, impl=impl).double()
    x = torch.randn(2, 70, 4, dtype=torch.float64)
    y = layer(x)
    tol = 0 if impl == "direct" else 1e-12
    for t in (0, 17, 68):
        changed = x.clone()
        changed[:, t + 1:] = 10 * torch.randn_like(changed[:, t + 1:])
        torch.testing.assert_close(layer(changed)[:, : t + 1], y[:, : t + 1], rtol=0, atol=tol)
        assert (layer(changed)[:, t + 1:] - y[:, t + 1:]).abs().max() > 1e-3


@pytest.mark.parametrize("impl", ["fft", "direct"])
@pytest.mark.parametrize("tree_select, memory_size", [("fading", None), ("uniform", 6)])
def test_gradcheck(impl, tree_select, memory_size):
    torch.manual_seed(0)
    layer = MultiresConv(2, kernel_size=3, depth=3, tree_select=tree_select, memory_size=memory_size,
                         impl=impl).double()
    x = torch.randn(1, 11, 2, dtype=torch.float64, requires_grad=True)
    params = tuple(p.detach().clone().requires_grad_(True) for p in (layer.h0, layer.h1, layer.w))

    def run(x, h0, h1, w):
        return torch.func.functional_call(layer, {"h0": h0, "h1": h1, "w": w}, (x,))

    assert torch.autograd.gradcheck(run, (x, *params))


@pytest.mark.parametrize("batch, kernel_size, share", [(2, 4, False), (3, 2, True)])
def test_gradcheck_fft_batched_and_long_filters(batch, kernel_size, share):
    """The hand-written FFT backward for batch > 1 (sum over the batch of cross-spectra), K = 4 (two polyphase
    terms per level) and untied filters, uniform selection with a truncated tap walk."""
    torch.manual_seed(0)
    layer = MultiresConv(2, kernel_size=kernel_size, depth=3, tree_select="uniform", memory_size=9,
                         share_filters=share).double()
    x = torch.randn(batch, 13, 2, dtype=torch.float64, requires_grad=True)
    params = tuple(p.detach().clone().requires_grad_(True) for p in (layer.h0, layer.h1, layer.w))

    def run(x, h0, h1, w):
        return torch.func.functional_call(layer, {"h0": h0, "h1": h1, "w": w}, (x,))

    assert torch.autograd.gradcheck(run, (x, *params))


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


@pytest.mark.parametrize("kernel_size, depth, seq_len, batch", [
    (2, None, 1000, 3), (4, None, 700, 3), (2, 4, 300, 3), (3, 9, 200, 3), (2, None, 4096, 1)])
def test_fft_matches_direct_in_fp32(kernel_size, depth, seq_len, batch):
    """Outputs and gradients agree to fp32 precision, whether RF covers L (auto depth), exceeds it or not."""
    torch.manual_seed(0)
    depth = depth or max_depth(seq_len, kernel_size)
    layer = MultiresConv(8, kernel_size=kernel_size, depth=depth, indep_res_init=True)
    x = torch.randn(batch, seq_len, 8)
    upstream = torch.randn(batch, seq_len, 8)
    results = {}
    for impl in ("fft", "direct"):
        layer.impl = impl
        layer.zero_grad()
        xi = x.clone().requires_grad_(True)
        y = layer(xi)
        (y * upstream).sum().backward()
        results[impl] = [y.detach(), xi.grad, layer.h0.grad.clone(), layer.h1.grad.clone(), layer.w.grad.clone()]
    for ours, ref in zip(results["fft"], results["direct"]):
        assert relative_error(ours, ref) < 1e-5


def test_fft_under_bf16_autocast_computes_in_fp32():
    torch.manual_seed(0)
    layer = MultiresConv(8, kernel_size=2, depth=8)
    x = torch.randn(2, 256, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_bf16 = layer(x.bfloat16())
    assert y_bf16.dtype == torch.bfloat16
    # Only the input and output roundings to bf16 remain (a bf16 FFT would be far less accurate).
    assert relative_error(y_bf16.float(), layer(x.bfloat16().float())) < 1e-2


def test_dtypes_follow_the_input():
    layer = MultiresConv(4, kernel_size=2, depth=3)
    assert layer(torch.randn(1, 9, 4)).dtype == torch.float32
    assert layer.double()(torch.randn(1, 9, 4, dtype=torch.float64)).dtype == torch.float64


def test_channel_dropout_drops_whole_channels():
    torch.manual_seed(0)
    layer = MultiresConv(64, kernel_size=2, depth=3, dropout=0.5).train()
    x = torch.randn(4, 30, 64) + 3.0  # GELU output far from zero, so zeros come from dropout only
    y = layer(x)
    dropped = y == 0
    assert torch.equal(dropped.all(dim=1), dropped.any(dim=1))  # per (example, channel), at every step
    assert 0.3 < dropped.all(dim=1).float().mean() < 0.7
    kept = ~dropped.all(dim=1)
    reference = 2 * F.gelu(layer.linear(x))
    torch.testing.assert_close(y.transpose(1, 2)[kept], reference.transpose(1, 2)[kept])
    assert torch.equal(layer.eval()(x), F.gelu(layer.linear(x)))


# ---------------------------------------------------------------------------------------------------------------
# The network


@pytest.mark.parametrize("spec, overrides, expected", [
    (scifar(), dict(d_model=256, n_layers=10), 1_365_514),
    (listops(), dict(d_model=128, n_layers=10, kernel_size=4, norm="batch"), 361_994),
    (ptbxl(71), dict(d_model=128, n_layers=6), 222_791),  # all
    (ptbxl(44), dict(d_model=128, n_layers=6), 219_308),  # diagnostic
    (ptbxl(23), dict(d_model=128, n_layers=6), 216_599),  # subdiagnostic
    (ptbxl(5), dict(d_model=128, n_layers=6), 214_277),  # superdiagnostic
    (ptbxl(19), dict(d_model=128, n_layers=6), 216_083),  # form
    (ptbxl(12), dict(d_model=128, n_layers=6), 215_180),  # rhythm
    (cifar_bpd(), dict(d_model=512, n_layers=48, kernel_size=4), 38_391_908),
])
def test_parameter_counts_equal_the_published_models(spec, overrides, expected):
    assert n_params(build(MultiresConfig(**overrides), spec)) == expected


def test_untied_filters_add_parameters_per_level():
    base = n_params(build(MultiresConfig(d_model=256, n_layers=10), scifar()))
    untied = n_params(build(MultiresConfig(d_model=256, n_layers=10, share_filters=False), scifar()))
    assert untied - base == 10 * 2 * 256 * 2 * (10 - 1)  # layers * (h0, h1) * D * K * (J - 1) extra levels


@pytest.mark.parametrize("overrides", [
    dict(kernel_size=4),
    dict(kernel_size=2, tree_select="uniform", memory_size=12, norm="batch"),
    dict(kernel_size=3, share_filters=False, impl="direct"),
])
def test_step_equals_forward(overrides):
    torch.manual_seed(0)
    spec = cifar_bpd(40)
    model = build(MultiresConfig(d_model=12, n_layers=2, dropout=0.2, **overrides), spec).double()
    x = torch.randn(3, 40, 3, dtype=torch.float64)
    model.train()
    model(x)  # non-trivial BatchNorm running statistics
    model.eval()
    expected = model(x)
    state = model.init_state(3, "cpu")
    stepped = []
    for t in range(40):
        y_t, state = model.step(x[:, t], state)
        stepped.append(y_t)
    torch.testing.assert_close(torch.stack(stepped, dim=1), expected, rtol=1e-9, atol=1e-11)


def test_step_state_is_the_receptive_field():
    layer = MultiresConv(5, kernel_size=4, depth=6)
    state = layer.init_state(2, "cpu")
    assert sum(buf.shape[-1] for buf in state["cascade"]) == layer.receptive_field - 1


def test_paper_training_step_dispatches_under_1500_operators():
    """multires_listops at batch 2 and length 512 (fp32): forward, backward and AdamW's step dispatch fewer than
    1,500 operators (`harness.timing.dispatched_ops`, the CPU's proxy for the GPU's kernel launches). Composing each
    layer's kernel level by level under autograd took 5,121, and the GPU step was launch-bound (issue 24)."""
    cfg = compose_config(["+experiment=multires_listops"])
    spec = dataclasses.replace(preflight.task_spec(cfg), seq_len=512)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model, spec)
    optimizer = make_optimizer(model, cfg.optim)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, spec.vocab_size, (2, 512), generator=g)
    labels = torch.randint(0, spec.n_outputs, (2,), generator=g)

    def step() -> None:
        loss = F.cross_entropy(model(tokens, lengths=torch.tensor([512, 300])), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # the optimizer's state exists from here on
    counts = dispatched_ops(step)
    assert sum(counts.values()) < 1500, counts.most_common(8)


# ---------------------------------------------------------------------------------------------------------------
# Weights from and to the published code


def published_classifier_state(d: int, n_layers: int, k: int, depth: int, d_in: int, n_out: int,
                               batchnorm: bool) -> dict[str, torch.Tensor]:
    """Random weights under the names and shapes of the published MultiresNet (Conv1d 1x1, [B, D, L])."""
    g = torch.Generator().manual_seed(0)
    rnd = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64) * 0.3  # noqa: E731
    state = {"encoder.weight": rnd(d, d_in, 1), "encoder.bias": rnd(d)}
    for i in range(n_layers):
        state |= {f"seq_layers.{i}.h0": rnd(d, 1, k), f"seq_layers.{i}.h1": rnd(d, 1, k),
                  f"seq_layers.{i}.w": rnd(d, depth + 2),
                  f"mixing_layers.{i}.0.weight": rnd(2 * d, d, 1), f"mixing_layers.{i}.0.bias": rnd(2 * d),
                  f"norms.{i}.weight": 1 + rnd(d), f"norms.{i}.bias": rnd(d)}
        if batchnorm:
            state |= {f"norms.{i}.running_mean": rnd(d), f"norms.{i}.running_var": 1 + rnd(d).abs(),
                      f"norms.{i}.num_batches_tracked": torch.tensor(3)}
    return state | {"output_mapping.weight": rnd(n_out, d), "output_mapping.bias": rnd(n_out)}


def published_forward(state: dict[str, torch.Tensor], x: np.ndarray, n_layers: int, depth: int) -> np.ndarray:
    """The published classifier in eval mode, [B, L, D] layout, written out with numpy."""
    s = {k: v.numpy() for k, v in state.items()}
    h = x @ s["encoder.weight"][:, :, 0].T + s["encoder.bias"]
    for i in range(n_layers):
        y = brute_force(h, s[f"seq_layers.{i}.h0"], s[f"seq_layers.{i}.h1"], s[f"seq_layers.{i}.w"], depth)
        y = F.gelu(torch.from_numpy(y)).numpy()
        z = y @ s[f"mixing_layers.{i}.0.weight"][:, :, 0].T + s[f"mixing_layers.{i}.0.bias"]
        d = z.shape[-1] // 2
        u = h + z[..., :d] / (1 + np.exp(-z[..., d:]))
        mean, var = u.mean(-1, keepdims=True), u.var(-1, keepdims=True)
        h = (u - mean) / np.sqrt(var + 1e-5) * s[f"norms.{i}.weight"] + s[f"norms.{i}.bias"]
    return h.mean(1) @ s["output_mapping.weight"].T + s["output_mapping.bias"]


def test_published_weights_load_and_compute_the_published_function():
    d, n_layers, k, length = 6, 2, 2, 20
    depth = max_depth(length, k)
    state = published_classifier_state(d, n_layers, k, depth, 3, 10, batchnorm=False)
    model = build(MultiresConfig(d_model=d, n_layers=n_layers, kernel_size=k), scifar(length)).double().eval()
    model.load_published_state_dict({"module." + key: v for key, v in state.items()})  # DDP checkpoints too
    x = np.random.default_rng(0).standard_normal((2, length, 3))
    out = model(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(out, published_forward(state, x, n_layers, depth), rtol=1e-9, atol=1e-10)
    back = model.published_state_dict()
    assert back.keys() == state.keys()
    for key in state:
        assert torch.equal(back[key], state[key]), key


def test_published_weights_round_trip_batchnorm_and_ar():
    depth = max_depth(2048, 4)
    state = published_classifier_state(8, 2, 4, depth, 1, 10, batchnorm=True)
    state["encoder.weight"] = torch.randn(18, 8, dtype=torch.float64)  # the ListOps embedding
    del state["encoder.bias"]
    model = build(MultiresConfig(d_model=8, n_layers=2, kernel_size=4, norm="batch"), listops()).double()
    model.load_published_state_dict(state)
    assert all(torch.equal(model.published_state_dict()[key], value) for key, value in state.items())
    ar = build(MultiresConfig(d_model=8, n_layers=2, kernel_size=4), cifar_bpd())
    names = ar.published_state_dict()
    assert names["mixing_layers.1.3.weight"].shape == (8, 8, 1) and names["decoder.weight"].shape == (100, 8, 1)
    assert names["seq_layers.0.w"].shape == (8, max_depth(1024, 4) + 2)
    with pytest.raises(ConfigError, match="no counterpart"):
        ar.load_published_state_dict({"nonsense.weight": torch.zeros(1)})


def test_layer_state_dict_has_the_published_names_and_shapes():
    layer = MultiresConv(5, kernel_size=4, depth=9)
    assert {k: tuple(v.shape) for k, v in layer.state_dict().items()} == {
        "h0": (5, 1, 4), "h1": (5, 1, 4), "w": (5, 11)}


# ---------------------------------------------------------------------------------------------------------------
# Configuration


@pytest.mark.parametrize("overrides, message", [
    (dict(kernel_size=1), "kernel_size"),
    (dict(wavelet_init="db2", kernel_size=2), "kernel_size=4"),
    (dict(wavelet_init="nope"), "wavelet"),
    (dict(tree_select="uniform"), "memory_size"),
    (dict(tree_select="random"), "tree_select"),
    (dict(norm="group"), "norm"),
    (dict(impl="cuda"), "impl"),
    (dict(depth=0), "depth"),
])
def test_bad_settings_raise_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build(MultiresConfig(d_model=4, n_layers=1, **overrides), scifar(32))


@pytest.mark.parametrize("name, spec, expected", [
    ("multires_scifar", scifar(), 1_365_514),
    ("multires_listops", listops(), 361_994),
    ("multires_ptbxl", ptbxl(12), 215_180),
    ("multires_cifar_bpd", cifar_bpd(), 38_391_908),
])
def test_presets_build_the_published_models(name, spec, expected):
    preset = OmegaConf.load(EXPERIMENTS / f"{name}.yaml")
    cfg = OmegaConf.merge(OmegaConf.structured(MultiresConfig), preset.model)  # as Hydra composes it
    assert n_params(MODELS.build(cfg, spec)) == expected
