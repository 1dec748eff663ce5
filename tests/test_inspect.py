"""The numbers behind every figure: gates from the trace, per-step gradients checked three
ways (PyTorch autograd, a second backward route, finite differences), the forget-gate
product, saturation on a constructed case, parameter counts, and the influence of earlier
inputs against full-length backward passes and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CONFIGS, config_id, make

import gatescope as gs
from gatescope import inspect as gi
from gatescope.inspect.gradflow import _clone
from gatescope.model import SequenceModel
from gatescope.tasks import get_task


def _random_dstate(layer, B, rng):
    zero = layer.zero_state(B)
    if isinstance(zero, tuple):
        return tuple(rng.normal(size=z.shape) for z in zero)
    return rng.normal(size=zero.shape)


def _parts(state):
    return list(state) if isinstance(state, tuple) else [state]


# --------------------------------------------------------------------------------------------
# per-step gradients


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_state_gradients_two_routes_and_full_backward(config, num_layers):
    arch, opts = config
    rng = np.random.default_rng(3)
    layer = make(arch, 3, 4, num_layers, seed=1, **opts)
    B, T = 3, 6
    x = rng.normal(size=(B, T, 3))
    dy = rng.normal(size=(B, T, 4))
    dstate = _random_dstate(layer, B, rng)
    state0 = _random_dstate(layer, B, rng)
    G = gi.state_gradients(layer, x, dy, dstate, state0)
    S = gi.suffix_gradients(layer, x, dy, dstate, state0)
    layer(x, state0)
    layer.backward(dy, dstate)
    for name, ref0, dT in zip(layer.state_names, _parts(layer.dstate0), _parts(dstate)):
        shape = (B, T + 1, 4) if num_layers == 1 else (num_layers, B, T + 1, 4)
        assert G[name].shape == shape
        np.testing.assert_allclose(G[name], S[name], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(G[name][..., 0, :], ref0, rtol=1e-12, atol=1e-14)
        # at the loss end: the given dstate, plus dL/dy_T on the top layer's h
        want_T = np.array(dT)
        if name == "h":
            if num_layers == 1:
                want_T = want_T + dy[:, -1]
            else:
                want_T[-1] += dy[:, -1]
        np.testing.assert_allclose(G[name][..., T, :], want_T, rtol=1e-13)


def test_state_gradients_leave_the_layer_alone():
    rng = np.random.default_rng(0)
    lstm = gs.LSTM(3, 4, seed=0)
    x = rng.normal(size=(2, 5, 3))
    lstm(x)
    before = {k: v.copy() for k, v in lstm.trace.items()}
    gi.state_gradients(lstm, rng.normal(size=(2, 9, 3)), rng.normal(size=(2, 9, 4)))
    for k, v in lstm.trace.items():
        np.testing.assert_array_equal(v, before[k])


@pytest.mark.torch
@pytest.mark.parametrize(
    "arch, opts",
    [("lstm", {}), ("gru", {"reset_after": True}), ("rnn", {}), ("rnn", {"nonlinearity": "relu"})],
)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_state_gradients_equal_torch_autograd(arch, opts, num_layers):
    """An independent computation: PyTorch's autograd, one step at a time, retain_grad."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    layer = make(arch, 3, 5, num_layers, seed=2, **opts)
    B, T = 4, 8
    x = rng.normal(size=(B, T, 3))
    dy = rng.normal(size=(B, T, 5))
    G = gi.state_gradients(layer, x, dy)

    module = gs.to_torch(layer)
    xt = torch.from_numpy(x)
    state = tuple(
        torch.zeros(num_layers, B, 5, dtype=torch.float64, requires_grad=True)
        for _ in layer.state_names
    )
    states = [state]
    loss = 0.0
    for t in range(T):
        y, s = module(xt[:, t : t + 1], state if arch == "lstm" else state[0])
        s = s if isinstance(s, tuple) else (s,)
        # h_t as one tensor that both the loss and the next step read (torch's y and h_n
        # are separate tensors: the total dL/dh_t is the gradient of this one)
        h = torch.cat([s[0][:-1], y.transpose(0, 1)])
        s = (h, *s[1:])
        for a in s:
            a.retain_grad()
        states.append(s)
        loss = loss + (h[-1] * torch.from_numpy(dy[:, t])).sum()
        state = s
    loss.backward()
    for i, name in enumerate(layer.state_names):
        for t in range(T + 1):
            g = states[t][i].grad
            want = np.zeros((num_layers, B, 5)) if g is None else g.numpy()
            got = G[name][..., t, :] if num_layers > 1 else G[name][None, :, t, :]
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_state_gradients_equal_finite_differences():
    rng = np.random.default_rng(5)
    lstm = gs.LSTM(2, 3, seed=4)
    B, T = 2, 5
    x = rng.normal(size=(B, T, 2))
    w = rng.normal(size=(B, 3))  # L = sum(w * h_T)
    dy = np.zeros((B, T, 3))
    dy[:, -1] = w
    G = gi.state_gradients(lstm, x, dy)
    lstm(x)
    hs = np.concatenate([np.zeros((B, 1, 3)), lstm.trace["h"]], axis=1)
    cs = np.concatenate([np.zeros((B, 1, 3)), lstm.trace["c"]], axis=1)
    eps = 1e-6
    for k in (0, 2, 4):
        for which in ("h", "c"):
            fd = np.zeros((B, 3))
            for j in range(3):
                e = np.zeros((B, 3))
                e[:, j] = eps
                vals = []
                for sign in (1, -1):
                    h0, c0 = hs[:, k].copy(), cs[:, k].copy()
                    if which == "h":
                        h0 += sign * e
                    else:
                        c0 += sign * e
                    y, _ = lstm(x[:, k:], (h0, c0))
                    vals.append((w * y[:, -1]).sum(axis=1))
                fd[:, j] = (vals[0] - vals[1]) / (2 * eps)
            np.testing.assert_allclose(G[which][:, k], fd, rtol=1e-6, atol=1e-9)


def test_time_major_layers_give_batch_first_gradients():
    rng = np.random.default_rng(1)
    a = gs.GRU(3, 4, seed=0)
    b = gs.GRU(3, 4, seed=0, batch_first=False)
    x = rng.normal(size=(2, 6, 3))
    dy = rng.normal(size=(2, 6, 4))
    ga = gi.state_gradients(a, x, dy)
    gb = gi.state_gradients(b, x.transpose(1, 0, 2), dy.transpose(1, 0, 2))
    np.testing.assert_allclose(ga["h"], gb["h"], rtol=1e-13)


def test_gradient_flow_is_the_mean_norm_against_steps_back():
    rng = np.random.default_rng(2)
    lstm = gs.LSTM(3, 4, seed=0)
    x = rng.normal(size=(5, 7, 3))
    dy = rng.normal(size=(5, 7, 4))
    G = gi.state_gradients(lstm, x, dy)
    fl = gi.gradient_flow(lstm, x, dy, loss=1.5)
    np.testing.assert_array_equal(fl.steps_back, np.arange(8))
    for k in range(8):
        t = 7 - k
        assert fl.h[k] == pytest.approx(np.linalg.norm(G["h"][:, t], axis=1).mean(), rel=1e-14)
        assert fl.c[k] == pytest.approx(np.linalg.norm(G["c"][:, t], axis=1).mean(), rel=1e-14)
    d = fl.to_dict()
    assert d["arch"] == "lstm" and d["loss"] == 1.5 and len(d["h"]) == len(d["c"]) == 8
    assert gi.gradient_flow(gs.RNN(3, 4), x, dy).c is None


@pytest.mark.parametrize("kind_task", [("recall", {}), ("copy", {})])
def test_model_gradients_are_what_model_backward_uses(kind_task):
    name, opts = kind_task
    task = get_task(name, 6 if name == "recall" else 4, **opts)
    model = SequenceModel.for_task(task, "lstm", 5, seed=0)
    batch = task.make_batch(4, np.random.default_rng(0))
    loss, dy = gi.output_gradient(model, batch)
    out = model.forward(batch.x)
    loss2, dout = model.loss(out, batch)
    dx = model.backward(dout)
    assert loss == pytest.approx(loss2)
    h0, c0 = model.recurrent.dstate0
    G = gi.model_state_gradients(model, batch)
    np.testing.assert_allclose(G["h"][:, 0], h0, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(G["c"][:, 0], c0, rtol=1e-12, atol=1e-15)
    model.recurrent(batch.x)
    np.testing.assert_allclose(model.recurrent.backward(dy), dx, rtol=1e-12, atol=1e-15)
    fl = gi.model_gradient_flow(model, batch)
    assert fl.loss == pytest.approx(loss)
    if task.kind == "classify_last":
        assert np.all(dy[:, :-1] == 0)


# --------------------------------------------------------------------------------------------
# the cell-state path


def test_forget_gate_product_on_a_constructed_case():
    f = np.array([[[0.5, 1.0], [0.2, 0.9], [0.1, 0.8]]])  # (B=1, T=3, H=2)
    P = gi.forget_gate_product(f)
    want = np.array(
        [[[0.5 * 0.2 * 0.1, 1 * 0.9 * 0.8], [0.2 * 0.1, 0.9 * 0.8], [0.1, 0.8], [1, 1]]]
    )
    np.testing.assert_allclose(P, want, rtol=1e-15)


def test_cell_path_backward_equals_forget_gate_product():
    rng = np.random.default_rng(0)
    lstm = gs.LSTM(3, 6, seed=1)
    x = rng.normal(size=(2, 20, 3))
    cut = gi.cell_state_jacobian(lstm, x, cut_h=True)
    lstm(x)
    P = gi.forget_gate_product(lstm.trace["f"])
    assert cut.shape == P.shape == (2, 21, 6)
    np.testing.assert_allclose(cut, P, rtol=1e-13)


def test_full_cell_jacobian_equals_finite_differences():
    rng = np.random.default_rng(1)
    lstm = gs.LSTM(3, 4, seed=2)
    x = rng.normal(size=(2, 8, 3))
    full = gi.cell_state_jacobian(lstm, x)
    for k in (0, 3, 7, 8):
        fd = gi.finite_difference_cell_jacobian(lstm, x, k)
        np.testing.assert_allclose(full[:, k], fd, rtol=1e-6, atol=1e-9)


def test_without_recurrent_weights_the_full_jacobian_is_the_product():
    """With W_hh = 0, h feeds nothing back: the finite difference of the full network
    must give the chapter's product of forget gates."""
    rng = np.random.default_rng(4)
    lstm = gs.LSTM(3, 4, seed=3)
    lstm.params["weight_hh_l0"][...] = 0
    x = rng.normal(size=(2, 10, 3))
    lstm(x)
    P = gi.forget_gate_product(lstm.trace["f"])
    for k in (0, 4, 9):
        fd = gi.finite_difference_cell_jacobian(lstm, x, k)
        np.testing.assert_allclose(fd, P[:, k], rtol=1e-7, atol=1e-12)


def test_cell_state_jacobian_refuses_other_layers():
    x = np.zeros((1, 3, 2))
    with pytest.raises(ValueError, match="LSTM"):
        gi.cell_state_jacobian(gs.GRU(2, 3), x)
    with pytest.raises(ValueError, match="num_layers=1"):
        gi.cell_state_jacobian(gs.LSTM(2, 3, 2), x)


# --------------------------------------------------------------------------------------------
# gates, traces, saturation, parameter counts


@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn"])
def test_gate_activations_are_the_trace(arch):
    rng = np.random.default_rng(0)
    layer = make(arch, 3, 5)
    x = rng.normal(size=(4, 9, 3))
    acts = gi.gate_activations(layer, x, index=2)
    assert set(acts) == set(layer.trace_names)
    for name, a in acts.items():
        assert a.shape == (5, 9)
        np.testing.assert_array_equal(a, layer.trace[name][2].T)
    one = gi.gate_activations(layer, x[1])  # a single (T, D) sequence
    layer(x)
    for name, a in one.items():
        np.testing.assert_allclose(a, layer.trace[name][1].T, rtol=1e-12, atol=1e-15)


def test_gate_traces_are_means_and_norms():
    rng = np.random.default_rng(0)
    lstm = gs.LSTM(3, 5)
    x = rng.normal(size=(4, 9, 3))
    tr = gi.gate_traces(lstm, x)
    assert set(tr) == {"f", "i", "o", "c_norm", "h_norm"}
    np.testing.assert_allclose(tr["f"], lstm.trace["f"].mean(axis=(0, 2)))
    np.testing.assert_allclose(tr["c_norm"], np.linalg.norm(lstm.trace["c"], axis=2).mean(0))
    assert set(gi.gate_traces(gs.GRU(3, 5), x)) == {"z", "r", "h_norm"}


def test_saturation_on_a_constructed_trace():
    # unit 0: always 0.05 (closed); unit 1: always 0.95 (open); unit 2: 0.5;
    # unit 3: half the steps 0.0, a quarter 1.0, a quarter 0.5
    B, T = 2, 8
    f = np.empty((B, T, 4))
    f[..., 0], f[..., 1], f[..., 2] = 0.05, 0.95, 0.5
    f[:, :4, 3], f[:, 4:6, 3], f[:, 6:, 3] = 0.0, 1.0, 0.5
    sat = gi.saturation({"f": f})
    np.testing.assert_array_equal(sat["f"]["left"], [1, 0, 0, 0.5])
    np.testing.assert_array_equal(sat["f"]["right"], [0, 1, 0, 0.25])
    # thresholds are strict: exactly 0.1 and 0.9 are not saturated
    edge = np.full((1, 2, 1), 0.1)
    edge[0, 1, 0] = 0.9
    s = gi.saturation({"i": edge})
    assert s["i"]["left"][0] == 0 and s["i"]["right"][0] == 0
    with pytest.raises(ValueError, match="low < high"):
        gi.saturation({"f": f}, low=0.9, high=0.1)


def test_saturation_of_a_layer_reads_its_gates():
    rng = np.random.default_rng(0)
    lstm = gs.LSTM(3, 5)
    x = rng.normal(size=(4, 9, 3)) * 10
    sat = gi.saturation(lstm, x)
    assert list(sat) == ["f", "i", "o"]
    np.testing.assert_array_equal(sat["o"]["right"], (lstm.trace["o"] > 0.9).mean(axis=(0, 1)))
    assert list(gi.saturation(gs.GRU(3, 5), x)) == ["z", "r"]
    assert gi.saturation(gs.RNN(3, 5), x) == {}


def test_parameter_counts_match_the_chapter():
    counts = gi.parameter_counts(4, 32)
    assert counts == {"rnn": 1184, "gru": 3552, "lstm": 4736}
    for arch, n in counts.items():
        assert gi.chapter_formula(arch, 4, 32) == n
    assert gi.parameter_counts(8, 64)["lstm"] == gi.chapter_formula("lstm", 8, 64)
    assert gi.parameter_counts(4, 32, reset_after=True)["gru"] == 3552 + 32
    assert gi.parameter_counts(4, 32, 2)["lstm"] == 4736 + 4 * 32 * 65


# --------------------------------------------------------------------------------------------
# input influence


def full_influence(layer, x, b, t, g, head_rows=None):
    """||d s / d x_t'|| for all t' <= t from ONE full-length backward per output row."""
    layer = _clone(layer)
    B, T, _ = x.shape
    rows = [g] if head_rows is None else head_rows
    total = np.zeros(t + 1)
    for row in rows:
        layer(x)
        dy = np.zeros((B, T, layer.hidden_size))
        dy[b, t] = row
        dx = layer.backward(dy)  # (B, T, D)
        total += (dx[b, : t + 1] ** 2).sum(-1)
    return np.sqrt(total)


@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_influence_with_a_head_equals_the_full_backward_pass(arch, num_layers):
    rng = np.random.default_rng(0)
    B, T, D, H, C = 3, 40, 4, 7, 5
    layer = {"lstm": gs.LSTM, "gru": gs.GRU, "rnn": gs.RNN}[arch](D, H, num_layers, seed=2)
    head = gs.Linear(H, C, seed=3)
    x = rng.normal(size=(B, T, D))
    positions = [(0, 39), (2, 25), (1, 3), (1, 0)]  # windows both truncated and not
    window = 12
    got = gi.input_influence(layer, x, positions, window=window, head=head)
    y, _ = layer(x)
    top = y if num_layers == 1 else y
    for (b, t), g in zip(positions, got):
        k = int(np.argmax(top[b, t] @ head.params["weight"].T + head.params["bias"]))
        ref = full_influence(layer, x, b, t, head.params["weight"][k])
        n = min(window, t + 1)
        assert g.shape == (n,)
        np.testing.assert_allclose(g, ref[t + 1 - n :], rtol=1e-9, atol=1e-14)


def test_influence_without_a_head_is_the_jacobian_frobenius_norm():
    rng = np.random.default_rng(1)
    B, T, D, H = 2, 30, 3, 5
    layer = gs.LSTM(D, H, 2, seed=4)
    x = rng.normal(size=(B, T, D))
    positions = [(1, 29), (0, 6)]
    got = gi.input_influence(layer, x, positions, window=10)
    for (b, t), g in zip(positions, got):
        ref = full_influence(layer, x, b, t, None, head_rows=list(np.eye(H)))
        np.testing.assert_allclose(g, ref[t + 1 - len(g) :], rtol=1e-9, atol=1e-14)


def test_influence_agrees_with_finite_differences():
    rng = np.random.default_rng(2)
    D, H, C, T = 3, 4, 3, 9
    layer = gs.GRU(D, H, seed=5)
    head = gs.Linear(H, C, seed=6)
    x = rng.normal(size=(1, T, D))
    p = T - 1
    y, _ = layer(x)
    k = int(np.argmax(y[0, p] @ head.params["weight"].T + head.params["bias"]))

    def logit(xx):
        yy, _ = layer(xx)
        return (yy[0, p] @ head.params["weight"].T + head.params["bias"])[k]

    eps = 1e-6
    fd = np.zeros((T, D))
    for t in range(T):
        for d in range(D):
            xp, xm = x.copy(), x.copy()
            xp[0, t, d] += eps
            xm[0, t, d] -= eps
            fd[t, d] = (logit(xp) - logit(xm)) / (2 * eps)
    (got,) = gi.input_influence(layer, x, [(0, p)], window=T, head=head, classes=[k])
    np.testing.assert_allclose(got, np.linalg.norm(fd, axis=1), rtol=1e-6, atol=1e-9)


def test_influence_rejects_bad_arguments():
    layer = gs.RNN(2, 3, seed=0)
    x = np.zeros((1, 5, 2))
    with pytest.raises(ValueError, match="positions"):
        gi.input_influence(layer, x, [(0, 5)])
    with pytest.raises(ValueError, match="window"):
        gi.input_influence(layer, x, [(0, 1)], window=0)
    with pytest.raises(ValueError, match="LSTM, GRU or RNN"):
        gi.input_influence("not a layer", x, [(0, 1)])


def test_predicted_classes_include_the_bias():
    head = gs.Linear(2, 3, seed=0)
    head.params["weight"][...] = [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]
    head.params["bias"][...] = [0.0, 0.0, 5.0]  # class 2 wins on the bias alone
    h = np.array([[1.0, 0.5], [9.0, 0.0]])  # (P, H)
    np.testing.assert_array_equal(gi.predicted_classes(h, head), [2, 0])
    assert gi.predicted_classes(h, gs.Linear(2, 1, seed=0)).tolist() == [0, 0]


def test_head_probabilities_are_the_softmax_and_top_classes_sort_them():
    rng = np.random.default_rng(4)
    head = gs.Linear(3, 5, seed=1)
    h = rng.normal(size=(6, 3))  # (n, H)
    p = gi.head_probabilities(h, head)
    z = h @ head.params["weight"].T + head.params["bias"]
    want = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(p, want / want.sum(1, keepdims=True), rtol=1e-12)
    idx, top = gi.top_classes(p, 3)
    np.testing.assert_array_equal(idx, np.argsort(-p, axis=1)[:, :3])
    np.testing.assert_array_equal(top, np.sort(p, axis=1)[:, ::-1][:, :3])
    idx, _ = gi.top_classes(np.array([[0.25, 0.5, 0.25]]), 9)  # ties: the lower class first
    assert idx.tolist() == [[1, 0, 2]]


def test_influence_positions_spread_or_check():
    np.testing.assert_array_equal(gi.influence_positions(101, 5), [0, 25, 50, 75, 100])
    np.testing.assert_array_equal(gi.influence_positions(3, 10), [0, 1, 2])
    assert gi.influence_positions(50, 0).size == 0
    np.testing.assert_array_equal(gi.influence_positions(9, [4, 1, 4]), [1, 4])
    with pytest.raises(ValueError, match=r"grad_positions must lie in \[0, 9\)"):
        gi.influence_positions(9, [9])


def test_document_influence_reads_the_document_sequence_after_sequence():
    rng = np.random.default_rng(5)
    B, T, D, H, C = 3, 8, 2, 4, 3
    layer, head = gs.GRU(D, H, seed=0), gs.Linear(H, C, seed=1)
    x = rng.normal(size=(B, T, D))
    flat = np.array([3, 8, 23])  # (0, 3), (1, 0), (2, 7)
    classes, values = gi.document_influence(layer, x, flat, window=5, head=head)
    y, _ = layer(x)
    np.testing.assert_array_equal(classes, gi.predicted_classes(y.reshape(B * T, H)[flat], head))
    want = gi.input_influence(layer, x, [(0, 3), (1, 0), (2, 7)], window=5, head=head)
    for got, ref in zip(values, want, strict=True):
        np.testing.assert_array_equal(got, ref)
    assert [len(v) for v in values] == [4, 1, 5]


def test_trace_with_states_is_the_trace_in_chunks_and_leaves_the_layer_alone():
    rng = np.random.default_rng(6)
    layer = gs.LSTM(3, 4, 2, seed=0)
    x = rng.normal(size=(2, 11, 3))
    layer(x[:, :2])
    before = {k: v.copy() for k, v in layer.trace.items()}
    trace, states = gi.trace_with_states(layer, x, chunk=4)  # three chunks, state carried
    for k, v in layer.trace.items():
        np.testing.assert_array_equal(v, before[k])
    layer(x)
    for name, ref in layer.trace.items():  # (L, B, T, H)
        np.testing.assert_allclose(trace[name], ref.astype(np.float32), rtol=1e-6, atol=1e-7)
    for name in ("h", "c"):
        np.testing.assert_allclose(states[name], layer.trace[name], rtol=1e-12, atol=1e-14)
        assert states[name].dtype == layer.dtype
    with pytest.raises(ValueError, match=r"shape \(B, T, D=3\)"):
        gi.trace_with_states(layer, x[..., :2])
