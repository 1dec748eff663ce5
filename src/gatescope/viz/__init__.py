"""Figures (matplotlib, Agg canvas, no pyplot) and the self-contained HTML report.

    from gatescope import inspect as gi, viz
    fig = viz.gate_heatmaps(gi.gate_activations(lstm, x[0]), "lstm")
    viz.save(fig, "gates.png")

The figure functions live in `gatescope.viz.figures` and load (with matplotlib) on first
use, so `gatescope.viz.explorer` and friends do not pay for matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

# the figure functions (and `figures.__all__`): the one list of them
__all__ = [
    "ARCH_COLORS",
    "ARCH_NAMES",
    "forget_product_figure",
    "gate_heatmaps",
    "gate_traces_figure",
    "gradient_flow_figure",
    "hidden_states_figure",
    "png_bytes",
    "saturation_figure",
    "save",
    "sequence_figure",
    "training_curves_figure",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".figures", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
