"""Drawing only: figures (matplotlib, Agg canvas, no pyplot) and the self-contained pages.

    from gatescope import inspect as gi, viz
    fig = viz.gate_heatmaps(gi.gate_activations(lstm, x[0]), "lstm")
    viz.save(fig, "gates.png")

The figure functions live in `gatescope.viz.figures` and load (with matplotlib) on first
use, so `gatescope.viz.explorer` and friends do not pay for matplotlib. Beside them:
`explorer` (the gate explorer page), `demo_page` (the demo's page), `units` (texts coloured
by a unit), `capacity` (a sweep's capacity curve), `page` (the one HTML page shell) and
`style` (each architecture's name and colour). Every array they draw comes from
`gatescope.inspect`.
"""

from __future__ import annotations

import importlib
from typing import Any

from .style import ARCH_COLORS, ARCH_NAMES

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
    # not a fallback: the figure functions load on first use (with matplotlib)
    if name in __all__:
        return getattr(importlib.import_module(".figures", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
