"""Structured pruning support: dependency groups of channels removed together (`dependency_groups`), which units of
uncoupled layers can go (`unit_layout`), compaction into a smaller network (`compact`), FLOPs / parameter counts
(`flops`), and the scratch-E / scratch-B baselines (`scratch_steps`, `scratch_state`)."""

from lth.structured.compact import Plan, compact, expand_state, kept_channels, plan
from lth.structured.flops import COUNT_KEYS, flops, round_counts
from lth.structured.groups import Group, GroupLayout, Slice, dependency_groups
from lth.structured.layout import UnitLayout, unit_layout
from lth.structured.scratch import scratch_state, scratch_steps

__all__ = [
    "COUNT_KEYS",
    "Group",
    "GroupLayout",
    "Plan",
    "Slice",
    "UnitLayout",
    "compact",
    "dependency_groups",
    "expand_state",
    "flops",
    "kept_channels",
    "plan",
    "round_counts",
    "scratch_state",
    "scratch_steps",
    "unit_layout",
]
