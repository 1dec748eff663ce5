"""The one fit loop: a batch every step, periodic evaluation, early stop, checkpoints, resume.

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
resumed to N give bit-identical weights on the same machine and backend. Only scheduled
evaluations (every ``eval_every`` steps) decide early stopping, so where a shorter run
happened to end changes nothing.

Text (truncated BPTT). On a `gatescope.tasks.text.TextTask` the batches are not drawn: step s
reads batch ``s % steps_per_pass`` of B streams through the training text. With
``carry_state`` the final recurrent state of one step is the initial state of the next (no
gradient flows into it) and is reset to zero at each pass over the text; it is saved in the
checkpoint (tensors ``carry.*``) so that a resume stays bit-exact. The metric is bits per
character on fixed windows of the validation text. Options that the character LM uses and
any task may: ``lr_decay`` on plateaus (``min_gain``, ``min_lr``), a time budget (fit's
``time_limit``, with ``steps=None`` for no step limit), and samples every ``sample_every``
steps through ``log`` (text only)::

    task = TextTask(load_corpus(CorpusSpec(paths=("texts/",))), seq_len=64)
    model = SequenceModel.for_task(task, "lstm", 128, num_layers=2, dtype="float32")
    config = TrainConfig(steps=None, batch_size=32, lr=1e-2, clip_norm=5.0, carry_state=True,
                         lr_decay=0.5, early_stop=False, checkpoint_every=100)
    fit(task, model, config, checkpoint_path="lm.safetensors", time_limit=300)

Divergence. A loss, gradient norm or parameter that turns NaN or Inf stops training *before*
anything is written: the last checkpoint on disk (the last good one) is kept, and the result
says so (``stop_reason == "diverged"``, ``message`` names the step and suggests a lower
learning rate or gradient clipping).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from gatescope import charlm
from gatescope.checkpoint import CheckpointError
from gatescope.model import (
    CARRY_PREFIX,
    EXTRA_PREFIX,
    SequenceModel,
    read_model_file,
    save_model,
)
from gatescope.nn.checks import check_positive_int
from gatescope.optim import OPTIMIZERS, Optimizer, clip_grad_norm, clip_grad_value, make_optimizer
from gatescope.progress import Progress
from gatescope.seq2seq import Seq2Seq
from gatescope.tasks import Batch, Task, task_from_dict
from gatescope.tasks.text import TextTask, corpus_from_meta

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
    "train_step",
]

STOP_REASONS = ("steps", "solved", "patience", "time", "diverged")

# SeedSequence spawn keys of the three data streams
_TRAIN_STREAM, _HELDOUT_STREAM, _TEST_STREAM = 0, 1, 2
DEFAULT_TEST_SEED = 0  # evaluate_model's default: a test set no training run has seen
_EVAL_CHUNK = 256  # sequences per forward pass when evaluating (bounds memory)


@dataclass(frozen=True)
class TrainConfig:
    """How to train: the loop, the optimizer, clipping, evaluation and checkpoints."""

    steps: int | None = 4000  # total optimizer steps (resumes go on to it); None: time_limit only
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
    early_stop: bool = True  # stop once the task counts as solved (see solved_evals)
    solved_evals: int = 1  # early stop after this many scheduled evaluations in a row solved
    patience: int = 0  # stop after this many evaluations without improvement (0: never)
    carry_state: bool = False  # truncated BPTT (text tasks): carry the state batch to batch
    lr_decay: float = 1.0  # lr multiplier when an evaluation does not beat the best (1: off)
    min_gain: float = 0.0  # by how much an evaluation must beat the best to count as better
    min_lr: float = 1e-4  # lr_decay stops here
    sample_every: int = 0  # text tasks: steps between samples sent to the log (0: never)
    sample_chars: int = 300  # length of those samples

    def __post_init__(self) -> None:
        if self.steps is not None:
            _int_field(self, "steps", minimum=1)
        _int_field(self, "batch_size", minimum=1)
        _int_field(self, "eval_every", minimum=1)
        _int_field(self, "eval_size", minimum=1)
        _int_field(self, "checkpoint_every", minimum=0)
        _int_field(self, "patience", minimum=0)
        _int_field(self, "solved_evals", minimum=1)
        _int_field(self, "seed", minimum=0)
        _int_field(self, "eval_seed", minimum=0)
        _int_field(self, "sample_every", minimum=0)
        _int_field(self, "sample_chars", minimum=1)
        _positive_float(self, "lr")
        _positive_float(self, "min_lr")
        _positive_float(self, "min_gain", allow_zero=True)
        _positive_float(self, "lr_decay")
        if self.lr_decay > 1:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay!r}")
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
        for name in ("early_stop", "carry_state"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")

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
    carry: dict[str, np.ndarray] | None = None  # carried state (L, B, H) arrays (carry_state)
    recent: list[float] = field(default_factory=list)  # text: bits/char of each step since the
    # last evaluation (its mean is the history's "train_bpc")


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


def _int_field(obj: object, name: str, minimum: int) -> None:
    object.__setattr__(obj, name, check_positive_int(name, getattr(obj, name), minimum))


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
    return _eval_batch(task, n, _rng(seed, _HELDOUT_STREAM))


def _eval_batch(task: Task, n: int, rng: np.random.Generator) -> Batch:
    # a task with pairs that training never draws (the seq2seq tasks) evaluates on those
    return getattr(task, "make_heldout_batch", task.make_batch)(n, rng)


def _evaluate_on(task: Task, model: SequenceModel, batch: Batch | np.ndarray) -> dict[str, float]:
    if isinstance(task, TextTask):  # batch: the validation windows (B, L + 1), state carried
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            bpc, _ = charlm.bits_per_char(model, batch)
        return {task.metric_name: bpc if math.isfinite(bpc) else math.nan}
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
    n = check_positive_int("n", n)
    if isinstance(task, TextTask):  # a text has one validation set: its windows
        return _evaluate_on(task, model, task.validation_ids())
    batch = _eval_batch(task, n, _rng(seed, _TEST_STREAM))
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
    (never after a divergence, so the last good file stays). ``progress``: a progress bar
    (`gatescope.progress`) on stderr, shown only when stderr is a terminal. ``state``: from
    :func:`resume_state`, to continue a run exactly, or a TrainState the caller keeps: fit
    updates it (optimizer, data stream, carried state), so a later call goes on in memory. ``log``: called with one line per
    evaluation and checkpoint, and with samples (printed above the bar while it is shown).
    ``time_limit``: stop (``stop_reason == "time"``) after the step that crosses this many
    seconds of this call; a budget for sweeps on busy machines and for `gatescope charlm
    train --minutes`, so where such a run stops depends on the machine. A run stopped by it
    resumes like one that ran out of steps. With ``config.steps`` None it is the only limit.
    """
    if time_limit is not None and not (
        isinstance(time_limit, int | float) and math.isfinite(time_limit) and time_limit > 0
    ):
        raise ValueError(f"time_limit must be a positive number of seconds, got {time_limit!r}")
    _check_model_fits(task, model)
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    if config.steps is None and time_limit is None:
        raise ValueError("config.steps is None (no step limit): give a time_limit")
    text = isinstance(task, TextTask)
    if config.carry_state and not text:
        raise ValueError(
            f"carry_state needs a sequential task (gatescope.tasks.text.TextTask), not "
            f"{task.name!r}: its batches are drawn afresh, so no state carries over"
        )
    path = None if checkpoint_path is None else os.fspath(checkpoint_path)
    if path is not None:
        folder = os.path.dirname(path) or "."
        if not os.path.isdir(folder):
            raise CheckpointError(f"{path}: folder {folder!r} does not exist (create it first)")
    state = TrainState() if state is None else state
    max_steps = math.inf if config.steps is None else config.steps

    optimizer = config.make_optimizer(model.params)
    rng = train_rng(config.seed)
    if state.step > 0:
        if state.optimizer_state is None or (state.rng_state is None and not text):
            raise ValueError("state must hold optimizer_state and rng_state to resume")
        optimizer.load_state_dict(state.optimizer_state)
        if state.rng_state is not None:
            rng.bit_generator.state = state.rng_state
    if text:
        task.batcher(config.batch_size)  # a text too short for B streams of T fails here
        heldout: Any = task.validation_ids()
    else:
        heldout = heldout_batch(task, config.eval_size, config.eval_seed)
    carried: Any = None  # the recurrent state the next step starts from (carry_state)
    if config.carry_state and state.carry is not None:
        carried = model.state_from_arrays(state.carry)
    saved_step: int | None = None  # step of the checkpoint this call last wrote
    if config.steps is None:
        bar = Progress("train", float(time_limit or 0), unit="seconds", enabled=progress)
    else:
        bar = Progress("train", config.steps, start=state.step, enabled=progress)
    emit = bar.print if (log is not None and bar.enabled) else (log or (lambda line: None))

    def snapshot() -> None:  # what a resume needs, into `state`
        state.rng_state = rng.bit_generator.state
        state.optimizer_state = optimizer.state_dict()
        if config.carry_state:
            B = config.batch_size
            state.carry = model.state_arrays(
                carried if carried is not None else model.zero_state(B)
            )

    def save(step: int) -> None:
        nonlocal saved_step
        if path is None:
            return
        snapshot()
        _save_training_checkpoint(path, task, model, config, state)
        saved_step = step
        if not text:  # a text run's evaluation lines stand for its saves (as `charlm` printed)
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
        while stop_reason is None and step < max_steps:
            if text:
                batch = task.batch_at(step, config.batch_size)
                if task.pass_starts(step, config.batch_size):
                    carried = None  # a new pass over the text: the state starts from zero
            else:
                batch = task.make_batch(config.batch_size, rng)
            loss, bad = train_step(model, optimizer, batch, config, carried)
            if bad is not None:  # nothing was updated; the last checkpoint is left alone
                stop_reason = "diverged"
                message = _divergence_message(bad, step + 1, config, path, saved_step, state)
                break
            if config.carry_state:  # the next chunk continues this one; no gradient into it
                carried = _copy_state(model.final_state)
            step += 1
            loss_avg = loss if loss_avg is None else 0.95 * loss_avg + 0.05 * loss
            state.step, state.loss = step, loss_avg
            state.seconds = seconds0 + time.perf_counter() - t_session
            if text:
                state.recent.append(loss / LN2)
            if step % config.eval_every == 0:
                metrics = _evaluate_on(task, model, heldout)
                value = metrics[task.metric_name]
                decayed = _plateau(task, config, optimizer, state, value)
                state.metrics = metrics
                row = {
                    "step": step,
                    "loss": loss_avg,
                    "metric": value,
                    "seconds": round(state.seconds, 3),
                    **metrics,
                }
                if text:
                    train_bpc = _text_line(emit, task, config, state, value, optimizer, decayed)
                    state.recent = []
                    row.update(
                        train_bpc=train_bpc,
                        val_bpc=value,
                        chars=step * config.batch_size * task.length,
                        lr=optimizer.lr,
                    )
                else:
                    if config.lr_decay < 1:
                        row["lr"] = optimizer.lr
                    emit(
                        f"step {step}: loss {loss_avg:.4g}, {task.metric_name} {value:.4g} "
                        f"(baseline {task.baseline:.4g}, {state.seconds:.0f}s)"
                        + (f", lr -> {optimizer.lr:.3g}" if decayed else "")
                    )
                state.history.append(row)
                stop_reason = _update_stopping(task, config, state, value, metrics)
            if text and config.sample_every and step % config.sample_every == 0:
                sample = charlm.sample(
                    model, task.vocab, length=config.sample_chars, temperature=0.8, seed=step
                )
                emit(f"--- sample at step {step} (temperature 0.8) ---\n{sample}\n---")
            _show(bar, config, task, step, time.perf_counter() - t_session, loss_avg, state)
            out_of_time = time_limit is not None and time.perf_counter() - t_session > time_limit
            if stop_reason is None and out_of_time and step < max_steps:
                stop_reason = "time"
            if (
                stop_reason is None
                and config.checkpoint_every
                and step % config.checkpoint_every == 0
            ):
                save(step)

        if stop_reason != "diverged":
            if not state.history or state.history[-1]["step"] != step or state.metrics is None:
                # final, off the schedule: no lr decay, no history row (a resume stays exact)
                state.metrics = _evaluate_on(task, model, heldout)
                if text and step > 0:
                    value = state.metrics[task.metric_name]
                    _text_line(emit, task, config, state, value, optimizer, False)
            # "solved" and "patience" end the run for good; "time" is only this call's budget
            state.stop_reason = stop_reason if stop_reason in ("solved", "patience") else None
            if saved_step != step or state.stop_reason is not None:
                save(step)
            snapshot()  # `state` can continue the run in memory too
            _show(bar, config, task, step, time.perf_counter() - t_session, loss_avg, state)

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


LN2 = math.log(2.0)


def _text_line(
    emit: Callable[[str], None],
    task: TextTask,
    config: TrainConfig,
    state: TrainState,
    value: float,
    optimizer: Optimizer,
    decayed: bool,
) -> float:
    """Log a text run's evaluation as `gatescope charlm train` prints it; the train bpc."""
    train_bpc = float(np.mean(state.recent)) if state.recent else math.nan
    epoch = state.step / task.steps_per_pass(config.batch_size)
    emit(
        f"step {state.step:>6}  train {train_bpc:.3f}  val {value:.3f} bits/char  "
        f"({state.seconds / 60:.1f} min, epoch {epoch:.3f})"
        + (f"  lr -> {optimizer.lr:.3g}" if decayed else "")
    )
    return train_bpc


def _copy_state(state: Any) -> Any:
    """A detached copy of a recurrent state (the layer may reuse its arrays)."""
    if isinstance(state, tuple):
        return tuple(np.array(a, copy=True) for a in state)
    return np.array(state, copy=True)


def _show(
    bar: Progress,
    config: TrainConfig,
    task: Task,
    step: int,
    elapsed: float,
    loss: float | None,
    state: TrainState,
) -> None:
    if not bar.enabled:
        return
    stats = "" if loss is None else f"loss {loss:.4g}"
    if state.metrics:
        stats += f"  {task.metric_name} {state.metrics.get(task.metric_name, math.nan):.4g}"
    if config.steps is None:
        bar.update(min(elapsed, bar.total), info=f"step {step}  {stats}")
    else:
        bar.update(step, info=stats)


def _plateau(
    task: Task, config: TrainConfig, optimizer: Optimizer, state: TrainState, value: float
) -> bool:
    """Multiply the learning rate by ``lr_decay`` (not below ``min_lr``) when ``value`` does
    not beat the best scheduled evaluation so far (``state.history``) by more than
    ``min_gain``; True if it did. Off at ``lr_decay == 1``."""
    if config.lr_decay >= 1 or optimizer.lr <= config.min_lr:
        return False
    past = [row["metric"] for row in state.history if not math.isnan(row.get("metric", math.nan))]
    if not past:
        return False
    if task.higher_is_better:
        improved = value > max(past) + config.min_gain
    else:
        improved = value < min(past) - config.min_gain
    if improved:
        return False
    optimizer.lr = max(optimizer.lr * config.lr_decay, config.min_lr)
    return True


def train_step(
    model: SequenceModel,
    optimizer: Optimizer,
    batch: Batch,
    config: TrainConfig,
    state0: Any = None,
) -> tuple[float, str | None]:
    """One update of ``fit``: forward, loss, backward, clipping, the optimizer step.

    Returns (loss, None), or (loss, what turned non-finite) with nothing updated.
    ``state0``: the carried initial state (truncated BPTT), a constant for backward; the
    final state is ``model.final_state`` afterwards."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if isinstance(model, Seq2Seq):  # teacher forcing: the model reads the targets too
            loss = model.loss(batch.x, batch.y)
            if not math.isfinite(loss):
                return loss, f"the loss ({loss})"
            model.backward()
            return _clip_and_step(model, optimizer, config, loss)
        out = model.forward(batch.x, state0)
        if not np.isfinite(out).all():
            return math.nan, "the model output"
        loss, dout = model.loss(out, batch)
        if not math.isfinite(loss):
            return loss, f"the loss ({loss})"
        model.backward(dout)
        return _clip_and_step(model, optimizer, config, loss)


def _clip_and_step(
    model: Any, optimizer: Optimizer, config: TrainConfig, loss: float
) -> tuple[float, str | None]:
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
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
        # the history's last rows are the last evaluations (this one included): all solved?
        recent = state.history[-config.solved_evals :]
        if len(recent) == config.solved_evals and all(task.solved(row) for row in recent):
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
    if isinstance(model, Seq2Seq):
        model.check_fits(task)
        return
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
    if isinstance(task, TextTask):
        meta.update(task.checkpoint_meta())  # "vocab", "corpus"
        meta["epoch"] = state.step / task.steps_per_pass(config.batch_size)
        meta["recent_bpc"] = list(state.recent)
    extra = {EXTRA_PREFIX + k: v for k, v in state.optimizer_state.items()}
    if state.carry is not None and config.carry_state:
        extra.update({CARRY_PREFIX + k: v for k, v in state.carry.items()})
    save_model(path, model, meta, extra)


def resume_state(
    path: str | os.PathLike[str],
    corpus: Any = None,
    *,
    corpus_paths: Any = None,
    **overrides: Any,
) -> tuple[Task, SequenceModel, TrainConfig, TrainState]:
    """Read a checkpoint written by ``fit``: ``(task, model, config, state)`` to continue it.

    ``overrides`` replace fields of the saved TrainConfig (typically ``steps``, the new
    total; ``checkpoint_every``). Changing anything that shapes the run (lr, seed, batch
    size...) is allowed but then the continuation is no longer the same run.
    A char LM's text is read again from the paths its checkpoint names, or from
    ``corpus_paths`` (where it is now, when it moved), or taken as given (``corpus``, a
    `gatescope.tasks.text.Corpus`); its fingerprint must match the checkpoint's. Files of
    gatescope 0.1.0 (task models and char LMs) resume too.
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
        task_meta = need("task", dict)
        if task_meta.get("name") == TextTask.name:
            if corpus is None:
                try:
                    corpus = corpus_from_meta(meta, corpus_paths)
                except ValueError as e:
                    raise CheckpointError(f"{path_str}: {e}") from None
            elif corpus.fingerprint != meta.get("corpus", {}).get("fingerprint"):
                raise CheckpointError(
                    f"{path_str}: the corpus has changed since this checkpoint was written "
                    "(the given corpus has another fingerprint); it cannot be resumed on this text"
                )
            task: Task = TextTask(
                corpus, seq_len=task_meta["length"], eval_chars=task_meta["eval_chars"]
            )
        else:
            task = task_from_dict(task_meta)
        config = TrainConfig.from_dict(need("train", dict))
        step = need("step", int)
        rng_state = (meta.get("rng") or {}).get("train")
        if rng_state is not None or not isinstance(task, TextTask):
            if not isinstance(rng_state, dict):
                raise ValueError("metadata 'rng' lacks the training stream's state")
            check = np.random.default_rng(0)
            check.bit_generator.state = rng_state  # validates it
        optimizer_state = {
            k[len(EXTRA_PREFIX) :]: v for k, v in extra.items() if k.startswith(EXTRA_PREFIX)
        }
        config.make_optimizer(dict(model.params)).load_state_dict(optimizer_state)  # validates
        carry = {k[len(CARRY_PREFIX) :]: v for k, v in extra.items() if k.startswith(CARRY_PREFIX)}
        if carry:
            model.state_from_arrays(carry)  # validates
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
            carry=carry or None,
            recent=[float(v) for v in meta.get("recent_bpc") or []],
        )
        _check_model_fits(task, model)
    except CheckpointError:
        raise
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{path_str}: cannot resume from this checkpoint: {e}") from None
    if overrides:
        config = replace(config, **overrides)
    return task, model, config, state
