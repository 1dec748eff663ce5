"""Properties over random shapes (hypothesis): B, T, D, H from 1 upward, T = 1 included."""

from __future__ import annotations

import numpy as np
from conftest import CONFIGS, flat, make
from hypothesis import given, settings
from hypothesis import strategies as st

import gatescope as gs

shapes = st.tuples(
    st.integers(1, 4), st.integers(1, 6), st.integers(1, 5), st.integers(1, 5), st.integers(1, 2)
)


@settings(max_examples=40, deadline=None)
@given(shapes=shapes, which=st.sampled_from(CONFIGS), seed=st.integers(0, 2**16))
def test_shapes_and_linearity_of_backward(shapes, which, seed):
    """Output and gradient shapes follow the input; backward is linear in (dy, dstate)."""
    B, T, D, H, L = shapes
    arch, opts = which
    rng = np.random.default_rng(seed)
    layer = make(arch, D, H, L, seed=seed, **opts)
    x = rng.normal(size=(B, T, D))
    y, state = layer(x)
    assert y.shape == (B, T, H)
    for s in flat(state):
        assert s.shape == ((B, H) if L == 1 else (L, B, H))
    np.testing.assert_array_equal(
        flat(state)[0][..., :, :] if L == 1 else flat(state)[0][-1], y[:, -1]
    )
    dy1, dy2 = rng.normal(size=y.shape), rng.normal(size=y.shape)
    dx1 = layer.backward(dy1)
    g1 = {k: v.copy() for k, v in layer.grads.items()}
    dx2 = layer.backward(dy2)
    g2 = {k: v.copy() for k, v in layer.grads.items()}
    dx12 = layer.backward(dy1 + 2 * dy2)
    assert dx12.shape == x.shape
    np.testing.assert_allclose(dx12, dx1 + 2 * dx2, rtol=1e-9, atol=1e-12)
    for k, v in layer.grads.items():
        assert v.shape == layer.params[k].shape
        np.testing.assert_allclose(v, g1[k] + 2 * g2[k], rtol=1e-9, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(shapes=shapes, which=st.sampled_from(CONFIGS), split=st.integers(1, 5))
def test_running_in_two_chunks_carrying_state_equals_one_run(shapes, which, split):
    """Forward is a fold over time: feeding the final state back in continues exactly."""
    B, T, D, H, L = shapes
    arch, opts = which
    rng = np.random.default_rng(split)
    layer = make(arch, D, H, L, **opts)
    x = rng.normal(size=(B, T + split, D))
    y, state = layer(x)
    y1, s1 = layer(x[:, :split])
    y2, s2 = layer(x[:, split:], s1)
    np.testing.assert_allclose(np.concatenate([y1, y2], axis=1), y, rtol=1e-13, atol=1e-14)
    for a, b in zip(flat(s2), flat(state)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)


@settings(max_examples=30, deadline=None)
@given(B=st.integers(1, 5), seed=st.integers(0, 1000))
def test_batch_elements_are_independent(B, seed):
    rng = np.random.default_rng(seed)
    layer = gs.LSTM(3, 4, seed=seed)
    x = rng.normal(size=(B, 5, 3))
    y, _ = layer(x)
    y0, _ = layer(x[:1])
    np.testing.assert_allclose(y[:1], y0, rtol=1e-13, atol=1e-15)


@settings(max_examples=30, deadline=None)
@given(z=st.floats(-1e4, 1e4), C=st.integers(1, 6))
def test_stable_functions_stay_finite(z, C):
    s = gs.nn.sigmoid(np.array([z, -z]))
    assert np.all(np.isfinite(s)) and np.all((s >= 0) & (s <= 1))
    assert abs(s.sum() - 1) < 1e-12  # sigma(z) + sigma(-z) = 1
    logp = gs.nn.log_softmax(np.full(C, z) + np.arange(C))
    assert np.all(np.isfinite(logp)) and abs(np.exp(logp).sum() - 1) < 1e-12
