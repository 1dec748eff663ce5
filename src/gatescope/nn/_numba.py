"""The numba kernels: one fused, vectorised element-wise pass per time step.

Imported only through `gatescope.nn.functional.kernels`; where numba (a dependency) cannot
import, the plain NumPy step loops run instead. Each kernel does in one loop over the
step's units what the NumPy path does with dozens of ufunc calls; the matrix products stay
in NumPy (BLAS), except at small sizes (`functional.small_product`).

**The same bits as the NumPy path.** Every kernel evaluates the NumPy path's operations in
the NumPy path's order (a * b * c is (a * b) * c in both), with `functional.exp_parts`'s
exp written out the same way: IEEE-exact operations only, and no fast-math flag that could
change a result (no fused multiply-add, no reassociation, no approximate division).
tests/test_backends.py checks every output, state, trace and gradient bit for bit.

The written-out exp also lets LLVM vectorise (AVX2: 8 float32 or 4 float64 lanes), where
libm's scalar exp and tanh would be slower than NumPy's SIMD loops.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import NamedTuple

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .functional import EXP_CONSTANTS

# error_model="numpy": no zero-division checks (they would stop vectorisation). No
# fast-math flags: every operation rounds exactly as NumPy's ufunc does.
_JIT = {"nogil": True, "cache": True, "error_model": "numpy"}
_INLINE = {"inline": "always", "error_model": "numpy"}


class Constants(NamedTuple):
    """One float type's constants, each of that type. Every kernel takes them as its last
    argument, `const`: one module-level function then serves float32 and float64 (numba
    compiles a version per argument types) and no kernel is a closure over another, which
    numba's cache cannot find again (it compiled and stored such kernels in every process).
    """

    one: np.floating
    two: np.floating
    minus_two: np.floating
    zero: np.floating
    log2e: np.floating
    ln2_hi: np.floating
    ln2_lo: np.floating
    lo: np.floating
    q: tuple


def constants(dtype: type) -> Constants:
    f = np.dtype(dtype).type
    k = EXP_CONSTANTS[np.dtype(dtype)]
    return Constants(f(1), f(2), f(-2), f(0), k.log2e, k.ln2_hi, k.ln2_lo, k.lo, k.q)


@intrinsic
def _pow2_halves(typingctx, kf):
    """(2^floor(k/2), 2^(k - floor(k/2))) for an integral float k: the integer steps of
    `functional.exp_parts` (shift, subtract, add the bias, shift into the exponent), in the
    float's own integer width so that LLVM vectorises them 8 (float32) or 4 (float64) wide."""
    if kf == types.float32:
        ity, fty, bias, mant = ir.IntType(32), ir.FloatType(), 127, 23
    elif kf == types.float64:
        ity, fty, bias, mant = ir.IntType(64), ir.DoubleType(), 1023, 52
    else:
        return None

    def codegen(context, builder, signature, args):
        k = builder.fptosi(args[0], ity)
        k1 = builder.ashr(k, ir.Constant(ity, 1))
        k2 = builder.sub(k, k1)
        p1, p2 = (
            builder.bitcast(
                builder.shl(builder.add(h, ir.Constant(ity, bias)), ir.Constant(ity, mant)), fty
            )
            for h in (k1, k2)
        )
        return context.make_tuple(builder, signature.return_type, (p1, p2))

    return types.UniTuple(kf, 2)(kf), codegen


@numba.njit(**_INLINE)
def exp_parts(y, const):
    """`functional.exp_parts` for one y <= 0: exp(y) = (1 + m) p1 p2."""
    y = y if not (y < const.lo) else const.lo  # np.maximum: NaN stays NaN
    kf = np.rint(y * const.log2e)
    r = (y - kf * const.ln2_hi) - kf * const.ln2_lo
    q = const.q[0]
    for coef in const.q[1:]:  # Horner; unrolled, q being a tuple
        q = q * r + coef
    m = r * r * q + r
    p1, p2 = _pow2_halves(kf)
    return m, p1, p2


@numba.njit(**_INLINE)
def sigmoid(z, const):
    """`functional.sigmoid`: (e if z < 0 else 1) / (1 + e), e = exp(-|z|)."""
    m, p1, p2 = exp_parts(-abs(z), const)
    e = ((m + const.one) * p1) * p2
    num = e if z < const.zero else const.one
    return num / (e + const.one)


@numba.njit(**_INLINE)
def tanh(x, const):
    """`functional.tanh`: -expm1(-2|x|) / (2 + expm1(-2|x|)) with the sign of x."""
    m, p1, p2 = exp_parts(abs(x) * const.minus_two, const)
    em1 = (m * p1) * p2 + (p1 * p2 - const.one)
    return np.copysign(em1 / (em1 + const.two), x)


# -- vectors (tests and the sigmoid/tanh accuracy check) ----------------------------------


@numba.njit(**_JIT)
def sigmoid_vec(z, out, const):
    for j in range(z.size):
        out[j] = sigmoid(z[j], const)
    return out


@numba.njit(**_JIT)
def tanh_vec(z, out, const):
    for j in range(z.size):
        out[j] = tanh(z[j], const)
    return out


# -- LSTM -----------------------------------------------------------------------------------

# Each loop below is its own compiled function: LLVM vectorises these short loops over
# contiguous rows well one by one, and (measured) badly when they share one function.


@numba.njit(**_JIT)
def sigmoid_rows(a, rec, lo, hi, const):
    """a[:, lo:hi] = sigmoid(a[:, lo:hi] + rec[:, lo:hi])."""
    for b in range(a.shape[0]):
        ar, rr = a[b, lo:hi], rec[b, lo:hi]
        for j in range(hi - lo):
            ar[j] = sigmoid(ar[j] + rr[j], const)


@numba.njit(**_JIT)
def tanh_rows(a, rec, lo, hi, const):
    """a[:, lo:hi] = tanh(a[:, lo:hi] + rec[:, lo:hi])."""
    for b in range(a.shape[0]):
        ar, rr = a[b, lo:hi], rec[b, lo:hi]
        for j in range(hi - lo):
            ar[j] = tanh(ar[j] + rr[j], const)


@numba.njit(**_JIT)
def sigmoid_rows_b(a, bias, rec, lo, hi, const):
    """a[:, lo:hi] = sigmoid((a + bias)[:, lo:hi] + rec[:, lo:hi])."""
    bb = bias[lo:hi]
    for b in range(a.shape[0]):
        ar, rr = a[b, lo:hi], rec[b, lo:hi]
        for j in range(hi - lo):
            ar[j] = sigmoid((ar[j] + bb[j]) + rr[j], const)


@numba.njit(**_JIT)
def tanh_rows_b(a, bias, rec, lo, hi, const):
    """a[:, lo:hi] = tanh((a + bias)[:, lo:hi] + rec[:, lo:hi])."""
    bb = bias[lo:hi]
    for b in range(a.shape[0]):
        ar, rr = a[b, lo:hi], rec[b, lo:hi]
        for j in range(hi - lo):
            ar[j] = tanh((ar[j] + bb[j]) + rr[j], const)


@numba.njit(**_JIT)
def lstm_cell_rows(a, c_prev, c, tc, h, const):
    """c = f c_prev + i g; tc = tanh(c); h = o tc, from the activated gates a (B, 4H)."""
    B, H = c.shape
    for b in range(B):
        ar, cp, cr, tr, hr = a[b], c_prev[b], c[b], tc[b], h[b]
        for j in range(H):
            cr[j] = ar[H + j] * cp[j] + ar[j] * ar[2 * H + j]
        for j in range(H):
            tr[j] = tanh(cr[j], const)
        for j in range(H):
            hr[j] = ar[3 * H + j] * tr[j]


@numba.njit(**_JIT)
def lstm_fwd_step(a, bias, rec, c_prev, c, tc, h, const):
    """a (B, 4H) = x W_ih^T -> gates in place (bias and rec added); c, tanh(c), h written."""
    H = c.shape[1]
    sigmoid_rows_b(a, bias, rec, 0, 2 * H, const)  # i, f
    tanh_rows_b(a, bias, rec, 2 * H, 3 * H, const)  # g
    sigmoid_rows_b(a, bias, rec, 3 * H, 4 * H, const)  # o
    lstm_cell_rows(a, c_prev, c, tc, h, const)


@numba.njit(**_JIT)
def lstm_bwd_step(dh, dy, use_dy, a, tc, c_prev, dc, d, const):
    """dh += dy; d (B, 4H) = dL/da; dc (B, H) becomes dc_{t-1}. dh_{t-1} = d W_hh after."""
    B, H = dh.shape
    for b in range(B):
        dhr, dyr, ar, tr, cp, dcr, dr = dh[b], dy[b], a[b], tc[b], c_prev[b], dc[b], d[b]
        if use_dy:
            for j in range(H):
                dhr[j] += dyr[j]
        for j in range(H):
            i = ar[j]
            f = ar[H + j]
            g = ar[2 * H + j]
            o = ar[3 * H + j]
            t = tr[j]
            dcv = dcr[j] + dhr[j] * ((const.one - t * t) * o)
            dr[j] = ((i - i * i) * g) * dcv
            dr[H + j] = ((f - f * f) * cp[j]) * dcv
            dr[2 * H + j] = ((const.one - g * g) * i) * dcv
            dr[3 * H + j] = ((o - o * o) * t) * dhr[j]
            dcr[j] = dcv * f


# -- LSTM, whole sequences at small sizes -----------------------------------------------------
# Below SMALL_MACS multiply-adds per step, a BLAS call costs more in overhead than the
# product itself, and so does a Python-level step: these run the recurrent product as a
# plain vectorised loop and every step of the sequence (or chunk) in one call. The NumPy
# path computes the same sums in the same order at these sizes (`small_product`).


@numba.njit(**_JIT)
def matmul_into(x, w, out, const):
    """out (B, N) = x (B, K) @ w (K, N), w C-contiguous: `functional.small_product`,
    the products x[b, k] w[k, j] summed in order of k."""
    B, K = x.shape
    N = w.shape[1]
    for b in range(B):
        orow, xr = out[b], x[b]
        x0, w0 = xr[0], w[0]
        for j in range(N):
            orow[j] = x0 * w0[j]
        for k in range(1, K):
            xv, wr = xr[k], w[k]
            for j in range(N):
                orow[j] += xv * wr[j]


@numba.njit(**_JIT)
def lstm_fwd_seq(gates, bias, hs, cs, tc, w_hh_t, rec, const):
    """Every step of `lstm_forward`: w_hh_t = W_hh^T (H, 4H) contiguous, rec (B, 4H)."""
    for t in range(gates.shape[0]):
        matmul_into(hs[t], w_hh_t, rec, const)
        lstm_fwd_step(gates[t], bias, rec, cs[t], cs[t + 1], tc[t], hs[t + 1], const)


@numba.njit(**_JIT)
def lstm_bwd_seq(start, end, dh, dy, use_dy, gates, tc, cs, dc, d, w_hh, const):
    """Steps end-1 .. start of `lstm_backward`, d (K, B, 4H) the chunk's dL/da."""
    for t in range(end - 1, start - 1, -1):
        dyt = dy[t] if use_dy else dy[0]
        lstm_bwd_step(dh, dyt, use_dy, gates[t], tc[t], cs[t], dc, d[t - start], const)
        matmul_into(d[t - start], w_hh, dh, const)


# -- GRU ------------------------------------------------------------------------------------


@numba.njit(**_JIT)
def mul_rows(a, lo, x, out, const):
    """out = a[:, lo:lo+H] * x."""
    B, H = x.shape
    for b in range(B):
        ar, xr, orow = a[b, lo : lo + H], x[b], out[b]
        for j in range(H):
            orow[j] = ar[j] * xr[j]


@numba.njit(**_JIT)
def gru_fwd_rz(a, rec, h_prev, hn, const):
    """reset_after=False, first half: r, z in place; hn = r * h_prev."""
    H = h_prev.shape[1]
    sigmoid_rows(a, rec, 0, 2 * H, const)
    mul_rows(a, 0, h_prev, hn, const)


@numba.njit(**_JIT)
def gru_update_rows(a, h_prev, h, const):
    """h = n + z (h_prev - n), computed as (h_prev - n) z + n."""
    B, H = h.shape
    for b in range(B):
        ar, hp, hr = a[b], h_prev[b], h[b]
        for j in range(H):
            n = ar[2 * H + j]
            hr[j] = (hp[j] - n) * ar[H + j] + n


@numba.njit(**_JIT)
def gru_fwd_n(a, nrec, h_prev, h, const):
    """reset_after=False, second half: n = tanh(a_n + (r h) W_hn^T); h."""
    B, H = h_prev.shape
    for b in range(B):
        ar, nr = a[b, 2 * H :], nrec[b]
        for j in range(H):
            ar[j] = tanh(ar[j] + nr[j], const)
    gru_update_rows(a, h_prev, h, const)


@numba.njit(**_JIT)
def gru_n_after_rows(a, rec, b_hn, use_b_hn, hn, const):
    """hn = rec_n + b_hn; a_n = a_n + r hn (pre-activation, before the tanh)."""
    B, H = hn.shape
    for b in range(B):
        ar, rr, hr = a[b], rec[b], hn[b]
        for j in range(H):
            v = rr[2 * H + j] + b_hn[j] if use_b_hn else rr[2 * H + j]
            hr[j] = v
            ar[2 * H + j] = ar[2 * H + j] + ar[j] * v


@numba.njit(**_JIT)
def tanh_inplace_rows(a, lo, hi, const):
    for b in range(a.shape[0]):
        ar = a[b, lo:hi]
        for j in range(hi - lo):
            ar[j] = tanh(ar[j], const)


@numba.njit(**_JIT)
def gru_fwd_after(a, rec, b_hn, use_b_hn, h_prev, hn, h, const):
    """reset_after=True: rec = h_prev W_hh^T (B, 3H); hn = rec_n + b_hn; gates; h."""
    H = h_prev.shape[1]
    sigmoid_rows(a, rec, 0, 2 * H, const)
    gru_n_after_rows(a, rec, b_hn, use_b_hn, hn, const)
    tanh_inplace_rows(a, 2 * H, 3 * H, const)
    gru_update_rows(a, h_prev, h, const)


@numba.njit(**_JIT)
def gru_bwd_zn(dh, dy, use_dy, a, h_prev, d, const):
    """dh += dy; da_z, da_n into d (B, 3H)."""
    B, H = dh.shape
    for b in range(B):
        dhr, dyr, ar, hp, dr = dh[b], dy[b], a[b], h_prev[b], d[b]
        if use_dy:
            for j in range(H):
                dhr[j] += dyr[j]
        for j in range(H):
            z = ar[H + j]
            n = ar[2 * H + j]
            dr[2 * H + j] = dhr[j] * ((const.one - n * n) * (const.one - z))
            dr[H + j] = dhr[j] * ((hp[j] - n) * (z * (const.one - z)))


@numba.njit(**_JIT)
def gru_bwd_r(dh, drh, a, h_prev, d, const):
    """reset_after=False: drh = da_n W_hn; da_r; dh = dh z + drh r (+ da_rz W_rz after)."""
    B, H = dh.shape
    for b in range(B):
        dhr, drr, ar, hp, dr = dh[b], drh[b], a[b], h_prev[b], d[b]
        for j in range(H):
            r = ar[j]
            dr[j] = (drr[j] * hp[j]) * (r - r * r)
            dhr[j] = dhr[j] * ar[H + j] + drr[j] * r


@numba.njit(**_JIT)
def gru_bwd_after(dh, dy, use_dy, a, h_prev, hn, d, dhn, const):
    """reset_after=True: d = [da_r, da_z, da_n], dhn = da_n r, dh = dh z (+ products after)."""
    B, H = dh.shape
    for b in range(B):
        dhr, dyr, ar, hp, hnr, dr, dnr = dh[b], dy[b], a[b], h_prev[b], hn[b], d[b], dhn[b]
        if use_dy:
            for j in range(H):
                dhr[j] += dyr[j]
        for j in range(H):
            r = ar[j]
            z = ar[H + j]
            n = ar[2 * H + j]
            dan = dhr[j] * ((const.one - n * n) * (const.one - z))
            dr[2 * H + j] = dan
            dr[H + j] = dhr[j] * ((hp[j] - n) * (z * (const.one - z)))
            dr[j] = (dan * hnr[j]) * (r - r * r)
            dnr[j] = dan * r
            dhr[j] = dhr[j] * z


# -- RNN ------------------------------------------------------------------------------------


@numba.njit(**_JIT)
def rnn_fwd_step(h, rec, relu, const):
    """h (B, H) holds x W_ih^T + b; h = phi(h + rec)."""
    if relu:
        for b in range(h.shape[0]):
            hr, rr = h[b], rec[b]
            for j in range(h.shape[1]):
                v = hr[j] + rr[j]
                hr[j] = v if (v > const.zero or v != v) else const.zero  # np.maximum(v, 0)
    else:
        H = h.shape[1]
        tanh_rows(h, rec, 0, H, const)


@numba.njit(**_JIT)
def rnn_bwd_step(dh, dy, use_dy, h, relu, da, const):
    """da = (dh + dy) phi'(a), phi' from the output h."""
    B, H = dh.shape
    for b in range(B):
        dhr, dyr, hr, dar = dh[b], dy[b], h[b], da[b]
        if use_dy:
            for j in range(H):
                dhr[j] += dyr[j]
        if relu:
            for j in range(H):
                dar[j] = dhr[j] * (const.one if hr[j] > const.zero else const.zero)
        else:
            for j in range(H):
                dar[j] = dhr[j] * (const.one - hr[j] * hr[j])


def _bind(const: Constants) -> SimpleNamespace:
    """The kernels that `functional.kernels` hands out: each public kernel with `const` as
    its last argument. These wrappers close over `const` alone (the kernels are globals),
    so numba caches them too, one entry per float type."""

    @numba.njit(**_JIT)
    def sigmoid_vec_(z, out):
        return sigmoid_vec(z, out, const)

    @numba.njit(**_JIT)
    def tanh_vec_(z, out):
        return tanh_vec(z, out, const)

    @numba.njit(**_JIT)
    def lstm_fwd_step_(a, bias, rec, c_prev, c, tc, h):
        return lstm_fwd_step(a, bias, rec, c_prev, c, tc, h, const)

    @numba.njit(**_JIT)
    def lstm_bwd_step_(dh, dy, use_dy, a, tc, c_prev, dc, d):
        return lstm_bwd_step(dh, dy, use_dy, a, tc, c_prev, dc, d, const)

    @numba.njit(**_JIT)
    def lstm_fwd_seq_(gates, bias, hs, cs, tc, w_hh_t, rec):
        return lstm_fwd_seq(gates, bias, hs, cs, tc, w_hh_t, rec, const)

    @numba.njit(**_JIT)
    def lstm_bwd_seq_(start, end, dh, dy, use_dy, gates, tc, cs, dc, d, w_hh):
        return lstm_bwd_seq(start, end, dh, dy, use_dy, gates, tc, cs, dc, d, w_hh, const)

    @numba.njit(**_JIT)
    def gru_fwd_rz_(a, rec, h_prev, hn):
        return gru_fwd_rz(a, rec, h_prev, hn, const)

    @numba.njit(**_JIT)
    def gru_fwd_n_(a, nrec, h_prev, h):
        return gru_fwd_n(a, nrec, h_prev, h, const)

    @numba.njit(**_JIT)
    def gru_fwd_after_(a, rec, b_hn, use_b_hn, h_prev, hn, h):
        return gru_fwd_after(a, rec, b_hn, use_b_hn, h_prev, hn, h, const)

    @numba.njit(**_JIT)
    def gru_bwd_zn_(dh, dy, use_dy, a, h_prev, d):
        return gru_bwd_zn(dh, dy, use_dy, a, h_prev, d, const)

    @numba.njit(**_JIT)
    def gru_bwd_r_(dh, drh, a, h_prev, d):
        return gru_bwd_r(dh, drh, a, h_prev, d, const)

    @numba.njit(**_JIT)
    def gru_bwd_after_(dh, dy, use_dy, a, h_prev, hn, d, dhn):
        return gru_bwd_after(dh, dy, use_dy, a, h_prev, hn, d, dhn, const)

    @numba.njit(**_JIT)
    def rnn_fwd_step_(h, rec, relu):
        return rnn_fwd_step(h, rec, relu, const)

    @numba.njit(**_JIT)
    def rnn_bwd_step_(dh, dy, use_dy, h, relu, da):
        return rnn_bwd_step(dh, dy, use_dy, h, relu, da, const)

    return SimpleNamespace(
        sigmoid_vec=sigmoid_vec_,
        tanh_vec=tanh_vec_,
        lstm_fwd_step=lstm_fwd_step_,
        lstm_bwd_step=lstm_bwd_step_,
        lstm_fwd_seq=lstm_fwd_seq_,
        lstm_bwd_seq=lstm_bwd_seq_,
        gru_fwd_rz=gru_fwd_rz_,
        gru_fwd_n=gru_fwd_n_,
        gru_fwd_after=gru_fwd_after_,
        gru_bwd_zn=gru_bwd_zn_,
        gru_bwd_r=gru_bwd_r_,
        gru_bwd_after=gru_bwd_after_,
        rnn_fwd_step=rnn_fwd_step_,
        rnn_bwd_step=rnn_bwd_step_,
    )


KERNELS = {np.dtype(dt): _bind(constants(dt)) for dt in (np.float32, np.float64)}
