"""Selection: turn scores into new, smaller masks (layerwise or global scope, per-layer overrides).

Counting rule: a round removes `k = round_half_even(fraction × remaining)` weights, where `remaining` counts the kept
(mask-True) weights of the layer (layerwise, overrides) or of the global pool. The product is taken in exact decimal
arithmetic on the fraction as written (`repr`), so 0.5 × 5 = 2.5 → 2, 0.5 × 7 = 3.5 → 4 and 0.7 × 45 = 31.5 → 32
(the float product `0.7 * 45` is 31.499999999999996 and would round to 31; likewise `0.55 * 110` is
60.50000000000001 → 61 where the exact 60.5 → 60). `removal_count` is that rule.

Tie rule: among equal scores, the weight with the lower flat index is removed first; globally, the pool is the
concatenation of the layers' flattened scores in mask-dict order, and the lower position is removed first.
Already-pruned weights are never revived and never count towards k.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_EVEN, Decimal

import torch
from torch import Tensor

from lth.config import Scope, choices
from lth.masks import name_matches

SCOPES = choices(Scope)  # the schema's enum is the one list
# Above this many candidates the threshold is bracketed from a sample first, so the exact k-th value is found among
# few candidates; the sample only affects speed, never the result.
_SAMPLE_SIZE = 1 << 16
_SAMPLE_SEED = 0


def removal_count(fraction: float, remaining: int) -> int:
    """Weights a round removes from `remaining`: round_half_even(fraction × remaining), exact in decimal."""
    exact = Decimal(repr(float(fraction))) * int(remaining)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def fraction_for_density(target: float, rounds: int = 1) -> float:
    """Per-round fraction that reaches density `target` after `rounds` rounds: 1 − target**(1/rounds)."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"target density must be in (0, 1), got {target}")
    if int(rounds) != rounds or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds}")
    return 1.0 - target ** (1.0 / rounds)


def density_schedule(fraction: float, rounds: int) -> list[float]:
    """Nominal densities of rounds 0..rounds: (1 − fraction)**r (round 0 is dense, 1.0)."""
    _check_fraction(fraction)
    if int(rounds) != rounds or rounds < 0:
        raise ValueError(f"rounds must be an integer >= 0, got {rounds}")
    return [(1.0 - fraction) ** r for r in range(int(rounds) + 1)]


def match_overrides(names: list[str], overrides: Mapping[str, float] | None) -> dict[str, float]:
    """Layer name → override fraction for the layers some key names (`lth.masks.name_matches`; first key wins)."""
    if not overrides:
        return {}
    patterns = {}
    for key, frac in overrides.items():
        try:
            patterns[key] = re.compile(key)
        except re.error as err:
            raise ValueError(f"override key '{key}' is not a valid regular expression: {err}") from None
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"override fraction for '{key}' must be in [0, 1), got {frac}")
    unused = [k for k, p in patterns.items() if not any(name_matches(p, n) for n in names)]
    if unused:
        raise ValueError(f"override keys {unused} match no layer; layers: {', '.join(names)}")
    matched: dict[str, float] = {}
    for n in names:
        key = next((k for k, p in patterns.items() if name_matches(p, n)), None)
        if key is not None:
            matched[n] = float(overrides[key])
    return matched


def expected_counts(counts: Mapping[str, int], fraction: float, rounds: int,
                    overrides: Mapping[str, float] | None = None) -> list[dict[str, int]]:
    """Kept weights per layer after rounds 0..rounds of layerwise selection, starting from `counts` kept."""
    _check_fraction(fraction)
    per_layer = match_overrides(list(counts), overrides)
    out = [dict(counts)]
    for _ in range(int(rounds)):
        prev = out[-1]
        out.append({n: c - removal_count(per_layer.get(n, fraction), c) for n, c in prev.items()})
    return out


@torch.no_grad()
def select(scores: Mapping[str, Tensor], masks: Mapping[str, Tensor], fraction: float, scope: str = "layerwise",
           overrides: Mapping[str, float] | None = None,
           groups: Mapping[str, Sequence[str]] | None = None) -> dict[str, Tensor]:
    """New masks removing `fraction` of the remaining weights with the lowest scores (inputs are not modified).

    `groups` (layer → its prunables, e.g. a weight and its bias): each group is selected as one pool (its members'
    flattened scores concatenated in the given order) at the fraction of its first member an override names; None:
    every prunable is its own group."""
    _check_fraction(fraction)
    if scope not in SCOPES:
        raise ValueError(f"unknown scope '{scope}'; valid choices: {', '.join(SCOPES)}")
    if set(scores) != set(masks):
        raise ValueError(f"scores and masks name different layers: {sorted(scores)} vs {sorted(masks)}")
    for n, m in masks.items():
        if scores[n].shape != m.shape:
            raise ValueError(f"layer '{n}': score shape {tuple(scores[n].shape)} != mask shape {tuple(m.shape)}")
        # A float sum is non-finite whenever a NaN is present; only then pay for the exact check.
        if not torch.isfinite(scores[n].sum()) and torch.isnan(scores[n]).any():
            raise ValueError(f"layer '{n}': scores contain NaN")
    names = list(masks)
    per_layer = match_overrides(names, overrides)
    dtypes = [scores[n].dtype for n in names]
    dtype = functools.reduce(torch.promote_types, dtypes) if dtypes else torch.float32
    flat_s = {n: scores[n].reshape(-1).to(dtype) for n in names}
    flat_m = {n: masks[n].reshape(-1).to(torch.bool) for n in names}
    layers = [list(g) for g in groups.values()] if groups is not None else [[n] for n in names]
    if sorted(n for g in layers for n in g) != sorted(names):
        raise ValueError(f"groups must hold every layer exactly once: {layers} vs {names}")
    own = {i: next((per_layer[n] for n in g if n in per_layer), None) for i, g in enumerate(layers)}
    new: dict[str, Tensor] = {}
    pool = [n for i, g in enumerate(layers) if own[i] is None for n in g] if scope == "global" else []
    for i, g in enumerate(layers):
        if scope == "global" and own[i] is None:
            continue
        frac = fraction if own[i] is None else own[i]
        k = removal_count(frac, sum(int(torch.count_nonzero(flat_m[n])) for n in g))
        new.update(zip(g, remove_lowest([flat_s[n] for n in g], k, [flat_m[n] for n in g])))
    if pool:
        k = removal_count(fraction, sum(int(torch.count_nonzero(flat_m[n])) for n in pool))
        new.update(zip(pool, remove_lowest([flat_s[n] for n in pool], k, [flat_m[n] for n in pool])))
    return {n: new[n].reshape(masks[n].shape) for n in names}


def _check_fraction(fraction: float) -> None:
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")


def remove_lowest(scores: Sequence[Tensor], k: int, masks: Sequence[Tensor] | None = None) -> list[Tensor]:
    """Keep flags of the pool `scores` (flat, one dtype) less its k lowest kept scores (ties: lower position first)."""
    # the pool is `scores` concatenated in order; `masks` (flat keep flags; None: all kept) says which weights count
    scores = list(scores)
    kept = [None] * len(scores) if masks is None else [m.to(torch.bool) for m in masks]
    remaining = sum(s.numel() if m is None else int(torch.count_nonzero(m)) for s, m in zip(scores, kept))
    if k <= 0:
        return [torch.ones_like(s, dtype=torch.bool) if m is None else m.clone() for s, m in zip(scores, kept)]
    if k >= remaining:
        return [torch.zeros_like(s, dtype=torch.bool) for s in scores]
    t = _kth_smallest(scores, kept, k, remaining)
    out = [_and(s > t, m) for s, m in zip(scores, kept)]
    # every kept score <= t went: one count in the usual case (distinct scores); with ties at t, the last `excess` of
    # them in pool order come back
    excess = remaining - k - sum(int(torch.count_nonzero(o)) for o in out)
    for i in reversed(range(len(scores))):
        if excess <= 0:
            break
        ties = torch.nonzero(_and(scores[i] == t, kept[i])).reshape(-1)
        back = ties[max(0, ties.numel() - excess):]
        out[i][back] = True
        excess -= back.numel()
    return out


def _and(flags: Tensor, mask: Tensor | None) -> Tensor:
    """`flags` restricted to the kept weights (`mask` None: all are kept)."""
    return flags if mask is None else flags & mask


def _kth_smallest(s: list[Tensor], m: list[Tensor | None], k: int, remaining: int) -> Tensor:
    """The k-th smallest (1-based) score among the kept weights of the pool, in O(n)."""
    lo, hi = _bracket(s, m, k, remaining)
    n_lo = 0 if lo is None else sum(int(torch.count_nonzero(_and(x < lo, y))) for x, y in zip(s, m))
    if n_lo >= k:  # the sample missed low: the k-th value lies below lo
        lo, hi, n_lo = None, lo, 0
    elif hi is not None and sum(int(torch.count_nonzero(_and(x <= hi, y))) for x, y in zip(s, m)) < k:
        hi = None
    cand = []
    for x, y in zip(s, m):
        sel = y
        if lo is not None:
            sel = _and(x >= lo, sel)
        if hi is not None:
            sel = _and(x <= hi, sel)
        cand.append(x if sel is None else x[sel])
    return torch.kthvalue(cand[0] if len(cand) == 1 else torch.cat(cand), k - n_lo).values


def _bracket(s: list[Tensor], m: list[Tensor | None], k: int, remaining: int) -> tuple[Tensor | None, Tensor | None]:
    """Sample-based [lo, hi] likely to hold the k-th smallest kept score; None = unbounded.

    Only on the CPU, where kthvalue over all candidates is the slow part; on an accelerator kthvalue is one kernel and
    the bracket's counts would add host syncs (edge-popup layers select on every forward).
    """
    total = sum(x.numel() for x in s)
    if total <= 4 * _SAMPLE_SIZE or s[0].device.type != "cpu":
        return None, None
    gen = torch.Generator(device=s[0].device).manual_seed(_SAMPLE_SEED)
    parts = []
    # ~total**(2/3) balances sorting the sample against the k-th value search among the bracketed candidates.
    size = min(_SAMPLE_SIZE, int(total ** (2 / 3)))
    for x, y in zip(s, m):
        if not x.numel():
            continue
        count = max(1, x.numel() * size // total)
        idx = torch.randint(0, x.numel(), (count,), generator=gen, device=x.device)
        parts.append(x[idx] if y is None else x[idx][y[idx]])
    sample = torch.sort(torch.cat(parts)).values
    ns = sample.numel()
    if ns == 0:
        return None, None
    center = k / remaining * ns
    margin = 4.0 * math.sqrt(ns) + 2.0
    i_lo, i_hi = int(center - margin), int(center + margin)
    lo = sample[i_lo] if i_lo >= 0 else None
    hi = sample[i_hi] if i_hi < ns else None
    return lo, hi
