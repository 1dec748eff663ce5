"""What LSTM, GRU and RNN share: configuration, stacking, state handling and validation.

A `Recurrent` is a stack of `num_layers` single-layer recurrences. Layer k reads the hidden
states of layer k-1 (layer 0 reads the input). Each subclass supplies three things for one
layer, all time-major (T, B, .): `_init_layer`, `_layer_forward` and `_layer_backward`.
Everything else (batch-first layout, state packing, checks, the trace) lives here.

Shapes: B batch, T time, D input features, H hidden units, L layers, G gates.
The public state of one layer is `h` (B, H) (GRU, RNN) or `(h, c)` (LSTM). With
`num_layers > 1` each array gains a leading layer axis: (L, B, H), as in PyTorch.

Bidirectional stacks (`bidirectional=True`, PyTorch's semantics) run every layer twice: a
forward direction over x_1..x_T and a reverse direction, with its own parameters (keys with
PyTorch's `_reverse` suffix), over x_T..x_1, by the same single-direction layer functions on
the time-reversed sequence. Their outputs are concatenated, forward units first::

    y_t = [h^fwd_t, h^rev_t]   (B, 2H)      h^rev_t = the reverse direction after reading x_T..x_t

and layer k > 0 reads those 2H features. The state is then always (2L, B, H), ordered as
PyTorch's (layer-major, direction-minor: l0 forward, l0 reverse, l1 forward, ...), and every
trace entry is (B, T, 2H) ((L, B, T, 2H) stacked) in real time, forward units first: index t
of the reverse half is the reverse direction's gate or state at step t. Backward splits
dL/dy the same way, runs each direction's backward (the reverse one on reversed time) and
sums the two dL/dx.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

import numpy as np

from .checks import Seed, as_float_dtype, as_generator, check_array, check_positive_int, shape_str
from .edits import EditPlan

ARCHS = ("lstm", "gru", "rnn")
NONLINEARITIES = ("tanh", "relu")
LSTM_VARIANTS = ("vanilla", "peephole", "cifg", "nfg", "nig", "nog", "noaf", "layernorm")


@dataclass(frozen=True)
class RecurrentConfig:
    """Everything needed to rebuild a recurrent stack (the weights aside)."""

    arch: str  # "lstm", "gru" or "rnn"
    input_size: int  # D: features per time step of the input
    hidden_size: int  # H: units per layer
    num_layers: int = 1  # L: stacked layers; layer k > 0 reads layer k-1's hidden states
    bias: bool = True  # one bias vector per layer (plus GRU's bias_hn when reset_after)
    batch_first: bool = True  # x is (B, T, D) if True, else (T, B, D)
    dtype: str = "float64"  # "float32" or "float64", for parameters and all computation
    forget_bias: float = 1.0  # LSTM: initial forget-gate bias (Gers et al. 2000; the textbook)
    update_bias: float = 0.0  # GRU: initial update-gate bias; z = sigmoid(3) = 0.95 keeps h
    reset_after: bool = False  # GRU: reset gate after the recurrent product (PyTorch, cuDNN)
    nonlinearity: str = "tanh"  # RNN: "tanh" or "relu"
    variant: str = "vanilla"  # LSTM: one of LSTM_VARIANTS (see nn/lstm_variants.py)
    bidirectional: bool = False  # a forward and a reverse direction per layer, outputs 2H

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}; got {self.arch!r}")
        check_positive_int("input_size", self.input_size)
        check_positive_int("hidden_size", self.hidden_size)
        check_positive_int("num_layers", self.num_layers)
        as_float_dtype(self.dtype)
        if self.nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {self.nonlinearity!r}")
        if self.variant not in LSTM_VARIANTS:
            raise ValueError(
                f"variant must be one of {', '.join(LSTM_VARIANTS)}; got {self.variant!r}"
            )
        if self.variant != "vanilla" and self.arch != "lstm":
            raise ValueError(f"variant={self.variant!r} is an LSTM option, got arch={self.arch!r}")
        if not np.isfinite(self.forget_bias):
            raise ValueError(f"forget_bias must be finite, got {self.forget_bias!r}")
        if not np.isfinite(self.update_bias):
            raise ValueError(f"update_bias must be finite, got {self.update_bias!r}")
        if self.update_bias != 0 and self.arch != "gru":
            raise ValueError(f"update_bias is a GRU option, got arch={self.arch!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; `RecurrentConfig(**d)` reads it back."""
        return asdict(self)


class Recurrent:
    """A stack of recurrent layers over batch-first sequences, with exact BPTT.

    Call it as `y, state = layer(x, state0=None)`; then `dx = layer.backward(dy, dstate)`
    fills `layer.grads` (same keys and shapes as `layer.params`) and `layer.dstate0`
    (the gradient with respect to the initial state, same structure as the state).
    `layer.trace` holds the gates and states of every step of the last forward pass.

    `with layer.edited(plans):` every forward inside runs the NumPy reference with the
    edit plans (one `nn.edits.EditPlan` or None per layer) applied inside its step loop;
    the caches keep the plans, so a later `backward` differentiates the edited function.
    """

    arch: ClassVar[str]
    gates: ClassVar[int]  # G: gate blocks packed in weight_ih / weight_hh
    state_names: ClassVar[tuple[str, ...]]  # ("h",) or ("h", "c")
    trace_names: ClassVar[tuple[str, ...]]

    def __init__(self, config: RecurrentConfig, seed: Seed = 0) -> None:
        if config.arch != self.arch:
            raise ValueError(f"{type(self).__name__} needs arch={self.arch!r}, got {config.arch!r}")
        self.config = config
        self.dtype = as_float_dtype(config.dtype)
        rng = as_generator(seed)
        self.params: dict[str, np.ndarray] = {}
        for k in range(config.num_layers):
            d_in = config.input_size if k == 0 else self.output_size
            for suffix in self._direction_suffixes:
                for name, value in self._init_layer(d_in, rng).items():
                    self.params[f"{name}_l{k}{suffix}"] = value.astype(self.dtype)
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        self.dstate0: Any = None
        # one per layer and direction (layer-major), from the last forward
        self._caches: list[Any] | None = None
        self._edit_plans: Sequence[EditPlan | None] | None = None  # set by `edited` only

    # -- what each architecture supplies ------------------------------------------------------

    def _init_layer(self, d_in: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Fresh parameters of one layer, keyed without the `_l{k}` suffix."""
        raise NotImplementedError

    def _layer_forward(
        self, p: dict, x: np.ndarray, state0: tuple, edits: EditPlan | None = None
    ) -> tuple[tuple, Any]:
        """x (T, B, D_in), state0 per-layer tuple of (B, H) -> (final state, cache).

        The cache must expose `cache.hs`, (T + 1, B, H) with the initial state first, and
        `cache.edits`, the plan (None without edits), which `_layer_backward` honours.
        """
        raise NotImplementedError

    def _layer_backward(
        self, p: dict, cache: Any, dy: np.ndarray | None, dstate: tuple
    ) -> tuple[np.ndarray, tuple, dict]:
        """dy (T, B, H) or None, dstate per-layer tuple -> (dx, dstate0, grads by short name)."""
        raise NotImplementedError

    def _layer_trace(self, cache: Any) -> dict[str, np.ndarray]:
        """The cache as time-major (T, B, H) arrays named by `trace_names`."""
        raise NotImplementedError

    # -- the public interface ----------------------------------------------------------------

    @property
    def input_size(self) -> int:
        return self.config.input_size

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    @property
    def num_directions(self) -> int:
        """2 for a bidirectional stack, else 1."""
        return 2 if self.config.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Features of y per step: H, or 2H when bidirectional."""
        return self.num_directions * self.hidden_size

    @property
    def _direction_suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.config.bidirectional else ("",)

    def num_params(self) -> int:
        """Total number of scalar parameters."""
        return sum(p.size for p in self.params.values())

    def layer_params(self, k: int, reverse: bool = False) -> dict[str, np.ndarray]:
        """Layer k's parameters by short name ("weight_ih", ...), sharing memory with params.

        `reverse=True`: those of its reverse direction (bidirectional stacks only).
        """
        if reverse and not self.config.bidirectional:
            raise ValueError("reverse: only a bidirectional layer has a reverse direction")
        suffix = f"_l{k}_reverse" if reverse else f"_l{k}"
        return {n[: -len(suffix)]: p for n, p in self.params.items() if n.endswith(suffix)}

    def direction(self, k: int = 0, reverse: bool = False) -> Recurrent:
        """Layer k's forward (or, `reverse=True`, reverse) direction as a single-layer,
        unidirectional copy with the same weights (copied) and layout.

        The reverse direction computes on the time-reversed input: its y at own step j is
        the bidirectional layer's reverse half at real step T-1-j. gatescope.inspect's
        step-by-step instruments measure one direction at a time this way.
        """
        c = self.config
        if not (isinstance(k, int | np.integer) and 0 <= k < c.num_layers):
            raise ValueError(f"k must be a layer index in [0, {c.num_layers}), got {k!r}")
        d_in = c.input_size if k == 0 else self.output_size
        config = replace(c, input_size=d_in, num_layers=1, bidirectional=False)
        twin = type(self).__new__(type(self))
        Recurrent.__init__(twin, config, 0)
        for name, p in self.layer_params(int(k), reverse).items():
            twin.params[f"{name}_l0"][...] = p
        return twin

    def __call__(self, x: np.ndarray, state0: Any = None) -> tuple[np.ndarray, Any]:
        return self.forward(x, state0)

    def forward(self, x: np.ndarray, state0: Any = None) -> tuple[np.ndarray, Any]:
        """x (B, T, D) (or (T, B, D) if not batch_first) -> y (B, T, H), final state."""
        xt = self._check_input(x)  # (T, B, D)
        T, B, _ = xt.shape
        states = self._check_state("state0", state0, B)
        self._caches = None  # free the last step's caches (the trace) before making new ones
        caches, finals = [], []
        inp = xt
        nd = self.num_directions
        plans = getattr(self, "_edit_plans", None) or [None] * self.num_layers
        for k in range(self.num_layers):
            final, cache = self._layer_forward(self.layer_params(k), inp, states[nd * k], plans[k])
            caches.append(cache)
            finals.append(final)
            if nd == 1:
                inp = cache.hs[1:]  # (T, B, H): this layer's outputs feed the next
                continue
            rev = np.ascontiguousarray(inp[::-1])  # (T, B, D_in): x_T first
            final_r, cache_r = self._layer_forward(
                self.layer_params(k, True), rev, states[2 * k + 1]
            )
            caches.append(cache_r)
            finals.append(final_r)
            inp = np.concatenate([cache.hs[1:], cache_r.hs[:0:-1]], axis=2)  # (T, B, 2H)
        self._caches = caches
        return self._from_time_major(inp), self._pack_state(finals)

    def backward(self, dy: np.ndarray | None, dstate: Any = None) -> np.ndarray:
        """Backprop through time. dy (B, T, H) is dL/dy; dstate is dL/d(final state).

        Either may be None (zero). Returns dx, dL/dx with the shape of x; overwrites
        `grads` in place and sets `dstate0`.
        """
        if self._caches is None:
            raise RuntimeError(
                "backward() called before forward(): run the layer on an input first"
            )
        T, B = self._caches[0].hs.shape[0] - 1, self._caches[0].hs.shape[1]
        H, nd = self.hidden_size, self.num_directions
        dyt = None
        if dy is not None:
            shape = (B, T, nd * H) if self.config.batch_first else (T, B, nd * H)
            legend = self._layout("2H" if nd == 2 else "H")
            dy = check_array("dy", dy, shape, self.dtype, legend=legend)
            dyt = dy.transpose(1, 0, 2) if self.config.batch_first else dy  # a view, no copy
        dstates = self._check_state("dstate", dstate, B)
        dstate0: list[Any] = [None] * (nd * self.num_layers)
        for k in reversed(range(self.num_layers)):
            dxs = []
            for d, suffix in enumerate(self._direction_suffixes):
                dy_d = None
                if dyt is not None and nd == 1:
                    dy_d = dyt
                elif dyt is not None:  # this direction's half, in its own time order
                    half = dyt[:, :, d * H : (d + 1) * H]
                    dy_d = np.ascontiguousarray(half[::-1] if d else half)  # (T, B, H)
                i = nd * k + d
                dx, dstate0[i], g = self._layer_backward(
                    self.layer_params(k, bool(d)), self._caches[i], dy_d, dstates[i]
                )
                for name, value in g.items():
                    self.grads[f"{name}_l{k}{suffix}"][...] = value
                dxs.append(dx)
            dyt = dxs[0] if nd == 1 else dxs[0] + dxs[1][::-1]  # (T, B, D_in)
        self.dstate0 = self._pack_state(dstate0)
        return self._from_time_major(dyt)

    @contextlib.contextmanager
    def edited(self, plans: Sequence[EditPlan | None]) -> Iterator[None]:
        """Within the block, forward applies `plans` (one per layer, None: no edit there).

        Build plans with `gatescope.inspect.intervene` (which validates them); this is the
        seam it uses, so that a model calling its layer inside its own forward works too.
        """
        if len(plans) != self.num_layers:
            raise ValueError(
                f"plans must have one entry per layer ({self.num_layers}), got {len(plans)}"
            )
        if self.num_directions == 2 and any(p is not None for p in plans):
            raise ValueError(
                "interventions on a bidirectional layer are not supported: edit one direction, "
                "layer.direction(k, reverse=...)"
            )
        previous = getattr(self, "_edit_plans", None)
        self._edit_plans = list(plans)
        try:
            yield
        finally:
            self._edit_plans = previous

    @property
    def trace(self) -> dict[str, np.ndarray]:
        """Gates and states of every step of the last forward, each (B, T, H).

        With num_layers > 1 each array is (L, B, T, H). Bidirectional: (B, T, 2H) (or
        (L, B, T, 2H)) in real time, the forward direction's units first, then the reverse
        direction's (its value at step t is the one it computed reading x_t). Empty before
        the first forward.
        """
        if self._caches is None:
            return {}
        per_cache = [self._layer_trace(c) for c in self._caches]
        nd = self.num_directions
        out = {}
        for name in self.trace_names:
            arrays = []
            for k in range(self.num_layers):
                a = per_cache[nd * k][name]  # (T, B, H)
                if nd == 2:
                    a = np.concatenate([a, per_cache[2 * k + 1][name][::-1]], axis=2)  # (T, B, 2H)
                arrays.append(a.transpose(1, 0, 2))  # (B, T, H or 2H)
            out[name] = arrays[0] if self.num_layers == 1 else np.stack(arrays)
        return out

    def zero_state(self, batch_size: int) -> Any:
        """The all-zero state for a batch, in the public structure."""
        B = check_positive_int("batch_size", batch_size)
        zero = tuple(np.zeros((B, self.hidden_size), self.dtype) for _ in self.state_names)
        return self._pack_state([zero] * (self.num_directions * self.num_layers))

    def __repr__(self) -> str:
        c = self.config
        bidir = ", bidirectional=True" if c.bidirectional else ""
        return (
            f"{type(self).__name__}(input_size={c.input_size}, hidden_size={c.hidden_size}, "
            f"num_layers={c.num_layers}{bidir}, dtype={c.dtype}, params={self.num_params():,})"
        )

    # -- layout and state plumbing -------------------------------------------------------------

    def _layout(self, last: str) -> str:
        return f"(batch, time, {last})" if self.config.batch_first else f"(time, batch, {last})"

    def _check_input(self, x: object) -> np.ndarray:
        """Validate x and return it time-major, contiguous, in the layer's dtype."""
        D = self.input_size
        x = check_array("x", x, (None, None, D), self.dtype, legend=self._layout(f"D={D}"))
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"x must hold at least one sequence of one step, got shape {x.shape}")
        return np.ascontiguousarray(x.transpose(1, 0, 2) if self.config.batch_first else x)

    def _from_time_major(self, a: np.ndarray) -> np.ndarray:
        return a.transpose(1, 0, 2) if self.config.batch_first else a

    def _state_shape(self, B: int) -> tuple[int, ...]:
        H, n = self.hidden_size, self.num_directions * self.num_layers
        return (B, H) if n == 1 else (n, B, H)

    def _check_state(self, name: str, state: Any, B: int) -> list[tuple[np.ndarray, ...]]:
        """Public state (or None for zeros) -> per layer and direction (layer-major) tuples
        of (B, H) arrays."""
        H, L = self.hidden_size, self.num_directions * self.num_layers
        if state is None:
            zero = tuple(np.zeros((B, H), self.dtype) for _ in self.state_names)
            return [zero] * L
        parts = (state,) if len(self.state_names) == 1 else state
        if len(self.state_names) > 1 and (not isinstance(parts, tuple | list) or len(parts) != 2):
            raise ValueError(
                f"{name} must be a tuple (h, c) for an LSTM, got {type(state).__name__}"
            )
        shape = self._state_shape(B)
        arrays = [
            check_array(f"{name} {n}", a, shape, self.dtype, legend=shape_str(shape))
            for n, a in zip(self.state_names, parts, strict=True)
        ]
        if L == 1:
            return [tuple(arrays)]
        return [tuple(a[k] for a in arrays) for k in range(L)]

    def _pack_state(self, per_layer: list[tuple[np.ndarray, ...]]) -> Any:
        """Per layer (and direction) tuples of (B, H) -> the public structure (see the module
        docstring)."""
        if len(per_layer) == 1:
            arrays = list(per_layer[0])
        else:
            arrays = [np.stack([s[i] for s in per_layer]) for i in range(len(self.state_names))]
        return arrays[0] if len(arrays) == 1 else tuple(arrays)


def init_packed(
    rng: np.random.Generator, gates: int, d_in: int, hidden: int
) -> tuple[np.ndarray, np.ndarray]:
    """The textbook chapter's packed initialisation: one (G*H, D+H) matrix W ~ N(0, 1/(D+H)).

    W acts on the concatenation [x, h]; its first D columns are weight_ih, the rest
    weight_hh, so the split loses nothing and PyTorch's layout loads directly.
    """
    W = rng.normal(0.0, 1.0 / np.sqrt(d_in + hidden), (gates * hidden, d_in + hidden))
    return np.ascontiguousarray(W[:, :d_in]), np.ascontiguousarray(W[:, d_in:])


def chunk_steps(T: int, B: int) -> int:
    """Steps per chunk of dL/da that backward keeps: about 1024 rows (B per step) for the
    weight-gradient products, and at most a sixteenth of the sequence, to bound the memory."""
    return max(1, min(-(-1024 // B), -(-T // 16)))
