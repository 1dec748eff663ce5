"""Pictures of interpretable units: a text coloured by one unit's activation, as HTML and
PNG, and Karpathy et al.'s gate-saturation scatter (figure 3).

The arrays come from `gatescope.inspect.units` (`search_cells`, `gate_saturation`,
`excerpt`); this module only draws them. ``act`` is (N,), one activation per character of
a text of N characters, coloured through v = clip(act / p99(|act|), -1, 1): white at 0,
red towards +1, blue towards -1.

    from gatescope.inspect import units as iu
    from gatescope.viz import units as vu
    a, b = iu.excerpt(text, feature, lines=24)
    vu.render_png("cell.png", text[a:b], act[a:b], "in_string: layer 0 c[3]")
    page = vu.units_page([vu.render_html(text[a:b], act[a:b], "in_string")], "cells")
    vu.render_saturation_png("saturation.png", iu.gate_saturation(gates))
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .page import html_page

__all__ = ["render_html", "render_png", "render_saturation_png", "units_page"]

_PAGE_STYLE = "body{font-family:sans-serif;max-width:1100px}"


def _colour_scale(act: np.ndarray) -> np.ndarray:
    """Activations -> [-1, 1]: divided by their 99th-percentile magnitude, clipped."""
    a = np.asarray(act, np.float64)
    scale = float(np.percentile(np.abs(a), 99)) if a.size else 1.0
    return np.clip(a / (scale if scale > 0 else 1.0), -1.0, 1.0)


def _rgb(v: np.ndarray) -> np.ndarray:
    """[-1, 1] -> RGB in [0, 1]: blue for negative, white at 0, red for positive."""
    v = np.asarray(v, np.float64)[..., None]
    red, blue, white = np.array([0.84, 0.19, 0.15]), np.array([0.19, 0.36, 0.80]), np.ones(3)
    return np.where(v >= 0, white + v * (red - white), white - v * (blue - white))


def render_html(text: str, act: np.ndarray, title: str = "") -> str:
    """An HTML fragment: `text` in a monospace block, each character's background coloured
    by `act` (N,) (red positive, blue negative, scaled by the 99th percentile of |act|).

    N = len(text); each character's exact value is its hover title. ``title`` (escaped)
    becomes an <h3> above the block.
    """
    if len(text) != len(act):
        raise ValueError(f"act must have one value per character ({len(text)}), got {len(act)}")
    colours = (_rgb(_colour_scale(act)) * 255).round().astype(int)
    spans = []
    for ch, (r, g, b), a in zip(text, colours, np.asarray(act, np.float64)):
        shown = html.escape(ch) if ch != "\n" else " \n"
        spans.append(f'<span style="background:rgb({r},{g},{b})" title="{a:.3f}">{shown}</span>')
    head = f"<h3>{html.escape(title)}</h3>\n" if title else ""
    return f'{head}<pre style="font:13px/1.35 monospace">{"".join(spans)}</pre>\n'


def units_page(sections: Sequence[str], title: str) -> str:
    """A whole HTML page: ``title`` as its heading, then the fragments of `render_html`."""
    body = f"<h1>{html.escape(title)}</h1>\n" + "".join(sections)
    return html_page(title, body, style=_PAGE_STYLE)


def render_png(
    path: str,
    text: str,
    act: np.ndarray,
    title: str = "",
    max_cols: int = 88,
    dpi: int = 110,
) -> None:
    """A Karpathy-style picture of `text` (keep it to a few dozen lines) coloured by `act`.

    act (N,), N = len(text), on the colour scale of `render_html`; one character cell per
    character, lines cut at ``max_cols``, tabs to the next multiple of 8. Writes a PNG.
    """
    from matplotlib.figure import Figure

    if len(text) != len(act):
        raise ValueError(f"act must have one value per character ({len(text)}), got {len(act)}")
    v = _colour_scale(act)
    rows: list[list[tuple[str, float]]] = [[]]
    for ch, a in zip(text, v):
        if ch == "\n":
            rows.append([])
        elif ch == "\t":
            rows[-1].extend([(" ", a)] * (8 - len(rows[-1]) % 8))
        else:
            rows[-1].append((ch if ch.isprintable() else "?", a))
    if rows and not rows[-1]:
        rows.pop()
    rows = [r[:max_cols] for r in rows]
    n_cols = max(max((len(r) for r in rows), default=1), 20)
    grid = np.ones((len(rows), n_cols, 3))
    for y, row in enumerate(rows):
        for x, (_, a) in enumerate(row):
            grid[y, x] = _rgb(a)
    font = 8.5  # points; DejaVu Sans Mono (shipped with matplotlib) advances 0.602 em a char
    cw, ch_h = 0.602 * font / 72, 0.17  # inches per character cell
    top = 0.35 if title else 0.05
    W, Hh = n_cols * cw + 0.1, len(rows) * ch_h + top + 0.05  # figure size, inches
    fig = Figure(figsize=(W, Hh), dpi=dpi)
    ax = fig.add_axes((0.05 / W, 0.05 / Hh, n_cols * cw / W, len(rows) * ch_h / Hh))
    ax.imshow(grid, aspect="auto", interpolation="nearest", extent=(0, n_cols, len(rows), 0))
    for y, row in enumerate(rows):  # one text per line: the cells are the font's advance
        line = "".join(c for c, _ in row).rstrip()
        if line:
            ax.text(0, y + 0.55, line, ha="left", va="center", family="DejaVu Sans Mono",
                    fontsize=font)  # fmt: skip
    ax.set_axis_off()
    if title:
        fig.suptitle(title, x=0.01, ha="left", y=1 - 0.05 / Hh, va="top", fontsize=9)
    fig.savefig(path, dpi=dpi)


def render_saturation_png(path: str, saturation: Sequence[Mapping[str, Any]]) -> None:
    """Karpathy et al.'s figure 3: per unit, fraction of time right- vs left-saturated.

    ``saturation``: the rows of `gatescope.inspect.units.gate_saturation`; one panel per
    layer, one dot per (gate, unit) at (per_unit_below[j], per_unit_above[j]). Writes a PNG.
    """
    from matplotlib.figure import Figure

    layers = sorted({row["layer"] for row in saturation})
    if not layers:
        raise ValueError("no gates to plot (a vanilla RNN has none)")
    fig = Figure(figsize=(3.2 * len(layers), 3.2), dpi=110)
    markers = {"i": "o", "f": "s", "o": "^", "r": "o", "z": "s"}
    for k, layer in enumerate(layers):
        ax = fig.add_subplot(1, len(layers), k + 1)
        for row in (r for r in saturation if r["layer"] == layer):
            ax.scatter(
                row["per_unit_below"],
                row["per_unit_above"],
                s=8,
                alpha=0.6,
                marker=markers.get(row["gate"], "o"),
                label=f"{row['gate']} gate",
            )
        ax.plot([0, 1], [1, 0], color="0.8", lw=0.8)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"layer {layer}", fontsize=9)
        ax.set_xlabel("fraction of time < 0.1", fontsize=8)
        if k == 0:
            ax.set_ylabel("fraction of time > 0.9", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
