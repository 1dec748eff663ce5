"""Instruments for a sequence-to-sequence model: where its attention looks on real examples,
and how strongly each source position reaches each output (connectivity).

    from gatescope.inspect import seq2seq as gis
    outs = gis.decode_attention(model, task, ["Tuesday, September 27, 1994", "9/27/94"])
    outs[0].output, outs[0].alpha          # '1994-09-27', (T_out + 1, S) weights (EOS row last)
    gis.attention_alignment(model, task, texts)  # dates: mass of each output field on its
                                                 # source field, and on the weekday; reverse:
                                                 # mean attention on the anti-diagonal
    gis.connectivity(model, src)           # (B, T, S): ||d logit_t / d e_s|| per example

Arrays and numbers only (figures: `gatescope.viz.seq2seq`). Shapes: T output steps (the
decoded characters, then EOS), S source characters.

Dates. The target is ISO ``YYYY-MM-DD``: output steps 0-3 are the year, 5-6 the month, 8-9
the day. `date_fields` finds the same fields in a source written in one of the task's
formats (and the weekday, when there is one). The mass an output field puts on its source
field is, for each of its output steps t, sum_{j in field} alpha_tj, averaged over its steps;
the weekday's mass is the same sum over the weekday's characters, averaged over every
output step (EOS included).

Reverse. Output step t of a source of n characters writes source character n - 1 - t: the
anti-diagonal. Its mass is alpha_{t, n-1-t}, averaged over t < n (EOS excluded); the same
one position to the right (n - t) is reported too, because a forward encoder's state at
position j has read every character up to j: a model may read character j - 1 there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gatescope.seq2seq import EOS, PAD, Seq2Seq
from gatescope.tasks.seq2seq import MONTHS, WEEKDAYS, Seq2SeqTask

__all__ = [
    "DATE_FAMILIES",
    "ISO_FIELDS",
    "Decoded",
    "attention_alignment",
    "connectivity",
    "date_fields",
    "decode_attention",
    "field_attention",
    "reverse_alignment",
]

# output steps of each field of an ISO date YYYY-MM-DD
ISO_FIELDS: dict[str, list[int]] = {"year": [0, 1, 2, 3], "month": [5, 6], "day": [8, 9]}
# the task's formats, letter case aside (gatescope.tasks.seq2seq.DATE_FORMATS)
DATE_FAMILIES = ("mdy", "mon_dy", "dmy", "wmdy", "slash", "iso", "dots")
_ABBREVIATIONS = [m[:3] for m in MONTHS]


@dataclass(frozen=True)
class Decoded:
    """One greedy decode: the source, the output text and its attention weights."""

    source: str  # the input text
    output: str  # the decoded text (EOS not included)
    alpha: np.ndarray  # (T, S): one row per output character, then EOS's; S = len(source)


def decode_attention(model: Seq2Seq, task: Seq2SeqTask, texts: Sequence[str]) -> list[Decoded]:
    """Greedy-decode `texts` (as `gatescope seq2seq translate`) and return, per text, its
    output and the attention weights of the decode, cut to its own characters (rows: output
    characters, then the EOS step when one was emitted; columns: source characters)."""
    if model.config.attention == "none":
        raise ValueError("model has no attention (attention='none'): nothing to read")
    texts = [str(t) for t in texts]
    if not texts:
        raise ValueError("texts must hold at least one text")
    ids = task.encode(texts)  # (B, S) ValueError naming characters outside the vocabulary
    outs = model.translate(ids, max_len=task.max_target_len + 5)
    alpha = model.attention  # (B, T', S)
    assert alpha is not None
    result = []
    for b, (text, out) in enumerate(zip(texts, outs, strict=True)):
        rows = min(len(out) + 1, alpha.shape[1])  # the EOS row, unless cut at max_len
        result.append(Decoded(text, task.decode(out), alpha[b, :rows, : len(text)].copy()))
    return result


def _parse_date(text: str) -> tuple[str, dict[str, list[int]]]:
    """(family, fields) of a date in one of the dates task's formats; ValueError otherwise."""
    words, numbers = [], []
    for m in re.finditer(r"[A-Za-z]+|[0-9]+", text):
        (words if m.group().isalpha() else numbers).append(m)
    span = {}

    def positions(m: re.Match) -> list[int]:
        return list(range(m.start(), m.end()))

    for w in words:
        low = w.group().lower()
        if low in WEEKDAYS and "weekday" not in span:
            span["weekday"] = positions(w)
        elif (low in MONTHS or low in _ABBREVIATIONS) and "month" not in span:
            span["month"] = positions(w)
        else:
            raise ValueError(f"not a date of the dates task: {text!r} (word {w.group()!r})")
    if "month" in span:
        if len(numbers) != 2:
            raise ValueError(f"not a date of the dates task: {text!r}")
        four = [n for n in numbers if len(n.group()) == 4]
        if len(four) != 1:
            raise ValueError(f"not a date of the dates task: {text!r} (no 4-digit year)")
        year = four[0]
        day = numbers[0] if numbers[1] is year else numbers[1]
        span["year"], span["day"] = positions(year), positions(day)
        month_first = span["month"][0] < span["day"][0]
        if "weekday" in span:
            family = "wmdy"
        elif not month_first:
            family = "dmy"
        else:
            family = "mon_dy" if len(span["month"]) == 3 else "mdy"
        return family, span
    if words or len(numbers) != 3:
        raise ValueError(f"not a date of the dates task: {text!r}")
    for family, sep, order in (
        ("slash", "/", ("month", "day", "year")),
        ("iso", "-", ("year", "month", "day")),
        ("dots", ".", ("day", "month", "year")),
    ):
        if sep in text:
            return family, {f: positions(n) for f, n in zip(order, numbers, strict=True)}
    raise ValueError(f"not a date of the dates task: {text!r}")


def date_fields(text: str) -> dict[str, list[int]]:
    """The source positions of "year", "month", "day" (and "weekday", when written) in a date
    of the dates task's formats, e.g. 'Sep 27, 1994' -> {"month": [0, 1, 2], "day": [4, 5],
    "year": [8, 9, 10, 11]}. A two-digit year (9/27/94) is its two digits."""
    return _parse_date(text)[1]


def field_attention(
    alpha: np.ndarray, out_fields: dict[str, list[int]], src_fields: dict[str, list[int]]
) -> dict[str, float]:
    """For each field in both: the attention mass its output steps put on its source
    positions, sum_{j in src} alpha_tj averaged over t in out (steps beyond alpha's rows
    are left out; a field with none is NaN)."""
    alpha = np.asarray(alpha, dtype=np.float64)
    if alpha.ndim != 2:
        raise ValueError(f"alpha must be (T, S) weights of one decode, got {alpha.shape}")
    out = {}
    for name, steps in out_fields.items():
        if name not in src_fields:
            continue
        rows = [t for t in steps if t < alpha.shape[0]]
        mass = alpha[np.ix_(rows, src_fields[name])].sum(axis=1) if rows else np.array([])
        out[name] = float(mass.mean()) if rows else float("nan")
    return out


def reverse_alignment(alpha: np.ndarray, n: int, offset: int = 0) -> tuple[float, float]:
    """(mean alpha_{t, n-1-t+offset}, fraction of those rows whose largest weight is there)
    over the output steps t < n of one decode of a source of n characters (EOS row
    excluded) where n-1-t+offset is a source position. offset 0: the anti-diagonal (the
    character written at step t); offset 1: one to its right (the character written at step
    t-1, whose forward encoder state has read the one to write)."""
    alpha = np.asarray(alpha, dtype=np.float64)
    if alpha.ndim != 2 or alpha.shape[1] < n or min(n, alpha.shape[0]) == 0:
        raise ValueError(f"alpha must be (T, S >= {n}) weights of one decode, got {alpha.shape}")
    t = np.arange(min(n, alpha.shape[0]))
    j = n - 1 - t + offset
    t, j = t[(j >= 0) & (j < n)], j[(j >= 0) & (j < n)]
    if t.size == 0:
        raise ValueError(f"offset {offset} leaves no output step on a source of {n}")
    return float(alpha[t, j].mean()), float(np.mean(alpha[t].argmax(axis=1) == j))


def attention_alignment(model: Seq2Seq, task: Seq2SeqTask, texts: Sequence[str]) -> dict[str, Any]:
    """How well a trained model's attention lines up with where the answer is, on `texts`
    (greedy decodes, `decode_attention`).

    dates: ``{"fields": {"year", "month", "day"}: mean mass of each output field on its
    source field, "fields_or_next": the same with the character after the field counted
    (the step at which the encoder has read all of it), "weekday": mean mass on the weekday
    over texts that have one (None if none), "families": {family: {"fields", "weekday", "n"}},
    "exact": fraction of outputs equal to the ISO date, "per_text": [...]}``.

    reverse: ``{"anti_diagonal": mean alpha_{t, n-1-t}, "argmax_anti_diagonal": fraction of
    output steps whose largest weight is there, "anti_diagonal_right" and
    "argmax_anti_diagonal_right": the same one position to the right (offset 1 of
    `reverse_alignment`), "exact": fraction reversed right, "per_text": [...]}``.
    Other tasks: ValueError.
    """
    decoded = decode_attention(model, task, texts)
    if task.name == "reverse":
        per = []
        for d in decoded:
            row = {"input": d.source, "output": d.output}
            for key, offset in (("anti_diagonal", 0), ("anti_diagonal_right", 1)):
                row[key], row[f"argmax_{key}"] = reverse_alignment(d.alpha, len(d.source), offset)
            per.append(row)
        keys = ("anti_diagonal", "anti_diagonal_right")
        return {
            "task": "reverse",
            "n": len(per),
            **{k: float(np.mean([p[k] for p in per])) for k in keys},
            **{f"argmax_{k}": float(np.mean([p[f"argmax_{k}"] for p in per])) for k in keys},
            "exact": float(np.mean([d.output == d.source[::-1] for d in decoded])),
            "per_text": per,
        }
    if task.name != "dates":
        raise ValueError(f"task must be 'dates' or 'reverse', got {task.name!r}")
    per = []
    for d in decoded:
        family, src = _parse_date(d.source)
        nxt = {k: [*v, v[-1] + 1] if v[-1] + 1 < len(d.source) else v for k, v in src.items()}
        row: dict[str, Any] = {"input": d.source, "output": d.output, "family": family}
        row["fields"] = field_attention(d.alpha, ISO_FIELDS, src)
        row["fields_or_next"] = field_attention(d.alpha, ISO_FIELDS, nxt)
        row["weekday"] = (
            float(d.alpha[:, src["weekday"]].sum(axis=1).mean()) if "weekday" in src else None
        )
        per.append(row)

    def summary(rows: list[dict]) -> dict[str, Any]:
        wd = [r["weekday"] for r in rows if r["weekday"] is not None]
        return {
            "n": len(rows),
            "fields": {
                f: float(_mean_of_finite([r["fields"][f] for r in rows])) for f in ISO_FIELDS
            },
            "fields_or_next": {
                f: float(_mean_of_finite([r["fields_or_next"][f] for r in rows]))
                for f in ISO_FIELDS
            },
            "weekday": float(np.mean(wd)) if wd else None,
        }

    out = summary(per)
    families = {f: summary([r for r in per if r["family"] == f]) for f in DATE_FAMILIES}
    iso = [_iso_of(d.source) for d in decoded]
    return {
        "task": "dates",
        **out,
        "families": {f: s for f, s in families.items() if s["n"]},
        "exact": float(np.mean([d.output == i for d, i in zip(decoded, iso, strict=True)])),
        "per_text": per,
    }


def _mean_of_finite(values: list[float]) -> float:
    """The mean of the values that are not NaN (a field a short decode never reached); NaN
    if there are none."""
    ok = [v for v in values if not np.isnan(v)]
    return float(np.mean(ok)) if ok else float("nan")


def _iso_of(text: str) -> str | None:
    """The ISO date a dates-task source means (None if it does not parse)."""
    try:
        _, f = _parse_date(text)
    except ValueError:
        return None

    def digits(name: str) -> str:
        return "".join(text[j] for j in f[name])

    month = digits("month")
    if not month.isdigit():
        low = month.lower()
        month = str((MONTHS.index(low) if low in MONTHS else _ABBREVIATIONS.index(low)) + 1)
    year = digits("year")
    if len(year) == 2:
        year = ("19" if int(year) >= 50 else "20") + year
    return f"{year}-{int(month):02d}-{int(digits('day')):02d}"


def connectivity(model: Seq2Seq, src: Any, tgt: Any = None, *, max_rows: int = 2048) -> np.ndarray:
    r"""Measured connectivity: how strongly each source position reaches each output.

    For example b, target step t and source position s::

        conn[b, t, s] = || d logit_t[y_t] / d e_s ||_2

    where e_s (E) is the embedded source token at position s (the one-hot row with
    ``encoding="one_hot"``) and logit_t[y_t] is the logit, before the softmax, of the token
    at target step t under teacher forcing on ``y``. With ``tgt=None`` y is the model's own
    greedy decode followed by EOS (when it emitted one), so y_t is the token it *emitted* at
    step t (teacher forcing on its own output reproduces the greedy decode exactly); with
    ``tgt`` (B, T) given, y = tgt and the logit is that of the reference token. Steps where
    y is PAD, and PAD source positions, are exactly 0. Source positions are indexed as the
    source is written, also for a model with ``reverse_source``.

    Each entry comes from the real backward pass (`Seq2Seq.backward` with dlogits one-hot on
    (t, y_t), read out as ``model.d_source``). Rows of different examples never interact, so
    the (example, step) pairs are stacked into one batch (at most ``max_rows`` rows per
    forward and backward) and all of them are differentiated in one backward pass.

    Returns float64 (B, T, S). The model's last forward (``trace``, ``attention``) is that
    of the stacked batch afterwards; ``grads`` are left as they were.
    """
    if not isinstance(model, Seq2Seq):
        raise ValueError(f"model must be a gatescope.seq2seq.Seq2Seq, got {type(model).__name__}")
    if not isinstance(max_rows, int | np.integer) or max_rows < 1:
        raise ValueError(f"max_rows must be a positive int, got {max_rows!r}")
    src = np.asarray(src)
    if src.ndim != 2:
        raise ValueError(f"src must be a (batch, time) array of int ids, got shape {src.shape}")
    B, S = src.shape
    if tgt is None:
        limit = 2 * S + 2
        outs = model.translate(src, beam=1, max_len=limit)
        T = max(len(o) + (len(o) < limit) for o in outs)
        y = np.full((B, T), PAD, np.int64)  # (B, T): the decode, EOS if it ended with one
        for b, o in enumerate(outs):
            y[b, : len(o)] = o
            if len(o) < limit:
                y[b, len(o)] = EOS
    else:
        y = np.asarray(tgt)
        if y.ndim != 2 or y.shape[0] != B:
            raise ValueError(f"tgt must be ({B}, T) int ids like src's rows, got {y.shape}")
    T = y.shape[1]
    V = model.config.tgt_vocab
    saved = {k: g.copy() for k, g in model.grads.items()}
    conn = np.zeros((B, T, S))  # (B, T, S)
    rows_b, rows_t = np.nonzero(y != PAD)  # one backward row per real (example, step)
    for start in range(0, len(rows_b), max_rows):
        bs, ts = rows_b[start : start + max_rows], rows_t[start : start + max_rows]
        n = len(bs)
        model.forward(src[bs], y[bs])
        dlogits = np.zeros((n, T, V), model.dtype)  # (n, T, V): one-hot on (t, y_t) per row
        dlogits[np.arange(n), ts, y[bs, ts]] = 1.0
        model.backward(dlogits)
        conn[bs, ts] = np.linalg.norm(model.d_source.astype(np.float64), axis=-1)  # (n, S)
    for k, g in saved.items():
        model.grads[k][...] = g
    return conn
