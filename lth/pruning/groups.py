"""Structured pruning through dependency groups (`lth.structured.groups`): one score per group channel from all its
members, selection of whole channels with exact counts, and the weight masks that remove them everywhere.

A channel's score (`GROUP_NORMS`, `pruning.structured_norm`): `l1` = Σ|w| over its row in every producer of the group,
`l2` = sqrt(Σw²) over the same rows, `random`, or `scale` = Σ|γ| of the group's BatchNorms (network slimming). A layer
that no add or concat couples is a group of its own, so scores, counts and masks are then bit for bit those of
`lth.pruning.structured` (one unit per row). Counting follows `lth.pruning.select` on channels: a round removes
round_half_even(fraction × alive channels) of each group (layerwise, overrides) or of all groups (global), ties by
lower index; `max_ratio` caps what a group ever loses at round_half_even(max_ratio × its channels), counted on the
dense width, by protecting its best channels (a round removes fewer when the caps bind).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from lth.masks import check_masks, random_masks_like
from lth.pruning.select import SCOPES, match_overrides, removal_count, remove_lowest
from lth.pruning.structured import l1, random, squares, unit_rows
from lth.registry import Registry
from lth.structured.groups import Group, GroupLayout

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
