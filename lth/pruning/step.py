"""One pruning step of a lineage: a round's new masks from the last round's masks and weights (criterion or unit
norm → exact selection), with a warning when a layer keeps nothing (layer collapse)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from lth.masks import layer_groups
from lth.pruning.collapse import empty_layers
from lth.pruning.criteria import score
from lth.pruning.groups import group_scores, norm_weights, select_groups
from lth.pruning.select import select


def prune_step(r: int, pruning: Any, fraction: float, overrides: Mapping[str, float], layout: Any,
               masks: Mapping[str, Tensor], w_init: Mapping[str, Tensor], w_final: Mapping[str, Tensor],
               generator: torch.Generator, state: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Round `r`'s masks under `pruning.*` settings: `fraction` of the remaining weights (channels of dependency groups
    when `layout`, the structured `GroupLayout`, is given) removed, `overrides` per layer; `state`: the trained state
    dict (BatchNorm weights for structured_norm=scale)."""
    scope = getattr(pruning.scope, "value", pruning.scope)
    if layout is not None:
        scores = group_scores(pruning.structured_norm, w_final, masks, layout, generator=generator,
                              norms=norm_weights(layout, state or {}))
        new = select_groups(scores, masks, layout, fraction, scope=scope, overrides=overrides,
                            max_ratio=getattr(pruning, "max_group_ratio", None))
    else:
        scores = score(pruning.criterion, w_init, w_final, generator=generator, masks=masks)
        groups = layer_groups(masks) if getattr(pruning, "biases", False) else None
        new = select(scores, masks, fraction, scope=scope, overrides=overrides, groups=groups)
    emptied = empty_layers(new)
    if emptied:
        warnings.warn(f"round {r}: layers {emptied} keep no weights (layer collapse)", RuntimeWarning, stacklevel=3)
    return new
