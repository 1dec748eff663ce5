"""Optimizers and gradient clipping over ``params`` / ``grads`` dicts.

Every trainable object in gatescope exposes ``params`` and ``grads``: ``dict[str, np.ndarray]``
with the same keys and shapes. An optimizer keeps references to the parameter arrays and updates
them *in place* on each ``step(grads)``, so any other holder of those arrays (the layer, a model,
a plot) sees the new values. The update rules are exactly those of ``torch.optim``'s optimizers of
the same name with the same hyper-parameters (single-tensor code path, ``maximize=False``,
``dampening=0`` for SGD, ``centered=False`` for RMSprop, ``lr_decay=0`` and
``initial_accumulator_value=0`` for Adagrad, ``amsgrad=False`` for Adam).

Notation in the docstrings: ``p`` a parameter, ``g`` its gradient, ``t`` the step number
(1 on the first call to ``step``), ``lr`` the learning rate, ``wd`` the weight decay; every
operation is elementwise.

State
-----
``state_dict()`` returns a flat ``dict[str, np.ndarray]`` that safetensors can store as is:

- ``"<name>.step"``: the step counter, an int64 array of shape (1,);
- ``"<name>.hp.<hyper>"``: each hyper-parameter, float64 (flags as int64 0/1) of shape (1,);
- ``"<name>.<buffer>.<param key>"``: each state buffer, e.g. ``"adam.m.rnn.weight_ih_l0"``.

``load_state_dict(d)`` restores all three (hyper-parameters included, as torch does), so a run
resumed from it continues bit for bit like the uninterrupted one (on the same machine and
backend: see the numerics page).

Allocation: all buffers and scratch arrays are made once (or on the first step that needs them);
a step allocates no arrays.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "Optimizer",
    "SGD",
    "Adam",
    "RMSProp",
    "Adagrad",
    "OPTIMIZERS",
    "make_optimizer",
    "clip_grad_norm",
    "clip_grad_value",
]

Arrays = Mapping[str, np.ndarray]

# torch.nn.utils.clip_grad_norm_ adds this to the norm before dividing.
_CLIP_EPS = 1e-6


# --------------------------------------------------------------------------- validation helpers


def _check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    low_open: bool = False,
    high: float | None = None,
    high_open: bool = False,
) -> float:
    """Return ``float(value)`` if it is a finite real in the given interval, else ValueError."""
    low_sym = "(" if low_open else "["
    high_sym = ")" if high_open or high is None else "]"
    interval = (
        f"{low_sym}{'-inf' if low is None else low}, {'inf' if high is None else high}{high_sym}"
    )
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a real number in {interval}, got {value!r}")
    v = float(value)
    ok = math.isfinite(v)
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    if not ok:
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
    return v


def _check_params(params: Any) -> dict[str, np.ndarray]:
    """Validate a params dict; return a new dict holding the *same* array objects."""
    if not isinstance(params, Mapping):
        raise ValueError(f"params must be a dict[str, np.ndarray], got {type(params).__name__}")
    if len(params) == 0:
        raise ValueError("params must contain at least one array, got an empty dict")
    out: dict[str, np.ndarray] = {}
    for k, p in params.items():
        if not isinstance(k, str):
            raise ValueError(f"params keys must be str, got {k!r}")
        if not isinstance(p, np.ndarray):
            raise ValueError(f"params[{k!r}] must be a np.ndarray, got {type(p).__name__}")
        if not np.issubdtype(p.dtype, np.floating):
            raise ValueError(f"params[{k!r}] must have a floating dtype, got {p.dtype}")
        if not p.flags.writeable:
            raise ValueError(f"params[{k!r}] must be writeable (it is updated in place)")
        out[k] = p
    return out


def _check_grads(params: dict[str, np.ndarray], grads: Any) -> None:
    """Raise ValueError unless ``grads`` has exactly the keys and shapes of ``params``."""
    if not isinstance(grads, Mapping):
        raise ValueError(f"grads must be a dict[str, np.ndarray], got {type(grads).__name__}")
    if grads.keys() != params.keys():
        missing = sorted(params.keys() - grads.keys())
        extra = sorted(grads.keys() - params.keys())
        raise ValueError(
            f"grads must have the keys of params; missing {missing}, unexpected {extra}"
        )
    for k, p in params.items():
        g = grads[k]
        if not isinstance(g, np.ndarray) or g.shape != p.shape:
            got = g.shape if isinstance(g, np.ndarray) else type(g).__name__
            raise ValueError(f"grads[{k!r}] must be an ndarray of shape {p.shape}, got {got}")


# --------------------------------------------------------------------------------- base class


class Optimizer:
    """Base class: holds the params, the step counter, state buffers and scratch arrays.

    Subclasses set ``name``, implement ``hyperparams`` / ``_set_hyperparams`` /
    ``_buffer_names`` and ``_update(key, p, g)``, which applies one step to one array in place.

    Attributes:
        params: the parameter dict (same array objects as passed in; updated in place).
        step_count: number of completed ``step`` calls (``t`` of the last step).
    """

    name: ClassVar[str] = "optimizer"

    def __init__(self, params: Arrays) -> None:
        self.params: dict[str, np.ndarray] = _check_params(params)
        self.step_count: int = 0
        # buffer name -> key -> array, same shape/dtype as params[key]; zero-initialised.
        self._state: dict[str, dict[str, np.ndarray]] = {}
        # scratch arrays: "_tmp" always, "_gwd" (g + wd * p) when weight decay is used.
        self._tmp: dict[str, np.ndarray] = {k: np.empty_like(p) for k, p in self.params.items()}
        self._gwd: dict[str, np.ndarray] = {}

    # ---- to be provided by subclasses

    def hyperparams(self) -> dict[str, float | bool]:
        """The current hyper-parameters, by name (as stored under ``"<name>.hp.*"``)."""
        raise NotImplementedError

    def _set_hyperparams(self, **hp: Any) -> None:
        """Validate and assign hyper-parameters (all of them; ValueError on a bad one)."""
        raise NotImplementedError

    def _buffer_names(self) -> tuple[str, ...]:
        """Names of the state buffers the current hyper-parameters need."""
        raise NotImplementedError

    def _update(self, key: str, p: np.ndarray, g: np.ndarray) -> None:
        """Apply one step to ``p`` in place; ``self.step_count`` is already this step's t."""
        raise NotImplementedError

    # ---- shared machinery

    def _ensure_buffers(self) -> None:
        """Allocate (zeroed) any buffer the current hyper-parameters need and lack."""
        for b in self._buffer_names():
            if b not in self._state:
                self._state[b] = {k: np.zeros_like(p) for k, p in self.params.items()}
        if getattr(self, "weight_decay", 0.0) != 0.0 and not self._gwd:
            self._gwd = {k: np.empty_like(p) for k, p in self.params.items()}

    def _decayed(self, key: str, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        """Return ``g + wd * p`` (in a scratch array) when wd != 0, else ``g`` itself."""
        wd = self.weight_decay  # type: ignore[attr-defined]
        if wd == 0.0:
            return g
        out = self._gwd[key]
        np.multiply(p, wd, out=out)
        out += g
        return out

    def step(self, grads: Arrays) -> None:
        """Update every parameter array in place from ``grads`` (same keys and shapes).

        ``grads`` is only read, never modified.
        """
        _check_grads(self.params, grads)
        self._ensure_buffers()
        self.step_count += 1
        for k, p in self.params.items():
            self._update(k, p, grads[k])

    def state_dict(self) -> dict[str, np.ndarray]:
        """A flat, safetensors-storable copy of the state: step, hyper-parameters, buffers."""
        self._ensure_buffers()
        d: dict[str, np.ndarray] = {f"{self.name}.step": np.array([self.step_count], np.int64)}
        for hp, v in self.hyperparams().items():
            # flags as int64 0/1: checkpoints store only float32, float64 and int64
            dtype = np.int64 if isinstance(v, bool) else np.float64
            d[f"{self.name}.hp.{hp}"] = np.array([v], dtype=dtype)
        for b in self._buffer_names():
            for k, arr in self._state[b].items():
                d[f"{self.name}.{b}.{k}"] = arr.copy()
        return d

    def load_state_dict(self, d: Arrays) -> None:
        """Restore the state saved by ``state_dict`` (validated fully before anything changes).

        Raises ValueError on missing or unexpected keys, wrong shapes or bad values.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"state dict must be a dict[str, np.ndarray], got {type(d).__name__}")
        prefix = f"{self.name}."
        step_key = f"{prefix}step"

        def scalar(key: str) -> np.ndarray:
            if key not in d:
                raise ValueError(f"state dict lacks {key!r}")
            a = np.asarray(d[key])
            if a.size != 1:
                raise ValueError(f"state dict {key!r} must hold one value, got shape {a.shape}")
            return a.reshape(())

        step_arr = scalar(step_key)
        if not np.issubdtype(step_arr.dtype, np.integer) or int(step_arr) < 0:
            raise ValueError(
                f"state dict {step_key!r} must be a non-negative integer, got {step_arr!r}"
            )
        old_hp = self.hyperparams()
        new_hp: dict[str, float | bool] = {}
        for hp, current in old_hp.items():
            a = scalar(f"{prefix}hp.{hp}")
            new_hp[hp] = bool(a) if isinstance(current, bool) else a.item()

        # Validate the hyper-parameters by setting them; restore the old ones on any failure.
        try:
            self._set_hyperparams(**new_hp)
        except ValueError as e:
            raise ValueError(f"state dict for {self.name} has a bad hyper-parameter: {e}") from e
        try:
            expected = {step_key} | {f"{prefix}hp.{hp}" for hp in new_hp}
            buffers: dict[str, dict[str, np.ndarray]] = {}
            for b in self._buffer_names():
                buffers[b] = {}
                for k, p in self.params.items():
                    key = f"{prefix}{b}.{k}"
                    expected.add(key)
                    if key not in d:
                        raise ValueError(f"state dict lacks {key!r}")
                    a = np.asarray(d[key])
                    if a.shape != p.shape:
                        raise ValueError(
                            f"state dict {key!r} must have shape {p.shape}, got {a.shape}"
                        )
                    if not np.issubdtype(a.dtype, np.floating):
                        raise ValueError(
                            f"state dict {key!r} must have a floating dtype, got {a.dtype}"
                        )
                    buffers[b][k] = a
            extra = sorted(set(d) - expected)
            if extra:
                raise ValueError(f"state dict has unexpected keys for {self.name}: {extra[:10]}")
        except ValueError:
            self._set_hyperparams(**old_hp)
            raise

        self.step_count = int(step_arr)
        self._state = {b: self._state[b] for b in buffers if b in self._state}
        self._ensure_buffers()
        for b, by_key in buffers.items():
            for k, a in by_key.items():
                np.copyto(self._state[b][k], a, casting="same_kind")

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hyperparams().items())
        return (
            f"{type(self).__name__}({len(self.params)} arrays, {hp}, step_count={self.step_count})"
        )


# --------------------------------------------------------------------------------- optimizers


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.

    Same as ``torch.optim.SGD`` with ``dampening=0``. With buffer ``b`` (zero at t = 0)::

        g = g + wd * p
        b = momentum * b + g                  (when momentum > 0)
        d = g + momentum * b  if nesterov
            b                 if momentum > 0 and not nesterov
            g                 otherwise
        p = p - lr * d

    (torch starts ``b`` as a copy of the first ``g``; ``momentum * 0 + g`` is the same value.)
    State buffer: ``momentum`` (only when momentum > 0).
    """

    name = "sgd"

    def __init__(
        self,
        params: Arrays,
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params)
        self._set_hyperparams(
            lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay
        )
        self._ensure_buffers()

    def hyperparams(self) -> dict[str, float | bool]:
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
        }

    def _set_hyperparams(
        self, *, lr: float, momentum: float, nesterov: bool, weight_decay: float
    ) -> None:
        lr = _check_number("lr", lr, low=0.0, low_open=True)
        momentum = _check_number("momentum", momentum, low=0.0)
        weight_decay = _check_number("weight_decay", weight_decay, low=0.0)
        if not isinstance(nesterov, bool | np.bool_):
            raise ValueError(f"nesterov must be a bool, got {nesterov!r}")
        if nesterov and momentum == 0.0:
            raise ValueError(f"nesterov=True requires momentum > 0, got momentum={momentum!r}")
        self.lr, self.momentum, self.nesterov = lr, momentum, bool(nesterov)
        self.weight_decay = weight_decay

    def _buffer_names(self) -> tuple[str, ...]:
        return ("momentum",) if self.momentum != 0.0 else ()

    def _update(self, key: str, p: np.ndarray, g: np.ndarray) -> None:
        g = self._decayed(key, p, g)
        tmp = self._tmp[key]
        if self.momentum != 0.0:
            b = self._state["momentum"][key]
            b *= self.momentum
            b += g
            if self.nesterov:
                np.multiply(b, self.momentum, out=tmp)
                tmp += g
                tmp *= self.lr
            else:
                np.multiply(b, self.lr, out=tmp)
        else:
            np.multiply(g, self.lr, out=tmp)
        p -= tmp


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction and L2 weight decay (not AdamW's decoupled one).

    Same as ``torch.optim.Adam`` (``amsgrad=False``). With ``m``, ``v`` zero at t = 0::

        g = g + wd * p
        m = m + (1 - beta1) * (g - m)         (= beta1 * m + (1 - beta1) * g, torch's lerp)
        v = beta2 * v + (1 - beta2) * g * g
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    eps is added *after* the bias correction of sqrt(v), as in torch.
    State buffers: ``m`` (first moment), ``v`` (second moment).
    """

    name = "adam"

    def __init__(
        self,
        params: Arrays,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params)
        if not isinstance(betas, tuple | list) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self._set_hyperparams(
            lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay
        )
        self._ensure_buffers()

    @property
    def betas(self) -> tuple[float, float]:
        return (self.beta1, self.beta2)

    def hyperparams(self) -> dict[str, float | bool]:
        return {
            "lr": self.lr,
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
        }

    def _set_hyperparams(
        self, *, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float
    ) -> None:
        lr = _check_number("lr", lr, low=0.0, low_open=True)
        beta1 = _check_number("betas[0] (beta1)", beta1, low=0.0, high=1.0, high_open=True)
        beta2 = _check_number("betas[1] (beta2)", beta2, low=0.0, high=1.0, high_open=True)
        eps = _check_number("eps", eps, low=0.0, low_open=True)
        weight_decay = _check_number("weight_decay", weight_decay, low=0.0)
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.weight_decay = weight_decay

    def _buffer_names(self) -> tuple[str, ...]:
        return ("m", "v")

    def _update(self, key: str, p: np.ndarray, g: np.ndarray) -> None:
        g = self._decayed(key, p, g)
        m, v, tmp = self._state["m"][key], self._state["v"][key], self._tmp[key]
        t = self.step_count
        # m.lerp_(g, w) with w = 1 - beta1, in torch's two numerically different branches.
        w = 1 - self.beta1
        np.subtract(g, m, out=tmp)
        if w < 0.5:
            tmp *= w
            m += tmp
        else:
            tmp *= 1 - w
            np.subtract(g, tmp, out=m)
        # v = beta2 * v + ((1 - beta2) * g) * g
        v *= self.beta2
        np.multiply(g, 1 - self.beta2, out=tmp)
        tmp *= g
        v += tmp
        step_size = self.lr / (1 - self.beta1**t)
        bias_correction2_sqrt = (1 - self.beta2**t) ** 0.5
        np.sqrt(v, out=tmp)
        tmp /= bias_correction2_sqrt
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= step_size
        p -= tmp


class RMSProp(Optimizer):
    """RMSProp (Hinton), uncentred, with optional momentum.

    Same as ``torch.optim.RMSprop`` (``centered=False``, ``weight_decay=0``). With ``v`` and
    ``b`` zero at t = 0::

        v = alpha * v + (1 - alpha) * g * g
        b = momentum * b + g / (sqrt(v) + eps);  p = p - lr * b       (momentum > 0)
        p = p - lr * g / (sqrt(v) + eps)                              (momentum = 0)

    eps is added outside the square root, as in torch (and unlike Keras).
    State buffers: ``square_avg``; ``momentum`` (only when momentum > 0).
    """

    name = "rmsprop"

    def __init__(
        self,
        params: Arrays,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        momentum: float = 0.0,
    ) -> None:
        super().__init__(params)
        self._set_hyperparams(lr=lr, alpha=alpha, eps=eps, momentum=momentum)
        self._ensure_buffers()

    def hyperparams(self) -> dict[str, float | bool]:
        return {"lr": self.lr, "alpha": self.alpha, "eps": self.eps, "momentum": self.momentum}

    def _set_hyperparams(self, *, lr: float, alpha: float, eps: float, momentum: float) -> None:
        lr = _check_number("lr", lr, low=0.0, low_open=True)
        alpha = _check_number("alpha", alpha, low=0.0, high=1.0, high_open=True)
        eps = _check_number("eps", eps, low=0.0, low_open=True)
        momentum = _check_number("momentum", momentum, low=0.0)
        self.lr, self.alpha, self.eps, self.momentum = lr, alpha, eps, momentum

    def _buffer_names(self) -> tuple[str, ...]:
        return ("square_avg", "momentum") if self.momentum != 0.0 else ("square_avg",)

    def _update(self, key: str, p: np.ndarray, g: np.ndarray) -> None:
        v, tmp = self._state["square_avg"][key], self._tmp[key]
        v *= self.alpha
        np.multiply(g, 1 - self.alpha, out=tmp)
        tmp *= g
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += self.eps
        np.divide(g, tmp, out=tmp)
        if self.momentum != 0.0:
            b = self._state["momentum"][key]
            b *= self.momentum
            b += tmp
            np.multiply(b, self.lr, out=tmp)
        else:
            tmp *= self.lr
        p -= tmp


class Adagrad(Optimizer):
    """Adagrad (Duchi et al.).

    Same as ``torch.optim.Adagrad`` (``lr_decay=0``, ``weight_decay=0``,
    ``initial_accumulator_value=0``). With ``s`` zero at t = 0::

        s = s + g * g
        p = p - lr * g / (sqrt(s) + eps)

    State buffer: ``sum``.
    """

    name = "adagrad"

    def __init__(self, params: Arrays, lr: float = 1e-2, eps: float = 1e-10) -> None:
        super().__init__(params)
        self._set_hyperparams(lr=lr, eps=eps)
        self._ensure_buffers()

    def hyperparams(self) -> dict[str, float | bool]:
        return {"lr": self.lr, "eps": self.eps}

    def _set_hyperparams(self, *, lr: float, eps: float) -> None:
        lr = _check_number("lr", lr, low=0.0, low_open=True)
        eps = _check_number("eps", eps, low=0.0, low_open=True)
        self.lr, self.eps = lr, eps

    def _buffer_names(self) -> tuple[str, ...]:
        return ("sum",)

    def _update(self, key: str, p: np.ndarray, g: np.ndarray) -> None:
        s, tmp = self._state["sum"][key], self._tmp[key]
        np.multiply(g, g, out=tmp)
        s += tmp
        np.sqrt(s, out=tmp)
        tmp += self.eps
        np.divide(g, tmp, out=tmp)
        tmp *= self.lr
        p -= tmp


OPTIMIZERS: Mapping[str, type[Optimizer]] = MappingProxyType(
    {"sgd": SGD, "adam": Adam, "rmsprop": RMSProp, "adagrad": Adagrad}
)


def make_optimizer(name: str, params: Arrays, **kw: Any) -> Optimizer:
    """Build an optimizer by name ("sgd", "adam", "rmsprop", "adagrad"; case-insensitive).

    Keyword arguments go to the constructor. An unknown name or keyword raises ValueError
    listing the valid ones.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in OPTIMIZERS:
        raise ValueError(f"optimizer name must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    cls = OPTIMIZERS[key]
    valid = [n for n in inspect.signature(cls.__init__).parameters if n not in ("self", "params")]
    unknown = sorted(set(kw) - set(valid))
    if unknown:
        raise ValueError(f"{key} optimizer takes keyword arguments {valid}, got unknown {unknown}")
    return cls(params, **kw)


# ---------------------------------------------------------------------------------- clipping


def clip_grad_norm(grads: Mapping[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``.

    Like ``torch.nn.utils.clip_grad_norm_`` (norm_type 2)::

        norm = sqrt(sum over arrays of sum(g * g))
        coef = max_norm / (norm + 1e-6)
        g = g * coef      for every array, when coef < 1

    Returns the norm *before* clipping, as a float. If that norm is not finite (inf or NaN), the
    gradients are left untouched (torch would multiply them by NaN) and the non-finite norm is
    returned so the caller can stop or skip the step.
    """
    max_norm = _check_number("max_norm", max_norm, low=0.0, low_open=True)
    arrays = list(grads.values())
    if not arrays:
        return 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        per_array = np.array([np.linalg.norm(g.ravel()) for g in arrays], dtype=np.float64)
        norm = float(np.linalg.norm(per_array))
    if not math.isfinite(norm):
        return norm
    coef = max_norm / (norm + _CLIP_EPS)
    if coef < 1.0:
        for g in arrays:
            g *= coef
    return norm


def clip_grad_value(grads: Mapping[str, np.ndarray], clip_value: float) -> None:
    """Clamp every gradient entry to ``[-clip_value, clip_value]`` in place.

    Like ``torch.nn.utils.clip_grad_value_``: ``g = min(max(g, -clip_value), clip_value)``;
    NaN entries stay NaN.
    """
    clip_value = _check_number("clip_value", clip_value, low=0.0, low_open=True)
    for g in grads.values():
        np.clip(g, -clip_value, clip_value, out=g)
