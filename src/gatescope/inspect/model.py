"""The instruments applied to a trained `SequenceModel` and a task batch.

`output_gradient` is the loss's gradient with respect to the recurrent stack's outputs, the
`dy` that `model.backward` hands to `model.recurrent.backward`; with it, the gradient at
every step is `gatescope.inspect.state_gradients(model.recurrent, batch.x, dy)`.

Shapes: B batch, T time, D input, H hidden (the top layer's), C outputs of the head.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .gradflow import GradientFlow, gradient_flow, state_gradients

__all__ = ["model_gradient_flow", "model_state_gradients", "output_gradient"]


def output_gradient(model: Any, batch: Any) -> tuple[float, np.ndarray]:
    """(loss, dL/dy) for `batch`: dy (B, T, H) is what the head sends into the recurrent stack.

    batch.x (B, T, D). With the head z = W y_t + b (W (C, H)), dL/dy_t = W^T dL/dz_t. For the
    *_last kinds only the last step is non-zero (the head reads h_T); for classify_steps
    every step is.
    """
    out = model.forward(batch.x)
    loss, dout = model.loss(out, batch)
    dh = model.head.backward(dout)  # (B, H) or (B, T, H)
    B, T = batch.x.shape[0], batch.x.shape[1]
    if model.kind == "classify_steps":
        return float(loss), np.asarray(dh)
    dy = np.zeros((B, T, model.config.hidden_size), model.dtype)
    dy[:, -1, :] = dh
    return float(loss), dy


def model_state_gradients(model: Any, batch: Any) -> dict[str, np.ndarray]:
    """dL/ds_t at every step t = 0..T for the model's loss on `batch` (see `state_gradients`).

    Returns {"h": (B, T + 1, H)} ({"h", "c"} for an LSTM; (L, B, T + 1, H) with L layers).
    """
    _, dy = output_gradient(model, batch)
    return state_gradients(model.recurrent, batch.x, dy)


def model_gradient_flow(model: Any, batch: Any, *, layer_index: int = -1) -> GradientFlow:
    """Mean ||dL/dh_t|| (and ||dL/dc_t||) against steps back, for the model's loss on `batch`.

    h[k] = (1 / B) sum_b ||dL/dh_{T-k}[b, :]||_2, k = 0..T: a `GradientFlow` of (T + 1,)
    arrays for layer ``layer_index`` of the stack (default: the top one), loss recorded.
    """
    loss, dy = output_gradient(model, batch)
    return gradient_flow(model.recurrent, batch.x, dy, layer_index=layer_index, loss=loss)
