"""Structured pruning support: which units can go (`unit_layout`), compaction into a smaller network (`compact`),
FLOPs / parameter counts (`flops`), and the scratch-E / scratch-B baselines (`scratch_steps`, `scratch_state`)."""

from lth.structured.compact import Plan, compact, expand_state, kept_units, plan
from lth.structured.flops import COUNT_KEYS, flops, round_counts
from lth.structured.layout import UnitLayout, unit_layout
from lth.structured.scratch import scratch_state, scratch_steps

__all__ = [
    "COUNT_KEYS",
    "Plan",
    "UnitLayout",
    "compact",
    "expand_state",
    "flops",
    "kept_units",
    "plan",
    "round_counts",
    "scratch_state",
    "scratch_steps",
    "unit_layout",
]
