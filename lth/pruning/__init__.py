"""Pruning: criteria that score weights and selection that turns scores into smaller masks."""

from lth.pruning.criteria import CRITERIA, score
from lth.pruning.select import (
    SCOPES,
    density_schedule,
    expected_counts,
    fraction_for_density,
    removal_count,
    select,
)

__all__ = [
    "CRITERIA",
    "SCOPES",
    "density_schedule",
    "expected_counts",
    "fraction_for_density",
    "removal_count",
    "score",
    "select",
]
