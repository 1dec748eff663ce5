"""The readable per-step cells and the fast sequence drivers compute the same numbers."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make

import gatescope as gs


def run_cell(arch, layer, opts, x, h0, c0, dy, dhT, dcT):
    """Forward and backward one step at a time with the layer's own parameters."""
    p = layer.layer_params(0)
    B, T, _ = x.shape
    if arch == "lstm":
        cell = gs.LSTMCell(1, 1)
    elif arch == "gru":
        cell = gs.GRUCell(1, 1, reset_after=opts.get("reset_after", False))
    else:
        cell = gs.RNNCell(1, 1, nonlinearity=opts.get("nonlinearity", "tanh"))
    cell.params = p
    cell.grads = {k: np.zeros_like(v) for k, v in p.items()}
    h, c, caches, ys = h0, c0, [], []
    for t in range(T):
        if arch == "lstm":
            h, c, cache = cell.forward(x[:, t], h, c)
        else:
            h, cache = cell.forward(x[:, t], h)
        caches.append(cache)
        ys.append(h)
    dxs = [None] * T
    dh, dc = dhT, dcT
    for t in reversed(range(T)):
        if arch == "lstm":
            dxs[t], dh, dc = cell.backward(dh + dy[:, t], dc, caches[t])
        else:
            dxs[t], dh = cell.backward(dh + dy[:, t], caches[t])
    return np.stack(ys, 1), h, c, np.stack(dxs, 1), dh, dc, cell.grads


def test_cell_loop_equals_sequence_driver(config):
    arch, opts = config
    rng = np.random.default_rng(0)
    B, T, D, H = 3, 6, 4, 5
    layer = make(arch, D, H, **opts)
    x = rng.normal(size=(B, T, D))
    h0, c0 = rng.normal(size=(B, H)), rng.normal(size=(B, H))
    dy = rng.normal(size=(B, T, H))
    dhT, dcT = rng.normal(size=(B, H)), rng.normal(size=(B, H))
    if arch == "lstm":
        y, (hT, cT) = layer(x, (h0, c0))
        dx = layer.backward(dy, (dhT, dcT))
        dh0, dc0 = layer.dstate0
    else:
        y, hT = layer(x, h0)
        dx = layer.backward(dy, dhT)
        dh0 = layer.dstate0
    ys, hc, cc, dxs, dhc, dcc, grads = run_cell(arch, layer, opts, x, h0, c0, dy, dhT, dcT)
    np.testing.assert_allclose(y, ys, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(hT, hc, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dx, dxs, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(dh0, dhc, rtol=1e-11, atol=1e-12)
    if arch == "lstm":
        np.testing.assert_allclose(cT, cc, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(dc0, dcc, rtol=1e-11, atol=1e-12)
    for name, g in grads.items():
        np.testing.assert_allclose(layer.grads[f"{name}_l0"], g, rtol=1e-11, atol=1e-12)


def test_trace_holds_every_step():
    rng = np.random.default_rng(1)
    lstm = gs.LSTM(3, 4, seed=0)
    x = rng.normal(size=(2, 5, 3))
    y, (h, c) = lstm(x)
    tr = lstm.trace
    assert set(tr) == {"i", "f", "g", "o", "c", "h"}
    np.testing.assert_array_equal(tr["h"], y)
    np.testing.assert_array_equal(tr["c"][:, -1], c)
    # the trace's gates reproduce the states: c_t = f c_{t-1} + i g, h_t = o tanh(c_t)
    c_prev = np.concatenate([np.zeros((2, 1, 4)), tr["c"][:, :-1]], axis=1)
    np.testing.assert_allclose(tr["c"], tr["f"] * c_prev + tr["i"] * tr["g"], rtol=1e-14)
    np.testing.assert_allclose(tr["h"], tr["o"] * np.tanh(tr["c"]), rtol=1e-14)
    gru = gs.GRU(3, 4)
    y, _ = gru(x)
    assert set(gru.trace) == {"r", "z", "n", "h"}
    np.testing.assert_array_equal(gru.trace["h"], y)
    rnn = gs.RNN(3, 4, num_layers=2)
    y, h = rnn(x)
    assert rnn.trace["h"].shape == (2, 2, 5, 4)  # (L, B, T, H)
    np.testing.assert_array_equal(rnn.trace["h"][-1], y)


def test_parameter_counts_are_the_chapters():
    assert gs.RNN(4, 32).num_params() == 1184
    assert gs.GRU(4, 32).num_params() == 3552
    assert gs.LSTM(4, 32).num_params() == 4736


def test_initialisation_is_the_chapters():
    lstm = gs.LSTM(4, 32, seed=7)
    b = lstm.params["bias_l0"]
    np.testing.assert_array_equal(b[32:64], 1.0)  # forget gate
    np.testing.assert_array_equal(np.delete(b, np.s_[32:64]), 0.0)
    w = np.concatenate([lstm.params["weight_ih_l0"], lstm.params["weight_hh_l0"]], axis=1)
    assert w.shape == (128, 36)
    assert w.std() == pytest.approx(1 / 6, rel=0.05)  # N(0, 1/(D+H)), D+H = 36
    np.testing.assert_array_equal(
        gs.LSTM(4, 32, seed=7).params["weight_hh_l0"], lstm.params["weight_hh_l0"]
    )
    assert not np.array_equal(
        gs.LSTM(4, 32, seed=8).params["weight_hh_l0"], lstm.params["weight_hh_l0"]
    )
    assert gs.LSTM(4, 32, forget_bias=0.5).params["bias_l0"][40] == 0.5


def test_float32_runs_in_float32_and_agrees_with_float64():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 6, 3))
    for cls in (gs.LSTM, gs.GRU, gs.RNN):
        l32, l64 = cls(3, 4, dtype=np.float32), cls(3, 4, dtype=np.float64)
        y32, _ = l32(x)
        y64, _ = l64(x)
        assert y32.dtype == np.float32
        dx32 = l32.backward(np.ones_like(y32))
        assert dx32.dtype == np.float32
        assert all(g.dtype == np.float32 for g in l32.grads.values())
        np.testing.assert_allclose(y32, y64, atol=1e-5)
        np.testing.assert_allclose(dx32, l64.backward(np.ones_like(y64)), atol=1e-4)


def test_batch_first_false_is_the_transpose():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 6, 3))
    a, b = gs.GRU(3, 4, 2, seed=1), gs.GRU(3, 4, 2, seed=1, batch_first=False)
    ya, ha = a(x)
    yb, hb = b(x.transpose(1, 0, 2))
    np.testing.assert_array_equal(ya, yb.transpose(1, 0, 2))
    np.testing.assert_array_equal(ha, hb)
