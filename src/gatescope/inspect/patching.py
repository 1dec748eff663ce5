r"""Where the memory lives, found by changing it: activation patching, attribution patching,
clamped gates and unit ablations on a `SequenceModel`. Arrays only (figures:
`gatescope.viz.patching`).

    pm = patching_map(model, clean, corrupted, quantity="c")    # (T, H): patch one (t, u)
    cm = coarse_map(model, clean, corrupted)                     # (T, Q): one quantity, all units
    am = attribution_map(model, clean, corrupted, quantity="c")  # (T, H): one backward pass
    curves = clamp_curve(model, x, y, [("f", 1.0), ("f", 0.0), ("i", 0.0)])
    ab = unit_ablation(model, ids, targets, classes=[vocab[")"]], unit=17)
    x, targets = text_rows(vocab.encode(text), 200)             # a char LM's text as rows
    ab = unit_ablation(model, x, targets, feature_classes(vocab, "bracket_depth"), unit=80)

The metric. For N pairs (clean_n, corrupted_n) the model's output at the last step is read
through a direction d_n (C,): m_n = out_n . d_n, by default the logit difference between the
clean run's answer and the corrupted run's (d_n = e_{a_clean} - e_{a_corrupted}). With means
over the pairs, the recovered fraction of a patch is

    R = (mean m_patched - mean m_corrupted) / (mean m_clean - mean m_corrupted)

1 when the patch brings the clean answer back, 0 when it changes nothing.

A patch of quantity q at (t, u) runs the corrupted input with q_t[u] set to its value in the
clean run. It changes nothing before step t, so it starts from the corrupted run's state at
step t - 1 and runs steps t..T-1 only, every unit's patch (and every pair) as one batch,
chunked to bound memory (`max_rows`).

Attribution patching (Nanda 2023) is the first-order estimate of the same map from one
backward pass on the corrupted run: R_att[t, u] = mean_n dm_n/dq_t[u] (q_clean - q_corrupted)
/ (mean m_clean - mean m_corrupted).

Shapes: N pairs (or sequences), T steps, D inputs, H hidden units, C outputs, Q quantities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gatescope.nn.checks import Seed, as_generator
from gatescope.nn.edits import EditPlan

from .interventions import Edit, compile_edits, recurrent_of, run_edited

__all__ = [
    "FEATURE_CHARS",
    "AblationResult",
    "PatchingMap",
    "attribution_map",
    "clamp_curve",
    "coarse_map",
    "correlation",
    "feature_classes",
    "patching_map",
    "recall_pairs",
    "text_rows",
    "unit_ablation",
]

MAX_ROWS = 1024  # sequences per patched forward: bounds memory (rows x T x 7H floats)


@dataclass(frozen=True)
class PatchingMap:
    """A recovered-fraction map and what it was computed from."""

    recovered: np.ndarray  # (T, H) (patching, attribution) or (T, Q) (coarse): R per patch
    labels: tuple[str, ...]  # column names: units "0".."H-1", or the quantities
    quantity: str  # the quantity patched ("*" for a coarse map)
    layer: int  # the layer of the stack
    clean: float  # mean metric of the clean run
    corrupted: float  # mean metric of the corrupted run
    method: str  # "patching" or "attribution"

    def top_units(self, k: int = 5) -> np.ndarray:
        """The k columns with the largest recovered fraction summed over steps, best first."""
        return np.argsort(-self.recovered.sum(axis=0), kind="stable")[:k]


def correlation(a: PatchingMap | np.ndarray, b: PatchingMap | np.ndarray) -> float:
    """Pearson r between two maps' entries (e.g. attribution against real patching)."""
    x = np.ravel(getattr(a, "recovered", a))
    y = np.ravel(getattr(b, "recovered", b))
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def recall_pairs(task: Any, n: int, seed: Seed = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n (clean, corrupted) pairs of a recall task: the same noise, another symbol at step 0.

    Returns clean (n, T, D), corrupted (n, T, D) and the clean labels y (n,).
    """
    if getattr(task, "name", None) != "recall":
        raise ValueError(f"recall_pairs needs a recall task, got {getattr(task, 'name', task)!r}")
    rng = as_generator(seed)
    batch = task.make_batch(n, rng)
    D = task.n_symbols
    other = (batch.y + rng.integers(1, D, size=len(batch.y))) % D  # (n,), never batch.y
    corrupted = batch.x.copy()
    corrupted[:, 0] = np.eye(D)[other]  # (n, D)
    return batch.x, corrupted, batch.y


# ----------------------------------------------------------------------------- the runs


def _empty_plans(layer) -> list[EditPlan]:
    return [EditPlan({}) for _ in range(layer.num_layers)]


def _last(out: np.ndarray) -> np.ndarray:
    """The output at the last step: (N, C) from (N, C) or (N, T, C)."""
    return out[:, -1] if out.ndim == 3 else out


def _reference_run(model: Any, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(last-step output (N, C), trace copied, each (L, N, T, H)) of an unedited reference run."""
    layer = recurrent_of(model)
    out = _last(np.asarray(run_edited(model, x, _empty_plans(layer)), dtype=np.float64))
    tr = layer.trace
    L = layer.num_layers
    trace = {k: (v if L > 1 else v[None]).copy() for k, v in tr.items()}  # (L, N, T, H)
    return out, trace


@dataclass
class _Pair:
    """The clean and corrupted runs of N pairs, and the metric's direction."""

    clean_x: np.ndarray
    corrupt_x: np.ndarray
    clean: dict[str, np.ndarray]  # trace, each (L, N, T, H)
    corrupt: dict[str, np.ndarray]
    direction: np.ndarray  # (N, C)
    m_clean: np.ndarray  # (N,)
    m_corrupt: np.ndarray  # (N,)

    @property
    def span(self) -> float:
        return float(self.m_clean.mean() - self.m_corrupt.mean())


def _pair(model: Any, clean: Any, corrupted: Any, direction: np.ndarray | None) -> _Pair:
    clean, corrupted = np.asarray(clean), np.asarray(corrupted)
    if clean.shape != corrupted.shape:
        raise ValueError(
            f"clean and corrupted must have one shape, got {clean.shape} and {corrupted.shape}"
        )
    out_c, tr_c = _reference_run(model, clean)
    out_k, tr_k = _reference_run(model, corrupted)
    N, C = out_c.shape
    if direction is None:  # logit difference: the clean answer against the corrupted one
        direction = np.zeros((N, C))
        direction[np.arange(N), out_c.argmax(axis=1)] += 1.0
        direction[np.arange(N), out_k.argmax(axis=1)] -= 1.0
    direction = np.broadcast_to(np.asarray(direction, dtype=np.float64), (N, C))
    m_c, m_k = (out_c * direction).sum(axis=1), (out_k * direction).sum(axis=1)
    pair = _Pair(clean, corrupted, tr_c, tr_k, direction, m_c, m_k)
    if abs(pair.span) < 1e-12:
        raise ValueError(
            "clean and corrupted give the same metric: nothing to recover (choose inputs "
            "whose answers differ, or pass direction=)"
        )
    return pair


def _state_at(layer, trace: dict[str, np.ndarray], t: int, rows: np.ndarray) -> Any:
    """The stack's state after step t - 1 of a run (zeros for t = 0), for `rows` of it."""
    R = len(rows)
    if t == 0:
        return layer.zero_state(R)
    parts = [trace[n][:, rows, t - 1] for n in layer.state_names]  # each (L, R, H)
    parts = [p[0] if layer.num_layers == 1 else p for p in parts]
    return parts[0] if len(parts) == 1 else tuple(parts)


def _patched_metrics(
    model: Any,
    pair: _Pair,
    layer_index: int,
    t: int,
    patches: Sequence[tuple[str, np.ndarray]],
    max_rows: int,
) -> np.ndarray:
    """m of every pair under each patch at step t: (P, N). A patch (q, units) sets q_t at
    those units of layer `layer_index` to the clean run's values."""
    layer = recurrent_of(model)
    N = pair.m_clean.shape[0]
    H, dt = layer.hidden_size, layer.dtype
    P = len(patches)
    out = np.empty(P * N)
    x_suffix = pair.corrupt_x[:, t:]  # steps t..T-1
    for start in range(0, P * N, max_rows):
        rows = np.arange(start, min(P * N, start + max_rows))  # row = patch * N + pair
        p_of, n_of = rows // N, rows % N
        R = len(rows)
        entries: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}
        for q in {patches[p][0] for p in p_of}:
            mul, add = np.ones((R, H), dt), np.zeros((R, H), dt)  # (R, H)
            clean_q = pair.clean[q][layer_index, :, t]  # (N, H)
            for r, p in enumerate(p_of):
                pq, units = patches[p]
                if pq == q:
                    mul[r, units] = 0
                    add[r, units] = clean_q[n_of[r], units]
            entries[(0, q)] = (mul, add)
        plans = _empty_plans(layer)
        plans[layer_index] = EditPlan(entries)
        state0 = _state_at(layer, pair.corrupt, t, n_of)
        o = _last(np.asarray(run_edited(model, x_suffix[n_of], plans, state0), np.float64))
        out[rows] = (o * pair.direction[n_of]).sum(axis=1)
    return out.reshape(P, N)


def _check_quantity(layer, quantity: str, layer_index: int) -> None:
    if quantity not in layer.trace_names:
        raise ValueError(
            f"quantity must be one of {' '.join(layer.trace_names)} for a "
            f"{layer.arch.upper()}, got {quantity!r}"
        )
    if not 0 <= layer_index < layer.num_layers:
        raise ValueError(f"layer {layer_index} out of range for {layer.num_layers} layer(s)")


# ----------------------------------------------------------------------------- the maps


def _map(pair: _Pair, recovered: np.ndarray, labels, quantity: str, layer: int, method: str):
    """A PatchingMap of `recovered` with the pair's mean clean and corrupted metrics."""
    return PatchingMap(
        recovered, tuple(labels), quantity, layer, float(pair.m_clean.mean()),
        float(pair.m_corrupt.mean()), method,
    )  # fmt: skip


def _patch_every_step(model, pair: _Pair, layer: int, patches, max_rows: int) -> np.ndarray:
    """Recovered fraction of each patch (quantity, units) at each step: (T, len(patches))."""
    T = pair.clean[patches[0][0]].shape[2]
    m = np.stack([_patched_metrics(model, pair, layer, t, patches, max_rows) for t in range(T)])
    return (m.mean(axis=2) - pair.m_corrupt.mean()) / pair.span  # (T, P)


def patching_map(
    model: Any,
    clean: Any,
    corrupted: Any,
    quantity: str = "c",
    *,
    layer: int = 0,
    direction: np.ndarray | None = None,
    max_rows: int = MAX_ROWS,
) -> PatchingMap:
    """Recovered fraction of patching `quantity` at one (step, unit) at a time: (T, H).

    clean, corrupted: N input pairs as the model takes them ((N, T, D) floats or (N, T)
    ids). direction (N, C) or (C,): the metric (default: the logit difference, see the
    module docstring). Each step's H patches x N pairs run as one batch (chunks of max_rows).
    """
    rec = recurrent_of(model)
    _check_quantity(rec, quantity, layer)
    pair = _pair(model, clean, corrupted, direction)
    H = rec.hidden_size
    patches = [(quantity, np.array([u])) for u in range(H)]
    recovered = _patch_every_step(model, pair, layer, patches, max_rows)  # (T, H)
    return _map(pair, recovered, (str(u) for u in range(H)), quantity, layer, "patching")


def coarse_map(
    model: Any,
    clean: Any,
    corrupted: Any,
    quantities: Sequence[str] | None = None,
    *,
    layer: int = 0,
    direction: np.ndarray | None = None,
    max_rows: int = MAX_ROWS,
) -> PatchingMap:
    """Recovered fraction of patching every unit of one quantity at one step: (T, Q).

    quantities: default every trace name of the architecture (LSTM i f g o c h).
    """
    rec = recurrent_of(model)
    quantities = tuple(quantities or rec.trace_names)
    for q in quantities:
        _check_quantity(rec, q, layer)
    pair = _pair(model, clean, corrupted, direction)
    patches = [(q, np.arange(rec.hidden_size)) for q in quantities]
    recovered = _patch_every_step(model, pair, layer, patches, max_rows)  # (T, Q)
    return _map(pair, recovered, quantities, "*", layer, "patching")


def attribution_map(
    model: Any,
    clean: Any,
    corrupted: Any,
    quantity: str = "c",
    *,
    layer: int = 0,
    direction: np.ndarray | None = None,
) -> PatchingMap:
    """Attribution patching: the first-order estimate of `patching_map` from one backward
    pass on the corrupted run, R_att[t, u] = mean_n dm_n/dq_t[u] (q_clean - q_corrupted)
    / (mean m_clean - mean m_corrupted): (T, H)."""
    rec = recurrent_of(model)
    _check_quantity(rec, quantity, layer)
    pair = _pair(model, clean, corrupted, direction)
    T = pair.clean[quantity].shape[2]
    # watch entries: change nothing, record dm/dq_t during backward
    watch = EditPlan({(t, quantity): (None, None) for t in range(T)}, keep_grads=True)
    plans = _empty_plans(rec)
    plans[layer] = watch
    out = np.asarray(run_edited(model, pair.corrupt_x, plans))
    dout = np.zeros(out.shape, dtype=rec.dtype)  # (N, C) or (N, T, C)
    if out.ndim == 3:
        dout[:, -1] = pair.direction
    else:
        dout[...] = pair.direction
    model.backward(dout)
    grad = np.stack([watch.grads[(t, quantity)] for t in range(T)], axis=1)  # (N, T, H)
    diff = pair.clean[quantity][layer] - pair.corrupt[quantity][layer]  # (N, T, H)
    recovered = (grad * diff).mean(axis=0) / pair.span  # (T, H)
    labels = (str(u) for u in range(rec.hidden_size))
    return _map(pair, recovered, labels, quantity, layer, "attribution")


# ----------------------------------------------------------------------------- clamps


def clamp_curve(
    model: Any,
    x: Any,
    y: np.ndarray,
    clamps: Sequence[tuple[str, float]] = (("f", 1.0), ("f", 0.0), ("i", 0.0)),
    ks: Sequence[int] | None = None,
    *,
    layer: int = 0,
) -> dict[str, np.ndarray]:
    """Accuracy against k with a gate held at a value from step k to the end, every unit.

    x: N sequences as the model takes them, y (N,) the classes read at the last step.
    clamps: (gate, value) pairs, e.g. forget gate at 1 or 0, input gate closed (i = 0).
    Returns {"k": (K,), "f=1": (K,), ...}: accuracy at each k (default every step).
    """
    x = np.asarray(x)
    y = np.asarray(y)
    T = x.shape[1]
    ks = np.arange(T) if ks is None else np.asarray(ks, dtype=int)
    out: dict[str, np.ndarray] = {"k": ks}
    rec = recurrent_of(model)
    for gate, value in clamps:
        _check_quantity(rec, gate, layer)
        acc = np.empty(len(ks))
        for j, k in enumerate(ks):
            edit = Edit(gate, steps=slice(int(k), None), layer=layer, value=float(value))
            plans = compile_edits(rec, [edit], len(x), T)
            o = _last(np.asarray(run_edited(model, x, plans)))
            acc[j] = float((o.argmax(axis=1) == y).mean())
        out[f"{gate}={value:g}"] = acc
    return out


# ----------------------------------------------------------------------------- units


# Characters whose probability a feature of `gatescope.inspect.units.text_features` bears on
# most directly: where the feature is "on", these are how it ends (or goes on). The causal
# test of a unit that tracks the feature measures p(next char) at the steps where one of
# them comes next (`feature_classes`).
FEATURE_CHARS: dict[str, str] = {
    "bracket_depth": ")]}",  # an open bracket is closed
    "in_string": "'\"",  # a string ends at its quote
    "in_docstring": "'\"",  # a docstring too (its closing triple quote)
    "in_comment": "\n",  # a comment ends with its line
    "line_position": "\n",  # the longer the line so far, the likelier it ends
    "indent": " ",  # leading whitespace goes on to the block's indentation
}


def feature_classes(vocab: Any, feature: str) -> list[int]:
    """The vocabulary ids of `FEATURE_CHARS[feature]` (those the vocabulary knows).

    vocab: a `gatescope.tasks.text.Vocab`. Raises ValueError for a feature not in the table
    or a vocabulary that knows none of its characters.
    """
    if feature not in FEATURE_CHARS:
        raise ValueError(
            f"feature must be one of {', '.join(sorted(FEATURE_CHARS))}, got {feature!r}"
        )
    chars = [c for c in FEATURE_CHARS[feature] if c in vocab.chars]
    if not chars:
        raise ValueError(f"the vocabulary has none of {FEATURE_CHARS[feature]!r} ({feature})")
    return [int(i) for i in vocab.encode("".join(chars))]


def text_rows(ids: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut a text's ids (N,) into rows of `length` inputs and their next characters.

    Returns x (R, length) and targets (R, length), targets[r, t] = ids[r * length + t + 1],
    R = (N - 1) // length (the tail that does not fill a row is dropped). Each row is read
    from the zero state. Any per-character array (a feature) cuts the same way:
    `a[: R * length].reshape(R, length)`.
    """
    ids = np.asarray(ids, np.int64)
    if ids.ndim != 1:
        raise ValueError(f"ids must be 1-D (N,), got shape {ids.shape}")
    if length < 1:
        raise ValueError(f"length must be a positive integer, got {length}")
    R = (ids.size - 1) // length
    if R < 1:
        raise ValueError(f"need more than {length} characters for one row, got {ids.size}")
    x = ids[: R * length].reshape(R, length)  # (R, T)
    targets = ids[1 : R * length + 1].reshape(R, length)  # (R, T)
    return x, targets


@dataclass(frozen=True)
class AblationResult:
    """The causal test of one unit: ablate it, and ablate random units of the same layer."""

    unit: int
    layer: int
    quantity: str  # what was ablated at every step ("c" for an LSTM: it feeds h)
    mode: str  # "mean" (its mean over the data) or "zero"
    base: float  # mean probability of the target classes where they occur, unablated
    delta: float  # ablated - base
    random_units: np.ndarray  # (R,) the random units
    random_deltas: np.ndarray  # (R,) their deltas
    percentile: float  # fraction of random units with a smaller |delta|
    count: int = 0  # predictions measured (steps where a target class comes next)

    @property
    def matters(self) -> bool:
        """|delta| beats every random unit's (a unit that correlates need not)."""
        return bool(self.percentile == 1.0 and abs(self.delta) > 0)

    @property
    def beaten_by(self) -> int:
        """How many random units change p(target) at least as much (|delta|)."""
        return int((np.abs(self.random_deltas) >= abs(self.delta)).sum())


def _ablation_rows(rec: Any, T: int) -> int:
    """Sequences per ablated forward: about 256 MB of trace (7 quantities x L x T x H)."""
    per_row = 8 * rec.num_layers * T * rec.hidden_size * np.dtype(rec.dtype).itemsize
    return max(1, (1 << 28) // per_row)


def unit_ablation(
    model: Any,
    x: Any,
    targets: np.ndarray,
    classes: Sequence[int],
    unit: int,
    *,
    layer: int = 0,
    quantity: str | None = None,
    mode: str = "mean",
    n_random: int = 20,
    seed: Seed = 0,
    where: np.ndarray | None = None,
    max_rows: int | None = None,
) -> AblationResult:
    """Ablate `unit` (its `quantity` at every step set to its mean over x, or to zero) and
    measure the change in the model's probability of `classes` at the steps where the next
    target is one of them; the same for `n_random` other units of the layer, for scale.

    model: a classify_steps model (a char LM); x (N, T) ids or (N, T, D); targets (N, T)
    the next characters. quantity: default "c" for an LSTM (it feeds h and later steps),
    "h" otherwise. where (N, T) bool: only measure there (e.g. where the feature is on, so
    that for in_string a quote that comes next is a closing one). With p = softmax(out) and
    M the (sequence, step) pairs whose target is in `classes` (and `where` holds),

        base = mean_M p[target],   delta = mean_M p_ablated[target] - base

    The ablations run batched, max_rows sequences at a time (default: about 256 MB of trace).
    """
    rec = recurrent_of(model)
    quantity = quantity or ("c" if rec.arch == "lstm" else "h")
    _check_quantity(rec, quantity, layer)
    if mode not in ("mean", "zero"):
        raise ValueError(f"mode must be 'mean' or 'zero', got {mode!r}")
    H = rec.hidden_size
    if not 0 <= unit < H:
        raise ValueError(f"unit {unit} out of range for {H} units")
    x, targets = np.asarray(x), np.asarray(targets)
    mask = np.isin(targets, np.asarray(classes))  # (N, T): where a target class comes next
    if where is not None:
        if np.shape(where) != targets.shape:
            raise ValueError(f"where must have the shape of targets {targets.shape}")
        mask &= np.asarray(where, bool)
    if not mask.any():
        raise ValueError(f"targets never hold any of classes {list(classes)} (where measured)")
    N, T = targets.shape
    max_rows = max_rows or _ablation_rows(rec, T)
    plans = _empty_plans(rec)
    level = np.zeros(H)  # (H,) the value an ablated unit is held at
    base_sum = np.zeros(1)  # summed row by row, in the order the ablations are: equal bits
    for s in range(0, N, max_rows):  # the unablated run, and the mean of q over x
        rows = slice(s, min(N, s + max_rows))
        out = np.asarray(run_edited(model, x[rows], plans), np.float64)
        if out.ndim != 3:
            raise ValueError("unit_ablation needs a classify_steps model (an output at every step)")
        pt = np.where(mask[rows], _p_target(out, targets[rows]), 0.0).sum(axis=1)  # (n,)
        np.add.at(base_sum, np.zeros(len(pt), int), pt)
        tr = rec.trace[quantity]
        q = tr if rec.num_layers == 1 else tr[layer]  # (n, T, H)
        level += q.reshape(-1, H).sum(axis=0, dtype=np.float64)
    count = int(mask.sum())
    base = float(base_sum[0] / count)
    level = level / (N * T) if mode == "mean" else np.zeros(H)

    rng = as_generator(seed)
    others = np.setdiff1d(np.arange(H), [unit])
    randoms = rng.choice(others, size=min(n_random, len(others)), replace=False)
    units = np.concatenate([[unit], randoms]).astype(int)  # (1 + R,)
    U = len(units)
    sums = np.zeros(U)
    for start in range(0, U * N, max_rows):
        rows = np.arange(start, min(U * N, start + max_rows))  # row = ablation * N + sequence
        a_of, n_of = rows // N, rows % N
        R = len(rows)
        mul = np.ones((R, H), rec.dtype)  # (R, H)
        add = np.zeros((R, H), rec.dtype)
        mul[np.arange(R), units[a_of]] = 0
        add[np.arange(R), units[a_of]] = level[units[a_of]]
        plans = _empty_plans(rec)
        plans[layer] = EditPlan({(t, quantity): (mul, add) for t in range(T)})  # shared arrays
        out = np.asarray(run_edited(model, x[n_of], plans), np.float64)  # (R, T, C)
        pt = np.where(mask[n_of], _p_target(out, targets[n_of]), 0.0).sum(axis=1)  # (R,)
        np.add.at(sums, a_of, pt)
    deltas = sums / count - base  # (U,): 0 exactly for a unit nothing reads
    rd = deltas[1:]
    percentile = float((np.abs(rd) < abs(deltas[0])).mean()) if len(rd) else float("nan")
    return AblationResult(
        int(unit), layer, quantity, mode, base, float(deltas[0]), randoms, rd, percentile, count
    )


def _p_target(out: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """p(target) at every step: (N, T) from logits (N, T, C) and targets (N, T)."""
    z = out - out.max(axis=-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
    return np.take_along_axis(p, targets[..., None], axis=-1)[..., 0]
