"""Experiment kinds: lineage (IMP), branch, heuristic and learned supermasks, instability — registered in `KINDS`."""

from lth.kinds import branch, lineage, supermask  # noqa: F401  (fill the registry)
from lth.kinds import gradual  # noqa: F401  (gradual magnitude pruning)
from lth.kinds import instability  # noqa: F401  (the instability kind)
from lth.kinds.base import KINDS, Kind, kind_for, register_kind

__all__ = ["KINDS", "Kind", "kind_for", "register_kind"]
