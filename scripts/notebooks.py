"""Write the example notebooks from the cells below and execute them in place.

    python scripts/notebooks.py            # all notebooks, full settings (the saved outputs)
    python scripts/notebooks.py NAME ...   # only these (file stems)
    python scripts/notebooks.py --markdown-only [NAME ...]   # new text, outputs kept

The notebooks in examples/ are the source of truth once written; this script made them
and re-runs them (`GATESCOPE_QUICK=1` in the environment gives the test suite's settings).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(text.strip())


def code(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(text.strip())


SETUP = """
%matplotlib inline
%config InlineBackend.print_figure_kwargs = {"bbox_inches": "tight", "dpi": 72}  # small PNGs
import os

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display

import gatescope as gs
from gatescope import inspect as gi
from gatescope import viz
from gatescope.model import SequenceModel
from gatescope.tasks import get_task
from gatescope.train import TrainConfig, evaluate_model, fit

# GATESCOPE_QUICK=1 (set by the test suite) shrinks every run to seconds; the saved outputs
# come from the full settings.
QUICK = os.environ.get("GATESCOPE_QUICK") == "1"
"""

UNDERSTANDING_LSTMS = [
    md("""
# Understanding LSTM networks, measured

This notebook follows Chris Olah's essay [*Understanding LSTM Networks*](https://colah.github.io/posts/2015-08-Understanding-LSTMs/)
and the notebook gatescope grew from, but every picture comes from a network that was
really trained, and the gradient flow is measured by the backward pass instead of being
simulated with constant decay factors.

1. The LSTM cell in a few lines of NumPy, checked against `gs.LSTMCell`.
2. The task: remember the first element of a sequence.
3. Training an LSTM and a vanilla RNN on it.
4. The gates of the *trained* LSTM on one sequence.
5. RNN against LSTM hidden states.
6. The gradient that really flows back through time, beside the simulated curve.
"""),
    code(SETUP),
    md(r"""
## 1. The cell

For one step, with input $x_t$, previous hidden state $h_{t-1}$ and cell state $c_{t-1}$
(PyTorch's gate order i, f, g, o):

$$
\begin{aligned}
a &= W_{ih} x_t + W_{hh} h_{t-1} + b \\
i &= \sigma(a_i), \quad f = \sigma(a_f), \quad g = \tanh(a_g), \quad o = \sigma(a_o) \\
c_t &= f \odot c_{t-1} + i \odot g \qquad \text{(the additive "conveyor belt")} \\
h_t &= o \odot \tanh(c_t)
\end{aligned}
$$

Written out in NumPy, batch first (rows are sequences):
"""),
    code("""
def sigmoid(z):
    e = np.exp(-np.abs(z))  # never overflows
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def lstm_step(x, h_prev, c_prev, w_ih, w_hh, b):
    H = h_prev.shape[1]
    a = x @ w_ih.T + h_prev @ w_hh.T + b  # (B, 4H)
    i, f, g, o = sigmoid(a[:, :H]), sigmoid(a[:, H:2*H]), np.tanh(a[:, 2*H:3*H]), sigmoid(a[:, 3*H:])
    c = f * c_prev + i * g
    return o * np.tanh(c), c


cell = gs.LSTMCell(input_size=10, hidden_size=12, seed=0)   # float64
rng = np.random.default_rng(0)
x, h, c = rng.normal(size=(4, 10)), rng.normal(size=(4, 12)), rng.normal(size=(4, 12))
h_ours, c_ours = lstm_step(x, h, c, cell.params["weight_ih"], cell.params["weight_hh"], cell.params["bias"])
h_gs, c_gs, cache = cell.forward(x, h, c)
print("largest difference, h:", np.abs(h_ours - h_gs).max(), " c:", np.abs(c_ours - c_gs).max())
print("parameters:", {k: v.shape for k, v in cell.params.items()})
"""),
    md("""
`gs.LSTMCell` is gatescope's readable one-step cell (with a backward pass); `gs.LSTM` runs
whole sequences with exact backprop through time and is tested equal to it, to PyTorch and
to finite differences.

## 2. The task: remember the first element

The notebook's task is gatescope's `recall`: the one-hot symbol at step 0 (one of 8) must be
named at the last step, after T - 1 steps of Gaussian noise. Chance is 1/8.
"""),
    code("""
T = 20 if QUICK else 50
task = get_task("recall", T)
batch = task.make_batch(4, np.random.default_rng(0))
print(task)
print("x:", batch.x.shape, "(batch, time, symbols);  y:", batch.y)
print("symbol shown at step 0:", batch.x[:, 0].argmax(axis=1))
display(viz.sequence_figure(batch.x[0], title="one recall sequence: the symbol, then noise"))
"""),
    md("""
## 3. Train an LSTM and a vanilla RNN

Both with 64 units, Adam, batch 64. The LSTM's forget-gate bias starts at 3
(f = σ(3) = 0.95: remember by default), the trick that lets it find the one informative
step; the RNN has nothing like it. Training stops as soon as held-out accuracy reaches 99%.
"""),
    code("""
steps = 300 if QUICK else 1500
config = TrainConfig(steps=steps, batch_size=64, lr=3e-3, eval_every=50, eval_size=300, seed=0)
models, results = {}, {}
for arch, options in (("lstm", {"forget_bias": 3.0}), ("rnn", {})):
    model = SequenceModel.for_task(task, arch, hidden_size=64, seed=0, dtype="float32", **options)
    results[arch] = fit(task, model, config, progress=False)
    models[arch] = model
    r = results[arch]
    print(f"{arch.upper():4s} {model.num_params():6,} parameters: accuracy {r.metrics['accuracy']:.3f} "
          f"after {r.steps} steps ({r.stop_reason})")
display(viz.training_curves_figure({a: r.history for a, r in results.items()}, metric="accuracy"))
"""),
    md("""
## 4. The gates of the trained LSTM

One test sequence, every unit (rows) at every step (columns). Gates are on a fixed 0..1
scale; cell and hidden states on a diverging scale centred at 0. The symbol arrives at
step 0 (dashed line). Look for the units whose forget gate stays near 1 and whose cell
state keeps one value from then on: they carry the symbol to the last step.
"""),
    code("""
lstm = models["lstm"]
probe = task.make_batch(1, np.random.default_rng(7))
acts = gi.gate_activations(lstm.recurrent, probe.x)       # {"i": (H, T), "f": ..., "c": ..., "h": ...}
pred = int(lstm.forward(probe.x).argmax())
print(f"symbol {int(probe.y[0])}, the LSTM answers {pred}")
display(viz.gate_heatmaps(acts, "lstm", mark_steps=[0]))
"""),
    md("""
## 5. RNN against LSTM hidden states

The same sequence through both trained networks. The RNN's hidden state is rewritten by
every noise step; the LSTM's carries the symbol in a few units from step 0 to the end.
"""),
    code("""
panels = {arch: gi.gate_activations(models[arch].recurrent, probe.x)["h"] for arch in ("rnn", "lstm")}
display(viz.hidden_states_figure(panels))
"""),
    md("""
## 6. The gradient that flows back through time

The original notebook *simulated* this plot: a gradient multiplied by 0.84 per step for the
RNN and by an average forget gate of 0.95 for the LSTM. Here it is *measured*: the norm of
dL/dh_t (and dL/dc_t along the LSTM's cell state) at every step t, from the real backward
pass on 64 test sequences, for the untrained and the trained networks. The simulated
curves are drawn beside it, dotted and labelled. Every curve is divided by the gradient
norm at the loss, so all start at 1.
"""),
    code("""
flow_batch = task.make_batch(64, np.random.default_rng(3))
measured = {"trained": {a: gi.model_gradient_flow(m, flow_batch) for a, m in models.items()}}
fresh = {a: SequenceModel.for_task(task, a, hidden_size=64, seed=0, dtype="float32", **o)
         for a, o in (("lstm", {"forget_bias": 3.0}), ("rnn", {}))}
measured["untrained"] = {a: gi.model_gradient_flow(m, flow_batch) for a, m in fresh.items()}

fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), sharey=True)
for ax, panel in zip(axes, ("untrained", "trained")):
    for arch, color in (("lstm", "tab:blue"), ("rnn", "tab:red")):
        d = measured[panel][arch].to_dict()
        k, h = np.asarray(d["steps_back"]), np.asarray(d["h"])
        ax.plot(k, h / h[0], color=color, label=f"{arch.upper()} measured ||dL/dh_t||")
        if d.get("c") is not None:
            c = np.asarray(d["c"])
            ax.plot(k, np.where(c > 0, c / h[0], np.nan), color=color, ls="--",
                    label=f"{arch.upper()} measured ||dL/dc_t||")
    k = np.arange(T)
    ax.plot(k, 0.84 ** k, color="tab:red", ls=":", label="RNN simulated (x0.84 per step)")
    ax.plot(k, 0.95 ** k, color="tab:blue", ls=":", label="LSTM simulated (x0.95 per step)")
    ax.set_yscale("log")
    ax.set_title(f"{panel} networks")
    ax.set_xlabel("steps back from the loss")
    ax.grid(alpha=0.3)
axes[0].set_ylabel("gradient norm / norm at the loss")
axes[1].legend(fontsize=8)
plt.show()
for panel in ("untrained", "trained"):
    for arch in ("rnn", "lstm"):
        h = measured[panel][arch].to_dict()["h"]
        print(f"{panel:9s} {arch.upper():4s}: ||dL/dh|| {T} steps back / at the loss = {h[-1] / h[0]:.2e}")
"""),
    md("""
Along the cell state the LSTM's gradient is, exactly, a product of forget gates: with the
path through h cut, dc_T/dc_k = f_{k+1} ⊙ ... ⊙ f_T. gatescope checks that on the trained
network, the backward pass against the product of the recorded gates:
"""),
    code("""
x64 = flow_batch.x[:8]
layer = gs.LSTM(task.input_size, 64, seed=0)               # a float64 copy of the trained LSTM
for k, v in lstm.recurrent.params.items():
    layer.params[k][...] = v
jac = gi.cell_state_jacobian(layer, x64, cut_h=True)       # (B, T + 1, H), from the backward pass
layer(x64)                                                 # record the forget gates
prod = gi.forget_gate_product(layer.trace["f"])            # (B, T + 1, H), their products
print("dc_T/dc_0, mean over units and sequences:", float(prod[:, 0].mean()))
print("largest difference relative to the largest entry:", float(np.abs(jac - prod).max() / np.abs(prod).max()))
"""),
    md("""
## What the measurements say

In the saved run (T = 50, on an Intel Xeon with 2 cores, 2026-12-02):

- The LSTM solved the task (99.0% held-out accuracy after 800 steps); the vanilla RNN stayed
  at chance (1/8) for its whole budget of 1,500 steps.
- The trained LSTM keeps the symbol: in the units that hold it the forget gate stays near 1
  and the cell state carries a constant value from step 0 to the end.
- The measured gradient follows no constant decay factor. Untrained, the RNN passes
  3e-3 of the gradient at the loss back to step 0 and the LSTM 1.4 (the forget bias of 3
  keeps f near 0.95, and the cell state adds a path). Trained, the RNN passes 2e-6 and the
  LSTM 62: its gradient grows toward the one step that matters. Along the cell state the
  gradient is exactly the product of the forget gates (the difference printed above is 0).

Next: `gru_and_the_forget_bias.ipynb` (why the bias of 3, and the GRU's equivalent).
"""),
]

GRU_AND_THE_FORGET_BIAS = [
    md("""
# The GRU, and the forget bias that decides whether a network learns to remember

The textbook chapter on LSTM and GRU that gatescope grew from counts parameters, sets the
LSTM's forget-gate bias to 1 and moves on. This notebook measures what those choices do:

1. Parameter counts of RNN, GRU and LSTM, from the formula and from real layers.
2. The LSTM's forget-gate bias, 1 against 3, and the GRU's update-gate bias (its forget
   bias), 0 (PyTorch's default) against 3: how much gradient reaches the first step of an
   untrained network.
3. Whether each then learns the recall task.
"""),
    code(SETUP),
    md(r"""
## 1. Parameters

One layer with input size D and hidden size H has G gate blocks, each a weight matrix over
$[x, h]$ and a bias: $G\,(H (D + H) + H)$ parameters, with G = 1 (RNN), 3 (GRU), 4 (LSTM).
PyTorch keeps two bias vectors per block (`bias_ih` and `bias_hh`), gatescope one, as the
chapter does (PyTorch's GRU applies the reset gate after the recurrent product and needs
the second bias of its n block: `reset_after=True` adds it).
"""),
    code("""
D, H = 4, 32
print("formula:  ", {arch: gi.chapter_formula(arch, D, H) for arch in ("rnn", "gru", "lstm")})
print("gatescope:", gi.parameter_counts(D, H))
layers = {"rnn": gs.RNN(D, H), "gru": gs.GRU(D, H), "gru, reset_after": gs.GRU(D, H, reset_after=True), "lstm": gs.LSTM(D, H)}
for name, layer in layers.items():
    print(f"{name:17s} {layer.num_params():6,}  ", {k: v.shape for k, v in layer.params.items()})
"""),
    md(r"""
## 2. The forget bias and the gradient that reaches step 0

Along the LSTM's cell state the gradient is a product of forget gates: with the path through
h cut, $\partial c_T / \partial c_k = f_{k+1} \odot \dots \odot f_T$. At initialisation the
forget gate is close to $\sigma(b_f)$: with the chapter's $b_f = 1$ that is 0.73 per step,
with $b_f = 3$ it is 0.95. Over recall's T - 1 steps:
"""),
    code("""
T = 20 if QUICK else 50
task = get_task("recall", T)
for b in (1.0, 3.0):
    s = float(gs.nn.sigmoid(b))
    print(f"forget bias {b:g}: sigma(b) = {s:.3f}, sigma(b)^{T - 1} = {s ** (T - 1):.2e}")
"""),
    md("""
That is the estimate. Here is the measurement: the mean norm of dL/dh_t at every step of
four *untrained* networks, by the real backward pass on 64 recall sequences, divided by
its value at the loss.
"""),
    code("""
flow_batch = task.make_batch(64, np.random.default_rng(3))
configs = {
    "LSTM, forget bias 1": ("lstm", {"forget_bias": 1.0}),
    "LSTM, forget bias 3": ("lstm", {"forget_bias": 3.0}),
    "GRU, update bias 0": ("gru", {"update_bias": 0.0}),
    "GRU, update bias 3": ("gru", {"update_bias": 3.0}),
}


def build(name):
    arch, options = configs[name]
    return SequenceModel.for_task(task, arch, hidden_size=64, seed=0, dtype="float32", **options)


fig, ax = plt.subplots(figsize=(8, 4.2))
for name, color in zip(configs, ("tab:orange", "tab:blue", "tab:gray", "tab:green")):
    d = gi.model_gradient_flow(build(name), flow_batch).to_dict()
    h = np.asarray(d["h"])
    ax.plot(d["steps_back"], h / h[0], color=color, label=name)
    print(f"{name}: ||dL/dh_0|| / ||dL/dh_T|| = {h[-1] / h[0]:.2e}")
ax.set_yscale("log")
ax.set_xlabel("steps back from the loss")
ax.set_ylabel("||dL/dh_t|| / at the loss")
ax.set_title("untrained networks: how much gradient reaches each step")
ax.grid(alpha=0.3)
ax.legend()
plt.show()
"""),
    md("""
## 3. Does it learn?

The same four networks trained on recall (Adam 3e-3, batch 64, 64 units, float32) until
held-out accuracy reaches 99% or the step budget runs out. Chance is 1/8.
"""),
    code("""
steps = 300 if QUICK else 2000
config = TrainConfig(steps=steps, batch_size=64, lr=3e-3, eval_every=50, eval_size=300, seed=0)
histories = {}
for name in configs:
    r = fit(task, build(name), config, progress=False)
    histories[name] = r.history
    print(f"{name:20s}: accuracy {r.metrics['accuracy']:.3f} after {r.steps} steps "
          f"({'solved' if r.solved else 'not solved'})")
display(viz.training_curves_figure(histories, metric="accuracy", chance=1 / 8, target=0.99))
"""),
    md("""
## What the measurements say

In the saved run (T = 50, seed 0, on an Intel Xeon with 2 cores, 2026-12-02):

| network | gradient reaching step 0, untrained | recall after training |
|---|---|---|
| LSTM, forget bias 1 | 1.4e-3 of the gradient at the loss | chance (0.11 after 2,000 steps) |
| LSTM, forget bias 3 | 1.4 | solved: 99.0% at step 800 |
| GRU, update bias 0 | 9.5e-9 | chance (0.12 after 2,000 steps) |
| GRU, update bias 3 | 0.13 | solved: 99.3% at step 700 |

The GRU's update gate is its forget gate (gatescope follows PyTorch: h' = (1 - z) ⊙ n + z ⊙ h,
so z near 1 keeps the state). The networks that get gradient back to step 0 at
initialisation are the ones that learn the task within the budget; a bias of 3 does for the
GRU what the forget bias of 3 does for the LSTM.

The same options on the command line: `gatescope train --task recall --arch lstm
--forget-bias 3`, `gatescope train --task recall --arch gru --update-bias 3`, and
`gatescope demo --update-bias 3`.
"""),
]

NOTEBOOKS = {
    "understanding_lstms": UNDERSTANDING_LSTMS,
    "gru_and_the_forget_bias": GRU_AND_THE_FORGET_BIAS,
}


def write_and_run(name: str, cells: list) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    path = ROOT / "examples" / f"{name}.ipynb"
    nbformat.write(nb, path)
    # the project's lint and format apply to notebooks too: format the cells before running
    ruff = Path(sys.executable).with_name("ruff")
    subprocess.run([ruff, "check", "--fix", "-q", path], check=True)
    subprocess.run([ruff, "format", "-q", path], check=True)
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    client = NotebookClient(nb, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    nbformat.write(nb, path)
    print(f"{path}: executed in {time.perf_counter() - t0:.0f} s")


def update_markdown(name: str, cells: list) -> None:
    """Replace the text cells of an executed notebook, keeping its code cells and outputs."""
    path = ROOT / "examples" / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    if [c.cell_type for c in nb.cells] != [c.cell_type for c in cells]:
        raise SystemExit(f"{path}: the cells changed; run it again instead")
    for old, new in zip(nb.cells, cells):
        if old.cell_type == "markdown":
            old.source = new.source
    nbformat.write(nb, path)


if __name__ == "__main__":
    args = sys.argv[1:]
    text_only = "--markdown-only" in args
    names = [a for a in args if a != "--markdown-only"] or list(NOTEBOOKS)
    for n in names:
        (update_markdown if text_only else write_and_run)(n, NOTEBOOKS[n])
