r"""LSTM variants: peepholes, coupled gates, a gate removed, no output activation, layer norm.

The variants of Greff et al. 2017 ("LSTM: A Search Space Odyssey"), each one change to the
LSTM of `lstm.py`, plus the layer-normalised LSTM of Ba, Kiros & Hinton 2016. Selected with
`gs.LSTM(D, H, variant=NAME)`; "vanilla" (PyTorch's LSTM) keeps the fast path of `lstm.py`,
every other name runs here. Symbols as in `lstm.py`; s_t is the squashed cell::

    u_t = x_t W_ih^T  (all steps at once)      v_t = h_{t-1} W_hh^T      (B, G*H)
    a_t = u_t + v_t + b                        = the G gate blocks present, in order i f g o
    i_t = sigma(a_i)   f_t = sigma(a_f)   g_t = tanh(a_g)   o_t = sigma(a_o)
    c_t = f_t * c_{t-1} + i_t * g_t
    s_t = tanh(c_t)    h_t = o_t * s_t

    vanilla    as above (G = 4)
    peephole   a_i += p_i * c_{t-1},  a_f += p_f * c_{t-1},  a_o += p_o * c_t
               (Gers & Schmidhuber 2000; o peeks at the *new* cell; p (3H,) = [p_i, p_f, p_o])
    cifg       i_t = 1 - f_t                (coupled input-forget gate; blocks f g o, G = 3)
    nfg        f_t = 1                      (no forget gate, the 1997 LSTM; blocks i g o)
    nig        i_t = 1                      (no input gate; blocks f g o)
    nog        o_t = 1, so h_t = s_t        (no output gate; blocks i f g)
    noaf       s_t = c_t, so h_t = o_t * c_t  (no output activation; G = 4)
    layernorm  a_t = LN(u_t) * gamma_ih + LN(v_t) * gamma_hh + b      (over all 4H units)
               s_t = tanh(LN(c_t) * gamma_c + beta_c)
               LN(z) = (z - mean(z)) / sqrt(var(z) + eps), per example and step, eps = 1e-5

Layer norm follows Ba et al. (their eqs. 20-22): the input and recurrent projections are
normalised separately, each over all 4H gate units, and the cell before its tanh (the cell
that is carried on, c_t, stays unnormalised). Their two shifts beta_ih, beta_hh always appear
summed with b, so, as with PyTorch's two LSTM biases, gatescope keeps one: b.

Gates that a variant lacks are still in the trace, as the constant (or expression) they act
as: nig i = 1, nfg f = 1, nog o = 1, cifg i = 1 - f. So `c = f * c_prev + i * g` and
`h = o * s` hold for every variant, and every figure reading the trace works unchanged.

Parameters per layer (short names; `_l{k}` appended by the stack). G blocks of H rows:

    weight_ih (G*H, D)   weight_hh (G*H, H)   bias (G*H,)  (if bias=True)
    peephole  (3H,)      peephole only: [p_i, p_f, p_o], initialised to 0 (starts as vanilla)
    ln_gain_ih, ln_gain_hh (4H,) and ln_gain_c (H,), initialised to 1; ln_bias_c (H,),
    initialised to 0 and present only with bias=True (bias=False: no additive shift anywhere)

so, per layer, vanilla and noaf 4H(D+H+1), peephole + 3H, cifg/nfg/nig/nog 3H(D+H+1),
layernorm + 9H + H (the last H only with bias). The forget bias `forget_bias` goes on the f
block where there is one (every variant except nfg).

Backward, given dh = dL/dh_t (from the output and from step t+1) and dc = dL/dc_t (from t+1)::

    do   = dh * s_t         ds = dh * o_t
    dc  += ds * (1 - s^2)                     (noaf: dc += ds;  layernorm: dc += LN'(ds (1-s^2) gamma_c))
    da_o = do * o (1 - o);   peephole: dc += da_o * p_o          (nog: no da_o)
    di = dc * g    dg = dc * i    df = dc * c_{t-1}    cifg: df -= di  (since i = 1 - f)
    da_i = di * i (1 - i)   da_f = df * f (1 - f)   da_g = dg * (1 - g^2)   (blocks present)
    dc_{t-1} = dc * f  (+ da_i * p_i + da_f * p_f with peepholes)
    dv = da  (layernorm: dv = LN'(da * gamma_hh))       dh_{t-1} = dv W_hh
    after the loop: du = da (layernorm: LN'(da * gamma_ih)), dx = du W_ih, dW_ih = du^T x,
    dW_hh = dv^T h_{t-1}, db = sum da, dp and the gains from sums of products,

where LN'(dy) = (dy - mean(dy) - y * mean(dy * y)) / sqrt(var + eps) is layer norm's
backward (y the normalised value). One readable sequence implementation, the reference: a
Python loop over steps, with the input projections (and their normalisation) done for all
steps at once, and backward in chunks of steps as in lstm.py (each finished chunk's products
and parameter sums at once). Without edits, `backend.variant_kernels` may hand each step's
element-wise work to numba kernels (`kernels_variants_numba.py`), tested against this code
at `backend.TOLERANCE` (tests/test_variant_kernels.py), with the batch's rows in blocks over
threads (`parallel`, as lstm.py: forward the same bits at any thread count, backward's
gradients the blocks' parts summed in block order; tests/test_variant_parallel.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .backend import variant_kernels
from .edits import EditPlan
from .functional import sigmoid, tanh
from .parallel import matmul, matmul_block, run_blocks, run_rows, sum_blocks
from .recurrent import LSTM_VARIANTS, chunk_steps, init_packed

VARIANTS = LSTM_VARIANTS
LN_EPS = 1e-5  # layer norm's epsilon (PyTorch's LayerNorm default)
# the kernels' normalisation of the input projections: an entry's cost in multiply-adds of a
# product, for `parallel.row_blocks`' work threshold (measured roughly, one thread, float32:
# about 0.45 ns an entry of (6400, 512), 0.015 ns a multiply-add of BLAS's (6400, 32, 512))
LN_WORK = 30

# the gate blocks each variant packs into weight_ih / weight_hh / bias, in this order
BLOCKS: dict[str, str] = {
    "vanilla": "ifgo",
    "peephole": "ifgo",
    "cifg": "fgo",
    "nfg": "igo",
    "nig": "fgo",
    "nog": "ifg",
    "noaf": "ifgo",
    "layernorm": "ifgo",
}


def check_variant(variant: str) -> str:
    if variant not in BLOCKS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}; got {variant!r}")
    return variant


def num_gate_blocks(variant: str) -> int:
    """G: how many H-row gate blocks the variant packs into weight_ih and weight_hh."""
    return len(BLOCKS[check_variant(variant)])


def param_count(variant: str, input_size: int, hidden_size: int, bias: bool = True) -> int:
    """Parameters of one layer of `variant` (the formula; tests check it against the arrays)."""
    G, D, H = num_gate_blocks(variant), input_size, hidden_size
    n = G * H * (D + H) + (G * H if bias else 0)
    if variant == "peephole":
        n += 3 * H
    if variant == "layernorm":
        n += 4 * H + 4 * H + H + (H if bias else 0)
    return n


def init_layer(
    variant: str,
    d_in: int,
    hidden: int,
    rng: np.random.Generator,
    *,
    bias: bool,
    forget_bias: float,
) -> dict[str, np.ndarray]:
    """Fresh parameters of one layer (short names): the textbook chapter's packed init, G blocks."""
    blocks, H = BLOCKS[check_variant(variant)], hidden
    w_ih, w_hh = init_packed(rng, len(blocks), d_in, H)
    p = {"weight_ih": w_ih, "weight_hh": w_hh}
    if bias:
        p["bias"] = np.zeros(len(blocks) * H)
        if "f" in blocks:
            k = blocks.index("f")
            p["bias"][k * H : (k + 1) * H] = forget_bias
    if variant == "peephole":
        p["peephole"] = np.zeros(3 * H)  # [p_i, p_f, p_o]: starts as the vanilla LSTM
    if variant == "layernorm":
        p["ln_gain_ih"] = np.ones(4 * H)
        p["ln_gain_hh"] = np.ones(4 * H)
        p["ln_gain_c"] = np.ones(H)
        if bias:
            p["ln_bias_c"] = np.zeros(H)
    return p


# --------------------------------------------------------------------------------------------
# Layer normalisation over the last axis


def layer_norm(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """z (..., N) -> (y, r): y = (z - mean) * r, r = 1 / sqrt(var + eps), r (..., 1)."""
    zc = z - z.mean(axis=-1, keepdims=True)
    r = 1.0 / np.sqrt((zc * zc).mean(axis=-1, keepdims=True) + LN_EPS)
    return zc * r, r


def layer_norm_backward(dy: np.ndarray, y: np.ndarray, r: np.ndarray) -> np.ndarray:
    """dL/dy -> dL/dz for y = layer_norm(z) (y, r from the forward)."""
    return r * (dy - dy.mean(axis=-1, keepdims=True) - y * (dy * y).mean(axis=-1, keepdims=True))


# --------------------------------------------------------------------------------------------
# A whole sequence


@dataclass
class VariantCache:
    """What backward needs; `gates`, `hs`, `cs` are laid out as in `LSTMCache` (the trace)."""

    variant: str
    x: np.ndarray  # (T, B, D) the layer's input
    gates: np.ndarray  # (T, B, 4H) [i, f, g, o], constants filled in for missing gates
    hs: np.ndarray  # (T + 1, B, H) hidden states, h_0 first
    cs: np.ndarray  # (T + 1, B, H) cell states, c_0 first
    s: np.ndarray  # (T, B, H) squashed cell: tanh(c), c (noaf), tanh(LN(c) gamma + beta)
    ln: dict[str, np.ndarray] = field(default_factory=dict)  # layernorm: normalised values, 1/std
    edits: EditPlan | None = None  # the edits this forward applied (see nn/edits.py)


_NO_EDITS = EditPlan({})  # an empty plan: every hook is a no-op (this loop is the readable one)


def _blocks_of(a: np.ndarray, blocks: str, H: int) -> dict[str, np.ndarray]:
    """(..., G*H) -> {gate name: (..., H) view}."""
    return {name: a[..., k * H : (k + 1) * H] for k, name in enumerate(blocks)}


def variant_forward(
    variant: str,
    x: np.ndarray,
    h0: np.ndarray,
    c0: np.ndarray,
    p: dict[str, np.ndarray],
    edits: EditPlan | None = None,
    backend: str | None = None,
) -> VariantCache:
    """A sequence: x (T, B, D), h0, c0 (B, H), one layer's params -> cache with every gate.

    `edits` (an `edits.EditPlan`) changes i f g o c h right after each is computed (a gate
    a variant lacks: the constant it acts as), so everything after reads the edited value.
    `backend` (see `backend.backend`) may hand each step's element-wise work to a kernel
    (`kernels_variants_numba.py`); with edits this NumPy code runs, never the kernels.
    """
    ed = edits if edits is not None else _NO_EDITS
    blocks = BLOCKS[check_variant(variant)]
    T, B, D = x.shape
    H = h0.shape[1]
    G = len(blocks)
    w_ih, w_hh, b = p["weight_ih"], p["weight_hh"], p.get("bias")
    is_ln, peep = variant == "layernorm", p.get("peephole")
    nb = variant_kernels(x.dtype, backend) if edits is None else None
    ln: dict[str, np.ndarray] = {}

    gates = np.empty((T, B, 4 * H), x.dtype)
    u = gates if G == 4 else np.empty((T, B, G * H), x.dtype)  # G = 4: in place, as lstm.py
    if nb is not None:  # all steps at once, the rows over threads (`parallel.matmul`)
        matmul(x.reshape(T * B, D), w_ih.T, u.reshape(T * B, G * H))
    else:
        np.matmul(x.reshape(T * B, D), w_ih.T, out=u.reshape(T * B, G * H))  # all steps at once
    if is_ln:
        ln["u"] = np.empty((T, B, G * H), x.dtype)  # normalised input projections
        ln["ru"] = np.empty((T, B, 1), x.dtype)  # their 1 / std
        if nb is not None:  # u = LN(u) gamma_ih + b, in one pass, the rows over threads
            eps = x.dtype.type(LN_EPS)
            args = (_rows(u), p["ln_gain_ih"], b, _rows(ln["u"]), _rows(ln["ru"]), _rows(u), eps)
            run_rows(nb.ln_rows, T * B, LN_WORK * T * B * G * H, *args)
        else:
            ln["u"][...], ln["ru"][...] = layer_norm(u)
            np.multiply(ln["u"], p["ln_gain_ih"], out=u)
            if b is not None:
                u += b
        ln["v"] = np.empty((T, B, G * H), x.dtype)  # normalised recurrent projections
        ln["rv"] = np.empty((T, B, 1), x.dtype)
        ln["c"] = np.empty((T, B, H), x.dtype)  # normalised cells
        ln["rc"] = np.empty((T, B, 1), x.dtype)
    elif b is not None and nb is None:
        u += b  # (the kernels add the bias as they go)

    hs = np.empty((T + 1, B, H), x.dtype)
    cs = np.empty((T + 1, B, H), x.dtype)
    s = np.empty((T, B, H), x.dtype)
    hs[0], cs[0] = h0, c0
    cache = VariantCache(variant, x, gates, hs, cs, s, ln, edits)
    if nb is not None:
        return _forward_kernels(nb, cache, u, p)
    for t in range(T):
        c_prev = cs[t]
        v = hs[t] @ w_hh.T  # (B, G*H)
        if is_ln:
            ln["v"][t], ln["rv"][t] = layer_norm(v)
            v = np.multiply(ln["v"][t], p["ln_gain_hh"], out=v)
        v += u[t]
        a = _blocks_of(v, blocks, H)  # pre-activations a_t by gate, each (B, H)
        if peep is not None:
            a["i"] += peep[:H] * c_prev
            a["f"] += peep[H : 2 * H] * c_prev
        i, f, g, o = (gates[t, :, k * H : (k + 1) * H] for k in range(4))
        if "f" in blocks:
            sigmoid(a["f"], out=f)
        else:
            f[...] = 1  # nfg
        ed.apply(t, "f", f)  # edits act where a quantity is computed (cifg: before i = 1 - f)
        if "i" in blocks:
            sigmoid(a["i"], out=i)
        elif variant == "cifg":
            np.subtract(1, f, out=i)
        else:
            i[...] = 1  # nig
        ed.apply(t, "i", i)
        tanh(a["g"], out=g)
        ed.apply(t, "g", g)
        c = cs[t + 1]
        np.multiply(f, c_prev, out=c)
        c += i * g
        ed.apply(t, "c", c)
        if "o" in blocks:
            if peep is not None:
                a["o"] += peep[2 * H :] * c
            sigmoid(a["o"], out=o)
        else:
            o[...] = 1  # nog
        ed.apply(t, "o", o)
        if is_ln:
            ln["c"][t], ln["rc"][t] = layer_norm(c)
            nc = np.multiply(ln["c"][t], p["ln_gain_c"], out=s[t])
            if "ln_bias_c" in p:
                nc += p["ln_bias_c"]
            tanh(nc, out=s[t])
        elif variant == "noaf":
            s[t] = c
        else:
            tanh(c, out=s[t])
        np.multiply(o, s[t], out=hs[t + 1])
        ed.apply(t, "h", hs[t + 1])
    return cache


def _rows(a: np.ndarray) -> np.ndarray:
    """(T, B, N) -> (T * B, N), a view."""
    return a.reshape(-1, a.shape[-1])


def _kernel_options(variant: str, p: dict[str, np.ndarray], H: int) -> tuple:
    """The generic kernels' variant options: each gate's column in the G blocks (None where
    missing), the peepholes, cifg's coupling, noaf (None or 1: see kernels_variants_numba)."""
    col = {name: k * H for k, name in enumerate(BLOCKS[variant])}
    return (
        col.get("i"), col.get("f"), col["g"], col.get("o"), p.get("peephole"),
        1 if variant == "cifg" else None, 1 if variant == "noaf" else None,
    )  # fmt: skip


def _forward_kernels(nb, cache: VariantCache, u: np.ndarray, p: dict[str, np.ndarray]):
    """`variant_forward`'s steps by a backend's kernels: the whole sequence in one call per
    block of the batch's rows (`parallel.run_rows`: the blocks on threads, each row's work
    that of one call over every row, so the same bits at any thread count), the recurrent
    product against W_hh^T packed once (`kernels_numba.matmul_packed`)."""
    variant, gates, hs, cs, s, ln = (
        cache.variant, cache.gates, cache.hs, cache.cs, cache.s, cache.ln
    )  # fmt: skip
    blocks = BLOCKS[variant]
    T, B, _ = gates.shape
    H, G = hs.shape[2], len(blocks)
    work = T * B * G * H * H  # multiply-adds of the recurrent products
    wp_hh = nb.pack(p["weight_hh"].T)  # W_hh^T (H, G*H) in panels
    rec = np.empty((B, G * H), gates.dtype)  # h_{t-1} W_hh^T
    for k, name in enumerate("ifgo"):  # the gates a variant lacks: their constants, once
        if name not in blocks and not (variant == "cifg" and name == "i"):
            gates[:, :, k * H : (k + 1) * H] = 1
    if variant == "layernorm":
        lns = (ln["v"], ln["rv"], ln["c"], ln["rc"])
        eps = gates.dtype.type(LN_EPS)  # read when called (a test sets it to 0)
        gains = (p["ln_gain_hh"], p["ln_gain_c"], p.get("ln_bias_c"))
        run_rows(nb.ln_fwd_seq, B, work, gates, hs, cs, s, *lns, *gains, wp_hh, rec, eps)
        return cache
    b = p.get("bias")
    bias = b if b is not None else np.zeros(G * H, gates.dtype)
    opts = _kernel_options(variant, p, H)
    inplace = u is gates  # G = 4: the kernels activate the gates in place (u None)
    args = (None if inplace else u, bias, hs, cs, gates, s, wp_hh, rec, *opts)
    run_rows(nb.fwd_seq, B, work, *args)
    return cache


def variant_backward(
    cache: VariantCache,
    p: dict[str, np.ndarray],
    dy: np.ndarray | None,
    dhT: np.ndarray,
    dcT: np.ndarray,
    backend: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """BPTT: dy (T, B, H) or None, dhT, dcT (B, H) -> dx, dh0, dc0, grads by short name.

    With the forward's edits (`cache.edits`), each quantity's gradient passes through its
    edit (`EditPlan.grad`: times mul) before reaching what computed it, and each gate's
    derivative is taken at the value it computed (`EditPlan.original`). This loop is also
    the backward of the vanilla LSTM when it was edited.

    Time runs backwards in chunks of K steps (`recurrent.chunk_steps`), as in lstm.py: a
    finished chunk's dL/da goes through the products for dx and the weight gradients at
    once, so dL/da is never held for the whole sequence. Without edits, `backend` may hand
    each step's element-wise work to a kernel (`kernels_variants_numba.py`), the batch's
    rows in blocks over threads (`_backward_kernels`).
    """
    variant, x, hs = cache.variant, cache.x, cache.hs
    dt = x.dtype
    nb = variant_kernels(dt, backend) if cache.edits is None else None
    if nb is not None:  # a backend's kernels instead of the NumPy below
        return _backward_kernels(nb, cache, p, dy, dhT, dcT)
    T, B, D = x.shape
    H = hs.shape[2]
    G = len(BLOCKS[variant])
    is_ln = variant == "layernorm"

    K = chunk_steps(T, B)
    da = np.empty((K, B, G * H), dt)  # dL/d(pre-activations a_t) of one chunk
    dv = da if not is_ln else np.empty_like(da)  # dL/d(v_t), the recurrent projection
    dnc = np.empty((K, B, H), dt) if is_ln else None  # dL/d(LN(c_t) gamma_c + beta_c)
    du = da if not is_ln else np.empty_like(da)  # dL/d(u_t), the input projection
    dx = np.empty((T, B, D), dt)
    grads = {n: np.zeros_like(a) for n, a in p.items()}
    dh = np.array(dhT, dtype=dt)  # (B, H)
    dc = np.array(dcT, dtype=dt)  # (B, H)
    for end in range(T, 0, -K):
        start = max(0, end - K)
        n = end - start
        bufs = (da[:n], dv[:n], dnc[:n] if is_ln else None)
        for t in reversed(range(start, end)):
            dh, dc = _backward_step(cache, p, t, t - start, dy, dh, dc, *bufs)
        _chunk_products(cache, p, start, end, *bufs, du[:n], dx, grads)
    return dx, dh, dc, grads


def _backward_step(cache: VariantCache, p, t: int, k: int, dy, dh, dc, da, dv, dnc):
    """Step t of the reference backward: da[k], dv[k], dnc[k]; -> dh_{t-1}, dc_{t-1}."""
    variant, gates, cs, s, ln = cache.variant, cache.gates, cache.cs, cache.s, cache.ln
    blocks = BLOCKS[variant]
    H = cs.shape[2]
    is_ln, peep = variant == "layernorm", p.get("peephole")
    ed = cache.edits if cache.edits is not None else _NO_EDITS
    if dy is not None:
        dh = dh + dy[t]
    dh = ed.grad(t, "h", dh)  # dL/dh_t before its edit
    i, f, g, o = (gates[t, :, k_ * H : (k_ + 1) * H] for k_ in range(4))
    # each gate's own derivative is at the value it computed, before any edit
    i0, f0, g0, o0 = (ed.original(t, n, a) for n, a in zip("ifgo", (i, f, g, o)))
    c_prev, st = cs[t], s[t]
    d = _blocks_of(da[k], blocks, H)  # views into da[k], by gate
    do = ed.grad(t, "o", dh * st)
    ds = dh * o
    if is_ln:
        dnc[k] = ds * (1 - st * st)
        dc = dc + layer_norm_backward(dnc[k] * p["ln_gain_c"], ln["c"][t], ln["rc"][t])
    elif variant == "noaf":
        dc = dc + ds
    else:
        dc = dc + ds * (1 - st * st)
    if "o" in blocks:
        d["o"][...] = do * o0 * (1 - o0)
        if peep is not None:
            dc = dc + d["o"] * peep[2 * H :]
    dc = ed.grad(t, "c", dc)  # dL/dc_t before its edit
    di = ed.grad(t, "i", dc * g)
    df = dc * c_prev
    if variant == "cifg":
        df -= di  # i = 1 - f
    df = ed.grad(t, "f", df)
    d["g"][...] = ed.grad(t, "g", dc * i) * (1 - g0 * g0)
    if "i" in blocks:
        d["i"][...] = di * i0 * (1 - i0)
    if "f" in blocks:
        d["f"][...] = df * f0 * (1 - f0)
    dc = dc * f  # dc_{t-1}
    if peep is not None:
        dc += d["i"] * peep[:H] + d["f"] * peep[H : 2 * H]
    if is_ln:
        dv[k] = layer_norm_backward(da[k] * p["ln_gain_hh"], ln["v"][t], ln["rv"][t])
    return dv[k] @ p["weight_hh"], dc  # dh_{t-1}


def _backward_kernels(nb, cache: VariantCache, p, dy, dhT, dcT):
    """`variant_backward` by a backend's kernels: each chunk's steps in one call, W_hh packed
    once, each step's product dh = dv W_hh against it (`kernels_numba.matmul_packed`).

    The batch's rows go in blocks over threads (`parallel.run_blocks`), each block through
    every chunk on its own, as lstm.py's `_lstm_backward_kernels`: its steps (its own dL/da,
    dv, dnc, du of b1 - b0 rows), layer norm's du = LN'(da gamma_ih) and gains' sums
    (`kernels_variants_numba.ln_chunk_seq`, into the block's own float64 acc), then its rows
    of dx and its part of every parameter gradient. The threads meet only at the end, where
    the blocks' parts are summed in block order (one block: the one-call results, bits
    included)."""
    variant, x, gates, hs, cs, s, ln = (
        cache.variant, cache.x, cache.gates, cache.hs, cache.cs, cache.s, cache.ln
    )  # fmt: skip
    T, B, D = x.shape
    H = hs.shape[2]
    G = len(BLOCKS[variant])
    dt = x.dtype
    is_ln = variant == "layernorm"
    K = chunk_steps(T, B)
    dx = np.empty((T, B, D), dt)
    dh = np.array(dhT, dtype=dt)  # (B, H), each block its rows
    dc = np.array(dcT, dtype=dt)  # (B, H)
    use_dy = dy is not None
    dys = dy if use_dy else dh[None]  # (T, B, H), or a stand-in, never read
    wp_hht = nb.pack(p["weight_hh"])  # W_hh (G*H, H) in panels, once for every step
    summed = [n for n in p if not n.startswith("ln_")]  # by products; layer norm's in acc
    if is_ln:
        lns = (ln["c"], ln["rc"], p["ln_gain_c"], p["ln_gain_hh"], ln["v"], ln["rv"])
        lnt = (p["ln_gain_ih"], ln["u"], ln["ru"], ln["v"], ln["c"])
    else:
        opts = _kernel_options(variant, p, H)

    def rows(b0, b1):
        da = np.empty((K, b1 - b0, G * H), dt)  # the block's dL/da of one chunk
        dv = da if not is_ln else np.empty_like(da)  # dL/d(v_t)
        dnc = np.empty((K, b1 - b0, H), dt) if is_ln else None  # dL/d(LN(c) gamma_c + beta_c)
        du = da if not is_ln else np.empty_like(da)  # dL/d(u_t)
        grads = {n: np.zeros_like(p[n]) for n in summed}
        # layer norm's gain gradients, summed over the block's rows in float64
        acc = np.zeros((4, G * H)) if is_ln else None
        blk = (x[:, b0:b1], hs[:, b0:b1], cs[:, b0:b1], dx[:, b0:b1])
        for end in range(T, 0, -K):
            start = max(0, end - K)
            n = end - start
            d, dvn, dun = da[:n], dv[:n], du[:n]
            if is_ln:
                dn = dnc[:n]
                args = (gates, s, cs, dc, d, dn, *lns, dvn, wp_hht, b0, b1)
                nb.ln_bwd_seq(start, end, dh, dys, use_dy, *args)
                nb.ln_chunk_seq(start, end, d, dn, *lnt, dun, acc, b0, b1)
            else:
                nb.bwd_seq(start, end, dh, dys, use_dy, gates, s, cs, dc, d, wp_hht, *opts, b0, b1)
            _products(variant, p, *blk, start, end, d, dvn, dun, grads)
        return grads, acc

    work = T * B * G * H * (2 * H + 2 * D)  # recurrent products, dx, dW_ih, dW_hh
    parts = run_blocks(rows, B, work)
    sum_blocks([(*(g[n] for n in summed), a) for g, a in parts])  # into the first's arrays
    grads, acc = parts[0]
    if acc is not None:
        for k, name in enumerate(("ln_gain_ih", "ln_gain_hh", "ln_gain_c", "ln_bias_c")):
            if name in p:
                grads[name] = acc[k, : p[name].shape[0]].astype(dt)
    return dx, dh, dc, {n: grads[n] for n in p}


def _chunk_products(cache: VariantCache, p, start, end, da, dv, dnc, du, dx, grads):
    """One finished chunk of the reference backward: du (layer norm: LN'(da gamma_ih)), dx =
    du W_ih, and every parameter's gradient summed over its steps into `grads`."""
    ln = cache.ln
    rows = slice(start, end)
    d2 = _rows(da)  # (n B, G H)
    if cache.variant == "layernorm":
        lnu = _rows(ln["u"][rows])
        grads["ln_gain_ih"] += np.einsum("ij,ij->j", d2, lnu)
        grads["ln_gain_hh"] += np.einsum("ij,ij->j", d2, _rows(ln["v"][rows]))
        dn2 = _rows(dnc)
        grads["ln_gain_c"] += np.einsum("ij,ij->j", dn2, _rows(ln["c"][rows]))
        if "ln_bias_c" in p:
            grads["ln_bias_c"] += dn2.sum(axis=0)
        g_ih, r = p["ln_gain_ih"], _rows(ln["ru"][rows])
        _rows(du)[...] = layer_norm_backward(d2 * g_ih, lnu, r)
    _products(cache.variant, p, cache.x, cache.hs, cache.cs, dx, start, end, da, dv, du, grads)


def _products(variant, p, x, hs, cs, dx, start, end, da, dv, du, grads):
    """A finished chunk's products: dx = du W_ih, and dW_ih, dW_hh, db, the peepholes'
    gradient summed into `grads`. x, hs, cs, dx may be a block of the batch's rows (as
    da, dv, du are then): inputs are copied, dx written back."""
    H = hs.shape[2]
    rows = slice(start, end)
    d2 = _rows(da)  # (n B, G H)
    du2 = _rows(du)
    matmul_block(du2, p["weight_ih"], dx[rows])
    grads["weight_ih"] += du2.T @ _rows(x[rows])
    grads["weight_hh"] += _rows(dv).T @ _rows(hs[rows])
    if "bias" in p:
        grads["bias"] += d2.sum(axis=0)
    if "peephole" in p:
        d = _blocks_of(d2, BLOCKS[variant], H)
        gp = grads["peephole"]
        gp[:H] += np.einsum("ij,ij->j", d["i"], _rows(cs[rows]))
        gp[H : 2 * H] += np.einsum("ij,ij->j", d["f"], _rows(cs[rows]))
        gp[2 * H :] += np.einsum("ij,ij->j", d["o"], _rows(cs[start + 1 : end + 1]))
