"""The optional numba kernels compute exactly what the plain NumPy step loops compute.

gatescope must work without numba (`GATESCOPE_BACKEND=numpy` or numba not installed) and
give the same bits with it: every sequence path is run on both backends, at a size where
the numba LSTM runs whole sequences in one call and at one where it runs a kernel per
step, and every output, state, trace and gradient is compared bit for bit. Both evaluate
`functional.exp_parts`' exp with the same IEEE operations in the same order.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from conftest import CONFIGS, config_id, make, random_state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gatescope as gs
from gatescope.nn import functional

numba_missing = functional._numba_kernels() is None
needs_numba = pytest.mark.skipif(numba_missing, reason="numba does not import (pip install numba)")


def run(layer, x, state0, dy, dstate, backend, monkeypatch):
    monkeypatch.setenv("GATESCOPE_BACKEND", backend)
    y, state = layer(x, state0)
    trace = {k: v.copy() for k, v in layer.trace.items()}
    dx = layer.backward(dy, dstate)
    grads = {k: v.copy() for k, v in layer.grads.items()}
    return y.copy(), state, trace, dx, grads, layer.dstate0


@pytest.mark.slow
@needs_numba
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("which", CONFIGS, ids=config_id)
@pytest.mark.parametrize("size", [(3, 7, 4, 5), (8, 6, 5, 48)], ids=["small", "per-step"])
def test_numba_equals_numpy_bit_for_bit(size, which, num_layers, dtype, monkeypatch):
    arch, opts = which
    rng = np.random.default_rng(3)
    B, T, D, H = size
    assert (B * H * 4 * H <= functional.SMALL_MACS) == (size == (3, 7, 4, 5))
    layer = make(arch, D, H, num_layers, dtype=dtype, **opts)
    assert_backends_agree(layer, rng.normal(size=(B, T, D)).astype(dtype), rng, monkeypatch)


@needs_numba
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    which=st.sampled_from(CONFIGS),
    B=st.integers(1, 5),
    T=st.integers(1, 6),
    D=st.integers(1, 4),
    H=st.sampled_from([1, 2, 7, 33, 70]),
    scale=st.sampled_from([1e-3, 1.0, 30.0, 1e3]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_numba_equals_numpy_bit_for_bit_anywhere(
    which, B, T, D, H, scale, dtype, seed, monkeypatch
):
    """Random sizes on both sides of SMALL_MACS, and inputs from tiny to saturating (x 1e3:
    gates at exactly 0 and 1, subnormal sigmoids, tanh at +-1): still the same bits."""
    arch, opts = which
    rng = np.random.default_rng(seed)
    layer = make(arch, D, H, 1, seed=seed, dtype=dtype, **opts)
    x = (rng.normal(size=(B, T, D)) * scale).astype(dtype)
    assert_backends_agree(layer, x, rng, monkeypatch)


def assert_backends_agree(layer, x, rng, monkeypatch):
    """Forward and backward on both backends, from one random initial state and one random
    dL/dy and dL/d(final state): outputs, states, trace, dx, grads and dstate0, bit for bit."""
    B, T, _ = x.shape
    state0 = random_state(layer, B, rng)
    dy = rng.normal(size=(B, T, layer.hidden_size)).astype(x.dtype)
    dstate = random_state(layer, B, rng)
    a = run(layer, x, state0, dy, dstate, "numpy", monkeypatch)
    b = run(layer, x, state0, dy, dstate, "numba", monkeypatch)
    for u, v in zip(a, b):
        if isinstance(u, dict):
            assert u.keys() == v.keys()
            pairs = [(u[k], v[k], k) for k in u]
        else:
            pairs = [
                (p, q, "") for p, q in zip(*(w if isinstance(w, tuple) else (w,) for w in (u, v)))
            ]
        for p, q, what in pairs:
            assert_same_bits(p, q, what)


def assert_same_bits(a, b, what):
    """Equal bit for bit: the same dtype and shape, the same bytes (so -0 is not 0)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, what
    same = a.view(f"u{a.itemsize}") == b.view(f"u{b.itemsize}")
    assert same.all(), (
        f"{what}: {np.count_nonzero(~same)} of {a.size} differ, max {np.abs(a - b).max()}"
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sigmoid_and_tanh_are_accurate_quiet_and_the_same_on_both_backends(dtype):
    """Within 3 ulp of long-double references over the whole range, exact at the ends, no
    warnings, NaN kept; numba's (when installed) the same bits as NumPy's."""
    z = np.concatenate(
        [
            np.linspace(-750, 750, 30001),
            np.random.default_rng(0).normal(size=5000) * 3,
            np.random.default_rng(1).normal(size=500) * 1e-6,
            [0.0, -0.0, np.inf, -np.inf, np.nan],
        ]
    ).astype(dtype)
    zl = z.astype(np.longdouble)
    e = np.exp(-np.abs(zl))
    refs = {"sigmoid": np.where(zl >= 0, 1 / (1 + e), e / (1 + e)), "tanh": np.tanh(zl)}
    nb = None if numba_missing else functional._numba_kernels()[np.dtype(dtype)]
    for name in refs:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = getattr(functional, name)(z)
            if nb is not None:
                assert_same_bits(out, getattr(nb, name + "_vec")(z, np.empty_like(z)), name)
        assert np.isnan(out[-1])
        assert np.signbit(out[-5:-3]).tolist() == [False, name == "tanh"]  # at 0 and -0
        out, refs[name] = out[:-1], refs[name][:-1]
        ref = refs[name].astype(dtype)
        nonzero = ref != 0
        ulps = np.abs(out[nonzero].astype(np.longdouble) - refs[name][nonzero]) / np.spacing(
            np.abs(ref[nonzero])
        )
        assert ulps.max() <= 3, (name, float(ulps.max()))
        assert np.all(out[~nonzero] == 0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("B, K, N", [(1, 64, 256), (16, 26, 104), (3, 5, 20), (4, 300, 7)])
def test_small_product_sums_in_order_of_k(B, K, N, dtype):
    """The numba kernels' loop adds x[:, k] w[k] in order of k; so must np.add.reduce."""
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(B, K)).astype(dtype), rng.normal(size=(K, N)).astype(dtype)
    ref = x[:, 0, None] * w[0]
    for k in range(1, K):
        ref = ref + x[:, k, None] * w[k]
    out = functional.small_product(x, w, np.empty((B, N), dtype), np.empty((B, K, N), dtype))
    assert_same_bits(out, ref, "small_product")


@pytest.mark.slow
@needs_numba
def test_a_second_process_finds_the_kernels_in_numbas_cache(tmp_path):
    """Compiled once, then loaded: the second run neither compiles nor writes a cache file
    (closures over other kernels used to miss numba's cache in every process, compile
    anew and add files to it)."""
    code = (
        "import numpy as np, gatescope as gs\n"
        "r = gs.RNN(3, 8, dtype=np.float32); y, _ = r(np.ones((2, 4, 3), np.float32))\n"
        "r.backward(y)\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "GATESCOPE_BACKEND": "numba"}

    def files():
        return {(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")}

    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    first = files()
    assert any(name.endswith(".nbc") for name, _, _ in first)
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    assert files() == first


def test_backend_choice(monkeypatch):
    monkeypatch.setenv("GATESCOPE_BACKEND", "numpy")
    assert functional.backend() == "numpy"
    assert functional.kernels(np.float32) is None
    assert functional.backend("numpy") == "numpy"
    with pytest.raises(ValueError, match="backend must be one of"):
        functional.backend("cuda")
    monkeypatch.delenv("GATESCOPE_BACKEND")
    assert functional.backend() == ("numpy" if numba_missing else "numba")


def test_works_without_numba():
    """With numba unimportable, gatescope imports, picks numpy, trains, and says why not numba."""
    code = (
        "import sys; sys.modules['numba'] = None\n"
        "import numpy as np, gatescope as gs\n"
        "from gatescope.nn import functional\n"
        "assert functional.backend() == 'numpy'\n"
        "l = gs.LSTM(3, 4); y, _ = l(np.ones((2, 5, 3))); l.backward(y)\n"
        "try:\n    functional.backend('numba')\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install numba" in out.stdout


def test_sequence_functions_take_a_backend_argument():
    rng = np.random.default_rng(0)
    lstm = gs.LSTM(3, 4)
    p = lstm.layer_params(0)
    x = rng.normal(size=(5, 2, 3))
    h0 = np.zeros((2, 4))
    c = gs.nn.lstm.lstm_forward(x, h0, h0, p["weight_ih"], p["weight_hh"], p["bias"], "numpy")
    dx, *_ = gs.nn.lstm.lstm_backward(
        c, np.ones((5, 2, 4)), h0, h0, p["weight_ih"], p["weight_hh"], "numpy"
    )
    assert dx.shape == x.shape
