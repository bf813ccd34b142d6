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

import functools
import re
from collections.abc import Callable, Collection, Mapping

import torch
from torch import Tensor

from lth.masks import check_masks, random_masks_like
from lth.pruning.select import SCOPES, match_overrides, removal_count, remove_lowest, select
from lth.registry import Registry
from lth.structured.groups import Group, GroupLayout

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


# -- dependency groups (lth.structured.groups): channels scored, selected and removed together ----------------------

GroupNormFn = Callable[[Group, Mapping[str, Tensor], Mapping[str, Tensor], torch.Generator | None], Tensor]
GROUP_NORMS: Registry[GroupNormFn] = Registry("structured norm")


def _member_sum(group: Group, kept: Mapping[str, Tensor], per_unit: Callable[[Tensor], Tensor]) -> Tensor:
    """Σ over the group's producers of `per_unit` of each one's rows, placed at its channels."""
    parts = []
    for p in group.producers:
        rows = unit_rows(kept[p.name])
        rows = rows.to(torch.promote_types(rows.dtype, torch.float32))
        part = torch.zeros(group.size, dtype=rows.dtype, device=rows.device)
        part[p.offset:p.offset + p.size] = per_unit(rows)
        parts.append(part)
    return parts[0] if len(parts) == 1 else torch.stack(parts).sum(dim=0)


@GROUP_NORMS.register("l1")
def group_l1(group: Group, kept: Mapping[str, Tensor], norms: Mapping[str, Tensor],
             generator: torch.Generator | None = None) -> Tensor:
    """Σ|w| over the channel's rows in every producer of the group (Li et al.'s filter score, summed)."""
    return _member_sum(group, kept, l1)


@GROUP_NORMS.register("l2")
def group_l2(group: Group, kept: Mapping[str, Tensor], norms: Mapping[str, Tensor],
             generator: torch.Generator | None = None) -> Tensor:
    """sqrt(Σw²) over the channel's rows in every producer of the group (the L2 norm of all its weights)."""
    return _member_sum(group, kept, squares).sqrt()


@GROUP_NORMS.register("random")
def group_random(group: Group, kept: Mapping[str, Tensor], norms: Mapping[str, Tensor],
                 generator: torch.Generator | None = None) -> Tensor:
    """Uniform [0, 1) per channel from `generator`: random channels with the same counts."""
    return random(torch.empty(group.size, 0), generator)


@GROUP_NORMS.register("scale")
def group_scale(group: Group, kept: Mapping[str, Tensor], norms: Mapping[str, Tensor],
                generator: torch.Generator | None = None) -> Tensor:
    """Σ|γ| of the group's BatchNorms at the channel (Liu et al.'s network-slimming score)."""
    if not group.norms:
        raise ValueError(f"structured norm 'scale' scores BatchNorm weights, but group '{group.name}' has no "
                         "BatchNorm; choose l1, l2 or random")
    out = torch.zeros(group.size, dtype=torch.float32)
    for n in group.norms:
        out[n.offset:n.offset + n.size] += norms[n.name].detach().abs().float().cpu()
    return out


@torch.no_grad()
def group_scores(norm: str, weights: Mapping[str, Tensor], masks: Mapping[str, Tensor], layout: GroupLayout,
                 generator: torch.Generator | None = None,
                 norms: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Per removable group, a 1-D score per channel (higher = keep) from its members' kept weights.

    `weights`, `masks`: every producer's weight and mask; `norms`: BatchNorm module name → its weight (γ), for 'scale'.
    """
    GROUP_NORMS.check(norm)
    check_masks(masks, {n: w.shape for n, w in weights.items() if n in masks})
    kept = {p.name: weights[p.name] * masks[p.name].to(device=weights[p.name].device, dtype=weights[p.name].dtype)
            for g in layout.groups for p in g.producers}
    return {g.name: GROUP_NORMS[norm](g, kept, norms or {}, generator) for g in layout.groups}


def norm_weights(layout: GroupLayout, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """BatchNorm module name → its weight (γ) in `state`, for the removable groups' BatchNorms (`group_scores`)."""
    return {n.name: state[f"{n.name}.weight"] for g in layout.groups for n in g.norms if f"{n.name}.weight" in state}


def check_groups(norm: str, layout: GroupLayout, state: Mapping[str, Tensor], names: list[str],
                 overrides: Mapping[str, float] | None = None) -> None:
    """ValueError, before any training, if channel score `norm` does not fit the groups (e.g. 'scale' on a group
    without BatchNorm) or `overrides` give a group two fractions or a refused group one; `names`: the masked weights."""
    weights = {n: state[n] for n in names}
    masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    try:  # a private generator: the check must not move the global RNG
        group_scores(norm, weights, masks, layout, torch.Generator().manual_seed(0), norm_weights(layout, state))
    except ValueError as e:
        raise ValueError(f"pruning.structured_norm={norm}: {e}") from None
    group_fractions(names, layout, overrides)


def alive_channels(masks: Mapping[str, Tensor], layout: GroupLayout) -> dict[str, Tensor]:
    """Per removable group, 1-D flags: which channels some producer's row still keeps a weight of."""
    out = {}
    for g in layout.groups:
        alive = torch.zeros(g.size, dtype=torch.bool)
        for p in g.producers:
            alive[p.offset:p.offset + p.size] |= unit_rows(masks[p.name].to(torch.bool)).any(dim=1).cpu()
        out[g.name] = alive
    return out


def group_fractions(names: list[str], layout: GroupLayout, overrides: Mapping[str, float] | None) -> dict[str, float]:
    """Group name → override fraction, from the overrides' layer patterns (one naming any producer sets its group)."""
    per_layer = match_overrides(names, overrides)
    fixed = sorted(n for n, f in per_layer.items() if n not in layout.of and f > 0)
    if fixed:
        raise ValueError(f"overrides give a fraction to {fixed}, whose units are never removed (output layer or "
                         f"refused groups); removable groups: {', '.join(layout.removable)}")
    out: dict[str, float] = {}
    for n, f in per_layer.items():
        if n in layout.of:
            g = layout.of[n]
            if out.setdefault(g, f) != f:
                raise ValueError(f"overrides give group '{g}' two fractions ({out[g]} and {f} for '{n}'); its "
                                 f"channels are removed together: {', '.join(p.name for p in layout[g].producers)}")
    return out


@torch.no_grad()
def select_groups(scores: Mapping[str, Tensor], masks: Mapping[str, Tensor], layout: GroupLayout, fraction: float,
                  scope: str = "layerwise", overrides: Mapping[str, float] | None = None,
                  max_ratio: float | None = None) -> dict[str, Tensor]:
    """New weight masks removing `fraction` of each group's (layerwise) or all groups' (global) alive channels with the
    lowest scores, at most round_half_even(`max_ratio` × channels) of a group in all (None: no limit)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope '{scope}'; valid choices: {', '.join(SCOPES)}")
    if max_ratio is not None and not 0.0 < max_ratio <= 1.0:
        raise ValueError(f"max_ratio must be in (0, 1] or None, got {max_ratio}")
    if not layout.groups:
        raise ValueError(f"no group's channels can be removed ({'; '.join(f'{n}: {w}' for n, w in layout.refused.items())})")
    names = layout.removable
    missing = [n for n in names if n not in scores]
    if missing:
        raise ValueError(f"no channel scores for groups {missing}")
    alive = alive_channels(masks, layout)
    for n in names:
        if scores[n].shape != alive[n].shape:
            raise ValueError(f"group '{n}': {tuple(scores[n].shape)} channel scores for {alive[n].numel()} channels")
        if torch.isnan(scores[n]).any():
            raise ValueError(f"group '{n}': scores contain NaN")
    per_group = group_fractions(list(masks), layout, overrides)
    dtype = functools.reduce(torch.promote_types, [scores[n].dtype for n in names])
    s = {n: scores[n].to(dtype).cpu() for n in names}
    free = dict(alive)  # the alive channels a round may remove: all but a group's protected best under max_ratio
    if max_ratio is not None:
        for g in layout.groups:
            keep_min = g.size - removal_count(max_ratio, g.size)
            a = int(alive[g.name].sum())
            protected = remove_lowest([s[g.name]], max(a - keep_min, 0), [alive[g.name]])[0]
            free[g.name] = alive[g.name] & ~protected
    kept = {}
    pool = [n for n in names if n not in per_group] if scope == "global" else []
    for n in names:
        if n not in pool:
            k = removal_count(per_group.get(n, fraction), int(alive[n].sum()))
            kept[n] = alive[n] & ~free[n] | remove_lowest([s[n]], min(k, int(free[n].sum())), [free[n]])[0]
    if pool:
        k = removal_count(fraction, sum(int(alive[n].sum()) for n in pool))
        left = remove_lowest([s[n] for n in pool], min(k, sum(int(free[n].sum()) for n in pool)),
                             [free[n] for n in pool])
        kept.update({n: alive[n] & ~free[n] | f for n, f in zip(pool, left)})
    return apply_groups(masks, layout, kept)


def apply_groups(masks: Mapping[str, Tensor], layout: GroupLayout, kept: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """`masks` with the channels not in `kept` (group → 1-D keep flags) off: producers' rows, consumers' inputs."""
    out = {n: m.to(torch.bool).clone() for n, m in masks.items()}
    for name, keep in kept.items():
        g = layout[name]
        keep = keep.to(torch.bool).cpu()
        for p in g.producers:
            unit_rows(out[p.name]).mul_(keep[p.offset:p.offset + p.size].to(out[p.name].device).view(-1, 1))
        for c in g.consumers:
            m = out[c.name]
            part = keep[c.offset:c.offset + c.size].to(m.device)
            m.view(m.shape[0], c.size, -1).mul_(part.view(1, -1, 1))
    return out


def random_group_masks_like(masks: Mapping[str, Tensor], layout: GroupLayout, seed: int) -> dict[str, Tensor]:
    """Full masks with the same number of alive channels per removable group as `masks`, at random channels."""
    full = {n: torch.ones_like(m, dtype=torch.bool) for n, m in masks.items()}
    # the alive-channel flags of each group, shuffled: one randperm per group, in group order
    return apply_groups(full, layout, random_masks_like(alive_channels(masks, layout), seed))
