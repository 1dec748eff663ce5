"""Small helpers shared across the package (explicit randomness)."""

from __future__ import annotations

from .nn.checks import Seed, as_generator

__all__ = ["Seed", "as_generator"]
