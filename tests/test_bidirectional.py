"""Bidirectional layers: PyTorch parity (outputs, final states, every gradient, float64),
central-difference gradient checks, the trace layout, old configs and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import central_difference, rel_error

import gatescope as gs
from gatescope import inspect as gi

pytestmark = pytest.mark.torch

ATOL = 1e-10
MODULES = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}
CLASSES = {"lstm": gs.LSTM, "gru": gs.GRU, "rnn": gs.RNN}
CASES = [("lstm", {}), ("gru", {}), ("rnn", {}), ("rnn", {"nonlinearity": "relu"})]


def bidir_module(arch, opts, D, H, L, batch_first=True, seed=0):
    torch.manual_seed(seed)
    m = MODULES[arch](
        D, H, num_layers=L, bidirectional=True, batch_first=batch_first, dtype=torch.float64,
        **opts,
    )  # fmt: skip
    with torch.no_grad():  # PyTorch's init is small; make the weights matter
        for p in m.parameters():
            p.uniform_(-0.6, 0.6)
    return m


def flat(state):
    return list(state) if isinstance(state, tuple) else [state]


@pytest.mark.parametrize("arch,opts", CASES, ids=str)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("batch_first", [True, False])
def test_matches_torch_forward_and_backward(arch, opts, num_layers, batch_first):
    B, T, D, H = 3, 6, 4, 5
    m = bidir_module(arch, opts, D, H, num_layers, batch_first, seed=num_layers)
    model = gs.from_torch(m)
    assert model.config.bidirectional and model.output_size == 2 * H
    rng = np.random.default_rng(0)
    shape = (B, T, D) if batch_first else (T, B, D)
    x = rng.normal(size=shape)
    n = 2 * num_layers  # PyTorch's (layers x directions) state axis
    s0 = [rng.normal(size=(n, B, H)) for _ in range(2 if arch == "lstm" else 1)]
    dy = rng.normal(size=shape[:2] + (2 * H,))
    ds = [rng.normal(size=(n, B, H)) for _ in s0]

    tx = torch.tensor(x, requires_grad=True)
    ts0 = [torch.tensor(a, requires_grad=True) for a in s0]
    ty, tst = m(tx, tuple(ts0) if arch == "lstm" else ts0[0])
    loss = (ty * torch.tensor(dy)).sum()
    loss = loss + sum((a * torch.tensor(d)).sum() for a, d in zip(flat(tst), ds, strict=True))
    loss.backward()

    pack = tuple if arch == "lstm" else (lambda a: a[0])
    y, st = model(x, pack(s0))
    dx = model.backward(dy, pack(ds))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=0, atol=ATOL)
    for a, t in zip(flat(st), flat(tst), strict=True):
        assert a.shape == (n, B, H)
        np.testing.assert_allclose(a, t.detach().numpy(), rtol=0, atol=ATOL)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=0, atol=ATOL)
    for a, t in zip(flat(model.dstate0), ts0, strict=True):
        np.testing.assert_allclose(a, t.grad.numpy(), rtol=0, atol=ATOL)
    for k in range(num_layers):
        for s in ("", "_reverse"):
            for w in ("weight_ih", "weight_hh"):
                g = getattr(m, f"{w}_l{k}{s}").grad.numpy()
                np.testing.assert_allclose(model.grads[f"{w}_l{k}{s}"], g, rtol=0, atol=ATOL)
            b_ih = getattr(m, f"bias_ih_l{k}{s}").grad.numpy()
            np.testing.assert_allclose(model.grads[f"bias_l{k}{s}"], b_ih, rtol=0, atol=ATOL)
            if arch == "gru":
                b_hn = getattr(m, f"bias_hh_l{k}{s}").grad.numpy()[2 * H :]
                np.testing.assert_allclose(model.grads[f"bias_hn_l{k}{s}"], b_hn, atol=ATOL)


@pytest.mark.parametrize("arch,opts", CASES, ids=str)
def test_to_torch_round_trip(arch, opts):
    kw = {"reset_after": True} if arch == "gru" else {}
    layer = CLASSES[arch](3, 4, 2, bidirectional=True, seed=1, **kw, **opts)
    m = gs.to_torch(layer)
    assert m.bidirectional
    names = {n for n, _ in m.named_parameters()}
    assert "weight_hh_l1_reverse" in names
    x = np.random.default_rng(2).normal(size=(2, 5, 3))
    y, _ = layer(x)
    np.testing.assert_allclose(m(torch.tensor(x))[0].detach().numpy(), y, rtol=0, atol=ATOL)
    back = gs.from_torch(m)
    for name, p in layer.params.items():
        np.testing.assert_allclose(back.params[name], p, rtol=0, atol=1e-15)


GRAD_CASES = [
    ("lstm", {}),
    ("lstm", {"variant": "peephole"}),
    ("gru", {"reset_after": True}),
    ("gru", {}),
    ("rnn", {}),
]


@pytest.mark.parametrize("arch,opts", GRAD_CASES, ids=str)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_gradients_by_central_differences(arch, opts, num_layers):
    rng = np.random.default_rng(1)
    B, T, D, H = 2, 4, 3, 3
    layer = CLASSES[arch](D, H, num_layers, bidirectional=True, seed=2, **opts)
    for p in layer.params.values():
        p += rng.normal(scale=0.1, size=p.shape)
    x = rng.normal(size=(B, T, D))
    s0 = [rng.normal(size=a.shape) for a in flat(layer.zero_state(B))]
    ds = [rng.normal(size=a.shape) for a in s0]
    dy = rng.normal(size=(B, T, layer.output_size))
    pack = tuple if arch == "lstm" else (lambda a: a[0])

    def loss() -> float:
        y, st = layer(x, pack(s0))
        return float((y * dy).sum() + sum((a * d).sum() for a, d in zip(flat(st), ds)))

    loss()
    dx = layer.backward(dy, pack(ds))
    analytic = {n: g.copy() for n, g in layer.grads.items()}
    dstate0 = [a.copy() for a in flat(layer.dstate0)]
    for name, p in layer.params.items():
        assert rel_error(central_difference(loss, p), analytic[name]) < 1e-6, name
    assert rel_error(central_difference(loss, x), dx) < 1e-6
    for s, d in zip(s0, dstate0, strict=True):
        assert rel_error(central_difference(loss, s), d) < 1e-6


def test_reverse_direction_is_the_forward_function_on_reversed_time():
    """The reverse half of y and of the trace equals a one-direction layer run on x[:, ::-1]."""
    layer = gs.LSTM(3, 4, bidirectional=True, seed=0)
    x = np.random.default_rng(0).normal(size=(2, 6, 3))
    y, (h, c) = layer(x)
    fwd, rev = layer.direction(0), layer.direction(0, reverse=True)
    yf, (hf, _) = fwd(x)
    yr, (hr, cr) = rev(x[:, ::-1])
    np.testing.assert_array_equal(y[..., :4], yf)
    np.testing.assert_array_equal(y[..., 4:], yr[:, ::-1])
    np.testing.assert_array_equal(layer.trace["f"][..., 4:], rev.trace["f"][:, ::-1])
    np.testing.assert_array_equal(layer.trace["h"], y)  # the trace is in y's layout
    np.testing.assert_array_equal(h, np.stack([hf, hr]))  # (2, B, H): forward, reverse
    np.testing.assert_array_equal(c[1], cr)
    # the reverse direction's final state is its value at real step 0
    np.testing.assert_array_equal(h[1], y[:, 0, 4:])


def test_parameters_and_config():
    layer = gs.GRU(4, 32, bidirectional=True, seed=0)
    assert layer.num_params() == 2 * gs.GRU(4, 32).num_params()
    stacked = gs.RNN(4, 8, 2, bidirectional=True)
    assert stacked.params["weight_ih_l1"].shape == (8, 16)  # layer 1 reads 2H features
    assert (
        stacked.layer_params(1, reverse=True)["weight_ih"] is stacked.params["weight_ih_l1_reverse"]
    )
    assert "bidirectional=True" in repr(stacked)
    # configs written before the option existed load as unidirectional
    d = gs.LSTM(2, 3).config.to_dict()
    del d["bidirectional"]
    assert gs.RecurrentConfig(**d).bidirectional is False
    assert gs.build_recurrent(gs.RecurrentConfig(**layer.config.to_dict())).num_params() == (
        layer.num_params()
    )
    with pytest.raises(ValueError, match="reverse"):
        gs.LSTM(2, 3).layer_params(0, reverse=True)
    with pytest.raises(ValueError, match="dy"):
        layer(np.zeros((1, 2, 4)))
        layer.backward(np.zeros((1, 2, 32)))  # H, not 2H
    with pytest.raises(ValueError, match="k must"):
        layer.direction(1)


def test_inspect_on_a_bidirectional_layer():
    layer = gs.LSTM(3, 4, bidirectional=True, seed=0)
    x = np.random.default_rng(0).normal(size=(2, 5, 3))
    acts = gi.gate_activations(layer, x, index=1)
    assert acts["f"].shape == (8, 5)  # both directions' units, forward first
    np.testing.assert_array_equal(acts["f"], layer.trace["f"][1].T)
    for fn in (gi.state_gradients, gi.gradient_flow):
        with pytest.raises(ValueError, match="direction"):
            fn(layer, x)
    # one direction at a time works, and matches the bidirectional backward's dstate0
    dy = np.random.default_rng(1).normal(size=(2, 5, 8))
    layer(x)
    layer.backward(dy)
    G = gi.state_gradients(layer.direction(0, reverse=True), x[:, ::-1], dy=dy[:, ::-1, 4:])
    np.testing.assert_allclose(G["h"][:, 0], layer.dstate0[0][1], rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- Keras


@pytest.fixture
def keras():
    from gatescope.interop._extras import require_keras

    try:
        return require_keras("these tests")
    except ImportError:
        pytest.skip("keras is not installed")


def keras_out(km, x):
    return km(torch.tensor(x)).detach().numpy()


# Keras' torch backend runs its GRU(reset_after=False) and SimpleRNN through float32 paths
KERAS_CASES = [("lstm", {}, ATOL), ("gru", {"reset_after": True}, ATOL), ("rnn", {}, 2e-6)]


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@pytest.mark.parametrize("arch,opts,tol", KERAS_CASES, ids=str)
@pytest.mark.parametrize("return_sequences", [True, False])
def test_keras_bidirectional_round_trip(keras, arch, opts, tol, return_sequences):
    layer = CLASSES[arch](3, 4, 2, bidirectional=True, seed=1, **opts)
    rng = np.random.default_rng(0)
    for p in layer.params.values():
        p += rng.normal(scale=0.3, size=p.shape)
    km = gs.to_keras(layer, return_sequences=return_sequences)
    assert [type(la).__name__ for la in km.layers] == ["Bidirectional", "Bidirectional"]
    x = rng.normal(size=(2, 5, 3))
    y, _ = layer(x)
    # Keras flips the backward layer's outputs into real time; its last output is each
    # direction's own last step
    want = y if return_sequences else np.concatenate([y[:, -1, :4], y[:, 0, 4:]], axis=-1)
    np.testing.assert_allclose(keras_out(km, x), want, rtol=0, atol=tol)
    back = gs.from_keras(km)
    assert back.config.bidirectional and back.num_layers == 2
    for name, p in layer.params.items():
        np.testing.assert_array_equal(back.params[name], p)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_from_keras_reads_a_bidirectional_model_built_in_keras(keras):
    def lstm():
        return keras.layers.LSTM(4, return_sequences=True, dtype="float64")

    inp = keras.Input(shape=(None, 3), dtype="float64")
    km = keras.Sequential(
        [
            inp,
            keras.layers.Bidirectional(lstm(), dtype="float64"),
            keras.layers.Bidirectional(lstm(), dtype="float64"),
        ]
    )
    rng = np.random.default_rng(3)
    km.set_weights([rng.uniform(-0.6, 0.6, size=w.shape) for w in km.get_weights()])
    model = gs.from_keras(km)
    x = rng.normal(size=(2, 6, 3))
    np.testing.assert_allclose(model(x)[0], keras_out(km, x), rtol=0, atol=ATOL)
    # a wrapper left at Keras' default float32 policy computes in float32: refused
    loose = keras.Sequential([inp, keras.layers.Bidirectional(lstm())])
    with pytest.raises(ValueError, match="computes in float32"):
        gs.from_keras(loose)


def test_keras_refusals(keras):
    def seq(*layers):
        return keras.Sequential([keras.Input(shape=(None, 3), dtype="float64"), *layers])

    def lstm(**kw):
        return keras.layers.LSTM(4, return_sequences=True, dtype="float64", **kw)

    def bidir(**kw):
        return keras.layers.Bidirectional(lstm(), dtype="float64", **kw)

    with pytest.raises(ValueError, match="merge_mode='concat'"):
        gs.from_keras(seq(bidir(merge_mode="sum")))
    with pytest.raises(ValueError, match="no bidirectional stack"):
        gs.from_keras(seq(bidir(), keras.layers.Dense(2, dtype="float64")))
    with pytest.raises(ValueError, match="bidirectional"):
        gs.from_keras(seq(bidir(), lstm()))
    with pytest.raises(ValueError, match="go_backwards"):
        gs.from_keras(seq(lstm(go_backwards=True)))


# ----------------------------------------------------------------------------- ONNX

ONNX_CASES = [
    ("lstm", {}),
    ("lstm", {"variant": "peephole"}),
    ("gru", {"reset_after": True}),
    ("gru", {}),
    ("rnn", {"nonlinearity": "relu"}),
]


def onnx_session(path):
    ort = pytest.importorskip("onnxruntime")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("arch,opts", ONNX_CASES, ids=str)
@pytest.mark.parametrize("batch_first", [True, False])
def test_onnx_bidirectional_runs_in_onnxruntime_and_reads_back(tmp_path, arch, opts, batch_first):
    pytest.importorskip("onnx")
    layer = CLASSES[arch](3, 4, 2, bidirectional=True, batch_first=batch_first, seed=1, **opts)
    rng = np.random.default_rng(0)
    for p in layer.params.values():
        p += rng.normal(scale=0.3, size=p.shape)
    x = rng.normal(size=(2, 5, 3))
    s0 = [rng.normal(size=a.shape) for a in flat(layer.zero_state(5 if not batch_first else 2))]
    B = 2 if batch_first else 5
    y, st = layer(x, tuple(s0) if arch == "lstm" else s0[0])
    gs.to_onnx(layer, tmp_path / "b.onnx", initial_state=True)  # float32, for onnxruntime
    feeds = {"x": x.astype(np.float32)}
    for name, a in zip(("h0", "c0"), s0):
        assert a.shape == (4, B, 4)
        feeds[name] = a.astype(np.float32)
    got = onnx_session(tmp_path / "b.onnx").run(None, feeds)
    np.testing.assert_allclose(got[0], y, rtol=0, atol=1e-5)
    for a, b in zip(got[1:], flat(st), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    gs.to_onnx(layer, tmp_path / "b64.onnx", dtype="float64", initial_state=True)
    back = gs.from_onnx(tmp_path / "b64.onnx")
    assert back.config.bidirectional and back.config.batch_first == batch_first
    for name, p in layer.params.items():
        np.testing.assert_array_equal(back.params[name], p)


@pytest.mark.parametrize("cls", [torch.nn.LSTM, torch.nn.GRU])
def test_from_onnx_reads_torch_exports_of_bidirectional_modules(tmp_path, cls):
    pytest.importorskip("onnx")
    import warnings

    torch.manual_seed(0)
    m = cls(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    path = tmp_path / "t.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.zeros(2, 5, 3),), path, dynamo=False, input_names=["x"])
    model = gs.from_onnx(path)
    assert model.config.bidirectional
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    ty, _ = m(torch.tensor(x))
    np.testing.assert_allclose(model(x)[0], ty.detach().numpy(), rtol=0, atol=1e-6)
    for name, p in gs.from_torch(m).params.items():
        np.testing.assert_allclose(model.params[name], p, rtol=0, atol=1e-7)


def test_onnx_refusals(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import helper

    layer = gs.GRU(3, 4, bidirectional=True, reset_after=True)
    gs.to_onnx(layer, tmp_path / "b.onnx")
    g = onnx.load(tmp_path / "b.onnx")
    (node,) = [n for n in g.graph.node if n.op_type == "GRU"]
    for a in node.attribute:
        if a.name == "direction":
            a.CopyFrom(helper.make_attribute("direction", "reverse"))
    onnx.save(g, tmp_path / "r.onnx")
    with pytest.raises(ValueError, match="direction='reverse'"):
        gs.from_onnx(tmp_path / "r.onnx")
    # a head on a bidirectional stack: torch's export of a tagger
    torch.manual_seed(0)

    class Tagger(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.GRU(3, 4, bidirectional=True, batch_first=True)
            self.out = torch.nn.Linear(8, 2)

        def forward(self, x):
            return self.out(self.rnn(x)[0])

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Tagger(), (torch.zeros(2, 5, 3),), tmp_path / "h.onnx", dynamo=False)
    with pytest.raises(ValueError, match="no bidirectional stack"):
        gs.from_onnx(tmp_path / "h.onnx")
