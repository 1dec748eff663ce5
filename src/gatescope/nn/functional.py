"""Numerically stable element-wise functions shared by every layer, and the choice of backend.

All of them accept float32 or float64 arrays and keep the dtype. None of them warns or
returns NaN for pre-activations of +-1000. `backend()` / `kernels()` say whether the sequence
paths run their step loops as NumPy ufuncs or as the optional numba kernels (`_numba.py`);
`chunk_steps` is how many steps of dL/da backward keeps at once.
"""

from __future__ import annotations

import functools
import os

import numpy as np

BACKENDS = ("auto", "numpy", "numba")


def sigmoid(
    z: np.ndarray, out: np.ndarray | None = None, tmp: np.ndarray | None = None
) -> np.ndarray:
    """sigma(z) = 1 / (1 + exp(-z)), accurate to the last bit in relative terms.

    With e = exp(-|z|) in (0, 1], which never overflows: sigma(z) = 1 / (1 + e) for z >= 0
    and e / (1 + e) for z < 0, so tiny gate values (sigma(-50) = 1.9e-22) keep their digits
    instead of cancelling to 0 as in the (1 + tanh(z / 2)) / 2 form. Both cases are one
    division, max(e, sign(z)) / (1 + e): the numerator is e where z < 0 and 1 elsewhere.

    May run in place (out=z). `tmp`, an array of z's shape and dtype (not z), is scratch
    space: pass one to allocate nothing. Seven passes over z, no masked (`where=`) ufuncs.
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


def backend(name: str | None = None) -> str:
    """The element-wise backend of the sequence paths: "numba" or "numpy".

    `name` (one of BACKENDS) wins; else the environment variable GATESCOPE_BACKEND; else
    "auto": numba's fused kernels when numba is installed (`pip install gatescope[fast]`),
    the plain NumPy loops otherwise. Both compute the same numbers (tested equal).
    """
    name = name or os.environ.get("GATESCOPE_BACKEND") or "auto"
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "numpy":
        return "numpy"
    if _numba_kernels() is not None:
        return "numba"
    if name == "numba":
        raise ImportError("backend 'numba' needs numba: pip install 'gatescope[fast]'")
    return "numpy"


def kernels(dtype: np.dtype, name: str | None = None):
    """The numba kernels for `dtype` when `backend(name)` is "numba", else None."""
    return _numba_kernels()[np.dtype(dtype)] if backend(name) == "numba" else None


@functools.cache
def _numba_kernels():
    """Import the optional kernels once (a failed import of numba is not retried per call)."""
    try:
        from ._numba import KERNELS
    except ImportError:
        return None
    return KERNELS


def chunk_steps(T: int, B: int) -> int:
    """Steps per chunk of dL/da that backward keeps: about 1024 rows (B per step) for the
    weight-gradient products, and at most a sixteenth of the sequence, to bound the memory."""
    return max(1, min(-(-1024 // B), -(-T // 16)))


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """log softmax(z) = z - max(z) - log(sum(exp(z - max(z)))): exact and overflow-free."""
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """softmax(z) = exp(log_softmax(z))."""
    return np.exp(log_softmax(z, axis=axis))
