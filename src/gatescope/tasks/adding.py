"""The adding problem (Hochreiter & Schmidhuber 1997) in the form of Le et al. 2015 and
Arjovsky et al. 2016.

Input (B, T, 2): channel 0 holds values drawn uniformly from [0, 1); channel 1 holds markers,
exactly two 1s per sequence (0 elsewhere): one at a uniform position in the first half
[0, T//2), one at a uniform position in the second half [T//2, T). The target is the sum of the
two marked values, predicted from the last step.

Metric: mean squared error. Baseline: always predicting 1 (the mean of the target) gives
MSE = Var(u1 + u2) = 2 * (1/12) = 1/6 = 0.1667 (the papers' "0.167"). Solved at MSE < 0.01.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from gatescope.nn.checks import Seed, as_generator
from gatescope.tasks.base import Batch, Task, check_batch_size, check_int


@dataclass(frozen=True)
class AddingTask(Task):
    """Sum the two marked values of a sequence of uniform numbers."""

    name: ClassVar[str] = "adding"
    kind: ClassVar[str] = "regress_last"
    metric_name: ClassVar[str] = "mse"
    higher_is_better: ClassVar[bool] = False
    SOLVED_MSE: ClassVar[float] = 0.01

    length: int = 100  # T, steps per sequence (the papers use 100 .. 750); at least 2

    def __post_init__(self) -> None:
        check_int(self, "length", 2)

    @property
    def input_size(self) -> int:
        return 2

    @property
    def output_size(self) -> int:
        return 1

    @property
    def seq_len(self) -> int:
        return self.length

    @property
    def baseline(self) -> float:
        return 1.0 / 6.0  # MSE of always predicting 1

    @property
    def threshold(self) -> float:
        return self.SOLVED_MSE

    def make_batch(self, batch_size: int, rng: Seed) -> Batch:
        B = check_batch_size(batch_size)
        rng = as_generator(rng)
        T = self.length
        half = T // 2
        values = rng.uniform(0.0, 1.0, size=(B, T))  # (B, T)
        first = rng.integers(0, half, size=B)  # (B,) marker position in [0, T//2)
        second = rng.integers(half, T, size=B)  # (B,) marker position in [T//2, T)
        rows = np.arange(B)
        markers = np.zeros((B, T))  # (B, T)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        x = np.stack([values, markers], axis=-1)  # (B, T, 2)
        y = (values[rows, first] + values[rows, second])[:, None]  # (B, 1)
        return Batch(x=x, y=y, mask=None)

    def _evaluate(self, out: np.ndarray, batch: Batch) -> dict[str, float]:
        err = out - batch.y  # (B, 1)
        return {"mse": float(np.mean(err**2)), "mae": float(np.mean(np.abs(err)))}
