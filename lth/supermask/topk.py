"""Exact top-k masks: keep round_half_even(fraction × n) weights with the highest scores.

Counting rule: the number kept is `lth.pruning.removal_count(fraction, n)` (round half to even, exact in decimal), so
k = 0.5 of 5 weights keeps 2 and of 7 keeps 4. Tie rule: among equal scores the weight with the lower flat index is
dropped first — the selection of `lth.pruning.select.remove_lowest`, the one `lth.pruning.select` uses. `top_mask`
computes it with tensor ops only (no `.item()`, `nonzero` or data-dependent shapes), so an edge-popup forward never
waits for the device.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import torch
from torch import Tensor

from lth.pruning import SCOPES, removal_count


@functools.lru_cache(maxsize=4096)
def kept_count(fraction: float, numel: int) -> int:
    """Weights kept of `numel` at `fraction`: round_half_even(fraction × numel)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"the fraction kept must be in (0, 1], got {fraction}")
    return removal_count(fraction, numel)


@torch.no_grad()
def top_mask(scores: Tensor, kept: int) -> Tensor:
    """BoolTensor of `scores`' shape keeping exactly `kept` of the highest scores (ties: higher flat index kept)."""
    n = scores.numel()
    if not 0 <= kept <= n:
        raise ValueError(f"cannot keep {kept} of {n} weights")
    if kept == n:
        return torch.ones_like(scores, dtype=torch.bool)
    if kept == 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    flat = scores.reshape(-1)
    # the (n − kept)-th smallest score t: every score above it stays, and of the scores equal to it the last
    # `kept − #above` in flat order come back (lower index dropped first) — counted on the device, never on the host
    t = torch.kthvalue(flat, n - kept).values
    above = flat > t
    ties = flat == t
    back = kept - above.sum()
    keep = above | (ties & (ties.cumsum(0) > ties.sum() - back))
    return keep.reshape(scores.shape)


@torch.no_grad()
def top_masks(scores: Mapping[str, Tensor], density: float, scope: str = "layerwise") -> dict[str, Tensor]:
    """Masks keeping `density` of each layer (layerwise) or of all layers together (global) by highest score."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope '{scope}'; valid choices: {', '.join(SCOPES)}")
    if scope == "layerwise":
        return {n: top_mask(s, kept_count(density, s.numel())) for n, s in scores.items()}
    names = list(scores)
    pool = torch.cat([scores[n].reshape(-1) for n in names])
    flat = top_mask(pool, kept_count(density, pool.numel()))
    parts = torch.split(flat, [scores[n].numel() for n in names])
    return {n: p.reshape(scores[n].shape) for n, p in zip(names, parts)}
