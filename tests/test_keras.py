"""Keras 3 (torch backend): from_keras / to_keras compute what Keras computes, forward and
backward (Keras' input gradients through torch autograd); what gatescope cannot represent
is refused.

Keras 3 runs LSTM and GRU(reset_after=True) in float64 exactly (its torch backend hands them
to torch's own kernels): those are checked at 1e-10. Its generic RNN loop (GRU with
reset_after=False, SimpleRNN) and Dense go through keras.ops.matmul, which computes float64
products in float32 (Keras' JAX-like promotion turns 64-bit results into 32-bit), so those
are checked at float32 rounding; their weights still travel bit for bit.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

import gatescope as gs  # noqa: E402
from gatescope.interop import load_model_file  # noqa: E402
from gatescope.interop._layout import reorder  # noqa: E402

# Keras' own NumPy conversions warn under NumPy 2 (the copy keyword); not ours to fix
pytestmark = [
    pytest.mark.torch,
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]

EXACT, F32 = 1e-10, 2e-6
CASES = [
    ("LSTM", {}, EXACT),
    ("GRU", {"reset_after": True}, EXACT),
    ("GRU", {"reset_after": False}, F32),
    ("SimpleRNN", {"activation": "tanh"}, F32),
    ("SimpleRNN", {"activation": "relu"}, F32),
]
B, T, D, H = 3, 6, 4, 5


def randomize(layer, seed):
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.uniform(-0.6, 0.6, size=w.shape) for w in layer.get_weights()])


def built(la):
    la.build((None, None, D))
    return la


def keras_layer(cls, opts, seed=0, **kwargs):
    la = getattr(keras.layers, cls)(H, dtype="float64", **opts, **kwargs)
    la(np.zeros((1, 2, D)))  # build
    randomize(la, seed)
    return la


@pytest.mark.parametrize("cls,opts,tol", CASES, ids=lambda c: str(c))
@pytest.mark.parametrize("use_bias", [True, False])
def test_from_keras_matches_forward_backward_and_final_states(cls, opts, tol, use_bias):
    la = keras_layer(cls, opts, return_sequences=True, return_state=True, use_bias=use_bias)
    model = gs.from_keras(la)
    assert model.config.arch == {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "rnn"}[cls]
    rng = np.random.default_rng(1)
    x = rng.normal(size=(B, T, D))
    states0 = [rng.normal(size=(B, H)) for _ in range(2 if cls == "LSTM" else 1)]
    dy = rng.normal(size=(B, T, H))
    dstates = [rng.normal(size=(B, H)) for _ in states0]

    tx = torch.tensor(x, requires_grad=True)
    ts0 = [torch.tensor(s, requires_grad=True) for s in states0]
    ty, *tstates = la(tx, initial_state=ts0)
    loss = (ty * torch.tensor(dy)).sum()
    for s, d in zip(tstates, dstates, strict=True):
        loss = loss + (s * torch.tensor(d)).sum()
    loss.backward()

    pack = tuple if cls == "LSTM" else (lambda a: a[0])
    y, state = model(x, pack(states0))
    dx = model.backward(dy, pack(dstates))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=0, atol=tol)
    for got, want in zip(state if cls == "LSTM" else (state,), tstates, strict=True):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=0, atol=tol)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=0, atol=tol)
    for got, want in zip(model.dstate0 if cls == "LSTM" else (model.dstate0,), ts0, strict=True):
        np.testing.assert_allclose(got, want.grad.numpy(), rtol=0, atol=tol)
    if cls == "LSTM":  # the cell states Keras does not return are all in the trace
        np.testing.assert_allclose(model.trace["c"][:, -1], tstates[1].detach().numpy(), atol=tol)

    # parameter gradients: Keras' variables are torch parameters on this backend
    order = {"LSTM": ("ifgo", "ifgo"), "GRU": ("zrn", "rzn"), "SimpleRNN": ("h", "h")}[cls]

    def grad(variable, transpose=True):
        g = variable.value.grad.numpy()
        return reorder(g.T if transpose else g, *order)

    cell = la.cell
    np.testing.assert_allclose(model.grads["weight_ih_l0"], grad(cell.kernel), atol=tol)
    np.testing.assert_allclose(model.grads["weight_hh_l0"], grad(cell.recurrent_kernel), atol=tol)
    if use_bias:
        g = cell.bias.value.grad.numpy()
        if cls == "GRU" and opts["reset_after"]:  # input row: every bias; recurrent h: bias_hn
            np.testing.assert_allclose(model.grads["bias_l0"], reorder(g[0], *order), atol=tol)
            np.testing.assert_allclose(model.grads["bias_hn_l0"], g[1, 2 * H :], atol=tol)
        else:
            np.testing.assert_allclose(model.grads["bias_l0"], reorder(g, *order), atol=tol)


@pytest.mark.parametrize("cls,opts,tol", CASES, ids=lambda c: str(c))
@pytest.mark.parametrize("return_sequences", [True, False])
def test_stacked_models_either_return_sequences(cls, opts, tol, return_sequences):
    layers = [
        getattr(keras.layers, cls)(H, return_sequences=True, dtype="float64", **opts),
        getattr(keras.layers, cls)(H, return_sequences=True, dtype="float64", **opts),
        getattr(keras.layers, cls)(H, return_sequences=return_sequences, dtype="float64", **opts),
    ]
    km = keras.Sequential([keras.Input((None, D), dtype="float64"), *layers])
    for k, la in enumerate(layers):
        randomize(la, seed=k)
    model = gs.from_keras(km)
    assert model.config.num_layers == 3
    rng = np.random.default_rng(2)
    x = rng.normal(size=(B, T, D))
    tx = torch.tensor(x, requires_grad=True)
    ty = km(tx)
    dy = rng.normal(size=tuple(ty.shape))
    (ty * torch.tensor(dy)).sum().backward()
    y, _ = model(x)
    if return_sequences:
        dx = model.backward(dy)
    else:
        y, full = y[:, -1], np.zeros((B, T, H))
        full[:, -1] = dy
        dx = model.backward(full)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=0, atol=tol)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=0, atol=tol)


@pytest.mark.parametrize(
    "arch,opts",
    [
        ("lstm", {}),
        ("gru", {"reset_after": True}),
        ("gru", {"reset_after": False}),
        ("rnn", {"nonlinearity": "relu"}),
    ],
    ids=str,
)
def test_to_keras_round_trip(arch, opts):
    m = {"lstm": gs.LSTM, "gru": gs.GRU, "rnn": gs.RNN}[arch](D, H, 2, seed=4, **opts)
    rng = np.random.default_rng(0)
    for p in m.params.values():
        p[...] = rng.uniform(-0.6, 0.6, size=p.shape)
    km = gs.to_keras(m)
    x = rng.normal(size=(B, T, D))
    y, _ = m(x)
    tol = EXACT if arch == "lstm" or opts.get("reset_after") else F32
    np.testing.assert_allclose(keras.ops.convert_to_numpy(km(x)), y, rtol=0, atol=tol)
    back = gs.from_keras(km)
    assert back.config == m.config
    for name, p in m.params.items():
        np.testing.assert_array_equal(back.params[name], p)
    last = gs.to_keras(m, return_sequences=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(last(x)), y[:, -1], rtol=0, atol=tol)


@pytest.mark.parametrize("kind", ["classify_last", "regress_last", "classify_steps"])
def test_task_models_through_a_keras_file(tmp_path, kind):
    C = 1 if kind == "regress_last" else 3
    model = gs.SequenceModel.build("lstm", D, H, C, kind, num_layers=2, seed=1)
    km = gs.to_keras(model)
    x = np.random.default_rng(0).normal(size=(B, T, D))
    # Keras' Dense multiplies in float32 (see the module docstring)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(km(x)), model(x), rtol=0, atol=F32)
    path = tmp_path / "model.keras"
    km.save(path)
    back, meta = load_model_file(path)
    assert back.kind == kind and meta["source"] == "keras" and meta["output_activation"] is None
    for name, p in model.params.items():
        np.testing.assert_array_equal(back.params[name], p)


def test_a_softmax_head_gives_its_logits():
    km = keras.Sequential(
        [
            keras.Input((None, D), dtype="float64"),
            keras.layers.LSTM(H, return_sequences=True, dtype="float64"),
            keras.layers.Dense(3, activation="softmax", dtype="float64"),
        ]
    )
    model = gs.from_keras(km)
    assert model.kind == "classify_steps"
    x = np.random.default_rng(0).normal(size=(B, T, D))
    logits = model(x)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(probs, keras.ops.convert_to_numpy(km(x)), rtol=0, atol=F32)
    with pytest.raises(ValueError, match="kind='classify_last' but the last recurrent layer"):
        gs.from_keras(km, kind="classify_last")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_legacy_h5_files_load_too(tmp_path):
    km = keras.Sequential(
        [
            keras.Input((None, D), dtype="float64"),
            keras.layers.GRU(H, dtype="float64"),
            keras.layers.Dense(3, dtype="float64"),
        ]
    )
    km.save(tmp_path / "model.h5")  # Keras warns: a legacy format
    model, meta = load_model_file(tmp_path / "model.h5")
    assert model.kind == "classify_last" and meta["source"] == "keras"
    direct = gs.from_keras(km)
    for name, p in direct.params.items():
        np.testing.assert_array_equal(model.params[name], p)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: keras_layer("LSTM", {"activation": "relu"}), "activation='relu'"),
        (
            lambda: keras_layer("GRU", {"recurrent_activation": "hard_sigmoid"}),
            "recurrent_activation",
        ),
        (lambda: keras_layer("SimpleRNN", {"activation": "sigmoid"}), "tanh or relu"),
        (lambda: keras_layer("LSTM", {"go_backwards": True}), "go_backwards=True"),
        (lambda: keras.layers.LSTM(H, stateful=True), "stateful=True"),
        (lambda: keras.layers.Bidirectional(keras.layers.LSTM(H)), "Bidirectional"),
        (lambda: keras.layers.LSTM(H), "not built"),
        (lambda: built(keras.layers.LSTM(H, dtype="mixed_float16")), "mixed-precision"),
        (lambda: keras.layers.Dense(3), "expects keras.layers.LSTM, GRU or SimpleRNN"),
        (lambda: torch.nn.LSTM(3, 4), "a Keras layer or model"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_what_gatescope_cannot_represent_is_refused(make, message):
    with pytest.raises(ValueError, match=message):
        gs.from_keras(make())


def test_models_with_other_layers_or_mixed_stacks_are_refused():
    with_dropout = keras.Sequential(
        [
            keras.Input((None, D)),
            keras.layers.LSTM(H, return_sequences=True),
            keras.layers.Dropout(0.1),
            keras.layers.LSTM(H),
        ]
    )
    with pytest.raises(ValueError, match="Dropout"):
        gs.from_keras(with_dropout)
    mixed = keras.Sequential(
        [
            keras.Input((None, D)),
            keras.layers.LSTM(H, return_sequences=True),
            keras.layers.LSTM(H + 1),
        ]
    )
    with pytest.raises(ValueError, match="hidden_size=6"):
        gs.from_keras(mixed)
    tanh_head = keras.Sequential(
        [keras.Input((None, D)), keras.layers.GRU(H), keras.layers.Dense(2, activation="tanh")]
    )
    with pytest.raises(ValueError, match="activation='tanh'"):
        gs.from_keras(tanh_head)
    inp = keras.Input((None, D))
    chain = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GRU(H)(inp)))
    assert gs.from_keras(chain).kind == "classify_last"  # a functional chain is fine
    branch = keras.Model(inp, keras.layers.LSTM(H)(inp) + keras.layers.LSTM(H)(inp))
    with pytest.raises(ValueError, match="chain"):
        gs.from_keras(branch)


def test_to_keras_refuses_variants():
    with pytest.raises(ValueError, match="no 'peephole' variant"):
        gs.to_keras(gs.LSTM(D, H, variant="peephole"))
    with pytest.raises(ValueError, match="gatescope model"):
        gs.to_keras(torch.nn.LSTM(D, H))


def test_the_export_command_writes_and_reads_keras_files(tmp_path):
    from gatescope import cli
    from gatescope.model import load_model, save_model
    from gatescope.tasks import get_task

    task = get_task("copy", 8)
    model = gs.SequenceModel.for_task(task, "gru", hidden_size=5, seed=0, reset_after=True)
    ckpt, out = tmp_path / "run.safetensors", tmp_path / "run.keras"
    save_model(ckpt, model, meta={"task": task.to_dict()})
    assert cli.main(["export", str(ckpt), "--keras", str(out)]) == 0
    back = tmp_path / "back.safetensors"
    assert cli.main(["export", str(out), "--checkpoint", str(back), "--task", "copy"]) == 0
    loaded, meta = load_model(back)
    assert meta["source"] == "keras" and meta["task"]["name"] == "copy"
    for name, p in model.params.items():
        np.testing.assert_array_equal(loaded.params[name], p)


def test_a_keras_lstm_seen_inside_gates_cells_and_measured_gradient_flow():
    from gatescope import inspect as gi

    la = keras_layer("LSTM", {}, return_sequences=True, return_state=True)
    layer = gs.from_keras(la)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(B, T, D))
    acts = gi.gate_activations(layer, x, index=1)
    assert set(acts) == {"i", "f", "g", "o", "c", "h"} and acts["c"].shape == (H, T)
    # every cell state, not only Keras' last one: the last column is Keras' final c
    _, _, tc = la(torch.tensor(x))
    np.testing.assert_allclose(acts["c"][:, -1], tc.detach().numpy()[1], rtol=0, atol=EXACT)
    # the measured flow T steps back is Keras' own dL/dh_0 (torch autograd), batch-averaged
    dh, dc = rng.normal(size=(B, H)), rng.normal(size=(B, H))
    h0 = torch.zeros(B, H, dtype=torch.float64, requires_grad=True)
    c0 = torch.zeros(B, H, dtype=torch.float64, requires_grad=True)
    _, th, tc = la(torch.tensor(x), initial_state=[h0, c0])
    ((th * torch.tensor(dh)).sum() + (tc * torch.tensor(dc)).sum()).backward()
    flow = gi.gradient_flow(layer, x, dstate=(dh, dc))
    want_h = np.linalg.norm(h0.grad.numpy(), axis=1).mean()
    want_c = np.linalg.norm(c0.grad.numpy(), axis=1).mean()
    np.testing.assert_allclose(flow.h[T], want_h, rtol=1e-10)
    np.testing.assert_allclose(flow.c[T], want_c, rtol=1e-10)
