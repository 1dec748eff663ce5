r"""Losses as pure functions returning (loss, gradient with respect to the prediction).

Softmax cross-entropy over the last axis, averaged over the counted positions N::

    L = -(1/N) sum_n log softmax(z_n)[y_n]        dL/dz_n = (softmax(z_n) - onehot(y_n)) / N

Mean squared error over all M elements::

    L = (1/M) sum (p - y)^2                        dL/dp = 2 (p - y) / M
"""

from __future__ import annotations

import numpy as np

from .functional import log_softmax


def cross_entropy(
    logits: np.ndarray, targets: np.ndarray, mask: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """logits (..., C), integer targets (...), optional boolean mask (...) -> (loss, dlogits).

    The loss is the mean negative log-likelihood in nats over the positions where mask is
    True (all positions without a mask).
    """
    logits = np.asarray(logits)
    targets = np.asarray(targets)
    if logits.dtype.kind != "f":
        raise ValueError(f"logits must be a floating-point array, got dtype {logits.dtype}")
    if targets.dtype.kind not in "iu":
        raise ValueError(f"targets must be integer class indices, got dtype {targets.dtype}")
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"targets must have shape {logits.shape[:-1]} (logits' shape without classes), "
            f"got {targets.shape}"
        )
    C = logits.shape[-1]
    if targets.size and (targets.min() < 0 or targets.max() >= C):
        raise ValueError(
            f"targets must lie in [0, {C}), got values in [{targets.min()}, {targets.max()}]"
        )
    if mask is None:
        mask = np.ones(targets.shape, bool)
    else:
        mask = np.asarray(mask, bool)
        if mask.shape != targets.shape:
            raise ValueError(f"mask must have shape {targets.shape}, got {mask.shape}")
    n = int(mask.sum())
    if n == 0:
        raise ValueError("cross_entropy needs at least one counted position (mask is all False)")
    logp = log_softmax(logits)  # (..., C)
    picked = np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]  # (...)
    loss = -float(picked[mask].sum()) / n
    grad = np.exp(logp)
    np.put_along_axis(
        grad, targets[..., None], np.take_along_axis(grad, targets[..., None], -1) - 1, -1
    )
    grad *= (mask / n)[..., None].astype(grad.dtype)
    return loss, grad


def mse(pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """pred and target of the same shape -> (mean squared error, dpred)."""
    pred = np.asarray(pred)
    target = np.asarray(target, dtype=pred.dtype)
    if pred.shape != target.shape:
        raise ValueError(f"target must have the shape of pred {pred.shape}, got {target.shape}")
    diff = pred - target
    return float(np.mean(diff**2)), (2.0 / diff.size) * diff
