r"""ONNX export and import: `to_onnx(model, path)` and `from_onnx(path)`, with ONNX's own
LSTM, GRU and RNN operators.

ONNX packs each layer as ``W`` [dirs, G*H, D], ``R`` [dirs, G*H, H] and ``B`` [dirs, 2*G*H]
(the input biases Wb, then the recurrent biases Rb), in its own gate order:

    ========  ===========  ============  =========================================
    operator  ONNX order   gatescope     notes
    ========  ===========  ============  =========================================
    LSTM      i o f c      i f g o       peepholes P [dirs, 3H] in order i o f
    GRU       z r h        r z n         linear_before_reset=1 is reset_after=True
    RNN       i            h             activations ["Tanh"] or ["Relu"]
    ========  ===========  ============  =========================================

ONNX's equations are gatescope's: the LSTM's output-gate peephole reads the new cell C_t,
as gatescope's peephole variant does; the GRU keeps H_{t-1} with z. Exporting puts the
whole bias into Wb and zeros into Rb (Rb_h holds ``bias_hn`` when reset_after), as
``to_torch`` does; importing sums the two wherever they appear summed.

The exported graph (opset 17, layout 0, so it runs in onnxruntime):

    x (B, T, D) -Transpose-> (T, B, D) -LSTM-> Y (T, 1, B, H) -Squeeze-> ... per layer
    Recurrent:      outputs y (B, T, H), h_n (L, B, H) (and c_n for an LSTM); zero
                    initial state, or inputs h0 (and c0) (L, B, H) with initial_state=True
    SequenceModel:  classify_last / regress_last: out = Gemm(Y_h of the top layer) (B, C)
                    classify_steps: out = MatMul(y, W^T) + b (B, T, C)

A Recurrent with batch_first=False has no Transposes: x and y are (T, B, .).

Importing reads graphs of that shape, whoever wrote them (torch.onnx.export of an nn.LSTM /
GRU / RNN, with or without a Linear after it, gives one): the recurrent operators and the
plumbing between them (Transpose, Squeeze, Concat of the final states, the Shape ->
ConstantOfShape/Expand arithmetic that builds zero initial states), and a Gemm or
MatMul + Add head, optionally followed by Softmax. Anything gatescope cannot represent
exactly is refused with a ValueError naming the operator or attribute: another operator on
the data path, non-default activations (and activation_alpha/beta), clip,
direction="reverse", input_forget, layout=1, sequence_lens, non-zero constant initial
states, Gemm with alpha or beta other than 1.

Bidirectional stacks use direction="bidirectional": W, R, B (and P) hold the forward
direction at index 0 of the num_directions axis and the reverse one at index 1 (ONNX's
order, gatescope's `_l{k}` and `_l{k}_reverse`); each layer's Y (T, 2, B, H) goes through
Transpose(perm=[0, 2, 1, 3]) and Reshape([0, 0, -1]) to (T, B, 2H), forward units first
(what torch.onnx.export writes for a bidirectional module), and h_n is (2L, B, H) in
PyTorch's order. A head on a bidirectional stack is refused (a SequenceModel has none).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..model import SequenceModel
from ..nn import Recurrent, RecurrentConfig, build_recurrent
from ._extras import require
from ._layout import reorder

OPSET = 17  # Squeeze takes axes as an input from 13; LSTM's layout attribute from 14
_ONNX_ORDER = {"lstm": "iofg", "gru": "zrn", "rnn": "h"}  # ONNX's c is gatescope's g
_GS_ORDER = {"lstm": "ifgo", "gru": "rzn", "rnn": "h"}
_OP_ARCH = {"LSTM": "lstm", "GRU": "gru", "RNN": "rnn"}
_ARCH_OP = {v: k for k, v in _OP_ARCH.items()}
_DEFAULT_ACTS = {"lstm": ["Sigmoid", "Tanh", "Tanh"], "gru": ["Sigmoid", "Tanh"]}
_PEEP_ONNX, _PEEP_GS = "iof", "ifo"  # P's order; gatescope's peephole is [p_i, p_f, p_o]


# ============================================================================== export


def to_onnx(
    model: Recurrent | SequenceModel,
    path: str | os.PathLike[str],
    dtype: str | None = "float32",
    initial_state: bool = False,
) -> None:
    """Write `model` to `path` as an ONNX model (opset 17) that onnxruntime runs.

    Vanilla and peephole LSTMs, GRUs (reset_after either way), RNNs (tanh or relu), any
    num_layers, and SequenceModels (the stack plus its head). Other LSTM variants have no
    ONNX operator and are refused. The graph checks with ``onnx.checker``.

    `dtype`: the graph's float type. The default float32 is what onnxruntime's LSTM, GRU
    and RNN kernels run (they have no double kernels), so a float64 model is rounded to
    float32 on export; "float64" keeps every bit (valid ONNX, for runtimes with double
    kernels); None keeps the model's own dtype.

    `initial_state`: a Recurrent's graph also takes inputs ``h0`` (and ``c0`` for an LSTM),
    each (L, B, H), the state gatescope's ``model(x, state0)`` takes (with the layer axis
    even for L = 1); without them the state starts at zero.
    """
    onnx = require("onnx", "onnx", "to_onnx")
    from onnx import TensorProto, helper, numpy_helper

    if isinstance(model, SequenceModel):
        rec, head, kind = model.recurrent, model.head, model.kind
    elif isinstance(model, Recurrent):
        rec, head, kind = model, None, None
    else:
        raise ValueError(f"to_onnx expects a gatescope model, got {type(model).__name__}")
    if initial_state and head is not None:
        raise ValueError("initial_state: a SequenceModel starts from zero; export its .recurrent")
    c = rec.config
    if c.arch == "lstm" and c.variant not in ("vanilla", "peephole"):
        raise ValueError(
            f"to_onnx: ONNX's LSTM operator has no {c.variant!r} variant; only "
            "variant='vanilla' and 'peephole' LSTMs can be exported"
        )
    arch, H, L = c.arch, c.hidden_size, c.num_layers
    nd = rec.num_directions  # ONNX's num_directions: [forward, reverse]
    if dtype not in (None, "float32", "float64"):
        raise ValueError(f"dtype must be 'float32', 'float64' or None, got {dtype!r}")
    fdt = np.dtype(dtype or c.dtype)
    elem = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE}[fdt.name]
    inits: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, value: np.ndarray) -> str:
        if value.dtype.kind == "f":
            value = value.astype(fdt)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    axes1 = const("axes1", np.array([1], np.int64)) if nd == 1 else ""  # Squeeze's axes
    if initial_state or (head is not None and kind != "classify_steps"):
        const("axes0", np.array([0], np.int64))
    src, dst = _GS_ORDER[arch], _ONNX_ORDER[arch]
    x = "x"
    if c.batch_first:
        nodes.append(helper.make_node("Transpose", ["x"], ["x_tbd"], perm=[1, 0, 2]))
        x = "x_tbd"
    finals: dict[str, list[str]] = {"h": [], "c": []}
    for k in range(L):
        ps = [rec.layer_params(k, bool(d)) for d in range(nd)]
        W = np.stack([reorder(p["weight_ih"], src, dst) for p in ps])  # (dirs, G*H, D)
        R = np.stack([reorder(p["weight_hh"], src, dst) for p in ps])  # (dirs, G*H, H)
        inputs = [x, const(f"W_l{k}", W), const(f"R_l{k}", R)]
        b = np.zeros((nd, 2 * W.shape[1]), W.dtype)  # (dirs, 2*G*H): [Wb, Rb]
        if c.bias:
            for d, p in enumerate(ps):
                b[d, : W.shape[1]] = reorder(p["bias"], src, dst)
                if arch == "gru" and c.reset_after:
                    b[d, -H:] = p["bias_hn"]  # Rb_h, inside the reset product
        inputs.append(const(f"B_l{k}", b) if c.bias else "")
        if initial_state:  # layer k's slice of h0 / c0: (dirs, B, H)
            starts, ends = const(f"k{nd * k}", np.array([nd * k], np.int64)), f"k{nd * (k + 1)}"
            if k == L - 1:
                const(ends, np.array([nd * (k + 1)], np.int64))
            inputs.append("")  # sequence_lens
            for s in ("h", "c") if arch == "lstm" else ("h",):
                nodes.append(
                    helper.make_node("Slice", [f"{s}0", starts, ends, "axes0"], [f"{s}0_l{k}"])
                )
                inputs.append(f"{s}0_l{k}")
        attrs: dict[str, Any] = {"hidden_size": H}
        if arch == "gru":
            attrs["linear_before_reset"] = int(c.reset_after)
        if arch == "rnn":
            attrs["activations"] = ["Relu" if c.nonlinearity == "relu" else "Tanh"] * nd
        if nd == 2:
            attrs["direction"] = "bidirectional"
        outs = [f"Y_l{k}", f"Y_h_l{k}"] + ([f"Y_c_l{k}"] if arch == "lstm" else [])
        if arch == "lstm" and c.variant == "peephole":
            P = np.stack([reorder(p["peephole"], _PEEP_GS, _PEEP_ONNX) for p in ps])  # (dirs, 3H)
            inputs += [""] * (7 - len(inputs)) + [const(f"P_l{k}", P)]
        nodes.append(helper.make_node(_ARCH_OP[arch], inputs, outs, name=f"{arch}_l{k}", **attrs))
        if nd == 1:
            nodes.append(helper.make_node("Squeeze", [f"Y_l{k}", axes1], [f"seq_l{k}"]))
        else:  # (T, 2, B, H) -> (T, B, 2, H) -> (T, B, 2H), forward units first
            nodes.append(
                helper.make_node("Transpose", [f"Y_l{k}"], [f"Yt_l{k}"], perm=[0, 2, 1, 3])
            )
            if k == 0:
                const("merge_dirs", np.array([0, 0, -1], np.int64))
            nodes.append(helper.make_node("Reshape", [f"Yt_l{k}", "merge_dirs"], [f"seq_l{k}"]))
        x = f"seq_l{k}"
        finals["h"].append(f"Y_h_l{k}")
        if arch == "lstm":
            finals["c"].append(f"Y_c_l{k}")

    B_, T_ = "batch", "time"
    seq_shape = [B_, T_] if c.batch_first else [T_, B_]
    outputs = []
    if head is None:
        if c.batch_first:
            nodes.append(helper.make_node("Transpose", [x], ["y"], perm=[1, 0, 2]))
        else:
            nodes.append(helper.make_node("Identity", [x], ["y"]))
        outputs.append(helper.make_tensor_value_info("y", elem, [*seq_shape, nd * H]))
        for s in ("h", "c") if arch == "lstm" else ("h",):
            nodes.append(helper.make_node("Concat", finals[s], [f"{s}_n"], axis=0))
            outputs.append(helper.make_tensor_value_info(f"{s}_n", elem, [nd * L, B_, H]))
    else:
        Wh = head.params["weight"]  # (C, H)
        C = Wh.shape[0]
        if kind == "classify_steps":
            nodes.append(helper.make_node("Transpose", [x], ["y"], perm=[1, 0, 2]))
            lin = "out" if "bias" not in head.params else "out_nobias"
            nodes.append(helper.make_node("MatMul", ["y", const("head_wT", Wh.T)], [lin]))
            if "bias" in head.params:
                nodes.append(
                    helper.make_node("Add", [lin, const("head_b", head.params["bias"])], ["out"])
                )
            outputs.append(helper.make_tensor_value_info("out", elem, [B_, T_, C]))
        else:
            nodes.append(helper.make_node("Squeeze", [finals["h"][-1], "axes0"], ["h_last"]))
            gemm_in = ["h_last", const("head_w", Wh)]
            if "bias" in head.params:
                gemm_in.append(const("head_b", head.params["bias"]))
            nodes.append(helper.make_node("Gemm", gemm_in, ["out"], transB=1))
            outputs.append(helper.make_tensor_value_info("out", elem, [B_, C]))
    graph = helper.make_graph(
        nodes,
        "gatescope",
        [helper.make_tensor_value_info("x", elem, [*seq_shape, c.input_size])]
        + [
            helper.make_tensor_value_info(f"{s}0", elem, [nd * L, B_, H])
            for s in (("h", "c") if arch == "lstm" else ("h",))
            if initial_state
        ],
        outputs,
        initializer=inits,
    )
    onnx_model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="gatescope",
        doc_string=repr(model),
    )
    onnx_model.ir_version = min(onnx_model.ir_version, 9)  # readable by older runtimes
    onnx.checker.check_model(onnx_model, full_check=True)
    onnx.save(onnx_model, os.fspath(path))


# ============================================================================== import


@dataclass
class _Sym:
    """A value on the data path, known by what it is rather than by its numbers."""

    tag: str  # "input" "seq" "state" "last" "shape" "zeros" "state_in" "lin"
    n: int = 0  # seq/last/lin: recurrent layers applied; state: the layer it came from
    tm: bool | None = None  # seq/lin: time-major (None: the graph input, not yet known)
    flipped: bool = False  # seq with n == 0: transposed from the graph input
    dirs: bool = False  # seq: still has ONNX's num_directions axis (T, 1, B, H)
    ndirs: int = 1  # seq: 2 after a bidirectional operator (its dirs axis holds 2)
    split: bool = False  # seq: bidirectional, transposed to (T, B, 2, H), not yet merged
    name: str = ""  # input/state_in: the graph input's name
    index: int | None = None  # state_in: the layer slice taken along axis 0
    count: int = 1  # state_in: how many entries that slice takes (2: both directions)
    which: str = ""  # state: "h" or "c"
    layers: tuple[int, ...] = ()  # state: layers concatenated
    info: dict[str, Any] = field(default_factory=dict)  # lin: W (C, H), b, softmax, steps


@dataclass
class _Layer:
    arch: str
    W: np.ndarray  # (dirs, G*H, D), ONNX order
    R: np.ndarray  # (dirs, G*H, H)
    B: np.ndarray | None  # (dirs, 2*G*H)
    P: np.ndarray | None  # (dirs, 3H)
    attrs: dict[str, Any]
    states: list[_Sym | None]  # initial_h, initial_c: None for zeros


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, list):
            v = [s.decode() if isinstance(s, bytes) else s for s in v]
        out[a.name] = v
    return out


def _refuse(node: Any, why: str) -> ValueError:
    return ValueError(f"from_onnx: {node.op_type} node {node.name or node.output[0]!r}: {why}")


class _Reader:
    """Walks the graph in order, folding constants and naming the rest (see _Sym)."""

    def __init__(self, onnx: Any, model: Any) -> None:
        from onnx import numpy_helper
        from onnx.reference import ReferenceEvaluator

        self.onnx, self.eval = onnx, ReferenceEvaluator
        g = model.graph
        # the default domain's opset: Softmax's default axis changed at 13
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        self.values: dict[str, Any] = {"": None}
        for t in g.initializer:
            self.values[t.name] = numpy_helper.to_array(t)
        self.graph_inputs = [i.name for i in g.input if i.name not in self.values]
        for name in self.graph_inputs:
            self.values[name] = _Sym("input", name=name)
        self.roles: dict[str, str] = {}  # graph input -> "x" or "state"
        self.layers: list[_Layer] = []
        self.batch_first: bool | None = None
        for node in g.node:
            self.step(node)
        self.outputs = [(o.name, self.values[o.name]) for o in g.output]

    # -- helpers

    def role(self, name: str, role: str, node: Any) -> None:
        if self.roles.setdefault(name, role) != role:
            raise _refuse(node, f"graph input {name!r} is used both as the sequence and a state")

    def as_seq(self, v: Any, node: Any) -> _Sym:
        if isinstance(v, _Sym) and v.tag == "input":
            self.role(v.name, "x", node)
            return _Sym("seq", n=0, name=v.name)
        if isinstance(v, _Sym) and v.tag == "seq":
            return v
        raise _refuse(node, "expects the sequence (the graph input or a recurrent output)")

    def const(self, v: Any, node: Any, what: str) -> np.ndarray:
        if not isinstance(v, np.ndarray):
            raise _refuse(node, f"{what} must be a constant (an initializer)")
        return v

    def step(self, node: Any) -> None:
        ins = [self.values.get(n, None) if n else None for n in node.input]
        missing = [n for n in node.input if n and n not in self.values]
        if missing:
            raise _refuse(node, f"reads {missing[0]!r}, which no earlier node makes")
        syms = [v for v in ins if isinstance(v, _Sym)]
        if not syms:  # constants only: fold them
            feeds = {n: v for n, v in zip(node.input, ins) if n}
            try:
                results = self.eval(node).run(None, feeds)
            except Exception as e:  # the reference runtime cannot fold it: not ours to read
                raise _refuse(node, f"cannot be evaluated ({e})") from None
            for name, value in zip(node.output, results):
                self.values[name] = np.asarray(value)
            return
        op = node.op_type
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            raise _refuse(node, "this operator is not something gatescope can represent")
        outs = handler(node, ins, _attrs(node))
        for name, value in zip(node.output, outs):
            if name:
                self.values[name] = value

    def shapeish(self, ins: list[Any]) -> bool:
        return all(
            v is None or isinstance(v, np.ndarray) or (isinstance(v, _Sym) and v.tag == "shape")
            for v in ins
        )

    # -- the plumbing

    def op_Shape(self, node, ins, attrs):
        return [_Sym("shape")]

    def _shape_op(self, node, ins, attrs):
        if self.shapeish(ins):
            return [_Sym("shape")]
        v = ins[0]
        if isinstance(v, _Sym) and v.tag == "zeros" and self.shapeish(ins[1:]):
            return [v]  # a slice or reshape of zeros is zeros
        if node.op_type in ("Gather", "Slice") and isinstance(v, _Sym) and v.tag == "input":
            return self.state_slice(node, ins, attrs)
        if node.op_type == "Gather" and isinstance(v, _Sym) and v.tag == "seq":
            return self.last_step(node, ins, attrs)
        raise _refuse(node, "gatescope reads this operator only on shapes and states")

    op_Gather = op_Unsqueeze = op_Slice = op_Cast = _shape_op
    op_Mul = op_Sub = op_Div = op_Range = _shape_op

    def op_Reshape(self, node, ins, attrs):
        v = ins[0]
        if isinstance(v, _Sym) and v.tag == "seq" and v.split:  # (T, B, 2, H) -> (T, B, 2H)
            shape = self.const(ins[1], node, "the shape").ravel()
            H = self.layers[-1].R.shape[-1]
            if len(shape) != 3 or list(shape[:2]) != [0, 0] or int(shape[2]) not in (-1, 2 * H):
                raise _refuse(
                    node, "gatescope reads Reshape of a bidirectional Y only as [0, 0, -1]"
                )
            return [_Sym("seq", n=v.n, tm=True)]
        return self._shape_op(node, ins, attrs)

    def op_Identity(self, node, ins, attrs):
        return [ins[0]]

    def op_ConstantOfShape(self, node, ins, attrs):
        from onnx import numpy_helper

        value = attrs.get("value")
        fill = 0.0 if value is None else float(numpy_helper.to_array(value).ravel()[0])
        return [_Sym("zeros") if fill == 0 else _Sym("shape")]

    def op_Expand(self, node, ins, attrs):
        v, shape = ins
        if isinstance(v, np.ndarray) and not np.any(v) and self.shapeish([shape]):
            return [_Sym("zeros")]
        if isinstance(v, _Sym) and v.tag == "zeros":
            return [v]
        if self.shapeish(ins):
            return [_Sym("shape")]
        raise _refuse(node, "gatescope reads Expand only to make zero initial states")

    def state_slice(self, node, ins, attrs):
        """Gather / Slice of a graph input along axis 0: layer k's initial state."""
        v = ins[0]
        self.role(v.name, "state", node)
        if node.op_type == "Gather":
            idx = self.const(ins[1], node, "the index")
            if attrs.get("axis", 0) != 0 or idx.size != 1:
                raise _refuse(node, "a state must be indexed along its layer axis")
            k = int(idx.ravel()[0])
            return [_Sym("state_in", name=v.name, index=k, info={"squeezed": idx.ndim == 0})]
        starts, ends = (self.const(a, node, "Slice bounds").ravel() for a in ins[1:3])
        axes = self.const(ins[3], node, "Slice axes").ravel() if len(ins) > 3 else np.array([0])
        steps = ins[4] if len(ins) > 4 else None
        if (
            list(axes) != [0]
            or int(ends[0]) - int(starts[0]) not in (1, 2)
            or (steps is not None and int(np.ravel(steps)[0]) != 1)
        ):
            raise _refuse(node, "a state must be sliced one layer at a time along axis 0")
        count = int(ends[0]) - int(starts[0])
        return [_Sym("state_in", name=v.name, index=int(starts[0]), count=count)]

    def last_step(self, node, ins, attrs):
        s = ins[0]
        idx = self.const(ins[1], node, "the index")
        axis = attrs.get("axis", 0)
        time_axis = 0 if s.tm else 1
        if s.n == 0 or s.dirs or idx.ndim != 0 or int(idx) != -1 or axis != time_axis:
            raise _refuse(node, "gatescope reads Gather on a sequence only as its last step [-1]")
        return [_Sym("last", n=s.n)]

    def op_Transpose(self, node, ins, attrs):
        v = ins[0]
        if isinstance(v, _Sym) and v.tag == "lin" and v.info["steps"]:
            if list(attrs.get("perm", [])) != [1, 0, 2]:
                raise _refuse(node, "only perm=[1, 0, 2] (time <-> batch) is supported")
            return [_Sym("lin", n=v.n, tm=not v.tm, info=v.info)]
        s = self.as_seq(v, node)
        if s.dirs and s.ndirs == 2 and not s.split and list(attrs.get("perm", [])) == [0, 2, 1, 3]:
            return [_Sym("seq", n=s.n, tm=True, dirs=True, ndirs=2, split=True)]
        if s.dirs or list(attrs.get("perm", [])) != [1, 0, 2]:
            raise _refuse(node, "only perm=[1, 0, 2] (time <-> batch) is supported")
        if s.n == 0:
            return [_Sym("seq", n=0, flipped=not s.flipped, name=s.name)]
        return [_Sym("seq", n=s.n, tm=not s.tm)]

    def op_Squeeze(self, node, ins, attrs):
        v = ins[0]
        axes = attrs.get("axes")
        if axes is None and len(ins) > 1:
            axes = list(self.const(ins[1], node, "the axes").ravel())
        if (
            isinstance(v, _Sym)
            and v.tag == "seq"
            and v.dirs
            and v.ndirs == 1
            and list(axes or []) == [1]
        ):
            return [_Sym("seq", n=v.n, tm=True)]
        if isinstance(v, _Sym) and v.tag == "state" and list(axes or []) == [0]:
            if v.which == "h" and len(v.layers) == 1:
                return [_Sym("last", n=v.layers[0] + 1)]
            return [_Sym("state", which=v.which, layers=v.layers, info={"squeezed": True})]
        if isinstance(v, _Sym) and v.tag == "state_in" and list(axes or []) == [0]:
            return [_Sym("state_in", name=v.name, index=v.index, info={"squeezed": True})]
        if isinstance(v, _Sym) and v.tag in ("shape", "zeros"):
            return [v]
        raise _refuse(node, "gatescope reads Squeeze only of ONNX's direction axis")

    def op_Concat(self, node, ins, attrs):
        if self.shapeish(ins):
            return [_Sym("shape")]
        if all(isinstance(v, _Sym) and v.tag == "state" for v in ins) and attrs["axis"] == 0:
            which = {v.which for v in ins}
            if len(which) == 1:
                return [_Sym("state", which=ins[0].which, layers=sum((v.layers for v in ins), ()))]
        raise _refuse(node, "gatescope reads Concat only of final states along the layer axis")

    # -- the recurrent operators

    def _recurrent(self, node, ins, attrs):
        arch = _OP_ARCH[node.op_type]
        s = self.as_seq(ins[0], node)
        if s.n != len(self.layers):
            raise _refuse(node, f"reads the output of layer {s.n - 1}, not of the layer before it")
        if s.n == 0:
            bf = s.flipped
            if self.batch_first is not None and self.batch_first != bf:
                raise _refuse(node, "inconsistent input layout")
            self.batch_first = bf
        elif s.dirs or not s.tm:
            raise _refuse(node, "its input must be time-major (T, B, H)")
        for name, ok in (
            ("clip", lambda v: v is None),
            ("direction", lambda v: v in (None, "forward", "bidirectional")),
            ("input_forget", lambda v: not v),
            ("layout", lambda v: not v),
            ("activation_alpha", lambda v: v is None),
            ("activation_beta", lambda v: v is None),
        ):
            if not ok(attrs.get(name)):
                extra = (
                    " (run the reversed sequence forward instead)" if name == "direction" else ""
                )
                raise _refuse(
                    node, f"attribute {name}={attrs[name]!r} has no gatescope equivalent{extra}"
                )
        nd = 2 if attrs.get("direction") == "bidirectional" else 1
        acts = attrs.get("activations")
        if acts is not None and nd == 2:  # one list per direction, concatenated: the same twice
            half = len(acts) // 2
            if acts[:half] != acts[half:]:
                raise _refuse(node, f"activations={acts!r}: the two directions differ")
            acts = acts[:half]
        if arch == "rnn":
            if acts not in (None, ["Tanh"], ["Relu"]):
                raise _refuse(node, f"activations={acts!r}: gatescope's RNN has Tanh or Relu")
        elif acts is not None and acts != _DEFAULT_ACTS[arch]:
            raise _refuse(
                node, f"activations={acts!r}: gatescope's {node.op_type} has {_DEFAULT_ACTS[arch]}"
            )
        W = self.const(ins[1], node, "W")
        R = self.const(ins[2], node, "R")
        if W.ndim != 3 or W.shape[0] != nd or R.ndim != 3 or R.shape[0] != nd:
            raise _refuse(
                node, f"W and R must be [{nd}, G*H, .], got {list(W.shape)}, {list(R.shape)}"
            )
        if attrs.get("hidden_size", R.shape[-1]) != R.shape[-1]:
            raise _refuse(node, f"hidden_size={attrs['hidden_size']} but R is {list(R.shape)}")
        B = self.const(ins[3], node, "B") if len(ins) > 3 and ins[3] is not None else None
        if len(ins) > 4 and ins[4] is not None:
            raise _refuse(node, "sequence_lens (per-sequence lengths) has no gatescope equivalent")
        states: list[_Sym | None] = []
        for j in range(5, 7 if arch == "lstm" else 6):
            v = ins[j] if len(ins) > j else None
            if v is None or (isinstance(v, _Sym) and v.tag == "zeros"):
                states.append(None)
            elif isinstance(v, np.ndarray):
                if np.any(v):
                    raise _refuse(
                        node, "a non-zero constant initial state has no gatescope equivalent"
                    )
                states.append(None)
            elif isinstance(v, _Sym) and v.tag in ("input", "state_in"):
                if v.tag == "input":
                    self.role(v.name, "state", node)
                    v = _Sym("state_in", name=v.name)
                states.append(v)
            else:
                raise _refuse(node, "its initial state must be zeros or a graph input")
        P = None
        if arch == "lstm" and len(ins) > 7 and ins[7] is not None:
            P = self.const(ins[7], node, "P")
        k = len(self.layers)
        self.layers.append(_Layer(arch, W, R, B, P, attrs, states))
        outs = [
            _Sym("seq", n=k + 1, tm=True, dirs=True, ndirs=nd),
            _Sym("state", which="h", layers=(k,)),
        ]
        if arch == "lstm":
            outs.append(_Sym("state", which="c", layers=(k,)))
        return outs

    op_LSTM = op_GRU = op_RNN = _recurrent

    # -- the head

    def op_Gemm(self, node, ins, attrs):
        a = ins[0]
        if not (isinstance(a, _Sym) and a.tag == "last"):
            raise _refuse(node, "gatescope reads Gemm only as a head on the last hidden state")
        for name in ("alpha", "beta"):
            if attrs.get(name, 1.0) != 1.0:
                raise _refuse(node, f"{name}={attrs[name]} has no gatescope equivalent")
        if attrs.get("transA", 0):
            raise _refuse(node, "transA=1 has no gatescope equivalent")
        W = self.const(ins[1], node, "the weight")
        W = W if attrs.get("transB", 0) else W.T  # (C, H)
        b = self.const(ins[2], node, "the bias") if len(ins) > 2 and ins[2] is not None else None
        return [self._lin(node, a, W, b)]

    def op_MatMul(self, node, ins, attrs):
        a = ins[0]
        if isinstance(a, _Sym) and a.tag == "seq" and a.n > 0 and not a.dirs:
            steps = True
        elif isinstance(a, _Sym) and a.tag == "last":
            steps = False
        else:
            raise _refuse(node, "gatescope reads MatMul only as a head on the hidden states")
        W = self.const(ins[1], node, "the weight")
        if W.ndim != 2:
            raise _refuse(node, "the head weight must be a matrix")
        out = self._lin(node, a, W.T, None)
        out.tm = a.tm if steps else None
        out.info["steps"] = steps
        return [out]

    def _lin(self, node, a, W, b):
        if b is not None and b.shape not in ((W.shape[0],), (1, W.shape[0])):
            raise _refuse(node, f"the head bias must be (C,), got {list(b.shape)}")
        return _Sym(
            "lin",
            n=a.n,
            info={
                "W": W,
                "b": None if b is None else b.reshape(-1),
                "softmax": False,
                "steps": False,
            },
        )

    def op_Add(self, node, ins, attrs):
        if self.shapeish(ins):
            return [_Sym("shape")]
        lin, b = (ins[0], ins[1]) if isinstance(ins[0], _Sym) else (ins[1], ins[0])
        if not (isinstance(lin, _Sym) and lin.tag == "lin" and lin.info["b"] is None):
            raise _refuse(node, "gatescope reads Add only as the bias of its head")
        b = self.const(b, node, "the bias")
        C = lin.info["W"].shape[0]
        if b.size != C or b.shape[-1] != C:
            raise _refuse(node, f"the head bias must be (C,) = ({C},), got {list(b.shape)}")
        return [_Sym("lin", n=lin.n, tm=lin.tm, info={**lin.info, "b": b.reshape(-1)})]

    def op_Softmax(self, node, ins, attrs):
        v = ins[0]
        axis = attrs.get("axis", -1 if self.opset >= 13 else 1)
        if not (isinstance(v, _Sym) and v.tag == "lin") or axis not in (
            -1,
            2 if v.info["steps"] else 1,
        ):
            raise _refuse(node, "gatescope reads Softmax only over the head's classes")
        return [_Sym("lin", n=v.n, tm=v.tm, info={**v.info, "softmax": True})]


def _config(reader: _Reader) -> RecurrentConfig:
    layers = reader.layers
    if not layers:
        raise ValueError("from_onnx: the graph has no LSTM, GRU or RNN operator")
    first = layers[0]
    arch = first.arch
    G = {"lstm": 4, "gru": 3, "rnn": 1}[arch]
    H = first.R.shape[2]
    nd = first.W.shape[0]
    lbr = [int(la.attrs.get("linear_before_reset", 0)) for la in layers]
    acts = [tuple(la.attrs.get("activations") or ["Tanh"]) for la in layers]
    for k, la in enumerate(layers):
        if la.arch != arch:
            raise ValueError(
                f"from_onnx: layer {k} is {la.arch.upper()} but layer 0 is {arch.upper()}"
            )
        if la.W.shape[0] != nd:
            raise ValueError(f"from_onnx: layer {k} has {la.W.shape[0]} directions, layer 0 {nd}")
        if la.R.shape != (nd, G * H, H) or la.W.shape[1] != G * H:
            raise ValueError(f"from_onnx: layer {k} has hidden size {la.R.shape[2]}, layer 0 {H}")
        if k and la.W.shape[2] != nd * H:
            raise ValueError(
                f"from_onnx: layer {k} reads {la.W.shape[2]} features, not {nd * H} (the "
                "layer below's output)"
            )
        if la.W.dtype != first.W.dtype:
            raise ValueError("from_onnx: the layers' weights have different dtypes")
    if arch == "gru" and len(set(lbr)) > 1:
        raise ValueError("from_onnx: the GRU layers differ in linear_before_reset")
    if arch == "rnn" and len(set(acts)) > 1:
        raise ValueError("from_onnx: the RNN layers differ in their activation")
    dtype = str(first.W.dtype)
    if dtype not in ("float32", "float64"):
        raise ValueError(f"from_onnx: weights must be float32 or float64, got {dtype}")
    peephole = any(la.P is not None and np.any(la.P) for la in layers)
    return RecurrentConfig(
        arch=arch,
        input_size=first.W.shape[2],
        hidden_size=H,
        num_layers=len(layers),
        bias=any(la.B is not None for la in layers),
        batch_first=bool(reader.batch_first),
        dtype=dtype,
        reset_after=arch == "gru" and bool(lbr[0]),
        nonlinearity="relu" if arch == "rnn" and acts[0] == ("Relu",) else "tanh",
        variant="peephole" if peephole else "vanilla",
        bidirectional=nd == 2,
    )


def _fill(reader: _Reader, model: Recurrent) -> None:
    c = model.config
    arch, H = c.arch, c.hidden_size
    src, dst = _ONNX_ORDER[arch], _GS_ORDER[arch]
    for k, la in enumerate(reader.layers):
        for d in range(model.num_directions):  # ONNX's order: forward, reverse
            p = model.layer_params(k, bool(d))
            p["weight_ih"][...] = reorder(la.W[d], src, dst)
            p["weight_hh"][...] = reorder(la.R[d], src, dst)
            if c.bias:
                GH = la.W.shape[1]
                B = la.B[d] if la.B is not None else np.zeros(2 * GH, la.W.dtype)
                wb, rb = reorder(B[:GH], src, dst), reorder(B[GH:], src, dst)
                if arch == "gru" and c.reset_after:
                    p["bias"][...] = wb
                    p["bias"][: 2 * H] += rb[: 2 * H]
                    p["bias_hn"][...] = rb[2 * H :]
                else:
                    p["bias"][...] = wb + rb
            if c.variant == "peephole":
                P = la.P[d] if la.P is not None else np.zeros(3 * H, la.W.dtype)
                p["peephole"][...] = reorder(P, _PEEP_ONNX, _PEEP_GS)


def read_onnx(path: str | os.PathLike[str]) -> tuple[Recurrent | SequenceModel, dict[str, Any]]:
    """`from_onnx`, also returning what the graph says beyond the weights (its meta).

    meta: ``source`` ("onnx"), ``producer``, ``inputs`` (the sequence input's name, and the
    initial-state inputs' if any), ``outputs`` (graph output -> what it is), and for a head
    ``output_activation`` ("softmax" when the graph ends in one, else None).
    """
    onnx = require("onnx", "onnx", "from_onnx")
    path_str = os.fspath(path)
    model_proto = onnx.load(path_str)
    reader = _Reader(onnx, model_proto)
    config = _config(reader)
    L = config.num_layers
    nd = 2 if config.bidirectional else 1
    for k, la in enumerate(reader.layers):
        for st in la.states:
            if st is None:
                continue
            if st.index is None and L > 1:
                raise ValueError(
                    f"from_onnx: layer {k} reads a whole graph input as its initial state"
                )
            if st.index is not None and (st.index != nd * k or st.count != nd):
                raise ValueError(
                    f"from_onnx: layer {k} starts from entries {st.index}..{st.index + st.count - 1}"
                    f" of the state, not layer {k}'s"
                )
    heads, described = [], {}
    for name, v in reader.outputs:
        if isinstance(v, _Sym) and v.tag == "lin":
            heads.append(v)
            described[name] = "head"
        elif isinstance(v, _Sym) and v.tag == "seq" and v.n == L and not v.dirs:
            if v.tm == config.batch_first:
                raise ValueError(
                    f"from_onnx: output {name!r} has another layout (batch/time) than the input"
                )
            described[name] = "y"
        elif isinstance(v, _Sym) and v.tag == "seq" and v.n == L and v.dirs:
            described[name] = "y (with the direction axis)"
        elif isinstance(v, _Sym) and v.tag in ("state", "last"):
            described[name] = f"final {v.which or 'h'} state"
        else:
            raise ValueError(
                f"from_onnx: graph output {name!r} is not the recurrent output, a final state "
                "or a head on the top layer"
            )
    meta: dict[str, Any] = {
        "source": "onnx",
        "path": path_str,
        "producer": f"{model_proto.producer_name} {model_proto.producer_version}".strip(),
        "inputs": dict(reader.roles),
        "outputs": described,
    }
    if not heads:
        model = build_recurrent(config)
        _fill(reader, model)
        return model, meta
    if len(heads) > 1:
        raise ValueError("from_onnx: the graph has more than one head")
    if config.bidirectional:
        raise ValueError(
            "from_onnx: a head on a bidirectional stack: a gatescope SequenceModel has no "
            "bidirectional stack (export the recurrent layers alone)"
        )
    h = heads[0]
    if h.n != L:
        raise ValueError(f"from_onnx: the head reads layer {h.n - 1}, not the top layer")
    steps = bool(h.info["steps"])
    if steps and h.tm:
        raise ValueError("from_onnx: a task model's per-step output must be batch-first (B, T, C)")
    if not config.batch_first:
        raise ValueError("from_onnx: a task model (stack + head) must take batch-first input")
    W, b = h.info["W"], h.info["b"]
    C = W.shape[0]
    if W.shape[1] != config.hidden_size or str(W.dtype) != config.dtype:
        raise ValueError(f"from_onnx: the head weight is {list(W.shape)} {W.dtype}")
    if steps:
        kind = "classify_steps"
    else:
        kind = "regress_last" if C == 1 and not h.info["softmax"] else "classify_last"
    options: dict[str, Any] = {"bias": config.bias}
    if config.arch == "gru":
        options["reset_after"] = config.reset_after
    if config.arch == "rnn":
        options["nonlinearity"] = config.nonlinearity
    if config.variant != "vanilla":
        options["variant"] = config.variant
    model = SequenceModel.build(
        arch=config.arch,
        input_size=config.input_size,
        hidden_size=config.hidden_size,
        output_size=C,
        kind=kind,
        num_layers=L,
        dtype=config.dtype,
        head_bias=b is not None,
        **options,
    )
    _fill(reader, model.recurrent)
    model.head.params["weight"][...] = W
    if b is not None:
        model.head.params["bias"][...] = b
    meta["output_activation"] = "softmax" if h.info["softmax"] else None
    return model, meta


def from_onnx(path: str | os.PathLike[str]) -> Recurrent | SequenceModel:
    """The gatescope model an ONNX file holds: a Recurrent for a stack of LSTM / GRU / RNN
    operators, a SequenceModel when a Gemm or MatMul + Add head reads the top layer (its
    last step: classify_last, or regress_last for one output; every step: classify_steps).

    Exact: the weights are ONNX's, reordered (and the two biases summed where they always
    appear summed). Graphs with anything gatescope cannot represent are refused with a
    ValueError naming the operator or attribute (see the module docstring).
    """
    return read_onnx(path)[0]
