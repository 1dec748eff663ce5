"""Stable numerics at |pre-activation| = 1000, and clear errors for bad calls."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import CLASSES

import gatescope as gs


@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_pre_activations_give_no_warning_and_no_nan(arch, dtype):
    layer = CLASSES[arch](2, 3, dtype=dtype)
    for p in layer.params.values():
        p[...] = 1000.0 * np.sign(np.random.default_rng(0).normal(size=p.shape))
    x = np.array([[[1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]]], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, _ = layer(x)
        dx = layer.backward(np.ones_like(y))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    assert all(np.all(np.isfinite(g)) for g in layer.grads.values())


def test_sigmoid_and_log_softmax_at_1000():
    z = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = gs.nn.sigmoid(z)
        logp = gs.nn.log_softmax(np.array([[1000.0, 0.0, -1000.0]]))
        loss, grad = gs.cross_entropy(np.array([[1000.0, -1000.0]]), np.array([1]))
    # the small tail keeps its digits: sigma(-50) to the last bit or so, not 0
    np.testing.assert_allclose(s, [0.0, 1.9287498479639178e-22, 0.5, 1.0, 1.0], rtol=1e-15, atol=0)
    np.testing.assert_allclose(logp, [[0.0, -1000.0, -2000.0]])
    assert loss == pytest.approx(2000.0)
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize(
    "x,match",
    [
        (np.zeros((4, 3)), r"x must have shape \(\?, \?, 3\) = \(batch, time, D=3\), got \(4, 3\)"),
        (np.zeros((2, 4, 5)), r"got \(2, 4, 5\)"),
        (np.zeros((2, 4, 3), dtype=int), "floating-point.*int"),
        (np.zeros((2, 4, 3), dtype=complex), "floating-point.*complex"),
        (np.zeros((2, 0, 3)), "at least one"),
        (np.full((1, 2, 3), np.nan), "NaN or Inf"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_problem(x, match):
    with pytest.raises(ValueError, match=match):
        gs.LSTM(3, 4)(x)


def test_bad_states_and_gradients():
    lstm = gs.LSTM(3, 4)
    x = np.zeros((2, 5, 3))
    with pytest.raises(ValueError, match=r"state0 h must have shape \(2, 4\)"):
        lstm(x, (np.zeros((3, 4)), np.zeros((2, 4))))
    with pytest.raises(ValueError, match=r"tuple \(h, c\)"):
        lstm(x, np.zeros((2, 4)))
    with pytest.raises(RuntimeError, match="before forward"):
        gs.GRU(3, 4).backward(np.zeros((2, 5, 4)))
    lstm(x)
    with pytest.raises(ValueError, match=r"dy must have shape \(2, 5, 4\)"):
        lstm.backward(np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match="dy contains NaN"):
        lstm.backward(np.full((2, 5, 4), np.inf))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"input_size": 0, "hidden_size": 4}, "input_size must be a positive integer"),
        ({"input_size": 3, "hidden_size": -1}, "hidden_size"),
        ({"input_size": 3, "hidden_size": 4, "num_layers": 0}, "num_layers"),
        (
            {"input_size": 3, "hidden_size": 4, "dtype": np.int32},
            "dtype must be float32 or float64",
        ),
        ({"input_size": 3, "hidden_size": 4, "seed": 1.5}, "seed"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gs.LSTM(**kwargs)
    with pytest.raises(ValueError, match="nonlinearity"):
        gs.RNN(3, 4, nonlinearity="sigmoid")


def test_sigmoid_is_accurate_in_relative_terms_and_in_place():
    z = np.linspace(-700, 700, 2801)
    exact = np.where(
        z >= 0, 1 / (1 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1 + np.exp(-np.abs(z)))
    )
    np.testing.assert_allclose(gs.nn.sigmoid(z), exact, rtol=4e-16, atol=0)
    inside = np.abs(z) <= 80  # float32 represents sigma(z) without underflow here
    buf = z[inside].astype(np.float32)
    out = gs.nn.sigmoid(buf, out=buf)
    assert out is buf and out.dtype == np.float32
    np.testing.assert_allclose(out, exact[inside], rtol=3e-7, atol=0)


def test_sigmoid_and_tanh_take_scalars_lists_and_other_number_types():
    assert gs.nn.sigmoid(np.array(0.0)) == 0.5 and gs.nn.sigmoid(0) == 0.5
    assert gs.nn.tanh(np.float32(0.5)).dtype == np.float32
    np.testing.assert_allclose(gs.nn.tanh([1, -2]), np.tanh([1.0, -2.0]), rtol=1e-15)
    assert gs.nn.sigmoid(np.ones(3, np.float16)).dtype == np.float32
