"""Capacity curves: how often each architecture solves a task, against sequence length.

    from gatescope.sweep import read_results
    from gatescope.inspect.capacity import capacity_curve
    points = capacity_curve(read_results("runs/recall").latest.values())
    [(p.line, p.length, p.success_rate, p.metric_mean) for p in points]

The analysis of a sweep's results rows (plain dicts, one per run, as `gatescope.sweep` records
them: ``spec``, ``status``, ``solved``, ``metric``, ``metric_name``, ``baseline``, ...); it
knows nothing of how the runs were made. `gatescope.viz.capacity` draws the points.

For one (line, length) point over its n runs, of which the ok ones have final metrics
m_1..m_s (s <= n; failed runs count as not solved):

    success_rate = solved / n          metric_mean = (1/s) sum_i m_i
    metric_std = sqrt((1/s) sum_i (m_i - metric_mean)^2)   (population, ddof 0)

No arrays beyond these per-point tuples: every quantity is a scalar per point.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CurvePoint", "capacity_curve"]


@dataclass(frozen=True)
class CurvePoint:
    """One (line, length) point of a capacity curve, over the seeds recorded for it.

    ``metrics`` and ``seeds`` are tuples of the same length, runs - failed (one entry per ok
    run, in seed order); the statistics below use the finite metrics only.
    """

    line: str  # the line's label: the arch, plus any spec field that differs between lines
    arch: str
    length: int
    runs: int  # rows (ok and failed)
    failed: int  # rows with status "error" (they count as not solved)
    solved: int  # ok rows whose run solved the task
    metric_name: str | None
    metrics: tuple[float | None, ...]  # final metric of each ok run (None: not finite)
    seeds: tuple[int, ...]  # the seed of each entry of `metrics`
    baseline: float | None
    threshold: float | None
    higher_is_better: bool | None

    @property
    def success_rate(self) -> float:
        """solved / runs: solved runs over all runs, failed runs included (NaN: no runs)."""
        return self.solved / self.runs if self.runs else float("nan")

    def _finite(self) -> np.ndarray:
        return np.array([m for m in self.metrics if m is not None], dtype=np.float64)

    @property
    def metric_mean(self) -> float:
        """(1/s) sum_i m_i over the s finite final metrics (NaN when there are none)."""
        m = self._finite()
        return float(m.mean()) if m.size else float("nan")

    @property
    def metric_std(self) -> float:
        """sqrt((1/s) sum_i (m_i - mean)^2): the population standard deviation (NaN: none)."""
        m = self._finite()
        return float(m.std()) if m.size else float("nan")

    @property
    def metric_min(self) -> float:
        """The smallest finite final metric over the seeds (NaN when there are none)."""
        m = self._finite()
        return float(m.min()) if m.size else float("nan")

    @property
    def metric_max(self) -> float:
        """The largest finite final metric over the seeds (NaN when there are none)."""
        m = self._finite()
        return float(m.max()) if m.size else float("nan")


def _flat_spec(spec: Mapping[str, Any]) -> dict[str, str]:
    """The spec's fields as "name" or "group.name" -> a canonical string of the value."""
    flat: dict[str, str] = {}
    for k, v in spec.items():
        if isinstance(v, Mapping):
            for k2, v2 in v.items():
                flat[f"{k}.{k2}"] = json.dumps(v2, sort_keys=True)
        else:
            flat[k] = json.dumps(v, sort_keys=True)
    return flat


def capacity_curve(rows: Iterable[Mapping[str, Any]]) -> list[CurvePoint]:
    """Group rows (one per run: pass ``Results.latest.values()``) into capacity-curve points.

    One line per architecture; when an architecture's rows differ in another spec field than
    length and seed (a second task, hidden size, step budget, forget bias...), each distinct
    combination is its own line, labelled with the fields that differ ("default" where a row
    does not set the field). Returns one `CurvePoint` per (line, length), sorted by line,
    then length; rows without a ``spec`` dict are skipped.
    """
    rows = [r for r in rows if isinstance(r.get("spec"), Mapping)]
    flats = [_flat_spec(r["spec"]) for r in rows]
    varying: dict[str, list[str]] = {}  # arch -> fields that differ between its rows
    for arch in {str(r["spec"]["arch"]) for r in rows}:
        mine = [f for r, f in zip(rows, flats) if str(r["spec"]["arch"]) == arch]
        keys = sorted({k for f in mine for k in f} - {"arch", "length", "seed"})
        varying[arch] = [k for k in keys if len({f.get(k) for f in mine}) > 1]
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for row, flat in zip(rows, flats):
        arch = str(row["spec"]["arch"])
        extra = ", ".join(
            f"{k.split('.', 1)[-1]}={json.loads(flat[k]) if k in flat else 'default'}"
            for k in varying[arch]
        )
        line = f"{arch} ({extra})" if extra else arch
        groups.setdefault((line, int(row["spec"]["length"])), []).append(row)
    points = []
    for (line, length), group in sorted(groups.items()):
        group = sorted(group, key=lambda r: r["spec"]["seed"])
        ok = [r for r in group if r.get("status") == "ok"]
        first = ok[0] if ok else {}
        points.append(
            CurvePoint(
                line=line,
                arch=str(group[0]["spec"]["arch"]),
                length=length,
                runs=len(group),
                failed=len(group) - len(ok),
                solved=sum(bool(r.get("solved")) for r in ok),
                metric_name=first.get("metric_name"),
                metrics=tuple(r.get("metric") for r in ok),
                seeds=tuple(int(r["spec"]["seed"]) for r in ok),
                baseline=first.get("baseline"),
                threshold=first.get("threshold"),
                higher_is_better=first.get("higher_is_better"),
            )
        )
    return points
