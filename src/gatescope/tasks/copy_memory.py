"""The copy-memory task of Arjovsky, Shah & Bengio 2016 (after Hochreiter & Schmidhuber 1997).

With T = `length` (the delay), N = `n_copy` (10) and K = `n_symbols` (8), every sequence has
T + 2N steps, as categories one-hot encoded over K + 2 input units (0 blank, 1..K symbols,
K + 1 delimiter):

    step   0 .. N-1        N .. N+T-2    N+T-1        N+T .. T+2N-1
    x      K symbols 1..K  blanks (0)    delimiter    blanks (0)
    y      blank (0)       blank (0)     blank (0)    the N symbols, in order

The targets are classes 0..K (blank and the K symbols; the delimiter is never a target), so
`output_size` is K + 1 = 9. With the paper's defaults the sequence is T + 20 steps long.

Loss and metric: the paper's, cross-entropy per step averaged over *all* T + 2N steps, so the
mask covers every step (a model must also learn to emit blanks). The memoryless baseline
predicts blank for T + N steps and a uniform guess over the K symbols for the last N:
N * log(K) / (T + 2N) = 10 log 8 / (T + 20). Solved when the cross-entropy is below 5% of that
baseline; `solved(evaluate(...))` also accepts symbol accuracy >= 0.99 on the N recall steps.
`evaluate` reports "cross_entropy", "accuracy" (symbols right on the recall steps) and
"sequence_accuracy" (sequences with all N symbols right).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from gatescope.nn.checks import Seed, as_generator
from gatescope.tasks.base import (
    Batch,
    Task,
    check_batch_size,
    check_int,
    classification_metrics,
)


@dataclass(frozen=True)
class CopyTask(Task):
    """Reproduce N symbols after a delay of T steps, on the cue of a delimiter."""

    name: ClassVar[str] = "copy"
    kind: ClassVar[str] = "classify_steps"
    metric_name: ClassVar[str] = "cross_entropy"
    higher_is_better: ClassVar[bool] = False
    SOLVED_FRACTION: ClassVar[float] = 0.05  # solved below this fraction of the baseline ...
    SOLVED_ACCURACY: ClassVar[float] = 0.99  # ... or at this recall-step accuracy (dict only)

    length: int = 100  # T, the delay: blanks + delimiter between the symbols and the recall
    n_symbols: int = 8  # K, symbol categories 1..K (the paper's 8)
    n_copy: int = 10  # N, symbols to copy (the paper's 10)

    def __post_init__(self) -> None:
        check_int(self, "length", 1)
        check_int(self, "n_symbols", 2)
        check_int(self, "n_copy", 1)

    @property
    def input_size(self) -> int:
        return self.n_symbols + 2  # blank, K symbols, delimiter

    @property
    def output_size(self) -> int:
        return self.n_symbols + 1  # blank, K symbols

    @property
    def seq_len(self) -> int:
        return self.length + 2 * self.n_copy

    @property
    def delimiter(self) -> int:
        """The delimiter's category (input unit), K + 1."""
        return self.n_symbols + 1

    @property
    def delimiter_step(self) -> int:
        """The step holding the delimiter, N + T - 1."""
        return self.n_copy + self.length - 1

    @property
    def recall_steps(self) -> slice:
        """The last N steps, where the targets are the symbols."""
        return slice(self.length + self.n_copy, self.seq_len)

    @property
    def baseline(self) -> float:
        return self.n_copy * math.log(self.n_symbols) / self.seq_len

    @property
    def threshold(self) -> float:
        return self.SOLVED_FRACTION * self.baseline

    def solved(self, metric: float | Mapping[str, float]) -> bool:
        """Cross-entropy below `threshold`; given evaluate()'s dict, accuracy >= 0.99 counts too."""
        if isinstance(metric, Mapping) and "accuracy" in metric:
            if float(metric["accuracy"]) >= self.SOLVED_ACCURACY:
                return True
        return super().solved(metric)

    def make_batch(self, batch_size: int, rng: Seed) -> Batch:
        B = check_batch_size(batch_size)
        rng = as_generator(rng)
        N, T, K = self.n_copy, self.length, self.n_symbols
        symbols = rng.integers(1, K + 1, size=(B, N), dtype=np.int64)  # (B, N) in 1..K
        cats = np.zeros((B, T + 2 * N), dtype=np.int64)  # (B, T) input categories, blank = 0
        cats[:, :N] = symbols
        cats[:, self.delimiter_step] = self.delimiter
        x = np.eye(self.input_size)[cats]  # (B, T, D) one-hot
        y = np.zeros((B, T + 2 * N), dtype=np.int64)  # (B, T) blank targets ...
        y[:, self.recall_steps] = symbols  # ... except the symbols on the last N steps
        mask = np.ones((B, T + 2 * N), dtype=bool)  # (B, T) the paper's loss covers all steps
        return Batch(x=x, y=y, mask=mask)

    def _evaluate(self, out: np.ndarray, batch: Batch) -> dict[str, float]:
        correct, nll = classification_metrics(out, batch.y)  # (B, T), (B, T)
        mask = batch.mask if batch.mask is not None else np.ones(batch.y.shape, dtype=bool)
        n = max(int(mask.sum()), 1)
        recall = correct[:, self.recall_steps]  # (B, N)
        return {
            "cross_entropy": float(np.where(mask, nll, 0.0).sum() / n),
            "accuracy": float(recall.mean()),
            "sequence_accuracy": float(recall.all(axis=1).mean()),
        }
