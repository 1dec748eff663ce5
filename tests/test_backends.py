"""The optional numba kernels compute what the plain NumPy step loops compute.

gatescope must work without numba (`GATESCOPE_BACKEND=numpy` or numba not installed) and
give the same numbers with it: every sequence path is run on both backends and compared.
The two differ only in how exp and tanh are evaluated (NumPy's SIMD loops, or the
vectorisable series in `gatescope.nn._numba`), a few ulps, so float64 agrees to 1e-12.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from conftest import CONFIGS, config_id, make, random_state

import gatescope as gs
from gatescope.nn import functional

numba_missing = functional._numba_kernels() is None
needs_numba = pytest.mark.skipif(
    numba_missing, reason="numba not installed (pip install '.[fast]')"
)


def run(layer, x, state0, dy, dstate, backend, monkeypatch):
    monkeypatch.setenv("GATESCOPE_BACKEND", backend)
    y, state = layer(x, state0)
    trace = {k: v.copy() for k, v in layer.trace.items()}
    dx = layer.backward(dy, dstate)
    grads = {k: v.copy() for k, v in layer.grads.items()}
    return y.copy(), state, trace, dx, grads, layer.dstate0


@needs_numba
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("which", CONFIGS, ids=config_id)
def test_numba_equals_numpy(which, num_layers, dtype, monkeypatch):
    arch, opts = which
    rng = np.random.default_rng(3)
    B, T, D, H = 3, 7, 4, 5
    layer = make(arch, D, H, num_layers, dtype=dtype, **opts)
    x = rng.normal(size=(B, T, D)).astype(dtype)
    state0 = random_state(layer, B, rng)
    dy = rng.normal(size=(B, T, H)).astype(dtype)
    dstate = random_state(layer, B, rng)
    a = run(layer, x, state0, dy, dstate, "numpy", monkeypatch)
    b = run(layer, x, state0, dy, dstate, "numba", monkeypatch)
    tol = {"rtol": 1e-12, "atol": 1e-13} if dtype == np.float64 else {"rtol": 2e-5, "atol": 2e-6}
    for u, v in zip(a, b):
        if isinstance(u, dict):
            assert u.keys() == v.keys()
            for k in u:
                np.testing.assert_allclose(u[k], v[k], **tol, err_msg=k)
        else:
            for p, q in zip(
                u if isinstance(u, tuple) else (u,), v if isinstance(v, tuple) else (v,)
            ):
                np.testing.assert_allclose(p, q, **tol)


@needs_numba
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numba_sigmoid_and_tanh_are_accurate_and_quiet(dtype):
    """Within 3 ulp of long-double references over the whole range, exact at the ends."""
    k = functional._numba_kernels()[np.dtype(dtype)]
    z = np.concatenate(
        [
            np.linspace(-750, 750, 30001),
            np.random.default_rng(0).normal(size=5000) * 3,
            np.random.default_rng(1).normal(size=500) * 1e-6,
            [0.0, -0.0, np.inf, -np.inf],
        ]
    ).astype(dtype)
    zl = z.astype(np.longdouble)
    e = np.exp(-np.abs(zl))
    refs = {"sigmoid": np.where(zl >= 0, 1 / (1 + e), e / (1 + e)), "tanh": np.tanh(zl)}
    for name, fn in (("sigmoid", k.sigmoid_vec), ("tanh", k.tanh_vec)):
        out = np.empty_like(z)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fn(z, out)
        ref = refs[name].astype(dtype)
        nonzero = ref != 0
        ulps = np.abs(out[nonzero].astype(np.longdouble) - refs[name][nonzero]) / np.spacing(
            np.abs(ref[nonzero])
        )
        assert ulps.max() <= 3, (name, float(ulps.max()))
        assert np.all(out[~nonzero] == 0)


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
    assert "pip install 'gatescope[fast]'" in out.stdout


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
