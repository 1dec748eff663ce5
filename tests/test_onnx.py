"""ONNX: gatescope models run in onnxruntime with the same numbers, and ONNX graphs (ours and
torch.onnx.export's) come back exactly; what gatescope cannot represent is refused."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import gatescope as gs
from gatescope.interop import load_model_file
from gatescope.interop._extras import require

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

pytestmark = pytest.mark.torch

ORT_ATOL = 1e-5  # onnxruntime runs these operators in float32 only
CASES = [
    ("lstm", {}),
    ("lstm", {"variant": "peephole"}),
    ("gru", {"reset_after": True}),
    ("gru", {"reset_after": False}),
    ("rnn", {"nonlinearity": "tanh"}),
    ("rnn", {"nonlinearity": "relu"}),
]


def run_ort(path, x):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # no warnings about initializers it prunes
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def layer(arch, opts, L=2, batch_first=True, seed=3, dtype="float64", bias=True):
    config = gs.RecurrentConfig(
        arch=arch,
        input_size=3,
        hidden_size=4,
        num_layers=L,
        batch_first=batch_first,
        dtype=dtype,
        bias=bias,
        **opts,
    )
    m = gs.build_recurrent(config, seed=seed)
    rng = np.random.default_rng(seed)
    for p in m.params.values():  # make every parameter matter, peepholes and biases too
        p[...] = rng.uniform(-0.8, 0.8, size=p.shape)
    return m


@pytest.mark.parametrize("arch,opts", CASES, ids=str)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("batch_first", [True, False])
def test_to_onnx_runs_in_onnxruntime_with_the_same_numbers(
    tmp_path, arch, opts, num_layers, batch_first
):
    m = layer(arch, opts, num_layers, batch_first)
    path = tmp_path / "m.onnx"
    gs.to_onnx(m, path)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 6, 3) if batch_first else (6, 2, 3))
    y, state = m(x)
    outs = run_ort(path, x.astype(np.float32))
    np.testing.assert_allclose(outs[0], y, rtol=0, atol=ORT_ATOL)
    states = state if arch == "lstm" else (state,)
    for got, want in zip(outs[1:], states, strict=True):  # ONNX keeps the layer axis
        np.testing.assert_allclose(got, want.reshape(num_layers, 2, 4), rtol=0, atol=ORT_ATOL)
    # and back: a float32 graph gives the float32 model, the same weights rounded once
    back = gs.from_onnx(path)
    assert back.config.batch_first == batch_first and back.config.dtype == "float32"
    for name, p in m.params.items():
        np.testing.assert_array_equal(back.params[name], p.astype(np.float32))


@pytest.mark.parametrize("arch,opts", CASES, ids=str)
def test_float64_round_trip_is_exact(tmp_path, arch, opts):
    m = layer(arch, opts, L=3, bias=arch != "rnn")
    path = tmp_path / "m.onnx"
    gs.to_onnx(m, path, dtype=None)  # keeps float64: valid ONNX, though onnxruntime has no kernel
    onnx.checker.check_model(onnx.load(path), full_check=True)
    back = gs.from_onnx(path)
    assert back.config == m.config
    for name, p in m.params.items():
        np.testing.assert_array_equal(back.params[name], p)


@pytest.mark.parametrize("kind", ["classify_last", "regress_last", "classify_steps"])
@pytest.mark.parametrize("arch", ["lstm", "gru", "rnn"])
def test_task_models_export_and_load(tmp_path, kind, arch):
    C = 1 if kind == "regress_last" else 3
    opts = {"reset_after": True} if arch == "gru" else {}
    model = gs.SequenceModel.build(arch, 3, 4, C, kind, num_layers=2, seed=2, **opts)
    rng = np.random.default_rng(0)
    for p in model.params.values():
        p[...] = rng.uniform(-0.8, 0.8, size=p.shape)
    path = tmp_path / "task.onnx"
    gs.to_onnx(model, path)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    x = rng.normal(size=(5, 7, 3))
    (out,) = run_ort(path, x.astype(np.float32))
    np.testing.assert_allclose(out, model(x), rtol=0, atol=ORT_ATOL)
    back, meta = load_model_file(path)
    assert back.kind == kind and meta["source"] == "onnx" and meta["output_activation"] is None
    assert back.config.num_layers == 2 and back.config.output_size == C
    np.testing.assert_allclose(back(x.astype(np.float32)), out, rtol=0, atol=ORT_ATOL)
    gs.to_onnx(model, path, dtype="float64")
    back = gs.from_onnx(path)
    for name, p in model.params.items():
        np.testing.assert_array_equal(back.params[name], p)


# ------------------------------------------------------------------ torch.onnx.export graphs


def export_torch(module, args, path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notes
        torch.onnx.export(module, args, str(path), dynamo=False, input_names=["x"], **kwargs)


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("num_layers,batch_first", [(1, True), (2, False), (3, True)])
def test_torch_onnx_export_imports_equal_to_torch(tmp_path, cls, num_layers, batch_first):
    torch.manual_seed(num_layers)
    m = getattr(torch.nn, cls)(3, 4, num_layers=num_layers, batch_first=batch_first).double()
    with torch.no_grad():
        for p in m.parameters():
            p.uniform_(-0.6, 0.6)
    x = torch.randn((2, 5, 3) if batch_first else (5, 2, 3), dtype=torch.float64)
    path = tmp_path / "torch.onnx"
    export_torch(m, (x,), path)
    model = gs.from_onnx(path)
    assert isinstance(model, gs.Recurrent) and model.config.arch == cls.lower()
    assert model.config.batch_first == batch_first and model.config.num_layers == num_layers
    dy = np.random.default_rng(0).normal(size=(*x.shape[:2], 4))
    tx = x.clone().requires_grad_(True)
    ty, _ = m(tx)
    (ty * torch.tensor(dy)).sum().backward()
    y, _ = model(x.numpy())
    dx = model.backward(dy)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=0, atol=1e-10)


def test_torch_export_with_initial_states_and_float32(tmp_path):
    m = torch.nn.LSTM(3, 4, num_layers=2, batch_first=True)
    x = torch.randn(2, 5, 3)
    h0, c0 = torch.randn(2, 2, 4), torch.randn(2, 2, 4)
    path = tmp_path / "lstm.onnx"
    export_torch(m, (x, (h0, c0)), path)
    model, meta = gs.interop.onnx.read_onnx(path)
    assert model.config.dtype == "float32" and sorted(meta["inputs"].values()) == [
        "state",
        "state",
        "x",
    ]
    with torch.no_grad():
        ty, (thT, tcT) = m(x, (h0, c0))
    y, (hT, cT) = model(x.numpy(), (h0.numpy(), c0.numpy()))
    for got, want in ((y, ty), (hT, thT), (cT, tcT)):
        np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-6)


class _Tagger(torch.nn.Module):
    def __init__(self, steps: bool, softmax: bool = False):
        super().__init__()
        self.rnn = torch.nn.GRU(3, 4, num_layers=2, batch_first=True)
        self.head = torch.nn.Linear(4, 3)
        self.steps, self.softmax = steps, softmax

    def forward(self, x):
        y, _ = self.rnn(x)
        out = self.head(y) if self.steps else self.head(y[:, -1])
        return out.softmax(-1) if self.softmax else out


@pytest.mark.parametrize("steps", [False, True])
def test_torch_model_with_a_head_loads_as_a_task_model(tmp_path, steps):
    torch.manual_seed(0)
    m = _Tagger(steps, softmax=True).double()
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    path = tmp_path / "tagger.onnx"
    export_torch(m, (x,), path, dynamic_axes={"x": {0: "batch", 1: "time"}})
    model, meta = load_model_file(path)
    assert model.kind == ("classify_steps" if steps else "classify_last")
    assert meta["output_activation"] == "softmax"
    with torch.no_grad():
        probs = m(x).numpy()
    logits = model(x.numpy())
    got = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(got / got.sum(-1, keepdims=True), probs, rtol=0, atol=1e-12)


# ------------------------------------------------------------------ what is refused


def lstm_graph(path, attrs=None, extra_node=None, layout_input=None):
    """One ONNX LSTM (H=2, D=3) with `attrs`; `extra_node` (op_type) runs on x first."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(1, 8, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.normal(size=(1, 8, 2)).astype(np.float32), "R"),
    ]
    nodes, x = [], "x"
    if extra_node:
        nodes.append(helper.make_node(extra_node, ["x"], ["x2"]))
        x = "x2"
    inputs = [x, "W", "R"]
    if layout_input:
        inputs += ["", layout_input]
    nodes.append(helper.make_node("LSTM", inputs, ["Y"], hidden_size=2, **(attrs or {})))
    graph_inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 1, 3])]
    if layout_input:
        graph_inputs.append(helper.make_tensor_value_info(layout_input, TensorProto.INT32, [1]))
    graph = helper.make_graph(
        nodes,
        "g",
        graph_inputs,
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        initializer=inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize(
    "attrs,message",
    [
        ({"clip": 3.0}, "clip"),
        ({"activations": ["Sigmoid", "Relu", "Tanh"]}, "activations"),
        ({"activation_alpha": [0.5]}, "activation_alpha"),
        ({"direction": "reverse"}, "direction='reverse'"),
        ({"direction": "reverse"}, "direction"),
        ({"input_forget": 1}, "input_forget"),
        ({"layout": 1}, "layout"),
    ],
    ids=lambda v: str(v),
)
def test_attributes_without_an_equivalent_are_refused(tmp_path, attrs, message):
    path = lstm_graph(tmp_path / "g.onnx", attrs)
    with pytest.raises(ValueError, match=message):
        gs.from_onnx(path)


def test_another_operator_and_sequence_lens_are_refused(tmp_path):
    with pytest.raises(ValueError, match="Relu node .* not something gatescope can represent"):
        gs.from_onnx(lstm_graph(tmp_path / "a.onnx", extra_node="Relu"))
    with pytest.raises(ValueError, match="sequence_lens"):
        gs.from_onnx(lstm_graph(tmp_path / "b.onnx", layout_input="lens"))
    # a graph without any recurrent operator
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(graph), str(tmp_path / "c.onnx"))
    with pytest.raises(ValueError, match="Relu"):
        gs.from_onnx(tmp_path / "c.onnx")


@pytest.mark.parametrize("variant", ["cifg", "layernorm", "nfg", "noaf"])
def test_variants_without_an_onnx_operator_are_refused(tmp_path, variant):
    with pytest.raises(ValueError, match=f"no '{variant}' variant"):
        gs.to_onnx(gs.LSTM(3, 4, variant=variant), tmp_path / "v.onnx")


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        gs.to_onnx(gs.LSTM(3, 4), tmp_path / "m.onnx", dtype="float16")
    with pytest.raises(ValueError, match="gatescope model"):
        gs.to_onnx(torch.nn.LSTM(3, 4), tmp_path / "m.onnx")
    gs.to_onnx(gs.LSTM(3, 4), tmp_path / "stack.onnx")
    with pytest.raises(ValueError, match="without a dense head"):
        load_model_file(tmp_path / "stack.onnx")


def test_a_missing_extra_names_it():
    with pytest.raises(
        ImportError, match=r"to_onnx needs no_such_module_xyz: pip install 'gatescope\[onnx\]'"
    ):
        require("no_such_module_xyz", "onnx", "to_onnx")


@pytest.mark.parametrize("arch,opts", CASES, ids=str)
@pytest.mark.parametrize("num_layers", [1, 3])
def test_initial_states_as_graph_inputs(tmp_path, arch, opts, num_layers):
    m = layer(arch, opts, num_layers)
    path = tmp_path / "m.onnx"
    gs.to_onnx(m, path, initial_state=True)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 6, 3))
    names = ("h0", "c0") if arch == "lstm" else ("h0",)
    states = [rng.normal(size=(num_layers, 2, 4)) for _ in names]
    opts_ = ort.SessionOptions()
    opts_.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts_, providers=["CPUExecutionProvider"])
    feeds = {"x": x.astype(np.float32), **{n: s.astype(np.float32) for n, s in zip(names, states)}}
    outs = session.run(None, feeds)

    def st(a):
        return a[0] if num_layers == 1 else a

    state0 = tuple(st(s) for s in states) if arch == "lstm" else st(states[0])
    y, final = m(x, state0)
    np.testing.assert_allclose(outs[0], y, rtol=0, atol=ORT_ATOL)
    for got, want in zip(outs[1:], final if arch == "lstm" else (final,), strict=True):
        np.testing.assert_allclose(got, want.reshape(num_layers, 2, 4), rtol=0, atol=ORT_ATOL)
    back, meta = gs.interop.onnx.read_onnx(path)
    assert meta["inputs"] == {"x": "x", **dict.fromkeys(names, "state")}
    for name, p in m.params.items():
        np.testing.assert_array_equal(back.params[name], p.astype(np.float32))
    with pytest.raises(ValueError, match="initial_state"):
        gs.to_onnx(gs.SequenceModel.build(arch, 3, 4, 2, "classify_last"), path, initial_state=True)
