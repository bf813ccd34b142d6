"""Experiment kinds: lineage (IMP), branch, heuristic and learned supermasks, pruning at init, gradual pruning,
instability — registered in `KINDS`."""

from lth.kinds import (  # noqa: F401  (fill the registry)
    at_init,
    branch,
    gradual,
    instability,
    lineage,
    supermask,
)
from lth.kinds.base import KINDS, Kind, kind_for, register_kind

__all__ = ["KINDS", "Kind", "kind_for", "register_kind"]
