"""Drawing a sequence-to-sequence model's attention (arrays from `gatescope.seq2seq` and
`gatescope.inspect.seq2seq`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from .figures import _figure

__all__ = [
    "accuracy_by_length_figure",
    "attention_figure",
    "attention_grid_figure",
    "connectivity_figure",
]


def _source_labels(source: Sequence[str]) -> list[str]:
    return [repr(s)[1:-1] if s != " " else "␣" for s in source]


def _check_alpha(alpha: np.ndarray, source: Sequence[str], output: Sequence[str]) -> np.ndarray:
    alpha = np.asarray(alpha, dtype=np.float64)
    if alpha.ndim != 2 or alpha.shape != (len(output), len(source)):
        raise ValueError(
            f"alpha must be (len(output), len(source)) = {(len(output), len(source))}, "
            f"got {alpha.shape}"
        )
    return alpha


def _draw_attention(ax: Axes, alpha: np.ndarray, source: Sequence[str], output: Sequence[str]):
    """One heatmap of alpha (T, S) on ax, rows labelled by output, columns by source."""
    T, S = alpha.shape
    im = ax.imshow(
        alpha, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest"
    )
    ax.set_xticks(range(S), _source_labels(source), fontsize=8)
    ax.set_yticks(range(T), list(output), fontsize=8)
    return im


def attention_figure(
    alpha: np.ndarray,
    source: Sequence[str],
    output: Sequence[str],
    *,
    title: str | None = None,
) -> Figure:
    """Attention weights alpha (T, S) of one decode as a heatmap: one row per output token
    (``output``, T labels, EOS included if decoded), one column per source token (S labels).
    Rows sum to 1; the scale is fixed at 0..1."""
    alpha = _check_alpha(alpha, source, output)
    T, S = alpha.shape
    fig = _figure(min(1.0 + 0.28 * S, 11.0), min(1.2 + 0.28 * T, 8.0))
    ax = fig.subplots()
    im = _draw_attention(ax, alpha, source, output)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    fig.colorbar(im, ax=ax, pad=0.01, fraction=0.05).set_ticks([0, 0.5, 1])
    ax.set_title(title or "attention weights", fontsize=10, loc="left")
    return fig


def attention_grid_figure(
    alphas: Sequence[np.ndarray],
    sources: Sequence[Sequence[str]],
    outputs: Sequence[Sequence[str]],
    *,
    titles: Sequence[str] | None = None,
    ncols: int | None = None,
    title: str | None = None,
) -> Figure:
    """Several decodes' attention weights side by side: panel k is alphas[k] (T_k, S_k) with
    rows labelled by outputs[k] and columns by sources[k], as `attention_figure` draws one;
    one shared 0..1 colour scale. ``ncols`` panels a row (default: up to 3)."""
    n = len(alphas)
    if n == 0 or len(sources) != n or len(outputs) != n:
        raise ValueError(
            f"alphas, sources and outputs must be non-empty lists of one length, got "
            f"{n}, {len(sources)}, {len(outputs)}"
        )
    if titles is not None and len(titles) != n:
        raise ValueError(f"titles must have {n} entries, got {len(titles)}")
    checked = [_check_alpha(a, s, o) for a, s, o in zip(alphas, sources, outputs, strict=True)]
    ncols = min(n, 3) if ncols is None else ncols
    if not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be a positive int, got {ncols!r}")
    nrows = -(-n // ncols)
    S = max(a.shape[1] for a in checked)
    T = max(a.shape[0] for a in checked)
    width = min(0.6 + ncols * (0.8 + 0.22 * S), 18.0)
    height = min(0.6 + nrows * (1.0 + 0.22 * T), 14.0)
    fig = _figure(width, height)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    im = None
    for k, ax in enumerate(axes):
        if k >= n:
            ax.set_axis_off()
            continue
        im = _draw_attention(ax, checked[k], sources[k], outputs[k])
        if titles is not None:
            ax.set_title(titles[k], fontsize=9, loc="left")
        if k % ncols == 0:
            ax.set_ylabel("output")
        if k >= n - ncols:
            ax.set_xlabel("source")
    fig.colorbar(im, ax=list(axes[:n]), pad=0.01, fraction=0.03).set_ticks([0, 0.5, 1])
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# ------------------------------------------------------------------------------ connectivity


def connectivity_figure(
    conn: np.ndarray | Mapping[str, np.ndarray],
    source: Sequence[str],
    output: Sequence[str],
    *,
    title: str | None = None,
    floor: float = 1e-4,
) -> Figure:
    """Measured connectivity ||d logit_t / d e_s|| (T, S) as a heatmap on a log scale: one row
    per output token (``output``, T labels), one column per source token (S labels), as
    `gatescope.inspect.seq2seq.connectivity` returns it for one example (or a mean).

    ``conn``: one (T, S) array, or {panel title: (T, S) array} drawn side by side on one
    shared colour scale (from ``floor`` times the largest entry to the largest; exact zeros,
    such as PAD, sit at the bottom of the scale)."""
    panels = dict(conn) if isinstance(conn, Mapping) else {"": conn}
    if not panels:
        raise ValueError("conn must hold at least one (T, S) array")
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in panels.items()}
    want = (len(output), len(source))
    for k, a in arrays.items():
        if a.shape != want:
            raise ValueError(
                f"conn {k!r} must be (len(output), len(source)) = {want}, got {a.shape}"
            )
        if not np.isfinite(a).all() or (a < 0).any():
            raise ValueError(f"conn {k!r} must hold finite norms >= 0")
    if not 0 < floor < 1:
        raise ValueError(f"floor must lie in (0, 1), got {floor!r}")
    T, S = want
    top = max(float(a.max()) for a in arrays.values()) or 1.0
    norm = LogNorm(vmin=top * floor, vmax=top)
    n = len(arrays)
    fig = _figure(min(1.4 + 0.26 * S, 9.0) * n + 0.8, min(1.4 + 0.26 * T, 7.0))
    axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)[0])
    im = None
    for ax, (name, a) in zip(axes, arrays.items(), strict=True):
        im = ax.imshow(
            np.maximum(a, top * floor),
            cmap="magma",
            norm=norm,
            aspect="auto",
            interpolation="nearest",
        )
        ax.set_xticks(range(S), _source_labels(source), fontsize=7)
        ax.set_yticks(range(T), list(output), fontsize=7)
        ax.set_xlabel("source position")
        if ax is axes[0]:
            ax.set_ylabel("output step")
        if name:
            ax.set_title(name, fontsize=10, loc="left")
    cb = fig.colorbar(im, ax=list(axes), pad=0.01, fraction=0.04)
    cb.set_label("||d logit / d source embedding||", fontsize=8)
    fig.suptitle(title or "measured connectivity", fontsize=11, x=0.01, ha="left")
    return fig


def accuracy_by_length_figure(
    curves: Mapping[str, tuple[Sequence[int], Sequence[float]]],
    *,
    trained: tuple[int, int] | None = None,
    title: str | None = None,
) -> Figure:
    """Exact match against source length, one line per model: ``curves`` {label: (lengths,
    exact matches)}. ``trained``: (shortest, longest) length seen in training, shaded."""
    if not curves:
        raise ValueError("curves must hold at least one (lengths, accuracies) pair")
    fig = _figure(7.5, 4.0)
    ax = fig.subplots()
    if trained is not None:
        ax.axvspan(trained[0] - 0.5, trained[1] + 0.5, color="#eeeeee", zorder=0)
        ax.text(trained[0], 1.02, "lengths seen in training", fontsize=8, color="#555555")
    for label, (lengths, acc) in curves.items():
        if len(lengths) != len(acc):
            raise ValueError(f"curves[{label!r}]: lengths and accuracies differ in size")
        ax.plot(list(lengths), list(acc), marker=".", lw=1.6, label=label)
    ax.set_ylim(-0.02, 1.08)
    ax.set_xlabel("source length (symbols)")
    ax.set_ylabel("exact match (held-out)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9, loc="lower left")
    ax.set_title(title or "exact match against length", fontsize=11, loc="left")
    return fig
