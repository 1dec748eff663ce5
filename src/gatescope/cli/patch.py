"""`gatescope patch`: change what a model computes and see what changes.

For a recall model, `gatescope patch CKPT --out DIR` finds where it keeps the symbol. It
writes into DIR: patching_coarse.png (every quantity, all units, one step at a time),
patching_c.png and patching_h.png (one (step, unit) at a time; the cell state and the hidden
state), patching_attribution.png (attribution patching against real patching, c),
patching_clamp.png (accuracy with f held at 1 or 0, or i at 0, from step k), and
patching.json with the numbers behind them.

For a character LM, `gatescope patch --pretrained --feature bracket_depth [--unit 0:80]`
tests whether a unit that tracks a feature of the text matters: it ablates the unit (mean or
zero) and measures the change in p(the characters the feature predicts) against random units
of the same layer (`gatescope.inspect.patching.FEATURE_CHARS`, `unit_ablation`). Without
--unit, the best units `gatescope cells` finds for the feature are tested.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from gatescope.inspect.units import FEATURE_NAMES

from . import CLIError
from .args import (
    HelpFormatter,
    add_checkpoint_or_pretrained,
    checkpoint_or_pretrained,
    nonnegative_int,
    positive_int,
)

FEATURES = FEATURE_NAMES  # what `gatescope cells` correlates, each with its characters


def unit_spec(text: str) -> tuple[int, int]:
    """'LAYER:UNIT' (e.g. '0:80') -> (layer, unit)."""
    parts = text.split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"must be LAYER:UNIT, e.g. 0:80, got {text!r}")
    return int(parts[0]), int(parts[1])


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "patch",
        help="activation patching and clamped gates of a recall model; causal tests of "
        "char-LM units",
        description="Two uses. (1) A recall checkpoint (from `gatescope train --task recall`) "
        "and --out DIR: patch its gates and states from clean runs into corrupted ones (the "
        "same noise, another symbol) and draw where the symbol is kept: a (steps x quantity) "
        "map, (steps x units) maps of c and h, attribution patching against the real map, and "
        "accuracy with clamped gates against the step k they are clamped from. (2) A char LM "
        "(CKPT from `gatescope charlm train`, or --pretrained) and --feature NAME: ablate a "
        "unit (--unit LAYER:UNIT, or the units `gatescope cells` finds best for the feature) "
        "and measure the change in the model's probability of the characters the feature "
        "predicts (bracket_depth: ) ] }; in_string, in_docstring: quotes; in_comment, "
        "line_position: a newline; indent: a space), against random units of the same layer.",
        formatter_class=HelpFormatter,
    )
    add_checkpoint_or_pretrained(p, help="model file (.safetensors)")
    p.add_argument("--out", metavar="DIR", help="folder for the PNGs and JSON (recall: needed)")
    g = p.add_argument_group("recall models")
    g.add_argument("--pairs", type=positive_int, default=32, help="clean/corrupted pairs")
    g.add_argument("--clamp-batch", type=positive_int, default=256, help="sequences per k")
    g.add_argument("--layer", type=nonnegative_int, default=0, help="layer of the stack")
    p.add_argument(
        "--seed", type=nonnegative_int, default=0,
        help="seed of the probe data (recall) or of the random units (char LMs)",
    )  # fmt: skip
    c = p.add_argument_group("character LMs")
    c.add_argument(
        "--feature", choices=FEATURES, metavar="NAME",
        help=f"the feature the unit tracks: {', '.join(FEATURES)}",
    )  # fmt: skip
    c.add_argument(
        "--unit", type=unit_spec, action="append", metavar="LAYER:UNIT",
        help="the unit to test (repeatable); default: the --top best units for the feature",
    )  # fmt: skip
    c.add_argument(
        "--state", choices=("c", "h"),
        help="what to ablate at every step (default: the state `cells` found the unit on; "
        "c for an LSTM's --unit, h otherwise)",
    )  # fmt: skip
    c.add_argument("--mode", choices=("mean", "zero"), default="mean", help="ablate to what")
    c.add_argument("--random", type=positive_int, default=20, help="random units to compare")
    c.add_argument("--top", type=positive_int, default=3, help="units tested without --unit")
    c.add_argument(
        "--text", nargs="+", metavar="PATH",
        help="held-out text (files or folders); default for --pretrained: the files its "
        "training left out",
    )  # fmt: skip
    c.add_argument("--glob", help="only take files matching this from folders, e.g. '*.py'")
    c.add_argument("--chars", type=positive_int, default=20_000, help="read at most this much")
    c.add_argument("--seq-len", type=positive_int, default=200, help="characters per row")
    c.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(handler=handler)


def handler(args: argparse.Namespace) -> int:
    from gatescope.charlm import is_charlm
    from gatescope.model import load_model

    path = checkpoint_or_pretrained(args)
    if not os.path.isfile(path):
        raise CLIError(f"{path}: no such file")
    model, meta = load_model(path)
    if is_charlm(meta):
        return unit_handler(args, path)
    if args.feature or args.unit:
        name = meta.get("task", {}).get("name") if isinstance(meta.get("task"), dict) else None
        raise CLIError(
            f"{path}: --feature and --unit test units of a character LM (from `gatescope "
            f"charlm train`, or --pretrained); this model's task is {name!r}"
        )
    return recall_handler(args, path, model, meta)


def recall_handler(args: argparse.Namespace, path: str, model: Any, meta: dict) -> int:
    """Maps, attribution and clamps of a recall model, drawn into --out."""
    from gatescope.inspect import patching as P
    from gatescope.tasks import task_from_dict
    from gatescope.viz import figures
    from gatescope.viz import patching as V

    task_meta = meta.get("task")
    if not isinstance(task_meta, dict) or task_meta.get("name") != "recall":
        name = task_meta.get("name") if isinstance(task_meta, dict) else None
        raise CLIError(
            f"{path}: patch reads recall models (from `gatescope train --task recall`) and "
            f"character LMs, this one's task is {name!r}"
        )
    if not args.out:
        raise CLIError("give --out DIR: the folder for a recall model's maps and patching.json")
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
        "checkpoint": os.path.abspath(path),
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


# ----------------------------------------------------------------------------- char LMs


def _heldout_texts(args: argparse.Namespace) -> tuple[list[Path], list[str]]:
    """--text, or for --pretrained the files its training left out (those on this machine)."""
    from gatescope import pretrained

    from .cells import _read

    if args.text:
        return _read(args.text, args.glob)
    if not args.pretrained:
        raise CLIError("give --text PATH: held-out text for the model (files it never read)")
    files = [f for f in pretrained.info(args.pretrained)["heldout_files"] if os.path.isfile(f)]
    if not files:
        raise CLIError(
            f"the held-out files of the pretrained model {args.pretrained!r} are not on this "
            "machine (a Python 3.11 standard library); give --text PATH"
        )
    return _read(files, None)


def _units_to_test(args: argparse.Namespace, model: Any, ranking: list | None) -> list[dict]:
    """[{"layer", "unit", "state", "corr"}]: the --unit ones, or the best distinct units of
    `ranking` (`gatescope cells`' for the feature). With ranking None, only checks --unit
    and --state against the model."""
    cfg = model.config
    L, H = cfg.num_layers, cfg.hidden_size
    states = ("c", "h") if cfg.arch == "lstm" else ("h",)
    if args.state and args.state not in states:
        raise CLIError(f"--state {args.state}: a {cfg.arch.upper()} has no cell state c")
    for layer, unit in args.unit or ():
        if layer >= L or unit >= H:
            raise CLIError(
                f"--unit {layer}:{unit} out of range: the model has {L} layer(s) of {H} "
                f"units (LAYER < {L}, UNIT < {H})"
            )
    if ranking is None:  # the arguments checked, before the text is read
        return []
    corr = {(r["layer"], r["state"], r["unit"]): r["corr"] for r in ranking}
    if args.unit:
        out = []
        for layer, unit in args.unit:
            state = args.state or states[0]
            out.append({"layer": layer, "unit": unit, "state": state,
                        "corr": corr.get((layer, state, unit))})  # fmt: skip
        return out
    seen, out = set(), []
    for r in ranking:
        if args.state and r["state"] != args.state or (r["layer"], r["unit"]) in seen:
            continue
        seen.add((r["layer"], r["unit"]))
        out.append(dict(r))
        if len(out) == args.top:
            break
    return out


def verdict(row: dict[str, Any]) -> str:
    """One plain sentence: does the unit matter for the characters its feature predicts?"""
    where = f"L{row['layer']} {row['state']}[{row['unit']}]"
    r = "" if row["corr"] is None else f" (r = {row['corr']:+.2f} with {row['feature']})"
    rand = row["random"]
    p0, p1 = row["base"], row["base"] + row["delta"]
    change = f"{p0:.3f} -> {p1:.3f} ({row['delta']:+.3f}, {row['relative']:+.0%})"
    if row["matters"]:
        return (
            f"{where}{r} matters: {row['mode']}-ablated, p({row['chars']}) goes {change}; "
            f"none of {len(rand['units'])} random units of layer {row['layer']} moves it as "
            f"much (largest |change| {rand['max_abs']:.3f}, median {rand['median_abs']:.4f})."
        )
    lead = f"{where}{r} correlates but does not matter" if r else f"{where} does not matter"
    return (
        f"{lead} more than random units: {row['mode']}-ablated, p({row['chars']}) goes "
        f"{change}, and {row['beaten_by']} of {len(rand['units'])} random units of layer "
        f"{row['layer']} move it as much or more (largest |change| {rand['max_abs']:.3f})."
    )


def unit_handler(args: argparse.Namespace, path: str) -> int:
    """Ablate char-LM units that track --feature; print (or --json) what it changes."""
    import numpy as np

    from gatescope.charlm import load_charlm
    from gatescope.inspect import patching as P

    from .cells import analyse

    if not args.feature:
        raise CLIError(
            f"{path} is a character LM: give --feature NAME (one of {', '.join(FEATURES)}) "
            "and optionally --unit LAYER:UNIT"
        )
    model, vocab, _ = load_charlm(path)
    _units_to_test(args, model, None)
    classes = P.feature_classes(vocab, args.feature)
    chars = " ".join(repr(c) for c in vocab.decode(classes))
    files, texts = _heldout_texts(args)
    t0 = time.perf_counter()
    found = analyse(path, texts, args.chars)
    ranking = found["ranking"][args.feature]
    if not ranking:
        raise CLIError(f"--feature {args.feature} is constant over this text: nothing to test")
    units = _units_to_test(args, model, ranking)
    text = found["text"]
    lengths = np.cumsum([len(t) for t in texts])
    files = files[: int(np.searchsorted(lengths, len(text))) + 1]  # the files text comes from
    if len(text) <= args.seq_len:
        raise CLIError(
            f"--text has {len(text)} characters: need more than --seq-len {args.seq_len}"
        )
    x, targets = P.text_rows(vocab.encode(text), args.seq_len)
    on = found["features"][args.feature][: x.size].reshape(x.shape) > 0  # (R, T): feature on
    if not (np.isin(targets, classes) & on).any():
        raise CLIError(f"this text never has {chars} next where {args.feature} is on")
    rows = []
    for u in units:
        res = P.unit_ablation(
            model, x, targets, classes, u["unit"], layer=u["layer"], quantity=u["state"],
            mode=args.mode, n_random=args.random, seed=args.seed, where=on,
        )  # fmt: skip
        ad = np.abs(res.random_deltas)
        row = {
            **u,
            "feature": args.feature,
            "chars": chars,
            "mode": args.mode,
            "base": res.base,
            "delta": res.delta,
            "relative": res.delta / res.base if res.base > 0 else float("nan"),
            "matters": res.matters,
            "beaten_by": res.beaten_by,
            "percentile": res.percentile,
            "predictions": res.count,
            "random": {"units": res.random_units.tolist(), "deltas": res.random_deltas.tolist(),
                       "max_abs": float(ad.max()), "median_abs": float(np.median(ad))},
            "_result": res,
        }  # fmt: skip
        row["verdict"] = verdict(row)
        rows.append(row)
    report = {
        "model": path,
        "feature": args.feature,
        "characters": vocab.decode(classes),
        "mode": args.mode,
        "files": [os.fspath(f) for f in files],
        "chars": len(text),
        "rows": int(x.shape[0]),
        "seq_len": args.seq_len,
        "seed": args.seed,
        "units": [{k: v for k, v in r.items() if k != "_result"} for r in rows],
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if args.out:
        report["written"] = _write_ablation(Path(args.out), report, [r["_result"] for r in rows])
    if args.json:
        print(json.dumps(report))
        return 0
    print(
        f"{args.feature}: p({chars}) at the {rows[0]['predictions']:,} places where "
        f"{args.feature} is on and one comes next, in {len(text):,} held-out characters "
        f"({len(files)} file(s), rows of {args.seq_len})"
    )
    for r in rows:
        print(r["verdict"])
    for w in report.get("written", []):
        print(f"wrote {w}")
    return 0


def _write_ablation(out: Path, report: dict[str, Any], results: list) -> list[str]:
    from gatescope.viz import figures
    from gatescope.viz import patching as V

    out.mkdir(parents=True, exist_ok=True)
    feature = report["feature"]
    fig = V.ablation_figure(results, title=f"{feature}: ablating units against random ones")
    written = [figures.save(fig, str(out / f"ablation_{feature}.png"))]
    path = out / f"ablation_{feature}.json"
    path.write_text(json.dumps(report, indent=1) + "\n", "utf-8")
    return [*written, str(path)]
