"""Lazy imports of the optional dependencies, with a message naming the pip extra."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType


def require(module: str, extra: str, who: str) -> ModuleType:
    """Import `module` or raise ImportError: "<who> needs <module>: pip install 'gatescope[extra]'"."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{who} needs {module.split('.')[0]}: pip install 'gatescope[{extra}]' ({e})"
        ) from None


def require_keras(who: str) -> ModuleType:
    """Keras 3, on the torch backend where no backend was chosen and TensorFlow is absent.

    Keras defaults to TensorFlow; a machine with Keras and torch but no TensorFlow (the
    `gatescope[keras]` install) would fail at import, so gatescope picks torch there. An
    explicit KERAS_BACKEND, or Keras already imported, is left as it is.
    """
    if (
        "keras" not in sys.modules
        and "KERAS_BACKEND" not in os.environ
        and importlib.util.find_spec("tensorflow") is None
        and importlib.util.find_spec("torch") is not None
    ):
        os.environ["KERAS_BACKEND"] = "torch"
    return require("keras", "keras", who)
