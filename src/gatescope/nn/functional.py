"""Numerically stable element-wise functions shared by every layer: the reference math.

Each takes a float32 or float64 array (or a scalar or list, as NumPy would read it) and
keeps the dtype. None warns or returns NaN for arguments of +-1000. This is NumPy's own
np.exp and np.tanh; the optional numba kernels (`nn/kernels_numba.py`) compute the same
functions their own way and are tested against these within a stated tolerance.
"""

from __future__ import annotations

import numpy as np


def sigmoid(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """sigma(z) = 1 / (1 + exp(-z)), in a form that never overflows.

    With e = exp(-|z|) in (0, 1]: sigma(z) = 1 / (1 + e) for z >= 0 and e / (1 + e) for
    z < 0. The small tail keeps its digits (sigma(-50) = 1.93e-22, where the form
    (1 + tanh(z / 2)) / 2 cancels to 0), and exp(+1000) is never evaluated. May run in place
    (out=z).
    """
    z = _float_array(z)
    e = np.exp(-np.abs(z))  # exp(-|z|), in (0, 1]
    numerator = np.maximum(e, np.copysign(1, z))  # where(z < 0, e, 1) in one pass: e <= 1
    return np.divide(numerator, 1 + e, out=out)


def tanh(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """tanh(x): NumPy's, which saturates to +-1 without overflow. May run in place."""
    return np.tanh(_float_array(x), out=out)


def _float_array(x) -> np.ndarray:
    """x as a float32 or float64 array: scalars, lists and other number types as the float
    type NumPy promotes them to (float16 to float32, integers to float64)."""
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.result_type(x.dtype, np.float32))
    return x


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """log softmax(z) = z - max(z) - log(sum(exp(z - max(z)))): exact and overflow-free."""
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """softmax(z) = exp(log_softmax(z))."""
    return np.exp(log_softmax(z, axis=axis))
