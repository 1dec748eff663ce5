"""gatescope: LSTM, GRU and vanilla RNN in NumPy, with exact backprop through time and
instruments that show what happens inside.

    import numpy as np, gatescope as gs
    layer = gs.LSTM(input_size=4, hidden_size=32, seed=0)
    y, (h, c) = layer(np.random.default_rng(0).normal(size=(8, 100, 4)))
    dx = layer.backward(np.ones_like(y))
"""

from __future__ import annotations

from .interop import (
    TorchTrace,
    from_keras,
    from_onnx,
    from_torch,
    to_keras,
    to_onnx,
    to_torch,
    trace_torch,
)
from .model import SequenceModel, load_model
from .nn import (
    GRU,
    LSTM,
    RNN,
    GRUCell,
    Linear,
    LSTMCell,
    Recurrent,
    RecurrentConfig,
    RNNCell,
    build_recurrent,
    cross_entropy,
    mse,
)

__version__ = "0.2.0"

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "GRUCell",
    "LSTMCell",
    "Linear",
    "RNNCell",
    "Recurrent",
    "RecurrentConfig",
    "SequenceModel",
    "TorchTrace",
    "__version__",
    "build_recurrent",
    "cross_entropy",
    "from_keras",
    "from_onnx",
    "from_torch",
    "load_model",
    "mse",
    "to_keras",
    "to_onnx",
    "to_torch",
    "trace_torch",
]
