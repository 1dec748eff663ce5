"""Numerically stable element-wise functions shared by every layer.

All of them accept float32 or float64 arrays and keep the dtype. None of them warns or
returns NaN for pre-activations of +-1000.
"""

from __future__ import annotations

import numpy as np


def sigmoid(
    z: np.ndarray, out: np.ndarray | None = None, tmp: np.ndarray | None = None
) -> np.ndarray:
    """sigma(z) = 1 / (1 + exp(-z)), accurate to the last bit in relative terms.

    With e = exp(-|z|) in (0, 1], which never overflows: sigma(z) = 1 / (1 + e) for z >= 0
    and e / (1 + e) for z < 0, so tiny gate values (sigma(-50) = 1.9e-22) keep their digits
    instead of cancelling to 0 as in the (1 + tanh(z / 2)) / 2 form. Both cases are one
    division, max(e, sign(z)) / (1 + e): the numerator is e where z < 0 and 1 elsewhere.

    May run in place (out=z). `tmp`, an array of z's shape and dtype (not z), is scratch
    space: pass one to allocate nothing. Six passes over z, no masked (`where=`) ufuncs.
    """
    if tmp is None:
        tmp = np.empty_like(z)
    np.sign(z, out=tmp)  # -1, 0 or 1, kept before z may be overwritten
    e = np.abs(z, out=out)
    np.negative(e, out=e)
    np.exp(e, out=e)  # e = exp(-|z|)
    np.maximum(e, tmp, out=tmp)  # the numerator: e where z < 0, else 1
    np.add(e, 1, out=e)
    return np.divide(tmp, e, out=e)


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """log softmax(z) = z - max(z) - log(sum(exp(z - max(z)))): exact and overflow-free."""
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """softmax(z) = exp(log_softmax(z))."""
    return np.exp(log_softmax(z, axis=axis))
