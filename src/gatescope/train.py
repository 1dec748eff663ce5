"""The fit loop: fresh batches every step, periodic evaluation, early stop, checkpoints, resume.

    from gatescope.model import SequenceModel
    from gatescope.tasks import get_task
    from gatescope.train import TrainConfig, fit, resume_state

    task = get_task("adding", 100)
    model = SequenceModel.for_task(task, "lstm", hidden_size=64, seed=0, dtype="float32")
    result = fit(task, model, TrainConfig(steps=1500, seed=0), checkpoint_path="run.safetensors")
    result.solved, result.metrics["mse"], result.steps, result.seconds

    task, model, config, state = resume_state("run.safetensors", steps=3000)
    fit(task, model, config, checkpoint_path="run.safetensors", state=state)

Randomness. Three independent streams derive from two seeds (``np.random.SeedSequence``
spawn keys, so they never overlap): training batches from ``config.seed`` (a fresh batch every
step), the held-out evaluation set from ``config.eval_seed`` (drawn once, the same at every
evaluation and after a resume), and ``evaluate_model``'s default test set (another key). The
model's initial weights come from whatever seed the caller built it with (the CLI: ``--seed``).

Exact resume. A checkpoint holds the weights, the optimizer state (step counter, moments,
hyper-parameters), the training stream's bit-generator state, the history and the
early-stop bookkeeping. ``steps`` counts the total: a run of N steps and a run of N/2 steps
resumed to N give bit-identical weights. Only scheduled evaluations (every ``eval_every``
steps) decide early stopping, so where a shorter run happened to end changes nothing.

Divergence. A loss, gradient norm or parameter that turns NaN or Inf stops training *before*
anything is written: the last checkpoint on disk (the last good one) is kept, and the result
says so (``stop_reason == "diverged"``, ``message`` names the step and suggests a lower
learning rate or gradient clipping).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from gatescope.checkpoint import CheckpointError
from gatescope.model import EXTRA_PREFIX, SequenceModel, read_model_file, save_model
from gatescope.optim import OPTIMIZERS, Optimizer, clip_grad_norm, clip_grad_value, make_optimizer
from gatescope.tasks import Batch, Task, task_from_dict

__all__ = [
    "STOP_REASONS",
    "FitResult",
    "TrainConfig",
    "TrainState",
    "evaluate_model",
    "fit",
    "heldout_batch",
    "resume_state",
    "train_rng",
]

STOP_REASONS = ("steps", "solved", "patience", "time", "diverged")

# SeedSequence spawn keys of the three data streams
_TRAIN_STREAM, _HELDOUT_STREAM, _TEST_STREAM = 0, 1, 2
DEFAULT_TEST_SEED = 0  # evaluate_model's default: a test set no training run has seen
_EVAL_CHUNK = 256  # sequences per forward pass when evaluating (bounds memory)


@dataclass(frozen=True)
class TrainConfig:
    """How to train: the loop, the optimizer, clipping, evaluation and checkpoints."""

    steps: int = 4000  # total optimizer steps; a resumed run continues up to this count
    batch_size: int = 64  # fresh sequences per step
    lr: float = 3e-3  # learning rate
    optimizer: str = "adam"  # "adam", "sgd", "rmsprop" or "adagrad"
    momentum: float = 0.0  # momentum for sgd and rmsprop (ignored by adam and adagrad)
    clip_norm: float | None = 1.0  # rescale gradients to this global L2 norm; None: off
    clip_value: float | None = None  # clamp every gradient entry to +-clip_value; None: off
    eval_every: int = 100  # steps between evaluations on the held-out set
    eval_size: int = 500  # sequences in the held-out set
    eval_seed: int = 1  # seed of the held-out set (fixed: the same set at every evaluation)
    seed: int = 0  # seed of the training batches (the CLI also initialises the model with it)
    checkpoint_every: int = 500  # steps between checkpoints (0: only at the end)
    early_stop: bool = True  # stop at the first evaluation where the task counts as solved
    patience: int = 0  # stop after this many evaluations without improvement (0: never)

    def __post_init__(self) -> None:
        _positive_int(self, "steps", minimum=1)
        _positive_int(self, "batch_size", minimum=1)
        _positive_int(self, "eval_every", minimum=1)
        _positive_int(self, "eval_size", minimum=1)
        _positive_int(self, "checkpoint_every", minimum=0)
        _positive_int(self, "patience", minimum=0)
        _positive_int(self, "seed", minimum=0)
        _positive_int(self, "eval_seed", minimum=0)
        _positive_float(self, "lr")
        _positive_float(self, "momentum", allow_zero=True)
        for name in ("clip_norm", "clip_value"):
            if getattr(self, name) is not None:
                _positive_float(self, name)
        if not isinstance(self.optimizer, str) or self.optimizer.lower() not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        object.__setattr__(self, "optimizer", self.optimizer.lower())
        if self.momentum and self.optimizer not in ("sgd", "rmsprop"):
            raise ValueError(
                f"momentum applies to sgd and rmsprop only, got momentum={self.momentum} "
                f"with optimizer {self.optimizer!r}"
            )
        if not isinstance(self.early_stop, bool):
            raise ValueError(f"early_stop must be a bool, got {self.early_stop!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; ``TrainConfig.from_dict(d)`` reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Rebuild from ``to_dict()``; unknown keys raise ValueError (missing ones: defaults)."""
        if not isinstance(d, Mapping):
            raise ValueError(f"train config must be a dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown train config key(s) {unknown}; expected {sorted(known)}")
        return cls(**d)

    def make_optimizer(self, params: Mapping[str, np.ndarray]) -> Optimizer:
        """The configured optimizer over ``params``."""
        kw: dict[str, Any] = {"lr": self.lr}
        if self.optimizer in ("sgd", "rmsprop"):
            kw["momentum"] = self.momentum
        return make_optimizer(self.optimizer, params, **kw)


@dataclass
class TrainState:
    """Where a run stands; saved in every checkpoint so that a resume is exact."""

    step: int = 0  # optimizer steps done
    rng_state: dict[str, Any] | None = None  # training stream's bit_generator.state
    optimizer_state: dict[str, np.ndarray] | None = None  # Optimizer.state_dict()
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per evaluation
    best: float | None = None  # best scheduled metric so far (for patience)
    evals_since_best: int = 0  # scheduled evaluations since `best` improved
    seconds: float = 0.0  # training time so far, all sessions together
    stop_reason: str | None = None  # set when the run stopped before `steps` for good
    metrics: dict[str, float] | None = None  # the last evaluation
    loss: float | None = None  # running mean of the training loss at `step`


@dataclass
class FitResult:
    """What ``fit`` returns."""

    steps: int  # optimizer steps done (in total, across resumes)
    seconds: float  # training time (all sessions together)
    solved: bool  # task.solved(metrics)
    metrics: dict[str, float]  # the final evaluation on the held-out set
    history: list[dict[str, Any]]  # {"step", "loss", "metric", "seconds", <metrics>} per eval
    stop_reason: str  # "steps", "solved", "patience", "time" (fit's time_limit) or "diverged"
    message: str  # one line saying how the run ended
    loss: float | None  # running mean of the training loss at the end
    checkpoint_path: str | None  # where the last checkpoint was written (None: none written)


def _positive_int(obj: object, name: str, minimum: int) -> None:
    value = getattr(obj, name)
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    object.__setattr__(obj, name, int(value))


def _positive_float(obj: object, name: str, allow_zero: bool = False) -> None:
    value = getattr(obj, name)
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        sign = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {sign}, got {getattr(obj, name)!r}")
    object.__setattr__(obj, name, value)


# ------------------------------------------------------------------------------ data


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(stream,)))


def train_rng(seed: int) -> np.random.Generator:
    """The Generator of the training batches for ``seed``."""
    return _rng(seed, _TRAIN_STREAM)


def heldout_batch(task: Task, n: int, seed: int) -> Batch:
    """The fixed held-out set of ``fit`` (``n`` sequences drawn from ``seed``'s stream)."""
    return task.make_batch(n, _rng(seed, _HELDOUT_STREAM))


def _evaluate_on(task: Task, model: SequenceModel, batch: Batch) -> dict[str, float]:
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        out = model.predict(batch.x, chunk=_EVAL_CHUNK)
    if not np.isfinite(out).all():
        return {task.metric_name: math.nan}
    return task.evaluate(out, batch)


def evaluate_model(
    task: Task, model: SequenceModel, n: int = 1000, seed: int = DEFAULT_TEST_SEED
) -> dict[str, float]:
    """Score ``model`` on ``n`` fresh sequences of ``task`` (a test stream no run trains or
    early-stops on); returns ``task.evaluate``'s dict."""
    _check_model_fits(task, model)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    batch = task.make_batch(int(n), _rng(seed, _TEST_STREAM))
    return _evaluate_on(task, model, batch)


# ------------------------------------------------------------------------------ the loop


def fit(
    task: Task,
    model: SequenceModel,
    config: TrainConfig,
    checkpoint_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
    state: TrainState | None = None,
    log: Callable[[str], None] | None = None,
    time_limit: float | None = None,
) -> FitResult:
    """Train ``model`` on ``task`` until ``config.steps`` (or solved, or out of patience).

    ``checkpoint_path``: written atomically every ``checkpoint_every`` steps and at the end
    (never after a divergence, so the last good file stays). ``progress``: a rich progress
    bar on stderr (loss, metric, steps/s, ETA), shown only when stderr is a terminal.
    ``state``: from :func:`resume_state`, to continue a run exactly. ``log``: called with one
    line per evaluation and checkpoint (printed above the bar while it is shown).
    ``time_limit``: stop (``stop_reason == "time"``) after the step that crosses this many
    seconds of this call; a budget for sweeps on busy machines, so where such a run stops
    depends on the machine. A run stopped by it resumes like one that ran out of steps.
    """
    if time_limit is not None and not (
        isinstance(time_limit, int | float) and math.isfinite(time_limit) and time_limit > 0
    ):
        raise ValueError(f"time_limit must be a positive number of seconds, got {time_limit!r}")
    _check_model_fits(task, model)
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    path = None if checkpoint_path is None else os.fspath(checkpoint_path)
    if path is not None:
        folder = os.path.dirname(path) or "."
        if not os.path.isdir(folder):
            raise CheckpointError(f"{path}: folder {folder!r} does not exist (create it first)")
    state = TrainState() if state is None else state

    optimizer = config.make_optimizer(model.params)
    rng = train_rng(config.seed)
    if state.step > 0:
        if state.optimizer_state is None or state.rng_state is None:
            raise ValueError("state must hold optimizer_state and rng_state to resume")
        optimizer.load_state_dict(state.optimizer_state)
        rng.bit_generator.state = state.rng_state
    heldout = heldout_batch(task, config.eval_size, config.eval_seed)
    saved_step: int | None = None  # step of the checkpoint this call last wrote
    bar = _Bar(config.steps, state.step, task.metric_name, enabled=progress)
    emit = bar.print if (log is not None and bar.enabled) else (log or (lambda line: None))

    def save(step: int) -> None:
        nonlocal saved_step
        if path is None:
            return
        state.rng_state = rng.bit_generator.state
        state.optimizer_state = optimizer.state_dict()
        _save_training_checkpoint(path, task, model, config, state)
        saved_step = step
        emit(f"step {step}: checkpoint written to {path}")

    stop_reason = state.stop_reason
    message = ""
    loss_avg = state.loss
    t_session = time.perf_counter()
    seconds0 = state.seconds
    step = state.step
    with bar:
        if stop_reason is not None:
            message = f"already stopped at step {step} ({stop_reason}); nothing to do"
        while stop_reason is None and step < config.steps:
            batch = task.make_batch(config.batch_size, rng)
            loss, bad = _train_step(model, optimizer, batch, config)
            if bad is not None:  # nothing was updated; the last checkpoint is left alone
                stop_reason = "diverged"
                message = _divergence_message(bad, step + 1, config, path, saved_step, state)
                break
            step += 1
            loss_avg = loss if loss_avg is None else 0.95 * loss_avg + 0.05 * loss
            state.step, state.loss = step, loss_avg
            state.seconds = seconds0 + time.perf_counter() - t_session
            if step % config.eval_every == 0:
                metrics = _evaluate_on(task, model, heldout)
                value = metrics[task.metric_name]
                state.metrics = metrics
                state.history.append(
                    {
                        "step": step,
                        "loss": loss_avg,
                        "metric": value,
                        "seconds": round(state.seconds, 3),
                        **metrics,
                    }
                )
                emit(
                    f"step {step}: loss {loss_avg:.4g}, {task.metric_name} {value:.4g} "
                    f"(baseline {task.baseline:.4g}, {state.seconds:.0f}s)"
                )
                stop_reason = _update_stopping(task, config, state, value, metrics)
            bar.update(step, loss_avg, state.metrics)
            out_of_time = time_limit is not None and time.perf_counter() - t_session > time_limit
            if stop_reason is None and out_of_time and step < config.steps:
                stop_reason = "time"
            if (
                stop_reason is None
                and config.checkpoint_every
                and step % config.checkpoint_every == 0
            ):
                save(step)

        if stop_reason != "diverged":
            if not state.history or state.history[-1]["step"] != step or state.metrics is None:
                state.metrics = _evaluate_on(task, model, heldout)  # final, off the schedule
            # "solved" and "patience" end the run for good; "time" is only this call's budget
            state.stop_reason = stop_reason if stop_reason in ("solved", "patience") else None
            if saved_step != step or state.stop_reason is not None:
                save(step)
            bar.update(step, loss_avg, state.metrics)

    metrics = dict(state.metrics or {task.metric_name: math.nan})
    value = metrics.get(task.metric_name, math.nan)
    solved = bool(not math.isnan(value) and task.solved(metrics))
    reason = stop_reason or "steps"
    if not message:
        message = (
            f"stopped ({reason}) at step {step}: {task.metric_name} {value:.4g} "
            f"(baseline {task.baseline:.4g}, solved: {'yes' if solved else 'no'})"
        )
    return FitResult(
        steps=step,
        seconds=state.seconds,
        solved=solved,
        metrics=metrics,
        history=list(state.history),
        stop_reason=reason,
        message=message,
        loss=loss_avg,
        checkpoint_path=path if saved_step is not None else None,
    )


def _train_step(
    model: SequenceModel, optimizer: Optimizer, batch: Batch, config: TrainConfig
) -> tuple[float, str | None]:
    """One update: (loss, None), or (loss, what turned non-finite) with nothing updated."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        out = model.forward(batch.x)
        if not np.isfinite(out).all():
            return math.nan, "the model output"
        loss, dout = model.loss(out, batch)
        if not math.isfinite(loss):
            return loss, f"the loss ({loss})"
        model.backward(dout)
        if config.clip_value is not None:
            clip_grad_value(model.grads, config.clip_value)
        if config.clip_norm is not None:
            norm = clip_grad_norm(model.grads, config.clip_norm)
            if not math.isfinite(norm):
                return loss, f"the gradient norm ({norm})"
        elif not all(np.isfinite(g).all() for g in model.grads.values()):
            return loss, "a gradient"
        optimizer.step(model.grads)
        if not all(np.isfinite(p).all() for p in model.params.values()):
            return loss, "a parameter (after the update)"
    return loss, None


def _update_stopping(
    task: Task, config: TrainConfig, state: TrainState, value: float, metrics: dict
) -> str | None:
    """Early stop and patience bookkeeping after a scheduled evaluation."""
    if config.early_stop and not math.isnan(value) and task.solved(metrics):
        return "solved"
    better = (
        state.best is None
        or (task.higher_is_better and value > state.best)
        or (not task.higher_is_better and value < state.best)
    )
    if better and not math.isnan(value):
        state.best, state.evals_since_best = float(value), 0
    else:
        state.evals_since_best += 1
    if config.patience and state.evals_since_best >= config.patience:
        return "patience"
    return None


def _divergence_message(
    what: str,
    step: int,
    config: TrainConfig,
    path: str | None,
    saved_step: int | None,
    state: TrainState,
) -> str:
    if path is None:
        kept = "no checkpoint file was requested"
    elif saved_step is not None:
        kept = f"the last good checkpoint (step {saved_step}) is kept at {path}"
    elif os.path.exists(path):
        kept = f"{path} is left as it was"
    else:
        kept = "no checkpoint had been written yet"
    clip = (
        f"stronger gradient clipping (clip_norm is {config.clip_norm:g})"
        if config.clip_norm is not None
        else "gradient clipping (clip_norm, e.g. 1.0)"
    )
    return (
        f"training diverged at step {step}: {what} became NaN or Inf; {kept}; "
        f"try a lower learning rate (lr is {config.lr:g}) or {clip}"
    )


def _check_model_fits(task: Task, model: SequenceModel) -> None:
    if not isinstance(task, Task):
        raise ValueError(f"task must be a gatescope.tasks.Task, got {type(task).__name__}")
    if not isinstance(model, SequenceModel):
        raise ValueError(f"model must be a SequenceModel, got {type(model).__name__}")
    c = model.config
    want = (task.input_size, task.output_size, task.kind)
    got = (c.input_size, c.output_size, c.kind)
    if want != got:
        raise ValueError(
            f"model does not fit task {task.name!r}: (input_size, output_size, kind) must be "
            f"{want}, got {got}"
        )


# ------------------------------------------------------------------------------ files


def _save_training_checkpoint(
    path: str, task: Task, model: SequenceModel, config: TrainConfig, state: TrainState
) -> None:
    assert state.optimizer_state is not None
    meta = {
        "task": task.to_dict(),
        "train": config.to_dict(),
        "step": state.step,
        "seed": config.seed,
        "optimizer": {"name": config.optimizer, "tensor_prefix": EXTRA_PREFIX},
        "rng": {"train": state.rng_state},
        "history": state.history,
        "best": state.best,
        "evals_since_best": state.evals_since_best,
        "seconds": state.seconds,
        "stop_reason": state.stop_reason,
        "metrics": state.metrics,
        "loss": state.loss,
    }
    extra = {EXTRA_PREFIX + k: v for k, v in state.optimizer_state.items()}
    save_model(path, model, meta, extra)


def resume_state(
    path: str | os.PathLike[str], **overrides: Any
) -> tuple[Task, SequenceModel, TrainConfig, TrainState]:
    """Read a checkpoint written by ``fit``: ``(task, model, config, state)`` to continue it.

    ``overrides`` replace fields of the saved TrainConfig (typically ``steps``, the new
    total; ``checkpoint_every``). Changing anything that shapes the run (lr, seed, batch
    size...) is allowed but then the continuation is no longer the same run.
    Problems with the file raise CheckpointError naming it.
    """
    path_str = os.fspath(path)
    model, meta, extra = read_model_file(path_str)

    def need(key: str, kind: type | tuple[type, ...]) -> Any:
        value = meta.get(key)
        if not isinstance(value, kind):
            raise CheckpointError(
                f"{path_str}: not a training checkpoint (metadata {key!r} is missing or "
                f"invalid), so it cannot be resumed"
            )
        return value

    try:
        task = task_from_dict(need("task", dict))
        config = TrainConfig.from_dict(need("train", dict))
        step = need("step", int)
        rng_state = need("rng", dict).get("train")
        if not isinstance(rng_state, dict):
            raise ValueError("metadata 'rng' lacks the training stream's state")
        check = np.random.default_rng(0)
        check.bit_generator.state = rng_state  # validates it
        optimizer_state = {k[len(EXTRA_PREFIX) :]: v for k, v in extra.items()}
        config.make_optimizer(dict(model.params)).load_state_dict(optimizer_state)  # validates
        state = TrainState(
            step=step,
            rng_state=rng_state,
            optimizer_state=optimizer_state,
            history=list(need("history", list)),
            best=meta.get("best"),
            evals_since_best=int(meta.get("evals_since_best") or 0),
            seconds=float(meta.get("seconds") or 0.0),
            stop_reason=meta.get("stop_reason"),
            metrics=meta.get("metrics"),
            loss=meta.get("loss"),
        )
        _check_model_fits(task, model)
    except CheckpointError:
        raise
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{path_str}: cannot resume from this checkpoint: {e}") from None
    if overrides:
        config = replace(config, **overrides)
    return task, model, config, state


# ------------------------------------------------------------------------------ display


class _Bar:
    """A rich progress bar on stderr (loss, metric, steps/s, ETA), or nothing."""

    def __init__(self, total: int, done: int, metric_name: str, enabled: bool) -> None:
        self.enabled = bool(enabled) and sys.stderr.isatty()
        self.metric_name = metric_name
        self._progress = None
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TextColumn("{task.fields[speed]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._task = self._progress.add_task(
            "train", total=total, completed=done, stats="", speed=""
        )
        self._t0, self._done0 = time.perf_counter(), done

    def __enter__(self) -> _Bar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, step: int, loss: float | None, metrics: dict | None) -> None:
        if self._progress is None:
            return
        stats = "" if loss is None else f"loss {loss:.4g}"
        if metrics:
            stats += f"  {self.metric_name} {metrics.get(self.metric_name, math.nan):.4g}"
        elapsed = time.perf_counter() - self._t0
        speed = f"{(step - self._done0) / elapsed:.1f} steps/s" if elapsed > 0 else ""
        self._progress.update(self._task, completed=step, stats=stats, speed=speed)

    def print(self, line: str) -> None:
        if self._progress is not None:
            self._progress.console.print(line, markup=False, highlight=False)
