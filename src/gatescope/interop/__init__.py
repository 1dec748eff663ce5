"""Interop with the other ecosystems: PyTorch, Keras 3 and ONNX, exact in both directions.

    gs.from_torch(module), gs.to_torch(model)      torch.nn.LSTM / GRU / RNN
    gs.trace_torch(model, *inputs, loss_fn=None)   every LSTM / GRU / RNN inside a torch model:
                                                   gates, states, dL/dh_t (TorchTrace)
    gs.from_keras(layer), gs.to_keras(model)       keras.layers.LSTM / GRU / SimpleRNN (+ Dense)
    gs.from_onnx(path), gs.to_onnx(model, path)    ONNX LSTM / GRU / RNN operators (+ a head)
    load_model_file(path)                          .onnx / .keras / gatescope checkpoints ->
                                                   (SequenceModel, meta)

Each optional dependency is imported inside the function that needs it; a missing one is an
ImportError naming the extra to install (gatescope[torch], gatescope[keras], gatescope[onnx]).
"""

from __future__ import annotations

from .files import SUFFIXES, load_model_file
from .keras import from_keras, to_keras
from .onnx import from_onnx, to_onnx
from .torch import TorchTrace, from_torch, to_torch, trace_torch

__all__ = [
    "SUFFIXES",
    "TorchTrace",
    "from_keras",
    "from_onnx",
    "from_torch",
    "load_model_file",
    "to_keras",
    "to_onnx",
    "to_torch",
    "trace_torch",
]
