r"""The gate explorer: one self-contained HTML page to browse what every unit does.

    from gatescope.viz import explorer
    data = explorer.build_data(lstm, x, tokens="the text", head=head, labels=vocab_chars)
    explorer.write_html("explorer.html", data)          # or explorer.render_html(data) -> str

    explorer.from_charlm(model, vocab, text)            # a character language model
    explorer.from_sequence_model(model, task, batch)    # a task model on some samples
    explorer.from_seq2seq(model, task, texts)           # a Seq2Seq: attention, encoder, decoder

    explorer.page(data)                                 # in Jupyter: the page, inline
    explorer.page(data, height=900).save("explorer.html")

In a notebook, `page` returns an `ExplorerPage`, which displays itself as a sandboxed
``<iframe>`` holding the whole page in ``srcdoc`` (scripts allowed, no same origin: the
page reaches neither the network nor the notebook around it).

The page (the body ``explorer.html``, ``explorer.css`` and ``explorer.js`` beside this module,
with the data inlined, in the shell of `gatescope.viz.page`) loads nothing from the network:
its Content-Security-Policy is ``default-src 'none'`` with the one inline script and the one
inline style allowed by hash.

What the page holds, for a document of N steps (the characters of a text, or the steps of
several task samples one after another), L layers and H units per layer:

- every quantity of the trace (LSTM h c i f o g, GRU h z r n, RNN h), every layer, every
  unit, every step, quantised per unit to ``bits`` (8 or 16) bits: value = lo + q * step,
  so the error is at most step / 2 (shown next to every value on the page);
- the Pearson correlation of every unit (per quantity and layer) with each text feature;
- for models with a head and named outputs (language models, per-step tasks): the top-k
  predictions and the probability of the actual next token at every step;
- the measured influence of earlier inputs on chosen positions (below).

Influence (the gradient view, after Madsen 2019, "Visualizing memorization in RNNs"): for
a position p, the norm || d s_p / d x_t ||_2 for every earlier step t of the same sequence
within ``grad_window`` steps, measured by the layers' own backward pass in
`gatescope.inspect.influence` (s_p: the logit of the class the head predicts at p, the
prediction of a regression head, or without a head the Frobenius norm of d h_p / d x_t).
Positions: a set spread evenly over the document (``grad_positions``), or the last step of
every sample for models that read out only there.

Sequence-to-sequence models (`from_seq2seq`): a data object with ``"mode": "seq2seq"``
holds, per text, the source, the greedy output and its attention weights (T, S), and one
unit-view document per part (encoder, its backward direction, decoder) in the format
above; the page shows the translation with the source coloured by the attention of the
selected output character, and a switch between the parts.

This module computes nothing itself: the trace, the influence, the head's probabilities and
the correlations come from `gatescope.inspect`; here they are quantised, encoded and put
on the page.

Shapes: N steps of the document, B sequences, T steps each, D input, H hidden, L layers,
Q quantities, F features, P gradient positions, K top-k.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import numpy as np

from gatescope.inspect.influence import (
    document_influence,
    head_probabilities,
    influence_positions,
    top_classes,
    trace_with_states,
)
from gatescope.inspect.units import pearson_matrix, text_features
from gatescope.nn import Linear, Recurrent

from .page import html_page

__all__ = [
    "QUANTITY_LABELS",
    "ExplorerPage",
    "build_data",
    "colour_lut",
    "colour_range",
    "dequantised",
    "expected_colour",
    "attention_weights",
    "from_charlm",
    "from_seq2seq",
    "from_sequence_model",
    "page",
    "render_html",
    "task_glyphs",
    "write_html",
]

FORMAT = 1  # version of the data object read by explorer.js

# the order quantities appear on the page, and their labels
QUANTITY_ORDER = ("h", "c", "i", "f", "o", "g", "z", "r", "n")
QUANTITY_LABELS = {
    "h": "hidden state h",
    "c": "cell state c",
    "i": "input gate i",
    "f": "forget gate f",
    "o": "output gate o",
    "g": "candidate g",
    "z": "update gate z",
    "r": "reset gate r",
    "n": "candidate n",
}
# nominal ranges: sigmoid gates 0..1 (sequential colours), tanh outputs -1..1 (diverging);
# anything else, or data outside the nominal range, is scaled per unit
_SIGMOID = {"i", "f", "o", "z", "r"}
_TANH = {"g", "n", "h"}

MAX_16BIT_VALUES = 8_000_000  # above this many stored values, 8 bits each (16 MB raw at most)
SYMBOLS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ASSETS = ("explorer.html", "explorer.css", "explorer.js")


# ============================================================================ colours


def colour_lut(name: str) -> np.ndarray:
    """The page's 256-entry colour table ``name`` ("div", "seq" or "grad") as uint8 (256, 3).

    div: blue (low) - near white (middle) - red (high), for signed values (matplotlib RdBu_r,
    its two ends trimmed); seq: near white (0) to deep blue-green (1), for gates (YlGnBu);
    grad: pale yellow to dark red (YlOrRd), for influence.
    """
    from matplotlib import colormaps

    span = {
        "div": ("RdBu_r", 0.06, 0.94),
        "seq": ("YlGnBu", 0.0, 0.92),
        "grad": ("YlOrRd", 0.0, 1.0),
    }
    if name not in span:
        raise ValueError(f"colour table must be 'div', 'seq' or 'grad', got {name!r}")
    cmap, a, b = span[name]
    rgba = colormaps[cmap](np.linspace(a, b, 256))  # (256, 4) floats
    return np.round(rgba[:, :3] * 255).astype(np.uint8)


def colour_index(value: Any, lo: Any, hi: Any) -> np.ndarray:
    """Index into a colour table: round(255 * (value - lo) / (hi - lo)), clipped to 0..255.

    ``value``, ``lo``, ``hi``: numbers or arrays, broadcast together; returns int64 of the
    broadcast shape (round half up: floor(x + 0.5)). The page computes exactly this (with
    the quantised value); ``hi <= lo`` gives the middle, 128.
    """
    value, lo, hi = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in (value, lo, hi)))
    width = hi - lo
    safe = np.where(width > 0, width, 1.0)
    frac = np.where(width > 0, (value - lo) / safe, 0.5)
    return np.clip(np.floor(frac * 255 + 0.5), 0, 255).astype(np.int64)


def colour_range(
    data: Mapping[str, Any], q: str, layer: int, unit: int, mode: str = "fixed"
) -> tuple[float, float]:
    """The value range that spans the colour table for one unit, as the page computes it.

    Returns (lo, hi) for quantity ``q``, layer ``layer``, unit ``unit`` of ``data``.
    "fixed": the nominal range of the quantity (gates 0..1, tanh outputs -1..1; otherwise
    the unit's largest |value|, see `_domain`). "unit": the unit's own range, symmetric
    about 0 on the diverging table (-m..m, m = max(|min|, |max|)), min..max on the
    sequential one.
    """
    spec = data["quantities"][q]
    if mode == "fixed":
        dom = spec["domains"][layer]
        return float(dom["lo"][unit]), float(dom["hi"][unit])
    if mode != "unit":
        raise ValueError(f"mode must be 'fixed' or 'unit', got {mode!r}")
    enc = spec["layers"][layer]
    lo = float(np.frombuffer(base64.b64decode(enc["lo"]), "<f4")[unit])
    step = float(np.frombuffer(base64.b64decode(enc["step"]), "<f4")[unit])
    hi = lo + ((1 << data["bits"]) - 1) * step
    if spec["cmap"] == "div":
        m = max(abs(lo), abs(hi)) or 1.0
        return -m, m
    return (lo, hi) if hi > lo else (lo - 0.5, lo + 0.5)


def expected_colour(
    data: Mapping[str, Any], q: str, layer: int, unit: int, value: Any, mode: str = "fixed"
) -> np.ndarray:
    """The (..., 3) RGB the page gives ``value`` of ``q``, ``layer``, ``unit`` (for tests).

    On seq2seq data (`from_seq2seq`) with ``q="attention"``: ``layer`` is the text and
    ``unit`` the output step; the weights colour the source on the "seq" table over 0..1
    ("fixed") or over 0..the row's largest weight ("unit", the page's "per row").
    """
    if q == "attention" and data.get("mode") == "seq2seq":
        if mode not in ("fixed", "unit"):
            raise ValueError(f"mode must be 'fixed' or 'unit', got {mode!r}")
        hi = 1.0
        if mode == "unit":
            row = attention_weights(data, layer)
            if row is None:
                raise ValueError("this model has no attention weights")
            hi = float(row[unit].max()) or 1.0
        return colour_lut("seq")[colour_index(value, 0.0, hi)]
    lo, hi = colour_range(data, q, layer, unit, mode)
    return colour_lut(data["quantities"][q]["cmap"])[colour_index(value, lo, hi)]


# ============================================================================ encoding


def _b64(a: np.ndarray, dtype: str) -> str:
    """Little-endian bytes of ``a`` as ``dtype``, base64 (the page reads them as typed arrays)."""
    return base64.b64encode(
        np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
    ).decode("ascii")


def _quantise(values: np.ndarray, bits: int) -> dict[str, Any]:
    """values (N, H) -> per-unit affine code, unit-major: value[u, t] = lo[u] + q[u, t] * step[u]."""
    lo = values.min(axis=0).astype(np.float64)  # (H,)
    hi = values.max(axis=0).astype(np.float64)
    levels = (1 << bits) - 1
    step = np.where(hi > lo, (hi - lo) / levels, 1.0)  # (H,)
    q = np.floor((values.T - lo[:, None]) / step[:, None] + 0.5)  # (H, N)
    q = np.clip(q, 0, levels)
    # the page decodes in float32 arithmetic; store the parameters it will use
    lo32, step32 = lo.astype(np.float32), step.astype(np.float32)
    return {
        "lo": _b64(lo32, "f4"),
        "step": _b64(step32, "f4"),
        "q": _b64(q, "u1" if bits == 8 else "u2"),
    }


def dequantised(data: Mapping[str, Any], q: str, layer: int) -> np.ndarray:
    """The (H, N) float32 values the page decodes for quantity ``q`` of ``layer``.

    value[u, n] = lo[u] + code[u, n] * step[u], in float32 as the page computes it; within
    step[u] / 2 of the trace (step[u] = (max_u - min_u) / (2^bits - 1)).
    """
    enc = data["quantities"][q]["layers"][layer]
    lo = np.frombuffer(base64.b64decode(enc["lo"]), "<f4")
    step = np.frombuffer(base64.b64decode(enc["step"]), "<f4")
    code = np.frombuffer(base64.b64decode(enc["q"]), "<u1" if data["bits"] == 8 else "<u2")
    code = code.reshape(len(lo), -1).astype(np.float32)
    return lo[:, None] + code * step[:, None]


def _domain(q: str, values: np.ndarray, arch_nonlin: str) -> tuple[str, np.ndarray, np.ndarray]:
    """Colour scale of a quantity: (table, lo (H,), hi (H,)).

    Sigmoid gates 0..1 and tanh outputs -1..1 when the data stay inside; otherwise each unit
    is scaled to its own range: symmetric about 0 (diverging) if it takes negative values,
    0..max (sequential) if not.
    """
    H = values.shape[1]
    vmin, vmax = float(values.min()), float(values.max())
    tol = 1e-6
    if q in _SIGMOID and vmin >= -tol and vmax <= 1 + tol:
        return "seq", np.zeros(H), np.ones(H)
    if q in _TANH and arch_nonlin != "relu" and vmin >= -1 - tol and vmax <= 1 + tol:
        return "div", -np.ones(H), np.ones(H)
    m = np.abs(values).max(axis=0)  # (H,)
    m = np.where(m > 0, m, 1.0)
    if vmin < 0:
        return "div", -m, m
    return "seq", np.zeros(H), m


# ============================================================================ the data object


def _round_list(a: np.ndarray, digits: int = 3) -> list:
    return [[None if not np.isfinite(v) else round(float(v), digits) for v in row] for row in a]


def _check_quantities(wanted: Sequence[str], names: Sequence[str], arch: str) -> None:
    unknown = sorted(set(wanted) - set(names))
    if unknown or not wanted:
        raise ValueError(
            f"quantities must be some of {', '.join(names)} (this {arch}), "
            f"got {', '.join(wanted) or 'none'}"
        )


def _units_data(
    trace: Mapping[str, np.ndarray],
    tokens: str,
    *,
    wanted: Sequence[str],
    kind: str,
    arch: str,
    nonlinearity: str = "tanh",
    seq_len: int,
    sequences: int,
    starts: Sequence[int] | None = None,
    features: Mapping[str, Any] | None = None,
    token_info: Sequence[str] | None = None,
    emphasis: np.ndarray | None = None,
    bits: int | None = None,
    title: str = "gatescope explorer",
    details: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """The unit views' part of a data object, from a trace already computed.

    ``trace``: quantity -> (L, N, H), the N steps of the document one after another.
    ``starts``: where each sequence begins (sequences of different lengths; the page breaks
    lines there), else every ``seq_len`` steps. Quantised per unit (``bits``; None: 16 up
    to `MAX_16BIT_VALUES` values, else 8), correlated with ``features`` (name -> (N,)).
    No predictions and no influence: `build_data` adds those.
    """
    first = next(iter(trace.values()))
    L, N, H = first.shape
    if bits is None:
        bits = 16 if len(set(wanted)) * L * H * N <= MAX_16BIT_VALUES else 8
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits!r}")

    # --- features and correlations
    feats: dict[str, np.ndarray] = {}
    for name, values in (features or {}).items():
        v = np.asarray(values, np.float64).reshape(-1)
        if v.shape != (N,):
            raise ValueError(f"feature {name!r} must have one value per step ({N}), got {v.shape}")
        feats[str(name)] = v
    fmat = np.stack(list(feats.values()), axis=1) if feats else np.zeros((N, 0))

    quantities: dict[str, Any] = {}
    order = [q for q in QUANTITY_ORDER if q in wanted] + [
        q for q in trace if q in wanted and q not in QUANTITY_ORDER
    ]
    for q in order:
        per_layer, domains, corr = [], [], []
        for k in range(L):
            v = trace[q][k]  # (N, H): sequences one after another
            cmap, lo, hi = _domain(q, v, nonlinearity)
            per_layer.append(_quantise(v, bits))
            domains.append({"lo": [float(a) for a in lo], "hi": [float(a) for a in hi]})
            corr.append(_round_list(pearson_matrix(v, fmat)) if feats else [])
        quantities[q] = {
            "label": QUANTITY_LABELS.get(q, q),
            "cmap": cmap,
            "layers": per_layer,
            "domains": domains,
            "corr": corr,
        }

    if token_info is not None and len(token_info) != N:
        raise ValueError(f"token_info must give one string per step ({N}), got {len(token_info)}")
    if emphasis is not None and np.asarray(emphasis).shape != (N,):
        raise ValueError(f"emphasis must have one flag per step ({N})")
    data: dict[str, Any] = {
        "format": FORMAT,
        "title": str(title),
        "details": {str(k): str(v) for k, v in (details or {}).items()},
        "notes": [str(n) for n in notes],
        "kind": kind,
        "arch": arch,
        "n": N,
        "seq_len": seq_len,
        "sequences": sequences,
        "layers": L,
        "units": H,
        "bits": bits,
        "tokens": tokens,
        "token_info": list(token_info) if token_info is not None else None,
        "emphasis": _b64(np.asarray(emphasis, bool), "u1") if emphasis is not None else None,
        "features": list(feats),
        "quantities": quantities,
        "luts": {name: colour_lut(name).reshape(-1).tolist() for name in ("div", "seq", "grad")},
    }
    if starts is not None:
        data["starts"] = [int(s) for s in starts]
    return data


def _predictions(
    probs: np.ndarray,
    at: np.ndarray,
    N: int,
    labels: Sequence[str],
    targets: np.ndarray | None,
    top_k: int,
) -> dict[str, Any]:
    """The page's predictions: probs (n, C) of the n steps ``at`` among the N of the
    document, their top-``top_k`` classes, and p(target) where ``targets`` (N,) is >= 0."""
    idx, p = top_classes(probs, top_k)  # (n, K) each
    k = idx.shape[1]
    full_idx = np.zeros((N, k), np.int64)
    full_p = np.zeros((N, k))
    full_idx[at], full_p[at] = idx, p
    has = np.zeros(N, bool)
    has[at] = True
    pred: dict[str, Any] = {
        "k": k,
        "labels": [str(s) for s in labels],
        "idx": _b64(full_idx, "u2"),
        "p": _b64(np.round(full_p * 65535), "u2"),
        "has": _b64(has, "u1"),
        "target_p": None,
    }
    if targets is not None:
        tg = np.asarray(targets, np.int64).reshape(-1)
        if tg.shape != (N,):
            raise ValueError(f"targets must have one entry per step ({N}), got {tg.shape}")
        tp = np.full(N, -1.0)
        ok = has & (tg >= 0)
        rows = np.searchsorted(at, np.flatnonzero(ok))
        tp[ok] = probs[rows, tg[ok]]
        pred["target"] = _b64(np.where(ok, tg, 65535), "u2")
        pred["target_p"] = _b64(np.where(ok, np.round(tp * 65535), 65535), "u2")
    return pred


def build_data(
    layer: Recurrent,
    x: np.ndarray,
    tokens: str | Sequence[str],
    *,
    kind: str = "text",
    head: Linear | None = None,
    labels: Sequence[str] | None = None,
    readout: str = "steps",
    targets: np.ndarray | None = None,
    features: Mapping[str, Any] | None = None,
    token_info: Sequence[str] | None = None,
    emphasis: np.ndarray | None = None,
    grad_positions: int | Sequence[int] = 256,
    grad_window: int = 100,
    top_k: int = 5,
    bits: int | None = None,
    quantities: Sequence[str] | None = None,
    title: str = "gatescope explorer",
    details: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Run ``layer`` on ``x`` and collect everything the page shows; returns a JSON-safe dict.

    x (B, T, D): B sequences, each read from the zero state; the document is their N = B * T
    steps one after another. ``tokens``: N display characters (for a text, the text itself;
    each sequence after the first starts a new line on the page). ``kind``: "text" (a line
    break after every newline) or "steps". ``head``: the Linear read-out on the top layer's h;
    with ``labels`` (one name per output) the page shows the top-``top_k`` predictions where
    ``readout`` says the head reads ("steps": every step; "last": the last step of each
    sequence). ``targets`` (N,) int: the class actually next at each step (-1: none), for
    p(target). ``features``: name -> (N,) numbers, correlated with every unit.
    ``token_info``: N strings shown on hover. ``emphasis`` (N,) bool: steps drawn bold.
    ``grad_positions``: how many positions (spread evenly) or which flat positions get an
    influence measurement (ignored for readout "last": the last step of each sequence).
    ``bits``: 8 or 16 per value (None: 16 up to `MAX_16BIT_VALUES` values, else 8).
    ``quantities``: which of the trace's quantities to store (None: all), to make pages smaller.
    """
    if not isinstance(layer, Recurrent):
        raise ValueError(f"layer must be a gatescope LSTM, GRU or RNN, got {type(layer).__name__}")
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[2] != layer.input_size:
        raise ValueError(f"x must have shape (B, T, D={layer.input_size}), got {x.shape}")
    B, T, _ = x.shape
    N = B * T
    if N == 0:
        raise ValueError("x must hold at least one step")
    tokens = "".join(tokens) if not isinstance(tokens, str) else tokens
    if len(tokens) != N:
        raise ValueError(f"tokens must give one character per step ({N}), got {len(tokens)}")
    if kind not in ("text", "steps"):
        raise ValueError(f"kind must be 'text' or 'steps', got {kind!r}")
    if readout not in ("steps", "last"):
        raise ValueError(f"readout must be 'steps' or 'last', got {readout!r}")
    if labels is not None and (head is None or len(labels) != head.out_features):
        raise ValueError("labels need a head and must name each of its outputs")
    L, H = layer.num_layers, layer.hidden_size
    wanted = [str(q) for q in (layer.trace_names if quantities is None else quantities)]
    _check_quantities(wanted, layer.trace_names, layer.config.arch)
    trace, states = trace_with_states(layer, x)
    data = _units_data(
        {q: np.asarray(trace[q]).reshape(L, N, H) for q in trace},  # (L, N, H) each
        tokens,
        wanted=wanted,
        kind=kind,
        arch=layer.config.arch,
        nonlinearity=getattr(layer.config, "nonlinearity", "tanh"),
        seq_len=T,
        sequences=B,
        features=features,
        token_info=token_info,
        emphasis=emphasis,
        bits=bits,
        title=title,
        details=details,
        notes=notes,
    )

    # --- predictions
    top = states["h"][-1]  # (B, T, H) top layer's hidden state
    data["predictions"] = None
    if head is not None and labels is not None:
        at = np.arange(N) if readout == "steps" else np.arange(B) * T + T - 1
        probs = head_probabilities(top.reshape(N, H)[at], head)  # (n, C)
        data["predictions"] = _predictions(probs, at, N, labels, targets, top_k)

    # --- influence
    if readout == "last" and head is not None:
        flat = np.arange(B) * T + T - 1
        window = T
    else:
        flat = influence_positions(N, grad_positions)
        window = grad_window
    data["gradients"] = None
    if flat.size:
        classes, infl = document_influence(
            layer, x, flat, window=int(window), head=head, states=states
        )
        starts = flat - np.array([len(a) for a in infl]) + 1
        offsets = np.concatenate([[0], np.cumsum([len(a) for a in infl])])
        if head is None:
            measure = "‖∂h_p/∂x_t‖ (Frobenius norm of the Jacobian of the top layer's hidden state)"
            what = [""] * len(flat)
        elif head.out_features == 1:
            measure = "‖∂ŷ_p/∂x_t‖₂ (gradient of the model's prediction)"
            what = ["prediction"] * len(flat)
        else:
            measure = "‖∂z_p[k]/∂x_t‖₂ (gradient of the logit of the predicted class k)"
            names = (
                list(labels) if labels is not None else [str(i) for i in range(head.out_features)]
            )
            what = [names[int(c)] for c in classes]
        data["gradients"] = {
            "measure": measure,
            "window": int(window),
            "positions": _b64(flat, "i4"),
            "starts": _b64(starts, "i4"),
            "offsets": _b64(offsets, "i4"),
            "values": _b64(np.concatenate(infl), "f4"),
            "what": what,
        }
    return data


# ============================================================================ the page


def _asset(name: str) -> str:
    return resources.files("gatescope.viz").joinpath(name).read_text(encoding="utf-8")


def _csp_hash(text: str) -> str:
    return (
        "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"
    )


def render_html(data: Mapping[str, Any]) -> str:
    """The self-contained page for ``data`` (from :func:`build_data`), as one string.

    The data go in as JSON inside a ``<script type="application/json">`` with every "<"
    escaped, so no text in them can close the element; the script and the style are
    allowed by their sha256 in the page's Content-Security-Policy, nothing else loads.
    """
    body, style, script = (_asset(n) for n in _ASSETS)
    # JSON inside <script>: "<" is escaped so no "</script>" or "<!--" can occur in it
    blob = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    blob = blob.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    csp = (
        "default-src 'none'; "
        f"script-src {_csp_hash(script)}; "
        f"style-src {_csp_hash(style)}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    body = body.replace("{{SCRIPT}}", script).replace("{{DATA}}", blob, 1)  # last: data is anything
    title = str(data.get("title", "gatescope explorer"))
    return html_page(title, body, style=style, csp=csp, generator="gatescope explore")


def write_html(path: str | os.PathLike[str], data: Mapping[str, Any]) -> int:
    """Write the page to ``path`` (via a temporary file, then renamed); returns its size."""
    text = render_html(data).encode("utf-8")
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return len(text)


# ============================================================================ in a notebook

# a CSS length: a number and an optional unit (a bare number means pixels)
_CSS_LENGTH = re.compile(r"(\d+(\.\d+)?)(px|%|em|rem|vw|vh)?")


def _css_length(name: str, value: int | float | str) -> str:
    """``value`` as a CSS length (a number: pixels), or ValueError naming ``name``."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number of pixels or a CSS length, got {value!r}")
    if isinstance(value, int | float | np.integer | np.floating):
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number of pixels, got {value!r}")
        return f"{float(value):g}px"
    if isinstance(value, str):
        m = _CSS_LENGTH.fullmatch(value.strip())
        if m and float(m.group(1)) > 0:
            return m.group(1) + (m.group(3) or "px")
    raise ValueError(
        f"{name} must be a number of pixels or a CSS length such as '100%' or '900px', "
        f"got {value!r}"
    )


class ExplorerPage:
    """The explorer page of one data object, for a notebook: it displays itself inline.

    ``data``: the dict of `build_data` (or `from_sequence_model`, `from_charlm`); the page
    is `render_html` of it, rendered afresh each time it is shown or saved. In Jupyter (and
    any front end that calls ``_repr_html_``) the page appears in a sandboxed ``<iframe>``:
    ``srcdoc`` holds the whole page, HTML-escaped; ``sandbox="allow-scripts"`` lets its one
    script run but gives it an opaque origin, so it cannot read the notebook, its cookies
    or storage. Its own Content-Security-Policy (``default-src 'none'``, the script and the
    style allowed by hash) applies inside the frame as in a file.

    ``width``, ``height``: the frame's size, a number of pixels or a CSS length ("100%").
    A notebook stores the page in the cell's output: a page of a few MB makes a notebook of
    a few MB (see `build_data`'s ``bits`` and ``quantities`` to make it smaller).
    """

    def __init__(
        self, data: Mapping[str, Any], *, width: int | str = "100%", height: int | str = 760
    ) -> None:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise ValueError(
                "data must be an explorer data object (from explorer.build_data, "
                "from_sequence_model, from_charlm or from_seq2seq)"
            )
        self.data = data
        self.width = _css_length("width", width)
        self.height = _css_length("height", height)

    @property
    def title(self) -> str:
        """The page's title (the data's ``title``)."""
        return str(self.data.get("title", "gatescope explorer"))

    def html(self) -> str:
        """The self-contained page, as `render_html` gives it (the same string)."""
        return render_html(self.data)

    def iframe(self) -> str:
        """The ``<iframe>`` element that shows the page: what ``_repr_html_`` returns."""
        srcdoc = html.escape(self.html(), quote=True)  # & < > " ' as character references
        return (
            f'<iframe title="{html.escape(self.title, quote=True)}" sandbox="allow-scripts" '
            f'style="width: {self.width}; height: {self.height}; border: 1px solid #d0d4dc; '
            f'border-radius: 4px; box-sizing: border-box" srcdoc="{srcdoc}"></iframe>'
        )

    def _repr_html_(self) -> str:
        """What Jupyter displays: `iframe`."""
        return self.iframe()

    def save(self, path: str | os.PathLike[str]) -> int:
        """Write the page to ``path`` as `write_html` does; returns its size in bytes."""
        return write_html(path, self.data)

    def __repr__(self) -> str:
        return f"ExplorerPage({self.title!r}: {summary(self.data)})"


def page(
    data: Any,
    task: Any = None,
    texts: str | Sequence[str] | None = None,
    *,
    width: int | str = "100%",
    height: int | str = 760,
    **options: Any,
) -> ExplorerPage:
    """The explorer page of ``data`` as an `ExplorerPage`: the last line of a notebook cell
    shows it inline; ``.save(path)`` writes it to a file.

        explorer.page(explorer.from_sequence_model(model, task, batch))
        explorer.page(seq2seq_model, task, ["september 27, 1994", "9/27/94"])

    ``data``: a data object, or a `gatescope.seq2seq.Seq2Seq` with its ``task`` and
    ``texts`` (then ``options`` go to `from_seq2seq`).
    """
    if not isinstance(data, Mapping):
        if task is None or texts is None:
            raise ValueError("page needs a data object, or a Seq2Seq model with its task and texts")
        data = from_seq2seq(data, task, texts, **options)
    elif task is not None or texts is not None or options:
        raise ValueError("task, texts and options go with a Seq2Seq model, not a data object")
    return ExplorerPage(data, width=width, height=height)


# ============================================================================ sources


def _text_features(text: str) -> dict[str, np.ndarray]:
    """The text features of `gatescope.inspect.units.text_features`, as float64 arrays."""
    return {k: np.asarray(v, np.float64) for k, v in text_features(text).items()}


def from_charlm(
    model: Any,
    vocab: Any,
    text: str,
    *,
    title: str | None = None,
    details: Mapping[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Explorer data for a character language model (a `gatescope.model.SequenceModel` with
    int-id input, e.g. from `gatescope.charlm.load_charlm`) on ``text``.

    The page shows the text as given; characters outside the vocabulary are read as the
    unknown symbol. Features: those of `gatescope.inspect.units.text_features`.
    """
    if not isinstance(text, str) or not text:
        raise ValueError("text must be a non-empty string")
    ids = vocab.encode(text)  # (N,)
    x = model.encode(ids[None, :])  # (1, N, V) one-hot or (1, N, E) embedded: what the stack reads
    labels = list("\ufffd" + vocab.chars)  # id 0 is the unknown symbol
    targets = np.append(ids[1:], -1)
    feats = options.pop("features", None)
    if feats is None:
        feats = _text_features(text)
    cfg = model.config
    info = {
        "model": f"{cfg.arch.upper()} · {cfg.num_layers} layer{'s' if cfg.num_layers > 1 else ''} × {cfg.hidden_size} units",
        "vocabulary": f"{vocab.size} symbols",
        "text": f"{len(text):,} characters",
        **(details or {}),
    }
    return build_data(
        model.recurrent,
        x,
        text,
        kind="text",
        head=model.head,
        labels=labels,
        readout="steps",
        targets=targets,
        features=feats,
        title=title or "gatescope explorer",
        details=info,
        **options,
    )


def task_glyphs(task: Any, x: np.ndarray) -> tuple[str, list[str], np.ndarray]:
    """Display characters, hover strings and emphasis flags for task inputs x (B, T, D).

    One-hot steps show their symbol (the order task's letters a b c d B E X Y, the copy
    task's 1..K with '·' for blank and ':' for the delimiter, otherwise 0-9 A-Z ...); the
    adding task shows the first decimal of each value and emphasises the marked steps;
    other steps (noise) show '~'. Returns (glyphs, info, emphasis) for the N = B * T steps
    one sample after another: a str of N characters, N hover strings, (N,) bool.
    """
    x = np.asarray(x, np.float64)
    B, T, D = x.shape
    flat = x.reshape(-1, D)
    name = getattr(task, "name", "")
    if name == "order":
        alphabet = "abcdBEXY"
    elif name == "copy":
        alphabet = "·" + "".join(SYMBOLS[1 : D - 1]) + ":"
    else:
        alphabet = SYMBOLS
    glyphs, info = [], []
    emph = np.zeros(len(flat), bool)
    one_hot = (np.abs(flat).sum(axis=1) == 1) & (flat.max(axis=1) == 1) & (flat.min(axis=1) >= 0)
    if name == "adding":
        for k, row in enumerate(flat):
            glyphs.append(str(min(9, max(0, int(row[0] * 10)))))
            emph[k] = row[1] != 0
            info.append(f"value {row[0]:.3f}" + (" · marked" if emph[k] else ""))
        return "".join(glyphs), info, emph
    for k, row in enumerate(flat):
        if one_hot[k]:
            j = int(np.argmax(row))
            glyphs.append(alphabet[j] if j < len(alphabet) else "?")
            info.append(f"input: one-hot {j}")
        elif not row.any():
            glyphs.append("·")
            info.append("input: zeros")
        else:
            glyphs.append("~")
            shown = ", ".join(f"{v:+.2f}" for v in row[:8]) + (", …" if D > 8 else "")
            info.append(f"input: [{shown}]")
    return "".join(glyphs), info, emph


def from_sequence_model(
    model: Any,
    task: Any,
    batch: Any,
    *,
    title: str | None = None,
    details: Mapping[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Explorer data for a task model (`gatescope.model.SequenceModel`) on ``batch``.

    ``batch``: a task batch, x (B, T, D), y (B, ...) and mask (or None); the document is
    the N = B * T steps, each sample one line of the page. Features: each input channel
    (for one-hot inputs, "is symbol k") and the step's position in its sample, plus any
    ``features`` passed (name -> (N,)). Influence: at ``grad_positions`` positions spread
    over the document for per-step models, else at the read-out step (the last) of each
    sample, over the whole sample.
    ``options``: the other arguments of `build_data`. Returns the data dict.
    """
    x = np.asarray(batch.x)
    B, T, D = x.shape
    glyphs, info, emph = task_glyphs(task, x)
    cfg = model.config
    kind = cfg.kind
    out = model.predict(x)  # (B, C) or (B, T, C)
    labels: list[str] | None = None
    targets = None
    alphabet = getattr(task, "class_names", None)
    if kind in ("classify_last", "classify_steps"):
        labels = [
            str(alphabet[i]) if alphabet and i < len(alphabet) else str(i)
            for i in range(cfg.output_size)
        ]
        if getattr(task, "name", "") == "copy":
            labels = ["·"] + [SYMBOLS[i] for i in range(1, cfg.output_size)]
    y = np.asarray(batch.y)
    if kind == "classify_steps":
        tg = y.reshape(-1).astype(np.int64)
        if batch.mask is not None:
            tg = np.where(batch.mask.reshape(-1), tg, -1)
        targets = tg
    elif kind == "classify_last":
        targets = np.full(B * T, -1, np.int64)
        targets[np.arange(B) * T + T - 1] = y.reshape(-1)
    for b in range(B):
        k = b * T + T - 1
        if kind == "regress_last":
            info[k] += f" · output {float(out[b, 0]):.4f}, target {float(y[b, 0]):.4f}"
        elif kind == "classify_last":
            info[k] += f" · read-out step, target {labels[int(y[b])]}"
    one_hot_inputs = all(g not in "~" for g in glyphs) and getattr(task, "name", "") != "adding"
    feats: dict[str, np.ndarray] = {}
    flat = x.reshape(-1, D)
    for j in range(D):
        if getattr(task, "name", "") == "adding":
            nm = ("value", "marker")[j] if j < 2 else f"x[{j}]"
        elif one_hot_inputs:
            nm = (
                f"is '{glyphs[int(np.flatnonzero(flat[:, j] == 1)[0])]}'"
                if (flat[:, j] == 1).any()
                else f"x[{j}]"
            )
        else:
            nm = f"x[{j}]"
        feats[nm] = flat[:, j]
    feats["step"] = np.tile(np.arange(T, dtype=np.float64), B)
    user_feats = options.pop("features", None)
    if user_feats:
        feats.update(user_feats)
    info_lines = {
        "model": f"{cfg.arch.upper()} · {cfg.num_layers} layer{'s' if cfg.num_layers > 1 else ''} × {cfg.hidden_size} units",
        "task": f"{getattr(task, 'name', '?')} (T = {T}, {kind})",
        "samples": str(B),
        **(details or {}),
    }
    return build_data(
        model.recurrent,
        x,
        glyphs,
        kind="steps",
        head=model.head,
        labels=labels,
        readout="steps" if kind == "classify_steps" else "last",
        targets=targets,
        features=feats,
        token_info=info,
        emphasis=emph,
        title=title or "gatescope explorer",
        details=info_lines,
        **options,
    )


# ---------------------------------------------------------------------------- seq2seq

EOS_GLYPH = "\u2404"  # ␄: the decoder step that ends the output (it emits EOS)
PART_LABELS = {
    "encoder": "encoder",
    "encoder_reverse": "encoder (backward direction)",
    "decoder": "decoder",
}


def _char_features(chars: Sequence[str], positions: np.ndarray) -> dict[str, np.ndarray]:
    """Features of a seq2seq document: the step within its text, and the character classes
    (digit, letter, space, other) that occur in it without filling it."""
    classes = {
        "is_digit": lambda c: c.isdigit(),
        "is_letter": lambda c: c.isalpha(),
        "is_space": lambda c: c == " ",
        "is_other": lambda c: not (c.isalnum() or c == " " or c == EOS_GLYPH),
        "is_end": lambda c: c == EOS_GLYPH,
    }
    feats: dict[str, np.ndarray] = {"step": positions.astype(np.float64)}
    for name, test in classes.items():
        v = np.array([bool(test(c)) for c in chars], np.float64)
        if 0 < v.sum() < len(v):
            feats[name] = v
    return feats


def from_seq2seq(
    model: Any,
    task: Any,
    texts: str | Sequence[str],
    *,
    top_k: int = 5,
    bits: int | None = None,
    quantities: Sequence[str] | None = None,
    max_len: int | None = None,
    title: str | None = None,
    details: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Explorer data for a sequence-to-sequence model (`gatescope.seq2seq.Seq2Seq`) on
    ``texts`` (one string or several), written in ``task``'s source vocabulary.

    For each text: the greedy decode (``model.translate``, ``beam=1``, at most ``max_len``
    tokens, default the task's longest target + 5) and the attention weights of each of its
    steps, as ``translate`` leaves them in ``model.attention``: row k (the step that emits
    output character k, or EOS after the last) over the source characters, stored in
    float32. Then the teacher-forced ``model.forward`` on that output gives the trace of
    every encoder and decoder unit (`Seq2Seq.trace`), and the decoder's distribution at
    each step (PAD and BOS excluded, as decoding does).

    The data object has ``"mode": "seq2seq"``, ``"texts"`` (per text: ``source``,
    ``output``, ``ended`` (EOS emitted), ``attention`` (base64 float32 (T_k, S_k), or None
    without attention), and the first step of the text in each part) and ``"parts"``:
    ``"encoder"`` (its document: the sources one after another, in source order even with
    ``reverse_source``), ``"encoder_reverse"`` (bidirectional encoders) and ``"decoder"``
    (the outputs, each followed by the step that emits EOS, drawn ␄), each a unit-view
    data object in `build_data`'s format (no influence). Characters outside the source
    vocabulary raise ValueError naming them (`task.encode`).
    """
    from gatescope.nn.functional import softmax
    from gatescope.seq2seq import BOS, EOS, Seq2Seq

    if not isinstance(model, Seq2Seq):
        raise ValueError(f"model must be a gatescope.seq2seq.Seq2Seq, got {type(model).__name__}")
    model.check_fits(task)
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts or not all(isinstance(t, str) and t for t in texts):
        raise ValueError("texts must be one non-empty string or a list of them")
    ids = task.encode(texts)  # (B, S): ValueError naming characters outside the vocabulary
    cfg = model.config
    if max_len is None:
        max_len = int(task.max_target_len) + 5
    parts = ["encoder", *(["encoder_reverse"] if cfg.bidirectional else []), "decoder"]
    traces: dict[str, dict[str, list[np.ndarray]]] = {p: {} for p in parts}
    records, probs_all, emitted = [], [], []
    enc_pos = dec_pos = 0
    for b, text in enumerate(texts):
        src = ids[b : b + 1, : len(text)]  # (1, S): this text alone, no padding
        S = src.shape[1]
        out = model.translate(src, beam=1, max_len=max_len)[0]
        ended = len(out) < max_len  # else cut at max_len without EOS
        att = None if model.attention is None else np.asarray(model.attention[0], np.float32)
        tgt = np.array([[*out, EOS]] if ended else [out], np.int64)  # (1, T)
        logits = model.forward(src, tgt)  # (1, T, V)
        trace = model.trace
        for part in parts:
            flip = part.startswith("encoder") and (
                cfg.reverse_source != (part == "encoder_reverse")
            )
            for q, a in trace[part].items():
                a = np.asarray(a)[:, 0]  # (L, S or T, H)
                traces[part].setdefault(q, []).append(a[:, ::-1] if flip else a)
        z = np.array(logits[0], np.float64)  # (T, V)
        z[:, : BOS + 1] = -np.inf  # decoding never emits PAD or BOS
        probs_all.append(softmax(z))
        emitted.append(tgt[0])
        T = tgt.shape[1]
        if att is not None and att.shape != (T, S):
            raise ValueError(f"attention of text {b} has shape {att.shape}, expected {(T, S)}")
        records.append(
            {
                "source": text,
                "output": task.decode(out),
                "ended": bool(ended),
                "steps": int(T),
                "attention": None if att is None else _b64(att, "f4"),
                "enc_start": enc_pos,
                "dec_start": dec_pos,
            }
        )
        enc_pos += S
        dec_pos += T

    title = title or "gatescope explorer"
    part_data: dict[str, Any] = {}
    for part in parts:
        full = {q: np.concatenate(v, axis=1) for q, v in traces[part].items()}  # (L, N, H)
        available = list(full)
        wanted = [str(q) for q in (available if quantities is None else quantities)]
        _check_quantities(wanted, available, cfg.arch)
        if part == "decoder":
            tokens, info, starts, pos = [], [], [], []
            for b, rec in enumerate(records):
                starts.append(rec["dec_start"])
                chars = list(rec["output"]) + ([EOS_GLYPH] if rec["ended"] else [])
                for k, ch in enumerate(chars):
                    tokens.append(ch)
                    pos.append(k)
                    reads = "BOS" if k == 0 else repr(chars[k - 1])
                    emits = "EOS (the end)" if ch == EOS_GLYPH else repr(ch)
                    info.append(f"text {b + 1}, decoder step {k}: reads {reads}, emits {emits}")
        else:
            tokens, info, starts, pos = [], [], [], []
            for b, rec in enumerate(records):
                starts.append(rec["enc_start"])
                S = len(rec["source"])
                for j, ch in enumerate(rec["source"]):
                    tokens.append(ch)
                    pos.append(j)
                    read = j if (part == "encoder") != cfg.reverse_source else S - 1 - j
                    info.append(
                        f"text {b + 1}, source position {j}: read at this direction's step {read}"
                    )
        d = _units_data(
            full,
            "".join(tokens),
            wanted=wanted,
            kind="steps",
            arch=cfg.arch,
            seq_len=max(len(r["source"]) if part != "decoder" else r["steps"] for r in records),
            sequences=len(records),
            starts=starts,
            features=_char_features(tokens, np.array(pos)),
            token_info=info,
            bits=bits,
            title=title,
        )
        del d["luts"]  # one set for the page, at the top level
        d["heading"] = {
            "encoder": "Encoder: the source characters",
            "encoder_reverse": "Encoder, backward direction: the source characters",
            "decoder": "Decoder: one step per output character (␄: the step that emits EOS)",
        }[part]
        if part == "decoder":
            probs = np.concatenate(probs_all)  # (N, V)
            n = len(probs)
            labels = ["PAD", "BOS", "EOS", *task.tgt_symbols]
            d["predictions"] = _predictions(
                probs, np.arange(n), n, labels, np.concatenate(emitted), top_k
            )
        else:
            d["predictions"] = None
        d["gradients"] = None
        part_data[part] = d

    att_note = (
        'This model has no attention (attention="none"): the decoder sees the source only '
        "through the encoder's final state, so there are no attention weights to show."
        if cfg.attention == "none"
        else f"Attention: {cfg.attention}"
        + (f" ({cfg.score})" if cfg.attention == "luong" else "")
        + "; the weights of each output step over the source characters, exact (float32), "
        "from the greedy decode."
    )
    info_lines = {
        "model": f"Seq2Seq {cfg.arch.upper()} · {cfg.num_layers} layer{'s' if cfg.num_layers > 1 else ''} × {cfg.hidden_size} units"
        + (" · bidirectional" if cfg.bidirectional else "")
        + (" · reversed source" if cfg.reverse_source else ""),
        "attention": cfg.attention,
        "task": str(getattr(task, "name", "?")),
        "texts": str(len(records)),
        **(details or {}),
    }
    return {
        "format": FORMAT,
        "mode": "seq2seq",
        "title": str(title),
        "details": {str(k): str(v) for k, v in info_lines.items()},
        "notes": [att_note, *(str(n) for n in notes)],
        "attention": cfg.attention,
        "texts": records,
        "parts": part_data,
        "part_labels": {p: PART_LABELS[p] for p in parts},
        "luts": {name: colour_lut(name).reshape(-1).tolist() for name in ("div", "seq", "grad")},
    }


def attention_weights(data: Mapping[str, Any], text: int = 0) -> np.ndarray | None:
    """The (T, S) float32 attention weights the page holds for text ``text`` of seq2seq
    ``data`` (row k: output step k over the source characters), or None without attention."""
    rec = data["texts"][text]
    if rec["attention"] is None:
        return None
    a = np.frombuffer(base64.b64decode(rec["attention"]), "<f4")
    return a.reshape(rec["steps"], len(rec["source"]))


def summary(data: Mapping[str, Any]) -> str:
    """One line describing a data object: steps, units, quantities, size of the gradients."""
    if data.get("mode") == "seq2seq":
        parts = data["parts"]
        enc, dec = parts["encoder"], parts["decoder"]
        att = "no attention" if data["attention"] == "none" else f"{data['attention']} attention"
        return (
            f"{len(data['texts'])} text(s) · {enc['n']:,} source and {dec['n']:,} output steps · "
            f"{enc['layers']} layer(s) × {enc['units']} units · {att} · "
            f"{', '.join(enc['quantities'])} at {enc['bits']} bits"
        )
    g = data.get("gradients")
    n_pos = len(base64.b64decode(g["positions"])) // 4 if g else 0
    return (
        f"{data['n']:,} steps · {data['layers']} layer(s) × {data['units']} units · "
        f"{', '.join(data['quantities'])} at {data['bits']} bits · "
        f"influence at {n_pos} position(s)" + (f" (window {g['window']})" if g else "")
    )
