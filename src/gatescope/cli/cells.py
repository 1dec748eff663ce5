"""`gatescope cells CKPT --text PATH`: search a char-LM for units that track the text's syntax."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from . import CLIError
from .args import (
    HelpFormatter,
    add_checkpoint_or_pretrained,
    checkpoint_or_pretrained,
    positive_int,
)

GATES = {"lstm": ("i", "f", "o"), "gru": ("r", "z"), "rnn": ()}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cells",
        help="find units of a char-LM that track strings, comments, brackets, indentation",
        description="Correlate every unit (cell state c and hidden state h, every layer) of a "
        "model trained with `gatescope charlm train` with features of a text: in_string, "
        "in_comment, bracket_depth, indent, line_position, in_docstring; and measure how "
        "often each gate saturates.",
        formatter_class=HelpFormatter,
    )
    add_checkpoint_or_pretrained(p)
    p.add_argument("--text", nargs="+", required=True, metavar="PATH", help="files or folders")
    p.add_argument("--glob", help="only take files matching this from folders, e.g. '*.py'")
    p.add_argument("--max-chars", type=positive_int, default=50_000, help="read at most this much")
    p.add_argument("--top", type=positive_int, default=10, help="units listed per feature")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument("--out", metavar="DIR", help="write pictures (PNG, HTML) and cells.json here")
    p.set_defaults(handler=handler)


def analyse(checkpoint: str, texts: list[str], max_chars: int) -> dict[str, Any]:
    """Run the model over the texts and correlate; everything the outputs need."""
    import numpy as np

    from ..charlm import load_charlm, run_states
    from ..inspect.units import gate_saturation, search_cells, text_features

    model, vocab, meta = load_charlm(checkpoint)
    feats = [text_features(t) for t in texts]  # per file: each file is scanned on its own
    text = "".join(texts)[:max_chars]
    features = {k: np.concatenate([f[k] for f in feats])[: len(text)] for k in feats[0]}
    trace = run_states(model, vocab.encode(text))  # name -> (L, N, H)
    arch, L = model.config.arch, model.config.num_layers
    states = [s for s in ("c", "h") if s in trace]
    acts = {(l, s): trace[s][l] for l in range(L) for s in states}
    gates = {(l, g): trace[g][l] for l in range(L) for g in GATES[arch]}
    return {
        "text": text,
        "features": features,
        "activations": acts,
        "ranking": search_cells(acts, features),
        "saturation": gate_saturation(gates),
        "meta": meta,
    }


def _read(paths: list[str], glob: str | None) -> tuple[list[Path], list[str]]:
    from ..tasks.text import find_text_files, read_text_file

    files = find_text_files(paths, glob)
    texts = []
    for f in files:
        t = read_text_file(f)
        if t is None:
            raise CLIError(f"{f}: not a UTF-8 text file")
        texts.append(t)
    if sum(len(t) for t in texts) < 2:
        raise CLIError("--text holds fewer than 2 characters")
    return files, texts


def write_pictures(out: Path, result: dict[str, Any], top: int) -> list[str]:
    """One PNG per feature (its best unit), saturation.png, cells.html and cells.json."""
    from ..inspect import units as ic
    from ..viz import units as vu

    out.mkdir(parents=True, exist_ok=True)
    text, written, sections = result["text"], [], []
    for name, rows in result["ranking"].items():
        if not rows:
            continue
        best = rows[0]
        act = result["activations"][(best["layer"], best["state"])][:, best["unit"]]
        title = (
            f"{name}: layer {best['layer']} {best['state']}[{best['unit']}], "
            f"r = {best['corr']:+.2f} (red positive, blue negative)"
        )
        a, b = ic.excerpt(text, result["features"][name], lines=24)
        png = out / f"cell_{name}.png"
        vu.render_png(str(png), text[a:b], act[a:b], title)
        written.append(str(png))
        a, b = ic.excerpt(text, result["features"][name], lines=60)
        sections.append(vu.render_html(text[a:b], act[a:b], title))
    html_path = out / "cells.html"
    html_path.write_text(vu.units_page(sections, "gatescope: interpretable cells"), "utf-8")
    written.append(str(html_path))
    if result["saturation"]:
        sat = out / "saturation.png"
        vu.render_saturation_png(str(sat), result["saturation"])
        written.append(str(sat))
    js = out / "cells.json"
    js.write_text(json.dumps(summary(result, top), indent=1) + "\n", "utf-8")
    written.append(str(js))
    return written


def summary(result: dict[str, Any], top: int) -> dict[str, Any]:
    meta = result["meta"]
    return {
        "features": {k: v[:top] for k, v in result["ranking"].items()},
        "saturation": [
            {k: v for k, v in row.items() if not k.startswith("per_unit")}
            for row in result["saturation"]
        ],
        "chars": len(result["text"]),
        "model": meta.get("model"),
        "step": meta.get("step"),
    }


def handler(args: argparse.Namespace) -> int:
    files, texts = _read(args.text, args.glob)
    result = analyse(checkpoint_or_pretrained(args), texts, args.max_chars)
    written = write_pictures(Path(args.out), result, args.top) if args.out else []
    report = summary(result, args.top)
    report["files"] = [os.fspath(f) for f in files]
    if written:
        report["written"] = written
    if args.json:
        print(json.dumps(report))
        return 0
    _print_report(report)
    return 0


def _print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True)
    m = report["model"]
    console.print(
        f"{m['arch']} {m['num_layers']}x{m['hidden_size']} at step {report['step']}, "
        f"{report['chars']:,} characters of {len(report['files'])} file(s)"
    )
    table = Table(title="best units per feature (Pearson r over the characters)")
    table.add_column("feature")
    for k in range(3):
        table.add_column(f"#{k + 1}")
    for name, rows in report["features"].items():
        cells = [f"L{r['layer']} {r['state']}[{r['unit']}]  r={r['corr']:+.2f}" for r in rows[:3]]
        table.add_row(name, *(cells or ["constant in this text"]), *[""] * (3 - max(len(cells), 1)))
    console.print(table)
    if report["saturation"]:
        sat = Table(title="gate saturation: fraction of (char, unit) pairs")
        for col in ("layer", "gate", "< 0.1", "> 0.9", "units mostly < 0.1", "mostly > 0.9"):
            sat.add_column(col, justify="right")
        for r in report["saturation"]:
            sat.add_row(
                str(r["layer"]),
                r["gate"],
                f"{r['below']:.3f}",
                f"{r['above']:.3f}",
                f"{r['units_mostly_below']}/{r['units']}",
                f"{r['units_mostly_above']}/{r['units']}",
            )
        console.print(sat)
    for path in report.get("written", []):
        console.print(f"wrote {path}")
