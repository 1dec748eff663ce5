"""Input validation for the layers: one clear ValueError instead of a broadcasting error."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def shape_str(shape: Sequence[int | str | None]) -> str:
    """(2, 'T', 3) -> '(2, T, 3)'; None stands for any size."""
    parts = ["?" if s is None else str(s) for s in shape]
    return "(" + ", ".join(parts) + (",)" if len(parts) == 1 else ")")


def check_array(
    name: str,
    a: object,
    shape: Sequence[int | None],
    dtype: np.dtype,
    *,
    legend: str = "",
) -> np.ndarray:
    """Return `a` as an array of `dtype`, after checking its kind, shape and values.

    `shape` holds the expected sizes, None for free ones. Integer, boolean, complex and
    object arrays are refused rather than silently cast; so are NaN and Inf.
    """
    arr = np.asarray(a)
    if arr.dtype.kind != "f":
        raise ValueError(f"{name} must be a floating-point array, got dtype {arr.dtype}")
    want = f"{shape_str(shape)}{' = ' + legend if legend else ''}"
    if arr.ndim != len(shape) or any(
        s is not None and s != n for s, n in zip(shape, arr.shape, strict=True)
    ):
        raise ValueError(f"{name} must have shape {want}, got {shape_str(arr.shape)}")
    # min and max are NaN if any entry is, +-Inf if any is: no array-sized temporary
    if arr.size and not (np.isfinite(arr.min()) and np.isfinite(arr.max())):
        raise ValueError(f"{name} contains NaN or Inf")
    return np.asarray(arr, dtype=dtype)


def check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    """An int >= `minimum` (default 1; bools refused) as a plain int, else ValueError naming
    `name`. The package's one integer validator (tasks, model, train and sweep use it)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def as_float_dtype(dtype: object) -> np.dtype:
    """np.float32 / np.float64 / 'float32' / 'float64' -> np.dtype; anything else ValueError."""
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}") from e
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


Seed = int | np.random.Generator


def as_generator(seed: Seed) -> np.random.Generator:
    """Return `seed` itself if it is a Generator, else a fresh PCG64 Generator seeded with it."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an int or numpy Generator, got {type(seed).__name__}")
    return np.random.default_rng(int(seed))
