"""Drawing only: figures (matplotlib, Agg canvas, no pyplot) and the self-contained pages.

    from gatescope import inspect as gi, viz
    fig = viz.gate_heatmaps(gi.gate_activations(lstm, x[0]), "lstm")
    viz.save(fig, "gates.png")

The figure functions live in `gatescope.viz.figures` and load (with matplotlib) on first
use, so `gatescope.viz.explorer` and friends do not pay for matplotlib. Beside them:
`explorer` (the gate explorer page), `demo_page` (the demo's page), `units` (texts coloured
by a unit), `capacity` (a sweep's capacity curve), `page` (the one HTML page shell) and
`style` (each architecture's name and colour), each loaded on first use too
(``viz.explorer`` works after ``from gatescope import viz``). Every array they draw comes
from `gatescope.inspect`.

In Jupyter, figures display as usual, and the explorer page displays inline:

    fig = viz.gate_heatmaps(...)          # the last line of a cell: the figure, as a PNG
    viz.explorer.page(viz.explorer.from_sequence_model(model, task, batch))

(matplotlib's object API, which gatescope uses, leaves the notebook's figure formatter
unset until pyplot or ``%matplotlib inline`` sets it; importing `gatescope.viz` in IPython
sets the PNG one, IPython's own, unless a figure format is set already.)
"""

from __future__ import annotations

import importlib
import sys
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
# the modules beside the figures, imported when first named (`viz.explorer`, ...)
_SUBMODULES = (
    "capacity",
    "demo_page",
    "explorer",
    "figures",
    "page",
    "patching",
    "seq2seq",
    "style",
    "units",
)


def __getattr__(name: str) -> Any:
    # not a fallback: the figure functions load on first use (with matplotlib)
    if name in __all__:
        return getattr(importlib.import_module(".figures", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))


def _ipython_figure_formatter() -> None:
    """In a running IPython (a notebook), show matplotlib Figures as PNG like pyplot's do.

    Only when IPython is already imported, its front end shows PNG (a notebook, not a
    terminal), and no image formatter knows Figure yet (a user's ``%matplotlib inline`` or
    figure-format choice is left as it is). IPython's own `print_figure` draws the PNG;
    matplotlib is not imported here.
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    display = getattr(shell, "display_formatter", None)
    formatters = getattr(display, "formatters", None)
    if not formatters or "image/png" not in formatters:
        return
    if "image/png" not in getattr(display, "active_types", ()):
        return  # a terminal shows text only: nothing would ever draw the PNG
    figure_module = sys.modules.get("matplotlib.figure")
    for mime in ("image/png", "image/svg+xml", "image/jpeg", "application/pdf"):
        fmt = formatters.get(mime)
        if fmt is None:
            continue
        if ("matplotlib.figure", "Figure") in fmt.deferred_printers:
            return
        if figure_module is not None and figure_module.Figure in fmt.type_printers:
            return
    from IPython.core.pylabtools import print_figure

    formatters["image/png"].for_type_by_name(
        "matplotlib.figure", "Figure", lambda fig: print_figure(fig, "png")
    )


_ipython_figure_formatter()
