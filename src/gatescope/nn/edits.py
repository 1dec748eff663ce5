r"""Edits of a layer's gates and states, applied inside the step loop: the seam for interventions.

An `EditPlan` is one layer's compiled edits: for a (step t, quantity q) it holds an affine
map applied to q_t right after q_t is computed and before anything uses it::

    q_t <- q_t * mul + add          mul, add (B, H) or (1, H); None means 1 and 0

which covers setting a value (mul = 0, add = v on the edited units; activation patching is a
value taken from another run), scaling (mul = s) and adding (add = a); units outside the
edit have mul = 1 and add = 0. Everything downstream reads the edited q_t, so a patched c_t
feeds h_t and every later step, and the trace (the cache) holds the edited values.

Backward differentiates the edited function. With dq = dL/dq_t (of the edited value)::

    dL/d(q_t before the edit) = dq * mul

so a set entry passes no gradient to what computed it, a scaled one passes it scaled, an
added one passes it unchanged. The derivative of the gate's own nonlinearity is taken at the
value it computed (`original`), which the forward keeps for the edited steps only.

A plan may also ask to keep dq (`keep_grads`): a "watch" entry (mul = add = None) changes
nothing and records dL/dq_t in `grads`, the gradient with respect to a gate or state that
attribution patching needs.

The sequence paths take `edits=None` (the default: their fast path, untouched, kernels
allowed) or a plan (the NumPy reference runs, with these hooks). `gatescope.inspect`
builds plans from user-facing edits; this module knows only arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class EditPlan:
    """One layer's edits: (t, quantity) -> (mul, add), each (B, H), (1, H) or None."""

    entries: dict[tuple[int, str], tuple[np.ndarray | None, np.ndarray | None]]
    keep_grads: bool = False  # record dL/dq_t of every entry in `grads` during backward
    saved: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)  # q_t before edit
    grads: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)  # dL/dq_t (edited)

    def apply(self, t: int, q: str, arr: np.ndarray) -> None:
        """Edit q_t in place (arr (B, H), a view into the cache); keep the value it had."""
        entry = self.entries.get((t, q))
        if entry is None:
            return
        mul, add = entry
        if mul is None and add is None:  # a watch entry: nothing to change or keep
            return
        self.saved[(t, q)] = arr.copy()  # (B, H), for the nonlinearity's derivative
        if mul is not None:
            arr *= mul
        if add is not None:
            arr += add

    def original(self, t: int, q: str, arr: np.ndarray) -> np.ndarray:
        """q_t as computed, before its edit (arr itself where step t has none)."""
        return self.saved.get((t, q), arr)

    def grad(self, t: int, q: str, dq: np.ndarray) -> np.ndarray:
        """dL/dq_t (of the edited value) -> dL/d(q_t before the edit) = dq * mul."""
        entry = self.entries.get((t, q))
        if entry is None:
            return dq
        if self.keep_grads:
            self.grads[(t, q)] = np.array(dq)  # (B, H) a copy: dq may be a reused buffer
        mul = entry[0]
        return dq if mul is None else dq * mul

    def reset(self) -> None:
        """Forget what a previous forward and backward kept (a plan may be run again)."""
        self.saved.clear()
        self.grads.clear()
