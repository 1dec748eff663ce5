r"""A dense layer over the last axis: the output head on top of a recurrent stack.

y = x W^T + b          x (..., D_in) -> y (..., D_out)
dx = dy W     dW = dy^T x     db = sum(dy)   (sums over every leading axis)
"""

from __future__ import annotations

import numpy as np

from .checks import Seed, as_float_dtype, as_generator, check_array, check_positive_int
from .parallel import matmul


class Linear:
    """`y = head(x)` on any leading shape; `dx = head.backward(dy)` overwrites `grads`.

    Weights ~ N(0, 1/in_features), bias 0. Keys "weight" (out, in) and "bias" (out,),
    as in torch.nn.Linear.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        seed: Seed = 0,
        dtype: object = np.float64,
    ) -> None:
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        self.dtype = as_float_dtype(dtype)
        rng = as_generator(seed)
        w = rng.normal(0.0, 1.0 / np.sqrt(in_features), (out_features, in_features))
        self.params = {"weight": w.astype(self.dtype)}
        if bias:
            self.params["bias"] = np.zeros(out_features, self.dtype)
        self.grads = {n: np.zeros_like(p) for n, p in self.params.items()}
        self._x: np.ndarray | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (..., in_features) -> (..., out_features)."""
        x = np.asarray(x)
        x = check_array("x", x, (*([None] * (x.ndim - 1)), self.in_features), self.dtype)
        self._x = x
        w = self.params["weight"]
        y = np.empty((*x.shape[:-1], self.out_features), np.result_type(x, w))
        matmul(x.reshape(-1, self.in_features), w.T, y.reshape(-1, self.out_features))
        if "bias" in self.params:
            y += self.params["bias"]
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy (..., out_features) -> dx (..., in_features); fills grads."""
        if self._x is None:
            raise RuntimeError(
                "backward() called before forward(): run the layer on an input first"
            )
        x = self._x
        dy = check_array("dy", dy, (*x.shape[:-1], self.out_features), self.dtype)
        dy2 = dy.reshape(-1, self.out_features)  # (N, out)
        matmul(dy2.T, x.reshape(-1, self.in_features), self.grads["weight"])
        if "bias" in self.grads:
            self.grads["bias"][...] = dy2.sum(axis=0)
        dx = np.empty(x.shape, np.result_type(dy, self.params["weight"]))
        matmul(dy2, self.params["weight"], dx.reshape(-1, self.in_features))
        return dx
