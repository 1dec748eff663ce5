"""Keras 3 import and export: `from_keras(layer_or_model)` and `to_keras(model)`.

Keras packs a layer's weights column-wise: ``kernel`` (D, G*H), ``recurrent_kernel``
(H, G*H) and one ``bias``, so gatescope's ``weight_ih`` is ``kernel.T`` with its gate
blocks reordered:

    ===========  ==============  ============  =================================
    layer        Keras order     gatescope     bias
    ===========  ==============  ============  =================================
    LSTM         i f c o         i f g o       (4H,), the same
    GRU          z r h           r z n         reset_after=True: (2, 3H), input
                                               and recurrent rows; False: (3H,)
    SimpleRNN    h               h             (H,)
    ===========  ==============  ============  =================================

Keras' GRU keeps h with z (``h = z * h_prev + (1 - z) * hh``), as gatescope does, and its
``reset_after=True`` (the Keras default) is gatescope's ``reset_after=True``: the recurrent
bias of the candidate becomes ``bias_hn``, the other recurrent biases are added to the input
ones (they always appear summed). Both directions are exact up to the rounding of that sum.

What cannot be represented exactly is refused with a ValueError naming the option: an
activation other than the defaults (tanh, with sigmoid gates; SimpleRNN tanh or relu),
``go_backwards`` (outside a Bidirectional wrapper), ``stateful``, a Bidirectional wrapper
with a merge_mode other than "concat", any other layer in a model. Dropout (``dropout=``, ``recurrent_dropout=``) acts only in
training in Keras and is ignored, as ``from_torch`` ignores PyTorch's.

A model is a chain: recurrent layers of one kind and size (each but the last with
``return_sequences=True``, as Keras itself needs), optionally one ``Dense`` head. Without a
head ``from_keras`` returns the gatescope stack (a Recurrent, batch-first); with one it
returns a :class:`~gatescope.model.SequenceModel` whose kind follows where the head reads:
the last step (``return_sequences=False``: ``classify_last``, or ``regress_last`` for one
linear output) or every step (``classify_steps``). A softmax head is accepted for the
classify kinds: gatescope's outputs are the logits, its probabilities ``softmax(out)``.

``keras.layers.Bidirectional(layer, merge_mode="concat")`` is gatescope's
``bidirectional=True`` (the forward layer's weights are the ``_l{k}`` parameters, the
backward layer's the ``_l{k}_reverse`` ones); a chain is then all Bidirectional layers, and
has no head (a SequenceModel has no bidirectional stack). Keras flips the backward layer's
sequence back into real time, as gatescope does, so with ``return_sequences=True`` the
outputs agree step by step; with ``return_sequences=False`` Keras' output is
``concat(y[:, -1, :H], y[:, 0, H:])`` (each direction's last step).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model import SequenceModel
from ..nn import Recurrent, RecurrentConfig, build_recurrent
from ._extras import require_keras
from ._layout import reorder

_KERAS_ORDER = {"lstm": "ifgo", "gru": "zrn", "rnn": "h"}  # Keras' c is gatescope's g
_GS_ORDER = {"lstm": "ifgo", "gru": "rzn", "rnn": "h"}
_CLASS_ARCH = {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "rnn"}
_ARCH_CLASS = {v: k for k, v in _CLASS_ARCH.items()}


def _np(keras: Any, v: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(v))


def _recurrent_spec(layer: Any, backwards: bool = False) -> dict[str, Any]:
    """What one Keras recurrent layer is, checked: arch, sizes, options, dtype.

    A Bidirectional wrapper is its forward layer's spec with ``bidirectional=True``, its
    backward layer checked to be the same but for ``go_backwards``."""
    name = type(layer).__name__
    if name == "Bidirectional":
        if layer.merge_mode != "concat":
            raise ValueError(
                f"from_keras: Bidirectional {layer.name!r} has merge_mode={layer.merge_mode!r}; "
                "gatescope's bidirectional layers concatenate (merge_mode='concat') only"
            )
        if not layer.built:
            raise ValueError(
                f"from_keras: Bidirectional {layer.name!r} is not built: call it on an input"
            )
        fwd = _recurrent_spec(layer.forward_layer)
        _check_compute_dtype(layer, fwd["dtype"])  # the wrapper casts its input to its own
        bwd = _recurrent_spec(layer.backward_layer, backwards=True)
        for key, value in fwd.items():
            if bwd[key] != value:
                raise ValueError(
                    f"from_keras: Bidirectional {layer.name!r}: its backward layer has "
                    f"{key}={bwd[key]!r}, its forward layer {value!r}"
                )
        return {**fwd, "bidirectional": True}
    if name not in _CLASS_ARCH:
        raise ValueError(
            f"from_keras expects keras.layers.LSTM, GRU or SimpleRNN (or a model of them and "
            f"a Dense head), got {name} {getattr(layer, 'name', '')!r}"
        )
    arch = _CLASS_ARCH[name]
    cfg = layer.get_config()
    if bool(cfg.get("go_backwards")) != backwards:
        raise ValueError(
            f"from_keras: {name} {layer.name!r} has go_backwards={cfg.get('go_backwards')}, "
            "which gatescope represents only as the backward layer of a Bidirectional wrapper"
        )
    for option in ("stateful",):
        if cfg.get(option):
            raise ValueError(
                f"from_keras: {name} {layer.name!r} has {option}=True, which gatescope cannot "
                "represent"
            )
    if arch == "rnn":
        if cfg["activation"] not in ("tanh", "relu"):
            raise ValueError(
                f"from_keras: SimpleRNN {layer.name!r} has activation={cfg['activation']!r}; "
                "gatescope's RNN has tanh or relu"
            )
    else:
        for option, default in (("activation", "tanh"), ("recurrent_activation", "sigmoid")):
            if cfg[option] != default:
                raise ValueError(
                    f"from_keras: {name} {layer.name!r} has {option}={cfg[option]!r}; "
                    f"gatescope's {name} has {option}={default!r} only"
                )
    if not layer.built:
        raise ValueError(f"from_keras: {name} {layer.name!r} is not built: call it on an input")
    dtype = str(layer.cell.kernel.dtype)
    if dtype not in ("float32", "float64"):
        raise ValueError(f"from_keras: weights must be float32 or float64, got {dtype}")
    _check_compute_dtype(layer, dtype)
    return {
        "arch": arch,
        "input_size": int(layer.cell.kernel.shape[0]),
        "hidden_size": int(cfg["units"]),
        "bias": bool(cfg["use_bias"]),
        "dtype": dtype,
        "reset_after": bool(cfg.get("reset_after", False)),
        "nonlinearity": cfg["activation"] if arch == "rnn" else "tanh",
        "return_sequences": bool(cfg["return_sequences"]),
        "bidirectional": False,
    }


def _check_compute_dtype(layer: Any, dtype: str) -> None:
    """A mixed-precision policy computes in another dtype than the weights': not exact."""
    compute = str(getattr(layer, "compute_dtype", dtype))
    if compute != dtype:
        raise ValueError(
            f"from_keras: {type(layer).__name__} {layer.name!r} stores {dtype} weights but "
            f"computes in {compute} (a mixed-precision dtype policy); gatescope computes in "
            "the weights' dtype"
        )


def _copy_layer(keras: Any, layer: Any, model: Recurrent, k: int, reverse: bool = False) -> None:
    """Copy Keras layer `layer`'s weights into layer k of `model` (its reverse direction's
    with `reverse`); a Bidirectional wrapper fills both directions."""
    if type(layer).__name__ == "Bidirectional":
        _copy_layer(keras, layer.forward_layer, model, k)
        _copy_layer(keras, layer.backward_layer, model, k, reverse=True)
        return
    c = model.config
    H, arch = c.hidden_size, c.arch
    src, dst = _KERAS_ORDER[arch], _GS_ORDER[arch]
    p = model.layer_params(k, reverse)
    cell = layer.cell
    p["weight_ih"][...] = reorder(_np(keras, cell.kernel).T, src, dst)
    p["weight_hh"][...] = reorder(_np(keras, cell.recurrent_kernel).T, src, dst)
    if not c.bias:
        return
    bias = _np(keras, cell.bias)
    if arch == "gru" and c.reset_after:  # (2, 3H): input row, recurrent row
        b_in, b_rec = reorder(bias[0], src, dst), reorder(bias[1], src, dst)
        p["bias"][...] = b_in
        p["bias"][: 2 * H] += b_rec[: 2 * H]
        p["bias_hn"][...] = b_rec[2 * H :]
    else:
        p["bias"][...] = reorder(bias, src, dst)


def _chain(model: Any) -> list[Any]:
    """The layers of a Keras model that is a single chain, InputLayers left out."""
    layers = [la for la in model.layers if type(la).__name__ != "InputLayer"]
    if type(model).__name__ != "Sequential":
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError("from_keras: the model must have one input and one output")
        prev = model.inputs[0]
        for la in layers:
            if len(la._inbound_nodes) != 1 or la.input is not prev:
                raise ValueError(
                    f"from_keras: the model must be a chain of layers; {type(la).__name__} "
                    f"{la.name!r} does not read the output of the layer before it (only)"
                )
            prev = la.output
    return layers


def from_keras(obj: Any, kind: str | None = None) -> Recurrent | SequenceModel:
    """The gatescope equivalent of a Keras recurrent layer or model (inference semantics).

    A ``keras.layers.LSTM`` / ``GRU`` / ``SimpleRNN``, or a model chaining such layers,
    becomes a batch-first gs.LSTM / GRU / RNN stack; a model ending in a ``Dense`` head
    becomes a SequenceModel (``kind`` overrides the inferred kind; see the module docstring).
    The final states Keras drops (its LSTM returns only the last c) are all in ``trace``.
    gatescope's layers return every step: for a layer with ``return_sequences=False``,
    Keras' output is ``y[:, -1]``.
    """
    keras = require_keras("from_keras")
    if isinstance(obj, keras.Model):
        layers = _chain(obj)
    elif isinstance(obj, keras.layers.Layer):
        layers = [obj]
    else:
        raise ValueError(f"from_keras expects a Keras layer or model, got {type(obj).__name__}")
    head = None
    if isinstance(obj, keras.Model) and layers and type(layers[-1]).__name__ == "Dense":
        head = layers.pop()
    if not layers:
        raise ValueError("from_keras: the model has no recurrent layer")
    specs = [_recurrent_spec(la) for la in layers]
    first = specs[0]
    same = ("arch", "hidden_size", "bias", "dtype", "reset_after", "nonlinearity", "bidirectional")
    for la, s in zip(layers[1:], specs[1:]):
        for key in same:
            if s[key] != first[key]:
                raise ValueError(
                    f"from_keras: layer {la.name!r} has {key}={s[key]!r} but the first "
                    f"recurrent layer has {first[key]!r}; a gatescope stack has one {key}"
                )
    config = RecurrentConfig(
        arch=first["arch"],
        input_size=first["input_size"],
        hidden_size=first["hidden_size"],
        num_layers=len(layers),
        bias=first["bias"],
        batch_first=True,
        dtype=first["dtype"],
        reset_after=first["reset_after"],
        nonlinearity=first["nonlinearity"],
        bidirectional=first["bidirectional"],
    )
    if config.bidirectional and head is not None:
        raise ValueError(
            f"from_keras: Dense {head.name!r} after Bidirectional layers: a gatescope "
            "SequenceModel has no bidirectional stack (load the layers without the head)"
        )
    if head is None:
        model = build_recurrent(config)
        for k, la in enumerate(layers):
            _copy_layer(keras, la, model, k)
        return model
    return _with_head(keras, config, layers, specs[-1]["return_sequences"], head, kind)


def _with_head(
    keras: Any, config: RecurrentConfig, layers: list, steps: bool, head: Any, kind: str | None
) -> SequenceModel:
    cfg = head.get_config()
    activation = cfg["activation"]
    if activation not in ("linear", "softmax"):
        raise ValueError(
            f"from_keras: Dense {head.name!r} has activation={activation!r}; a gatescope head "
            "is linear (a softmax head is accepted: gatescope outputs its logits)"
        )
    C = int(cfg["units"])
    if kind is None:
        if steps:
            kind = "classify_steps"
        else:
            kind = "regress_last" if C == 1 and activation == "linear" else "classify_last"
    if (kind == "classify_steps") != steps:
        raise ValueError(
            f"from_keras: kind={kind!r} but the last recurrent layer has "
            f"return_sequences={steps}; classify_steps reads every step, the other kinds the last"
        )
    if activation == "softmax" and kind == "regress_last":
        raise ValueError("from_keras: a softmax head cannot be a regress_last model")
    _check_compute_dtype(head, str(head.kernel.dtype))
    if str(head.kernel.dtype) != config.dtype:
        raise ValueError(
            f"from_keras: Dense {head.name!r} is {head.kernel.dtype} but the recurrent layers "
            f"are {config.dtype}"
        )
    options: dict[str, Any] = {"bias": config.bias}
    if config.arch == "gru":
        options["reset_after"] = config.reset_after
    if config.arch == "rnn":
        options["nonlinearity"] = config.nonlinearity
    model = SequenceModel.build(
        arch=config.arch,
        input_size=config.input_size,
        hidden_size=config.hidden_size,
        output_size=C,
        kind=kind,
        num_layers=config.num_layers,
        dtype=config.dtype,
        head_bias=bool(cfg["use_bias"]),
        **options,
    )
    for k, la in enumerate(layers):
        _copy_layer(keras, la, model.recurrent, k)
    model.head.params["weight"][...] = _np(keras, head.kernel).T  # (C, H)
    if cfg["use_bias"]:
        model.head.params["bias"][...] = _np(keras, head.bias)
    return model


def to_keras(model: Recurrent | SequenceModel, return_sequences: bool = True) -> Any:
    """A ``keras.Sequential`` computing what `model` computes, in the model's dtype.

    A Recurrent (gs.LSTM / GRU / RNN, any num_layers) becomes its Keras layers; the last one
    has ``return_sequences`` (True: the outputs y at every step, as gatescope returns them).
    A SequenceModel adds its head as a linear ``Dense`` (logits), the last recurrent layer
    returning sequences exactly when the kind is classify_steps. Keras models are
    batch-first: a gatescope model with batch_first=False gives a batch-first Keras model.
    LSTM variants other than vanilla are refused (Keras has none of them). A bidirectional
    stack becomes ``Bidirectional(..., merge_mode="concat")`` layers.
    """
    keras = require_keras("to_keras")
    if isinstance(model, SequenceModel):
        rec, head, steps = model.recurrent, model.head, model.kind == "classify_steps"
    elif isinstance(model, Recurrent):
        rec, head, steps = model, None, bool(return_sequences)
    else:
        raise ValueError(f"to_keras expects a gatescope model, got {type(model).__name__}")
    c = rec.config
    if c.arch == "lstm" and c.variant != "vanilla":
        raise ValueError(
            f"to_keras: Keras' LSTM has no {c.variant!r} variant; only variant='vanilla' "
            "LSTMs can be exported"
        )
    H, arch = c.hidden_size, c.arch
    layers: list[Any] = [keras.Input(shape=(None, c.input_size), dtype=c.dtype)]
    for k in range(c.num_layers):
        kwargs: dict[str, Any] = {}
        if arch == "gru":
            kwargs["reset_after"] = c.reset_after
        if arch == "rnn":
            kwargs["activation"] = c.nonlinearity
        cls = getattr(keras.layers, _ARCH_CLASS[arch])
        seq = steps if k == c.num_layers - 1 else True
        layer = cls(
            H, use_bias=c.bias, return_sequences=seq, dtype=c.dtype, name=f"{arch}_l{k}", **kwargs
        )
        if c.bidirectional:
            layer = keras.layers.Bidirectional(
                layer, merge_mode="concat", dtype=c.dtype, name=f"bidirectional_l{k}"
            )
        layers.append(layer)
    if head is not None:
        layers.append(
            keras.layers.Dense(
                head.params["weight"].shape[0],
                use_bias="bias" in head.params,
                dtype=c.dtype,
                name="head",
            )
        )
    km = keras.Sequential(layers)
    src, dst = _GS_ORDER[arch], _KERAS_ORDER[arch]
    for k in range(c.num_layers):
        for reverse in (False, True) if c.bidirectional else (False,):
            p = rec.layer_params(k, reverse)
            weights = [reorder(p["weight_ih"], src, dst).T, reorder(p["weight_hh"], src, dst).T]
            if c.bias:
                b = reorder(p["bias"], src, dst)
                if arch == "gru" and c.reset_after:
                    b_rec = np.zeros_like(b)
                    b_rec[2 * H :] = p["bias_hn"]  # Keras' h block is last, as gatescope's n
                    b = np.stack([b, b_rec])  # (2, 3H)
                weights.append(b)
            target = km.layers[k]
            if c.bidirectional:
                target = target.backward_layer if reverse else target.forward_layer
            target.set_weights(weights)
    if head is not None:
        weights = [head.params["weight"].T]
        if "bias" in head.params:
            weights.append(head.params["bias"])
        km.layers[-1].set_weights(weights)
    return km
