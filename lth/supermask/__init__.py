"""Supermasks: masks found for untrained weights — heuristic (a criterion applied to θ0), learned by Bernoulli
sampling (Zhou et al.) or by edge-popup top-k scores (Ramanujan et al.).

Exports are loaded lazily, so `lth.config` can import `lth.supermask.config` without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SupermaskConfig": "lth.supermask.config",
    "METHODS": "lth.supermask.layers",
    "SupermaskLayer": "lth.supermask.layers",
    "to_supermask": "lth.supermask.swap",
    "supermask_layers": "lth.supermask.swap",
    "supermask_masks": "lth.supermask.swap",
    "WEIGHTS": "lth.supermask.weights",
    "frozen_weights": "lth.supermask.weights",
    "kept_count": "lth.supermask.topk",
    "top_mask": "lth.supermask.topk",
    "top_masks": "lth.supermask.topk",
    "heuristic_masks": "lth.supermask.heuristic",
}

__all__ = [
    "METHODS",
    "WEIGHTS",
    "SupermaskConfig",
    "SupermaskLayer",
    "frozen_weights",
    "heuristic_masks",
    "kept_count",
    "supermask_layers",
    "supermask_masks",
    "to_supermask",
    "top_mask",
    "top_masks",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lth.supermask' has no attribute '{name}'")
