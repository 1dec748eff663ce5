"""Character LMs shipped inside the package, so that a look at real cells takes seconds.

    from gatescope import pretrained
    model, vocab, meta = pretrained.load()          # the "stdlib" model
    pretrained.path("stdlib")                       # its .safetensors file
    pretrained.info("stdlib")                       # how it was trained: command, machine, time

On the command line: `--pretrained` wherever a char-LM checkpoint is taken
(`gatescope charlm sample|eval`, `gatescope cells`, `gatescope explore`, `gatescope patch`).

"stdlib": a 2-layer LSTM of 256 units per layer, trained by `scripts/pretrain_charlm.sh` on
the Python standard library's source (the files the training split left out are its
held-out text); `info()` has the command, seed, training time, machine and the held-out bits
per character measured at the end.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

NAMES = ("stdlib",)
DEFAULT = "stdlib"


def _check(name: str) -> str:
    if name not in NAMES:
        raise ValueError(f"unknown pretrained model {name!r}; expected one of {', '.join(NAMES)}")
    return name


def path(name: str = DEFAULT) -> Path:
    """The checkpoint file of the pretrained model `name` (read-only, inside the package)."""
    return Path(str(resources.files(__name__).joinpath(f"charlm_{_check(name)}.safetensors")))


def info(name: str = DEFAULT) -> dict[str, Any]:
    """How `name` was trained: command, start time, minutes, machine, held-out bits per char."""
    text = resources.files(__name__).joinpath(f"charlm_{_check(name)}.json").read_text("utf-8")
    return json.loads(text)


def load(name: str = DEFAULT) -> tuple[Any, Any, dict[str, Any]]:
    """(model, vocabulary, metadata) of the pretrained model, as `gatescope.charlm.load_charlm`."""
    from gatescope.charlm import load_charlm  # charlm reads checkpoints; this module is data

    return load_charlm(path(name))
