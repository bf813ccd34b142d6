"""Structured pruning support: dependency groups of channels removed together (`dependency_groups`), which units of
uncoupled layers can go (`unit_layout`), compaction into a smaller network (`compact`), FLOPs / parameter counts
(`flops`), the scratch-E / scratch-B baselines (`scratch_steps`, `scratch_state`), and a compacted network saved as
config + state dict and rebuilt from the model registry (`save_compact`, `load_compact`)."""

from lth.structured.compact import Plan, compact, expand_state, kept_channels, plan
from lth.structured.flops import COUNT_KEYS, flops, round_counts
from lth.structured.groups import Group, GroupLayout, Slice, dependency_groups
from lth.structured.layout import UnitLayout, unit_layout
from lth.structured.reload import build_compact, compact_config, load_compact, save_compact
from lth.structured.scratch import scratch_state, scratch_steps

__all__ = [
    "COUNT_KEYS",
    "Group",
    "GroupLayout",
    "Plan",
    "Slice",
    "UnitLayout",
    "build_compact",
    "compact",
    "compact_config",
    "dependency_groups",
    "expand_state",
    "flops",
    "kept_channels",
    "load_compact",
    "plan",
    "round_counts",
    "save_compact",
    "scratch_state",
    "scratch_steps",
    "unit_layout",
]
