"""Long-term-memory tasks: data generators, baselines and metrics (pure NumPy, no model code).

    from gatescope.tasks import get_task
    task = get_task("adding", 200)                    # or get_task("order", 100, relevant=3)
    batch = task.make_batch(64, np.random.default_rng(0))
    batch.x                                           # (B, T, D) float64
    metrics = task.evaluate(outputs, batch)           # dict, includes task.metric_name
    task.solved(metrics), task.baseline

With the defaults (T = `length`):

| name   | kind           | x           | y              | metric        | baseline          |
|--------|----------------|-------------|----------------|---------------|-------------------|
| recall | classify_last  | (B, T, 8)   | (B,) int64     | accuracy      | 1/8               |
| adding | regress_last   | (B, T, 2)   | (B, 1) float64 | mse           | 1/6               |
| copy   | classify_steps | (B, T+20, 10) | (B, T+20) int64 | cross_entropy | 10 log 8/(T+20) |
| order  | classify_last  | (B, T, 8)   | (B,) int64     | accuracy      | 1/4 or 1/8        |

Real text is a task too (`gatescope.tasks.text.TextTask`: next-character prediction over a
corpus, read sequentially for truncated BPTT; x and y (B, T) int ids, metric bits_per_char).
It is built from a corpus, not by name, so it is not in `TASKS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from types import MappingProxyType
from typing import Any

from gatescope.tasks.adding import AddingTask
from gatescope.tasks.base import KINDS, Batch, Task
from gatescope.tasks.copy_memory import CopyTask
from gatescope.tasks.order import OrderTask
from gatescope.tasks.recall import RecallTask
from gatescope.tasks.seq2seq import SEQ2SEQ_TASKS, get_seq2seq_task
from gatescope.tasks.text import TextTask

__all__ = [
    "KINDS",
    "TASKS",
    "AddingTask",
    "Batch",
    "CopyTask",
    "OrderTask",
    "RecallTask",
    "Task",
    "TextTask",
    "get_task",
    "task_from_dict",
]

# name -> task class (read-only)
TASKS: Mapping[str, type[Task]] = MappingProxyType(
    {cls.name: cls for cls in (RecallTask, AddingTask, CopyTask, OrderTask)}
)


def get_task(name: str, length: int | None = None, **options: Any) -> Task:
    """Build the task `name` with `length` steps (None: the task's default) and its options.

    Unknown names and options, and bad values, raise ValueError.
    """
    if not isinstance(name, str) or name not in TASKS:
        raise ValueError(f"unknown task name {name!r}; expected one of: {', '.join(sorted(TASKS))}")
    cls = TASKS[name]
    allowed = [f.name for f in fields(cls) if f.name != "length"]  # type: ignore[arg-type]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for task {name!r}; "
            f"expected: {', '.join(allowed) or '(none)'}"
        )
    if length is not None:
        options["length"] = length
    return cls(**options)


def task_from_dict(d: Mapping[str, Any]) -> Task:
    """Rebuild a task from `task.to_dict()`."""
    if not isinstance(d, Mapping) or "name" not in d:
        raise ValueError(f"d must be a mapping with a 'name' key, got {d!r}")
    options = {k: v for k, v in d.items() if k != "name"}
    if d["name"] in SEQ2SEQ_TASKS:  # reverse, addition, dates (gatescope.tasks.seq2seq)
        return get_seq2seq_task(d["name"], **options)
    return get_task(d["name"], **options)
