"""The demo: train rnn, gru and lstm on recall, measure what happens inside, write a report.

    from gatescope.demo import DemoConfig, run_demo
    summary = run_demo("gatescope-demo", DemoConfig(length=50))

writes into the folder: one PNG per figure (the LSTM's patching maps and clamp curves among
them, from `gatescope.inspect.patching`), `summary.json`, `report.html` (self-contained)
and the three trained models as checkpoints (`lstm.safetensors`, ...), which
`gatescope plot` and `gatescope evaluate` read. Training goes through `gatescope.train.fit`;
every instrument is `gatescope.inspect`, every figure `gatescope.viz`.

Models train in `DemoConfig.dtype` (float32: fast); every measurement runs on a float64
copy of the same weights, so the gradient checks hold to float64 rounding.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from gatescope import inspect as gi
from gatescope import viz
from gatescope.inspect import patching as gp
from gatescope.model import SequenceModel
from gatescope.progress import Progress
from gatescope.tasks import get_task
from gatescope.train import TrainConfig, evaluate_model, fit
from gatescope.viz import patching as vp
from gatescope.viz.demo_page import render_report

__all__ = ["ARCHS", "DemoConfig", "float64_copy", "patch_recall", "run_demo"]

ARCHS = ("lstm", "gru", "rnn")  # training order: the one that succeeds first


@dataclass(frozen=True)
class DemoConfig:
    """Everything the demo does; `DemoConfig.quick()` is the tiny version for tests."""

    length: int = 50  # T: steps per sequence (the symbol comes at step 0)
    noise_std: float = 0.5  # noise on steps 1..T-1 (the symbol is a one-hot of height 1)
    n_symbols: int = 8  # symbols to choose from (chance = 1/n_symbols)
    hidden_size: int = 64  # H of each network
    forget_bias: float = 3.0  # LSTM: initial forget-gate bias. The textbook chapter's 1 (f ~ 0.73)
    # keeps ~1e-7 of the cell-state gradient over 50 steps and stayed at chance within 3000
    # steps on 4 of 4 seeds at H=32; with 3 (f ~ 0.95) and H=64 the LSTM solves T=50.
    update_bias: float = 0.0  # GRU: initial update-gate bias. 0 (PyTorch's) stays at chance;
    # 3 (z ~ 0.95, the GRU's forget bias) solves T=50 in 250-300 steps (2 of 2 seeds)
    steps: int = 2000  # most training steps per model (early stop when solved)
    # batch 64 and lr 3e-3 (`gatescope train`'s defaults): the LSTM solved T=50 in 400-550
    # steps on seeds 0, 1, 2 with both backends (2026-12-02, benchmarks/NOTES.md). Batch 32
    # with lr 1e-2 solved in 350-700 steps with numba but not at all with seed 0 on the
    # NumPy path: its run hung on last-bit differences between the backends.
    batch_size: int = 64  # fresh sequences per step
    lr: float = 3e-3  # Adam's learning rate
    clip_norm: float = 1.0  # global gradient-norm clipping
    eval_every: int = 50  # steps between held-out evaluations
    eval_size: int = 300  # held-out sequences (early stopping)
    # evaluations in a row that must reach 99% before early stop: with 1 the LSTM stopped at
    # step 400 at 99% held out and measured 98.0% on the 1000 test sequences
    solved_evals: int = 3
    test_size: int = 1000  # fresh test sequences for the final accuracy
    probe_size: int = 64  # sequences for gradient flow, gate traces and saturation
    seed: int = 0  # initial weights and training batches
    dtype: str = "float32"  # training precision (measurements always run in float64)
    patch_pairs: int = 16  # clean/corrupted pairs of the LSTM's patching maps (T=50: ~10 s)
    clamp_size: int = 128  # sequences per clamp step k

    @classmethod
    def quick(cls, length: int = 12) -> DemoConfig:
        """A few seconds end to end: tiny models, a few steps (nothing gets solved)."""
        return cls(
            length=length,
            hidden_size=8,
            forget_bias=1.0,
            steps=20,
            eval_every=10,
            eval_size=50,
            test_size=100,
            probe_size=8,
            patch_pairs=4,
            clamp_size=16,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIGURES = (
    "task.png",
    "training.png",
    "gates_lstm.png",
    "traces_lstm.png",
    "gates_gru.png",
    "hidden_rnn_vs_lstm.png",
    "gradient_flow.png",
    "forget_gate_product.png",
    "saturation_lstm.png",
    "saturation_gru.png",
    "patching_coarse.png",
    "patching_c.png",
    "patching_attribution.png",
    "patching_clamp.png",
)
PATCH_SEEDS = (100, 101)  # added to DemoConfig.seed: the patching pairs, the clamp sequences


def float64_copy(model: SequenceModel) -> SequenceModel:
    """The same model with float64 parameters (for measurements to float64 rounding)."""
    config = dataclasses.replace(model.config, dtype="float64")
    twin = SequenceModel(config, seed=0)
    twin.load_params({k: v.astype(np.float64) for k, v in model.params.items()})
    return twin


# --------------------------------------------------------------------------------------------
# progress


class _Stages:
    """A progress bar over the demo's stages (gatescope.progress: stderr, a terminal only)."""

    def __init__(self, total: int, enabled: bool, log: Callable[[str], None]) -> None:
        self.log = log
        self._bar = Progress("demo", total, enabled=enabled, transient=True)

    @contextmanager
    def running(self) -> Iterator[_Stages]:
        with self._bar:
            yield self

    def advance(self, what: str) -> None:
        if self._bar.enabled:
            self._bar.update(advance=1, label=what)
        else:
            self.log(what)

    def pause(self) -> Any:
        """A context in which fit's own bar may draw (rich allows one live display)."""
        return self._bar.pause()


# --------------------------------------------------------------------------------------------
# the run


def run_demo(
    out_dir: str | os.PathLike[str],
    config: DemoConfig | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    command: str = "gatescope demo",
) -> dict[str, Any]:
    """Train, measure, draw and write everything into `out_dir`; return the summary dict."""
    config = config or DemoConfig()
    log = log or (lambda line: None)
    out = os.fspath(out_dir)
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    task = get_task("recall", config.length, n_symbols=config.n_symbols, noise_std=config.noise_std)
    train_cfg = TrainConfig(
        steps=config.steps,
        batch_size=config.batch_size,
        lr=config.lr,
        clip_norm=config.clip_norm,
        eval_every=config.eval_every,
        eval_size=config.eval_size,
        seed=config.seed,
        checkpoint_every=0,
        early_stop=True,
        solved_evals=config.solved_evals,
    )
    stages = _Stages(total=len(ARCHS) + 5 + len(FIGURES), enabled=progress, log=log)
    models: dict[str, dict[str, Any]] = {}
    untrained: dict[str, SequenceModel] = {}
    trained: dict[str, SequenceModel] = {}
    histories: dict[str, list[dict[str, Any]]] = {}
    with stages.running():
        # -- train -------------------------------------------------------------------------
        for arch in ARCHS:
            opts = {"lstm": {"forget_bias": config.forget_bias}}.get(arch, {})
            if arch == "gru" and config.update_bias:
                opts = {"update_bias": config.update_bias}
            model = SequenceModel.for_task(
                task, arch, config.hidden_size, seed=config.seed, dtype=config.dtype, **opts
            )
            untrained[arch] = float64_copy(model)
            log(f"training {arch} ({model.num_params():,} parameters) on recall, T={task.length}")
            with stages.pause():
                result = fit(
                    task,
                    model,
                    train_cfg,
                    checkpoint_path=os.path.join(out, f"{arch}.safetensors"),
                    progress=progress,
                    log=None,
                )
            test = evaluate_model(task, model, n=config.test_size)
            histories[arch] = result.history
            models[arch] = {
                "test_accuracy": float(test["accuracy"]),
                "test_cross_entropy": float(test["cross_entropy"]),
                "steps": int(result.steps),
                "seconds": round(float(result.seconds), 2),
                "solved": bool(task.solved(test)),
                "stop_reason": result.stop_reason,
                "params": int(model.num_params()),
                "checkpoint": f"{arch}.safetensors",
                "history": result.history,
            }
            log(
                f"{arch}: test accuracy {test['accuracy']:.3f} after {result.steps} steps "
                f"({result.seconds:.1f}s)"
            )
            trained[arch] = float64_copy(model)
            stages.advance(f"trained {arch}")

        # -- measure -----------------------------------------------------------------------
        rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(7,)))
        probe = task.make_batch(config.probe_size, rng)  # the sequences every figure shows
        x1 = probe.x[:1]  # (1, T, D): the one sequence of the heatmaps
        flows: dict[str, dict[str, gi.GradientFlow]] = {"untrained": {}, "trained": {}}
        gf_summary: dict[str, Any] = {}
        worst = 0.0
        for arch in ARCHS:
            gf_summary[arch] = {}
            for when, m in (("untrained", untrained[arch]), ("trained", trained[arch])):
                fl = gi.model_gradient_flow(m, probe)
                flows[when][arch] = fl
                gf_summary[arch][when] = _flow_summary(fl)
                worst = max(worst, _dstate0_check(m, probe))
        gf_summary["check"] = {"max_rel_diff_dstate0": worst}
        w = {
            when: m["rnn"].recurrent.params["weight_hh_l0"]
            for when, m in (("untrained", untrained), ("trained", trained))
        }
        gf_summary["rnn_spectral_radius"] = {
            when: float(np.abs(np.linalg.eigvals(a)).max()) for when, a in w.items()
        }
        gf_summary["probe_size"] = config.probe_size
        gf_summary["symbol_steps_back"] = task.length - 1
        stages.advance("measured gradient flow")

        lstm = trained["lstm"].recurrent
        lstm(x1)
        f_trace = lstm.trace["f"]
        product = gi.forget_gate_product(f_trace)[0]  # (T + 1, H)
        cut = gi.cell_state_jacobian(lstm, x1, cut_h=True)[0]
        full = gi.cell_state_jacobian(lstm, x1, cut_h=False)[0]
        u_lstm = untrained["lstm"].recurrent
        u_lstm(x1)
        u_product = gi.forget_gate_product(u_lstm.trace["f"])[0]
        rel = np.abs(cut - product) / np.maximum(np.abs(product), np.finfo(float).tiny)
        fp_summary = {
            "max_rel_diff": float(rel.max()),
            "units": int(product.shape[1]),
            "length": int(task.length),
            "median_product_0": float(np.median(product[0])),
            "max_product_0": float(np.max(product[0])),
            "untrained_median_product_0": float(np.median(u_product[0])),
            "untrained_mean_f": float(u_lstm.trace["f"].mean()),
            "trained_mean_f": float(f_trace.mean()),
        }
        stages.advance("checked the forget-gate product")

        acts = {a: gi.gate_activations(trained[a].recurrent, x1[0]) for a in ARCHS}
        traces = gi.gate_traces(trained["lstm"].recurrent, probe.x)
        sats = {a: gi.saturation(trained[a].recurrent, probe.x) for a in ("lstm", "gru")}
        la = acts["lstm"]
        gates_summary = {
            "lstm": {
                "i_step0": float(la["i"][:, 0].mean()),
                "i_after": float(la["i"][:, 1:].mean()),
                "f_after": float(la["f"][:, 1:].mean()),
            }
        }
        hidden_summary = {}
        for a in ARCHS:
            trained[a].recurrent(probe.x)
            h = trained[a].recurrent.trace["h"]  # (B, T, H)
            hidden_summary[a] = {"saturated_fraction": float((np.abs(h) > 0.9).mean())}
        sat_summary = {
            a: {
                g: {
                    "mean_left": float(v["left"].mean()),
                    "mean_right": float(v["right"].mean()),
                    "left": [float(t) for t in v["left"]],
                    "right": [float(t) for t in v["right"]],
                }
                for g, v in s.items()
            }
            for a, s in sats.items()
        }
        stages.advance("read gates and saturation")

        patch_summary, patch = patch_recall(trained["lstm"], task, config)
        stages.advance("patched the LSTM")

        # -- draw ----------------------------------------------------------------------------
        symbol = int(probe.y[0])
        figures = {
            "task.png": lambda: viz.sequence_figure(
                x1[0],
                title=f"Recall, T = {task.length}: one input sequence",
                note=f"symbol {symbol} at step 0, then noise (std {task.noise_std:g})",
            ),
            "training.png": lambda: viz.training_curves_figure(
                histories,
                chance=task.baseline,
                target=task.threshold,
                title=f"Training on recall, T = {task.length}",
            ),
            "gates_lstm.png": lambda: viz.gate_heatmaps(
                acts["lstm"],
                "lstm",
                mark_steps=[0],
                title=f"Trained LSTM, one test sequence (symbol {symbol} at step 0)",
            ),
            "traces_lstm.png": lambda: viz.gate_traces_figure(
                traces,
                "lstm",
                title=f"Trained LSTM: gates over time, mean over {config.probe_size} sequences",
            ),
            "gates_gru.png": lambda: viz.gate_heatmaps(
                acts["gru"], "gru", mark_steps=[0], title="Trained GRU, the same sequence"
            ),
            "hidden_rnn_vs_lstm.png": lambda: viz.hidden_states_figure(
                {"rnn": acts["rnn"]["h"], "lstm": acts["lstm"]["h"]},
                title="Trained vanilla RNN and LSTM on the same sequence",
            ),
            "gradient_flow.png": lambda: viz.gradient_flow_figure(
                {
                    "untrained (initial weights)": flows["untrained"],
                    "trained": flows["trained"],
                },
                title=(
                    f"Measured gradient flow on recall, T = {task.length} "
                    f"(mean over {config.probe_size} sequences)"
                ),
            ),
            "forget_gate_product.png": lambda: viz.forget_product_figure(product, cut, full),
            "saturation_lstm.png": lambda: viz.saturation_figure(sats["lstm"], "lstm"),
            "saturation_gru.png": lambda: viz.saturation_figure(sats["gru"], "gru"),
            "patching_coarse.png": lambda: vp.coarse_map_figure(
                patch["coarse"], title="Trained LSTM: patching every unit of one quantity"
            ),
            "patching_c.png": lambda: vp.patching_map_figure(
                patch["c"], top=5, title="Trained LSTM: patching c of one unit at one step"
            ),
            "patching_attribution.png": lambda: vp.attribution_figure(patch["c"], patch["att"]),
            "patching_clamp.png": lambda: vp.clamp_figure(
                patch["clamp"], title="Trained LSTM: gates clamped from step k"
            ),
        }
        images: dict[str, bytes] = {}
        for name in FIGURES:
            fig = figures[name]()
            images[name] = viz.png_bytes(fig)
            with open(os.path.join(out, name), "wb") as f:
                f.write(images[name])
            stages.advance(f"drew {name}")

        # -- write ----------------------------------------------------------------------------
        D, H = task.input_size, config.hidden_size
        counts = [
            {"label": "D=4, H=32 (the textbook chapter's table)", **gi.parameter_counts(4, 32)},
            {"label": f"D={D}, H={H} (this demo)", **gi.parameter_counts(D, H)},
        ]
        summary: dict[str, Any] = {
            "task": {
                **task.to_dict(),
                "chance": float(task.baseline),
                "solved_at": float(task.threshold),
            },
            "training": {
                "hidden_size": config.hidden_size,
                "lr": config.lr,
                "batch_size": config.batch_size,
                "clip_norm": config.clip_norm,
                "max_steps": config.steps,
                "eval_every": config.eval_every,
                "seed": config.seed,
                "dtype": config.dtype,
                "forget_bias": config.forget_bias,
                "update_bias": config.update_bias,
                "optimizer": train_cfg.optimizer,
            },
            "test_size": config.test_size,
            "models": models,
            "gradient_flow": {
                **gf_summary,
                "curves": {
                    when: {a: fl.to_dict() for a, fl in by.items()} for when, by in flows.items()
                },
            },
            "forget_gate_product": fp_summary,
            "gates": gates_summary,
            "hidden": hidden_summary,
            "saturation": sat_summary,
            "patching": patch_summary,
            "parameter_counts": counts,
            "figures": list(FIGURES),
            "config": config.to_dict(),
            "command": command,
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        }
        summary["seconds"] = round(time.perf_counter() - t0, 2)
        with open(os.path.join(out, "report.html"), "w", encoding="utf-8") as f:
            f.write(render_report(summary, images))
        _write_json(os.path.join(out, "summary.json"), summary)
        stages.advance("wrote report.html and summary.json")
    return summary


def patch_recall(
    model: SequenceModel, task: Any, config: DemoConfig
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The LSTM's patching maps, attribution patching and clamp curves on recall.

    The metric is the logit of the clean run's symbol minus the corrupted run's (the true
    symbols, not the model's answers, so it is defined for an untrained model too).
    Returns (the summary's numbers, {"coarse", "c", "att": PatchingMap, "clamp": curves}).
    """
    t0 = time.perf_counter()
    seed_pairs, seed_clamp = (config.seed + s for s in PATCH_SEEDS)
    clean, corrupted, y = gp.recall_pairs(task, config.patch_pairs, seed_pairs)
    eye = np.eye(task.n_symbols)
    direction = eye[y] - eye[corrupted[:, 0].argmax(axis=1)]  # (N, C)
    coarse = gp.coarse_map(model, clean, corrupted, direction=direction)
    pm = gp.patching_map(model, clean, corrupted, "c", direction=direction)
    am = gp.attribution_map(model, clean, corrupted, "c", direction=direction)
    x, _, yc = gp.recall_pairs(task, config.clamp_size, seed_clamp)
    curves = gp.clamp_curve(model, x, yc, (("f", 1.0), ("f", 0.0), ("i", 0.0)))
    t, u = np.unravel_index(int(np.argmax(pm.recovered)), pm.recovered.shape)
    summary = {
        "arch": "lstm",
        "pairs": config.patch_pairs,
        "seed": seed_pairs,
        "clamp_size": config.clamp_size,
        "clamp_seed": seed_clamp,
        "metric": {
            "definition": "logit(clean symbol) - logit(corrupted symbol), last step",
            "clean": coarse.clean,
            "corrupted": coarse.corrupted,
        },
        "coarse": {q: coarse.recovered[:, j].tolist() for j, q in enumerate(coarse.labels)},
        "c": {
            "map": pm.recovered.tolist(),  # (T, H)
            "top_units": pm.top_units(5).tolist(),
            "peak": {"step": int(t), "unit": int(u), "recovered": float(pm.recovered[t, u])},
            "sum_over_units": pm.recovered.sum(axis=1).tolist(),  # (T,)
        },
        "attribution": {"quantity": "c", "correlation_with_patching": gp.correlation(pm, am)},
        "clamp": {k: v.tolist() for k, v in curves.items()},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return summary, {"coarse": coarse, "c": pm, "att": am, "clamp": curves}


def _flow_summary(fl: gi.GradientFlow) -> dict[str, Any]:
    T = len(fl.h) - 1
    k = T - 1  # the state right after the symbol step
    d: dict[str, Any] = {
        "loss": fl.loss,
        "h_at_loss": float(fl.h[0]),
        "h_at_symbol": float(fl.h[k]),
        "h_ratio": float(fl.h[k] / fl.h[0]) if fl.h[0] > 0 else None,
    }
    if fl.c is not None:
        d["c_at_symbol"] = float(fl.c[k])
        d["c_ratio"] = float(fl.c[k] / fl.h[0]) if fl.h[0] > 0 else None
    return d


def _dstate0_check(model: SequenceModel, batch: Any) -> float:
    """Relative difference of the step-by-step G_0 and one full backward's dstate0."""
    G = gi.model_state_gradients(model, batch)
    out = model.forward(batch.x)
    _, dout = model.loss(out, batch)
    model.backward(dout)
    d0 = model.recurrent.dstate0
    parts = list(d0) if isinstance(d0, tuple) else [d0]
    worst = 0.0
    for name, ref in zip(model.recurrent.state_names, parts, strict=True):
        a = G[name][..., 0, :]
        denom = float(np.linalg.norm(ref))
        if denom > 0:
            worst = max(worst, float(np.linalg.norm(a - ref)) / denom)
    return worst


def _write_json(path: str, data: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(_finite(data), f, indent=1, allow_nan=False, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)


def _finite(obj: Any) -> Any:
    """NaN and Inf (e.g. from a diverged run) become null: summary.json stays strict JSON."""
    if isinstance(obj, float | np.floating):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")
