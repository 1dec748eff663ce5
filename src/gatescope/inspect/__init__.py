"""Instruments: functions that return the arrays behind every gatescope figure.

    from gatescope import inspect as gi
    acts = gi.gate_activations(lstm, x[0])          # {"f": (H, T), ...}: one sequence
    gi.gate_traces(lstm, x)                         # mean gates and state norms per step
    gi.saturation(lstm, x)                          # {"f": {"left": (H,), "right": (H,)}, ...}
    gi.state_gradients(lstm, x, dy=dy)              # {"h": (B, T+1, H), "c": ...}: dL/ds_t
    gi.gradient_flow(lstm, x, dy=dy)                # mean norms against steps back
    gi.forget_gate_product(lstm.trace["f"])         # the textbook's dc_T/dc_k along the cell
    gi.cell_state_jacobian(lstm, x, cut_h=True)     # ... and the same from the backward pass
    gi.input_influence(lstm, x, [(0, 99)], window=50, head=head)  # ||dz_p/dx_t|| per step t
    y, state = gi.intervene(lstm, x, [gi.Edit("f", steps=[3], units=[0, 2], value=0.0)])
    logits = gi.intervene(s2s, (src, tgt), [gi.Edit("attention", steps=[2], value=one_hot)])
    gi.attention_alignment(s2s, task, texts)        # dates fields, reverse anti-diagonal
    gi.connectivity(s2s, src)                       # (B, T, S): ||d logit_t / d e_s||

`gatescope.inspect.seq2seq` reads a sequence-to-sequence model's attention on real examples
and measures its connectivity (how strongly each source position reaches each output).
`gatescope.inspect.model` does the same for a trained `SequenceModel` and a task batch;
`gatescope.inspect.units` finds interpretable units in a text, `gatescope.inspect.influence`
measures the influence of earlier inputs, `gatescope.inspect.capacity` turns a sweep's
results into capacity curves.
"""

from __future__ import annotations

from .capacity import CurvePoint, capacity_curve
from .gates import (
    GATES,
    LABELS,
    STATES,
    chapter_formula,
    gate_activations,
    gate_traces,
    parameter_counts,
    saturation,
)
from .gradflow import (
    GradientFlow,
    cell_state_jacobian,
    finite_difference_cell_jacobian,
    forget_gate_product,
    gradient_flow,
    state_gradients,
    suffix_gradients,
)
from .influence import (
    document_influence,
    head_probabilities,
    influence_positions,
    input_influence,
    predicted_classes,
    top_classes,
    trace_with_states,
)
from .interventions import Edit, intervene
from .model import model_gradient_flow, model_state_gradients, output_gradient
from .seq2seq import attention_alignment, connectivity

__all__ = [
    "GATES",
    "LABELS",
    "STATES",
    "CurvePoint",
    "Edit",
    "GradientFlow",
    "attention_alignment",
    "capacity_curve",
    "cell_state_jacobian",
    "chapter_formula",
    "connectivity",
    "document_influence",
    "finite_difference_cell_jacobian",
    "forget_gate_product",
    "gate_activations",
    "gate_traces",
    "gradient_flow",
    "head_probabilities",
    "influence_positions",
    "input_influence",
    "intervene",
    "model_gradient_flow",
    "model_state_gradients",
    "output_gradient",
    "parameter_counts",
    "predicted_classes",
    "saturation",
    "state_gradients",
    "suffix_gradients",
    "top_classes",
    "trace_with_states",
]
