"""Recall: remember the first symbol of a noisy sequence (the seed notebook's task).

Step 0 is a one-hot symbol out of `n_symbols`; steps 1..T-1 are Gaussian noise N(0, noise_std^2)
in every input unit; the target is the symbol of step 0, read from the last step. The noise is
independent of the target, so the model must hold the symbol for T-1 steps while ignoring inputs
as large as the symbol itself (noise_std=1 puts them on the one-hot's scale).

The seed's generator (`generate_long_term_dependency_data`) has garbled constants (a noise scale
of 9.4, one-hot and target scales of 2, length+2 noise steps); this follows its intent: one
one-hot step, then noise, total length `length`, target = the first symbol.

Metric: accuracy; chance 1/n_symbols; solved at accuracy >= 0.99.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from gatescope.nn.checks import Seed, as_generator
from gatescope.tasks.base import (
    Batch,
    Task,
    check_batch_size,
    check_float,
    check_int,
    classification_metrics,
)


@dataclass(frozen=True)
class RecallTask(Task):
    """Remember the one-hot symbol of step 0 through `length - 1` steps of Gaussian noise."""

    name: ClassVar[str] = "recall"
    kind: ClassVar[str] = "classify_last"
    metric_name: ClassVar[str] = "accuracy"
    higher_is_better: ClassVar[bool] = True
    SOLVED_ACCURACY: ClassVar[float] = 0.99

    length: int = 20  # T, total steps including the symbol step (the seed's seq_length=20)
    n_symbols: int = 8  # D = C, symbols to choose from; chance accuracy is 1/n_symbols
    noise_std: float = 1.0  # standard deviation of the noise on steps 1..T-1

    def __post_init__(self) -> None:
        check_int(self, "length", 1)
        check_int(self, "n_symbols", 2)
        check_float(self, "noise_std", 0.0)

    @property
    def input_size(self) -> int:
        return self.n_symbols

    @property
    def output_size(self) -> int:
        return self.n_symbols

    @property
    def seq_len(self) -> int:
        return self.length

    @property
    def baseline(self) -> float:
        return 1.0 / self.n_symbols

    @property
    def threshold(self) -> float:
        return self.SOLVED_ACCURACY

    def make_batch(self, batch_size: int, rng: Seed) -> Batch:
        B = check_batch_size(batch_size)
        rng = as_generator(rng)
        T, D = self.length, self.n_symbols
        y = rng.integers(0, D, size=B, dtype=np.int64)  # (B,) the symbol to remember
        x = rng.standard_normal((B, T, D)) * self.noise_std  # (B, T, D) noise everywhere ...
        x[:, 0, :] = np.eye(D)[y]  # ... then step 0 := one-hot(y), (B, D)
        return Batch(x=x, y=y, mask=None)

    def _evaluate(self, out: np.ndarray, batch: Batch) -> dict[str, float]:
        correct, nll = classification_metrics(out, batch.y)  # (B,), (B,)
        return {"accuracy": float(correct.mean()), "cross_entropy": float(nll.mean())}
