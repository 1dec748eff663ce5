r"""The numba kernels of the LSTM variants (`lstm_variants.py`): each step's element-wise work
in one call, as `kernels_numba.py` does for the vanilla LSTM.

An optional accelerator, handed out by `backend.variant_kernels` and held to the same
contract as `kernels_numba.py`: the NumPy code of `lstm_variants.py` is the reference, and
every output, state, trace entry and gradient agrees with it within `backend.TOLERANCE`
(tests/test_variant_kernels.py), with the same bits run to run (every sum in a fixed
order). Each kernel takes the batch rows b0:b1 it works on (last, before `const`), and
indexes every per-step array [t, b0:b1] inside (rows of a C-contiguous block, which LLVM
vectorises), so that `parallel.run_rows` / `run_blocks` can split a batch over threads
(nogil) with each row's work that of one call over every row (tests/test_variant_parallel.py).
The whole forward, and each chunk of backward, is one call per block of rows, each step's
recurrent product by `kernels_numba.matmul_packed` against W_hh packed once (as the vanilla
LSTM's kernels do); the input projections and weight gradients stay in NumPy (BLAS:
`parallel.matmul`, and each block's own products in backward). The exp, sigmoid and tanh
are those of `kernels_numba.py` (imported, as are its compiler flags and constants).

What a step does, per variant (equations in `lstm_variants.py`), on u (B, G*H) = the input
projection (the gates array itself when G = 4) and rec = h_{t-1} W_hh^T:

    generic    the gate blocks present activated into the trace layout [i f g o] (peephole
               terms p * c added before the sigmoid), cifg's i = 1 - f; c, s, h
    layernorm  LN(rec) (mean, variance, 1/std of each row) into the cache, times its gain,
               added to u (which holds LN(u) gamma_ih + b, `ln_rows`), the four gates, c,
               LN(c) into the cache, s = tanh(LN(c) gamma_c + beta_c), h

and backward, per step, the whole of dL/da (and for layer norm both of its backwards,
LN'(ds (1 - s^2) gamma_c) over H and LN'(da gamma_hh) over 4H) in one pass per row.

Variant options reach the kernels as None or a value (peephole weights, a gate's column,
cifg's coupling, noaf): numba prunes an `is None` branch when it compiles, so each variant
gets a loop with no run-time tests in it, which LLVM vectorises (a test per unit stops it).
Layer norm's row sums alone are compiled with fastmath "reassoc" as well as "contract", so
that LLVM sums in vector lanes (an order fixed in the compiled code: deterministic); one
running sum would be a chain of dependent adds, 4 cycles each.
"""

from __future__ import annotations

from types import SimpleNamespace

import numba
import numpy as np

from .kernels_numba import (
    _INLINE,
    _JIT,
    Constants,
    constants,
    matmul_packed,
    pack,
    sigmoid,
    sigmoid_rows_b,
    tanh,
    tanh_rows_b,
)

# --------------------------------------------------------------------------------------------
# Row helpers: one loop each (LLVM vectorises short loops one by one, kernels_numba.py)


@numba.njit(**_JIT)
def sig_rows(u, lo, bias, rec, out, olo, n, peep, plo, cc, const):
    """out[:, olo:olo+n] = sigmoid((u + bias)[:, lo:lo+n] + rec[:, lo:lo+n]), plus
    peep[plo:plo+n] * cc unless peep is None."""
    bb = bias[lo : lo + n]
    for b in range(u.shape[0]):
        ur, rr, orow = u[b, lo : lo + n], rec[b, lo : lo + n], out[b, olo : olo + n]
        if peep is None:
            for j in range(n):
                orow[j] = sigmoid((ur[j] + bb[j]) + rr[j], const)
        else:
            cr, pp = cc[b], peep[plo : plo + n]
            for j in range(n):
                orow[j] = sigmoid(((ur[j] + bb[j]) + rr[j]) + pp[j] * cr[j], const)


@numba.njit(**_JIT)
def tanh_rows(u, lo, bias, rec, out, olo, n, const):
    """out[:, olo:olo+n] = tanh((u + bias)[:, lo:lo+n] + rec[:, lo:lo+n])."""
    bb = bias[lo : lo + n]
    for b in range(u.shape[0]):
        ur, rr, orow = u[b, lo : lo + n], rec[b, lo : lo + n], out[b, olo : olo + n]
        for j in range(n):
            orow[j] = tanh((ur[j] + bb[j]) + rr[j], const)


@numba.njit(**_JIT)
def act_inplace_rows(a, lo, hi, is_tanh, const):
    """a[:, lo:hi] = sigmoid(a[:, lo:hi]), or tanh with is_tanh (not None)."""
    for b in range(a.shape[0]):
        ar = a[b, lo:hi]
        if is_tanh is None:
            for j in range(hi - lo):
                ar[j] = sigmoid(ar[j], const)
        else:
            for j in range(hi - lo):
                ar[j] = tanh(ar[j], const)


@numba.njit(**_JIT)
def one_minus_rows(a, src, dst, n, const):
    """a[:, dst:dst+n] = 1 - a[:, src:src+n] (cifg's i = 1 - f)."""
    for b in range(a.shape[0]):
        sr, dr = a[b, src : src + n], a[b, dst : dst + n]
        for j in range(n):
            dr[j] = const.one - sr[j]


@numba.njit(**_JIT)
def cell_rows(gates, c_prev, c, const):
    """c = f c_prev + i g, from the trace layout [i f g o] (B, 4H)."""
    B, H = c.shape
    for b in range(B):
        ar, cp, cr = gates[b], c_prev[b], c[b]
        for j in range(H):
            cr[j] = ar[H + j] * cp[j] + ar[j] * ar[2 * H + j]


@numba.njit(**_JIT)
def squash_rows(gates, c, s, h, noaf, const):
    """s = tanh(c) (noaf: c); h = o s."""
    B, H = c.shape
    for b in range(B):
        ar, cr, sr, hr = gates[b], c[b], s[b], h[b]
        if noaf is None:
            for j in range(H):
                sr[j] = tanh(cr[j], const)
        else:
            for j in range(H):
                sr[j] = cr[j]
        for j in range(H):
            hr[j] = ar[3 * H + j] * sr[j]


# --------------------------------------------------------------------------------------------
# Every variant but layer norm


@numba.njit(**_JIT)
def sig_peep_inplace_rows(a, lo, bias, rec, n, peep, plo, cc, const):
    """a[:, lo:lo+n] = sigmoid(((a + bias) + rec)[:, lo:lo+n] + peep[plo:plo+n] * cc), in
    place (one view read and written: an output that might overlap an input stops LLVM's
    vectorisation at run time)."""
    bb, pp = bias[lo : lo + n], peep[plo : plo + n]
    for b in range(a.shape[0]):
        ar, rr, cr = a[b, lo : lo + n], rec[b, lo : lo + n], cc[b]
        for j in range(n):
            ar[j] = sigmoid(((ar[j] + bb[j]) + rr[j]) + pp[j] * cr[j], const)


@numba.njit(**_JIT)
def fwd_step(u, bias, rec, gates, c_prev, c, s, h, ui, uf, ug, uo, peep, cifg, noaf, const):
    """One step: u (B, G*H) the input projection, or None when it is `gates` itself (G = 4,
    blocks i f g o: activated in place); rec (B, G*H), bias (G*H,); ui uf ug uo: each
    gate's column in u, or None where the variant lacks it (its constant is already in
    `gates`); peep (3H,) or None; cifg, noaf: None or 1."""
    H = c.shape[1]
    if u is None:
        if peep is None:
            sigmoid_rows_b(gates, bias, rec, 0, 2 * H, const)  # i, f
        else:
            sig_peep_inplace_rows(gates, 0, bias, rec, H, peep, 0, c_prev, const)
            sig_peep_inplace_rows(gates, H, bias, rec, H, peep, H, c_prev, const)
        tanh_rows_b(gates, bias, rec, 2 * H, 3 * H, const)
        cell_rows(gates, c_prev, c, const)
        if peep is None:
            sigmoid_rows_b(gates, bias, rec, 3 * H, 4 * H, const)
        else:  # o peeks at the new cell
            sig_peep_inplace_rows(gates, 3 * H, bias, rec, H, peep, 2 * H, c, const)
        squash_rows(gates, c, s, h, noaf, const)
        return
    if uf is not None:
        sig_rows(u, uf, bias, rec, gates, H, H, peep, H, c_prev, const)
    if ui is not None:
        sig_rows(u, ui, bias, rec, gates, 0, H, peep, 0, c_prev, const)
    if cifg is not None:
        one_minus_rows(gates, H, 0, H, const)
    tanh_rows(u, ug, bias, rec, gates, 2 * H, H, const)
    cell_rows(gates, c_prev, c, const)
    if uo is not None:
        sig_rows(u, uo, bias, rec, gates, 3 * H, H, peep, 2 * H, c, const)
    squash_rows(gates, c, s, h, noaf, const)


@numba.njit(**_JIT)
def bwd_step(dh, dy, use_dy, gates, s, c_prev, dc, d, ki, kf, kg, ko, peep, cifg, noaf, const):
    """dh += dy; d (B, G*H) = dL/da (ki kf kg ko: each gate's column in d, or None); dc
    becomes dc_{t-1}. dh_{t-1} = d W_hh after."""
    B, H = dh.shape
    for b in range(B):
        dhr, dyr, ar, sr, cp, dcr, dr = dh[b], dy[b], gates[b], s[b], c_prev[b], dc[b], d[b]
        if use_dy:
            for j in range(H):
                dhr[j] += dyr[j]
        for j in range(H):
            i = ar[j]
            f = ar[H + j]
            g = ar[2 * H + j]
            o = ar[3 * H + j]
            st = sr[j]
            dhv = dhr[j]
            if noaf is None:
                dcv = dcr[j] + (dhv * o) * (const.one - st * st)
            else:
                dcv = dcr[j] + dhv * o
            if ko is not None:
                dao = (dhv * st) * (o - o * o)
                dr[ko + j] = dao
                if peep is not None:
                    dcv = dcv + dao * peep[2 * H + j]
            di = dcv * g
            df = dcv * cp[j]
            if cifg is not None:
                df = df - di
            dr[kg + j] = (dcv * i) * (const.one - g * g)
            dcn = dcv * f
            if ki is not None:
                dai = di * (i - i * i)
                dr[ki + j] = dai
                if peep is not None:
                    dcn = dcn + dai * peep[j]
            if kf is not None:
                daf = df * (f - f * f)
                dr[kf + j] = daf
                if peep is not None:
                    dcn = dcn + daf * peep[H + j]
            dcr[j] = dcn


@numba.njit(**_JIT)
def fwd_seq(u, bias, hs, cs, gates, s, wp_hh, rec, ui, uf, ug, uo, peep, cifg, noaf, b0, b1,
            const):  # fmt: skip
    """Every step of the forward for the batch rows b0:b1; wp_hh = pack(W_hh^T)
    (`kernels_numba.matmul_packed`); u as in `fwd_step` (None: in place in gates). Each
    per-step array is indexed [t, b0:b1] here (rows of a C-contiguous block)."""
    r = rec[b0:b1]
    for t in range(gates.shape[0]):
        matmul_packed(hs[t, b0:b1], wp_hh, rec.shape[1], r, False)
        if u is None:
            fwd_step(
                None, bias, r, gates[t, b0:b1], cs[t, b0:b1], cs[t + 1, b0:b1], s[t, b0:b1],
                hs[t + 1, b0:b1], ui, uf, ug, uo, peep, cifg, noaf, const,
            )  # fmt: skip
        else:
            fwd_step(
                u[t, b0:b1], bias, r, gates[t, b0:b1], cs[t, b0:b1], cs[t + 1, b0:b1],
                s[t, b0:b1], hs[t + 1, b0:b1], ui, uf, ug, uo, peep, cifg, noaf, const,
            )  # fmt: skip


@numba.njit(**_JIT)
def bwd_seq(start, end, dh, dy, use_dy, gates, s, cs, dc, d, wp_hht, ki, kf, kg, ko, peep, cifg,
            noaf, b0, b1, const):  # fmt: skip
    """Steps end-1 .. start of the backward for the batch rows b0:b1, d (K, b1 - b0, G*H)
    their dL/da in the chunk (indexed d[t - start]); wp_hht = pack(W_hh)."""
    dhb, dcb = dh[b0:b1], dc[b0:b1]
    for t in range(end - 1, start - 1, -1):
        dyt = dy[t, b0:b1] if use_dy else dy[0, b0:b1]
        k = t - start
        bwd_step(
            dhb, dyt, use_dy, gates[t, b0:b1], s[t, b0:b1], cs[t, b0:b1], dcb, d[k],
            ki, kf, kg, ko, peep, cifg, noaf, const,
        )  # fmt: skip
        matmul_packed(d[k], wp_hht, dh.shape[1], dhb, False)


# --------------------------------------------------------------------------------------------
# Layer norm


# The row sums alone may be reassociated ("reassoc"): LLVM then sums in vector lanes, a
# fixed order for the compiled code (the same bits run to run), where one running sum is a
# chain of dependent adds (4 cycles each). Their own functions, so the flag stays here.
_SUM = {"nogil": True, "cache": True, "error_model": "numpy", "fastmath": {"contract", "reassoc"}}


@numba.njit(**_SUM)
def row_sum(z, n, const):
    """sum(z[:n])."""
    acc = const.zero
    for j in range(n):
        acc += z[j]
    return acc


@numba.njit(**_SUM)
def centred_sq_sum(z, mean, n, const):
    """sum((z[:n] - mean)^2)."""
    acc = const.zero
    for j in range(n):
        e = z[j] - mean
        acc += e * e
    return acc


@numba.njit(**_INLINE)
def ln_stats(z, n, eps, const):
    """(mean, 1 / sqrt(var + eps)) of z[:n], as `lstm_variants.layer_norm`."""
    nf = z.dtype.type(n)
    mean = row_sum(z, n, const) / nf
    var = centred_sq_sum(z, mean, n, const) / nf
    return mean, const.one / np.sqrt(var + eps)


@numba.njit(**_JIT)
def ln_rows(z, gain, bias, y, r, out, eps, b0, b1, const):
    """Rows b0:b1 of z (N, M): y = LN(z), r = 1/std (N, 1), out = y * gain + bias (bias may
    be None). The input projections of every step at once; out may be z itself."""
    M = z.shape[1]
    for b in range(b0, b1):
        zr, yr, orow = z[b], y[b], out[b]
        mean, rb = ln_stats(zr, M, eps, const)
        r[b, 0] = rb
        for j in range(M):
            yr[j] = (zr[j] - mean) * rb
        if bias is None:
            for j in range(M):
                orow[j] = yr[j] * gain[j]
        else:
            for j in range(M):
                orow[j] = yr[j] * gain[j] + bias[j]


@numba.njit(**_SUM)
def ln_back_sums(g, y, n, const):
    """(sum g, sum g y) over g[:n], y[:n]."""
    sg = sgy = const.zero
    for j in range(n):
        sg += g[j]
        sgy += g[j] * y[j]
    return sg, sgy


@numba.njit(**_JIT)
def ln_back_rows(dy, gain, y, r, out, const):
    """Rows: out = LN'(dy * gain) = r (g - mean g - y mean(g y)), g = dy * gain; g is
    formed in `out` first (out may be dy itself)."""
    N, M = dy.shape
    mf = dy.dtype.type(M)
    for b in range(N):
        dr, yr, orow = dy[b], y[b], out[b]
        for j in range(M):
            orow[j] = dr[j] * gain[j]
        sg, sgy = ln_back_sums(orow, yr, M, const)
        mg, mgy, rb = sg / mf, sgy / mf, r[b, 0]
        for j in range(M):
            orow[j] = rb * ((orow[j] - mg) - yr[j] * mgy)


@numba.njit(**_JIT)
def ln_chunk_rows(d, dnc, g_ih, lnu, ru, lnv, lnc, du, acc, const):
    """Rows of one step of a finished chunk: du = LN'(d gamma_ih), and the layer-norm
    parameters' gradients added into acc (4, 4H), float64 (one running sum per entry over
    every row of the sequence, so in a wider type): rows sum d LN(u), d LN(v), dnc LN(c),
    dnc (the last two over H)."""
    N, M = d.shape
    H = dnc.shape[1]
    mf = d.dtype.type(M)
    a_ih, a_hh, a_c, a_bc = acc[0], acc[1], acc[2], acc[3]
    for b in range(N):
        dr, ur, vr, orow = d[b], lnu[b], lnv[b], du[b]
        for j in range(M):
            a_ih[j] += dr[j] * ur[j]
        for j in range(M):
            a_hh[j] += dr[j] * vr[j]
        for j in range(M):
            orow[j] = dr[j] * g_ih[j]
        sg, sgy = ln_back_sums(orow, ur, M, const)
        mg, mgy, rb = sg / mf, sgy / mf, ru[b, 0]
        for j in range(M):
            orow[j] = rb * ((orow[j] - mg) - ur[j] * mgy)
        nr, cr = dnc[b], lnc[b]
        for j in range(H):
            a_c[j] += nr[j] * cr[j]
        for j in range(H):
            a_bc[j] += nr[j]


@numba.njit(**_JIT)
def ln_chunk_seq(start, end, d, dnc, g_ih, lnu, ru, lnv, lnc, du, acc, b0, b1, const):
    """`ln_chunk_rows` over a finished chunk's steps start .. end-1 (in that order, each step's
    rows in order: the order of acc's running sums), for the batch rows b0:b1: d, dnc, du
    (K, b1 - b0, .) the block's own, indexed [t - start]; lnu, ru, lnv, lnc the sequence's,
    indexed [t, b0:b1]."""
    for t in range(start, end):
        k = t - start
        ln_chunk_rows(
            d[k], dnc[k], g_ih, lnu[t, b0:b1], ru[t, b0:b1], lnv[t, b0:b1], lnc[t, b0:b1], du[k],
            acc, const,
        )  # fmt: skip


@numba.njit(**_JIT)
def ln_rec_rows(rec, gain, lnv, rv, a, eps, const):
    """lnv = LN(rec), rv = 1/std (B, 1); a += lnv * gain (a holds LN(u) gamma_ih + b)."""
    B, M = rec.shape
    for b in range(B):
        zr, yr, ar = rec[b], lnv[b], a[b]
        mean, rb = ln_stats(zr, M, eps, const)
        rv[b, 0] = rb
        for j in range(M):
            yr[j] = (zr[j] - mean) * rb
        for j in range(M):
            ar[j] = ar[j] + yr[j] * gain[j]


@numba.njit(**_JIT)
def ln_cell_rows(gates, c, lnc, rc, gain, beta, s, h, eps, const):
    """lnc = LN(c), rc; s = tanh(lnc gamma_c (+ beta_c)); h = o s."""
    B, H = c.shape
    for b in range(B):
        cr, yr, sr, hr, ar = c[b], lnc[b], s[b], h[b], gates[b]
        mean, rb = ln_stats(cr, H, eps, const)
        rc[b, 0] = rb
        for j in range(H):
            yr[j] = (cr[j] - mean) * rb
        if beta is None:
            for j in range(H):
                sr[j] = tanh(yr[j] * gain[j], const)
        else:
            for j in range(H):
                sr[j] = tanh(yr[j] * gain[j] + beta[j], const)
        for j in range(H):
            hr[j] = ar[3 * H + j] * sr[j]


@numba.njit(**_JIT)
def ln_fwd_step(a, rec, c_prev, c, s, h, lnv, rv, lnc, rc, g_hh, g_c, beta, eps, const):
    """One layer-norm step: a (B, 4H) holds LN(u) gamma_ih + b; gates in place."""
    H = c.shape[1]
    ln_rec_rows(rec, g_hh, lnv, rv, a, eps, const)
    act_inplace_rows(a, 0, 2 * H, None, const)  # i, f
    act_inplace_rows(a, 2 * H, 3 * H, 1, const)  # g
    act_inplace_rows(a, 3 * H, 4 * H, None, const)  # o
    cell_rows(a, c_prev, c, const)
    ln_cell_rows(a, c, lnc, rc, g_c, beta, s, h, eps, const)


@numba.njit(**_JIT)
def ln_bwd_step(dh, dy, use_dy, gates, s, c_prev, dc, d, dnc, lnc, rc, g_c, g_hh, lnv, rv, dv,
                const):  # fmt: skip
    """dh += dy; dnc = dL/d(LN(c) gamma_c + beta_c); d = dL/da (B, 4H); dv = LN'(d gamma_hh);
    dc becomes dc_{t-1}. dh_{t-1} = dv W_hh after."""
    B, H = dh.shape
    hf = dh.dtype.type(H)
    for b in range(B):
        dhr, dyr, ar, sr, cp, dcr, dr = dh[b], dy[b], gates[b], s[b], c_prev[b], dc[b], d[b]
        nr, yr = dnc[b], lnc[b]
        if use_dy:
            for j in range(H):
                dhr[j] += dyr[j]
        for j in range(H):
            st = sr[j]
            nr[j] = (dhr[j] * ar[3 * H + j]) * (const.one - st * st)
        # dc += LN'(dnc gamma_c): the cell's own layer norm, over H
        for j in range(H):
            dr[j] = nr[j] * g_c[j]  # scratch: d's i block, overwritten below
        sg, sgy = ln_back_sums(dr, yr, H, const)
        mg, mgy, rb = sg / hf, sgy / hf, rc[b, 0]
        for j in range(H):
            i = ar[j]
            f = ar[H + j]
            g = ar[2 * H + j]
            o = ar[3 * H + j]
            dcv = dcr[j] + rb * ((dr[j] - mg) - yr[j] * mgy)
            dr[3 * H + j] = (dhr[j] * sr[j]) * (o - o * o)
            dr[2 * H + j] = (dcv * i) * (const.one - g * g)
            dr[j] = (dcv * g) * (i - i * i)
            dr[H + j] = (dcv * cp[j]) * (f - f * f)
            dcr[j] = dcv * f
    ln_back_rows(d, g_hh, lnv, rv, dv, const)


@numba.njit(**_JIT)
def ln_fwd_seq(gates, hs, cs, s, lnv, rv, lnc, rc, g_hh, g_c, beta, wp_hh, rec, eps, b0, b1,
               const):  # fmt: skip
    """Every layer-norm step for the batch rows b0:b1 (each per-step array indexed
    [t, b0:b1]); wp_hh = pack(W_hh^T)."""
    r = rec[b0:b1]
    for t in range(gates.shape[0]):
        matmul_packed(hs[t, b0:b1], wp_hh, rec.shape[1], r, False)
        ln_fwd_step(
            gates[t, b0:b1], r, cs[t, b0:b1], cs[t + 1, b0:b1], s[t, b0:b1], hs[t + 1, b0:b1],
            lnv[t, b0:b1], rv[t, b0:b1], lnc[t, b0:b1], rc[t, b0:b1], g_hh, g_c, beta, eps,
            const,
        )  # fmt: skip


@numba.njit(**_JIT)
def ln_bwd_seq(start, end, dh, dy, use_dy, gates, s, cs, dc, d, dnc, lnc, rc, g_c, g_hh, lnv,
               rv, dv, wp_hht, b0, b1, const):  # fmt: skip
    """Layer-norm steps end-1 .. start for the batch rows b0:b1; d, dnc, dv (K, b1 - b0, .):
    the block's own for the chunk, indexed [t - start]; wp_hht = pack(W_hh)."""
    dhb, dcb = dh[b0:b1], dc[b0:b1]
    for t in range(end - 1, start - 1, -1):
        dyt = dy[t, b0:b1] if use_dy else dy[0, b0:b1]
        k = t - start
        ln_bwd_step(
            dhb, dyt, use_dy, gates[t, b0:b1], s[t, b0:b1], cs[t, b0:b1], dcb, d[k], dnc[k],
            lnc[t, b0:b1], rc[t, b0:b1], g_c, g_hh, lnv[t, b0:b1], rv[t, b0:b1], dv[k], const,
        )  # fmt: skip
        matmul_packed(dv[k], wp_hht, dh.shape[1], dhb, False)


# --------------------------------------------------------------------------------------------


def _bind(const: Constants) -> SimpleNamespace:
    """The kernels `backend.variant_kernels` hands out, `const` bound (layer norm's eps, of
    the float type, is an argument: `lstm_variants.LN_EPS` when called); closures over the
    constants alone, so numba's cache finds them. Each takes the batch rows b0, b1 last
    (`parallel.run_rows` calls kernel(*args, b0, b1))."""

    @numba.njit(**_JIT)
    def fwd_seq_(u, bias, hs, cs, gates, s, wp_hh, rec, ui, uf, ug, uo, peep, cifg, noaf, b0,
                 b1):  # fmt: skip
        fwd_seq(
            u, bias, hs, cs, gates, s, wp_hh, rec, ui, uf, ug, uo, peep, cifg, noaf, b0, b1,
            const,
        )  # fmt: skip

    @numba.njit(**_JIT)
    def bwd_seq_(start, end, dh, dy, use_dy, gates, s, cs, dc, d, wp_hht, ki, kf, kg, ko, peep,
                 cifg, noaf, b0, b1):  # fmt: skip
        bwd_seq(
            start, end, dh, dy, use_dy, gates, s, cs, dc, d, wp_hht, ki, kf, kg, ko, peep, cifg,
            noaf, b0, b1, const,
        )  # fmt: skip

    @numba.njit(**_JIT)
    def ln_rows_(z, gain, bias, y, r, out, eps, b0, b1):
        ln_rows(z, gain, bias, y, r, out, eps, b0, b1, const)

    @numba.njit(**_JIT)
    def ln_chunk_seq_(start, end, d, dnc, g_ih, lnu, ru, lnv, lnc, du, acc, b0, b1):
        ln_chunk_seq(start, end, d, dnc, g_ih, lnu, ru, lnv, lnc, du, acc, b0, b1, const)

    @numba.njit(**_JIT)
    def ln_fwd_seq_(gates, hs, cs, s, lnv, rv, lnc, rc, g_hh, g_c, beta, wp_hh, rec, eps, b0,
                    b1):  # fmt: skip
        ln_fwd_seq(
            gates, hs, cs, s, lnv, rv, lnc, rc, g_hh, g_c, beta, wp_hh, rec, eps, b0, b1, const
        )

    @numba.njit(**_JIT)
    def ln_bwd_seq_(start, end, dh, dy, use_dy, gates, s, cs, dc, d, dnc, lnc, rc, g_c, g_hh,
                    lnv, rv, dv, wp_hht, b0, b1):  # fmt: skip
        ln_bwd_seq(
            start, end, dh, dy, use_dy, gates, s, cs, dc, d, dnc, lnc, rc, g_c, g_hh, lnv, rv,
            dv, wp_hht, b0, b1, const,
        )  # fmt: skip

    return SimpleNamespace(
        pack=pack,
        fwd_seq=fwd_seq_,
        bwd_seq=bwd_seq_,
        ln_rows=ln_rows_,
        ln_chunk_seq=ln_chunk_seq_,
        ln_fwd_seq=ln_fwd_seq_,
        ln_bwd_seq=ln_bwd_seq_,
    )


KERNELS = {np.dtype(dt): _bind(constants(dt)) for dt in (np.float32, np.float64)}
