"""The temporal order task of Hochreiter & Schmidhuber 1997 (experiments 6a and 6b).

Symbols, one-hot over 8 input units in this order: a, b, c, d (distractors), B (start marker),
E (end marker, the "trigger" at which the class is read), X, Y (relevant). A sequence of T steps
is B, then distractors drawn uniformly from {a, b, c, d}, then E; except that at `relevant`
(2 or 3) positions, one per window, the symbol is X or Y (each with probability 1/2). The class
is the order of the relevant symbols, read as binary with X=0, Y=1, first symbol most
significant:

    relevant=2 (6a):  XX -> 0 (Q), XY -> 1 (R), YX -> 2 (S), YY -> 3 (U)
    relevant=3 (6b):  XXX -> 0 (Q), XXY -> 1 (R), XYX -> 2 (S), XYY -> 3 (U),
                      YXX -> 4 (V), YXY -> 5 (A), YYX -> 6 (B), YYY -> 7 (C)

Windows (0-based steps, inclusive), as percentages of T rounded to the nearest step, which at
T = 100 are the paper's:

    relevant=2:  t1 in [10, 20]%, t2 in [50, 60]%
    relevant=3:  t1 in [10, 20]%, t2 in [33, 43]%, t3 in [66, 76]%

Deviation from the paper: it draws each sequence's length uniformly from 100..110; here all
sequences of a batch have the fixed length `length` (batches are dense (B, T, D) arrays).

Metric: accuracy of the argmax class at the last step; chance 1/4 (6a) or 1/8 (6b). The paper
counts a sequence as correct when every output unit is within 0.3 of its target; with softmax
outputs we use argmax accuracy and call the task solved at accuracy >= 0.99.
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
    check_int,
    classification_metrics,
)

SYMBOLS = ("a", "b", "c", "d", "B", "E", "X", "Y")  # input unit i is the one-hot of SYMBOLS[i]
DISTRACTORS = (0, 1, 2, 3)  # a, b, c, d
START, END, SYM_X, SYM_Y = 4, 5, 6, 7  # B, E, X, Y
CLASS_NAMES = {2: ("Q", "R", "S", "U"), 3: ("Q", "R", "S", "U", "V", "A", "B", "C")}
WINDOWS_PERCENT = {  # per relevant count: inclusive (low, high) windows in percent of T
    2: ((10, 20), (50, 60)),
    3: ((10, 20), (33, 43), (66, 76)),
}


def order_windows(length: int, relevant: int) -> tuple[tuple[int, int], ...] | None:
    """Inclusive step windows of the relevant symbols at this length, or None if they do not
    fit strictly between the start and end markers without overlapping."""
    windows = tuple(
        ((lo * length + 50) // 100, (hi * length + 50) // 100)
        for lo, hi in WINDOWS_PERCENT[relevant]
    )
    if windows[0][0] < 1 or windows[-1][1] > length - 2:
        return None
    if any(a[1] >= b[0] for a, b in zip(windows, windows[1:], strict=False)):
        return None
    return windows


def min_order_length(relevant: int) -> int:
    """The shortest length at which `order_windows(length, relevant)` exists."""
    length = 3
    while order_windows(length, relevant) is None:
        length += 1
    return length


@dataclass(frozen=True)
class OrderTask(Task):
    """Classify a sequence by the order of its 2 or 3 widely separated X/Y symbols."""

    name: ClassVar[str] = "order"
    kind: ClassVar[str] = "classify_last"
    metric_name: ClassVar[str] = "accuracy"
    higher_is_better: ClassVar[bool] = True
    SOLVED_ACCURACY: ClassVar[float] = 0.99

    length: int = 100  # T, steps including the B and E markers (the paper's 100..110)
    relevant: int = 2  # 2 (experiment 6a, 4 classes) or 3 (6b, 8 classes) relevant symbols

    def __post_init__(self) -> None:
        if isinstance(self.relevant, bool) or self.relevant not in (2, 3):
            raise ValueError(f"relevant must be 2 or 3, got {self.relevant!r}")
        object.__setattr__(self, "relevant", int(self.relevant))
        check_int(self, "length", min_order_length(self.relevant))

    @property
    def input_size(self) -> int:
        return len(SYMBOLS)

    @property
    def output_size(self) -> int:
        return 2**self.relevant

    @property
    def seq_len(self) -> int:
        return self.length

    @property
    def windows(self) -> tuple[tuple[int, int], ...]:
        """Inclusive step windows of the relevant symbols."""
        windows = order_windows(self.length, self.relevant)
        assert windows is not None  # guaranteed by __post_init__
        return windows

    @property
    def class_names(self) -> tuple[str, ...]:
        """The paper's class letters, indexed by label."""
        return CLASS_NAMES[self.relevant]

    @property
    def baseline(self) -> float:
        return 1.0 / self.output_size

    @property
    def threshold(self) -> float:
        return self.SOLVED_ACCURACY

    def make_batch(self, batch_size: int, rng: Seed) -> Batch:
        B = check_batch_size(batch_size)
        rng = as_generator(rng)
        T, R = self.length, self.relevant
        sym = rng.integers(0, len(DISTRACTORS), size=(B, T), dtype=np.int64)  # (B, T) a..d
        sym[:, 0] = START
        sym[:, -1] = END
        lows = np.array([lo for lo, _ in self.windows])  # (R,)
        highs = np.array([hi for _, hi in self.windows])  # (R,)
        pos = rng.integers(lows, highs + 1, size=(B, R))  # (B, R) increasing positions
        bits = rng.integers(0, 2, size=(B, R), dtype=np.int64)  # (B, R) 0 = X, 1 = Y
        sym[np.arange(B)[:, None], pos] = SYM_X + bits
        x = np.eye(len(SYMBOLS))[sym]  # (B, T, D) one-hot
        weights = 2 ** np.arange(R - 1, -1, -1, dtype=np.int64)  # (R,) first bit most significant
        y = bits @ weights  # (B,) the class
        return Batch(x=x, y=y.astype(np.int64), mask=None)

    def _evaluate(self, out: np.ndarray, batch: Batch) -> dict[str, float]:
        correct, nll = classification_metrics(out, batch.y)  # (B,), (B,)
        return {"accuracy": float(correct.mean()), "cross_entropy": float(nll.mean())}
