"""Names and colours shared by every gatescope drawing (figures, the demo page, the capacity
curve): one architecture has one display name and one colour everywhere."""

from __future__ import annotations

__all__ = ["ARCH_COLORS", "ARCH_NAMES"]

ARCH_NAMES = {"lstm": "LSTM", "gru": "GRU", "rnn": "vanilla RNN"}
ARCH_COLORS = {"lstm": "#1f77b4", "gru": "#2ca02c", "rnn": "#d62728"}
