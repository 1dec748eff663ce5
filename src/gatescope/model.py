"""A sequence model: a recurrent stack (LSTM, GRU or RNN) with a dense head, and its files.

    model = SequenceModel.build(arch="lstm", input_size=8, hidden_size=64, output_size=8,
                                kind="classify_last", seed=0)
    out = model.forward(batch.x)          # (B, C) for *_last kinds, (B, T, C) for classify_steps
    loss, dout = model.loss(out, batch)   # cross-entropy or MSE by kind, honouring batch.mask
    model.backward(dout)                  # fills model.grads

The character language model is one too (``encoding="one_hot"`` or ``"embedding"``, kind
``classify_steps``: a head at every step); ``forward(ids, state0)`` starts from a given
recurrent state and leaves the final one in ``model.final_state``, which is how truncated
backprop through time carries the state from one chunk of text to the next.

Input encodings (``config.encoding``):

- ``"dense"``: x (B, T, D) floats, fed to the recurrent stack as they are.
- ``"one_hot"``: x (B, T) int ids in [0, V) with V = ``input_size``; the stack reads
  ``e_t = onehot(x_t)`` (V wide).
- ``"embedding"``: x (B, T) int ids; the stack reads ``e_t = W_E[x_t]``, a row of the learned
  table ``embed.weight`` (V, E). Backward: ``dW_E[v] = sum over (b, t) with x_bt = v of de_bt``
  (exact; ids that occur twice add up).

Shape legend: B batch, T time, D input, V vocabulary, E embedding, H hidden, C outputs.

The head reads the top layer's hidden state at the last step for the ``*_last`` kinds
(``out = h_T W^T + b``) and at every step for ``classify_steps``. ``model.params`` and
``model.grads`` are flat dicts over the same arrays as the parts' own dicts, keyed
``"rnn.<name>"`` and ``"head.<name>"``, so an optimizer updating ``model.params`` in place
updates ``model.recurrent`` and ``model.head``.

Files (:func:`save_model`, :func:`load_model`) are checkpoints of :mod:`gatescope.checkpoint`:
the weights under their ``model.params`` keys, any extra tensors the caller adds (the
training loop stores its optimizer state under ``"optim."`` and a carried recurrent state
under ``"carry."``), and JSON metadata with ``"model"`` (``config.to_dict()``) plus whatever
the caller passes (task, step, seed, ...). :func:`read_model_file` is the one reader of
model files: it also reads the character-LM files of gatescope 0.1.0 (metadata ``"kind":
"gatescope.charlm"``) and returns them in today's layout (see :func:`upgrade_charlm_v1`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from gatescope.checkpoint import CheckpointError, check_tensors, load_checkpoint, save_checkpoint
from gatescope.nn import Linear, Recurrent, RecurrentConfig, build_recurrent, cross_entropy, mse
from gatescope.nn.checks import Seed, as_float_dtype, as_generator, check_positive_int
from gatescope.seq2seq import MODEL_FILE_TYPE as SEQ2SEQ_FILE_TYPE
from gatescope.seq2seq import Seq2Seq, Seq2SeqConfig
from gatescope.tasks.base import KINDS, Batch

__all__ = [
    "KINDS",
    "ENCODINGS",
    "EXTRA_PREFIXES",
    "LEGACY_CHARLM_KIND",
    "MODEL_FILE_TYPE",
    "ModelConfig",
    "SequenceModel",
    "load_model",
    "read_model_file",
    "save_model",
    "upgrade_charlm_v1",
]

MODEL_FILE_TYPE = "gatescope.SequenceModel"  # meta["type"] of files written by save_model
EXTRA_PREFIX = "optim."  # the optimizer state's tensors in a model file
CARRY_PREFIX = "carry."  # the carried recurrent state's tensors (truncated BPTT)
EXTRA_PREFIXES = (EXTRA_PREFIX, CARRY_PREFIX)  # tensors under these are not weights
LEGACY_CHARLM_KIND = "gatescope.charlm"  # meta["kind"] of gatescope 0.1.0's char-LM files
ENCODINGS = ("dense", "one_hot", "embedding")

# RecurrentConfig fields that ModelConfig holds itself (the rest are layer options)
_OWN_FIELDS = ("arch", "input_size", "hidden_size", "num_layers", "dtype", "batch_first")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a SequenceModel (the weights aside)."""

    arch: str  # "lstm", "gru" or "rnn": the recurrent stack
    input_size: int  # D: features per step ("dense"), or V: the id range (one_hot, embedding)
    hidden_size: int  # H: units per recurrent layer
    output_size: int  # C: classes (classify kinds) or regression outputs (regress_last)
    kind: str  # "classify_last", "regress_last" or "classify_steps": where the head reads
    num_layers: int = 1  # L: stacked recurrent layers
    dtype: str = "float64"  # "float32" or "float64", for every parameter and computation
    head_bias: bool = True  # the head has a bias vector
    # other RecurrentConfig options, e.g. forget_bias, reset_after, nonlinearity, bias
    layer_options: Mapping[str, Any] = field(default_factory=dict)
    # how x enters: "dense" (B, T, D) floats, "one_hot" or "embedding" (B, T) int ids < D
    encoding: str = "dense"
    embed_size: int | None = None  # E: width of the embedding table ("embedding" only)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {self.kind!r}")
        check_positive_int("output_size", self.output_size)
        if self.encoding not in ENCODINGS:
            raise ValueError(
                f"encoding must be one of {', '.join(ENCODINGS)}; got {self.encoding!r}"
            )
        if self.encoding == "embedding":
            check_positive_int("embed_size", self.embed_size)
        elif self.embed_size is not None:
            raise ValueError(
                f"embed_size applies to encoding 'embedding' only, got {self.embed_size!r} "
                f"with encoding {self.encoding!r}"
            )
        object.__setattr__(self, "dtype", as_float_dtype(self.dtype).name)
        if not isinstance(self.head_bias, bool):
            raise ValueError(f"head_bias must be a bool, got {self.head_bias!r}")
        if not isinstance(self.layer_options, Mapping):
            raise ValueError(
                f"layer_options must be a dict, got {type(self.layer_options).__name__}"
            )
        options = dict(self.layer_options)
        clash = sorted(set(options) & set(_OWN_FIELDS))
        if clash:
            raise ValueError(f"layer_options must not set {clash}: they are ModelConfig fields")
        object.__setattr__(self, "layer_options", MappingProxyType(options))
        self.recurrent_config()  # validates arch, sizes and options

    def recurrent_config(self) -> RecurrentConfig:
        """The configuration of the recurrent stack (batch-first)."""
        try:
            return RecurrentConfig(
                arch=self.arch,
                input_size=self.recurrent_input_size,
                hidden_size=self.hidden_size,
                num_layers=self.num_layers,
                dtype=self.dtype,
                batch_first=True,
                **self.layer_options,
            )
        except TypeError as e:  # an unknown option name
            known = sorted(set(RecurrentConfig.__dataclass_fields__) - set(_OWN_FIELDS))
            raise ValueError(
                f"unknown layer option in {sorted(self.layer_options)}; expected some of {known}"
            ) from e

    @property
    def recurrent_input_size(self) -> int:
        """What the recurrent stack reads per step: E for "embedding", else input_size."""
        return self.embed_size if self.encoding == "embedding" else self.input_size  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; ``ModelConfig.from_dict(d)`` reads it back."""
        return {
            "arch": self.arch,
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "output_size": self.output_size,
            "kind": self.kind,
            "num_layers": self.num_layers,
            "dtype": self.dtype,
            "head_bias": self.head_bias,
            "layer_options": dict(self.layer_options),
            "encoding": self.encoding,
            "embed_size": self.embed_size,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        """Rebuild from ``to_dict()``; unknown or missing required keys raise ValueError.

        Dicts written before input encodings existed (no ``"encoding"``) are "dense"."""
        if not isinstance(d, Mapping):
            raise ValueError(f"model config must be a dict, got {type(d).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config key(s) {unknown}; expected {sorted(known)}")
        try:
            return cls(**d)
        except TypeError as e:  # a missing required key
            raise ValueError(f"incomplete model config {dict(d)!r}: {e}") from None


class SequenceModel:
    """An input encoding, a recurrent stack and a Linear head; ``out = model.forward(x)``,
    ``model.backward(dout)``.

    Attributes: ``config`` (ModelConfig), ``recurrent`` (the gs.LSTM/GRU/RNN, with its
    ``trace``), ``head`` (gs.Linear), ``embed`` (the (V, E) table, "embedding" only, else
    None), ``params`` and ``grads`` (flat dicts, keys ``"rnn.*"``, ``"head.*"`` and
    ``"embed.weight"``, sharing memory with the parts), ``final_state`` (the recurrent state
    after the last forward: (h, c) for LSTM, h for GRU/RNN, each (B, H) or (L, B, H)).
    """

    def __init__(self, config: ModelConfig, seed: Seed = 0) -> None:
        if not isinstance(config, ModelConfig):
            raise ValueError(f"config must be a ModelConfig, got {type(config).__name__}")
        self.config = config
        self.dtype = np.dtype(config.dtype)
        rng = as_generator(seed)
        # drawn in this order (stack, head, table) so dense and one-hot models start as before
        self.recurrent: Recurrent = build_recurrent(config.recurrent_config(), seed=rng)
        self.head = Linear(
            config.hidden_size,
            config.output_size,
            bias=config.head_bias,
            seed=rng,
            dtype=self.dtype,
        )
        self.params: dict[str, np.ndarray] = {
            **{f"rnn.{k}": v for k, v in self.recurrent.params.items()},
            **{f"head.{k}": v for k, v in self.head.params.items()},
        }
        self.grads: dict[str, np.ndarray] = {
            **{f"rnn.{k}": v for k, v in self.recurrent.grads.items()},
            **{f"head.{k}": v for k, v in self.head.grads.items()},
        }
        self.embed: np.ndarray | None = None
        if config.encoding == "embedding":
            V, E = config.input_size, config.embed_size
            self.embed = rng.standard_normal((V, E)).astype(self.dtype)  # (V, E), as torch
            self.params["embed.weight"] = self.embed
            self.grads["embed.weight"] = np.zeros_like(self.embed)
        self._eye: np.ndarray | None = None  # (V, V) identity for "one_hot", made on first use
        self._seq_shape: tuple[int, int] | None = None  # (B, T) of the last forward
        self._ids: np.ndarray | None = None  # (B, T) ids of the last forward ("embedding")
        self.final_state: Any = None

    @classmethod
    def build(
        cls,
        arch: str,
        input_size: int,
        hidden_size: int,
        output_size: int,
        kind: str,
        num_layers: int = 1,
        seed: Seed = 0,
        dtype: object = "float64",
        head_bias: bool = True,
        encoding: str = "dense",
        embed_size: int | None = None,
        **layer_options: Any,
    ) -> SequenceModel:
        """A freshly initialised model; ``layer_options`` go to the recurrent layer."""
        config = ModelConfig(
            arch=arch,
            input_size=input_size,
            hidden_size=hidden_size,
            output_size=output_size,
            kind=kind,
            num_layers=num_layers,
            dtype=as_float_dtype(dtype).name,
            head_bias=head_bias,
            layer_options=layer_options,
            encoding=encoding,
            embed_size=embed_size,
        )
        return cls(config, seed=seed)

    @classmethod
    def for_task(
        cls,
        task: Any,
        arch: str,
        hidden_size: int,
        num_layers: int = 1,
        seed: Seed = 0,
        dtype: object = "float64",
        encoding: str | None = None,
        embed_size: int | None = None,
        **layer_options: Any,
    ) -> SequenceModel:
        """A model whose input, output and kind fit ``task`` (a gatescope.tasks.Task).

        ``encoding`` None: the task's own (``task.encoding``: "one_hot" for text, else
        "dense")."""
        return cls.build(
            arch=arch,
            input_size=task.input_size,
            hidden_size=hidden_size,
            output_size=task.output_size,
            kind=task.kind,
            num_layers=num_layers,
            seed=seed,
            dtype=dtype,
            encoding=encoding or getattr(task, "encoding", "dense"),
            embed_size=embed_size,
            **layer_options,
        )

    # ------------------------------------------------------------------------- the math

    @property
    def kind(self) -> str:
        return self.config.kind

    def num_params(self) -> int:
        """Total number of scalar parameters (recurrent stack, head, embedding table)."""
        return sum(p.size for p in self.params.values())

    def __call__(self, x: np.ndarray, state0: Any = None) -> np.ndarray:
        return self.forward(x, state0)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """The recurrent stack's input for ``x``: dense x (B, T, D) as it is; ids (B, T) ->
        one-hot rows (B, T, V) or embedding rows (B, T, E), in the model's dtype."""
        enc = self.config.encoding
        if enc == "dense":
            return x
        ids = np.asarray(x)
        V = self.config.input_size
        if ids.dtype.kind not in "iu" or ids.ndim != 2:
            raise ValueError(
                f"x must be int ids (B, T) for encoding {enc!r}, got dtype {ids.dtype} "
                f"shape {ids.shape}"
            )
        if ids.size and (ids.min() < 0 or ids.max() >= V):
            raise ValueError(
                f"x ids must lie in [0, {V}) (input_size), got {ids.min()}..{ids.max()}"
            )
        if enc == "one_hot":
            if self._eye is None:
                self._eye = np.eye(V, dtype=self.dtype)  # (V, V): row v = onehot(v)
            return self._eye[ids]  # (B, T, V)
        assert self.embed is not None
        return self.embed[ids]  # (B, T, E)

    def forward(self, x: np.ndarray, state0: Any = None) -> np.ndarray:
        """x (B, T, D) floats or (B, T) ids -> logits or predictions: (B, C) for *_last
        kinds, (B, T, C) otherwise.

        ``state0``: the initial recurrent state (None: zeros); the final one is left in
        ``final_state``. Backward treats ``state0`` as a constant (no gradient flows into
        it): with a carried state this is truncated backprop through time.
        """
        e = self.encode(x)  # (B, T, D), (B, T, V) or (B, T, E)
        y, self.final_state = self.recurrent(e, state0)  # (B, T, H); validates e and state0
        B, T, _ = y.shape
        self._seq_shape = (B, T)
        self._ids = np.asarray(x) if self.embed is not None else None
        if self.kind == "classify_steps":
            return self.head(y)  # (B, T, C)
        return self.head(y[:, -1, :])  # (B, C): the last step only

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dout (the shape forward returned) -> dL/de, the gradient with respect to the
        recurrent stack's input (dL/dx for "dense"); overwrites ``grads``."""
        if self._seq_shape is None:
            raise RuntimeError("backward() called before forward(): run the model on an input")
        dh = self.head.backward(dout)  # (B, H) or (B, T, H); validates dout
        if self.kind == "classify_steps":
            de = self.recurrent.backward(dh)  # (B, T, D_in)
        else:
            B, T = self._seq_shape
            dy = np.zeros((B, T, self.config.hidden_size), self.dtype)  # (B, T, H)
            dy[:, -1, :] = dh
            de = self.recurrent.backward(dy)  # (B, T, D_in)
        if self.embed is not None:
            g = self.grads["embed.weight"]  # (V, E)
            g[...] = 0
            np.add.at(g, self._ids, de)  # dW_E[v] = sum of de_bt over x_bt = v
        return de

    def loss(self, out: np.ndarray, batch: Batch) -> tuple[float, np.ndarray]:
        """(loss, dL/dout) for ``out = forward(batch.x)``: cross-entropy (classify kinds,
        masked by ``batch.mask``) or mean squared error (regress_last)."""
        if not isinstance(batch, Batch):
            raise ValueError(f"batch must be a gatescope.tasks.Batch, got {type(batch).__name__}")
        out = np.asarray(out)
        if self.kind == "regress_last":
            return mse(out, batch.y)
        if self.kind == "classify_last":
            return cross_entropy(out, batch.y)
        return cross_entropy(out, batch.y, batch.mask)

    def predict(self, x: np.ndarray, chunk: int = 256) -> np.ndarray:
        """forward() over ``x`` in chunks of ``chunk`` sequences (bounded memory); float64.

        Every chunk starts from the zero state. The trace of the last forward afterwards is
        the last chunk's.
        """
        chunk = check_positive_int("chunk", chunk)
        parts = [self.forward(x[i : i + chunk]) for i in range(0, len(x), chunk)]
        return np.concatenate(parts).astype(np.float64, copy=False)

    def as_dense(self) -> SequenceModel:
        """A copy reading encoded inputs: ``copy.forward(model.encode(x))`` equals
        ``model.forward(x)``. For the instruments that take the recurrent stack's input."""
        if self.config.encoding == "dense":
            twin = SequenceModel(self.config, seed=0)
            twin.load_params(self.params)
            return twin
        config = dataclasses.replace(
            self.config,
            input_size=self.config.recurrent_input_size,
            encoding="dense",
            embed_size=None,
        )
        twin = SequenceModel(config, seed=0)
        twin.load_params({k: v for k, v in self.params.items() if k != "embed.weight"})
        return twin

    # ------------------------------------------------------------------------- the state

    def zero_state(self, batch_size: int) -> Any:
        """The all-zero recurrent state for ``batch_size`` sequences."""
        return self.recurrent.zero_state(batch_size)

    def state_arrays(self, state: Any) -> dict[str, np.ndarray]:
        """A recurrent state as name -> (L, B, H) arrays ("h", and "c" for LSTM)."""
        parts = state if isinstance(state, tuple) else (state,)
        L, H = self.config.num_layers, self.config.hidden_size
        names = self.recurrent.state_names
        if len(parts) != len(names):
            raise ValueError(f"state must have {len(names)} part(s) {names}, got {len(parts)}")
        return {n: np.asarray(a).reshape(L, -1, H).copy() for n, a in zip(names, parts)}

    def state_from_arrays(self, arrays: Mapping[str, np.ndarray]) -> Any:
        """The inverse of :meth:`state_arrays`: a state ``forward`` accepts as ``state0``."""
        parts = []
        L, H = self.config.num_layers, self.config.hidden_size
        for n in self.recurrent.state_names:
            if n not in arrays:
                raise ValueError(
                    f"state arrays must hold {self.recurrent.state_names}, got {sorted(arrays)}"
                )
            a = np.array(arrays[n], dtype=self.dtype)  # (L, B, H)
            if a.ndim != 3 or a.shape[0] != L or a.shape[2] != H:
                raise ValueError(f"state array {n!r} must be (L={L}, B, H={H}), got {a.shape}")
            parts.append(a[0] if L == 1 else a)
        return parts[0] if len(parts) == 1 else tuple(parts)

    # ------------------------------------------------------------------------- copying

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Parameter name -> shape, as stored in a model file."""
        return {k: v.shape for k, v in self.params.items()}

    def load_params(self, tensors: Mapping[str, np.ndarray]) -> None:
        """Copy ``tensors`` (exactly the keys and shapes of ``params``) into the parameters."""
        want = self.expected_shapes()
        if set(tensors) != set(want) or any(np.shape(tensors[k]) != s for k, s in want.items()):
            got = {k: np.shape(v) for k, v in tensors.items()}
            raise ValueError(f"tensors must have the keys and shapes {want}, got {got}")
        for k, p in self.params.items():
            np.copyto(p, tensors[k], casting="same_kind")

    def __repr__(self) -> str:
        c = self.config
        enc = (
            ""
            if c.encoding == "dense"
            else f", {c.encoding}" + (f" E={c.embed_size}" if c.embed_size else "")
        )
        return (
            f"SequenceModel({c.arch}, D={c.input_size}, H={c.hidden_size}, C={c.output_size}, "
            f"L={c.num_layers}, {c.kind}{enc}, {c.dtype}, {self.num_params():,} params)"
        )


# ----------------------------------------------------------------------------- files


def save_model(
    path: str | os.PathLike[str],
    model: SequenceModel,
    meta: Mapping[str, Any] | None = None,
    extra_tensors: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Write ``model`` to ``path`` atomically (a previous file there survives any failure).

    ``meta``: JSON-safe dict stored beside ``"type"`` and ``"model"`` (it must not set
    them). ``extra_tensors``: stored as they are; their names must start with ``"optim."``
    or ``"carry."``. Raises ValueError for bad arguments, CheckpointError when the file
    cannot be written.
    """
    if not isinstance(model, SequenceModel | Seq2Seq):
        raise ValueError(f"model must be a SequenceModel or Seq2Seq, got {type(model).__name__}")
    meta = dict(meta or {})
    for reserved in ("type", "model"):
        if reserved in meta:
            raise ValueError(f"meta must not set {reserved!r} (save_model writes it)")
    tensors: dict[str, np.ndarray] = dict(model.params)
    for name, arr in (extra_tensors or {}).items():
        if not name.startswith(EXTRA_PREFIXES):
            raise ValueError(
                f"extra tensor names must start with {' or '.join(map(repr, EXTRA_PREFIXES))}, "
                f"got {name!r}"
            )
        tensors[name] = arr
    kind = SEQ2SEQ_FILE_TYPE if isinstance(model, Seq2Seq) else MODEL_FILE_TYPE
    save_checkpoint(path, tensors, {"type": kind, "model": model.config.to_dict(), **meta})


LN2 = math.log(2.0)


def upgrade_charlm_v1(
    path: str, tensors: dict[str, np.ndarray], meta: dict[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A gatescope 0.1.0 char-LM file's (tensors, meta) in today's layout.

    0.1.0 wrote ``{"kind": "gatescope.charlm", "model": {vocab_size, arch, hidden_size,
    num_layers, dtype}, "train": {batch_size, seq_len, lr, clip, lr_decay, min_gain, min_lr,
    seed, eval_every, eval_chars, sample_every, sample_chars}, "vocab", "corpus", "step",
    "epoch", "seconds", "history": [{step, train_bpc, val_bpc, seconds, chars, lr}]}`` with
    tensors ``rnn.*``, ``head.*``, the Adam state ``adam.*`` and the carried state
    ``carry.*``. Today that is a one-hot ``classify_steps`` SequenceModel on the task
    ``{"name": "text", "length": seq_len, "eval_chars": ...}`` trained by ``train.fit`` with
    ``carry_state``; the optimizer state moves under ``optim.``. ``meta["upgraded_from"]``
    says where it came from. Raises CheckpointError for a malformed file.
    """
    try:
        m, t = meta["model"], meta["train"]
        V = int(m["vocab_size"])
        model = {
            "arch": m["arch"],
            "input_size": V,
            "hidden_size": int(m["hidden_size"]),
            "output_size": V,
            "kind": "classify_steps",
            "num_layers": int(m["num_layers"]),
            "dtype": m["dtype"],
            "head_bias": True,
            "layer_options": {},
            "encoding": "one_hot",
            "embed_size": None,
        }
        train = {
            "steps": None,
            "batch_size": t["batch_size"],
            "lr": t["lr"],
            "optimizer": "adam",
            "clip_norm": t["clip"],
            "eval_every": t["eval_every"],
            "seed": t["seed"],
            "checkpoint_every": t["eval_every"],
            "early_stop": False,
            "carry_state": True,
            "lr_decay": t["lr_decay"],
            "min_gain": t["min_gain"],
            "min_lr": t["min_lr"],
            "sample_every": t["sample_every"],
            "sample_chars": t["sample_chars"],
        }
        history = [
            {
                **row,
                "loss": row["train_bpc"] * LN2,
                "metric": row["val_bpc"],
                "bits_per_char": row["val_bpc"],
            }
            for row in meta.get("history", [])
        ]
        vals = [row["val_bpc"] for row in history]
        best = min(vals) if vals else None
        since = len(vals) - 1 - vals.index(best) if vals else 0
        new_meta = {
            "type": MODEL_FILE_TYPE,
            "model": model,
            "task": {"name": "text", "length": t["seq_len"], "eval_chars": t["eval_chars"]},
            "train": train,
            "vocab": dict(meta["vocab"]),
            "corpus": dict(meta["corpus"]),
            "step": int(meta["step"]),
            "seed": t["seed"],
            "epoch": meta.get("epoch"),
            "seconds": float(meta.get("seconds", 0.0)),
            "history": history,
            "best": best,
            "evals_since_best": since,
            "stop_reason": None,
            "metrics": {"bits_per_char": vals[-1]} if vals else None,
            "loss": history[-1]["loss"] if history else None,
            "optimizer": {"name": "adam", "tensor_prefix": EXTRA_PREFIX},
            "format_version": meta.get("format_version"),
            "gatescope_version": meta.get("gatescope_version"),
            "upgraded_from": {
                "kind": LEGACY_CHARLM_KIND,
                "format_version": meta.get("format_version"),
            },
        }
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: corrupted char-LM metadata ({e!r})") from None
    new_tensors = {}
    for k, v in tensors.items():
        new_tensors[EXTRA_PREFIX + k if k.startswith("adam.") else k] = v
    return new_tensors, new_meta


def read_model_file(
    path: str | os.PathLike[str],
) -> tuple[SequenceModel, dict[str, Any], dict[str, np.ndarray]]:
    """Like :func:`load_model`, also returning the extra (``"optim."``, ``"carry."``) tensors.

    The one reader of model files: a file of type ``"gatescope.Seq2Seq"`` (written by
    `save_model` from a `gatescope.seq2seq.Seq2Seq`) gives a Seq2Seq.
    """
    path_str = os.fspath(path)
    tensors, meta = load_checkpoint(path_str)
    if meta.get("kind") == LEGACY_CHARLM_KIND and "type" not in meta:
        tensors, meta = upgrade_charlm_v1(path_str, tensors, meta)
    kind = meta.get("type")
    if kind == SEQ2SEQ_FILE_TYPE and isinstance(meta.get("model"), dict):
        return _read_seq2seq(path_str, tensors, meta)
    if kind != MODEL_FILE_TYPE or not isinstance(meta.get("model"), dict):
        what = f"type {kind!r}" if kind is not None else "no 'type'"
        raise CheckpointError(
            f"{path_str}: not a gatescope sequence-model checkpoint ({what} in its metadata; "
            f"expected {MODEL_FILE_TYPE!r}, as written by `gatescope train`)"
        )
    try:
        config = ModelConfig.from_dict(meta["model"])
    except ValueError as e:
        raise CheckpointError(
            f"{path_str}: invalid model description in the metadata: {e}"
        ) from None
    model = SequenceModel(config, seed=0)
    return model, meta, _load_weights(path_str, model, tensors)


def _load_weights(path: str, model: Any, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Check the file's weights against `model` (names, shapes, dtype), copy them in, and
    return the extra tensors (optimizer state, carried state) for the caller."""
    weights = {k: v for k, v in tensors.items() if not k.startswith(EXTRA_PREFIXES)}
    extra = {k: v for k, v in tensors.items() if k.startswith(EXTRA_PREFIXES)}
    check_tensors(path, weights, model.expected_shapes())
    for k, v in weights.items():
        if v.dtype != model.dtype:
            raise CheckpointError(
                f"{path}: tensor {k!r} is {v.dtype} but the metadata says the model is "
                f"{model.dtype}"
            )
    model.load_params(weights)
    return extra


def _read_seq2seq(
    path: str, tensors: dict[str, np.ndarray], meta: dict[str, Any]
) -> tuple[Seq2Seq, dict[str, Any], dict[str, np.ndarray]]:
    """`read_model_file` for a file of type ``"gatescope.Seq2Seq"``."""
    try:
        model = Seq2Seq.from_config(Seq2SeqConfig.from_dict(meta["model"]))
    except ValueError as e:
        raise CheckpointError(f"{path}: invalid Seq2Seq description in the metadata: {e}") from None
    return model, meta, _load_weights(path, model, tensors)


def load_model(path: str | os.PathLike[str]) -> tuple[SequenceModel, dict[str, Any]]:
    """Rebuild a model from a file written by :func:`save_model` (or a gatescope 0.1.0
    char-LM file); return ``(model, meta)``.

    ``meta`` is the file's metadata (``"model"``, and from training ``"task"``, ``"train"``,
    ``"step"``, ``"seed"``, ``"metrics"``, ...; a char LM's ``"vocab"`` and ``"corpus"``).
    Any problem (unreadable, corrupted, not a sequence-model file, a description the tensors
    disagree with) raises CheckpointError naming the file.
    """
    model, meta, _ = read_model_file(path)
    if isinstance(model, Seq2Seq):  # the commands that take a SequenceModel come here
        raise CheckpointError(
            f"{os.fspath(path)}: a sequence-to-sequence model (type {SEQ2SEQ_FILE_TYPE!r}); "
            "use `gatescope seq2seq` (translate, evaluate, plot) or read_model_file"
        )
    return model, meta
