"""Shared test helpers: every recurrent configuration we support, a gradient checker, and
the `run_cli` / `run_cli_process` fixtures that run the command line.

Test tiers (markers, registered in pyproject.toml): slow (over ~2 s), torch (needs PyTorch),
browser (drives chromium through selenium), dask (a dask.distributed cluster).
`pytest -m "not slow"` is the quick loop; `make test` runs everything.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import NamedTuple

import numpy as np
import pytest

import gatescope as gs

# (arch, options) pairs covering every layer and option of the core
CONFIGS = [
    ("lstm", {}),
    ("lstm", {"bias": False}),
    ("lstm", {"forget_bias": 0.0}),
    ("gru", {}),
    ("gru", {"reset_after": True}),
    ("gru", {"reset_after": True, "bias": False}),
    ("rnn", {}),
    ("rnn", {"nonlinearity": "relu"}),
    ("rnn", {"bias": False}),
]
CLASSES = {"lstm": gs.LSTM, "gru": gs.GRU, "rnn": gs.RNN}


def config_id(c) -> str:
    arch, opts = c
    return arch + "".join(f"-{k}={v}" for k, v in opts.items())


@pytest.fixture(params=CONFIGS, ids=config_id)
def config(request):
    return request.param


def make(arch: str, D: int, H: int, num_layers: int = 1, seed: int = 0, **opts):
    return CLASSES[arch](D, H, num_layers, seed=seed, **opts)


def random_state(layer, B: int, rng: np.random.Generator):
    """A random initial state in the layer's public structure."""
    zero = layer.zero_state(B)
    if isinstance(zero, tuple):
        return tuple(rng.normal(size=z.shape) for z in zero)
    return rng.normal(size=zero.shape)


def flat(state) -> list[np.ndarray]:
    return list(state) if isinstance(state, tuple) else [state]


def central_difference(f, a: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """dF/da by central differences, perturbing `a` in place element by element."""
    grad = np.zeros_like(a)
    it = np.nditer(a, flags=["multi_index"])
    for _ in it:
        idx = it.multi_index
        old = a[idx]
        a[idx] = old + eps
        up = f()
        a[idx] = old - eps
        down = f()
        a[idx] = old
        grad[idx] = (up - down) / (2 * eps)
    return grad


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / (||a|| + ||b||), 0 when both are 0."""
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    return 0.0 if denom == 0 else float(np.linalg.norm(a - b) / denom)


def assert_gradients_match(layer, rng: np.random.Generator, B: int, T: int, tol: float) -> None:
    """Central differences against backward for every parameter, the input and the initial
    state, with the loss (y * dy).sum() + (final state * dstate).sum() on random data."""
    x = rng.normal(size=(B, T, layer.input_size))
    state0 = random_state(layer, B, rng)
    dy = rng.normal(size=(B, T, layer.hidden_size))
    dstate = random_state(layer, B, rng)

    def loss() -> float:
        y, state = layer(x, state0)
        return float((y * dy).sum() + sum((s * d).sum() for s, d in zip(flat(state), flat(dstate))))

    loss()
    dx = layer.backward(dy, dstate)
    analytic = {name: g.copy() for name, g in layer.grads.items()}
    dstate0 = [d.copy() for d in flat(layer.dstate0)]
    for name, p in layer.params.items():
        err = rel_error(central_difference(loss, p), analytic[name])
        assert err < tol, (name, err)
    assert rel_error(central_difference(loss, x), dx) < tol, "x"
    for name, s, ds in zip("hc", flat(state0), dstate0):
        assert rel_error(central_difference(loss, s), ds) < tol, f"state0 {name}"


# ----------------------------------------------------------------------------- the command line


class CLIResult(NamedTuple):
    """What one `gatescope ARGV` did: its exit code and everything it printed."""

    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys):
    """``run_cli(*argv) -> CLIResult(code, out, err)``: `gatescope ARGV` in this process.

    Arguments are str()'d (paths and numbers can be passed as they are); argparse's own
    errors, which exit through SystemExit, give their exit code like any other error.
    Output printed before the call is dropped.
    """
    from gatescope.cli import main

    def run(*argv: object) -> CLIResult:
        capsys.readouterr()
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            code = 0 if e.code is None else e.code
        out, err = capsys.readouterr()
        return CLIResult(code, out, err)

    return run


@pytest.fixture
def run_cli_process():
    """``run_cli_process(*argv) -> CLIResult``: `gatescope ARGV` in a fresh interpreter, to
    see real exit codes and tracebacks (single-threaded BLAS, unbuffered output)."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-c", "import sys; from gatescope.cli import main; sys.exit(main())"]

    def run(*argv: object) -> CLIResult:
        done = subprocess.run(
            [*cmd, *(str(a) for a in argv)], capture_output=True, text=True, env=env
        )
        return CLIResult(done.returncode, done.stdout, done.stderr)

    return run
