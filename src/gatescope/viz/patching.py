"""Figures of the interventions in `gatescope.inspect.patching`: patching maps, attribution
against patching, clamp curves, unit ablations. Drawing only; each function takes the arrays
(or the small result objects) and returns a matplotlib Figure (Agg, no pyplot). Each axis
carries a label (`ax.get_label()`) naming what it shows.

Shapes: T steps, H units, Q quantities, K clamp steps, R random units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from gatescope.inspect.patching import AblationResult, PatchingMap, correlation

from .figures import _figure, _symmetric_limit

__all__ = [
    "ablation_figure",
    "attribution_figure",
    "clamp_figure",
    "coarse_map_figure",
    "patching_map_figure",
]

MAP_CMAP = "RdBu_r"  # diverging, centred on 0: a patch can also push away from the answer


def _heatmap(fig: Figure, ax, a: np.ndarray, label: str) -> None:
    v = max(_symmetric_limit(a), 1e-6)
    im = ax.imshow(a, aspect="auto", cmap=MAP_CMAP, vmin=-v, vmax=v, interpolation="nearest")
    cb = fig.colorbar(im, ax=ax, pad=0.01, fraction=0.04)
    cb.set_label("recovered fraction")
    ax.set_label(label)


def patching_map_figure(pm: PatchingMap, *, title: str | None = None, top: int = 0) -> Figure:
    """Units x steps heatmap of a (steps x units) map; `top` > 0 labels the top units (by
    the sum over steps) and the unit of the largest single entry."""
    R = np.asarray(pm.recovered).T  # (H, T)
    H, T = R.shape
    fig = _figure(9, float(np.clip(0.05 * H + 1.6, 2.4, 5.5)))
    ax = fig.subplots()
    _heatmap(fig, ax, R, f"{pm.method}:{pm.quantity}")
    if top:  # tick the units that carry the most, so they can be read off
        peak = int(np.unravel_index(np.argmax(pm.recovered), pm.recovered.shape)[1])
        units = sorted({int(u) for u in pm.top_units(top)} | {peak})
        ax.set_yticks(units, [str(u) for u in units], fontsize=7)
    ax.set_xlabel("step t of the patch")
    ax.set_ylabel(f"unit (layer {pm.layer})")
    what = "attribution patching" if pm.method == "attribution" else "activation patching"
    ax.set_title(title or f"{what} of {pm.quantity}: one (step, unit) at a time", loc="left")
    return fig


def coarse_map_figure(cm: PatchingMap, *, title: str | None = None) -> Figure:
    """Quantities x steps heatmap of a coarse (steps x quantity) map."""
    R = np.asarray(cm.recovered).T  # (Q, T)
    fig = _figure(9, 0.35 * R.shape[0] + 1.5)
    ax = fig.subplots()
    _heatmap(fig, ax, R, "coarse")
    ax.set_yticks(range(len(cm.labels)), cm.labels)
    ax.set_xlabel("step t of the patch")
    ax.set_ylabel(f"quantity (layer {cm.layer})")
    ax.set_title(title or "patching every unit of one quantity at one step", loc="left")
    return fig


def attribution_figure(pm: PatchingMap, am: PatchingMap, *, title: str | None = None) -> Figure:
    """Attribution patching against real patching, one point per (step, unit), with r."""
    fig = _figure(4.6, 4.2)
    ax = fig.subplots()
    x, y = np.ravel(pm.recovered), np.ravel(am.recovered)
    ax.scatter(x, y, s=6, alpha=0.5, color="#1f77b4")
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
    ax.set_label("attribution_vs_patching")
    ax.set_xlabel("activation patching (recovered fraction)")
    ax.set_ylabel("attribution patching (estimate)")
    r = correlation(pm, am)
    ax.set_title(title or f"{pm.quantity}: r = {r:.2f}", loc="left")
    return fig


def clamp_figure(curves: Mapping[str, np.ndarray], *, title: str | None = None) -> Figure:
    """Accuracy against k for each clamp ({"k": (K,), "f=1": (K,), ...} of clamp_curve)."""
    fig = _figure(6.4, 3.6)
    ax = fig.subplots()
    ks = np.asarray(curves["k"])
    for name, acc in curves.items():
        if name == "k":
            continue
        ax.plot(ks, acc, marker="o", ms=3, label=name)
    ax.set_label("clamp")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("k: the gate is held from step k to the end")
    ax.set_ylabel("accuracy")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(title or "clamping gates", loc="left")
    return fig


def ablation_figure(results: Sequence[AblationResult], *, title: str | None = None) -> Figure:
    """Each unit's change in p(target) against the random units' (a strip per unit, the
    first on top; red: larger than every random unit's, blue: not)."""
    fig = _figure(6.4, 0.5 * len(results) + 1.6)
    ax = fig.subplots()
    for j, res in enumerate(results):
        ax.scatter(res.random_deltas, np.full(len(res.random_deltas), j), color="grey", s=10)
        ax.scatter([res.delta], [j], color="#d62728" if res.matters else "#1f77b4", s=40)
    ax.axvline(0, color="black", lw=0.6)
    labels = [f"L{r.layer} {r.quantity}[{r.unit}] ({r.mode})" for r in results]
    ax.set_yticks(range(len(results)), labels)
    ax.set_ylim(len(results) - 0.5, -0.5)  # the first result on top
    ax.set_label("ablation")
    ax.set_xlabel("change in p(target) when ablated (grey: random units)")
    ax.set_title(title or "unit ablations", loc="left")
    return fig
