r"""Sequence to sequence: a stacked LSTM or GRU encoder-decoder, with or without attention.

    from gatescope.seq2seq import Seq2Seq
    m = Seq2Seq(src_vocab=20, tgt_vocab=15, hidden_size=64, arch="lstm", num_layers=1,
                attention="bahdanau", seed=0, dtype="float32")
    loss = m.loss(src, tgt)      # src (B, S), tgt (B, T) int ids; teacher forcing
    m.backward()                 # fills m.grads (same keys and shapes as m.params)
    m.translate(src, beam=1)     # list of id lists (greedy, or beam search)
    m.attention                  # (B, T, S) weights of the last forward (or greedy decode)
    m.trace["encoder"]["f"]      # (L, B, S, H) every gate of every layer; "decoder": (L, B, T, H)
    gi.intervene(m, (src, tgt), [gi.Edit("c", part="encoder", steps=-1, value=0.0)])
                                 # an edited forward (gatescope.inspect); m.backward() after it
                                 # differentiates the edited model (see `Seq2Seq.edited`)

Shape legend: B batch, S source steps, T target steps, E embedding, H hidden units,
Dm memory features (H, or 2H with a bidirectional encoder), A attention units, V vocabulary.

Conventions. Ids 0, 1, 2 are PAD, BOS and EOS in both vocabularies. A source row is its
tokens followed by PAD; a target row is its tokens, then EOS, then PAD. The decoder reads
``BOS, y_1, ..., y_{T-1}`` (teacher forcing) and is scored on ``y_1..y_T`` where the target
is not PAD: the loss is the mean cross-entropy (nats) over the real target tokens, EOS
included. Decoding never emits PAD or BOS (their logits are excluded from the softmax).

Encoder. Token embedding (``encoding="embedding"``, E = ``embed_size``) or one-hot
(E = V), then ``num_layers`` LSTM or GRU layers (PyTorch's gate order; the GRU is PyTorch's,
reset gate after the recurrent product). PAD steps are *skipped*: at a PAD step every
layer keeps its state (``state_t = state_{t-1}``), so the final state is the one after the
last real token, exactly as PyTorch's ``pack_padded_sequence``. ``bidirectional``: each
layer also runs over the source reversed within its length (PAD kept at the end); the two
directions' outputs are concatenated and feed the next layer (PyTorch's layout), and the
final states of the two directions are **summed**, layer by layer, to initialise the
decoder. ``reverse_source`` (Sutskever et al. 2014) reverses each source within its length
before the encoder; the memory is put back in source order, so attention weights always
index the source as written.

Decoder. ``num_layers`` layers of the same kind; layer k starts from the encoder's final
state of layer k. With e_t the embedded previous token, s_t the top layer's hidden state,
m_j (Dm) the top encoder outputs (the memory) and mask_j = (source j is not PAD):

``attention="none"`` (Sutskever 2014: the final state carries everything; the whole target
sequence runs through the decoder at once)::

    s_t = Dec(e_t, state_{t-1})          logits_t = W_out s_t + b_out

``attention="luong"`` (Luong et al. 2015, global attention, *without* input feeding, so the
decoder also runs as a whole sequence)::

    s_t = Dec(e_t, state_{t-1})
    score_tj = s_t . m_j ("dot", needs Dm = H)   or   s_t^T W_a m_j ("general")
    alpha_t = softmax_j(score_tj, masked)      c_t = sum_j alpha_tj m_j
    h~_t = tanh(W_c [c_t; s_t])                logits_t = W_out h~_t + b_out

``attention="bahdanau"`` (Bahdanau et al. 2015, additive; the context comes from the
*previous* state and feeds the cell, so the decoder runs step by step)::

    score_tj = v . tanh(W_q s_{t-1} + W_k m_j)   (s_0: the decoder's initial top state)
    alpha_t = softmax_j(score_tj, masked)        c_t = sum_j alpha_tj m_j
    s_t = Dec([e_t; c_t], state_{t-1})           logits_t = W_out [s_t; c_t] + b_out

Backward (exact; every cell by `gatescope.nn`'s ``lstm_cell_backward`` / ``gru_cell_backward``).
With dlogits from the cross-entropy, dO = dlogits W_out. Attention, for one query::

    dalpha_j = dc . m_j      dm_j += alpha_j dc
    dscore_j = alpha_j (dalpha_j - sum_k alpha_k dalpha_k)         (0 where masked)
    dot/general: dm_j += dscore_j W_a^T s_t,  ds_t += sum_j dscore_j W_a m_j,
                 dW_a += sum_j dscore_j s_t m_j^T
    additive:    dpre_j = dscore_j v (1 - tanh^2),  dv += sum_j dscore_j tanh(pre_j),
                 dW_k += sum_j dpre_j m_j^T,  dm_j += W_k^T dpre_j,
                 dW_q += (sum_j dpre_j) s_{t-1}^T,  ds_{t-1} += W_q^T sum_j dpre_j
    luong:       dpre = dh~ (1 - h~^2),  [dc_t; ds_t] += W_c^T dpre,  dW_c += dpre [c_t; s_t]^T

Bahdanau's step loop runs back in time: at step t the top layer's dstate takes the output's
ds_t, each layer's cell backward gives dx (added to the layer below's dh at t; layer 0's dx
splits into de_t and dc_t) and dstate_{t-1}, and the attention of step t adds ds_{t-1}. A
skipped (PAD) encoder step passes its dstate through unchanged. The decoder's dstate_0 is
the gradient of the encoder's final state (both directions, as they were summed); dm flows
into the encoder outputs and back through the encoder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from gatescope.nn.checks import Seed, as_float_dtype, as_generator, check_positive_int
from gatescope.nn.edits import EditPlan
from gatescope.nn.functional import log_softmax, sigmoid, tanh
from gatescope.nn.gru import GRU, gru_cell_backward, gru_cell_forward
from gatescope.nn.losses import cross_entropy
from gatescope.nn.lstm import LSTM, lstm_cell_backward, lstm_cell_forward

__all__ = [
    "ATTENTIONS",
    "BOS",
    "EOS",
    "MODEL_FILE_TYPE",
    "PAD",
    "Seq2Seq",
    "Seq2SeqConfig",
]

PAD, BOS, EOS = 0, 1, 2  # reserved ids, the same in both vocabularies
SPECIALS = 3  # ids below this are PAD, BOS, EOS
ARCHS = ("lstm", "gru")
ATTENTIONS = ("none", "bahdanau", "luong")
SCORES = ("general", "dot")
ENCODINGS = ("embedding", "one_hot")
MODEL_FILE_TYPE = "gatescope.Seq2Seq"  # meta["type"] of a saved Seq2Seq (see model.save_model)


@dataclass(frozen=True)
class Seq2SeqConfig:
    """Everything needed to rebuild a Seq2Seq (the weights aside)."""

    src_vocab: int  # V_src: source ids 0..V_src-1 (0, 1, 2 are PAD, BOS, EOS)
    tgt_vocab: int  # V_tgt: target ids, likewise
    hidden_size: int  # H: units of every encoder and decoder layer
    arch: str = "lstm"  # "lstm" or "gru" (encoder and decoder alike)
    num_layers: int = 1  # L: encoder layers = decoder layers (layer k initialises layer k)
    attention: str = "bahdanau"  # "none", "bahdanau" (additive) or "luong" (multiplicative)
    score: str = "general"  # luong's score: "general" (s W_a m) or "dot" (s . m)
    bidirectional: bool = False  # encoder reads the source both ways; final states summed
    encoding: str = "embedding"  # "embedding" (learned, E = embed_size) or "one_hot" (E = V)
    embed_size: int | None = None  # E for "embedding"; None: hidden_size
    attn_size: int | None = None  # A, bahdanau's attention units; None: hidden_size
    reverse_source: bool = False  # reverse each source within its length (Sutskever 2014)
    dtype: str = "float32"  # parameters and all computation

    def __post_init__(self) -> None:
        for name in ("src_vocab", "tgt_vocab"):
            check_positive_int(name, getattr(self, name), minimum=SPECIALS + 1)
        check_positive_int("hidden_size", self.hidden_size)
        check_positive_int("num_layers", self.num_layers)
        attention = "none" if self.attention is None else self.attention
        object.__setattr__(self, "attention", attention)
        for name, allowed in (
            ("arch", ARCHS),
            ("attention", ATTENTIONS),
            ("score", SCORES),
            ("encoding", ENCODINGS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}"
                )
        for name in ("embed_size", "attn_size"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        for name in ("bidirectional", "reverse_source"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        object.__setattr__(self, "dtype", as_float_dtype(self.dtype).name)
        if self.attention == "luong" and self.score == "dot" and self.bidirectional:
            raise ValueError(
                "score='dot' needs memory and decoder states of one size; a bidirectional "
                "encoder's memory is 2H: use score='general'"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; ``Seq2SeqConfig.from_dict(d)`` reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> Seq2SeqConfig:
        known = {f.name for f in fields(cls)}
        if not isinstance(d, dict) or set(d) - known:
            extra = sorted(set(d) - known) if isinstance(d, dict) else d
            raise ValueError(f"not a Seq2Seq configuration: unknown key(s) {extra}")
        return cls(**d)


# ------------------------------------------------------------------------------ cells


def _cell_forward(arch: str, p: dict, x: np.ndarray, state: tuple) -> tuple[tuple, Any]:
    """One step of one layer: x (B, D), state ((h,) or (h, c), each (B, H)) -> state, cache."""
    if arch == "lstm":
        h, c, cache = lstm_cell_forward(
            x, state[0], state[1], p["weight_ih"], p["weight_hh"], p["bias"]
        )
        return (h, c), cache
    h, cache = gru_cell_forward(
        x, state[0], p["weight_ih"], p["weight_hh"], p["bias"], p["bias_hn"], True
    )
    return (h,), cache


def _cell_backward(arch: str, p: dict, g: dict, dstate: tuple, cache: Any) -> tuple:
    """One step back: dstate -> dx (B, D), dstate_prev; adds the weight gradients into g."""
    if isinstance(cache, _EditedStep):
        return _edited_backward(arch, p, g, dstate, cache)
    if arch == "lstm":
        dx, dh, dc, dw_ih, dw_hh, db = lstm_cell_backward(
            dstate[0], dstate[1], cache, p["weight_ih"], p["weight_hh"]
        )
        g["weight_ih"] += dw_ih
        g["weight_hh"] += dw_hh
        g["bias"] += db
        return dx, (dh, dc)
    dx, dh, dw_ih, dw_hh, db, db_hn = gru_cell_backward(
        dstate[0], cache, p["weight_ih"], p["weight_hh"], True
    )
    g["weight_ih"] += dw_ih
    g["weight_hh"] += dw_hh
    g["bias"] += db
    g["bias_hn"] += db_hn
    return dx, (dh,)


@dataclass
class _EditedStep:
    """The cache of one cell step run with an edit plan (`nn.edits.EditPlan`, see
    `gatescope.inspect.intervene`): the cell's cache tuple as the nn cell lays it out, with
    the *edited* gates (LSTM (x, h_prev, c_prev, i, f, g, o, c), c the edited state; GRU
    (x, h_prev, r, z, n, hn)), the step's PAD mask and the plan (which kept the values
    computed before each edit)."""

    cell: tuple
    m: np.ndarray | None  # (B, 1) 1 where the row is real at this step; None: all real
    plan: EditPlan
    t: int  # the step, as the plan indexes it


def _edited_step(
    arch: str, p: dict, x: np.ndarray, state: tuple, m: np.ndarray | None, plan: EditPlan, t: int
) -> tuple[tuple, _EditedStep]:
    """One step with `plan`'s edits at step t, each applied where its quantity is computed::

        LSTM: i f g o <- edit;  c = f c_prev + i g;  c <- m c + (1 - m) c_prev;  c <- edit(c)
              h = o tanh(c);  h <- m h + (1 - m) h_prev;  h <- edit(h)
        GRU:  r z <- edit;  n = tanh(a_n + r hn) <- edit;  h = (1 - z) n + z h_prev;
              h <- m h + (1 - m) h_prev;  h <- edit(h)

    The states are edited after the PAD mask, so an edit of c or h at a skipped (PAD) step
    changes the state carried on. With no entry for step t the values equal `_cell_forward`
    (and its masked blend) bit for bit: the same operations in the same order.
    """
    if arch == "lstm":
        h_prev, c_prev = state
        _, _, (_, _, _, i, f, g, o, _) = lstm_cell_forward(
            x, h_prev, c_prev, p["weight_ih"], p["weight_hh"], p["bias"]
        )  # the gates depend on x and the previous state only: the nn cell computes them
        for name, gate in zip("ifgo", (i, f, g, o), strict=True):
            plan.apply(t, name, gate)
        c = f * c_prev + i * g  # (B, H)
        if m is not None:
            c = m * c + (1 - m) * c_prev
        plan.apply(t, "c", c)
        h = o * tanh(c)  # (B, H)
        if m is not None:
            h = m * h + (1 - m) * h_prev
        plan.apply(t, "h", h)
        return (h, c), _EditedStep((x, h_prev, c_prev, i, f, g, o, c), m, plan, t)
    (h_prev,) = state
    w_ih, w_hh, H = p["weight_ih"], p["weight_hh"], h_prev.shape[1]
    # gru_cell_forward's lines (reset_after), with the edits between them
    ax = x @ w_ih.T + p["bias"]  # (B, 3H)
    ah = h_prev @ w_hh[: 2 * H].T  # (B, 2H)
    r = sigmoid(ax[:, :H] + ah[:, :H])
    z = sigmoid(ax[:, H : 2 * H] + ah[:, H:])
    plan.apply(t, "r", r)
    plan.apply(t, "z", z)
    hn = h_prev @ w_hh[2 * H :].T + p["bias_hn"]  # (B, H)
    n = tanh(ax[:, 2 * H :] + r * hn)
    plan.apply(t, "n", n)
    h = (1 - z) * n + z * h_prev  # (B, H)
    if m is not None:
        h = m * h + (1 - m) * h_prev
    plan.apply(t, "h", h)
    return (h,), _EditedStep((x, h_prev, r, z, n, hn), m, plan, t)


def _edited_backward(arch: str, p: dict, g: dict, dstate: tuple, step: _EditedStep) -> tuple:
    """Back through `_edited_step`: dstate (of the edited state) -> dx, dstate_prev, weight
    gradients added into g. Each quantity's gradient passes its edit (`EditPlan.grad`:
    times mul, so a set entry passes nothing) before reaching what computed it; each gate's
    derivative is taken at the value it computed (`EditPlan.original`). With the mask m::

        dh' = edit'(dh);  dh_cell = m dh';  ...  dh_prev += (1 - m) dh'  (likewise c)
    """
    ed, t, m = step.plan, step.t, step.m
    w_ih, w_hh = p["weight_ih"], p["weight_hh"]
    dh = ed.grad(t, "h", dstate[0])  # dL/dh_t before its edit
    dh_cell = dh if m is None else dh * m
    if arch == "lstm":
        x, h_prev, c_prev, i, f, gg, o, c = step.cell
        i0, f0, g0, o0 = (ed.original(t, n, a) for n, a in zip("ifgo", (i, f, gg, o)))
        tc = tanh(c)
        do = ed.grad(t, "o", dh_cell * tc)
        dc = ed.grad(t, "c", dstate[1] + dh_cell * o * (1 - tc**2))  # before the c edit
        dc_cell = dc if m is None else dc * m
        di = ed.grad(t, "i", dc_cell * gg)
        df = ed.grad(t, "f", dc_cell * c_prev)
        dg = ed.grad(t, "g", dc_cell * i)
        da = np.concatenate(
            [di * i0 * (1 - i0), df * f0 * (1 - f0), dg * (1 - g0**2), do * o0 * (1 - o0)],
            axis=1,
        )  # (B, 4H)
        dh_prev, dc_prev = da @ w_hh, dc_cell * f
        if m is not None:
            dh_prev = dh_prev + (1 - m) * dh
            dc_prev = dc_prev + (1 - m) * dc
        g["weight_ih"] += da.T @ x
        g["weight_hh"] += da.T @ h_prev
        g["bias"] += da.sum(axis=0)
        return da @ w_ih, (dh_prev, dc_prev)
    x, h_prev, r, z, n, hn = step.cell
    H = h_prev.shape[1]
    r0, z0, n0 = (ed.original(t, q, a) for q, a in zip("rzn", (r, z, n)))
    da_n = ed.grad(t, "n", dh_cell * (1 - z)) * (1 - n0**2)  # (B, H)
    da_z = ed.grad(t, "z", dh_cell * (h_prev - n)) * z0 * (1 - z0)
    da_r = ed.grad(t, "r", da_n * hn) * r0 * (1 - r0)
    dhn = da_n * r  # dL/d(h_prev W_hn^T + b_hn)
    da_rz = np.concatenate([da_r, da_z], axis=1)  # (B, 2H)
    dh_prev = dh_cell * z + dhn @ w_hh[2 * H :] + da_rz @ w_hh[: 2 * H]
    if m is not None:
        dh_prev = dh_prev + (1 - m) * dh
    dax = np.concatenate([da_rz, da_n], axis=1)  # (B, 3H)
    g["weight_ih"] += dax.T @ x
    g["weight_hh"] += np.concatenate([da_rz.T @ h_prev, dhn.T @ h_prev], axis=0)
    g["bias"] += dax.sum(axis=0)
    g["bias_hn"] += dhn.sum(axis=0)
    return dax @ w_ih, (dh_prev,)


def _cell_gates(arch: str, cache: Any) -> dict[str, np.ndarray]:
    """The gates of one cell step (each (B, H)) from its cache."""
    if isinstance(cache, _EditedStep):
        cache = cache.cell
    if arch == "lstm":
        _, _, _, i, f, g, o, c = cache
        return {"i": i, "f": f, "g": g, "o": o, "c": c}
    _, _, r, z, n, _ = cache
    return {"r": r, "z": z, "n": n}


def _layer_forward(arch, p, X, state0, mask, plan=None):
    """A layer over a sequence: X (S, B, D), mask (S, B, 1) float or None -> Y (S, B, H),
    final state, caches. Where mask is 0 the state is kept (a skipped PAD step). With an
    edit `plan` every step runs `_edited_step` (edits where each quantity is computed)."""
    S = X.shape[0]
    state, caches, ys = state0, [], []
    for t in range(S):
        m = None if mask is None else mask[t]  # (B, 1)
        if plan is not None:
            new, cache = _edited_step(arch, p, X[t], state, m, plan, t)
        else:
            new, cache = _cell_forward(arch, p, X[t], state)
            if m is not None:
                new = tuple(m * a + (1 - m) * b for a, b in zip(new, state, strict=True))
        ys.append(new)
        caches.append(cache)
        state = new
    # Y (S, B, H); an LSTM's cache also records the cell states actually kept, (S, B, H)
    if arch == "lstm":
        caches = _KeptStates(caches, np.stack([s[1] for s in ys]))
    return np.stack([s[0] for s in ys]), state, caches


class _KeptStates(list):
    """A layer's step caches, plus the cell states it kept (`cs`, (S, B, H)): at a skipped
    PAD step the cell's own c (in the cache) is not the state carried on."""

    def __init__(self, caches: list, cs: np.ndarray) -> None:
        super().__init__(caches)
        self.cs = cs


def _layer_backward(arch, p, g, caches, dY, dstate, mask):
    """Back through `_layer_forward`: dY (S, B, H) or None, dstate (of the final state)
    -> dX (S, B, D), dstate0; weight gradients added into g."""
    S = len(caches)
    dstate = tuple(np.array(a) for a in dstate)
    dxs = [None] * S
    for t in reversed(range(S)):
        d = dstate if dY is None else (dstate[0] + dY[t], *dstate[1:])
        if mask is None or isinstance(caches[t], _EditedStep):  # an edited step masks itself
            dxs[t], dstate = _cell_backward(arch, p, g, d, caches[t])
            continue
        m = mask[t]  # (B, 1)
        dx, dprev = _cell_backward(arch, p, g, tuple(a * m for a in d), caches[t])
        dxs[t] = dx
        dstate = tuple(a + (1 - m) * b for a, b in zip(dprev, d, strict=True))
    return np.stack(dxs), dstate  # dX (S, B, D)


def _within_length_reversal(mask: np.ndarray) -> np.ndarray:
    """mask (B, S) bool -> idx (B, S): row b's real positions in reverse order, PAD positions
    fixed. It is its own inverse (x[b, idx[b]] twice gives x back)."""
    B, S = mask.shape
    order = np.argsort(~mask, axis=1, kind="stable")  # (B, S) real positions first, in order
    n = mask.sum(axis=1, keepdims=True)  # (B, 1)
    rank = np.cumsum(mask, axis=1) - 1  # (B, S) rank of each real position
    partner = np.take_along_axis(order, np.clip(n - 1 - rank, 0, S - 1), axis=1)
    return np.where(mask, partner, np.arange(S)[None, :])  # (B, S)


def _masked_softmax(score: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Softmax over the last axis where mask is True (exactly 0 elsewhere)."""
    score = np.where(mask, score, -np.inf)
    score = score - score.max(axis=-1, keepdims=True)
    e = np.exp(score)
    return e / e.sum(axis=-1, keepdims=True)


def _attention_edit_backward(
    plan: EditPlan | None, alpha: np.ndarray, dalpha: np.ndarray
) -> np.ndarray:
    """Luong's weights (B, T, S) after an edit `plan`: dalpha (dL/d alpha as used) becomes,
    in place, dL/d(alpha as computed) (times mul); returns alpha as computed (before the
    edits), where the softmax's Jacobian is taken. Without a plan: alpha unchanged."""
    if plan is None:
        return alpha
    computed = alpha.copy()  # (B, T, S)
    for t in range(alpha.shape[1]):
        dalpha[:, t] = plan.grad(t, "attention", dalpha[:, t])
        computed[:, t] = plan.original(t, "attention", alpha[:, t])
    return computed


# ------------------------------------------------------------------------------ the model


class Seq2Seq:
    """An encoder-decoder over token ids (see the module docstring for the equations).

    ``params`` and ``grads`` are dicts with the same keys and shapes: ``src_embed``,
    ``tgt_embed`` (absent with one-hot encoding), ``enc.<weight>_l<k>`` (and
    ``enc_rev.<weight>_l<k>`` when bidirectional), ``dec.<weight>_l<k>``, the attention's
    ``attn.*`` and the head ``out.weight``, ``out.bias``; the recurrent weights are named
    and shaped as in `gatescope.LSTM` / `gatescope.GRU` (PyTorch's layout).
    """

    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        hidden_size: int,
        arch: str = "lstm",
        num_layers: int = 1,
        attention: str | None = "bahdanau",
        seed: Seed = 0,
        dtype: object = "float32",
        *,
        score: str = "general",
        bidirectional: bool = False,
        encoding: str = "embedding",
        embed_size: int | None = None,
        attn_size: int | None = None,
        reverse_source: bool = False,
    ) -> None:
        self.config = Seq2SeqConfig(
            src_vocab=src_vocab,
            tgt_vocab=tgt_vocab,
            hidden_size=hidden_size,
            arch=arch,
            num_layers=num_layers,
            attention="none" if attention is None else attention,
            score=score,
            bidirectional=bidirectional,
            encoding=encoding,
            embed_size=embed_size,
            attn_size=attn_size,
            reverse_source=reverse_source,
            dtype=as_float_dtype(dtype).name,
        )
        self.dtype = np.dtype(self.config.dtype)
        self.params = self._init_params(as_generator(seed))
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.attention: np.ndarray | None = None  # (B, T, S) of the last forward / decode
        self.d_source: np.ndarray | None = None  # (B, S, E) dL/d(embedded source), after backward
        self.logits: np.ndarray | None = None  # (B, T, V) of the last forward
        self._ctx: dict[str, Any] | None = None
        # (part, layer) -> EditPlan, set by `edited` only (gatescope.inspect.intervene)
        self._edit_plans: Mapping[tuple[str, int], EditPlan] | None = None

    @classmethod
    def from_config(cls, config: Seq2SeqConfig, seed: Seed = 0) -> Seq2Seq:
        kw = config.to_dict()
        return cls(kw.pop("src_vocab"), kw.pop("tgt_vocab"), kw.pop("hidden_size"), seed=seed, **kw)

    # -- sizes and parameters ----------------------------------------------------------------

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    @property
    def memory_size(self) -> int:
        """Dm: features of each encoder output (2H when bidirectional)."""
        return self.hidden_size * (2 if self.config.bidirectional else 1)

    def embed_size(self, side: str) -> int:
        c = self.config
        if c.encoding == "one_hot":
            return c.src_vocab if side == "src" else c.tgt_vocab
        return c.embed_size or c.hidden_size

    def num_params(self) -> int:
        return sum(p.size for p in self.params.values())

    def _init_params(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c = self.config
        H, Dm, L = c.hidden_size, self.memory_size, c.num_layers
        A = c.attn_size or H
        p: dict[str, np.ndarray] = {}
        if c.encoding == "embedding":
            for side, V in (("src", c.src_vocab), ("tgt", c.tgt_vocab)):
                p[f"{side}_embed"] = rng.normal(0.0, 1.0, (V, self.embed_size(side)))

        def layer(prefix: str, k: int, d_in: int) -> None:
            if c.arch == "lstm":
                cell = LSTM(d_in, H, seed=rng, dtype=np.float64)
            else:
                cell = GRU(d_in, H, reset_after=True, seed=rng, dtype=np.float64)
            for name, value in cell.layer_params(0).items():
                p[f"{prefix}.{name}_l{k}"] = value

        dirs = ("enc", "enc_rev") if c.bidirectional else ("enc",)
        for k in range(L):
            for prefix in dirs:
                layer(prefix, k, self.embed_size("src") if k == 0 else Dm)
        d_dec = self.embed_size("tgt") + (Dm if c.attention == "bahdanau" else 0)
        for k in range(L):
            layer("dec", k, d_dec if k == 0 else H)
        d_out = H
        if c.attention == "bahdanau":
            p["attn.W_q"] = rng.normal(0.0, 1.0 / np.sqrt(H), (A, H))
            p["attn.W_k"] = rng.normal(0.0, 1.0 / np.sqrt(Dm), (A, Dm))
            p["attn.v"] = rng.normal(0.0, 1.0 / np.sqrt(A), A)
            d_out = H + Dm
        elif c.attention == "luong":
            if c.score == "general":
                p["attn.W_a"] = rng.normal(0.0, 1.0 / np.sqrt(Dm), (H, Dm))
            p["attn.W_c"] = rng.normal(0.0, 1.0 / np.sqrt(Dm + H), (H, Dm + H))
        p["out.weight"] = rng.normal(0.0, 1.0 / np.sqrt(d_out), (c.tgt_vocab, d_out))
        p["out.bias"] = np.zeros(c.tgt_vocab)
        return {k: np.ascontiguousarray(v, dtype=self.dtype) for k, v in p.items()}

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: v.shape for k, v in self.params.items()}

    def load_params(self, tensors: dict[str, np.ndarray]) -> None:
        """Copy weights in (same keys and shapes as ``params``), in place."""
        want = self.expected_shapes()
        if set(tensors) != set(want):
            missing, extra = sorted(set(want) - set(tensors)), sorted(set(tensors) - set(want))
            raise ValueError(
                f"tensors must have the keys of params: missing {missing}, extra {extra}"
            )
        for k, v in tensors.items():
            if np.shape(v) != want[k]:
                raise ValueError(f"tensor {k!r} must have shape {want[k]}, got {np.shape(v)}")
            self.params[k][...] = v

    def _layer_p(self, prefix: str, k: int) -> dict[str, np.ndarray]:
        suffix = f"_l{k}"
        start = prefix + "."
        return {
            n[len(start) : -len(suffix)]: v
            for n, v in self.params.items()
            if n.startswith(start) and n.endswith(suffix)
        }

    def _layer_g(self, prefix: str, k: int) -> dict[str, np.ndarray]:
        suffix = f"_l{k}"
        start = prefix + "."
        return {
            n[len(start) : -len(suffix)]: v
            for n, v in self.grads.items()
            if n.startswith(start) and n.endswith(suffix)
        }

    def _zero_state(self, B: int) -> tuple:
        n = 2 if self.config.arch == "lstm" else 1
        return tuple(np.zeros((B, self.hidden_size), self.dtype) for _ in range(n))

    # -- input checks ------------------------------------------------------------------------

    def _check_ids(self, name: str, ids: Any, vocab: int) -> np.ndarray:
        a = np.asarray(ids)
        if a.ndim != 2 or a.dtype.kind not in "iu" or a.shape[0] == 0 or a.shape[1] == 0:
            raise ValueError(
                f"{name} must be a non-empty (batch, time) array of int ids, got "
                f"shape {a.shape} dtype {a.dtype}"
            )
        if a.min() < 0 or a.max() >= vocab:
            raise ValueError(f"{name} ids must lie in [0, {vocab}), got [{a.min()}, {a.max()}]")
        return a.astype(np.int64)

    def _check_src(self, src: Any) -> np.ndarray:
        src = self._check_ids("src", src, self.config.src_vocab)
        if not (src != PAD).any(axis=1).all():
            raise ValueError("src: every row needs at least one token that is not PAD (0)")
        return src

    def check_pair(self, src: Any, tgt: Any) -> tuple[np.ndarray, np.ndarray]:
        """(src (B, S), tgt (B, T)) as int64 ids, checked as `forward` takes them."""
        src = self._check_src(src)
        tgt = self._check_ids("tgt", tgt, self.config.tgt_vocab)
        if tgt.shape[0] != src.shape[0]:
            raise ValueError(f"tgt must have {src.shape[0]} rows as src, got {tgt.shape[0]}")
        return src, tgt

    # -- embedding -----------------------------------------------------------------------------

    def _embed(self, side: str, ids: np.ndarray) -> np.ndarray:
        if self.config.encoding == "one_hot":
            V = self.config.src_vocab if side == "src" else self.config.tgt_vocab
            return np.eye(V, dtype=self.dtype)[ids]
        return self.params[f"{side}_embed"][ids]

    def _embed_backward(self, side: str, ids: np.ndarray, dX: np.ndarray) -> None:
        """dX (T, B, E): the gradient of the embedded inputs ids (T, B), scattered into the
        embedding table's gradient; the source side's dX is also kept for `d_source`."""
        if side == "src":  # in the order the encoder read it (backward puts it back)
            self._d_source_read = dX
        if self.config.encoding == "one_hot":
            return
        g = self.grads[f"{side}_embed"]
        np.add.at(g, ids.ravel(), dX.reshape(-1, g.shape[1]))

    # -- encoder -------------------------------------------------------------------------------

    def _encode(
        self, src: np.ndarray, plans: Mapping[tuple[str, int], EditPlan] | None = None
    ) -> dict[str, Any]:
        """src (B, S) -> memory (B, S, Dm), per-layer final states, everything backward needs.
        `plans`: edit plans by ("encoder" | "encoder_reverse", layer) (see `edited`)."""
        c = self.config
        plans = plans or {}
        B, S = src.shape
        smask = src != PAD  # (B, S)
        rev = _within_length_reversal(smask)  # (B, S)
        rows = np.arange(B)[:, None]
        ids = src[rows, rev] if c.reverse_source else src  # (B, S)
        mask_t = smask.T[:, :, None].astype(self.dtype)  # (S, B, 1)
        rev_t = rev.T  # (S, B) time-major gather index
        cols = np.arange(B)[None, :]
        X = self._embed("src", ids.T)  # (S, B, E)
        finals, caches, rcaches, hs, rhs = [], [], [], [], []
        for k in range(c.num_layers):
            Yf, sf, cf = _layer_forward(
                c.arch,
                self._layer_p("enc", k),
                X,
                self._zero_state(B),
                mask_t,
                plans.get(("encoder", k)),
            )
            caches.append(cf)
            hs.append(Yf)
            if c.bidirectional:
                Xr = X[rev_t, cols]  # (S, B, D) reversed within length
                Yr, sr, cr = _layer_forward(
                    c.arch,
                    self._layer_p("enc_rev", k),
                    Xr,
                    self._zero_state(B),
                    mask_t,
                    plans.get(("encoder_reverse", k)),
                )
                rcaches.append(cr)
                rhs.append(Yr)
                X = np.concatenate([Yf, Yr[rev_t, cols]], axis=-1)  # (S, B, 2H)
                finals.append(tuple(a + b for a, b in zip(sf, sr, strict=True)))
            else:
                X = Yf  # (S, B, H)
                finals.append(sf)
        if c.reverse_source:
            X = X[rev_t, cols]  # back in source order
        memory = np.ascontiguousarray(X.transpose(1, 0, 2))  # (B, S, Dm)
        return {
            "src": src,
            "ids": ids,
            "smask": smask,
            "mask_t": mask_t,
            "rev_t": rev_t,
            "memory": memory,
            "finals": finals,
            "caches": caches,
            "rcaches": rcaches,
            "hs": hs,  # per layer (S, B, H)
            "rhs": rhs,
        }

    def _encode_backward(self, enc: dict[str, Any], dmemory: np.ndarray, dfinals: list) -> None:
        c = self.config
        H = self.hidden_size
        rev_t, mask_t = enc["rev_t"], enc["mask_t"]
        B = dmemory.shape[0]
        cols = np.arange(B)[None, :]
        dX = dmemory.transpose(1, 0, 2)  # (S, B, Dm)
        if c.reverse_source:
            dX = dX[rev_t, cols]
        for k in reversed(range(c.num_layers)):
            if c.bidirectional:
                dYr = dX[..., H:][rev_t, cols]  # (S, B, H)
                dXr, _ = _layer_backward(
                    c.arch,
                    self._layer_p("enc_rev", k),
                    self._layer_g("enc_rev", k),
                    enc["rcaches"][k],
                    dYr,
                    dfinals[k],
                    mask_t,
                )
                dXf, _ = _layer_backward(
                    c.arch,
                    self._layer_p("enc", k),
                    self._layer_g("enc", k),
                    enc["caches"][k],
                    np.ascontiguousarray(dX[..., :H]),
                    dfinals[k],
                    mask_t,
                )
                dX = dXf + dXr[rev_t, cols]
            else:
                dX, _ = _layer_backward(
                    c.arch,
                    self._layer_p("enc", k),
                    self._layer_g("enc", k),
                    enc["caches"][k],
                    dX,
                    dfinals[k],
                    mask_t,
                )
        self._embed_backward("src", enc["ids"].T, dX)

    # -- attention pieces ----------------------------------------------------------------------

    def _luong_scores(self, Sd: np.ndarray, memory: np.ndarray) -> np.ndarray:
        """Sd (B, T, H), memory (B, S, Dm) -> scores (B, T, S)."""
        Q = Sd @ self.params["attn.W_a"] if self.config.score == "general" else Sd  # (B, T, Dm)
        return Q @ memory.transpose(0, 2, 1)

    def _additive(
        self,
        q: np.ndarray,
        keys: np.ndarray,
        memory: np.ndarray,
        smask: np.ndarray,
        plan: EditPlan | None = None,
        t: int = 0,
    ):
        """q (B, H), keys = memory W_k^T (B, S, A) -> alpha (B, S), context (B, Dm), tanh (B, S, A).
        An edit `plan` changes alpha (at step t) before the context is formed."""
        z = tanh(keys + (q @ self.params["attn.W_q"].T)[:, None, :])  # (B, S, A)
        alpha = _masked_softmax(z @ self.params["attn.v"], smask)  # (B, S)
        if plan is not None:
            plan.apply(t, "attention", alpha)  # as set: not renormalised
        ctx = np.einsum("bs,bsd->bd", alpha, memory)  # (B, Dm)
        return alpha, ctx, z

    # -- training: forward and backward --------------------------------------------------------

    def forward(self, src: Any, tgt: Any) -> np.ndarray:
        """Teacher-forced logits (B, T, V) of tgt given src; kept for `backward`."""
        c = self.config
        src, tgt = self.check_pair(src, tgt)
        B, T = tgt.shape
        plans = self._edit_plans or {}
        enc = self._encode(src, plans)
        y_in = np.concatenate([np.full((B, 1), BOS), tgt[:, :-1]], axis=1)  # (B, T)
        Xd = self._embed("tgt", y_in.T)  # (T, B, E)
        ctx: dict[str, Any] = {"enc": enc, "y_in": y_in, "tgt": tgt}
        ctx["attn_plan"] = plans.get(("attention", 0))
        memory, smask = enc["memory"], enc["smask"]
        if c.attention == "bahdanau":
            O = self._bahdanau_forward(ctx, Xd, memory, smask, plans)  # (B, T, H + Dm)
        else:
            caches, dec_hs, X = [], [], Xd
            for k in range(c.num_layers):
                X, _, ck = _layer_forward(
                    c.arch,
                    self._layer_p("dec", k),
                    X,
                    enc["finals"][k],
                    None,
                    plans.get(("decoder", k)),
                )
                caches.append(ck)
                dec_hs.append(X)
            ctx["dec_caches"], ctx["dec_hs"] = caches, dec_hs
            Sd = np.ascontiguousarray(X.transpose(1, 0, 2))  # (B, T, H)
            ctx["Sd"] = Sd
            if c.attention == "none":
                O = Sd
                self.attention = None
            else:
                alpha = _masked_softmax(self._luong_scores(Sd, memory), smask[:, None, :])
                if ctx["attn_plan"] is not None:
                    for t in range(T):  # each alpha_t as set: not renormalised
                        ctx["attn_plan"].apply(t, "attention", alpha[:, t])
                C = alpha @ memory  # (B, T, Dm)
                cat = np.concatenate([C, Sd], axis=-1)  # (B, T, Dm + H)
                O = tanh(cat @ self.params["attn.W_c"].T)  # (B, T, H)
                ctx.update(alpha=alpha, cat=cat)
                self.attention = alpha
        ctx["O"] = O
        logits = O @ self.params["out.weight"].T + self.params["out.bias"]  # (B, T, V)
        self.logits = logits
        self._ctx = ctx
        return logits

    def _bahdanau_forward(self, ctx, Xd, memory, smask, plans) -> np.ndarray:
        c = self.config
        T = Xd.shape[0]
        keys = memory @ self.params["attn.W_k"].T  # (B, S, A)
        states = list(ctx["enc"]["finals"])
        steps = []
        outs, alphas = [], []
        for t in range(T):
            q = states[-1][0]  # (B, H): s_{t-1}
            alpha, cvec, z = self._additive(q, keys, memory, smask, ctx["attn_plan"], t)
            x = np.concatenate([Xd[t], cvec], axis=1)  # (B, E + Dm)
            caches, hs = [], []
            for k in range(c.num_layers):
                p, plan = self._layer_p("dec", k), plans.get(("decoder", k))
                if plan is None:
                    states[k], ck = _cell_forward(c.arch, p, x, states[k])
                else:
                    states[k], ck = _edited_step(c.arch, p, x, states[k], None, plan, t)
                caches.append(ck)
                x = states[k][0]
                hs.append(x)
            steps.append((q, z, alpha, caches, hs))
            outs.append(np.concatenate([x, cvec], axis=1))  # (B, H + Dm)
            alphas.append(alpha)
        ctx["steps"] = steps
        self.attention = np.stack(alphas, axis=1)  # (B, T, S)
        return np.stack(outs, axis=1)  # (B, T, H + Dm)

    def loss(self, src: Any, tgt: Any) -> float:
        """Mean cross-entropy (nats) over the real (non-PAD) target tokens, teacher forcing."""
        logits = self.forward(src, tgt)
        assert self._ctx is not None
        tgt = self._ctx["tgt"]
        mask = tgt != PAD
        if not mask.any():
            raise ValueError("tgt: needs at least one token that is not PAD (0)")
        loss, dlogits = cross_entropy(logits, tgt, mask)
        self._ctx["dlogits"] = dlogits.astype(self.dtype, copy=False)
        return loss

    def backward(self, dlogits: np.ndarray | None = None) -> None:
        """Exact gradients of the last `loss` (or of sum(logits * dlogits) after `forward`)
        into ``grads``, overwriting them; ``d_source`` (B, S, E) is the gradient with
        respect to each source position's embedded input (one-hot rows with
        ``encoding="one_hot"``), before it is scattered into ``src_embed``, indexed as the
        source is written (also with ``reverse_source``). At a PAD position it is 0."""
        if self._ctx is None or (dlogits is None and "dlogits" not in self._ctx):
            raise RuntimeError("backward() called before loss(): run the model on a batch first")
        c = self.config
        ctx = self._ctx
        H = self.hidden_size
        for g in self.grads.values():
            g[...] = 0
        if dlogits is None:
            dlogits = ctx["dlogits"]
        dlogits = np.asarray(dlogits, self.dtype)
        O = ctx["O"]
        Vt, Do = self.params["out.weight"].shape
        self.grads["out.weight"][...] = dlogits.reshape(-1, Vt).T @ O.reshape(-1, Do)
        self.grads["out.bias"][...] = dlogits.reshape(-1, Vt).sum(axis=0)
        dO = dlogits @ self.params["out.weight"]  # (B, T, Do)
        enc = ctx["enc"]
        memory = enc["memory"]
        dmemory = np.zeros_like(memory)  # (B, S, Dm)
        if c.attention == "bahdanau":
            dXd, dfinals = self._bahdanau_backward(ctx, dO, memory, dmemory)
        else:
            if c.attention == "none":
                dSd = dO
            else:
                alpha, cat, Sd = ctx["alpha"], ctx["cat"], ctx["Sd"]
                dpre = dO * (1 - O**2)  # (B, T, H)
                self.grads["attn.W_c"][...] = dpre.reshape(-1, H).T @ cat.reshape(-1, cat.shape[-1])
                dcat = dpre @ self.params["attn.W_c"]  # (B, T, Dm + H)
                Dm = memory.shape[-1]
                dC, dSd = dcat[..., :Dm], dcat[..., Dm:].copy()
                dalpha = dC @ memory.transpose(0, 2, 1)  # (B, T, S)
                dmemory += alpha.transpose(0, 2, 1) @ dC  # alpha as used (edited)
                alpha = _attention_edit_backward(ctx["attn_plan"], alpha, dalpha)
                dscore = alpha * (dalpha - (alpha * dalpha).sum(axis=-1, keepdims=True))
                dQ = dscore @ memory  # (B, T, Dm)
                if c.score == "general":
                    W_a = self.params["attn.W_a"]
                    Q = Sd @ W_a
                    self.grads["attn.W_a"][...] = Sd.reshape(-1, H).T @ dQ.reshape(-1, Dm)
                    dSd += dQ @ W_a.T
                else:
                    Q = Sd
                    dSd += dQ
                dmemory += dscore.transpose(0, 2, 1) @ Q
            dY = np.ascontiguousarray(dSd.transpose(1, 0, 2))  # (T, B, H)
            dfinals = [None] * c.num_layers
            for k in reversed(range(c.num_layers)):
                dY, dfinals[k] = _layer_backward(
                    c.arch,
                    self._layer_p("dec", k),
                    self._layer_g("dec", k),
                    ctx["dec_caches"][k],
                    dY,
                    self._zero_state(dY.shape[1]),
                    None,
                )
            dXd = dY
        self._embed_backward("tgt", ctx["y_in"].T, dXd)
        self._encode_backward(enc, dmemory, dfinals)
        dsrc = self._d_source_read  # (S, B, E), in the encoder's reading order
        if c.reverse_source:  # the reversal within length is its own inverse
            dsrc = dsrc[enc["rev_t"], np.arange(dsrc.shape[1])[None, :]]
        # (B, S, E): d/d(embedded source), indexed as the source is written
        self.d_source = np.ascontiguousarray(dsrc.transpose(1, 0, 2))

    def _bahdanau_backward(self, ctx, dO, memory, dmemory):
        c = self.config
        H = self.hidden_size
        B, T, _ = dO.shape
        E = self.embed_size("tgt")
        W_q, W_k, v = self.params["attn.W_q"], self.params["attn.W_k"], self.params["attn.v"]
        dkeys = np.zeros((*memory.shape[:2], W_k.shape[0]), self.dtype)  # (B, S, A)
        dW_q = self.grads["attn.W_q"]
        dv = self.grads["attn.v"]
        dXd = np.empty((T, B, E), self.dtype)
        dstates = [self._zero_state(B) for _ in range(c.num_layers)]
        for t in reversed(range(T)):
            q, z, alpha, caches, _ = ctx["steps"][t]
            dctx = dO[:, t, H:].copy()  # (B, Dm)
            top = dstates[-1]
            dstates[-1] = (top[0] + dO[:, t, :H], *top[1:])
            for k in reversed(range(c.num_layers)):
                dx, dstates[k] = _cell_backward(
                    c.arch, self._layer_p("dec", k), self._layer_g("dec", k), dstates[k], caches[k]
                )
                if k > 0:
                    below = dstates[k - 1]
                    dstates[k - 1] = (below[0] + dx, *below[1:])
                else:
                    dXd[t] = dx[:, :E]
                    dctx += dx[:, E:]
            # attention of step t (query s_{t-1})
            dalpha = np.einsum("bd,bsd->bs", dctx, memory)  # (B, S)
            dmemory += alpha[:, :, None] * dctx[:, None, :]  # alpha as used (edited)
            plan = ctx["attn_plan"]
            if plan is not None:  # through the edit, then softmax's Jacobian at alpha computed
                dalpha = plan.grad(t, "attention", dalpha)
                alpha = plan.original(t, "attention", alpha)
            dscore = alpha * (dalpha - (alpha * dalpha).sum(axis=1, keepdims=True))  # (B, S)
            dv += np.einsum("bsa,bs->a", z, dscore)
            dpre = dscore[:, :, None] * v * (1 - z**2)  # (B, S, A)
            dkeys += dpre
            dq_pre = dpre.sum(axis=1)  # (B, A)
            dW_q += dq_pre.T @ q
            top = dstates[-1]
            dstates[-1] = (top[0] + dq_pre @ W_q, *top[1:])
        A, Dm = W_k.shape
        self.grads["attn.W_k"][...] = dkeys.reshape(-1, A).T @ memory.reshape(-1, Dm)
        dmemory += dkeys @ W_k
        return dXd, dstates

    # -- interventions -------------------------------------------------------------------------

    @contextlib.contextmanager
    def edited(self, plans: Mapping[tuple[str, int], EditPlan]) -> Iterator[None]:
        """Within it, `forward` (and `loss`) apply edit `plans`, keyed (part, layer) with part
        "encoder", "encoder_reverse", "decoder" (one `nn.edits.EditPlan` per layer: steps are
        the part's time steps, units its hidden units) or "attention" (layer 0: steps are
        target steps, units source positions); the caches keep them, so `backward`
        differentiates the edited function. Decoding (`translate`) never applies them.
        Build plans with `gatescope.inspect.intervene`, which validates them."""
        previous = self._edit_plans
        self._edit_plans = dict(plans)
        try:
            yield
        finally:
            self._edit_plans = previous

    # -- the trace -----------------------------------------------------------------------------

    @property
    def trace(self) -> dict[str, Any]:
        """Gates and states of the last forward: ``"encoder"`` (and ``"encoder_reverse"``)
        gate -> (L, B, S, H), in the time order each direction read the source (with
        ``reverse_source``, reversed within length); ``"decoder"`` gate -> (L, B, T, H);
        ``"attention"`` (B, T, S) or None. LSTM gates i f g o c and h; GRU r z n and h.
        At a skipped PAD step of the encoder the gates are what the cell computed, c and h
        the state kept (that of the last real token)."""
        if self._ctx is None:
            return {}
        c = self.config
        enc = self._ctx["enc"]

        def stack(per_layer_steps: list[list[Any]]) -> dict[str, np.ndarray]:
            out: dict[str, list] = {}
            for steps in per_layer_steps:
                gates = [_cell_gates(c.arch, cache) for cache in steps]
                if isinstance(steps, _KeptStates):  # c: the state kept (PAD steps skipped)
                    for g, kept in zip(gates, steps.cs, strict=True):
                        g["c"] = kept
                for name in gates[0]:
                    out.setdefault(name, []).append(np.stack([g[name] for g in gates], axis=1))
            return {k: np.stack(v) for k, v in out.items()}

        def hs(layers: list[np.ndarray]) -> np.ndarray:
            return np.stack([Y.transpose(1, 0, 2) for Y in layers])  # (L, B, T, H)

        result: dict[str, Any] = {"encoder": {**stack(enc["caches"]), "h": hs(enc["hs"])}}
        if c.bidirectional:
            result["encoder_reverse"] = {**stack(enc["rcaches"]), "h": hs(enc["rhs"])}
        if c.attention == "bahdanau":
            steps = self._ctx["steps"]
            per_layer = [[s[3][k] for s in steps] for k in range(c.num_layers)]
            dec_hs = [np.stack([s[4][k] for s in steps]) for k in range(c.num_layers)]
        else:
            per_layer, dec_hs = self._ctx["dec_caches"], self._ctx["dec_hs"]
        result["decoder"] = {**stack(per_layer), "h": hs(dec_hs)}
        result["attention"] = self.attention
        return result

    # -- decoding ------------------------------------------------------------------------------

    def _decoder_step(self, y_prev: np.ndarray, states: list, enc: dict, keys: np.ndarray | None):
        """One decoding step for a batch: y_prev (B,) ids -> log-probabilities (B, V) over the
        tokens decoding may emit (PAD and BOS excluded), new states, attention (B, S)."""
        c = self.config
        memory, smask = enc["memory"], enc["smask"]
        x = self._embed("tgt", y_prev)  # (B, E)
        alpha = None
        if c.attention == "bahdanau":
            alpha, cvec, _ = self._additive(states[-1][0], keys, memory, smask)
            x = np.concatenate([x, cvec], axis=1)
        new = []
        for k in range(c.num_layers):
            s, _ = _cell_forward(c.arch, self._layer_p("dec", k), x, states[k])
            new.append(s)
            x = s[0]
        if c.attention == "bahdanau":
            o = np.concatenate([x, cvec], axis=1)
        elif c.attention == "luong":
            alpha = _masked_softmax(self._luong_scores(x[:, None, :], memory)[:, 0], smask)
            cvec = np.einsum("bs,bsd->bd", alpha, memory)
            o = tanh(np.concatenate([cvec, x], axis=1) @ self.params["attn.W_c"].T)
        else:
            o = x
        logits = o @ self.params["out.weight"].T + self.params["out.bias"]  # (B, V)
        logits[:, : BOS + 1] = -np.inf  # never emit PAD or BOS
        return log_softmax(logits), new, alpha

    def _start(self, src: Any):
        src = self._check_src(src)
        enc = self._encode(src)
        keys = (
            enc["memory"] @ self.params["attn.W_k"].T
            if self.config.attention == "bahdanau"
            else None
        )
        return src, enc, keys

    def sequence_logprob(self, src: Any, tokens: list[int], max_len: int | None = None) -> float:
        """log p(tokens, then EOS | src) for one source row (src (1, S)) under the decoding
        distribution (PAD and BOS excluded); with ``max_len == len(tokens)`` no EOS is scored
        (a hypothesis cut at the length limit, as `translate` treats it)."""
        src, enc, keys = self._start(src)
        if src.shape[0] != 1:
            raise ValueError(f"src must be one row (1, S), got {src.shape}")
        states = list(enc["finals"])
        y, total = BOS, 0.0
        seq = list(tokens) if max_len == len(tokens) else [*tokens, EOS]
        for tok in seq:
            logp, states, _ = self._decoder_step(np.array([y]), states, enc, keys)
            total += float(logp[0, tok])
            y = tok
        return total

    def translate(self, src: Any, beam: int = 1, max_len: int | None = None) -> list[list[int]]:
        """Decode each source row: a list of id lists (EOS not included).

        ``beam=1``: greedy (the most likely token at each step). ``beam=K``: beam search
        keeping the K best partial hypotheses by total log-probability (no length
        normalisation); a hypothesis ends at EOS or after ``max_len`` tokens (default 2S + 2),
        and the best finished one is returned. After a greedy decode ``attention`` holds the
        weights (B, T, S) of its steps.
        """
        beam = check_positive_int("beam", beam)
        src, enc, keys = self._start(src)
        B, S = src.shape
        max_len = 2 * S + 2 if max_len is None else check_positive_int("max_len", max_len)
        if beam == 1:
            return self._greedy(enc, keys, B, max_len)
        out = []
        for b in range(B):
            one = {
                "memory": enc["memory"][b : b + 1],
                "smask": enc["smask"][b : b + 1],
            }
            finals = [tuple(a[b : b + 1] for a in s) for s in enc["finals"]]
            k1 = None if keys is None else keys[b : b + 1]
            out.append(self._beam_one(one, finals, k1, beam, max_len))
        return out

    def _greedy(self, enc, keys, B: int, max_len: int) -> list[list[int]]:
        states = list(enc["finals"])
        y = np.full(B, BOS)
        done = np.zeros(B, bool)
        out: list[list[int]] = [[] for _ in range(B)]
        alphas = []
        for _ in range(max_len):
            logp, states, alpha = self._decoder_step(y, states, enc, keys)
            y = np.argmax(logp, axis=1)  # (B,) ties: the lowest id
            if alpha is not None:
                alphas.append(alpha)
            for b in np.flatnonzero(~done):
                if y[b] == EOS:
                    done[b] = True
                else:
                    out[b].append(int(y[b]))
            if done.all():
                break
        self.attention = np.stack(alphas, axis=1) if alphas else None  # (B, T, S)
        return out

    def _beam_one(self, enc, finals, keys, K: int, max_len: int) -> list[int]:
        live = [(0.0, [], finals)]  # (log-probability, tokens, states)
        finished: list[tuple[float, list[int]]] = []
        for step in range(max_len):
            n = len(live)
            y = np.array([tok[-1] if tok else BOS for _, tok, _ in live])
            states = [
                tuple(np.concatenate([h[2][k][i] for h in live]) for i in range(len(finals[k])))
                for k in range(len(finals))
            ]
            e1 = {
                "memory": np.repeat(enc["memory"], n, axis=0),
                "smask": np.repeat(enc["smask"], n, axis=0),
            }
            k1 = None if keys is None else np.repeat(keys, n, axis=0)
            logp, new, _ = self._decoder_step(y, states, e1, k1)  # (n, V)
            scores = np.array([s for s, _, _ in live])[:, None] + logp  # (n, V)
            flat = scores.ravel()
            order = np.argsort(-flat, kind="stable")[:K]
            V = logp.shape[1]
            nxt = []
            for j in order:
                if not np.isfinite(flat[j]):
                    break
                i, tok = divmod(int(j), V)
                st = [tuple(a[i : i + 1] for a in s) for s in new]
                if tok == EOS:
                    finished.append((float(flat[j]), live[i][1]))
                elif step + 1 == max_len:
                    finished.append((float(flat[j]), [*live[i][1], tok]))  # cut at the limit
                else:
                    nxt.append((float(flat[j]), [*live[i][1], tok], st))
            live = nxt
            best_done = max((s for s, _ in finished), default=-np.inf)
            # log-probabilities only fall as tokens are added: nothing live can beat it
            if not live or best_done >= max(s for s, _, _ in live):
                break
        return max(finished, key=lambda f: f[0])[1]

    def predict(self, src: Any, chunk: int = 256, max_len: int | None = None) -> np.ndarray:
        """Greedy decodes as an int array (B, T') padded with PAD (for `Task.evaluate`)."""
        src = self._check_src(src)
        outs: list[list[int]] = []
        for start in range(0, src.shape[0], chunk):
            outs += self.translate(src[start : start + chunk], beam=1, max_len=max_len)
        width = max(1, max(len(o) for o in outs))
        arr = np.full((len(outs), width), PAD, np.int64)  # (B, T')
        for b, o in enumerate(outs):
            arr[b, : len(o)] = o
        return arr

    def check_fits(self, task: Any) -> None:
        """ValueError unless `task` (a `gatescope.tasks.seq2seq` task) has this model's
        vocabularies (``task.input_size``, ``task.output_size``)."""
        want = (getattr(task, "input_size", None), getattr(task, "output_size", None))
        got = (self.config.src_vocab, self.config.tgt_vocab)
        if getattr(task, "kind", None) != "seq2seq" or want != got:
            raise ValueError(
                f"model does not fit task {getattr(task, 'name', task)!r}: a seq2seq task with "
                f"(source, target) vocabularies {got} is needed, got {want}"
            )

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Seq2Seq(arch={c.arch}, hidden_size={c.hidden_size}, num_layers={c.num_layers}, "
            f"attention={c.attention}, bidirectional={c.bidirectional}, dtype={c.dtype}, "
            f"params={self.num_params():,})"
        )
