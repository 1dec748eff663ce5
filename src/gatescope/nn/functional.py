"""Numerically stable element-wise functions shared by every layer, and the choice of backend.

All of them accept float32 or float64 arrays and keep the dtype. None of them warns or
returns NaN for pre-activations of +-1000. sigmoid and tanh are written out in IEEE-exact
operations (`exp_parts`): within 3 ulp, the same bits on every machine, and the same bits
as the optional numba kernels (`_numba.py`), which repeat them operation for operation.
`backend()` / `kernels()` say which of the two runs the sequence paths' step loops;
`chunk_steps` is how many steps of dL/da backward keeps at once.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import numpy as np

BACKENDS = ("auto", "numpy", "numba")


@dataclass(frozen=True)
class ExpConstants:
    """The constants of `exp_parts` for one float type, each of that type.

    The numba kernels (`_numba.py`) use these too and evaluate the same operations in the
    same order, which is why the two backends give the same bits.
    """

    log2e: np.floating
    ln2_hi: np.floating  # ln 2 = ln2_hi + ln2_lo; k ln2_hi is exact for every k that occurs
    ln2_lo: np.floating
    lo: np.floating  # y is clipped here: exp(lo) rounds to 0, and 2^(k/2) is still normal
    q: tuple  # expm1(r) = r + r^2 q(r): q's coefficients, highest degree first
    magic: np.floating  # 1.5 * 2^mant: the bits of k + magic are magic's bits + k
    magic_bits: int
    int_type: type  # the integer of the float's width
    bias: int  # exponent bias
    mant: int  # mantissa bits


def _constants(dtype, ln2_hi: float, ln2_lo: float, lo: float, q: tuple) -> ExpConstants:
    f = np.dtype(dtype).type
    mant, int_type, bias = (52, np.int64, 1023) if f is np.float64 else (23, np.int32, 127)
    magic = f(1.5 * 2.0**mant)
    return ExpConstants(
        log2e=f(1.4426950408889634),
        ln2_hi=f(ln2_hi),
        ln2_lo=f(ln2_lo),
        lo=f(lo),
        q=tuple(f(c) for c in q),
        magic=magic,
        magic_bits=int(np.array(magic).view(int_type)),
        int_type=int_type,
        bias=bias,
        mant=mant,
    )


EXP_CONSTANTS = {
    # q: the Taylor series 1/13! r^11 + ... + 1/3! r + 1/2!, truncation error 4e-18
    np.dtype(np.float64): _constants(
        np.float64,
        6.93147180369123816490e-01,
        1.90821492927058770002e-10,
        -1080.0,
        tuple(1.0 / math.factorial(n) for n in range(13, 1, -1)),
    ),
    # q: degree 4, fitted for the least maximum relative error of exp(r) on |r| <= ln2/2
    # (3e-9, a fortieth of an ulp; the Taylor series needs degree 6 for as little), by
    # Lawson's iteration; two fewer operations, 20% faster kernels (benchmarks/NOTES.md)
    np.dtype(np.float32): _constants(
        np.float32,
        6.9314575195e-01,
        1.4286067653e-06,
        -110.0,
        (
            0.0013814596584550247,
            0.00836871731177316,
            0.041668388105532875,
            0.16666520627619902,
            0.4999999344745987,
        ),
    ),
}


def exp_parts(y: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray):
    r"""exp(y) for y <= 0 (or NaN) in three parts, m, p1, p2, with

        exp(y) = (1 + m) p1 p2,    m = expm1(r),  |r| <= ln2 / 2,   p1 p2 = 2^k.

    y = k ln2 + r (Cody-Waite, ln2 in two parts); expm1(r) = r + r^2 q(r), q a polynomial
    (Horner); 2^k in two halves, 2^floor(k/2) and 2^(k - floor(k/2)), built from exponent
    bits, so that a subnormal exp(y) rounds once. Only IEEE-exact operations: the same bits
    on every machine, and the numba kernels repeat these operations one for one. y becomes
    m; a, b, c are scratch arrays of y's shape and dtype. Returns (m, p1, p2): y, a and c.
    """
    k = EXP_CONSTANTS[y.dtype]
    np.maximum(y, k.lo, out=y)
    np.multiply(y, k.log2e, out=c)
    np.rint(c, out=c)  # k, an integral float
    np.multiply(c, k.ln2_hi, out=b)
    r = np.subtract(y, b, out=a)
    np.multiply(c, k.ln2_lo, out=b)
    r -= b  # r = (y - k ln2_hi) - k ln2_lo
    q = np.multiply(r, k.q[0], out=b)
    for coef in k.q[1:-1]:
        q += coef
        q *= r
    q += k.q[-1]  # q(r)
    m = np.multiply(r, r, out=y)
    m *= q
    m += r  # expm1(r) = r^2 q(r) + r
    # 2^k: k from the low bits of k + magic, then exponent fields (no float -> int cast,
    # which would warn on NaN)
    c += k.magic
    ki = c.view(k.int_type)
    ki -= k.magic_bits
    k1 = np.right_shift(ki, 1, out=a.view(k.int_type))  # floor(k / 2)
    ki -= k1
    k1 += k.bias
    k1 <<= k.mant
    ki += k.bias
    ki <<= k.mant
    return m, a, c


def sigmoid(z: np.ndarray, out: np.ndarray | None = None, work: tuple | None = None) -> np.ndarray:
    """sigma(z) = 1 / (1 + exp(-z)), within 3 ulp everywhere, tails included.

    With e = exp(-|z|) in (0, 1], which never overflows: sigma(z) = 1 / (1 + e) for z >= 0
    and e / (1 + e) for z < 0, so tiny gate values (sigma(-50) = 1.9e-22) keep their digits
    instead of cancelling to 0 as in the (1 + tanh(z / 2)) / 2 form. Both cases are one
    division, max(e, s) / (1 + e) with s = copysign(1, z): the numerator is e where z < 0
    and 1 elsewhere. exp is `exp_parts`, so these are the same bits on every machine and
    backend.

    May run in place (out=z). `work`: four scratch arrays of z's shape and dtype (not z),
    to allocate nothing (see `workspace`).
    """
    z, out = _float_array(z, out)
    s, a, b, c = work if work is not None else workspace(z, 4)
    np.copysign(1, z, out=s)  # the sign, kept before z may be overwritten
    y = np.abs(z, out=out)
    np.negative(y, out=y)
    return sigmoid_from_parts(*exp_parts(y, a, b, c), s)


def sigmoid_from_parts(m, p1, p2, s) -> np.ndarray:
    """sigma(z) from exp(-|z|) = (1 + m) p1 p2 and s = copysign(1, z), into m."""
    m += 1
    m *= p1
    e = np.multiply(m, p2, out=m)  # exp(-|z|)
    np.maximum(e, s, out=s)  # the numerator: e where z < 0, else 1
    e += 1
    return np.divide(s, e, out=e)


def tanh(x: np.ndarray, out: np.ndarray | None = None, work: tuple | None = None) -> np.ndarray:
    """tanh(x) = -expm1(-2|x|) / (2 + expm1(-2|x|)) with the sign of x, within 3 ulp.

    expm1(y) = m p1 p2 + (p1 p2 - 1) from `exp_parts`: one rounding, no cancellation near 0
    (there p1 = p2 = 1 and expm1 is m itself). The same bits on every machine and backend,
    unlike np.tanh, whose SIMD loops depend on the CPU. May run in place (out=x); `work`:
    four scratch arrays of x's shape and dtype (not x).
    """
    x, out = _float_array(x, out)
    s, a, b, c = work if work is not None else workspace(x, 4)
    np.copysign(1, x, out=s)  # the sign, kept before x may be overwritten (-0 included)
    y = np.abs(x, out=out)
    y *= -2
    return tanh_from_parts(*exp_parts(y, a, b, c), s)


def tanh_from_parts(m, p1, p2, s) -> np.ndarray:
    """tanh(x) from exp(-2|x|) = (1 + m) p1 p2 and s = copysign(1, x), into m."""
    m *= p1
    m *= p2
    p1 *= p2
    p1 -= 1
    em1 = np.add(m, p1, out=m)  # expm1(-2|x|)
    np.add(em1, 2, out=p1)
    np.divide(em1, p1, out=em1)
    return np.copysign(em1, s, out=em1)


def _float_array(x, out):
    """x as a float32 or float64 array (other numbers as the float type NumPy would promote
    them to), and an output array for it (`out`, or a new one: 0-d inputs included)."""
    x = np.asarray(x)
    if x.dtype not in EXP_CONSTANTS:
        x = x.astype(np.result_type(x.dtype, np.float32))
    return x, (np.empty_like(x) if out is None else out)


def workspace(like: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """n scratch arrays of `like`'s shape and dtype, for the `work` argument above."""
    return tuple(np.empty(like.shape, like.dtype) for _ in range(n))


def backend(name: str | None = None) -> str:
    """The element-wise backend of the sequence paths: "numba" or "numpy".

    `name` (one of BACKENDS) wins; else the environment variable GATESCOPE_BACKEND; else
    "auto": numba's fused kernels when numba imports (it is a dependency of gatescope),
    the plain NumPy loops otherwise. Both compute the same bits (tested byte for byte).
    """
    name = name or os.environ.get("GATESCOPE_BACKEND") or "auto"
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "numpy":
        return "numpy"
    if _numba_kernels() is not None:
        return "numba"
    if name == "numba":
        raise ImportError("backend 'numba' needs numba, which does not import: pip install numba")
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


# Multiply-adds per step of a recurrent product below which it is not a BLAS call but
# `small_product` (and, with numba, every step of a sequence is one kernel call).
SMALL_MACS = 65536


def small_product(x: np.ndarray, w: np.ndarray, out: np.ndarray, work: np.ndarray) -> np.ndarray:
    """out (B, N) = x (B, K) @ w (K, N) as sum over k of x[:, k] w[k], in order of k.

    Used for the recurrent products below SMALL_MACS multiply-adds, where the numba kernels
    run a plain loop instead of BLAS: both compute these products and these sums in this
    order. (np.add.reduce over a non-inner axis adds the rows in order; a test checks it.)
    `work` is scratch of shape (B, K, N).
    """
    np.multiply(x[:, :, None], w[None], out=work)
    return np.add.reduce(work, axis=1, out=out)


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
