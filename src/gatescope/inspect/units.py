r"""Interpretable units: which units of a recurrent network track which property of the text.

After Karpathy, Johnson and Fei-Fei, "Visualizing and Understanding Recurrent Networks"
(2015). Arrays only (the pictures are `gatescope.viz.units`); none of these knows how the
activations were produced:

- `text_features(text)`: per character, six properties from a small, tolerant Python-aware
  scanner (any text works; unterminated strings end at the line, or at the end of the text
  for triple quotes).
- `pearson_columns(a, feature)` / `pearson_matrix(a, features)`: Pearson r of every unit's
  activation with a feature (with every feature), over the characters.
- `search_cells(activations, features)`: those correlations, best units first by |r|.
- `gate_saturation(gates)`: how often each gate is nearly shut (< 0.1) or nearly open (> 0.9).
- `excerpt(text, values)`: the window of lines where a feature varies most (what to show).

Shapes: N characters of the text, U columns (units), F features, H hidden units.

Every feature describes the state *after reading* the character, the moment at which the
unit's activation at that character is computed:

================ ==========================================================================
in_string        1 from a string literal's opening quote(s) through its last content char;
                 0 on the closing quote(s), which end it (prefixes like r, b, f are outside)
in_comment       1 from '#' (outside strings) up to, not including, the end of the line
bracket_depth    ( [ { opened and not yet closed, outside strings and comments (never < 0)
indent           columns of leading whitespace of the current line read so far (tab -> next
                 multiple of 8); 0 right after a newline
line_position    characters read on the current line (1 for its first char); 0 after '\n'
in_docstring     in_string, restricted to docstrings: a string that starts a statement at
                 bracket depth 0 whose previous code ended with ':' (a def or class body) or
                 that comes before any code (a module docstring)
================ ==========================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

FEATURE_NAMES = (
    "in_string",
    "in_comment",
    "bracket_depth",
    "indent",
    "line_position",
    "in_docstring",
)
_OPEN, _CLOSE = "([{", ")]}"
_PREFIX_CHARS = set("rRbBuUfF")

# ============================================================================ text features


def text_features(text: str) -> dict[str, np.ndarray]:
    """The six features of every character: name -> (N,) float64 (see the module docstring)."""
    N = len(text)
    f = {name: np.zeros(N) for name in FEATURE_NAMES}
    in_string, in_comment, depth_a = f["in_string"], f["in_comment"], f["bracket_depth"]
    indent_a, linepos_a, in_doc = f["indent"], f["line_position"], f["in_docstring"]

    quote = ""  # the closing delimiter of the open string literal ("" when outside)
    is_doc = False  # the open string is a docstring
    comment = False
    depth = indent = col = 0
    leading = True  # only whitespace read so far on this line
    line_start = 0  # index of the current line's first char
    last_code = ""  # last non-space char of code outside strings and comments
    code_before_line = ""  # last_code as it was when the current line began ("" at the top)
    i = 0
    while i < N:
        ch = text[i]
        n = 1  # characters consumed at this step (a triple quote opens as 3)
        if quote:  # ---------------------------------------------------------- in a string
            if ch == "\\" and i + 1 < N:
                n = 2  # an escape: the next char (quote, backslash, newline) is content
                _mark(in_string, in_doc, i, 2, is_doc)
            elif text.startswith(quote, i):
                n = len(quote)  # the closing delimiter: the string is over
                quote, last_code = "", ch
            elif ch == "\n" and len(quote) == 1:
                quote = ""  # unterminated one-line string: it ends with the line
            else:
                _mark(in_string, in_doc, i, 1, is_doc)
        elif comment:  # ------------------------------------------------------ in a comment
            if ch == "\n":
                comment = False
            else:
                in_comment[i] = 1
        elif ch == "#":
            comment = True
            in_comment[i] = 1
        elif ch in "'\"":  # --------------------------------------------------- a string opens
            quote = ch * 3 if text.startswith(ch * 3, i) else ch
            n = len(quote)
            prefix = text[line_start:i].lstrip(" \t\f")
            starts_statement = depth == 0 and len(prefix) <= 2 and set(prefix) <= _PREFIX_CHARS
            is_doc = starts_statement and code_before_line in ("", ":")
            _mark(in_string, in_doc, i, n, is_doc)
        elif ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth = max(depth - 1, 0)
        # -------------------------------------------------- line bookkeeping, per char consumed
        for j in range(i, min(i + n, N)):
            c = text[j]
            if c == "\n":
                col = indent = 0
                leading = True
                line_start = j + 1
                code_before_line = last_code
            else:
                col += 1
                if leading and c in " \t":
                    indent = (indent // 8 + 1) * 8 if c == "\t" else indent + 1
                elif c != "\f":
                    leading = False
            linepos_a[j], indent_a[j], depth_a[j] = col, indent, depth
        if not quote and not comment and ch not in " \t\n\f\r#'\"":
            last_code = ch
        i += n
    return f


def _mark(in_string: np.ndarray, in_doc: np.ndarray, i: int, n: int, is_doc: bool) -> None:
    in_string[i : i + n] = 1
    if is_doc:
        in_doc[i : i + n] = 1


# ============================================================================ correlations


def pearson_columns(a: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Pearson r of each column of `a` (N, U) with `feature` (N,); 0 for a constant column.

    Returns (U,), with x = feature and means over the N rows:

        r[u] = sum_n (a[n, u] - mean_u)(x[n] - mean_x)
               / sqrt(sum_n (a[n, u] - mean_u)^2 * sum_n (x[n] - mean_x)^2)

    clipped to [-1, 1]. NaN everywhere when the feature itself is constant (r is undefined).
    """
    a = np.asarray(a, np.float64)
    x = np.asarray(feature, np.float64)
    if a.ndim != 2 or x.shape != (a.shape[0],):
        raise ValueError(f"need a (N, U) and feature (N,), got {a.shape} and {x.shape}")
    xc = x - x.mean()
    sx = np.sqrt((xc * xc).sum())
    if a.shape[0] < 2 or sx == 0:
        return np.full(a.shape[1], np.nan)
    ac = a - a.mean(axis=0)
    sa = np.sqrt((ac * ac).sum(axis=0))  # (U,)
    cov = xc @ ac  # (U,)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / (sa * sx)
    r[sa <= 1e-12 * max(1.0, float(np.abs(a).max(initial=0.0)))] = 0.0
    return np.clip(r, -1.0, 1.0)


def pearson_matrix(a: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Pearson r of every column of `a` (N, U) with every column of `features` (N, F): (U, F).

    Column j is `pearson_columns(a, features[:, j])`: 0 for a constant unit, NaN for a
    constant feature.
    """
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] != np.shape(a)[0]:
        raise ValueError(f"need a (N, U) and features (N, F), got {np.shape(a)} and {f.shape}")
    cols = [pearson_columns(a, f[:, j]) for j in range(f.shape[1])]  # F arrays (U,)
    return np.stack(cols, axis=1) if cols else np.zeros((np.shape(a)[1], 0))


def search_cells(
    activations: Mapping[tuple[int, str], np.ndarray],
    features: Mapping[str, np.ndarray],
    top: int | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """For each feature, every unit's correlation with it, best first by |r|.

    `activations`: (layer, state) -> (N, H) array, e.g. (0, "c") -> layer 0's cell states;
    `features`: name -> (N,). Returns name -> [{"layer", "unit", "state", "corr"}, ...]
    (the first `top` of them when given). A feature constant over the text gets [].
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for name, x in features.items():
        rows = []
        for (layer, state), a in activations.items():
            r = pearson_columns(a, x)
            if np.isnan(r).all():
                rows = []
                break
            rows.extend(
                {"layer": int(layer), "unit": int(u), "state": state, "corr": float(r[u])}
                for u in range(r.size)
            )
        rows.sort(key=lambda d: (-abs(d["corr"]), d["layer"], d["state"], d["unit"]))
        out[name] = rows[:top] if top else rows
    return out


def gate_saturation(
    gates: Mapping[tuple[int, str], np.ndarray], low: float = 0.1, high: float = 0.9
) -> list[dict[str, Any]]:
    """Per layer and gate: the fraction of (character, unit) pairs below `low` and above `high`.

    `gates`: (layer, gate name) -> (N, H) gate activations in [0, 1]. Per unit j:

        per_unit_below[j] = (1/N) #{n: g[n, j] < low}     below = (1/H) sum_j per_unit_below[j]
        per_unit_above[j] = (1/N) #{n: g[n, j] > high}    above = (1/H) sum_j per_unit_above[j]

    One dict per (layer, gate), sorted: "below", "above", "units" (H), "units_mostly_below"
    and "units_mostly_above" (units with a fraction over 0.5), "per_unit_below" and
    "per_unit_above" (lists of H floats: the scatter plot of Karpathy et al., figure 3).
    """
    rows = []
    for (layer, gate), g in sorted(gates.items()):
        g = np.asarray(g)
        left = (g < low).mean(axis=0)  # (H,) per unit
        right = (g > high).mean(axis=0)
        rows.append(
            {
                "layer": int(layer),
                "gate": gate,
                "below": float(left.mean()),
                "above": float(right.mean()),
                "units_mostly_below": int((left > 0.5).sum()),
                "units_mostly_above": int((right > 0.5).sum()),
                "units": int(g.shape[1]),
                "per_unit_below": left.tolist(),
                "per_unit_above": right.tolist(),
            }
        )
    return rows


def excerpt(text: str, values: np.ndarray, lines: int = 24) -> tuple[int, int]:
    """(start, end) character offsets of the `lines`-line window where `values` varies most.

    values (N,), N = len(text): the window of `lines` consecutive lines maximising the
    standard deviation of values[start:end] (the first such window on ties); the whole text
    when it has at most `lines` lines.
    """
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n" and i + 1 < len(text)]
    if len(starts) <= lines:
        return 0, len(text)
    v = np.asarray(values, np.float64)
    best, best_score = 0, -1.0
    for k in range(0, len(starts) - lines + 1):
        a, b = starts[k], starts[k + lines] if k + lines < len(starts) else len(text)
        score = float(v[a:b].std()) if b > a else 0.0
        if score > best_score + 1e-12:
            best, best_score = k, score
    end = starts[best + lines] if best + lines < len(starts) else len(text)
    return starts[best], end
