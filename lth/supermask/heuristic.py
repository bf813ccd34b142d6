"""Heuristic supermasks (Zhou et al.): a criterion's scores from θ0 and a trained θf, top `density` kept, for θ0."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from lth.pruning import SCOPES, score
from lth.supermask.topk import kept_count, top_masks


@torch.no_grad()
def heuristic_masks(
    criterion: str,
    w_init: Mapping[str, Tensor],
    w_final: Mapping[str, Tensor],
    density: float,
    *,
    scope: str = "layerwise",
    source_masks: Mapping[str, Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Masks keeping `density` of the weights (per layer, or over all with scope=global) with the highest score.

    `criterion` is any entry of `lth.pruning.CRITERIA` (e.g. `large_final_same_sign`); `source_masks` (the mask θf
    was trained under) restricts the choice to weights it kept, so a weight pruned before is never revived; asking
    for more weights than it kept is an error. Counts follow `lth.supermask.topk` (round half to even, exact).
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"supermask density must be in (0, 1], got {density}")
    if scope not in SCOPES:
        raise ValueError(f"unknown scope '{scope}'; valid choices: {', '.join(SCOPES)}")
    scores = score(criterion, w_init, w_final, generator=generator, masks=source_masks)
    if source_masks is not None:
        _check_available(source_masks, density, scope)
        scores = {n: s.masked_fill(~source_masks[n].to(torch.bool), float("-inf")) for n, s in scores.items()}
    return top_masks(scores, density, scope)


def _check_available(source_masks: Mapping[str, Tensor], density: float, scope: str) -> None:
    groups = {n: [n] for n in source_masks} if scope == "layerwise" else {"all layers": list(source_masks)}
    for what, names in groups.items():
        numel = sum(source_masks[n].numel() for n in names)
        available = sum(int(source_masks[n].sum()) for n in names)
        want = kept_count(density, numel)
        if want > available:
            raise ValueError(
                f"density {density} keeps {want} weights of {what}, but the source mask kept only {available} "
                f"(density {available / numel:.4f}); choose a density at most that, or an earlier round"
            )
