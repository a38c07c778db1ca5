"""WavSpA: transforms against PyWavelets and independent NumPy loops, the layer, the model, the presets. The
contract every model keeps (shapes, padding, refusing causal tasks) is in test_models.py."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import pywt
import torch
import yaml

from harness.errors import ConfigError
from harness.task import TaskSpec
from models.wavspa import (
    WavSpAConfig,
    WavSpALayer,
    build,
    daubechies_lowpass,
    liftdec,
    liftdec_learn,
    liftrec,
    liftrec_learn,
    linear_attention,
    ortho_filter,
    reflect_pad,
    wavedec,
    waverec,
)

ROOT = Path(__file__).resolve().parent.parent


def db_filters(wlen: int, d: int) -> torch.Tensor:
    """float64 db{wlen/2} low-pass in every column (the model's float32 init is checked separately)."""
    lowpass = torch.tensor(pywt.Wavelet(f"db{wlen // 2}").filter_bank[0], dtype=torch.float64)
    torch.testing.assert_close(daubechies_lowpass(wlen).double(), lowpass, atol=1e-7, rtol=0)
    return lowpass[:, None].repeat(1, d)


# ---------------------------------------------------------------------------------------------------------------
# Independent NumPy versions of the reference formulas (the published transforms), written as plain loops


def np_dwt_level(a: np.ndarray, w: np.ndarray, reverse_channels: bool) -> tuple[np.ndarray, np.ndarray]:
    """One level for a [T, D] signal: NumPy reflect pad, circular correlation at even offsets."""
    n, d = w.shape
    t = a.shape[0]
    p = n - 2
    apad = np.pad(a, ((p, p + t % 2), (0, 0)), mode="reflect")
    size = apad.shape[0]
    approx = np.zeros((size // 2, d))
    detail = np.zeros((size // 2, d))
    for ch in range(d):
        lo_src = d - 1 - ch if reverse_channels else ch
        for k in range(size // 2):
            for j in range(n):
                sample = apad[(2 * k + j) % size, ch]
                approx[k, ch] += w[n - 1 - j, lo_src] * sample
                detail[k, ch] += (-1) ** j * w[j, ch] * sample
    return approx, detail


def np_ortho_filter(thetas: np.ndarray) -> np.ndarray:
    """The reference's matrix products C <- C R(theta) S, then C S^-1, for one feature."""
    half = thetas.shape[0]
    shift = np.zeros((2 * half, 2 * half))
    shift[np.arange(2 * half), (np.arange(2 * half) + 1) % (2 * half)] = 1
    c = np.eye(2 * half)[0]
    for theta in thetas:
        block = np.array([[np.sin(theta), np.cos(theta)], [np.cos(theta), -np.sin(theta)]])
        rot = np.kron(np.eye(half), block)
        c = c @ rot @ shift
    return c @ np.linalg.inv(shift)


def np_cdf53(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One CDF-5/3 level with circular neighbours on a [T, D] signal (zero-padded to even length)."""
    if a.shape[0] % 2:
        a = np.concatenate([a, np.zeros((1, a.shape[1]))])
    e, o = a[0::2], a[1::2]
    n = e.shape[0]
    det = np.array([o[k] - 0.5 * (e[k] + e[(k + 1) % n]) for k in range(n)])
    s = np.array([e[k] + 0.25 * (det[(k - 1) % n] + det[k]) for k in range(n)])
    return s, det


# ---------------------------------------------------------------------------------------------------------------
# Transforms


@pytest.mark.parametrize("t", [36, 37, 64, 101])
@pytest.mark.parametrize("wlen", [2, 4, 8, 16])
def test_level1_equals_pywavelets_reflect(wlen: int, t: int) -> None:
    """The leading floor((T+N-1)/2) coefficients equal pywt.wavedec(mode='reflect'); band length
    ceil(T/2) + N - 2 (the rest are circular wrap-around coefficients)."""
    torch.manual_seed(0)
    x = torch.randn(2, t, 3, dtype=torch.float64)
    approx, detail = wavedec(x, db_filters(wlen, 3), levels=1)
    ref_a, ref_d = pywt.wavedec(x.numpy(), f"db{wlen // 2}", mode="reflect", level=1, axis=1)
    keep = (t + wlen - 1) // 2
    assert approx.shape == detail.shape == (2, math.ceil(t / 2) + wlen - 2, 3)
    assert ref_a.shape[1] == keep
    np.testing.assert_allclose(approx[:, :keep].numpy(), ref_a, atol=1e-10)
    np.testing.assert_allclose(detail[:, :keep].numpy(), ref_d, atol=1e-10)


@pytest.mark.parametrize("t", [36, 37, 101])
@pytest.mark.parametrize("levels", [1, 2, 3])
def test_perfect_reconstruction_with_daubechies(t: int, levels: int) -> None:
    torch.manual_seed(1)
    x = torch.randn(2, t, 4, dtype=torch.float64)
    for wlen in (2, 4, 16):
        w = db_filters(wlen, 4)
        coeffs = wavedec(x, w, levels)
        assert len(coeffs) == levels + 1
        rec = waverec(coeffs, w)
        assert rec.shape[1] == 2 * math.ceil(t / 2)
        torch.testing.assert_close(rec[:, :t], x, atol=1e-8, rtol=0)


@pytest.mark.parametrize("reverse_channels", [True, False])
def test_multilevel_matches_numpy_loops_with_distinct_filters(reverse_channels: bool) -> None:
    """Random, non-orthogonal, per-feature-distinct filters: every band equals the loop implementation
    of the reference formulas (this is what catches a missing channel reversal)."""
    rng = np.random.default_rng(2)
    for wlen, t in ((4, 37), (16, 40)):
        x = rng.standard_normal((1, t, 3))
        w = rng.standard_normal((wlen, 3))
        coeffs = wavedec(torch.from_numpy(x), torch.from_numpy(w), 3, reverse_channels)
        a, expected = x[0], []
        for _ in range(3):
            a, det = np_dwt_level(a, w, reverse_channels)
            expected.append(det)
        expected.append(a)
        for got, want in zip(coeffs, expected[::-1], strict=True):
            np.testing.assert_allclose(got[0].numpy(), want, atol=1e-10)


def test_synthesis_is_the_adjoint_of_analysis() -> None:
    """<analysis(x), c> = <x, synthesis(c)> for one level on an already padded signal (no crop): checks the
    reconstruction against autograd's vector-Jacobian product of the analysis."""
    torch.manual_seed(3)
    w = torch.randn(8, 3, dtype=torch.float64)
    xpad_len = 2 * 20
    from models.wavspa import _analysis, _synthesis, analysis_filters

    lo, hi = analysis_filters(w)
    x = torch.randn(2, xpad_len, 3, dtype=torch.float64, requires_grad=True)
    ca, cd = torch.randn(2, 20, 3, dtype=torch.float64), torch.randn(2, 20, 3, dtype=torch.float64)
    a, d = _analysis(x, lo, hi)
    (vjp,) = torch.autograd.grad((a * ca).sum() + (d * cd).sum(), x)
    torch.testing.assert_close(_synthesis(ca, cd, lo, hi), vjp)


def test_reflect_pad_matches_numpy_including_repeated_reflection() -> None:
    x = torch.arange(12.0).view(1, 4, 3)
    for left, right in ((2, 3), (3, 3), (7, 9)):
        want = np.pad(x.numpy(), ((0, 0), (left, right), (0, 0)), mode="reflect")
        np.testing.assert_array_equal(reflect_pad(x, left, right).numpy(), want)


def test_ortho_filter_matches_reference_matrix_products_and_is_orthogonal() -> None:
    torch.manual_seed(4)
    thetas = torch.rand(8, 5, dtype=torch.float64) * 2 * math.pi
    filt = ortho_filter(thetas)
    assert filt.shape == (16, 5)
    for ch in range(5):
        np.testing.assert_allclose(filt[:, ch].numpy(), np_ortho_filter(thetas[:, ch].numpy()), atol=1e-12)
    assert_orthogonal(filt)


def assert_orthogonal(filt: torch.Tensor) -> None:
    """Unit norm and zero inner product with every even shift (double-shift orthogonality)."""
    n = filt.shape[0]
    for shift in range(0, n, 2):
        inner = (filt[shift:] * filt[: n - shift]).sum(0)
        torch.testing.assert_close(inner, torch.full_like(inner, 1.0 if shift == 0 else 0.0), atol=1e-5, rtol=0)


def test_ortho_filters_stay_orthogonal_after_a_training_step() -> None:
    torch.manual_seed(5)
    layer = WavSpALayer(8, n_heads=1, qkv_dim=8, wavelet="ortho", wlen=8, levels=2)
    before = layer.filter().detach().clone()
    opt = torch.optim.AdamW(layer.parameters(), lr=0.1, weight_decay=0.1)
    layer(torch.randn(2, 30, 8)).square().mean().backward()
    opt.step()
    after = layer.filter().detach()
    assert (after - before).abs().max() > 1e-3  # the filter did move
    assert_orthogonal(after)


def test_ortho_reconstruction_needs_shared_angles_or_no_flip() -> None:
    """Perfect reconstruction holds with shared angles, or per-feature angles without the channel reversal;
    the reference combination (per-feature angles + reversal) does not reconstruct."""
    torch.manual_seed(6)
    x = torch.randn(2, 33, 4, dtype=torch.float64)
    shared = ortho_filter(torch.rand(4, 1, dtype=torch.float64).repeat(1, 4) * 2 * math.pi)
    distinct = ortho_filter(torch.rand(4, 4, dtype=torch.float64) * 2 * math.pi)
    for w, flip in ((shared, True), (distinct, False)):
        torch.testing.assert_close(waverec(wavedec(x, w, 2, flip), w, flip)[:, :33], x)
    error = (waverec(wavedec(x, distinct, 2, True), distinct, True)[:, :33] - x).abs().max()
    assert error > 0.1


def test_fixed_lifting_matches_cdf53_and_reference_inverse() -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 21, 2))
    coeffs = liftdec(torch.from_numpy(x), levels=2)
    s1, d1 = np_cdf53(x[0])
    s2, d2 = np_cdf53(s1)
    for got, want in zip(coeffs, (s2, d2, d1), strict=True):
        np.testing.assert_allclose(got[0].numpy(), want, atol=1e-12)
    # Exact inverse while no intermediate length is odd ...
    x64 = torch.from_numpy(rng.standard_normal((2, 64, 3)))
    torch.testing.assert_close(liftrec(liftdec(x64, 3))[:, :64], x64)
    # ... but the reference zero-pads details instead of cropping: T=20, level 3 does not invert.
    x20 = torch.from_numpy(rng.standard_normal((2, 20, 3)))
    assert (liftrec(liftdec(x20, 3))[:, :20] - x20).abs().max() > 0.1


def test_learnable_lifting_is_exactly_invertible_and_matches_formula() -> None:
    torch.manual_seed(8)
    w_est, w_pred = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    for t in (20, 37):
        x = torch.randn(2, t, 3, dtype=torch.float64)
        coeffs = liftdec_learn(x, w_est, w_pred, levels=3)
        torch.testing.assert_close(liftrec_learn(coeffs, w_est, w_pred)[:, :t], x)
    # One level against a loop: corr(v, f)[k] = sum_{n < min(N, len)} f[n] v[(k + n) mod len].
    x = torch.randn(1, 8, 3, dtype=torch.float64)  # bands of length 4 < N = 6: filters are truncated
    e, o = x[0, 0::2].numpy(), x[0, 1::2].numpy()

    def corr(v: np.ndarray, f: np.ndarray) -> np.ndarray:
        n = v.shape[0]
        return np.array([sum(f[j] * v[(k + j) % n] for j in range(min(f.shape[0], n))) for k in range(n)])

    def silu(z: np.ndarray) -> np.ndarray:
        return z / (1 + np.exp(-z))

    det = o - 0.5 * silu(corr(e, w_est.numpy()))
    s = e + 0.25 * silu(corr(det, w_pred.numpy()))
    got_s, got_d = liftdec_learn(x, w_est, w_pred, levels=1)
    np.testing.assert_allclose(got_d[0].numpy(), det, atol=1e-12)
    np.testing.assert_allclose(got_s[0].numpy(), s, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Layer and model


def test_linear_attention_matches_explicit_formula() -> None:
    torch.manual_seed(9)
    q, k, v = (torch.randn(2, 1, 7, 4, dtype=torch.float64) for _ in range(3))
    qf, kf = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
    weights = qf @ kf.transpose(-1, -2)
    want = weights @ v / (weights.sum(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(linear_attention(q, k, v), want)


@pytest.mark.parametrize("wavelet", ["ada", "ortho", "lift", "adalift"])
@pytest.mark.parametrize("attention", ["softmax", "linear"])
def test_layer_shapes_and_gradients(wavelet: str, attention: str) -> None:
    torch.manual_seed(10)
    layer = WavSpALayer(16, n_heads=2, qkv_dim=8, wavelet=wavelet, wlen=4, levels=2, attention=attention)
    assert len(layer.attn) == 3
    x = torch.randn(3, 29, 16, requires_grad=True)
    y = layer(x, torch.tensor([29, 20, 5]))
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for p in layer.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_layer_with_identity_attention_reconstructs() -> None:
    """transform -> (identity) -> inverse -> crop returns the input: replace each band's attention by identity."""
    torch.manual_seed(11)
    layer = WavSpALayer(6, wavelet="ada", wlen=8, levels=3)
    layer.attn = torch.nn.ModuleList(torch.nn.Identity() for _ in layer.attn)
    x = torch.randn(2, 45, 6)
    torch.testing.assert_close(layer(x), x, atol=1e-5, rtol=0)


def spec(seq_len: int = 40) -> TaskSpec:
    return TaskSpec(name="toy", input="tokens", seq_len=seq_len, n_outputs=10, metric="accuracy", vocab_size=18,
                    variable_length=True)


@pytest.mark.parametrize("wavelet", ["ortho", "lift"])
def test_padded_example_equals_unpadded(wavelet: str) -> None:
    """With the reference's fixed-length padding, a batch with padding (and garbage tokens past each length)
    gives each example the output it gets alone, whatever the transform (ada: test_models.py)."""
    torch.manual_seed(12)
    cfg = WavSpAConfig(d_model=16, n_layers=2, qkv_dim=8, d_ff=16, wavelet=wavelet, wlen=4, levels=2)
    model = build(cfg, spec()).eval()
    short = torch.randint(1, 18, (1, 13))
    long = torch.randint(1, 18, (1, 31))
    batch = torch.cat([torch.cat([short, torch.randint(0, 18, (1, 18))], dim=1), long])
    out = model(batch, lengths=torch.tensor([13, 31]))
    torch.testing.assert_close(out[0], model(short)[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1], model(long)[0], atol=1e-5, rtol=1e-5)


def expected_params(vocab: int, d: int, layers: int, qkv: int, mlp: int, wlen: int, levels: int,
                    classes: int) -> int:
    """Parameter count of the reference WavspaEncoder ('db' wavelet), from its shapes."""
    per_layer = 2 * d + wlen * d + (levels + 1) * 4 * d * qkv + (d * mlp + mlp + mlp * d + d)
    return vocab * d + d + layers * per_layer + 2 * d + (d * mlp + mlp + mlp * classes + classes)


def test_parameter_count_matches_reference_shapes() -> None:
    cfg = WavSpAConfig(d_model=128, n_layers=8, n_heads=1, qkv_dim=64, d_ff=128, wlen=16, levels=1)
    model = build(cfg, spec(2000))
    assert sum(p.numel() for p in model.parameters()) == expected_params(18, 128, 8, 64, 128, 16, 1, 10)


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ConfigError, match="model.wavelet='haar'"):
        build(WavSpAConfig(wavelet="haar"), spec())
    with pytest.raises(ConfigError, match="model.wlen=7"):
        build(WavSpAConfig(wlen=7), spec())
    with pytest.raises(ConfigError, match="model.wlen=78"):
        build(WavSpAConfig(wlen=78), spec())
    with pytest.raises(ConfigError, match="model.n_heads=3"):
        build(WavSpAConfig(n_heads=3), spec())
    causal = TaskSpec(name="ar", input="signal", seq_len=16, n_outputs=3, metric="bpd", d_input=3,
                      output="sequence", causal=True)
    with pytest.raises(ConfigError):
        build(WavSpAConfig(), causal)


@pytest.mark.parametrize("stem", ["wavspa_ada_listops", "wavspa_ortho_listops", "wavspa_lift_listops"])
def test_presets_name_real_fields_and_build(stem: str) -> None:
    preset = yaml.safe_load((ROOT / "sweeps" / "experiment" / f"{stem}.yaml").read_text())
    assert {"override /task": "listops"} in preset["defaults"]
    assert {"override /model": "wavspa"} in preset["defaults"]
    fields = set(WavSpAConfig.__dataclass_fields__)
    assert set(preset["model"]) <= fields
    model = build(WavSpAConfig(**preset["model"]), spec(64))
    assert len(model.blocks) == 8
