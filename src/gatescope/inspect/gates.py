"""Gates and states read from a layer's trace: heatmap arrays, mean traces, saturation.

Everything here reads `layer.trace` (the backward cache itself, so it costs nothing) and
returns plain arrays; `gatescope.viz` draws them.

Shapes: B batch, T time, H hidden units. Heatmap arrays are (H, T): units down, time across,
as in the notebook seed's figures.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gatescope.nn import GRU, LSTM, RNN, Recurrent

__all__ = [
    "GATES",
    "LABELS",
    "STATES",
    "chapter_formula",
    "gate_activations",
    "gate_traces",
    "parameter_counts",
    "saturation",
]

# Per architecture: the sigmoid gates (values in 0..1), in the order figures show them ...
GATES: dict[str, tuple[str, ...]] = {"lstm": ("f", "i", "o"), "gru": ("z", "r"), "rnn": ()}
# ... and the states (any sign: drawn on a diverging, centred scale).
STATES: dict[str, tuple[str, ...]] = {"lstm": ("c", "h"), "gru": ("h",), "rnn": ("h",)}

LABELS = {
    "f": "forget gate f (1 = keep, 0 = forget)",
    "i": "input gate i (1 = write, 0 = ignore)",
    "o": "output gate o (1 = expose, 0 = hide)",
    "g": "candidate g",
    "z": "update gate z (1 = keep old h, 0 = take candidate)",
    "r": "reset gate r (1 = use old h, 0 = ignore it)",
    "n": "candidate n",
    "c": "cell state c (long-term memory)",
    "h": "hidden state h (the output)",
}


def _check_layer(layer: object) -> Recurrent:
    if not isinstance(layer, Recurrent):
        raise ValueError(f"layer must be a gatescope LSTM, GRU or RNN, got {type(layer).__name__}")
    return layer


def _trace(layer: Recurrent, x: np.ndarray | None) -> dict[str, np.ndarray]:
    """The layer's trace, after running x through it if given; (B, T, H) per name."""
    if x is not None:
        x = np.asarray(x)
        if x.ndim == 2:  # one sequence (T, D)
            x = x[None] if layer.config.batch_first else x[:, None]
        layer(x)
    trace = layer.trace
    if not trace:
        raise ValueError("the layer has no trace: pass x, or run the layer on an input first")
    out = {}
    for name, a in trace.items():
        if layer.num_layers > 1:
            a = a[-1]  # the top layer
        out[name] = a if layer.config.batch_first else a.transpose(1, 0, 2)
    return out


def gate_activations(
    layer: Recurrent, x: np.ndarray | None = None, index: int = 0
) -> dict[str, np.ndarray]:
    """Gates and states of one sequence as (H, T) arrays (units x time), keyed by trace name.

    Runs `x` ((T, D) for one sequence, or a batch (B, T, D), time-major (T, B, D) for a
    layer built with batch_first=False) through the layer first if given, then reads
    sequence `index` (0 <= index < B) of `layer.trace` (the top layer if stacked). Returns
    name -> (H, T); every value is the trace's own: `out["f"] == layer.trace["f"][index].T`.
    """
    layer = _check_layer(layer)
    trace = _trace(layer, x)
    return {name: np.ascontiguousarray(a[index].T) for name, a in trace.items()}


def gate_traces(layer: Recurrent, x: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The textbook chapter's curves: mean of each gate over units, and the state norms, per step.

    x: (B, T, D) or one sequence (T, D), run first if given (else the layer's last trace).
    Returns (T,) arrays, for each gate g and state s of the architecture (top layer):

        g[t] = (1 / (B H)) sum_b sum_j g_t[b, j]          (mean over sequences and units)
        s_norm[t] = (1 / B) sum_b ||s_t[b, :]||_2         (norm over the H units, then mean)
    """
    layer = _check_layer(layer)
    trace = _trace(layer, x)
    arch = layer.config.arch
    out: dict[str, np.ndarray] = {}
    for name in GATES[arch]:
        out[name] = trace[name].mean(axis=(0, 2))
    for name in STATES[arch]:
        out[f"{name}_norm"] = np.linalg.norm(trace[name], axis=2).mean(axis=0)
    return out


def saturation(
    layer_or_trace: Recurrent | dict[str, np.ndarray],
    x: np.ndarray | None = None,
    *,
    low: float = 0.1,
    high: float = 0.9,
    gates: tuple[str, ...] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Karpathy, Johnson & Fei-Fei (2015), fig. 3: how often each gate unit saturates.

    For every gate g and unit j, over the B sequences and T steps:

        left[j]  = (1 / (B T)) #{(b, t): g_t[b, j] < low}      (nearly shut)
        right[j] = (1 / (B T)) #{(b, t): g_t[b, j] > high}     (nearly open)

    Returns {gate: {"left": (H,), "right": (H,)}}. Pass a layer (and optionally x (B, T, D)
    to run first; the top layer is read) or a trace dict of (B, T, H) arrays (then name the
    gates, default: every key among f, i, o, z, r).
    """
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"need 0 <= low < high <= 1, got low={low}, high={high}")
    if isinstance(layer_or_trace, Recurrent):
        trace = _trace(layer_or_trace, x)
        names = GATES[layer_or_trace.config.arch] if gates is None else gates
    elif isinstance(layer_or_trace, dict):
        trace = layer_or_trace
        names = (
            tuple(n for n in ("f", "i", "o", "z", "r") if n in trace) if gates is None else gates
        )
    else:
        raise ValueError(
            f"layer_or_trace must be a recurrent layer or a trace dict, "
            f"got {type(layer_or_trace).__name__}"
        )
    out = {}
    for name in names:
        if name not in trace:
            raise ValueError(f"gate {name!r} is not in the trace (has {', '.join(trace)})")
        a = np.asarray(trace[name])
        if a.ndim != 3:
            raise ValueError(f"trace[{name!r}] must be (B, T, H), got shape {a.shape}")
        out[name] = {"left": (a < low).mean(axis=(0, 1)), "right": (a > high).mean(axis=(0, 1))}
    return out


def parameter_counts(
    input_size: int, hidden_size: int, num_layers: int = 1, **options: Any
) -> dict[str, int]:
    """Parameters of an RNN, a GRU and an LSTM of the given sizes: {"rnn": n, "gru": n, "lstm": n}.

    input_size D, hidden_size H. Counted from built layers (`layer.num_params()`); options
    such as reset_after=True or bias=False go to the architectures that take them. With the
    defaults and one layer the counts are the textbook chapter's formula, `chapter_formula`
    (D=4, H=32: rnn 1,184, gru 3,552, lstm 4,736).
    """
    classes = {"rnn": RNN, "gru": GRU, "lstm": LSTM}
    specific = {"forget_bias": "lstm", "reset_after": "gru", "nonlinearity": "rnn"}
    out = {}
    for arch, cls in classes.items():
        opts = {k: v for k, v in options.items() if specific.get(k, arch) == arch}
        out[arch] = cls(input_size, hidden_size, num_layers, **opts).num_params()
    return out


def chapter_formula(arch: str, input_size: int, hidden_size: int) -> int:
    """G*H*(D+H) + G*H with G = 1, 3, 4 gate blocks for rnn, gru, lstm (one layer).

    D = input_size, H = hidden_size: G weight blocks (H, D) and (H, H) and one bias (H,) each.
    """
    G = {"rnn": 1, "gru": 3, "lstm": 4}[arch]
    return G * hidden_size * (input_size + hidden_size) + G * hidden_size
