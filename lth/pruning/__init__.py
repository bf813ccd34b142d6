"""Pruning: criteria that score weights (or whole units) and selection that turns scores into smaller masks."""

from lth.pruning.at_init import ALL_CRITERIA, INIT_CRITERIA, at_init_criterion
from lth.pruning.criteria import CRITERIA, score
from lth.pruning.select import (
    SCOPES,
    density_schedule,
    expected_counts,
    fraction_for_density,
    removal_count,
    select,
)
from lth.pruning.structured import (
    GROUP_NORMS,
    NEURON_NORMS,
    alive_channels,
    alive_units,
    apply_groups,
    apply_units,
    group_scores,
    neuron_scores,
    random_group_masks_like,
    random_neuron_masks_like,
    select_groups,
    select_neurons,
)

__all__ = [
    "ALL_CRITERIA",
    "CRITERIA",
    "GROUP_NORMS",
    "INIT_CRITERIA",
    "NEURON_NORMS",
    "SCOPES",
    "alive_channels",
    "alive_units",
    "apply_groups",
    "apply_units",
    "at_init_criterion",
    "density_schedule",
    "expected_counts",
    "fraction_for_density",
    "group_scores",
    "neuron_scores",
    "random_group_masks_like",
    "random_neuron_masks_like",
    "removal_count",
    "score",
    "select",
    "select_groups",
    "select_neurons",
]
