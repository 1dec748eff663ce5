"""The one progress bar of gatescope: rich, on stderr, shown only when stderr is a terminal.

    with Progress("train", total=4000, start=0) as bar:          # a total of steps
        bar.update(step, info="loss 0.31")
        bar.print("step 100: ...")                               # a line above the bar
    with Progress("charlm", total=300.0, unit="seconds") as bar:  # a total of seconds
        bar.update(seconds_so_far, info="step 120")

Training (`gatescope.train.fit`), sweeps and the demo's stages all draw through it. When it
is disabled (or stderr is not a terminal) every method does nothing, except ``print``,
which hands the line to ``fallback`` (if given).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["UNITS", "Progress"]

UNITS = ("steps", "seconds")


class Progress:
    """A bar over ``total`` steps (counted from ``start``) or ``total`` seconds.

    ``info``: a text column updated with each ``update``; with ``unit="steps"`` a steps/s
    column too. ``transient``: the bar disappears when the block ends. ``enabled=False`` or a
    stderr that is not a terminal: nothing is drawn.
    """

    def __init__(
        self,
        label: str,
        total: float,
        *,
        start: float = 0,
        unit: str = "steps",
        enabled: bool = True,
        transient: bool = False,
        fallback: Callable[[str], None] | None = None,
    ) -> None:
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
        self.label, self.unit, self.fallback, self.total = label, unit, fallback, total
        self.enabled = bool(enabled) and sys.stderr.isatty()
        self._progress: Any = None
        self._t0, self._start = time.perf_counter(), start
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        count = MofNCompleteColumn() if unit == "steps" else TextColumn("{task.percentage:>3.0f}%")
        self._progress = RichProgress(
            TextColumn("[bold]{task.fields[label]}"),
            BarColumn(),
            count,
            TextColumn("{task.fields[info]}"),
            TextColumn("{task.fields[speed]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=transient,
        )
        self._task = self._progress.add_task(
            label, total=max(total, 1e-9), completed=start, label=label, info="", speed=""
        )

    def __enter__(self) -> Progress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(
        self,
        completed: float | None = None,
        *,
        advance: float = 0,
        info: str | None = None,
        label: str | None = None,
    ) -> None:
        """Move the bar to ``completed`` (or by ``advance``); replace the info text/label."""
        if self._progress is None:
            return
        kw: dict[str, Any] = {}
        if completed is not None:
            kw["completed"] = completed
            if self.unit == "steps":
                elapsed = time.perf_counter() - self._t0
                rate = (completed - self._start) / elapsed if elapsed > 0 else 0.0
                kw["speed"] = f"{rate:.1f} steps/s" if elapsed > 0 else ""
        if advance:
            kw["advance"] = advance
        if info is not None:
            kw["info"] = info
        if label is not None:
            kw["label"] = label
        self._progress.update(self._task, **kw)

    def print(self, line: str, *, markup: bool = False) -> None:
        """A line above the bar; without a bar, to ``fallback``."""
        if self._progress is not None:
            self._progress.console.print(line, markup=markup, highlight=False)
        elif self.fallback is not None:
            self.fallback(line)

    def pause(self) -> Any:
        """A context in which another live display may draw (rich allows one at a time)."""
        return _Paused(self._progress)


class _Paused:
    def __init__(self, progress: Any) -> None:
        self._progress = progress

    def __enter__(self) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.start()
