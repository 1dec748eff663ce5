"""Matplotlib figures drawn from the arrays of `gatescope.inspect`.

Every function takes plain arrays (or the small result objects of `gatescope.inspect`) and
returns a `matplotlib.figure.Figure` on the Agg canvas: no pyplot, no global state, no
display needed. `save(fig, path)` writes a PNG. Each drawn axis carries a label
(`ax.get_label()`: the trace name, architecture or panel) so tests can find the numbers
behind it. In a notebook a Figure displays itself as a PNG (see `gatescope.viz`).

Shapes: T time, D input, H hidden units, k = 0..T steps back from the loss.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gatescope.inspect.gates import GATES, LABELS, STATES

from . import __all__ as __all__  # the list lives in the package, which loads this lazily
from .style import ARCH_COLORS, ARCH_NAMES

GATE_COLORS = {
    "i": "#3498db",
    "f": "#e74c3c",
    "o": "#2ecc71",
    "z": "#e67e22",
    "r": "#8e44ad",
    "c_norm": "#9b59b6",
    "h_norm": "#34495e",
}
GATE_CMAP = "viridis"  # sequential, for 0..1 gates
STATE_CMAP = "RdBu_r"  # diverging, centred on 0, for states


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: str | os.PathLike[str], dpi: int = 100) -> str:
    """Write `fig` as a PNG at `path` (folders created); returns the path."""
    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (for embedding in HTML)."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    return buf.getvalue()


def _symmetric_limit(a: np.ndarray) -> float:
    m = float(np.max(np.abs(a))) if a.size else 1.0
    return m if m > 0 else 1.0


# --------------------------------------------------------------------------------------------
# gates and states of one sequence


def gate_heatmaps(
    acts: Mapping[str, np.ndarray],
    arch: str,
    *,
    title: str | None = None,
    names: Sequence[str] | None = None,
    mark_steps: Sequence[int] = (),
) -> Figure:
    """Gates (fixed 0..1 scale) and states (diverging, centred) as units x time heatmaps.

    acts: {name: (H, T)} from `gatescope.inspect.gate_activations`. `names` default: the
    architecture's gates then states (LSTM f, i, o, c, h; GRU z, r, h; RNN h).
    `mark_steps`: time steps to mark with a dashed line (e.g. where the symbol is shown).
    """
    names = tuple(names) if names is not None else GATES[arch] + STATES[arch]
    missing = [n for n in names if n not in acts]
    if missing:
        raise ValueError(f"acts lacks {missing}; it has {sorted(acts)}")
    H, T = np.shape(acts[names[0]])
    row_h = float(np.clip(0.035 * H + 0.9, 1.5, 3.0))
    fig = _figure(11, row_h * len(names) + 0.6)
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    gate_names = set(GATES[arch]) | {"i", "f", "o", "z", "r"}
    for ax, name in zip(axes, names, strict=True):
        a = np.asarray(acts[name])
        ax.set_label(name)
        if name in gate_names:
            im = ax.imshow(
                a, aspect="auto", cmap=GATE_CMAP, vmin=0.0, vmax=1.0, interpolation="nearest"
            )
            cb = fig.colorbar(im, ax=ax, pad=0.01, fraction=0.04)
            cb.set_ticks([0, 0.5, 1])
        else:
            v = _symmetric_limit(a)
            im = ax.imshow(
                a, aspect="auto", cmap=STATE_CMAP, vmin=-v, vmax=v, interpolation="nearest"
            )
            cb = fig.colorbar(im, ax=ax, pad=0.01, fraction=0.04)
            cb.set_ticks([-v, 0, v])
            cb.set_ticklabels([f"{-v:.2g}", "0", f"{v:.2g}"])
        for s in mark_steps:
            ax.axvline(s, color="white", lw=1.0, ls="--", alpha=0.8)
        ax.set_title(LABELS.get(name, name), fontsize=10, loc="left")
        ax.set_ylabel("unit")
    axes[-1].set_xlabel("time step t")
    fig.suptitle(title or f"{ARCH_NAMES.get(arch, arch)}: gates and states of one sequence")
    return fig


def gate_traces_figure(
    traces: Mapping[str, np.ndarray], arch: str, *, title: str | None = None
) -> Figure:
    """The textbook chapter's 2 x 2 panels: mean of each gate and the state norm over time.

    traces: from `gatescope.inspect.gate_traces` ({"f": (T,), ..., "c_norm": (T,)}).
    """
    order = {
        "lstm": ("i", "f", "o", "c_norm"),
        "gru": ("z", "r", "h_norm"),
        "rnn": ("h_norm",),
    }[arch]
    names = [n for n in order if n in traces]
    titles = {
        "i": "input gate i (mean over units)",
        "f": "forget gate f (mean over units)",
        "o": "output gate o (mean over units)",
        "z": "update gate z (mean over units)",
        "r": "reset gate r (mean over units)",
        "c_norm": "cell-state norm ||c_t||",
        "h_norm": "hidden-state norm ||h_t||",
    }
    cols = 2 if len(names) > 1 else 1
    rows = int(np.ceil(len(names) / cols))
    fig = _figure(10 if cols == 2 else 6, 3.0 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, names, strict=False):
        y = np.asarray(traces[name])
        ax.set_label(name)
        ax.plot(np.arange(len(y)), y, color=GATE_COLORS.get(name, "k"), lw=1.6)
        ax.set_title(titles[name], fontsize=10)
        ax.set_xlabel("time step t")
        if name.endswith("_norm"):
            ax.set_ylim(bottom=0)
        else:
            ax.set_ylim(0, 1)
        ax.grid(True, alpha=0.3)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(title or f"{ARCH_NAMES.get(arch, arch)} gate activations over time")
    return fig


def hidden_states_figure(
    panels: Mapping[str, np.ndarray], *, title: str | None = None, limit: float = 1.0
) -> Figure:
    """Hidden states (H, T) of several models side by side, one shared diverging scale.

    panels: {"rnn": (H, T), "lstm": (H, T), ...} (keys are architectures or free titles).
    `limit`: the colour scale is -limit..limit (tanh keeps h in -1..1).
    """
    n = len(panels)
    fig = _figure(6.0 * n, 4.2)
    axes = fig.subplots(1, n, squeeze=False)[0]
    im = None
    for ax, (name, a) in zip(axes, panels.items(), strict=True):
        ax.set_label(name)
        im = ax.imshow(
            np.asarray(a),
            aspect="auto",
            cmap=STATE_CMAP,
            vmin=-limit,
            vmax=limit,
            interpolation="nearest",
        )
        ax.set_title(f"{ARCH_NAMES.get(name, name)} hidden state h", fontsize=11)
        ax.set_xlabel("time step t")
        ax.set_ylabel("unit")
    if im is not None:
        cb = fig.colorbar(im, ax=list(axes), pad=0.01, fraction=0.03)
        cb.set_label("h")
    fig.suptitle(title or "The same sequence through each network")
    return fig


# --------------------------------------------------------------------------------------------
# gradient flow


def gradient_flow_figure(
    flows: Mapping[str, Mapping[str, Any]], *, title: str | None = None
) -> Figure:
    """||dL/dh_t|| (solid) and ||dL/dc_t|| (dashed, LSTM) against steps back, log scale.

    flows: {panel title: {arch: GradientFlow or its to_dict()}}, e.g.
    {"untrained": {...}, "trained": {...}}: one panel each, sharing the y axis. Each flow
    holds (T + 1,) arrays over k = steps back: h[k] = mean_b ||dL/dh_{T-k}||_2 (and c[k]);
    zeros are left out (a log scale cannot show them).
    """
    n = len(flows)
    fig = _figure(5.5 * n, 4.4)
    axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
    for ax, (panel, by_arch) in zip(axes, flows.items(), strict=True):
        ax.set_label(panel)
        for arch, fl in by_arch.items():
            d = fl.to_dict() if hasattr(fl, "to_dict") else fl
            k = np.asarray(d["steps_back"])
            color = ARCH_COLORS.get(arch, "k")
            name = ARCH_NAMES.get(arch, arch)
            h = np.asarray(d["h"], dtype=float)
            ax.plot(k, np.where(h > 0, h, np.nan), color=color, lw=1.8, label=f"{name}: ||dL/dh||")
            if d.get("c") is not None:
                c = np.asarray(d["c"], dtype=float)
                ax.plot(
                    k,
                    np.where(c > 0, c, np.nan),
                    color=color,
                    lw=1.6,
                    ls="--",
                    label=f"{name}: ||dL/dc||",
                )
        ax.set_yscale("log")
        ax.set_xlabel("steps back from the loss (T - t)")
        ax.set_title(panel, fontsize=11)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    axes[0].set_ylabel("gradient norm (mean over the batch)")
    fig.suptitle(title or "Measured gradient flow: the real backward pass, step by step")
    return fig


def forget_product_figure(
    product: np.ndarray,
    cut: np.ndarray,
    full: np.ndarray | None = None,
    *,
    units: Sequence[int] | None = None,
    title: str | None = None,
) -> Figure:
    """The textbook chapter's claim: dc_T/dc_k along the cell state = product of forget gates.

    product, cut, full: (T + 1, H) for one sequence (index k = 0..T): the forget-gate
    product, the backward pass with the h-path cut, and (optional) the full diagonal of
    dc_T/dc_k. Draws a few units (default: 4 whose whole-sequence products are spread
    evenly on a log scale from the largest down to 1e-8) against steps back T - k on a log
    scale, and the largest relative difference of product and cut at each k.
    """
    product, cut = np.asarray(product, float), np.asarray(cut, float)
    T = product.shape[0] - 1
    if units is None:
        units = _spread_units(product[0])
    fig = _figure(11, 4.4)
    ax, ax2 = fig.subplots(1, 2, width_ratios=[1.6, 1])
    ax.set_label("units")
    ax2.set_label("error")
    k = np.arange(T + 1)
    back = T - k
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]
    for n, j in enumerate(units):
        col = colors[n % len(colors)]
        ax.plot(back, product[:, j], color=col, lw=2.0, label=f"unit {j}")
        ax.plot(back[::3], cut[::3, j], ls="none", marker="o", ms=4, mfc="none", color=col)
        if full is not None:
            fj = np.abs(np.asarray(full, float)[:, j])
            ax.plot(back, np.where(fj > 0, fj, np.nan), color=col, lw=1.0, ls=":")
    ax.plot([], [], color="k", lw=2.0, label=r"$f_{k+1} \cdots f_T$ (forget gates)")
    ax.plot([], [], ls="none", marker="o", mfc="none", color="k", label="backward pass, h-path cut")
    if full is not None:
        ax.plot([], [], ls=":", color="k", label=r"full $|\partial c_T/\partial c_k|$, h-path too")
    ax.set_yscale("log")
    ax.set_xlabel("steps back T - k")
    ax.set_ylabel(r"$\partial c_T[j] / \partial c_k[j]$")
    ax.set_title("cell-state path of single units", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7.5, loc="lower left", ncol=2)
    rel = np.abs(cut - product) / np.maximum(np.abs(product), np.finfo(float).tiny)
    worst = rel.max(axis=1)  # (T + 1,)
    ax2.plot(
        back,
        np.where(worst > 0, worst, np.nan),
        color="k",
        lw=1.2,
        marker=".",
        label="max over units",
    )
    ax2.set_yscale("log")
    ax2.axhline(np.finfo(float).eps, color="grey", ls="--", lw=1, label="float64 epsilon")
    ax2.legend(fontsize=8, loc="upper left")
    ax2.set_xlabel("steps back T - k")
    ax2.set_ylabel("|backward (h cut) - product| / product")
    ax2.set_title(f"relative difference (max {worst.max():.1e})", fontsize=11)
    ax2.grid(True, alpha=0.3)
    if not np.any(worst > 0):
        ax2.text(
            0.5, 0.5, "identical to the last bit", transform=ax2.transAxes, ha="center", va="center"
        )
        ax2.set_ylim(1e-17, 1e-13)
    fig.suptitle(
        title or r"Along the cell state, $\partial c_T/\partial c_k$ is the product of forget gates"
    )
    return fig


def _spread_units(p0: np.ndarray, n: int = 4, floor: float = 1e-8) -> list[int]:
    """Units whose values p0 lie nearest to n points spaced evenly in log from max to floor."""
    logs = np.log10(np.maximum(p0, np.finfo(float).tiny))
    hi = logs.max()
    lo = max(min(logs.min(), hi), np.log10(floor))
    chosen: list[int] = []
    for target in np.linspace(hi, lo, n):
        order = np.argsort(np.abs(logs - target))
        pick = next((int(j) for j in order if int(j) not in chosen), None)
        if pick is not None:
            chosen.append(pick)
    return chosen


# --------------------------------------------------------------------------------------------
# saturation


def saturation_figure(
    sat: Mapping[str, Mapping[str, np.ndarray]],
    arch: str,
    *,
    low: float = 0.1,
    high: float = 0.9,
    title: str | None = None,
) -> Figure:
    """Karpathy et al. (2015) fig. 3: per gate unit, fraction of time left vs right saturated.

    sat: {gate: {"left": (H,), "right": (H,)}} from `gatescope.inspect.saturation`:
    left[j] the fraction of steps with gate < low, right[j] with gate > high; one panel per
    gate, one dot per unit (units on the anti-diagonal are always saturated).
    """
    names = list(sat)
    if not names:
        raise ValueError(f"{arch} has no gates to show saturation for")
    fig = _figure(3.6 * len(names) + 0.4, 4.3)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=True):
        left = np.asarray(sat[name]["left"])
        right = np.asarray(sat[name]["right"])
        ax.set_label(name)
        ax.plot([0, 1], [1, 0], color="grey", lw=0.8, ls="--")
        ax.scatter(
            left, right, s=18, alpha=0.75, color=GATE_COLORS.get(name, "k"), edgecolors="none"
        )
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.03)
        ax.set_aspect("equal")
        ax.set_xlabel(f"fraction of time < {low:g} (closed)")
        ax.set_title(LABELS.get(name, name).split(" (")[0], fontsize=10)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(f"fraction of time > {high:g} (open)")
    fig.suptitle(title or f"{ARCH_NAMES.get(arch, arch)} gate saturation, one dot per unit")
    return fig


# --------------------------------------------------------------------------------------------
# data and training


def sequence_figure(x: np.ndarray, *, title: str | None = None, note: str | None = None) -> Figure:
    """One input sequence x (T, D) as an inputs x time heatmap (diverging, centred).

    Drawn as x.T (D, T), the colour scale -m..m with m = max |x|; ``note``: the axes' own title, on the left.
    """
    x = np.asarray(x, float)
    if x.ndim != 2:
        raise ValueError(f"x must be one sequence (T, D), got shape {x.shape}")
    T, D = x.shape
    fig = _figure(11, 0.22 * D + 1.6)
    ax = fig.subplots()
    ax.set_label("x")
    v = _symmetric_limit(x)
    im = ax.imshow(x.T, aspect="auto", cmap=STATE_CMAP, vmin=-v, vmax=v, interpolation="nearest")
    cb = fig.colorbar(im, ax=ax, pad=0.01, fraction=0.04)
    cb.set_label("input value")
    ax.set_xlabel("time step t")
    ax.set_ylabel("input")
    ax.set_yticks(range(D))
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(note or "", fontsize=10, loc="left")
    fig.suptitle(title or "One input sequence")
    return fig


def training_curves_figure(
    histories: Mapping[str, Sequence[Mapping[str, float]]],
    *,
    metric: str = "accuracy",
    chance: float | None = None,
    target: float | None = None,
    title: str | None = None,
) -> Figure:
    """Loss and `metric` against training step, one line per model.

    histories: {arch: [{"step", "loss", metric, ...}, ...]} (train.fit's result.history;
    a "metric" key is used when present). ``chance`` and ``target``: horizontal lines at
    the chance level and the solved threshold.
    """
    fig = _figure(11, 4.0)
    ax_loss, ax_m = fig.subplots(1, 2)
    ax_loss.set_label("loss")
    ax_m.set_label(metric)
    for arch, hist in histories.items():
        steps = [h["step"] for h in hist]
        color = ARCH_COLORS.get(arch, None)
        name = ARCH_NAMES.get(arch, arch)
        ax_loss.plot(steps, [h["loss"] for h in hist], color=color, lw=1.6, label=name)
        ax_m.plot(
            steps,
            [h["metric"] if "metric" in h else h[metric] for h in hist],
            color=color,
            lw=1.6,
            marker=".",
            label=name,
        )
    ax_loss.set_xlabel("training step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training loss", fontsize=11)
    ax_loss.grid(True, alpha=0.3)
    ax_loss.legend(fontsize=9)
    if chance is not None:
        ax_m.axhline(chance, color="grey", ls="--", lw=1)
        ax_m.text(
            0.01,
            chance,
            " chance",
            color="grey",
            fontsize=8,
            va="bottom",
            transform=ax_m.get_yaxis_transform(),
        )
    if target is not None:
        ax_m.axhline(target, color="grey", ls=":", lw=1)
        ax_m.text(
            0.01,
            target,
            " solved",
            color="grey",
            fontsize=8,
            va="top",
            transform=ax_m.get_yaxis_transform(),
        )
    ax_m.set_xlabel("training step")
    ax_m.set_ylabel(metric)
    ax_m.set_title(f"{metric} on held-out sequences", fontsize=11)
    if metric == "accuracy":
        ax_m.set_ylim(0, 1.02)
    ax_m.grid(True, alpha=0.3)
    ax_m.legend(fontsize=9, loc="center right")
    fig.suptitle(title or "Training")
    return fig
