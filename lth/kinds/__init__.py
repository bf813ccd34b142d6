"""Experiment kinds: lineage (IMP), branch, heuristic and learned supermasks, pruning at init — registered in `KINDS`."""

from lth.kinds import branch, lineage, supermask  # noqa: F401  (fill the registry)
from lth.kinds import at_init  # noqa: F401  (pruning at init)
from lth.kinds.base import KINDS, Kind, kind_for, register_kind

__all__ = ["KINDS", "Kind", "kind_for", "register_kind"]
