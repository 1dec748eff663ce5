"""The capacity curve of a sweep: how often each architecture solves a task, against length.

    from gatescope.inspect.capacity import capacity_curve
    from gatescope.sweep import read_results
    from gatescope.viz.capacity import plot_capacity
    fig = plot_capacity(capacity_curve(read_results("runs/recall").latest.values()))
    fig.savefig("capacity.png")

Two panels share the length axis: the success rate (solved runs over all runs, failed runs
counting as not solved) and the final metric, its mean over seeds as a line, the range over
seeds as a band and every seed as a dot, with the task's chance level and solved threshold.
Uses matplotlib's object API (no pyplot), so it needs no display and no global state.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from gatescope.inspect.capacity import CurvePoint

from .style import ARCH_COLORS

__all__ = ["ARCH_COLORS", "plot_capacity", "save_capacity"]

# one colour per architecture in every gatescope figure (`style`); other lines cycle these
_OTHER_COLORS = ("#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#17becf", "#bcbd22")
_STYLES = ("-", "--", ":", "-.")


_MARKERS = {"lstm": "o", "gru": "s", "rnn": "^"}
_ARCH_ORDER = ("lstm", "gru", "rnn")


def _line_styles(lines: Sequence[str], archs: dict[str, str]) -> dict[str, tuple[str, str, str]]:
    """line -> (colour, linestyle, marker): colour and marker follow the arch, the style its
    variant (the second line of an arch is dashed, ...)."""
    styles: dict[str, tuple[str, str, str]] = {}
    per_arch: dict[str, int] = {}
    other = 0
    for line in lines:
        arch = archs[line]
        if arch in ARCH_COLORS:
            colour = ARCH_COLORS[arch]
        else:
            colour = _OTHER_COLORS[other % len(_OTHER_COLORS)]
            other += 1
        k = per_arch.get(arch, 0)
        per_arch[arch] = k + 1
        styles[line] = (colour, _STYLES[k % len(_STYLES)], _MARKERS.get(arch, "D"))
    return styles


def _line_order(points: Sequence[CurvePoint]) -> list[str]:
    """Lines in the order lstm, gru, rnn, then any other arch, each arch's lines by label."""
    rank = {a: i for i, a in enumerate(_ARCH_ORDER)}
    first = {p.line: p.arch for p in points}
    return sorted(first, key=lambda line: (rank.get(first[line], len(rank)), first[line], line))


def plot_capacity(points: Sequence[CurvePoint], title: str | None = None) -> Figure:
    """The two-panel capacity figure of `points` (from `gatescope.inspect.capacity_curve`).

    Left: success rate solved / runs against length, one line per `CurvePoint.line`; right:
    the final metric, mean over seeds as a line, min..max as a band, every seed as a dot,
    with the chance level (baseline) and the solved threshold when the rows record them.
    Returns the Figure (two axes; log length axis when the lengths span a factor of 8).
    """
    if not points:
        raise ValueError("no runs to plot: the sweep has no results yet")
    lines = _line_order(points)
    styles = _line_styles(lines, {p.line: p.arch for p in points})
    lengths = sorted({p.length for p in points})
    metric_name = next((p.metric_name for p in points if p.metric_name), None)

    fig = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    ax_rate, ax_metric = fig.subplots(1, 2, sharex=True)
    for i, line in enumerate(lines):
        pts = sorted((p for p in points if p.line == line), key=lambda p: p.length)
        colour, ls, marker = styles[line]
        x = np.array([p.length for p in pts], dtype=np.float64)  # (L,)
        rate = np.array([p.success_rate for p in pts])  # (L,)
        dodge = 1.0 + 0.025 * (i - (len(lines) - 1) / 2)  # equal rates stay visible side by side
        ax_rate.plot(x * dodge, rate, color=colour, linestyle=ls, marker=marker, label=line)
        mean = np.array([p.metric_mean for p in pts])  # (L,) NaN where no run finished
        lo = np.array([p.metric_min for p in pts])
        hi = np.array([p.metric_max for p in pts])
        ax_metric.fill_between(x, lo, hi, color=colour, alpha=0.15, linewidth=0)
        ax_metric.plot(x, mean, color=colour, linestyle=ls, marker=marker, label=line)
        for p in pts:  # every seed as a dot, nudged sideways so equal values stay visible
            values = [m for m in p.metrics if m is not None]
            if values:
                jitter = 1.0 + 0.03 * (np.arange(len(values)) - (len(values) - 1) / 2)
                ax_metric.scatter(
                    p.length * jitter, values, s=10, color=colour, alpha=0.6, linewidths=0
                )

    baseline = next((p.baseline for p in points if p.baseline is not None), None)
    threshold = next((p.threshold for p in points if p.threshold is not None), None)
    if baseline is not None:
        ax_metric.axhline(baseline, color="0.4", linestyle="--", linewidth=1, label="chance")
    if threshold is not None:
        ax_metric.axhline(threshold, color="0.4", linestyle=":", linewidth=1, label="solved")

    log_x = len(lengths) > 1 and lengths[-1] / max(lengths[0], 1) >= 8
    for ax in (ax_rate, ax_metric):
        if log_x:
            ax.set_xscale("log")
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.minorticks_off()
        ax.set_xlabel("sequence length")
        ax.grid(True, alpha=0.3)
    ax_rate.set_ylim(-0.03, 1.03)
    seeds = max(p.runs for p in points)
    ax_rate.set_ylabel(f"success rate ({seeds} seed{'s' if seeds != 1 else ''})")
    ax_rate.set_title("runs that solve the task")
    ax_metric.set_ylabel(f"final {metric_name or 'metric'}")
    ax_metric.set_title(f"final {metric_name or 'metric'}: mean, range and seeds")
    ax_rate.legend(loc="best", fontsize="small")
    ax_metric.legend(loc="best", fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def save_capacity(
    points: Sequence[CurvePoint], path: str | os.PathLike[str], title: str | None = None
) -> None:
    """Write the capacity figure to `path` (format from its suffix: .png, .svg, .pdf)."""
    fig = plot_capacity(points, title=title)
    fig.savefig(os.fspath(path))
