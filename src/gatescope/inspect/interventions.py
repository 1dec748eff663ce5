r"""Interventions: change a gate or a state at chosen steps and units, and run on.

    from gatescope import inspect as gi
    y, state = gi.intervene(lstm, x, [gi.Edit("f", steps=[3], units=[0, 2], value=0.0)])
    out = gi.intervene(model, x, [gi.Edit("c", steps=5, source=clean_trace)])  # a SequenceModel
    lstm.backward(dy)        # differentiates the edited function; lstm.trace holds edited values
    logits = gi.intervene(s2s, (src, tgt), [gi.Edit("c", part="encoder", steps=-1, value=0.0),
                                            gi.Edit("attention", steps=[2], value=one_hot)])
    s2s.backward(dlogits)    # a Seq2Seq: teacher-forced logits (B, T, V), then its backward

An `Edit` names a quantity of the architecture (LSTM i f g o c h, GRU r z n h, RNN h), a
layer, steps and units (an int, a list or a slice; default all) and one of

    value=v    q_t <- v                          (a scalar or an array, see below)
    scale=s    q_t <- s * q_t
    add=a      q_t <- q_t + a
    source=S   q_t <- S_t, another run's values: activation patching. S is a trace (a dict
               as `layer.trace`, (B, T, H) or (L, B, T, H) per name) or one (B, T, H) array.

value, scale and add are scalars or arrays that broadcast to (B, steps, units). The edit takes
effect where the quantity is computed and propagates: a patched c_t feeds h_t and every later
step. Backward: an entry set by value or source passes no gradient to what computed it; scale
passes it scaled, add unchanged; everything else keeps its gradient.

Sequence to sequence (`gatescope.seq2seq.Seq2Seq`): x is the pair (src, tgt) of int ids, the
run is the teacher-forced `forward` and returns its logits (B, T, V). `Edit.part` names where:
"encoder" (and "encoder_reverse" when bidirectional; steps: source steps in the order that
direction reads them, as in `model.trace`; units: hidden units), "decoder" (steps: target
steps) or "attention" (the quantity "attention", the weights alpha (B, T, S); steps: target
steps, units: source positions). An edit of alpha takes effect before the context
c_t = sum_j alpha_tj m_j is formed, and the edited rows are used as set: they are **not**
renormalised (a row need not sum to 1; weight put on a PAD position reads that position's
memory, the state kept after the last real token). Encoder c and h edits act on the state
carried on, after the PAD mask: at a skipped PAD step they change the state kept.
Backward: through an edited alpha the gradient is dL/dalpha * mul, then the softmax's
Jacobian at the weights computed.

Every edit is checked before anything runs: a quantity the architecture lacks, a layer, step
or unit out of range, a source of the wrong shape, or two edits of one entry (one entry, one
edit) are a ValueError naming it. The edited forward always runs the NumPy reference, so
"exactly" below means against the reference: `intervene(layer, x, [])` (or the layer under
GATESCOPE_BACKEND=numpy) is the unedited run, bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from gatescope.nn import Recurrent
from gatescope.nn.edits import EditPlan
from gatescope.seq2seq import Seq2Seq

__all__ = [
    "SEQ2SEQ_PARTS",
    "Edit",
    "compile_edits",
    "compile_seq2seq_edits",
    "intervene",
    "recurrent_of",
    "run_edited",
]

Index = int | Sequence[int] | slice | None
_KINDS = ("value", "scale", "add", "source")
SEQ2SEQ_PARTS = ("encoder", "encoder_reverse", "decoder", "attention")  # Edit.part of a Seq2Seq


@dataclass(frozen=True, eq=False)
class Edit:
    """One intervention: `quantity` at `steps` x `units` of `layer`, by one of value, scale,
    add or source (see the module docstring)."""

    quantity: str  # a trace name of the architecture: LSTM i f g o c h, GRU r z n h, RNN h
    steps: Index = None  # time steps (int, list, slice; negative counts from the end); None: all
    units: Index = None  # hidden units (int, list, slice); None: all
    layer: int = 0  # which layer of a stack
    value: Any = None  # set: a scalar or an array broadcasting to (B, steps, units)
    scale: Any = None  # multiply by it
    add: Any = None  # add it
    source: Any = None  # another run's trace (dict) or (B, T, H) array: patching
    part: str | None = None  # a Seq2Seq only: "encoder", "encoder_reverse", "decoder", "attention"

    @property
    def kind(self) -> str:
        """Which of value, scale, add, source this edit uses."""
        given = [k for k in _KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"an Edit needs exactly one of value=, scale=, add=, source=; "
                f"{self._name()} has {given or 'none'}"
            )
        return given[0]

    def _name(self) -> str:
        part = "" if self.part is None else f", part={self.part!r}"
        return (
            f"Edit({self.quantity!r}{part}, layer={self.layer}, steps={self.steps}, "
            f"units={self.units})"
        )


def _indices(what: str, index: Index, n: int, edit: Edit) -> np.ndarray:
    """An int, list or slice over range(n) -> sorted unique int array; out of range: ValueError."""
    if index is None:
        return np.arange(n)
    if isinstance(index, slice):
        out = np.arange(n)[index]
    else:
        raw = np.atleast_1d(np.asarray(index))
        if raw.ndim != 1 or (raw.size and raw.dtype.kind not in "iu") or isinstance(index, bool):
            raise ValueError(f"{edit._name()}: {what} must be an int, a list of ints or a slice")
        bad = raw[(raw < -n) | (raw >= n)]
        if bad.size:
            raise ValueError(
                f"{edit._name()}: {what} {int(bad[0])} out of range for {n} {what} (0..{n - 1})"
            )
        out = np.where(raw < 0, raw + n, raw)
        if len(np.unique(out)) != len(out):
            raise ValueError(f"{edit._name()}: {what} {index} repeats an entry")
    if out.size == 0:
        raise ValueError(f"{edit._name()}: {what} {index} selects nothing")
    return out.astype(np.intp)


def _source_array(
    edit: Edit, B: int, T: int, H: int, L: int, axes: str = "(batch, time, hidden)"
) -> np.ndarray:
    """The (B, T, H) values an Edit(source=...) patches in, checked against the run: a trace
    dict (a Seq2Seq's, by part, or one part's), (L, B, T, H) or (B, T, H) (B may be 1)."""
    src = edit.source
    if isinstance(src, Mapping) and edit.part is not None and edit.part in src:
        src = src[edit.part]  # a Seq2Seq trace: part -> (quantity -> array), or "attention"
    if isinstance(src, Mapping):
        if edit.quantity not in src:
            raise ValueError(f"{edit._name()}: source has no {edit.quantity!r} (has {sorted(src)})")
        src = src[edit.quantity]
    src = np.asarray(src)
    if src.ndim == 4:  # (L, B, T, H): a stack's trace
        if src.shape[0] != L:
            raise ValueError(
                f"{edit._name()}: source {edit.quantity!r} has {src.shape[0]} layers, "
                f"the model has {L}"
            )
        src = src[edit.layer]
    if src.shape != (B, T, H) and src.shape != (1, T, H):
        raise ValueError(
            f"{edit._name()}: source {edit.quantity!r} must be ({B}, {T}, {H}) "
            f"{axes} like the run, got {tuple(np.shape(src))}"
        )
    return src


def recurrent_of(layer_or_model: Any) -> Recurrent:
    """The recurrent stack: the layer itself, or a model's `recurrent`."""
    if isinstance(layer_or_model, Recurrent):
        return layer_or_model
    rec = getattr(layer_or_model, "recurrent", None)
    if isinstance(rec, Recurrent):
        return rec
    raise ValueError(
        f"layer_or_model must be a gatescope recurrent layer or a model with .recurrent, "
        f"got {type(layer_or_model).__name__}"
    )


def _check_edit_list(edits: Any) -> list[Edit]:
    if isinstance(edits, Edit):
        edits = [edits]
    if not isinstance(edits, Sequence) or not all(isinstance(e, Edit) for e in edits):
        raise ValueError("edits must be a list of gatescope.inspect.Edit")
    for e in edits:
        e.kind  # noqa: B018 (exactly one of value, scale, add, source: raises otherwise)
    return list(edits)


def _compile(
    numbered: Sequence[tuple[int, Edit]],
    *,
    B: int,
    T: int,
    H: int,
    L: int,
    dtype: np.dtype,
    source_of: Any,
    units: str = "units",
) -> list[EditPlan | None]:
    """The checks and compilation shared by layers and Seq2Seq parts: edits (with their
    index in the user's list) of T steps x H units of L layers -> one plan per layer. The
    quantity and part are checked by the caller; `source_of(edit)` gives (B|1, T, H)."""
    entries: list[dict] = [{} for _ in range(L)]
    owner: dict[tuple[int, int, str], np.ndarray] = {}  # which edit holds each unit, -1: none
    for n, e in numbered:
        kind = e.kind
        if not isinstance(e.layer, int | np.integer) or not 0 <= e.layer < L:
            raise ValueError(f"{e._name()}: layer {e.layer!r} out of range for {L} layer(s)")
        ts = _indices("steps", e.steps, T, e)
        us = _indices(units, e.units, H, e)
        if kind == "source":
            vals = source_of(e)[:, ts][:, :, us]  # (B|1, steps, units)
        else:
            vals = np.asarray(getattr(e, kind), dtype=dtype)
            try:
                vals = np.broadcast_to(vals, (B, len(ts), len(us)))
            except ValueError:
                raise ValueError(
                    f"{e._name()}: {kind} of shape {vals.shape} does not broadcast to "
                    f"({B}, {len(ts)}, {len(us)}) (batch, steps, {units})"
                ) from None
            if not np.all(np.isfinite(vals)):
                raise ValueError(f"{e._name()}: {kind} must be finite")
        vals = np.broadcast_to(np.asarray(vals, dtype=dtype), (B, len(ts), len(us)))
        for j, t in enumerate(ts):
            key = (e.layer, int(t), e.quantity)
            held = owner.setdefault(key, np.full(H, -1))
            clash = us[held[us] >= 0]
            if clash.size:
                where = "" if e.part is None else f"{e.part} "
                raise ValueError(
                    f"edits {held[clash[0]]} and {n} both change {where}{e.quantity!r} at "
                    f"layer {e.layer}, step {t}, unit {clash[0]}: one entry, one edit"
                )
            held[us] = n
            mul, add = entries[e.layer].get((int(t), e.quantity), (None, None))
            if kind in ("value", "source", "scale") and mul is None:
                mul = np.ones((B, H), dtype)  # (B, H)
            if kind in ("value", "source", "add") and add is None:
                add = np.zeros((B, H), dtype)  # (B, H)
            if kind == "scale":
                mul[:, us] = vals[:, j]
            elif kind == "add":
                add[:, us] = vals[:, j]
            else:  # set: q * 0 + v
                mul[:, us] = 0
                add[:, us] = vals[:, j]
            entries[e.layer][(int(t), e.quantity)] = (mul, add)
    return [EditPlan(en) if en else None for en in entries]


def compile_edits(
    layer: Recurrent, edits: Sequence[Edit], batch_size: int, steps: int
) -> list[EditPlan | None]:
    """Validate `edits` for a run of `batch_size` sequences of `steps` steps through `layer`
    and compile them into one `nn.edits.EditPlan` per layer (None where a layer has none).

    Each (layer, step, quantity) edited gets mul and add arrays (B, H): 1 and 0 outside the
    edited units; only those the edits need are made (a scale-only entry has no add).
    """
    edits = _check_edit_list(edits)
    B, T, H, L = batch_size, steps, layer.hidden_size, layer.num_layers
    names = layer.trace_names
    for e in edits:
        if e.part is not None:
            raise ValueError(
                f"{e._name()}: part= names a part of a Seq2Seq; a {layer.arch.upper()} layer "
                "has none (leave it out)"
            )
        if e.quantity not in names:
            raise ValueError(
                f"{e._name()}: a {layer.arch.upper()} has no quantity {e.quantity!r}; "
                f"it has {' '.join(names)}"
            )
    return _compile(
        list(enumerate(edits)),
        B=B,
        T=T,
        H=H,
        L=L,
        dtype=layer.dtype,
        source_of=lambda e: _source_array(e, B, T, H, L),
    )


def compile_seq2seq_edits(
    model: Seq2Seq, edits: Sequence[Edit], batch_size: int, src_steps: int, tgt_steps: int
) -> dict[tuple[str, int], EditPlan]:
    """Validate `edits` for a teacher-forced run of `model` on (B, S) sources and (B, T)
    targets and compile them into plans keyed (part, layer), as `Seq2Seq.edited` takes.

    Parts: "encoder" ("encoder_reverse" when bidirectional) S steps x H units, "decoder"
    T steps x H units, each of `num_layers` layers, quantities LSTM i f g o c h, GRU r z n h;
    "attention" (quantity "attention", layer 0) T target steps x S source positions.
    """
    edits = _check_edit_list(edits)
    c = model.config
    B, S, T, H, L = batch_size, src_steps, tgt_steps, model.hidden_size, c.num_layers
    names = ("i", "f", "g", "o", "c", "h") if c.arch == "lstm" else ("r", "z", "n", "h")
    parts = [p for p in SEQ2SEQ_PARTS if p != "encoder_reverse" or c.bidirectional]
    groups: dict[str, list[tuple[int, Edit]]] = {p: [] for p in parts}
    for n, e in enumerate(edits):
        part = e.part
        if part is None and e.quantity == "attention":
            part = "attention"
            e = replace(e, part="attention")
        if part is None:
            raise ValueError(f"{e._name()}: a Seq2Seq needs part= to say where: {', '.join(parts)}")
        if part not in parts:
            why = " (the encoder is not bidirectional)" if part == "encoder_reverse" else ""
            raise ValueError(f"{e._name()}: part must be one of {', '.join(parts)}{why}")
        if part == "attention":
            if c.attention == "none":
                raise ValueError(
                    f"{e._name()}: the model has no attention (attention='none') to edit"
                )
            if e.quantity != "attention":
                raise ValueError(
                    f"{e._name()}: the attention part has one quantity, 'attention' (the "
                    "weights alpha)"
                )
        elif e.quantity not in names:
            raise ValueError(
                f"{e._name()}: a {c.arch.upper()} {part} has no quantity {e.quantity!r}; "
                f"it has {' '.join(names)}"
            )
        groups[part].append((n, e))
    plans: dict[tuple[str, int], EditPlan] = {}
    for part, numbered in groups.items():
        if not numbered:
            continue
        if part == "attention":
            steps, units, layers, axes = T, S, 1, "(batch, target steps, source positions)"
        else:
            steps, units, layers = (T if part == "decoder" else S), H, L
            axes = "(batch, time, hidden)"
        compiled = _compile(
            numbered,
            B=B,
            T=steps,
            H=units,
            L=layers,
            dtype=model.dtype,
            source_of=lambda e, st=steps, u=units, ly=layers, ax=axes: _source_array(
                e, B, st, u, ly, ax
            ),
            units="units" if part != "attention" else "source positions",
        )
        for k, plan in enumerate(compiled):
            if plan is not None:
                plans[(part, k)] = plan
    return plans


def _batch_and_steps(layer: Recurrent, e: np.ndarray) -> tuple[int, int]:
    """(B, T) of the recurrent stack's input e, in the layer's layout."""
    e = np.asarray(e)
    if e.ndim != 3:
        raise ValueError(
            f"x must be (batch, time, features) for the recurrent stack, got {e.shape}"
        )
    return (e.shape[0], e.shape[1]) if layer.config.batch_first else (e.shape[1], e.shape[0])


def run_edited(layer_or_model: Any, x: Any, plans: Sequence[EditPlan | None], state0: Any = None):
    """Forward `layer_or_model` on x with compiled `plans` (see `compile_edits`), unchecked.

    A layer returns (y, state); a model returns what its forward returns (its final state is
    then `model.final_state`). The engine under `intervene` and the patching maps.
    """
    layer = recurrent_of(layer_or_model)
    with layer.edited(plans):
        if layer_or_model is layer:
            return layer(x, state0)
        if state0 is None:
            return layer_or_model.forward(x)
        return layer_or_model.forward(x, state0)


def intervene(layer_or_model: Any, x: Any, edits: Sequence[Edit], state0: Any = None) -> Any:
    """Run `layer_or_model` on x with `edits` applied inside its step loop.

    A `gatescope.seq2seq.Seq2Seq`: x = (src, tgt) int ids (B, S), (B, T) -> the teacher-forced
    logits (B, T, V) of `model.forward(src, tgt)` with the edits (each with `part=`, see the
    module docstring); then `model.trace` holds the edited values and `model.backward(dlogits)`
    differentiates the edited function. state0 must be None.

    A recurrent layer (gs.LSTM, gs.GRU, gs.RNN): x (B, T, D) -> (y (B, T, H), final state),
    as `layer(x, state0)`. A model with a `recurrent` stack (a SequenceModel: task models,
    the character LM): x as the model takes it (floats or int ids) -> the model's output,
    the edits routed to `model.recurrent` (Edit.layer picks a layer of the stack).

    Afterwards the layer's trace holds the edited values and `backward` (the layer's or the
    model's) differentiates the edited function. Raises ValueError for a bad edit before
    anything runs.
    """
    if isinstance(layer_or_model, Seq2Seq):
        return _intervene_seq2seq(layer_or_model, x, edits, state0)
    layer = recurrent_of(layer_or_model)
    # what the stack will read: a model encodes ids (one-hot, embedding) first
    e = x if layer_or_model is layer else layer_or_model.encode(x)
    B, T = _batch_and_steps(layer, e)
    plans = compile_edits(layer, edits, B, T)
    # every layer runs the reference (an empty plan where it has no edit), so that an
    # intervened run and `intervene(..., [])` compare bit for bit
    plans = [p if p is not None else EditPlan({}) for p in plans]
    return run_edited(layer_or_model, x, plans, state0)


def _intervene_seq2seq(model: Seq2Seq, x: Any, edits: Sequence[Edit], state0: Any) -> np.ndarray:
    if state0 is not None:
        raise ValueError("state0: a Seq2Seq starts its decoder from its encoder; pass None")
    if not isinstance(x, tuple | list) or len(x) != 2:
        raise ValueError(
            f"x must be the pair (src, tgt) of int ids for a Seq2Seq, got {type(x).__name__}"
        )
    src, tgt = model.check_pair(*x)
    plans = compile_seq2seq_edits(model, edits, src.shape[0], src.shape[1], tgt.shape[1])
    with model.edited(plans):
        return model.forward(src, tgt)
