"""Drawing a sequence-to-sequence model's attention (arrays from `gatescope.seq2seq`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from .figures import _figure

__all__ = ["attention_figure"]


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
    alpha = np.asarray(alpha, dtype=np.float64)
    if alpha.ndim != 2 or alpha.shape != (len(output), len(source)):
        raise ValueError(
            f"alpha must be (len(output), len(source)) = {(len(output), len(source))}, "
            f"got {alpha.shape}"
        )
    T, S = alpha.shape
    fig = _figure(min(1.0 + 0.28 * S, 11.0), min(1.2 + 0.28 * T, 8.0))
    ax = fig.subplots()
    im = ax.imshow(
        alpha, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest"
    )
    ax.set_xticks(range(S), [repr(s)[1:-1] if s != " " else "␣" for s in source], fontsize=8)
    ax.set_yticks(range(T), list(output), fontsize=8)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    fig.colorbar(im, ax=ax, pad=0.01, fraction=0.05).set_ticks([0, 0.5, 1])
    ax.set_title(title or "attention weights", fontsize=10, loc="left")
    return fig
