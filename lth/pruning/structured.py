"""Structured (neuron / filter) pruning: score whole units, remove the lowest, return weight-shaped masks.

A *unit* of a prunable is one output row of a Linear weight or one output channel (filter) of a Conv weight. A unit is
alive while its row keeps at least one weight. Removing unit j of layer P switches off P's row j and, in every
*consumer* of P (a layer that reads P's units, e.g. the next Linear, or the Linear after a flatten), the input slice
that reads unit j; so the masked network computes exactly what the physically smaller one (`lth.structured.compact`)
does, whatever P's bias is. Masks stay `dict[str, BoolTensor]` of the weights' shapes.

Counting follows `lth.pruning.select` on units: a round removes round_half_even(fraction × alive units) of the layer
(layerwise, overrides) or of the pool of removable layers (global), ties by lower index; removed units never come
back. Layers outside `removable` (by default the last prunable, the output layer) never lose units.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping

import torch
from torch import Tensor

from lth.masks import check_masks, random_masks_like
from lth.pruning.select import SCOPES, match_overrides, select
from lth.registry import Registry

NormFn = Callable[[Tensor, torch.Generator | None], Tensor]
NEURON_NORMS: Registry[NormFn] = Registry("structured norm")


@NEURON_NORMS.register("l1")
def l1(rows: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Σ|w| over each unit's kept weights (Li et al.'s filter score)."""
    return rows.abs().sum(dim=1)


@NEURON_NORMS.register("l2")
def l2(rows: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """sqrt(Σw²) over each unit's kept weights."""
    return squares(rows).sqrt()


def squares(rows: Tensor) -> Tensor:
    """Σw² over each unit's weights."""
    return rows.pow(2).sum(dim=1)


@NEURON_NORMS.register("random")
def random(rows: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Uniform [0, 1) per unit from `generator` (global RNG if None): random units with the same counts."""
    device = generator.device if generator is not None else rows.device
    return torch.rand(rows.shape[0], generator=generator, device=device).to(rows.device)


def unit_rows(t: Tensor) -> Tensor:
    """`t` viewed as (units, everything else): rows of a Linear weight, filters of a Conv weight."""
    return t.reshape(t.shape[0], -1)


def alive_units(masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Per layer, a 1-D BoolTensor: which units still keep at least one weight."""
    return {n: unit_rows(m.to(torch.bool)).any(dim=1) for n, m in masks.items()}


@torch.no_grad()
def neuron_scores(norm: str, weights: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None,
                  generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Per layer, a 1-D score per unit: the `norm` of its kept weights (higher = keep); layers in `weights` order."""
    NEURON_NORMS.check(norm)
    if masks is not None:
        check_masks(masks, {n: w.shape for n, w in weights.items()})
    out = {}
    for n, w in weights.items():
        if w.dim() < 2:
            raise ValueError(f"layer '{n}' has shape {tuple(w.shape)}; units need a weight of at least 2 dims")
        kept = w if masks is None else w * masks[n].to(device=w.device, dtype=w.dtype)
        rows = unit_rows(kept)
        out[n] = NEURON_NORMS[norm](rows.to(torch.promote_types(rows.dtype, torch.float32)), generator)
    return out


@torch.no_grad()
def select_neurons(scores: Mapping[str, Tensor], masks: Mapping[str, Tensor], fraction: float,
                   scope: str = "layerwise", overrides: Mapping[str, float] | None = None,
                   removable: Collection[str] | None = None,
                   consumers: Mapping[str, Collection[str]] | None = None) -> dict[str, Tensor]:
    """New weight masks removing `fraction` of the alive units with the lowest scores (inputs are not modified).

    `scores`: 1-D per unit for (at least) every removable layer. `removable`: layers whose units may go (default: all
    but the last, the output layer). `consumers`: layer → layers reading its units, whose matching input slices go
    with a removed unit (`lth.structured.unit_layout` finds both); without it only rows are switched off.
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope '{scope}'; valid choices: {', '.join(SCOPES)}")
    names = list(masks)
    if not names:
        raise ValueError("no masks given")
    if removable is not None and set(removable) - set(names):
        raise ValueError(f"removable layers {sorted(set(removable) - set(names))} have no mask; masked: {', '.join(names)}")
    removable = names[:-1] if removable is None else [n for n in names if n in set(removable)]
    unknown = sorted(set(consumers or {}) - set(names)) + sorted(
        c for cs in (consumers or {}).values() for c in cs if c not in masks)
    if unknown:
        raise ValueError(f"consumers name layers without a mask: {unknown}; masked layers: {', '.join(names)}")
    if not removable:
        raise ValueError(f"no layer's units can be removed (masked layers: {', '.join(names)}); the output layer's "
                         "units never are, nor units shared through residual connections")
    per_layer = match_overrides(names, overrides)
    fixed = sorted(n for n in per_layer if n not in removable and per_layer[n] > 0)
    if fixed:
        raise ValueError(f"overrides give a fraction to {fixed}, whose units are never removed (output layer or shared "
                         f"units); removable layers: {', '.join(removable)}")
    missing = [n for n in removable if n not in scores]
    if missing:
        raise ValueError(f"no unit scores for removable layers {missing}")
    alive = alive_units({n: masks[n] for n in removable})
    for n in removable:
        if scores[n].shape != alive[n].shape:
            raise ValueError(f"layer '{n}': {tuple(scores[n].shape)} unit scores for {alive[n].numel()} units")
    exact = {re.escape(n): f for n, f in per_layer.items() if n in removable}
    kept = select({n: scores[n] for n in removable}, alive, fraction, scope=scope, overrides=exact)
    return apply_units(masks, kept, consumers)


def apply_units(masks: Mapping[str, Tensor], kept: Mapping[str, Tensor],
                consumers: Mapping[str, Collection[str]] | None = None) -> dict[str, Tensor]:
    """`masks` with the rows of units not in `kept` (layer → 1-D keep flags) and their consumers' input slices off."""
    out = {n: m.to(torch.bool).clone() for n, m in masks.items()}
    for n, keep in kept.items():
        keep = keep.to(device=out[n].device, dtype=torch.bool)
        unit_rows(out[n]).mul_(keep.view(-1, 1))
        for c in (consumers or {}).get(n, ()):
            m = out[c]
            if m.dim() < 2 or m.shape[1] % keep.numel():
                raise ValueError(f"layer '{c}' (mask {tuple(m.shape)}) cannot read the {keep.numel()} units of '{n}'")
            m.view(m.shape[0], keep.numel(), -1).mul_(keep.to(m.device).view(1, -1, 1))
    return out


def random_neuron_masks_like(masks: Mapping[str, Tensor], removable: Collection[str], seed: int,
                             consumers: Mapping[str, Collection[str]] | None = None) -> dict[str, Tensor]:
    """Full masks with the same number of alive units per removable layer as `masks`, at random units (a control)."""
    full = {n: torch.ones_like(m, dtype=torch.bool) for n, m in masks.items()}
    # the alive-unit flags of each layer, shuffled: one randperm per removable layer, in mask order
    kept = random_masks_like(alive_units({n: masks[n] for n in masks if n in set(removable)}), seed)
    return apply_units(full, kept, consumers)
