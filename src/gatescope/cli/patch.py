"""`gatescope patch CKPT --out DIR`: where a recall model keeps the symbol, found by patching.

Writes into DIR: patching_coarse.png (every quantity, all units, one step at a time),
patching_c.png and patching_h.png (one (step, unit) at a time; the cell state and the hidden
state), patching_attribution.png (attribution patching against real patching, c),
patching_clamp.png (accuracy with f held at 1 or 0, or i at 0, from step k), and
patching.json with the numbers behind them.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from . import CLIError
from .args import HelpFormatter, nonnegative_int, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "patch",
        help="activation patching, attribution patching and clamped gates of a recall model",
        description="Patch the gates and states of a recall checkpoint (from `gatescope "
        "train --task recall`) from clean runs into corrupted ones (the same noise, another "
        "symbol) and draw where the symbol is kept: a (steps x quantity) map, (steps x units) "
        "maps of c and h, attribution patching against the real map, and accuracy with "
        "clamped gates against the step k they are clamped from.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("checkpoint", metavar="CKPT", help="model file (.safetensors)")
    p.add_argument("--out", metavar="DIR", required=True, help="folder for the PNGs and JSON")
    p.add_argument("--pairs", type=positive_int, default=32, help="clean/corrupted pairs")
    p.add_argument("--clamp-batch", type=positive_int, default=256, help="sequences per k")
    p.add_argument("--layer", type=nonnegative_int, default=0, help="layer of the stack")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the probe data")
    p.set_defaults(handler=handler)


def handler(args: argparse.Namespace) -> int:
    from gatescope.inspect import patching as P
    from gatescope.model import load_model
    from gatescope.tasks import task_from_dict
    from gatescope.viz import figures
    from gatescope.viz import patching as V

    if not os.path.isfile(args.checkpoint):
        raise CLIError(f"{args.checkpoint}: no such file")
    model, meta = load_model(args.checkpoint)
    task_meta = meta.get("task")
    if not isinstance(task_meta, dict) or task_meta.get("name") != "recall":
        name = task_meta.get("name") if isinstance(task_meta, dict) else None
        raise CLIError(
            f"{args.checkpoint}: patch reads recall models (from `gatescope train --task "
            f"recall`), this one's task is {name!r}"
        )
    if args.layer >= model.config.num_layers:
        raise CLIError(f"--layer must be < {model.config.num_layers} (the model's layers)")
    task = task_from_dict(task_meta)
    clean, corrupted, _ = P.recall_pairs(task, args.pairs, args.seed)
    layer = args.layer
    t0 = time.perf_counter()
    coarse = P.coarse_map(model, clean, corrupted, layer=layer)
    t_coarse = time.perf_counter() - t0
    maps = {}
    seconds = {"coarse": t_coarse}
    states = model.recurrent.state_names  # ("h", "c") or ("h",)
    for q in states:
        t0 = time.perf_counter()
        maps[q] = P.patching_map(model, clean, corrupted, q, layer=layer)
        seconds[q] = time.perf_counter() - t0
    main_q = "c" if "c" in states else "h"
    t0 = time.perf_counter()
    attr = P.attribution_map(model, clean, corrupted, main_q, layer=layer)
    seconds["attribution"] = time.perf_counter() - t0
    probe_x, _, probe_y = P.recall_pairs(task, args.clamp_batch, args.seed + 1)
    clamps = (("f", 1.0), ("f", 0.0), ("i", 0.0)) if model.config.arch == "lstm" else ()
    if model.config.arch == "gru":
        clamps = (("z", 1.0), ("z", 0.0))
    curves = P.clamp_curve(model, probe_x, probe_y, clamps, layer=layer) if clamps else {}

    os.makedirs(args.out, exist_ok=True)
    written = [
        figures.save(V.coarse_map_figure(coarse), os.path.join(args.out, "patching_coarse.png"))
    ]
    for q, pm in maps.items():
        fig = V.patching_map_figure(pm, top=5)
        written.append(figures.save(fig, os.path.join(args.out, f"patching_{q}.png")))
    fig = V.attribution_figure(maps[main_q], attr)
    written.append(figures.save(fig, os.path.join(args.out, "patching_attribution.png")))
    if curves:
        written.append(
            figures.save(V.clamp_figure(curves), os.path.join(args.out, "patching_clamp.png"))
        )
    report = {
        "checkpoint": os.path.abspath(args.checkpoint),
        "task": task_meta,
        "pairs": args.pairs,
        "seed": args.seed,
        "layer": layer,
        "metric": {"clean": coarse.clean, "corrupted": coarse.corrupted,
                   "definition": "logit(clean answer) - logit(corrupted answer), last step"},
        "coarse": {q: coarse.recovered[:, j].tolist() for j, q in enumerate(coarse.labels)},
        "maps": {q: pm.recovered.tolist() for q, pm in maps.items()},
        "top_units": {q: pm.top_units(5).tolist() for q, pm in maps.items()},
        "attribution": {"quantity": main_q, "map": attr.recovered.tolist(),
                        "correlation_with_patching": P.correlation(attr, maps[main_q])},
        "clamp": {k: v.tolist() for k, v in curves.items()},
        "seconds": seconds,
    }  # fmt: skip
    path = os.path.join(args.out, "patching.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    written.append(path)
    r = report["attribution"]["correlation_with_patching"]
    print(
        f"{main_q}: top units {report['top_units'][main_q]}; attribution vs patching r = {r:.2f}; "
        f"map of {main_q} in {seconds[main_q]:.1f} s"
    )
    for w in written:
        print(f"wrote {w}")
    return 0
