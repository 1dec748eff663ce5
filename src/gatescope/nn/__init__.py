"""The math: recurrent layers, a dense head and losses, each with an exact backward pass.

Imports nothing from the rest of gatescope.
"""

from __future__ import annotations

from .checks import Seed
from .functional import log_softmax, sigmoid, softmax, tanh
from .gru import GRU, GRUCell
from .linear import Linear
from .losses import cross_entropy, mse
from .lstm import LSTM, LSTMCell
from .recurrent import Recurrent, RecurrentConfig
from .rnn import RNN, RNNCell

ARCH_CLASSES: dict[str, type[Recurrent]] = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


def build_recurrent(config: RecurrentConfig, seed: Seed = 0) -> Recurrent:
    """A freshly initialised layer of the architecture and options in `config`."""
    cls = ARCH_CLASSES[config.arch]
    layer = cls.__new__(cls)
    Recurrent.__init__(layer, config, seed)
    return layer


__all__ = [
    "ARCH_CLASSES",
    "GRU",
    "GRUCell",
    "LSTM",
    "LSTMCell",
    "Linear",
    "RNN",
    "RNNCell",
    "Recurrent",
    "RecurrentConfig",
    "build_recurrent",
    "cross_entropy",
    "log_softmax",
    "mse",
    "sigmoid",
    "softmax",
    "tanh",
]
