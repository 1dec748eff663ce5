"""A sequence model: a recurrent stack (LSTM, GRU or RNN) with a dense head, and its files.

    model = SequenceModel.build(arch="lstm", input_size=8, hidden_size=64, output_size=8,
                                kind="classify_last", seed=0)
    out = model.forward(batch.x)          # (B, C) for *_last kinds, (B, T, C) for classify_steps
    loss, dout = model.loss(out, batch)   # cross-entropy or MSE by kind, honouring batch.mask
    model.backward(dout)                  # fills model.grads

Shape legend: B batch, T time, D input, H hidden, C outputs (classes, or 1 for regression).

The head reads the top layer's hidden state at the last step for the ``*_last`` kinds
(``out = h_T W^T + b``) and at every step for ``classify_steps``. ``model.params`` and
``model.grads`` are flat dicts over the same arrays as the parts' own dicts, keyed
``"rnn.<name>"`` and ``"head.<name>"``, so an optimizer updating ``model.params`` in place
updates ``model.recurrent`` and ``model.head``.

Files (:func:`save_model`, :func:`load_model`) are checkpoints of :mod:`gatescope.checkpoint`:
the weights under their ``model.params`` keys, any extra tensors the caller adds (the
training loop stores its optimizer state under ``"optim."``), and JSON metadata with
``"model"`` (``config.to_dict()``) plus whatever the caller passes (task, step, seed, ...).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from gatescope.checkpoint import CheckpointError, check_tensors, load_checkpoint, save_checkpoint
from gatescope.nn import Linear, Recurrent, RecurrentConfig, build_recurrent, cross_entropy, mse
from gatescope.nn.checks import Seed, as_float_dtype, as_generator, check_positive_int
from gatescope.tasks.base import KINDS, Batch

__all__ = [
    "KINDS",
    "MODEL_FILE_TYPE",
    "ModelConfig",
    "SequenceModel",
    "load_model",
    "save_model",
]

MODEL_FILE_TYPE = "gatescope.SequenceModel"  # meta["type"] of files written by save_model
EXTRA_PREFIX = "optim."  # tensors under this prefix in a model file are not weights

# RecurrentConfig fields that ModelConfig holds itself (the rest are layer options)
_OWN_FIELDS = ("arch", "input_size", "hidden_size", "num_layers", "dtype", "batch_first")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a SequenceModel (the weights aside)."""

    arch: str  # "lstm", "gru" or "rnn": the recurrent stack
    input_size: int  # D: features per step of the input
    hidden_size: int  # H: units per recurrent layer
    output_size: int  # C: classes (classify kinds) or regression outputs (regress_last)
    kind: str  # "classify_last", "regress_last" or "classify_steps": where the head reads
    num_layers: int = 1  # L: stacked recurrent layers
    dtype: str = "float64"  # "float32" or "float64", for every parameter and computation
    head_bias: bool = True  # the head has a bias vector
    # other RecurrentConfig options, e.g. forget_bias, reset_after, nonlinearity, bias
    layer_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {self.kind!r}")
        check_positive_int("output_size", self.output_size)
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
                input_size=self.input_size,
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
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        """Rebuild from ``to_dict()``; unknown or missing keys raise ValueError."""
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
    """A recurrent stack and a Linear head; ``out = model.forward(x)``, ``model.backward(dout)``.

    Attributes: ``config`` (ModelConfig), ``recurrent`` (the gs.LSTM/GRU/RNN, with its
    ``trace``), ``head`` (gs.Linear), ``params`` and ``grads`` (flat dicts, keys ``"rnn.*"``
    and ``"head.*"``, sharing memory with the parts).
    """

    def __init__(self, config: ModelConfig, seed: Seed = 0) -> None:
        if not isinstance(config, ModelConfig):
            raise ValueError(f"config must be a ModelConfig, got {type(config).__name__}")
        self.config = config
        self.dtype = np.dtype(config.dtype)
        rng = as_generator(seed)
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
        self._seq_shape: tuple[int, int] | None = None  # (B, T) of the last forward

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
        **layer_options: Any,
    ) -> SequenceModel:
        """A model whose input, output and kind fit ``task`` (a gatescope.tasks.Task)."""
        return cls.build(
            arch=arch,
            input_size=task.input_size,
            hidden_size=hidden_size,
            output_size=task.output_size,
            kind=task.kind,
            num_layers=num_layers,
            seed=seed,
            dtype=dtype,
            **layer_options,
        )

    # ------------------------------------------------------------------------- the math

    @property
    def kind(self) -> str:
        return self.config.kind

    def num_params(self) -> int:
        """Total number of scalar parameters (recurrent stack and head)."""
        return sum(p.size for p in self.params.values())

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (B, T, D) -> logits or predictions: (B, C) for *_last kinds, (B, T, C) otherwise."""
        y, _ = self.recurrent(x)  # (B, T, H); validates x
        B, T, _ = y.shape
        self._seq_shape = (B, T)
        if self.kind == "classify_steps":
            return self.head(y)  # (B, T, C)
        return self.head(y[:, -1, :])  # (B, C): the last step only

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dout (the shape forward returned) -> dL/dx (B, T, D); overwrites ``grads``."""
        if self._seq_shape is None:
            raise RuntimeError("backward() called before forward(): run the model on an input")
        dh = self.head.backward(dout)  # (B, H) or (B, T, H); validates dout
        if self.kind == "classify_steps":
            return self.recurrent.backward(dh)
        B, T = self._seq_shape
        dy = np.zeros((B, T, self.config.hidden_size), self.dtype)  # (B, T, H)
        dy[:, -1, :] = dh
        return self.recurrent.backward(dy)

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

        The trace of the last forward afterwards is the last chunk's.
        """
        chunk = check_positive_int("chunk", chunk)
        parts = [self.forward(x[i : i + chunk]) for i in range(0, len(x), chunk)]
        return np.concatenate(parts).astype(np.float64, copy=False)

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
        return (
            f"SequenceModel({c.arch}, D={c.input_size}, H={c.hidden_size}, C={c.output_size}, "
            f"L={c.num_layers}, {c.kind}, {c.dtype}, {self.num_params():,} params)"
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
    them). ``extra_tensors``: stored as they are; their names must start with ``"optim."``.
    Raises ValueError for bad arguments, CheckpointError when the file cannot be written.
    """
    if not isinstance(model, SequenceModel):
        raise ValueError(f"model must be a SequenceModel, got {type(model).__name__}")
    meta = dict(meta or {})
    for reserved in ("type", "model"):
        if reserved in meta:
            raise ValueError(f"meta must not set {reserved!r} (save_model writes it)")
    tensors: dict[str, np.ndarray] = dict(model.params)
    for name, arr in (extra_tensors or {}).items():
        if not name.startswith(EXTRA_PREFIX):
            raise ValueError(f"extra tensor names must start with {EXTRA_PREFIX!r}, got {name!r}")
        tensors[name] = arr
    save_checkpoint(
        path, tensors, {"type": MODEL_FILE_TYPE, "model": model.config.to_dict(), **meta}
    )


def read_model_file(
    path: str | os.PathLike[str],
) -> tuple[SequenceModel, dict[str, Any], dict[str, np.ndarray]]:
    """Like :func:`load_model`, also returning the extra (``"optim."``) tensors."""
    path_str = os.fspath(path)
    tensors, meta = load_checkpoint(path_str)
    kind = meta.get("type")
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
    weights = {k: v for k, v in tensors.items() if not k.startswith(EXTRA_PREFIX)}
    extra = {k: v for k, v in tensors.items() if k.startswith(EXTRA_PREFIX)}
    check_tensors(path_str, weights, model.expected_shapes())
    for k, v in weights.items():
        if v.dtype != model.dtype:
            raise CheckpointError(
                f"{path_str}: tensor {k!r} is {v.dtype} but the metadata says the model is "
                f"{model.dtype}"
            )
    model.load_params(weights)
    return model, meta, extra


def load_model(path: str | os.PathLike[str]) -> tuple[SequenceModel, dict[str, Any]]:
    """Rebuild a model from a file written by :func:`save_model`; return ``(model, meta)``.

    ``meta`` is the file's metadata (``"model"``, and from training ``"task"``, ``"train"``,
    ``"step"``, ``"seed"``, ``"metrics"``, ...). Any problem (unreadable, corrupted, not a
    sequence-model file, a description the tensors disagree with) raises CheckpointError
    naming the file.
    """
    model, meta, _ = read_model_file(path)
    return model, meta
