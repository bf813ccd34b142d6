"""Sanity checks of a saved mask (Frankle et al. 2021, "missing the mark"), run as branches with `branch.sanity=...`:

- `shuffle`: the mask permuted within each layer (the same number of kept weights per layer, at random positions);
- `invert`:  per layer, the same number of weights kept, but those with the *lowest* scores (among the weights the
  source round chose from: all of them at init, the previous round's kept ones in IMP);
- `reinit`:  the same mask, the kept weights drawn afresh from the model's initialiser (ticket.reset=random_reinit).

The scores of `invert` are the ones saved with the mask (`round_XX/scores.pt`, written by pruning-at-init runs); for
an IMP round K > 0 without them they are recomputed, deterministically, with the source's criterion from its θ0 and its
round K−1 weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lth.masks import random_masks_like
from lth.record import RunFolder
from lth.registry import Registry


@dataclass
class SanityInputs:
    """What a sanity check may draw on: the source folder and round, its mask, and a seed."""

    source: RunFolder
    round: int
    masks: dict[str, Tensor]
    seed: int
    names: list[str]


class SanityCheck:
    """A transformation of a saved round's mask (and the reset its branch trains under)."""

    name = ""
    reset: str | None = None  # None: the branch's ticket.reset

    def masks(self, inp: SanityInputs) -> dict[str, Tensor]:
        """The branch's masks."""
        return inp.masks


SANITY_CHECKS: Registry[SanityCheck] = Registry("sanity check")


def _register(cls: type[SanityCheck]) -> type[SanityCheck]:
    SANITY_CHECKS.register(cls.name)(cls())
    return cls


@_register
class Shuffle(SanityCheck):
    """The mask permuted within each layer: the same per-layer counts at random positions."""

    name = "shuffle"

    def masks(self, inp: SanityInputs) -> dict[str, Tensor]:
        return random_masks_like(inp.masks, inp.seed)


@_register
class Invert(SanityCheck):
    """Per layer, the lowest-scoring weights of the source's pool, as many as the mask keeps."""

    name = "invert"

    def masks(self, inp: SanityInputs) -> dict[str, Tensor]:
        scores, pool = source_scores(inp.source, inp.round, inp.names)
        return invert_masks(scores, inp.masks, pool)


@_register
class Reinit(SanityCheck):
    """The same mask with fresh weights from the model's own initialiser."""

    name = "reinit"
    reset = "random_reinit"


@torch.no_grad()
def invert_masks(scores: Mapping[str, Tensor], masks: Mapping[str, Tensor],
                 pool: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Per layer, keep as many weights as `masks` does, those with the lowest `scores` among `pool` (default: all);
    ties: the lower flat index is kept."""
    from lth.pruning.select import remove_lowest

    out = {}
    for n, m in masks.items():
        s = scores[n].reshape(-1).to(torch.float64)
        cand = torch.ones_like(s, dtype=torch.bool) if pool is None else pool[n].reshape(-1).to(torch.bool)
        keep = int(m.sum())
        available = int(cand.sum())
        if keep > available:
            raise ValueError(f"layer '{n}': the mask keeps {keep} weights, more than the {available} it was chosen from")
        # remove the (available − keep) highest scores = the lowest of −s; on ties remove_lowest removes the lower
        # index first, so flip positions to keep the lower index
        flipped = remove_lowest([(-s).flip(0)], available - keep, [cand.flip(0)])[0].flip(0)
        out[n] = flipped.reshape(m.shape)
    return out


def source_scores(source: RunFolder, k: int, names: list[str]) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    """(scores, pool) of round `k` of a run folder: the saved scores (pool: every weight), else recomputed from an IMP
    round's criterion (pool: round k−1's mask)."""
    from lth.kinds.at_init import scores_path

    path = scores_path(source, k)
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True), None
    config: Any = source.existing_config() or {}
    criterion = config.get("pruning", {}).get("criterion")
    if k == 0 or config.get("pruning", {}).get("at_init"):
        raise ValueError(f"branch.sanity=invert: {source.path} round {k} has no saved scores ({path.name}) and was "
                         "not pruned from trained weights; invert needs a pruning-at-init round or an IMP round >= 1")
    if criterion in (None, "random"):
        raise ValueError(f"branch.sanity=invert: {source.path} was pruned with criterion {criterion!r}, whose scores "
                         "cannot be recomputed; invert needs scores")
    from lth.pruning import score

    init = source.load_snapshots()["snapshots"]["init"]
    trained = source.load_trained(k - 1)
    pool = source.load_mask(k - 1)
    w0 = {n: init[n] for n in names}
    return score(criterion, w0, {n: trained[n] for n in names}, masks=pool), pool
