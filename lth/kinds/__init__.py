"""Experiment kinds: lineage (IMP), branch, heuristic and learned supermasks, pruning at init — registered in `KINDS`."""

from lth.kinds import (  # noqa: F401  (fill the registry)
    at_init,
    branch,
    lineage,
    supermask,
)
from lth.kinds.base import KINDS, Kind, kind_for, register_kind

__all__ = ["KINDS", "Kind", "kind_for", "register_kind"]
