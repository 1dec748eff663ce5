"""The optional numba kernels against the NumPy reference, within a stated tolerance.

The NumPy code of lstm.py, gru.py and rnn.py is the reference. An accelerator must agree
with it within `gatescope.nn.backend.TOLERANCE` (float64 1e-12, float32 1e-5) on every
output, final state, trace entry and gradient (dx, dstate0, every parameter's), and give
the same bits when run twice on the same input.

The measure, per array, b the reference and a the kernel's:

    max|a - b| <= tol * max|b| + 8 * max|b' - b|

The first term is normwise (the max norm). Element by element relative error is not sound:
a gradient entry is a sum of terms of both signs, and one that cancels to nearly 0 has no
relative accuracy in any implementation (its rounding error is of the size of the terms,
not of the sum); a state entry passing near 0 likewise. The second term is the problem's
own conditioning: b' is the reference run again with every sigmoid and tanh value moved by
one ulp (in random directions). A saturated gate's derivative, i (1 - i) from i = 0.9999,
has an absolute, not a relative, accuracy of an ulp, whichever implementation rounds i: for
a lone unit whose gradient flows only through such gates, an ulp of difference in i is a
relative 1e-4 in every gradient, in the reference itself. The kernels' sigmoid and tanh are
within 4 ulp of the reference's (tested below), so 8 ulp of that response bounds what an
honest kernel can differ by; a wrong term in a kernel gives errors of the size of b.

Sizes are on both sides of every size switch the kernels have: the recurrent product's
tiles (`kernels_numba.matmul_packed`: rows in blocks of MR, a last block of fewer; columns
in panels of NR, a last partial panel; k in slices of KC), the LSTM's input projection in
the step loop or before it (`FUSE_BYTES`), and backward's chunks of one step and of
several; inputs from 1e-3 to 1e3 (x 1e3 saturates the gates: exactly 0 and 1, tanh at +-1).
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
from gatescope.nn import backend, functional
from gatescope.nn import gru as nn_gru
from gatescope.nn import lstm as nn_lstm
from gatescope.nn import lstm_variants as nn_variants
from gatescope.nn import rnn as nn_rnn
from gatescope.nn.lstm_variants import VARIANTS

numba_missing = backend._tables("numba") is None
needs_numba = pytest.mark.skipif(numba_missing, reason="numba does not import (pip install numba)")
if not numba_missing:
    from gatescope.nn import kernels_numba
VARIANT_CONFIGS = [("lstm", {"variant": v}) for v in VARIANTS if v != "vanilla"]


def run(layer, x, state0, dy, dstate, name, monkeypatch):
    """Forward and backward on backend `name`: every array that comes out, by a name."""
    monkeypatch.setenv("GATESCOPE_BACKEND", name)
    y, state = layer(x, state0)
    out = {"y": y.copy()}
    out |= {f"state {i}": s.copy() for i, s in enumerate(_flat(state))}
    out |= {f"trace {k}": v.copy() for k, v in layer.trace.items()}
    out["dx"] = layer.backward(dy, dstate).copy()
    out |= {f"grad {k}": v.copy() for k, v in layer.grads.items()}
    out |= {f"dstate0 {i}": s.copy() for i, s in enumerate(_flat(layer.dstate0))}
    return out


def _flat(state):
    return list(state) if isinstance(state, tuple) else [state]


def inputs(layer, x, rng):
    """One random initial state, dL/dy and dL/d(final state) for x."""
    B, T, _ = x.shape
    state0 = random_state(layer, B, rng)
    dy = rng.normal(size=(B, T, layer.hidden_size)).astype(x.dtype)
    return state0, dy, random_state(layer, B, rng)


def _max_abs(a, b=None):
    return float(np.abs(a if b is None else a.astype(np.float64) - b).max(initial=0.0))


def assert_close(a, b, b_ulp, what):
    """a within tolerance of the reference b (see the module docstring); b_ulp: the reference
    with its sigmoid and tanh values an ulp off."""
    assert a.dtype == b.dtype and a.shape == b.shape, what
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b)), what
    err, scale, cond = _max_abs(a, b), _max_abs(b), _max_abs(b_ulp, b)
    allowed = backend.TOLERANCE[b.dtype] * scale + 8 * cond
    assert err <= allowed, f"{what}: max|a - b| = {err:.3g}, max|b| = {scale:.3g}, cond {cond:.3g}"


def _ulp_off(f, seed):
    """f, its values then moved by one ulp each, up or down at random (a fixed sequence)."""
    rng = np.random.default_rng(seed)

    def g(z, out=None):
        y = np.asarray(f(z, out=out))
        away = np.where(rng.random(y.shape) < 0.5, -np.inf, np.inf).astype(y.dtype)
        y[...] = np.nextafter(y, away)
        return y

    return g


def assert_backends_agree(layer, x, rng, monkeypatch):
    args = inputs(layer, x, rng)
    ref = run(layer, x, *args, "numpy", monkeypatch)
    got = run(layer, x, *args, "numba", monkeypatch)
    with monkeypatch.context() as m:
        for mod in (nn_lstm, nn_gru, nn_rnn, nn_variants):
            for name in ("sigmoid", "tanh"):
                if hasattr(mod, name):
                    m.setattr(mod, name, _ulp_off(getattr(functional, name), 7))
        ulp = run(layer, x, *args, "numpy", m)
    assert got.keys() == ref.keys()
    for k in ref:
        assert_close(got[k], ref[k], ulp[k], k)


SIZES = {  # (B, T, D, H), each on its side of the switches (test_sizes_cover_the_switches)
    "small": (3, 7, 4, 5),  # B < MR; every N one partial panel
    "tiles": (8, 6, 5, 32),  # B = MR; every N whole panels (float32 and float64)
    "small-chunks": (2, 37, 3, 6),  # backward's chunks of several steps
    "tiles-chunks": (8, 37, 3, 48),
    "ragged": (11, 5, 3, 70),  # B = MR + 3; LSTM backward K = 4H > KC; partial panels
    "deep": (10, 3, 300, 260),  # every K > KC (the input's too): k in two slices
}


def test_sizes_cover_the_switches():
    """The sizes above fall on both sides of each switch of the numba kernels."""
    MR, KC, NRS = 8, 256, (32, 16)  # AVX-512's (float32, float64)
    if not numba_missing:
        MR, KC = kernels_numba.MR, kernels_numba.KC
        NRS = tuple(kernels_numba.panel_width(dt) for dt in (np.float32, np.float64))
    Bs = {B for B, _, _, _ in SIZES.values()}
    assert {B < MR for B in Bs} == {True, False} and any(B > MR and B % MR for B in Bs)
    for gates in (4, 3, 1):
        for nr in NRS:
            assert {gates * H % nr == 0 for *_, H in SIZES.values()} == {True, False}
    assert {H > KC for *_, H in SIZES.values()} == {True, False}
    assert {D > KC for _, _, D, _ in SIZES.values()} == {True, False}
    chunks = {gs.nn.recurrent.chunk_steps(T, B) > 1 for B, T, _, _ in SIZES.values()}
    assert chunks == {True, False}


@pytest.mark.slow
@needs_numba
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("which", CONFIGS + VARIANT_CONFIGS, ids=config_id)
@pytest.mark.parametrize("size", list(SIZES), ids=list(SIZES))
def test_numba_matches_the_reference(size, which, num_layers, dtype, monkeypatch):
    arch, opts = which
    B, T, D, H = SIZES[size]
    assert (gs.nn.recurrent.chunk_steps(T, B) > 1) == size.endswith("chunks")
    rng = np.random.default_rng(3)
    layer = make(arch, D, H, num_layers, dtype=dtype, **opts)
    assert_backends_agree(layer, rng.normal(size=(B, T, D)).astype(dtype), rng, monkeypatch)


@needs_numba
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("fuse", [True, False], ids=["projection-in-loop", "projection-first"])
@pytest.mark.parametrize("size", ["small", "ragged"])
def test_lstm_input_projection_either_way(size, fuse, dtype, monkeypatch):
    """Both sides of FUSE_BYTES (the LSTM's x_t W_ih^T inside the step loop or before it),
    batch first (x reaches the kernels as a transposed view), 2 layers."""
    table = backend.kernels(dtype, "numba")
    monkeypatch.setattr(table, "FUSE_BYTES", 2**40 if fuse else 0)
    B, T, D, H = SIZES[size]
    rng = np.random.default_rng(11)
    layer = make("lstm", D, H, 2, dtype=dtype)
    assert_backends_agree(layer, rng.normal(size=(B, T, D)).astype(dtype), rng, monkeypatch)


@needs_numba
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("B", [1, 7, 8, 9, 17])
@pytest.mark.parametrize("K, N", [(1, 1), (5, 32), (40, 33), (256, 16), (257, 100), (600, 64)])
def test_matmul_packed_against_numpy(B, K, N, dtype):
    """out = a @ W and out += a @ W through packed panels, a and out strided row views, every
    side of MR (rows), NR (columns: 16 and 32) and KC (k): within a few ulp of a float64
    product per entry's sum of |terms|, the same bits twice, and nothing outside out touched."""
    rng = np.random.default_rng(B * 1000 + K + N)
    a_big = rng.normal(size=(B, K + 3)).astype(dtype)
    a = a_big[:, 2 : 2 + K]  # (B, K) rows of stride K + 3
    w = rng.normal(size=(N, K)).astype(dtype).T  # (K, N), a transposed view
    wp = kernels_numba.pack(w)
    nr = kernels_numba.panel_width(dtype)
    assert wp.shape == (-(-N // nr), K, nr)
    exact = a.astype(np.float64) @ w.astype(np.float64)
    bound = np.abs(a).astype(np.float64) @ np.abs(w).astype(np.float64)
    eps = np.finfo(dtype).eps
    for add in (False, True):
        big = rng.normal(size=(B, N + 5)).astype(dtype)
        before = big.copy()
        out = big[:, 1 : 1 + N]
        kernels_numba.matmul_packed(a, wp, N, out, add)
        want = exact + before[:, 1 : 1 + N] if add else exact
        slack = (K + 2) * eps * (bound + (np.abs(before[:, 1 : 1 + N]) if add else 0))
        assert np.all(np.abs(out - want) <= slack), add
        assert np.array_equal(big[:, :1], before[:, :1]) and np.array_equal(
            big[:, 1 + N :], before[:, 1 + N :]
        )
        again = before.copy()
        kernels_numba.matmul_packed(a, wp, N, again[:, 1 : 1 + N], add)
        assert again.tobytes() == big.tobytes()


@needs_numba
@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    which=st.sampled_from(CONFIGS),
    num_layers=st.integers(1, 2),
    B=st.integers(1, 11),
    T=st.integers(1, 20),
    D=st.integers(1, 4),
    H=st.sampled_from([1, 2, 7, 33, 70]),
    scale=st.sampled_from([1e-3, 1.0, 30.0, 1e3]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_numba_matches_the_reference_anywhere(
    which, num_layers, B, T, D, H, scale, dtype, seed, monkeypatch
):
    """Random shapes (B on both sides of MR, H = 33 and 70 partial panels, 1 and 2 units
    a row; T > 16 puts several steps in a chunk of backward), inputs from tiny to saturating."""
    arch, opts = which
    rng = np.random.default_rng(seed)
    layer = make(arch, D, H, num_layers, seed=seed, dtype=dtype, **opts)
    x = (rng.normal(size=(B, T, D)) * scale).astype(dtype)
    assert_backends_agree(layer, x, rng, monkeypatch)


@pytest.mark.parametrize("name", ["numpy", pytest.param("numba", marks=needs_numba)])
@pytest.mark.parametrize("which", CONFIGS[::3] + VARIANT_CONFIGS[-1:], ids=config_id)
@pytest.mark.parametrize("size", ["small", "tiles-chunks"])
def test_each_backend_gives_the_same_bits_run_to_run(size, which, name, monkeypatch):
    arch, opts = which
    B, T, D, H = SIZES[size]
    rng = np.random.default_rng(5)
    x = rng.normal(size=(B, T, D)).astype(np.float32)
    layer = make(arch, D, H, 2, dtype=np.float32, **opts)
    args = inputs(layer, x, rng)
    first = run(layer, x, *args, name, monkeypatch)
    again = run(layer, x, *args, name, monkeypatch)
    for k in first:
        assert first[k].tobytes() == again[k].tobytes(), k


def _test_points(dtype):
    z = np.concatenate(
        [
            np.linspace(-750, 750, 30001),
            np.random.default_rng(0).normal(size=5000) * 3,
            np.random.default_rng(1).normal(size=500) * 1e-6,
            [0.0, -0.0, np.inf, -np.inf, np.nan],
        ]
    )
    return z.astype(dtype)


def _ulps(out, ref, dtype):
    """|out - ref| in units in the last place of ref (ref may be long double), where ref != 0."""
    nonzero = ref.astype(dtype) != 0
    assert np.all(out[~nonzero] == 0)
    err = np.abs(out[nonzero].astype(np.longdouble) - ref[nonzero])
    return float((err / np.spacing(np.abs(ref[nonzero].astype(dtype)))).max())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_reference_sigmoid_and_tanh_are_accurate_and_quiet(dtype):
    """Within 3 ulp of long-double values over the whole range, the tails included (relative
    error, so sigma(-700) keeps its digits), no warnings, NaN kept, the sign of 0 kept."""
    z = _test_points(dtype)
    zl = z.astype(np.longdouble)
    e = np.exp(-np.abs(zl))
    refs = {"sigmoid": np.where(zl >= 0, 1 / (1 + e), e / (1 + e)), "tanh": np.tanh(zl)}
    for name, ref in refs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = getattr(functional, name)(z)
        assert out.dtype == dtype
        assert np.isnan(out[-1])
        assert np.signbit(out[-5:-3]).tolist() == [False, name == "tanh"]  # at 0 and -0
        assert _ulps(out[:-1], ref[:-1], dtype) <= 3, name


@needs_numba
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernel_sigmoid_and_tanh_are_within_a_few_ulp_of_the_reference(dtype):
    """Element by element, relative, tails included: the kernels' own exp loses no digits."""
    z = _test_points(dtype)
    nb = backend.kernels(dtype, "numba")
    for name in ("sigmoid", "tanh"):
        ref = getattr(functional, name)(z)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = getattr(nb, name + "_vec")(z, np.empty_like(z))
        assert np.isnan(out[-1])
        assert np.signbit(out[-5:-3]).tolist() == [False, name == "tanh"]
        assert _ulps(out[:-1], ref[:-1], dtype) <= 4, name


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
    assert backend.backend() == "numpy"
    assert backend.kernels(np.float32) is None
    assert backend.backend("numpy") == "numpy"
    with pytest.raises(ValueError, match="backend must be one of"):
        backend.backend("cuda")
    monkeypatch.delenv("GATESCOPE_BACKEND")
    assert backend.backend() == ("numpy" if numba_missing else "numba")


def test_works_without_numba():
    """With numba unimportable, gatescope imports, picks numpy, trains, and says why not numba."""
    code = (
        "import sys; sys.modules['numba'] = None\n"
        "import numpy as np, gatescope as gs\n"
        "from gatescope.nn import backend\n"
        "assert backend.backend() == 'numpy' and backend.kernels(np.float64) is None\n"
        "l = gs.LSTM(3, 4); y, _ = l(np.ones((2, 5, 3))); l.backward(y)\n"
        "try:\n    backend.backend('numba')\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install numba" in out.stdout


def test_the_reference_does_not_import_numba():
    """nn/ imports numba only when a sequence path asks for its kernels (no import cycle)."""
    code = (
        "import sys, numpy as np, gatescope as gs\n"
        "l = gs.GRU(3, 4); l(np.ones((2, 5, 3)))\n"
        "print('numba' in sys.modules, 'gatescope.nn.kernels_numba' in sys.modules)\n"
    )
    env = {**os.environ, "GATESCOPE_BACKEND": "numpy"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False"]


def test_sequence_functions_take_a_backend_argument():
    rng = np.random.default_rng(0)
    lstm = gs.LSTM(3, 4)
    p = lstm.layer_params(0)
    x = rng.normal(size=(5, 2, 3))
    h0 = np.zeros((2, 4))
    c = gs.nn.lstm.lstm_forward(x, h0, h0, p["weight_ih"], p["weight_hh"], p["bias"], "numpy")
    y, _ = lstm(x.transpose(1, 0, 2))
    np.testing.assert_allclose(c.hs[1:].transpose(1, 0, 2), y, rtol=1e-12, atol=0)
    dx, *_ = gs.nn.lstm.lstm_backward(
        c, np.ones((5, 2, 4)), h0, h0, p["weight_ih"], p["weight_hh"], "numpy"
    )
    assert np.all(np.isfinite(dx)) and np.abs(dx).max() > 0
