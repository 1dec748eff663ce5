"""Shared pieces of the tasks: the `Batch` container, the `Task` base class and metric helpers.

Shape legend: B batch, T time (steps of `x`), D input size, C classes (`task.output_size`).

A task is a frozen dataclass (its configuration, one field per knob) that also generates data
and scores model outputs:

    batch = task.make_batch(batch_size, rng)   # rng: np.random.Generator (or an int seed)
    metrics = task.evaluate(outputs, batch)    # dict name -> float, includes task.metric_name
    task.solved(metrics)                       # or task.solved(metrics[task.metric_name])

The three kinds of task (`task.kind`):

- "classify_last": one class per sequence, read from the last step. `y` int64 (B,), `mask` None;
  outputs are logits (B, C), or (B, T, C) of which only the last step is used.
- "regress_last": one real value per sequence from the last step. `y` float64 (B, 1), `mask`
  None; outputs are predictions (B, 1), or (B, T, 1) of which only the last step is used.
- "classify_steps": one class per step. `y` int64 (B, T), `mask` bool (B, T) marks the steps
  that count; outputs are logits (B, T, C).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from gatescope.nn.checks import Seed, check_positive_int
from gatescope.nn.functional import log_softmax

KINDS = ("classify_last", "regress_last", "classify_steps")


@dataclass(frozen=True, eq=False)
class Batch:
    """One batch of a task: inputs, targets and (for per-step tasks) the loss mask."""

    x: np.ndarray  # (B, T, D) float64 inputs, batch first; or (B, T) int ids (text)
    y: np.ndarray  # int64 labels (B,) or (B, T), or float64 regression targets (B, 1)
    mask: np.ndarray | None = None  # (B, T) bool: steps whose labels count; None: all of them

    def __post_init__(self) -> None:
        ids = isinstance(self.x, np.ndarray) and self.x.ndim == 2 and self.x.dtype.kind in "iu"
        if not isinstance(self.x, np.ndarray) or not (self.x.ndim == 3 or ids):
            raise ValueError(
                f"x must be a (B, T, D) ndarray or (B, T) int ids, got {_describe(self.x)}"
            )
        B, T = self.x.shape[:2]
        if not isinstance(self.y, np.ndarray) or self.y.ndim not in (1, 2) or len(self.y) != B:
            raise ValueError(
                f"y must be an ndarray of shape (B,), (B, T) or (B, 1) with B={B}, "
                f"got {_describe(self.y)}"
            )
        if self.mask is not None and (
            not isinstance(self.mask, np.ndarray)
            or self.mask.dtype != np.bool_
            or self.mask.shape != (B, T)
        ):
            raise ValueError(
                f"mask must be None or a bool ndarray ({B}, {T}), got {_describe(self.mask)}"
            )

    @property
    def batch_size(self) -> int:
        """B, the number of sequences."""
        return int(self.x.shape[0])

    @property
    def seq_len(self) -> int:
        """T, the number of steps of `x`."""
        return int(self.x.shape[1])


class Task:
    """Base class of the task configurations; subclasses are frozen dataclasses.

    Subclasses set the class attributes below and implement `input_size`, `output_size`,
    `seq_len`, `baseline`, `threshold`, `make_batch` and `_evaluate`.
    """

    name: ClassVar[str]  # registry name, e.g. "adding"
    kind: ClassVar[str]  # one of KINDS
    metric_name: ClassVar[str]  # key of evaluate()'s dict that `solved` and `baseline` refer to
    higher_is_better: ClassVar[bool]  # True for accuracies, False for losses

    length: int  # every task has a length; its meaning is documented per task

    # ----- sizes -----------------------------------------------------------------------------
    @property
    def input_size(self) -> int:
        """D, the size of each input vector."""
        raise NotImplementedError

    @property
    def output_size(self) -> int:
        """C (classes) for classify tasks, 1 for regress tasks."""
        raise NotImplementedError

    @property
    def seq_len(self) -> int:
        """T, the number of steps of the generated `x` (not always `length`: see copy)."""
        raise NotImplementedError

    # ----- scoring ---------------------------------------------------------------------------
    @property
    def baseline(self) -> float:
        """The published chance / memoryless value of `metric_name`."""
        raise NotImplementedError

    @property
    def threshold(self) -> float:
        """The value of `metric_name` at which the task counts as solved (see `solved`)."""
        raise NotImplementedError

    def solved(self, metric: float | Mapping[str, float]) -> bool:
        """True if `metric` (a value of `metric_name`, or evaluate()'s dict) reaches `threshold`.

        Accuracies are solved at `metric >= threshold`, losses at `metric < threshold`.
        """
        value = _metric_value(metric, self.metric_name)
        if self.higher_is_better:
            return bool(value >= self.threshold)
        return bool(value < self.threshold)

    def evaluate(self, outputs: Any, batch: Batch) -> dict[str, float]:
        """Score model `outputs` on `batch`; the dict always contains `metric_name`.

        Outputs: logits (B, C) or (B, T, C) for "classify_last" (last step used), predictions
        (B, 1) or (B, T, 1) for "regress_last" (last step used), logits (B, T, C) for
        "classify_steps".
        """
        if not isinstance(batch, Batch):
            raise ValueError(f"batch must be a Batch, got {type(batch).__name__}")
        out = np.asarray(outputs, dtype=np.float64)
        B, T = batch.batch_size, batch.seq_len
        C = self.output_size
        if self.kind == "classify_steps":
            if out.shape != (B, T, C):
                raise ValueError(
                    f"outputs must be logits of shape (B, T, C) = {(B, T, C)}, got {out.shape}"
                )
        else:
            if out.ndim == 3 and out.shape[:2] == (B, T):
                out = out[:, -1, :]  # (B, C): read the last step
            if out.shape != (B, C):
                what = "logits" if self.kind == "classify_last" else "predictions"
                raise ValueError(
                    f"outputs must be {what} of shape (B, C) = {(B, C)} or (B, T, C) = "
                    f"{(B, T, C)}, got {np.shape(outputs)}"
                )
        return self._evaluate(out, batch)

    def _evaluate(self, out: np.ndarray, batch: Batch) -> dict[str, float]:
        raise NotImplementedError

    def make_batch(self, batch_size: int, rng: Seed) -> Batch:
        """Draw `batch_size` sequences using `rng` (deterministic given the Generator's state)."""
        raise NotImplementedError

    # ----- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description; `gatescope.tasks.task_from_dict` rebuilds the task."""
        return {"name": self.name, **dataclasses.asdict(self)}  # type: ignore[call-overload]


# ----- helpers for subclasses ----------------------------------------------------------------


def _describe(a: object) -> str:
    if isinstance(a, np.ndarray):
        return f"ndarray shape {a.shape} dtype {a.dtype}"
    return type(a).__name__


def check_int(obj: object, field: str, minimum: int) -> None:
    """Validate the int field `field` (>= minimum) of the frozen dataclass `obj` and store it
    as a plain int (the check is `gatescope.nn.checks.check_positive_int`)."""
    object.__setattr__(obj, field, check_positive_int(field, getattr(obj, field), minimum))


def check_float(obj: object, field: str, minimum: float) -> None:
    """Validate the finite float field `field` (>= minimum), coerced to a plain float."""
    value = getattr(obj, field)
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or float(value) < minimum:
        raise ValueError(f"{field} must be a finite number >= {minimum}, got {value!r}")
    object.__setattr__(obj, field, float(value))


def check_batch_size(batch_size: object) -> int:
    return check_positive_int("batch_size", batch_size)


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-item (correct, nll) for logits (..., C) and int labels (...)."""
    logp = log_softmax(logits)  # (..., C)
    nll = -np.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]  # (...)
    correct = np.argmax(logits, axis=-1) == labels  # (...) ties resolve to the lowest class
    return correct, nll


def _metric_value(metric: float | Mapping[str, float], name: str) -> float:
    if isinstance(metric, Mapping):
        if name not in metric:
            raise ValueError(f"metric dict must contain {name!r}, got keys {sorted(metric)}")
        metric = metric[name]
    value = float(metric)
    if math.isnan(value):
        raise ValueError(f"metric must be a number, got {value}")
    return value
