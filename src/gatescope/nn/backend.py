"""The one place that picks how the sequence paths run a step's element-wise work.

The NumPy code in lstm.py, gru.py and rnn.py is the reference: the math, written once, on
`functional.sigmoid` / `functional.tanh` (NumPy's own np.exp and np.tanh). An accelerator
is optional and is held to the reference's values, not its bits:

    TOLERANCE    float64 1e-12, float32 1e-5, as max|a - b| / max|b| over each array
                 (outputs, final states, every trace entry, every gradient)

plus the reference's own conditioning: 8 times max|b' - b|, where b' is the reference run
with every sigmoid and tanh value moved by one ulp (a saturated gate's derivative is only
good to an ulp in any implementation). That is, max|a - b| <= tol * max|b| + 8 max|b' - b|.
A kernel also gives the same bits run to run on one machine (deterministic; it need not
give the reference's bits). tests/test_backends.py checks both.

Backends (`BACKENDS`): "numpy", the reference, always there; "numba", the fused kernels of
`kernels_numba.py` (numba is a third-party dependency: if it does not import, asking for
"numba" says so and "auto" falls back to "numpy"); "auto", the default, numba when it
imports. `backend(name)` resolves a name (an explicit name wins, then the environment
variable GATESCOPE_BACKEND, then "auto"); `kernels(dtype, name)` hands a sequence path the
kernel table for its float type, or None for the reference code.

The seam for another backend (a GPU array library, say): a loader in `_LOADERS` that
imports its third-party module and returns one kernel table per float type, with the
functions `kernels_numba._bind` lists (same names, arguments and in-place outputs): `pack`
(a weight matrix in the backend's own layout) and one call per forward pass or chunk of
backward's steps, recurrent products included. The products over whole sequences
(backward's dx and weight gradients) stay np.matmul; a backend whose arrays live off the
CPU would move those here too.
"""

from __future__ import annotations

import functools
import importlib
import os

import numpy as np

BACKENDS = ("auto", "numpy", "numba")
TOLERANCE = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}


def _load_numba():
    """The numba kernel tables, or None where numba (third-party) does not import."""
    try:
        importlib.import_module("numba")
    except ImportError:
        return None
    from . import kernels_numba

    return kernels_numba.KERNELS


_LOADERS = {"numba": _load_numba}


@functools.cache
def _tables(name: str):
    """Load a backend once (a failed import of numba is not retried per call)."""
    return _LOADERS[name]()


def backend(name: str | None = None) -> str:
    """The element-wise backend of the sequence paths: "numba" or "numpy".

    `name` (one of BACKENDS) wins; else the environment variable GATESCOPE_BACKEND; else
    "auto": numba's kernels when numba imports, the NumPy reference otherwise.
    """
    name = name or os.environ.get("GATESCOPE_BACKEND") or "auto"
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "numpy":
        return "numpy"
    if _tables("numba") is not None:
        return "numba"
    if name == "numba":
        raise ImportError("backend 'numba' needs numba, which does not import: pip install numba")
    return "numpy"


def kernels(dtype: np.dtype, name: str | None = None):
    """The kernel table for `dtype` of `backend(name)`, or None for the NumPy reference."""
    chosen = backend(name)
    return None if chosen == "numpy" else _tables(chosen)[np.dtype(dtype)]


def variant_kernels(dtype: np.dtype, name: str | None = None):
    """The LSTM variants' kernel table (`kernels_variants_numba`) for `dtype` of
    `backend(name)`, or None for the NumPy reference of `lstm_variants.py`."""
    if backend(name) == "numpy":
        return None
    from . import kernels_variants_numba

    return kernels_variants_numba.KERNELS[np.dtype(dtype)]
