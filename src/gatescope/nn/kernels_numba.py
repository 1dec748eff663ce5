"""The numba kernels: each sequence's steps in one compiled call.

An optional accelerator for the sequence paths of lstm.py, gru.py and rnn.py, handed out by
`backend.kernels` (never imported by the reference code). A forward pass, or a chunk of
backward's steps, is one call: each step's recurrent product by `matmul_packed` (W packed
once per sequence, register-blocked tiles written as LLVM IR), then one kernel that does in
one loop over the step's units what the NumPy reference does in a dozen ufunc calls. The
products over whole sequences (backward's dx and weight gradients) stay in NumPy (BLAS).

**The contract is the reference's values, not its bits**: every output, state, trace entry
and gradient within float64 1e-12 / float32 1e-5 relative (max|a - b| / max|b| per array,
plus the reference's own response to an ulp of change in its sigmoid and tanh values:
`backend.TOLERANCE`, tested in tests/test_backends.py), and the same bits run to run on one
machine (no threads, no reductions whose order varies: each product entry is summed in
order of k, whatever the tile). So the kernels may contract a * b + c into one
fused multiply-add (fastmath "contract": one rounding instead of two, never less accurate;
no reassociation, no approximate division) and compute exp their own way: `exp_parts`
below, Cody-Waite reduction and a polynomial, which LLVM vectorises (AVX2: 8 float32 or 4
float64 lanes), where libm's scalar exp and tanh (all numba has without SVML) run 5-20x
slower than these.

Every kernel is a module-level function taking a float type's constants as its last
argument, `const`; `_bind` wraps each once per type. That keeps numba's on-disk cache
hitting across processes (closures over other dispatchers missed it in every process:
benchmarks/NOTES.md, step 13).
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import NamedTuple

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

# error_model="numpy": no zero-division checks (they would stop vectorisation).
# fastmath "contract" only: a * b + c may become one fused multiply-add.
_FAST = {"error_model": "numpy", "fastmath": {"contract"}}
_JIT = {"nogil": True, "cache": True, **_FAST}
_INLINE = {"inline": "always", **_FAST}

# The recurrent product's tiles (`matmul_packed`): MR rows of the output, NR = two vectors
# of columns (AVX-512: 32 float32 or 16 float64; AVX2: half that), k in slices of at most
# KC so that a panel's slice (KC x NR, 32 KB) stays in the L1 cache while every row block
# reads it. 2 MR accumulators and 3 more vectors fit in the registers (32 with AVX-512,
# 16 without).
_AVX512 = "+avx512f" in llvm.get_host_cpu_features().flatten().split(",")
VECTOR_BYTES = 64 if _AVX512 else 32
MR = 8 if _AVX512 else 6
KC = 256
# The LSTM computes each step's input projection inside its step loop (not in one product
# first) while both packed weight matrices fit in this many bytes (an L2 cache: 2 MB a core
# on this machine, an Intel Xeon with AVX-512); above, W_ih would stream from L3 every step.
FUSE_BYTES = 2 * 2**20


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
    lo: np.floating  # y is clipped here: exp(lo) rounds to 0, and 2^(k/2) is still normal
    q: tuple  # expm1(r) = r + r^2 q(r): q's coefficients, highest degree first


def constants(dtype: type) -> Constants:
    """ln 2 = ln2_hi + ln2_lo, k ln2_hi exact for every k that occurs (Cody-Waite).

    float64 q: the Taylor series 1/13! r^11 + ... + 1/2! (truncation error 4e-18 on
    |r| <= ln2/2). float32 q: degree 4, fitted for the least maximum relative error of exp(r)
    (3e-9) by Lawson's iteration, two operations fewer than the Taylor series needs.
    """
    f = np.dtype(dtype).type
    if f is np.float64:
        ln2_hi, ln2_lo, lo = 6.93147180369123816490e-01, 1.90821492927058770002e-10, -1080.0
        q = tuple(1.0 / math.factorial(n) for n in range(13, 1, -1))
    else:
        ln2_hi, ln2_lo, lo = 6.9314575195e-01, 1.4286067653e-06, -110.0
        q = (
            0.0013814596584550247,
            0.00836871731177316,
            0.041668388105532875,
            0.16666520627619902,
            0.4999999344745987,
        )
    return Constants(
        f(1),
        f(2),
        f(-2),
        f(0),
        f(1.4426950408889634),
        f(ln2_hi),
        f(ln2_lo),
        f(lo),
        tuple(f(c) for c in q),
    )


@intrinsic
def _pow2_halves(typingctx, kf):
    """(2^floor(k/2), 2^(k - floor(k/2))) for an integral float k, from exponent bits (shift,
    subtract, add the bias, shift into the exponent; two halves so that a subnormal exp(y)
    rounds once), in the float's own integer width so that LLVM vectorises them 8 (float32)
    or 4 (float64) wide."""
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
    """exp(y) for one y <= 0 (or NaN) in three parts: exp(y) = (1 + m) p1 p2.

    y = k ln2 + r, |r| <= ln2 / 2; m = expm1(r) = r + r^2 q(r) (Horner); p1 p2 = 2^k.
    """
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
    """sigma(z) = (e if z < 0 else 1) / (1 + e), e = exp(-|z|), as `functional.sigmoid`."""
    m, p1, p2 = exp_parts(-abs(z), const)
    e = ((m + const.one) * p1) * p2
    num = e if z < const.zero else const.one
    return num / (e + const.one)


@numba.njit(**_INLINE)
def tanh(x, const):
    """tanh(x) = -expm1(-2|x|) / (2 + expm1(-2|x|)) with the sign of x (expm1: no
    cancellation near 0)."""
    m, p1, p2 = exp_parts(abs(x) * const.minus_two, const)
    em1 = (m * p1) * p2 + (p1 * p2 - const.one)
    return np.copysign(em1 / (em1 + const.two), x)


# -- the recurrent product: W packed once per sequence, register-blocked tiles -------------
# One step's product h_{t-1} W^T (B, K) x (K, N) is small (K, N a few hundred), and a BLAS
# call packs W anew every time (1 MB at H = 256) and is a Python-level call besides. Here W
# is packed once per sequence into panels of NR columns (`pack`), each panel's K x NR block
# contiguous, and `matmul_packed` computes the product tile by tile: MR rows x NR columns
# held in 2 MR vector registers, k running through the panel, one broadcast of a[b, k]
# and two fused multiply-adds per row and k. LLVM does not find this blocking itself (it
# keeps the accumulators in memory), so the tile is written as LLVM IR (`_tile_kernel`).
# Each output entry is summed in order of k (KC at a time): the same bits every run.


def _tile_kernel(mr: int):
    """An intrinsic `tile(a, aoff, ast, wp, woff, out, ooff, ost, kc, add)`: for r < mr,

        out[ooff + r ost + j] (+)= sum_{k < kc} a[aoff + r ast + k] wp[woff + k NR + j],

    j < NR = 2 L (L lanes: VECTOR_BYTES / itemsize), offsets in elements of each array's data
    (a view's data starts at its first element); `add`: add to out instead of storing."""

    @intrinsic
    def tile(typingctx, a, aoff, ast, wp, woff, out, ooff, ost, kc, add):
        if a.dtype == types.float32:
            fty, L = ir.FloatType(), VECTOR_BYTES // 4
        elif a.dtype == types.float64:
            fty, L = ir.DoubleType(), VECTOR_BYTES // 8
        else:
            return None
        name = f"llvm.fma.v{L}f{32 if a.dtype == types.float32 else 64}"
        ip = types.intp
        sig = types.void(a, ip, ip, wp, ip, out, ip, ip, ip, types.boolean)

        def codegen(context, builder, signature, args):
            a_, aoff_, ast_, wp_, woff_, out_, ooff_, ost_, kc_, add_ = args
            at, wt, ot = signature.args[0], signature.args[3], signature.args[5]
            ap = context.make_array(at)(context, builder, a_).data
            wpp = context.make_array(wt)(context, builder, wp_).data
            op = context.make_array(ot)(context, builder, out_).data
            vty = ir.VectorType(fty, L)
            i64 = ir.IntType(64)

            def const(v):
                return ir.Constant(i64, v)

            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vty, [vty] * 3), name
            )
            zero = ir.Constant(vty, [0.0] * L)
            splat = ir.Constant(ir.VectorType(ir.IntType(32), L), [0] * L)
            pre = builder.block
            loop = builder.append_basic_block("tile_loop")
            done = builder.append_basic_block("tile_done")
            builder.cbranch(builder.icmp_signed(">", kc_, const(0)), loop, done)
            # the k loop: accumulators as phi nodes (registers), 2 per row
            builder.position_at_end(loop)
            k = builder.phi(i64)
            acc = [builder.phi(vty) for _ in range(2 * mr)]
            w0 = builder.add(woff_, builder.mul(k, const(2 * L)))
            w = [
                builder.load(builder.bitcast(builder.gep(wpp, [builder.add(w0, const(v * L))]), vty.as_pointer()), align=4)
                for v in range(2)
            ]  # fmt: skip
            new = []
            for r in range(mr):
                idx = builder.add(builder.add(aoff_, builder.mul(const(r), ast_)), k)
                x = builder.insert_element(
                    ir.Constant(vty, ir.Undefined),
                    builder.load(builder.gep(ap, [idx])),
                    ir.Constant(ir.IntType(32), 0),
                )
                xb = builder.shuffle_vector(x, ir.Constant(vty, ir.Undefined), splat)
                new += [builder.call(fma, [xb, w[v], acc[2 * r + v]]) for v in range(2)]
            k1 = builder.add(k, const(1))
            last = builder.block
            k.add_incoming(const(0), pre)
            k.add_incoming(k1, last)
            for p, v in zip(acc, new):
                p.add_incoming(zero, pre)
                p.add_incoming(v, last)
            builder.cbranch(builder.icmp_signed("<", k1, kc_), loop, done)
            # the tile out: stored, or added to what is there
            builder.position_at_end(done)
            sums = []
            for v in new:
                s = builder.phi(vty)
                s.add_incoming(zero, pre)
                s.add_incoming(v, last)
                sums.append(s)
            ptrs = []
            for r in range(mr):
                row = builder.add(ooff_, builder.mul(const(r), ost_))
                for v in range(2):
                    ptr = builder.gep(op, [builder.add(row, const(v * L))])
                    ptrs.append(builder.bitcast(ptr, vty.as_pointer()))
            with builder.if_else(add_) as (then, otherwise):
                with then:
                    for s, ptr in zip(sums, ptrs):
                        builder.store(builder.fadd(builder.load(ptr, align=4), s), ptr, align=4)
                with otherwise:
                    for s, ptr in zip(sums, ptrs):
                        builder.store(s, ptr, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return tile


# Tiles of MR rows and, for the last rows of a batch, of 4, 2 and 1 (each row count is its
# own intrinsic, the registers being fixed; fewer kinds compile faster).
_TILE8, _TILE6, _TILE4, _TILE2, _TILE1 = (_tile_kernel(m) for m in (8, 6, 4, 2, 1))


@numba.njit(**_INLINE)
def _rows(left):
    """The rows of the next tile, `left` rows to go: MR, then 4, 2, 1 for the rest."""
    if left >= MR:
        return MR
    return 4 if left >= 4 else (2 if left >= 2 else 1)


@numba.njit(**_INLINE)
def _tile(m, a, aoff, ast, wp, woff, out, ooff, ost, kc, add):
    """The tile of m rows, m one of MR (8 or 6), 4, 2, 1."""
    if m == 8:
        _TILE8(a, aoff, ast, wp, woff, out, ooff, ost, kc, add)
    elif m == 6:
        _TILE6(a, aoff, ast, wp, woff, out, ooff, ost, kc, add)
    elif m == 4:
        _TILE4(a, aoff, ast, wp, woff, out, ooff, ost, kc, add)
    elif m == 2:
        _TILE2(a, aoff, ast, wp, woff, out, ooff, ost, kc, add)
    else:
        _TILE1(a, aoff, ast, wp, woff, out, ooff, ost, kc, add)


def panel_width(dtype) -> int:
    """NR: the columns of a panel, two vectors (AVX-512: 32 float32, 16 float64)."""
    return 2 * VECTOR_BYTES // np.dtype(dtype).itemsize


@numba.njit(**_JIT)
def pack_into(w, wp):
    """wp[p, k, j] = w[k, p NR + j] for w (K, N) of any strides, zeros past column N."""
    K, N = w.shape
    P, _, NR = wp.shape
    for p in range(P):
        for k in range(K):
            for j in range(NR):
                n = p * NR + j
                wp[p, k, j] = w[k, n] if n < N else 0


def pack(w: np.ndarray) -> np.ndarray:
    """W (K, N) (a transposed view is fine) as panels (ceil(N / NR), K, NR) for `matmul_packed`."""
    K, N = w.shape
    NR = panel_width(w.dtype)
    wp = np.empty((-(-N // NR), K, NR), w.dtype)  # (P, K, NR)
    pack_into(w, wp)
    return wp


@numba.njit(**_JIT)
def matmul_packed(a, wp, n, out, add):
    """out (B, n) = a (B, K) @ W, or out += a @ W with `add`; wp = pack(W), W (K, n).

    a and out may be row views of larger arrays (rows strided, columns contiguous). Panels
    go in the outer loop, so that a panel's slice is read from L1 by every row block; the
    last panel, when n is not a multiple of NR, goes through a scratch tile.
    """
    B, K = a.shape
    P, _, NR = wp.shape
    ast = a.strides[0] // a.itemsize
    ost = out.strides[0] // out.itemsize
    for p in range(P):
        cols = min(NR, n - p * NR)
        if cols == NR:
            for k0 in range(0, K, KC):
                kc, w0, acc = min(KC, K - k0), (p * K + k0) * NR, add or k0 > 0
                b = 0
                while b < B:
                    m = _rows(B - b)
                    _tile(m, a, b * ast + k0, ast, wp, w0, out, b * ost + p * NR, ost, kc, acc)
                    b += m
            continue
        scratch = np.empty((MR, NR), a.dtype)  # (MR, NR) the partial panel's tile
        b = 0
        while b < B:
            m = _rows(B - b)
            for k0 in range(0, K, KC):
                kc = min(KC, K - k0)
                _tile(m, a, b * ast + k0, ast, wp, (p * K + k0) * NR, scratch, 0, NR, kc, k0 > 0)
            for r in range(m):
                orow = out[b + r, p * NR :]
                for j in range(cols):
                    orow[j] = orow[j] + scratch[r, j] if add else scratch[r, j]
            b += m


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


# -- LSTM, whole sequences -------------------------------------------------------------------
# Every step of a sequence (or of a chunk of backward) in one call: no Python-level step, and
# the recurrent product by `matmul_packed` against W packed once.


@numba.njit(**_JIT)
def lstm_fwd_seq(project, x, wp_ih, gates, bias, hs, cs, tc, wp_hh, rec, b0, b1, const):
    """Every step of `lstm_forward` for the batch rows b0:b1: with `project`, gates[t] =
    x_t W_ih^T (else gates holds them already); rec = h_{t-1} W_hh^T (B, 4H); then the step.
    wp_ih = pack(W_ih^T) (K = D), wp_hh = pack(W_hh^T) (K = H), N = 4H."""
    N = gates.shape[2]
    r = rec[b0:b1]
    for t in range(gates.shape[0]):
        a = gates[t, b0:b1]  # (b1 - b0, 4H): rows of a C-contiguous block
        if project:
            matmul_packed(x[t, b0:b1], wp_ih, N, a, False)
        matmul_packed(hs[t, b0:b1], wp_hh, N, r, False)
        lstm_fwd_step(
            a, bias, r, cs[t, b0:b1], cs[t + 1, b0:b1], tc[t, b0:b1], hs[t + 1, b0:b1], const
        )


@numba.njit(**_JIT)
def lstm_bwd_seq(start, end, dh, dy, use_dy, gates, tc, cs, dc, d, wp_hh, b0, b1, const):
    """Steps end-1 .. start of `lstm_backward` for the batch rows b0:b1, d (K, b1 - b0, 4H)
    their dL/da in the chunk; wp_hh = pack(W_hh) (K = 4H, N = H)."""
    H = dh.shape[1]
    dhb, dcb = dh[b0:b1], dc[b0:b1]
    for t in range(end - 1, start - 1, -1):
        dyt = dy[t, b0:b1] if use_dy else dy[0, b0:b1]
        db = d[t - start]
        lstm_bwd_step(dhb, dyt, use_dy, gates[t, b0:b1], tc[t, b0:b1], cs[t, b0:b1], dcb, db, const)
        matmul_packed(db, wp_hh, H, dhb, False)


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


@numba.njit(**_JIT)
def gru_fwd_seq(gates, hs, hn, wp_a, wp_n, b_hn, use_b_hn, reset_after, rec, nrec, b0, b1, const):
    """Every step of `gru_forward` for the batch rows b0:b1. reset_after: wp_a =
    pack(W_hh^T) (N = 3H), rec (B, 3H), wp_n unused; else wp_a = pack(W_hr,hz^T) (N = 2H),
    rec (B, 2H), wp_n = pack(W_hn^T)."""
    H = hs.shape[2]
    r, nr = rec[b0:b1], nrec[b0:b1]
    for t in range(gates.shape[0]):
        a, h_prev, h, hnt = gates[t, b0:b1], hs[t, b0:b1], hs[t + 1, b0:b1], hn[t, b0:b1]
        if reset_after:
            matmul_packed(h_prev, wp_a, 3 * H, r, False)
            gru_fwd_after(a, r, b_hn, use_b_hn, h_prev, hnt, h, const)
        else:
            matmul_packed(h_prev, wp_a, 2 * H, r, False)
            gru_fwd_rz(a, r, h_prev, hnt, const)
            matmul_packed(hnt, wp_n, H, nr, False)
            gru_fwd_n(a, nr, h_prev, h, const)


@numba.njit(**_JIT)
def gru_bwd_seq(
    start, end, dh, dy, use_dy, gates, hs, hn, dax, dhn, wp_rz, wp_n, reset_after, tmp, b0, b1,
    const,
):  # fmt: skip
    """Steps end-1 .. start of `gru_backward` for the batch rows b0:b1: dax (K, b1 - b0, 3H)
    their dL/da in the chunk, dhn (K, b1 - b0, H) their dL/d(hn) (reset_after); wp_rz =
    pack(W_hr,hz) (K = 2H), wp_n = pack(W_hn) (K = H)."""
    H = dh.shape[1]
    dhb, tb = dh[b0:b1], tmp[b0:b1]
    for t in range(end - 1, start - 1, -1):
        k = t - start
        a, h_prev, d = gates[t, b0:b1], hs[t, b0:b1], dax[k]
        dyt = dy[t, b0:b1] if use_dy else dy[0, b0:b1]
        if reset_after:
            dn = dhn[k]
            gru_bwd_after(dhb, dyt, use_dy, a, h_prev, hn[t, b0:b1], d, dn, const)
            matmul_packed(dn, wp_n, H, dhb, True)
        else:
            gru_bwd_zn(dhb, dyt, use_dy, a, h_prev, d, const)
            matmul_packed(d[:, 2 * H :], wp_n, H, tb, False)  # da_n W_hn
            gru_bwd_r(dhb, tb, a, h_prev, d, const)
        matmul_packed(d[:, : 2 * H], wp_rz, H, dhb, True)


# -- RNN ------------------------------------------------------------------------------------


@numba.njit(**_JIT)
def rnn_activate(h, relu, const):
    """h (B, H) = phi(h) in place: max(h, 0) or tanh(h)."""
    if relu:
        for b in range(h.shape[0]):
            hr = h[b]
            for j in range(h.shape[1]):
                v = hr[j]
                hr[j] = v if (v > const.zero or v != v) else const.zero  # np.maximum(v, 0)
    else:
        tanh_inplace_rows(h, 0, h.shape[1], const)


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


@numba.njit(**_JIT)
def rnn_fwd_seq(hs, wp_hh, relu, b0, b1, const):
    """Every step of `rnn_forward` for the batch rows b0:b1: hs[1:] holds x W_ih^T + b;
    wp_hh = pack(W_hh^T)."""
    H = hs.shape[2]
    for t in range(hs.shape[0] - 1):
        h = hs[t + 1, b0:b1]
        matmul_packed(hs[t, b0:b1], wp_hh, H, h, True)  # a = (x W_ih^T + b) + h_{t-1} W_hh^T
        rnn_activate(h, relu, const)


@numba.njit(**_JIT)
def rnn_bwd_seq(start, end, dh, dy, use_dy, hs, relu, da, wp_hh, b0, b1, const):
    """Steps end-1 .. start of `rnn_backward` for the batch rows b0:b1, da (K, b1 - b0, H)
    their dL/da in the chunk."""
    H = dh.shape[1]
    dhb = dh[b0:b1]
    for t in range(end - 1, start - 1, -1):
        dyt = dy[t, b0:b1] if use_dy else dy[0, b0:b1]
        d = da[t - start]
        rnn_bwd_step(dhb, dyt, use_dy, hs[t + 1, b0:b1], relu, d, const)
        matmul_packed(d, wp_hh, H, dhb, False)


def _bind(const: Constants) -> SimpleNamespace:
    """The kernels that `backend.kernels` hands out: each public kernel with `const` as
    its last argument. These wrappers close over `const` alone (the kernels are globals),
    so numba caches them too, one entry per float type."""

    @numba.njit(**_JIT)
    def sigmoid_vec_(z, out):
        return sigmoid_vec(z, out, const)

    @numba.njit(**_JIT)
    def tanh_vec_(z, out):
        return tanh_vec(z, out, const)

    @numba.njit(**_JIT)
    def lstm_fwd_seq_(project, x, wp_ih, gates, bias, hs, cs, tc, wp_hh, rec, b0, b1):
        return lstm_fwd_seq(project, x, wp_ih, gates, bias, hs, cs, tc, wp_hh, rec, b0, b1, const)

    @numba.njit(**_JIT)
    def lstm_bwd_seq_(start, end, dh, dy, use_dy, gates, tc, cs, dc, d, wp_hh, b0, b1):
        return lstm_bwd_seq(start, end, dh, dy, use_dy, gates, tc, cs, dc, d, wp_hh, b0, b1, const)

    @numba.njit(**_JIT)
    def gru_fwd_seq_(gates, hs, hn, wp_a, wp_n, b_hn, use_b_hn, reset_after, rec, nrec, b0, b1):
        return gru_fwd_seq(
            gates, hs, hn, wp_a, wp_n, b_hn, use_b_hn, reset_after, rec, nrec, b0, b1, const
        )

    @numba.njit(**_JIT)
    def gru_bwd_seq_(
        start, end, dh, dy, use_dy, gates, hs, hn, dax, dhn, wp_rz, wp_n, ra, tmp, b0, b1
    ):
        return gru_bwd_seq(
            start, end, dh, dy, use_dy, gates, hs, hn, dax, dhn, wp_rz, wp_n, ra, tmp, b0, b1,
            const,
        )  # fmt: skip

    @numba.njit(**_JIT)
    def rnn_fwd_seq_(hs, wp_hh, relu, b0, b1):
        return rnn_fwd_seq(hs, wp_hh, relu, b0, b1, const)

    @numba.njit(**_JIT)
    def rnn_bwd_seq_(start, end, dh, dy, use_dy, hs, relu, da, wp_hh, b0, b1):
        return rnn_bwd_seq(start, end, dh, dy, use_dy, hs, relu, da, wp_hh, b0, b1, const)

    return SimpleNamespace(
        FUSE_BYTES=FUSE_BYTES,
        pack=pack,
        matmul_packed=matmul_packed,
        sigmoid_vec=sigmoid_vec_,
        tanh_vec=tanh_vec_,
        lstm_fwd_seq=lstm_fwd_seq_,
        lstm_bwd_seq=lstm_bwd_seq_,
        gru_fwd_seq=gru_fwd_seq_,
        gru_bwd_seq=gru_bwd_seq_,
        rnn_fwd_seq=rnn_fwd_seq_,
        rnn_bwd_seq=rnn_bwd_seq_,
    )


KERNELS = {np.dtype(dt): _bind(constants(dt)) for dt in (np.float32, np.float64)}
