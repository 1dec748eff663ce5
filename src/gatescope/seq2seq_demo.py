"""`gatescope demo seq2seq`: dates with and without attention, trained, measured, reported.

    from gatescope.seq2seq_demo import Seq2SeqDemoConfig, run_seq2seq_demo
    summary = run_seq2seq_demo("gatescope-demo-seq2seq", Seq2SeqDemoConfig())

Trains two `gatescope.seq2seq.Seq2Seq` (LSTM encoder-decoders, the same size, the same
batches) on the dates task: one with Bahdanau attention, one without (the final encoder
state carries everything). Then scores both on fresh held-out pairs, translates a few
held-out dates, and measures where each looks: the attention weights of the one, and the
connectivity ||d logit / d source embedding|| of both, from the real backward pass
(`gatescope.inspect.seq2seq.connectivity`). Writes into the folder: the two checkpoints
(``dates_bahdanau.safetensors``, ``dates_none.safetensors``, which `gatescope seq2seq
translate` and ``evaluate`` read), one PNG per figure, ``summary.json`` and
``report.html`` (self-contained). Every number in the report is read from the summary.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from gatescope import viz
from gatescope.demo import _write_json
from gatescope.inspect.seq2seq import connectivity
from gatescope.seq2seq import Seq2Seq
from gatescope.tasks.seq2seq import get_seq2seq_task
from gatescope.train import DEFAULT_TEST_SEED, TrainConfig, evaluate_model, fit
from gatescope.viz.seq2seq import attention_figure, connectivity_figure
from gatescope.viz.seq2seq_page import render_seq2seq_report

__all__ = ["ATTENTIONS", "FIGURES", "Seq2SeqDemoConfig", "run_seq2seq_demo"]

ATTENTIONS = ("bahdanau", "none")  # the two models, in training order
FIGURES = ("training.png", "attention.png", "connectivity.png")
EXAMPLE = "Tuesday, September 27, 1994"  # the sentence of the heatmaps (docs/seq2seq.md's)


@dataclass(frozen=True)
class Seq2SeqDemoConfig:
    """Everything the seq2seq demo does; `quick()` is the tiny version for tests."""

    hidden_size: int = 64  # H of encoder and decoder (`gatescope seq2seq train`'s dates default)
    steps: int = 1500  # most steps per model; the attention model stops early when solved
    batch_size: int = 64  # pairs per step
    lr: float = 3e-3  # Adam's learning rate
    clip_norm: float = 5.0  # global gradient-norm clipping
    eval_every: int = 250  # steps between held-out evaluations (early stop)
    eval_size: int = 500  # held-out pairs of those evaluations
    test_size: int = 1000  # fresh held-out pairs of the final exact match
    n_examples: int = 8  # held-out dates translated in the report
    conn_examples: int = 16  # held-out pairs of the mean connectivity
    seed: int = 0  # initial weights and training batches
    dtype: str = "float32"  # training precision (connectivity is measured in float64)

    @classmethod
    def quick(cls) -> Seq2SeqDemoConfig:
        """Seconds end to end: tiny models, a few steps (nothing gets solved)."""
        return cls(
            hidden_size=8,
            steps=20,
            eval_every=10,
            eval_size=50,
            test_size=60,
            n_examples=3,
            conn_examples=2,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _float64(model: Seq2Seq) -> Seq2Seq:
    twin = Seq2Seq.from_config(dataclasses.replace(model.config, dtype="float64"))
    twin.load_params({k: v.astype(np.float64) for k, v in model.params.items()})
    return twin


def _mean_share(conn: np.ndarray, real: np.ndarray) -> float:
    """Mean over real output steps of the largest source entry's share of the row's sum:
    1 when each output hears one source position, 1/S when it hears all alike."""
    rows = conn[real]  # (n, S)
    sums = rows.sum(axis=1)
    ok = sums > 0
    return float((rows[ok].max(axis=1) / sums[ok]).mean()) if ok.any() else float("nan")


def run_seq2seq_demo(
    out_dir: str | os.PathLike[str],
    config: Seq2SeqDemoConfig | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    command: str = "gatescope demo seq2seq",
) -> dict[str, Any]:
    """Train, measure, draw and write everything into `out_dir`; return the summary dict."""
    config = config or Seq2SeqDemoConfig()
    log = log or (lambda line: None)
    out = os.fspath(out_dir)
    os.makedirs(out, exist_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    task = get_seq2seq_task("dates")
    train_cfg = TrainConfig(
        steps=config.steps,
        batch_size=config.batch_size,
        lr=config.lr,
        clip_norm=config.clip_norm,
        eval_every=config.eval_every,
        eval_size=config.eval_size,
        seed=config.seed,
        checkpoint_every=0,
    )
    models: dict[str, dict[str, Any]] = {}
    trained: dict[str, Seq2Seq] = {}
    histories: dict[str, list[dict[str, Any]]] = {}
    for attention in ATTENTIONS:
        model = Seq2Seq(
            task.input_size,
            task.output_size,
            config.hidden_size,
            attention=attention,
            seed=config.seed,
            dtype=config.dtype,
        )
        name = f"dates_{attention}.safetensors"
        log(f"training dates, attention={attention} ({model.num_params():,} parameters)")
        c1 = time.process_time()
        result = fit(
            task, model, train_cfg, checkpoint_path=os.path.join(out, name), progress=progress
        )
        cpu = time.process_time() - c1
        test = evaluate_model(task, model, n=config.test_size, seed=DEFAULT_TEST_SEED)
        histories[attention] = result.history
        models[attention] = {
            "exact_match": float(test["exact_match"]),
            "token_accuracy": float(test["token_accuracy"]),
            "steps": int(result.steps),
            "seconds": round(float(result.seconds), 2),
            "cpu_seconds": round(cpu, 2),
            "stop_reason": result.stop_reason,
            "solved": bool(task.solved(test)),
            "params": int(model.num_params()),
            "checkpoint": name,
            "history": result.history,
        }
        log(f"attention={attention}: exact match {test['exact_match']:.3f} ({result.steps} steps)")
        trained[attention] = _float64(model)

    # -- translations of held-out dates ------------------------------------------------------
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(7,)))
    pairs = [(EXAMPLE, "1994-09-27"), *task.pairs(config.n_examples, rng, heldout=True)]
    ids = task.encode([s for s, _ in pairs])
    outputs = {
        a: [task.decode(o) for o in m.translate(ids, max_len=task.max_target_len + 5)]
        for a, m in trained.items()
    }
    translations = [
        {"input": s, "target": t, **{a: outputs[a][i] for a in ATTENTIONS}}
        for i, (s, t) in enumerate(pairs)
    ]

    # -- where each model looks: attention and connectivity on the example -----------------
    src = task.encode([EXAMPLE])
    tgt = task.encode(["1994-09-27"], side="tgt", eos=True)  # (1, 11): the answer, EOS
    att = trained["bahdanau"]
    att.forward(src, tgt)  # teacher forcing on the right answer
    alpha = att.attention[0]  # (T, S)
    conn = {a: connectivity(m, src, tgt)[0] for a, m in trained.items()}  # (T, S) each
    batch = task.make_heldout_batch(config.conn_examples, rng)
    real = batch.y != 0  # (B, T)
    share = {a: _mean_share(connectivity(m, batch.x, batch.y), real) for a, m in trained.items()}

    # -- draw ------------------------------------------------------------------------------
    out_tokens = [*"1994-09-27", "<eos>"]
    names = {"bahdanau": "Bahdanau attention", "none": "no attention"}
    figures = {
        "training.png": lambda: viz.training_curves_figure(
            {names[a]: h for a, h in histories.items()},
            metric="exact_match",
            chance=task.baseline,
            target=task.threshold,
            title="Training on dates (held-out exact match)",
        ),
        "attention.png": lambda: attention_figure(
            alpha, list(EXAMPLE), out_tokens, title=f"attention weights: {EXAMPLE!r}"
        ),
        "connectivity.png": lambda: connectivity_figure(
            {names[a]: c for a, c in conn.items()},
            list(EXAMPLE),
            out_tokens,
            title=f"measured connectivity ||d logit / d source embedding||: {EXAMPLE!r}",
        ),
    }
    images: dict[str, bytes] = {}
    for name in FIGURES:
        images[name] = viz.png_bytes(figures[name]())
        with open(os.path.join(out, name), "wb") as f:
            f.write(images[name])
    summary: dict[str, Any] = {
        "task": {**task.to_dict(), "baseline": float(task.baseline), "solved_at": task.threshold},
        "test": {"n": config.test_size, "seed": DEFAULT_TEST_SEED},
        "models": models,
        "translations": translations,
        "example": {
            "source": EXAMPLE,
            "target": "1994-09-27",
            "attention": alpha,
            "connectivity": conn,
        },
        "connectivity_share": {
            "n": config.conn_examples,
            "value": share,
            "meaning": "mean over output steps of the largest source entry's share of its row",
        },
        "figures": list(FIGURES),
        "config": config.to_dict(),
        "command": command,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    summary["cpu_seconds"] = round(time.process_time() - c0, 2)
    with open(os.path.join(out, "report.html"), "w", encoding="utf-8") as f:
        f.write(render_seq2seq_report(summary, images))
    _write_json(os.path.join(out, "summary.json"), summary)
    return summary
