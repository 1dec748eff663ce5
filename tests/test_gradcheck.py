"""Central-difference gradient checks in float64 for every parameter, the input and the
initial state, for every layer and option, single and stacked, relative error < 1e-6."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_gradients_match, central_difference, make, random_state, rel_error

import gatescope as gs

TOL = 1e-6


@pytest.mark.parametrize("num_layers", [1, 2])
def test_recurrent_gradients(config, num_layers):
    arch, opts = config
    rng = np.random.default_rng(1)
    B, T, D, H = 2, 4, 3, 4
    layer = make(arch, D, H, num_layers, seed=2, **opts)
    for p in layer.params.values():  # move biases off their special initial values
        p += rng.normal(scale=0.1, size=p.shape)
    assert_gradients_match(layer, rng, B, T, TOL)


def test_backward_with_only_final_state_gradient(config):
    """dy=None (a loss on the final state alone) equals dy = 0."""
    arch, opts = config
    rng = np.random.default_rng(3)
    layer = make(arch, 3, 4, **opts)
    x = rng.normal(size=(2, 5, 3))
    layer(x)
    dstate = random_state(layer, 2, rng)
    dx_none = layer.backward(None, dstate)
    g_none = {k: v.copy() for k, v in layer.grads.items()}
    dx_zero = layer.backward(np.zeros((2, 5, 4)), dstate)
    np.testing.assert_array_equal(dx_none, dx_zero)
    for k, v in layer.grads.items():
        np.testing.assert_array_equal(g_none[k], v)


def test_linear_gradients():
    rng = np.random.default_rng(4)
    head = gs.Linear(5, 3, seed=0)
    head.params["bias"] += rng.normal(size=3)
    x = rng.normal(size=(2, 4, 5))
    dy = rng.normal(size=(2, 4, 3))

    def loss() -> float:
        return float((head(x) * dy).sum())

    loss()
    dx = head.backward(dy)
    for name, p in head.params.items():
        assert rel_error(central_difference(loss, p), head.grads[name]) < TOL
    assert rel_error(central_difference(loss, x), dx) < TOL


def test_cross_entropy_gradient_with_mask():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(3, 4, 6))
    targets = rng.integers(0, 6, size=(3, 4))
    mask = rng.random((3, 4)) < 0.6
    mask[0, 0] = True
    loss, grad = gs.cross_entropy(logits, targets, mask)
    num = central_difference(lambda: gs.cross_entropy(logits, targets, mask)[0], logits)
    assert rel_error(num, grad) < TOL
    # the value itself, by hand
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.mean([logp[b, t, targets[b, t]] for b, t in zip(*np.nonzero(mask))])
    assert loss == pytest.approx(expected, rel=1e-12)


def test_mse_gradient():
    rng = np.random.default_rng(6)
    pred, target = rng.normal(size=(5, 1)), rng.normal(size=(5, 1))
    loss, grad = gs.mse(pred, target)
    assert loss == pytest.approx(float(np.mean((pred - target) ** 2)), rel=1e-14)
    num = central_difference(lambda: gs.mse(pred, target)[0], pred)
    assert rel_error(num, grad) < TOL
