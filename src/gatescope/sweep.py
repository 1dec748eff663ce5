"""Sweeps: many small training runs over architectures, lengths and seeds, and their results.

    specs = make_grid("recall", archs=["lstm", "gru", "rnn"], lengths=[10, 25, 50], seeds=3,
                      hidden_size=32, train={"steps": 2000, "lr": 1e-2})
    summary = run_sweep(specs, "runs/recall")                 # local processes
    summary = run_sweep(specs, "runs/recall", executor="dask",
                        scheduler="tcp://10.0.0.5:8786")      # a Dask cluster
    rows = read_results("runs/recall").latest.values()        # gatescope.inspect.capacity_curve(rows)

A run is one :class:`RunSpec` (task, architecture, length, seed and every model and training
option), trained by :func:`gatescope.train.fit` in a worker process. It is deterministic: the seed
fixes the initial weights and the training batches, the held-out set (``eval_seed``) and the
final test set (``evaluate_model``'s) are the same for every run of a length, so the same
spec gives the same row on any worker with the same code and numerical libraries. Its id (:attr:`RunSpec.run_id`) is a hash
of the spec, so a sweep re-run in the same directory skips the runs already recorded there.

The results file, ``DIR/results.jsonl``, holds one JSON object per line, one line per finished
run (see :func:`run_one` for the fields), in the order the runs finished. Only the process that
drives the sweep writes it: each row is appended with a single ``write`` and then ``fsync``'d.
Appending (rather than rewriting the file and renaming it over the old one) keeps each row
O(1) however long the sweep, and a second writer can never silently erase rows the way a rename
would. The price is that a crash can tear the *last* line: a line without its final newline is
ignored by the reader and cut off by the writer before it appends the next row, so every row in
the file is either whole or absent. An advisory lock (``DIR/.lock``) keeps two sweeps from
writing to one directory at once.

A run that raises is recorded with ``"status": "error"`` and its error, and the sweep goes on;
a re-run skips it unless ``retry_failed=True``. The last row for an id wins.

Dask is optional (``pip install 'gatescope[dask]'``); it is imported only by the dask executor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from gatescope.nn.checks import check_positive_int
from gatescope.progress import Progress
from gatescope.threads import limit_blas_threads

__all__ = [
    "EXECUTORS",
    "RESULTS_FILE",
    "TIMING_FIELDS",
    "ResultsFile",
    "Results",
    "RunSpec",
    "SweepError",
    "SweepSummary",
    "make_grid",
    "read_results",
    "run_one",
    "run_sweep",
]

RESULTS_FILE = "results.jsonl"  # the results file inside a sweep directory
LOCK_FILE = ".lock"  # advisory lock held by the process writing the results file
SPEC_VERSION = 1  # part of every run id: bump it when a spec's meaning changes
EXECUTORS = ("local", "dask", "serial")  # serial: in this process, one run at a time
# row fields that depend on when and where a run ran, not on its spec
TIMING_FIELDS = ("seconds", "finished", "worker")
_TRACEBACK_CHARS = 4000  # keep the end of a failed run's traceback, not all of it
# Dask's nanny gives each worker single-threaded BLAS; local worker processes get the same, so
# N processes use N cores (not N * cores) and both executors compute alike.


class SweepError(RuntimeError):
    """The sweep itself cannot go on (not one run failing): missing dask, a dead pool, ..."""


# ------------------------------------------------------------------------------ run specs


def _freeze(d: Mapping[str, Any] | None, name: str) -> Mapping[str, Any]:
    if d is None:
        return MappingProxyType({})
    if not isinstance(d, Mapping) or not all(isinstance(k, str) for k in d):
        raise ValueError(f"{name} must be a dict with str keys, got {d!r}")
    try:
        json.dumps(dict(d), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must hold only JSON values (finite numbers), got {d!r}") from e
    return MappingProxyType(dict(sorted(d.items())))


@dataclass(frozen=True)
class RunSpec:
    """One training run of a sweep: everything that decides its result, and nothing else."""

    task: str  # task name, e.g. "recall" (gatescope.tasks.get_task)
    arch: str  # "lstm", "gru" or "rnn"
    length: int  # the task's length (T for recall)
    seed: int  # initial weights, training data and evaluation data all follow from it
    hidden_size: int = 32  # H: units per recurrent layer
    num_layers: int = 1  # stacked recurrent layers
    dtype: str = "float64"  # "float32" or "float64"
    task_options: Mapping[str, Any] = field(default_factory=dict)  # other task fields
    layer_options: Mapping[str, Any] = field(default_factory=dict)  # e.g. forget_bias
    train: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig fields but seed
    eval_n: int = 1000  # sequences in the final evaluation

    def __post_init__(self) -> None:
        for name in ("task", "arch", "dtype"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty str, got {getattr(self, name)!r}")
        object.__setattr__(self, "length", check_positive_int("length", self.length, 1))
        object.__setattr__(self, "seed", check_positive_int("seed", self.seed, 0))
        object.__setattr__(
            self, "hidden_size", check_positive_int("hidden_size", self.hidden_size, 1)
        )
        object.__setattr__(self, "num_layers", check_positive_int("num_layers", self.num_layers, 1))
        object.__setattr__(self, "eval_n", check_positive_int("eval_n", self.eval_n, 1))
        for name in ("task_options", "layer_options", "train"):
            object.__setattr__(self, name, _freeze(getattr(self, name), name))
        if "seed" in self.train:
            raise ValueError("train must not contain 'seed': the spec's seed is the run's seed")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe; :meth:`from_dict` rebuilds the spec."""
        return {
            f.name: dict(v) if isinstance(v := getattr(self, f.name), Mapping) else v
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunSpec:
        if not isinstance(d, Mapping):
            raise ValueError(f"a run spec must be a dict, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown run spec field(s): {', '.join(unknown)}")
        return cls(**d)

    @property
    def run_id(self) -> str:
        """16 hex digits of the SHA-256 of the spec's canonical JSON: stable across machines."""
        text = json.dumps(
            {"version": SPEC_VERSION, **self.to_dict()}, sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def label(self) -> str:
        return f"{self.task} {self.arch} T={self.length} seed={self.seed}"


def make_grid(
    task: str,
    archs: Sequence[str],
    lengths: Sequence[int],
    seeds: int | Sequence[int],
    **common: Any,
) -> list[RunSpec]:
    """The runs of a sweep: every (seed, length, arch), seed-major.

    ``seeds`` is a count (seeds 0..n-1) or the seeds themselves; ``common`` holds the other
    :class:`RunSpec` fields. Seed-major order means an interrupted sweep already has a whole
    curve for the first seeds rather than every seed for the shortest lengths.
    """
    seed_list = (
        list(range(check_positive_int("seeds", seeds, 1))) if not _is_seq(seeds) else list(seeds)
    )
    for name, values in (("archs", archs), ("lengths", lengths), ("seeds", seed_list)):
        if not _is_seq(values) or len(values) == 0:
            raise ValueError(f"{name} must be a non-empty list, got {values!r}")
        if len(set(values)) != len(values):
            raise ValueError(f"{name} must not repeat values, got {list(values)!r}")
    return [
        RunSpec(task=task, arch=a, length=n, seed=s, **common)
        for s in seed_list
        for n in lengths
        for a in archs
    ]


def _is_seq(x: object) -> bool:
    return isinstance(x, Sequence) and not isinstance(x, str)


# ------------------------------------------------------------------------------ one run


def _finite_or_none(x: Any) -> Any:
    """JSON has no NaN or infinity: a non-finite number becomes null."""
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, Mapping):
        return {str(k): _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite_or_none(v) for v in x]
    return x


def _train(spec: RunSpec) -> dict[str, Any]:
    """Build the task and model of `spec`, fit, evaluate; the result fields of a row."""
    from gatescope.model import SequenceModel
    from gatescope.tasks import get_task
    from gatescope.train import TrainConfig, evaluate_model, fit

    task = get_task(spec.task, spec.length, **spec.task_options)
    model = SequenceModel.for_task(
        task,
        spec.arch,
        spec.hidden_size,
        num_layers=spec.num_layers,
        seed=spec.seed,
        dtype=spec.dtype,
        **spec.layer_options,
    )
    config = TrainConfig(**spec.train, seed=spec.seed)
    result = fit(task, model, config, checkpoint_path=None, progress=False)
    # the final score: a test set drawn apart from training's and early stopping's streams,
    # the same for every run of a length, so runs differ only by what they learned
    metrics = evaluate_model(task, model, n=spec.eval_n)
    metric = metrics[task.metric_name]
    solved = math.isfinite(metric) and task.solved(metric)
    history = [{k: v for k, v in h.items() if k != "seconds"} for h in result.history]
    return {
        "metric_name": task.metric_name,
        "metric": metric,
        "higher_is_better": task.higher_is_better,
        "solved": bool(solved),
        "baseline": task.baseline,
        "threshold": task.threshold,
        "metrics": dict(metrics),
        "steps": int(result.steps),
        "stop_reason": result.stop_reason,
        "message": result.message,
        "params": int(model.num_params()),
        "history": history,
    }


def run_one(spec: Mapping[str, Any] | RunSpec) -> dict[str, Any]:
    """Train one run and return its row (never raises for a failing run: it records it).

    Every row has ``id``, ``spec`` (:meth:`RunSpec.to_dict`), ``status`` ("ok" or "error"),
    ``gatescope`` (the version) and the timing fields ``seconds``, ``finished`` (UTC, ISO 8601)
    and ``worker`` (host:pid). An "ok" row adds ``metric_name``, ``metric`` (the final
    evaluation's value of it), ``higher_is_better``, ``solved``, ``baseline``, ``threshold``,
    ``metrics`` (the whole evaluation), ``steps`` (optimizer steps taken), ``stop_reason`` and
    ``message`` (from ``fit``: "steps", "solved", "patience" or "diverged"), ``params`` and
    ``history`` (the training loop's evaluations without their times); an "error" row adds ``error`` ("Type: message")
    and ``traceback``. A non-finite number is stored as null.
    """
    from gatescope import __version__

    start = time.perf_counter()
    if isinstance(spec, RunSpec):
        spec_dict = spec.to_dict()
    else:
        spec_dict = dict(spec)
    row: dict[str, Any] = {"id": None, "spec": spec_dict, "gatescope": __version__}
    try:
        run_spec = spec if isinstance(spec, RunSpec) else RunSpec.from_dict(spec_dict)
        row["id"] = run_spec.run_id
        row["spec"] = run_spec.to_dict()
        with np.errstate(all="ignore"):  # a diverging run is a result, not a warning
            row.update(_train(run_spec))
        row["status"] = "ok"
    except Exception as e:  # noqa: BLE001 - every failure of a run is recorded, not raised
        row.update(_error_fields(e))
    row.update(_timing(start))
    return _finite_or_none(row)


def _error_fields(e: BaseException) -> dict[str, Any]:
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    message = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return {
        "status": "error",
        "error": f"{type(e).__name__}: {message}" if message else type(e).__name__,
        "traceback": tb[-_TRACEBACK_CHARS:],
    }


def _timing(start: float) -> dict[str, Any]:
    return {
        "seconds": round(time.perf_counter() - start, 3),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "worker": f"{socket.gethostname()}:{os.getpid()}",
    }


def _lost_run_row(spec: Mapping[str, Any], e: BaseException) -> dict[str, Any]:
    """The row of a run whose worker never returned one (a Dask worker killed by it, ...)."""
    from gatescope import __version__

    row = {"id": RunSpec.from_dict(spec).run_id, "spec": dict(spec), "gatescope": __version__}
    row.update(_error_fields(e))
    row.update(_timing(time.perf_counter()))
    row["worker"] = None  # unknown: the worker is gone
    return row


# ------------------------------------------------------------------------------ the results file


@dataclass
class Results:
    """What a results file holds: its rows in file order, and how many lines were unusable."""

    rows: list[dict[str, Any]]
    bad_lines: int = 0  # whole lines that were not a JSON object with an "id" (skipped)
    torn_tail: bool = False  # the file ended in an unterminated line (an interrupted write)

    @property
    def latest(self) -> dict[str, dict[str, Any]]:
        """id -> the last row recorded for it."""
        return {row["id"]: row for row in self.rows}


class ResultsFile:
    """``DIR/results.jsonl``: append-only, one fsync'd JSON line per finished run."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def read(self) -> Results:
        """Every whole line; an unterminated last line (a torn write) is left out."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return Results(rows=[])
        complete, _, tail = data.rpartition(b"\n")
        rows: list[dict[str, Any]] = []
        bad = 0
        for line in complete.split(b"\n") if complete else []:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (UnicodeDecodeError, ValueError):
                bad += 1
                continue
            if not isinstance(row, dict) or not isinstance(row.get("id"), str):
                bad += 1
                continue
            rows.append(row)
        return Results(rows=rows, bad_lines=bad, torn_tail=bool(tail))

    def repair(self) -> bool:
        """Cut an unterminated last line off the file; True if there was one."""
        try:
            with open(self.path, "rb+") as f:
                size = f.seek(0, os.SEEK_END)
                if size == 0:
                    return False
                f.seek(size - 1)
                if f.read(1) == b"\n":
                    return False
                data_end = _last_newline_end(f, size)
                f.truncate(data_end)
                f.flush()
                os.fsync(f.fileno())
                return True
        except FileNotFoundError:
            return False

    def append(self, row: Mapping[str, Any]) -> None:
        """Append `row` as one line with a single write, then fsync it."""
        line = json.dumps(row, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            data = line.encode()
            written = os.write(fd, data)
            while written < len(data):  # a short write (rare): finish the line
                written += os.write(fd, data[written:])
            os.fsync(fd)
        finally:
            os.close(fd)


def _last_newline_end(f: Any, size: int) -> int:
    """The offset just past the last b"\\n" in the open file `f` of `size` bytes (0 if none)."""
    pos = size
    chunk = 1 << 16
    while pos > 0:
        start = max(0, pos - chunk)
        f.seek(start)
        block = f.read(pos - start)
        i = block.rfind(b"\n")
        if i >= 0:
            return start + i + 1
        pos = start
    return 0


def read_results(out_dir: str | os.PathLike[str]) -> Results:
    """The rows of the sweep in `out_dir` (ValueError if it has no results file)."""
    path = Path(out_dir) / RESULTS_FILE
    if not path.is_file():
        raise ValueError(f"no sweep results in {out_dir}: {path} does not exist")
    return ResultsFile(path).read()


@contextlib.contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(out_dir / LOCK_FILE, "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepError(
                f"another sweep is writing to {out_dir} (it holds {out_dir / LOCK_FILE})"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# ------------------------------------------------------------------------------ executors


def default_workers() -> int:
    """The CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _execute_serial(specs: list[dict[str, Any]], workers: int | None) -> Iterator[dict[str, Any]]:
    for spec in specs:
        yield run_one(spec)


def _execute_local(specs: list[dict[str, Any]], workers: int | None) -> Iterator[dict[str, Any]]:
    n = min(workers or default_workers(), len(specs))
    # spawn: fresh interpreters (no forked threads or locks), like Dask's worker processes
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=n, mp_context=ctx)
    try:
        with limit_blas_threads(1):  # the pool starts its processes while submitting
            futures = [pool.submit(run_one, spec) for spec in specs]
        for fut in as_completed(futures):
            try:
                row = fut.result()
            except BrokenProcessPool as e:
                raise SweepError(
                    "a worker process died (killed, or out of memory); the finished runs are "
                    "saved: run the sweep again to continue"
                ) from e
            yield row
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _execute_dask(
    specs: list[dict[str, Any]], workers: int | None, scheduler: str | None
) -> Iterator[dict[str, Any]]:
    try:
        from distributed import Client, LocalCluster
        from distributed import as_completed as dask_as_completed
    except ImportError as e:
        raise SweepError(
            "the dask executor needs dask.distributed, which is not installed: "
            "pip install 'gatescope[dask]' (or 'dask[distributed]')"
        ) from e
    with contextlib.ExitStack() as stack:
        if scheduler:
            try:
                client = stack.enter_context(Client(scheduler, timeout="30s"))
            except (OSError, TimeoutError) as e:
                raise SweepError(f"cannot connect to the Dask scheduler at {scheduler}: {e}") from e
        else:
            n = min(workers or default_workers(), len(specs))
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=n,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",  # any free port: never clash with a running one
                    host="127.0.0.1",
                )
            )
            client = stack.enter_context(Client(cluster))
        # the key is the run id: one task per run, whoever submits it
        futures = {
            client.submit(
                run_one, spec, key=f"gatescope-run-{RunSpec.from_dict(spec).run_id}"
            ): spec
            for spec in specs
        }
        try:
            for fut in dask_as_completed(list(futures)):
                try:
                    row = fut.result()
                except Exception as e:  # noqa: BLE001 - the run's worker died (KilledWorker, ...)
                    row = _lost_run_row(futures[fut], e)
                yield row
        finally:
            client.cancel([f for f in futures if not f.done()])


# ------------------------------------------------------------------------------ the sweep


@dataclass
class SweepSummary:
    """What one call of :func:`run_sweep` did."""

    path: Path  # the results file
    total: int  # distinct runs asked for
    skipped: int  # already recorded, not run again
    ok: int  # finished now
    failed: int  # failed now (recorded with their errors)
    failures: list[dict[str, Any]] = field(default_factory=list)  # the failed rows


def run_sweep(
    specs: Iterable[RunSpec],
    out_dir: str | os.PathLike[str],
    executor: str = "local",
    workers: int | None = None,
    scheduler: str | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> SweepSummary:
    """Run every spec not yet recorded in ``out_dir``, appending one row per run as it finishes.

    executor: "local" (a pool of ``workers`` processes, default one per core), "dask" (the
    cluster at ``scheduler``, or a local Dask cluster of ``workers`` processes when None) or
    "serial" (this process). Runs recorded with status "ok" are skipped, and those recorded as
    failed too unless ``retry_failed``. ``on_row(row)`` is called after each row is saved.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}; got {executor!r}")
    if workers is not None:
        check_positive_int("workers", workers, 1)
    if scheduler is not None and executor != "dask":
        raise ValueError(f"a scheduler address needs executor='dask', got executor={executor!r}")
    unique: dict[str, RunSpec] = {}
    for spec in specs:
        if not isinstance(spec, RunSpec):
            raise ValueError(f"specs must be RunSpec objects, got {type(spec).__name__}")
        unique.setdefault(spec.run_id, spec)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = ResultsFile(out / RESULTS_FILE)
    with _locked(out):
        results.repair()
        latest = results.read().latest
        done = {
            rid
            for rid, row in latest.items()
            if row.get("status") == "ok" or (row.get("status") == "error" and not retry_failed)
        }
        pending = [s.to_dict() for rid, s in unique.items() if rid not in done]
        summary = SweepSummary(
            path=results.path, total=len(unique), skipped=len(unique) - len(pending), ok=0, failed=0
        )
        if not pending:
            return summary
        if executor == "dask":
            rows = _execute_dask(pending, workers, scheduler)
        elif executor == "local":
            rows = _execute_local(pending, workers)
        else:
            rows = _execute_serial(pending, workers)
        with _progress(progress, summary) as advance, contextlib.closing(rows):
            for row in rows:
                results.append(row)
                if row.get("status") == "ok":
                    summary.ok += 1
                else:
                    summary.failed += 1
                    summary.failures.append(row)
                advance(row)
                if on_row is not None:
                    on_row(row)
    return summary


@contextlib.contextmanager
def _progress(show: bool, summary: SweepSummary) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A bar over the runs (gatescope.progress) on stderr when it is a terminal."""

    def counts() -> str:
        failed = f", [red]{summary.failed} failed[/red]" if summary.failed else ""
        skipped = f", {summary.skipped} done before" if summary.skipped else ""
        return f"{summary.ok} ok{failed}{skipped}"

    with Progress("sweep", summary.total, start=summary.skipped, enabled=show) as bar:
        bar.update(summary.skipped, info=counts())

        def advance(row: dict[str, Any]) -> None:
            label = _row_label(row)
            if row.get("status") == "ok":
                desc = f"{label}: {row.get('metric_name')} {_fmt(row.get('metric'))}"
            else:
                desc = f"{label}: failed"
                bar.print(f"[red]failed[/red] {label}: {row.get('error')}", markup=True)
            bar.update(advance=1, info=f"{counts()}  {desc}")

        yield advance


def _row_label(row: Mapping[str, Any]) -> str:
    spec = row.get("spec") or {}
    return f"{spec.get('arch')} T={spec.get('length')} seed={spec.get('seed')}"


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{x:.4g}"
