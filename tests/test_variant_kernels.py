"""The LSTM variants' numba kernels (`kernels_variants_numba.py`) against the NumPy reference
of `lstm_variants.py`, within `gatescope.nn.backend.TOLERANCE`.

The measure and its reasons are those of tests/test_backends.py (whose helpers these tests
use): per array, max|a - b| <= tol * max|b| + 8 * max|b' - b|, b' the reference with its
sigmoid and tanh values an ulp off. Every output, final state, trace entry and gradient
(dx, dstate0, every parameter's: peepholes and layer-norm gains included), both float
types, 1 and 2 layers, sizes inside one panel of the packed recurrent product and across several
panels and row blocks (`kernels_numba.matmul_packed`), with backward's chunks of one step
and of several; the same bits run to run; the reference where it must run.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_backends import _ulp_off, assert_close, inputs, needs_numba, run

import gatescope as gs
from gatescope.nn import backend, functional
from gatescope.nn import lstm_variants as lv
from gatescope.nn.edits import EditPlan

VARIANTS = [v for v in lv.VARIANTS if v != "vanilla"]
# bias=False takes other kernel branches (no additive shift; layer norm: no beta_c)
SIZES = {  # (B, T, D, H): narrow, G*H and H within one panel; wide, several panels, B = MR
    "narrow": (3, 7, 4, 5),
    "wide": (8, 6, 5, 56),
    "narrow-chunks": (2, 37, 3, 6),
    "wide-chunks": (8, 37, 3, 56),
}
CASES = [(v, {}) for v in VARIANTS] + [(v, {"bias": False}) for v in ("peephole", "layernorm")]


def case_id(case):
    v, opts = case
    return v + "".join(f"-{k}={x}" for k, x in opts.items())


def perturbed(layer, seed=0, scale=0.1):
    """Parameters off their initial values (peepholes 0 and gains 1 would hide terms)."""
    rng = np.random.default_rng(seed)
    for p in layer.params.values():
        p += rng.normal(scale=scale, size=p.shape).astype(p.dtype)
    return layer


def _ulp_off_ln(f, seed):
    """A layer-norm function (either direction) with its input and its outputs an ulp off,
    up or down at random (a fixed sequence)."""
    rng = np.random.default_rng(seed)

    def nudge(a):
        away = np.where(rng.random(a.shape) < 0.5, -np.inf, np.inf).astype(a.dtype)
        return np.nextafter(a, away)

    def g(z, *rest):
        out = f(nudge(z), *rest)
        return tuple(nudge(o) for o in out) if isinstance(out, tuple) else nudge(out)

    return g


def assert_backends_agree(layer, x, rng, monkeypatch):
    """As test_backends.assert_backends_agree, the reference's conditioning measured with
    its layer norms (input and output, forward and backward) an ulp off too: the kernels
    sum a row in another order, and layer norm multiplies what that changes by 1/std."""
    args = inputs(layer, x, rng)
    ref = run(layer, x, *args, "numpy", monkeypatch)
    got = run(layer, x, *args, "numba", monkeypatch)
    with monkeypatch.context() as m:
        for name in ("sigmoid", "tanh"):
            m.setattr(lv, name, _ulp_off(getattr(functional, name), 7))
        for k, name in enumerate(("layer_norm", "layer_norm_backward")):
            m.setattr(lv, name, _ulp_off_ln(getattr(lv, name), 8 + k))
        ulp = run(layer, x, *args, "numpy", m)
    assert got.keys() == ref.keys()
    for k in ref:
        assert_close(got[k], ref[k], ulp[k], k)


def check(case, size, num_layers, dtype, monkeypatch, scale=1.0, seed=3):
    variant, opts = case
    B, T, D, H = size
    rng = np.random.default_rng(seed)
    layer = perturbed(make("lstm", D, H, num_layers, dtype=dtype, variant=variant, **opts), seed)
    x = (rng.normal(size=(B, T, D)) * scale).astype(dtype)
    assert_backends_agree(layer, x, rng, monkeypatch)


def test_the_sizes_cover_the_packed_product_and_the_chunks():
    from gatescope.nn import kernels_numba

    for dt in (np.float32, np.float64):
        NR = kernels_numba.panel_width(np.dtype(dt))
        for name, (B, _, _, H) in SIZES.items():
            # backward's product has H columns, the forward's G*H (3 or 4 blocks): within
            # one panel (and a partial one) or across several
            assert (H < NR) == name.startswith("narrow"), (name, dt)
            assert (H > NR) == name.startswith("wide"), (name, dt)
            assert (B >= kernels_numba.MR) == name.startswith("wide"), name
    for name, (B, T, _, _) in SIZES.items():
        assert (gs.nn.recurrent.chunk_steps(T, B) > 1) == name.endswith("chunks"), name


@needs_numba
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_kernels_match_the_reference(case, dtype, monkeypatch):
    """Two layers, backward in chunks of several steps, both sides of the size switch."""
    for size in ("narrow-chunks", "wide-chunks"):
        check(case, SIZES[size], 2, dtype, monkeypatch)


@pytest.mark.slow
@needs_numba
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("size", list(SIZES), ids=list(SIZES))
def test_kernels_match_the_reference_everywhere(size, case, num_layers, dtype, monkeypatch):
    check(case, SIZES[size], num_layers, dtype, monkeypatch)


@needs_numba
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    case=st.sampled_from(CASES),
    num_layers=st.integers(1, 2),
    B=st.integers(1, 5),
    T=st.integers(1, 20),
    D=st.integers(1, 4),
    H=st.sampled_from([1, 2, 7, 33, 70]),
    scale=st.sampled_from([1e-3, 1.0, 30.0, 1e3]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_kernels_match_the_reference_anywhere(
    case, num_layers, B, T, D, H, scale, dtype, seed, monkeypatch
):
    """Random shapes (layer norm's row sums with and without a tail of < 8 entries), inputs
    from tiny to saturating (gates exactly 0 and 1)."""
    check(case, (B, T, D, H), num_layers, dtype, monkeypatch, scale=scale, seed=seed)


@needs_numba
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("size", ["narrow-chunks", "wide-chunks"])
def test_kernels_give_the_same_bits_run_to_run(size, variant, monkeypatch):
    B, T, D, H = SIZES[size]
    rng = np.random.default_rng(5)
    x = rng.normal(size=(B, T, D)).astype(np.float32)
    layer = perturbed(make("lstm", D, H, 2, dtype=np.float32, variant=variant))
    args = inputs(layer, x, rng)
    first = run(layer, x, *args, "numba", monkeypatch)
    again = run(layer, x, *args, "numba", monkeypatch)
    for k in first:
        assert first[k].tobytes() == again[k].tobytes(), k


def _spy(monkeypatch):
    """Count the calls into the kernel paths of lstm_variants."""
    calls = []
    for name in ("_forward_kernels", "_backward_kernels"):
        real = getattr(lv, name)

        def spy(*a, _real=real, _name=name, **k):
            calls.append(_name)
            return _real(*a, **k)

        monkeypatch.setattr(lv, name, spy)
    return calls


def _train_once(layer, rng):
    x = rng.normal(size=(3, 6, layer.input_size)).astype(layer.dtype)
    y, _ = layer(x)
    dx = layer.backward(np.ones_like(y))
    return y, dx, {k: g.copy() for k, g in layer.grads.items()}


@pytest.mark.parametrize("variant", ["peephole", "layernorm"])
def test_backend_numpy_runs_the_reference(variant, monkeypatch):
    monkeypatch.setenv("GATESCOPE_BACKEND", "numpy")
    assert backend.variant_kernels(np.float32) is None
    calls = _spy(monkeypatch)
    _train_once(make("lstm", 3, 5, 2, variant=variant), np.random.default_rng(0))
    assert calls == []


@needs_numba
def test_backend_numba_runs_the_kernels(monkeypatch):
    monkeypatch.setenv("GATESCOPE_BACKEND", "numba")
    assert backend.variant_kernels(np.float32) is not None
    calls = _spy(monkeypatch)
    _train_once(make("lstm", 3, 5, 2, variant="cifg"), np.random.default_rng(0))
    assert calls.count("_forward_kernels") == 2 and calls.count("_backward_kernels") >= 2


@needs_numba
@pytest.mark.parametrize("variant", ["cifg", "layernorm"])
def test_edits_run_the_reference(variant, monkeypatch):
    """An edited forward, and its backward, are the NumPy loops on either backend: the
    same bits with GATESCOPE_BACKEND=numba as with numpy."""
    H = 5
    out = {}
    for name in ("numpy", "numba"):
        monkeypatch.setenv("GATESCOPE_BACKEND", name)
        calls = _spy(monkeypatch)
        layer = perturbed(make("lstm", 3, H, 1, variant=variant))
        mul = np.zeros((1, H))
        add = np.full((1, H), 0.5)
        plan = EditPlan({(2, "c"): (mul, add), (4, "f"): (None, add)})
        with layer.edited([plan]):
            out[name] = _train_once(layer, np.random.default_rng(1))
        assert calls == [], name
    (y0, dx0, g0), (y1, dx1, g1) = out["numpy"], out["numba"]
    assert y0.tobytes() == y1.tobytes() and dx0.tobytes() == dx1.tobytes()
    assert all(g0[k].tobytes() == g1[k].tobytes() for k in g0)
