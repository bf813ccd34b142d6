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
from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal

import torch
from torch import Tensor

SCOPES = ("layerwise", "global")
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
    """Layer name → override fraction for the layers some key matches (first matching key wins)."""
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
    unused = [k for k, p in patterns.items() if not any(_matches(p, n) for n in names)]
    if unused:
        raise ValueError(f"override keys {unused} match no layer; layers: {', '.join(names)}")
    matched: dict[str, float] = {}
    for n in names:
        key = next((k for k, p in patterns.items() if _matches(p, n)), None)
        if key is not None:
            matched[n] = float(overrides[key])
    return matched


def _matches(pattern: re.Pattern, name: str) -> bool:
    """Does `pattern` fully match the parameter name or its module name (the name without its last part)?"""
    return bool(pattern.fullmatch(name) or pattern.fullmatch(name.rsplit(".", 1)[0]))


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
           overrides: Mapping[str, float] | None = None) -> dict[str, Tensor]:
    """New masks removing `fraction` of the remaining weights with the lowest scores (inputs are not modified)."""
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
    new: dict[str, Tensor] = {}
    pool = [n for n in names if n not in per_layer] if scope == "global" else []
    for n in names:
        if n in pool:
            continue
        remaining = int(torch.count_nonzero(flat_m[n]))
        frac = per_layer.get(n, fraction)
        new.update(_remove_lowest([n], flat_s, flat_m, removal_count(frac, remaining), remaining))
    if pool:
        remaining = sum(int(torch.count_nonzero(flat_m[n])) for n in pool)
        new.update(_remove_lowest(pool, flat_s, flat_m, removal_count(fraction, remaining), remaining))
    return {n: new[n].reshape(masks[n].shape) for n in names}


def _check_fraction(fraction: float) -> None:
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")


def _remove_lowest(names: list[str], s: dict[str, Tensor], m: dict[str, Tensor], k: int,
                   remaining: int) -> dict[str, Tensor]:
    """Flat masks of `names` with the k lowest-scoring kept weights removed (ties: earlier position first)."""
    if k <= 0:
        return {n: m[n].clone() for n in names}
    if k >= remaining:
        return {n: torch.zeros_like(m[n]) for n in names}
    t = _kth_smallest(names, s, m, k, remaining)
    below = {n: (s[n] < t) & m[n] for n in names}
    need = k - sum(int(torch.count_nonzero(b)) for b in below.values())
    out = {}
    for n in names:
        keep = m[n] & ~below[n]
        if need > 0:
            eq = (s[n] == t) & m[n]
            n_eq = int(torch.count_nonzero(eq))
            if n_eq <= need:  # the usual case (distinct scores): every tie goes, no index search needed
                keep &= ~eq
                need -= n_eq
            else:
                keep[torch.nonzero(eq).reshape(-1)[:need]] = False
                need = 0
        out[n] = keep
    return out


def _kth_smallest(names: list[str], s: dict[str, Tensor], m: dict[str, Tensor], k: int, remaining: int) -> Tensor:
    """The k-th smallest (1-based) score among the kept weights of `names`, in O(n)."""
    lo, hi = _bracket(names, s, m, k, remaining)
    n_lo = 0 if lo is None else sum(int(torch.count_nonzero((s[n] < lo) & m[n])) for n in names)
    if n_lo >= k:  # the sample missed low: the k-th value lies below lo
        lo, hi, n_lo = None, lo, 0
    elif hi is not None and sum(int(torch.count_nonzero((s[n] <= hi) & m[n])) for n in names) < k:
        hi = None
    cand = []
    for n in names:
        sel = m[n]
        if lo is not None:
            sel = sel & (s[n] >= lo)
        if hi is not None:
            sel = sel & (s[n] <= hi)
        cand.append(s[n][sel])
    return torch.kthvalue(torch.cat(cand), k - n_lo).values


def _bracket(names: list[str], s: dict[str, Tensor], m: dict[str, Tensor], k: int,
             remaining: int) -> tuple[Tensor | None, Tensor | None]:
    """Sample-based [lo, hi] likely to hold the k-th smallest kept score; None = unbounded."""
    total = sum(s[n].numel() for n in names)
    if total <= 4 * _SAMPLE_SIZE:
        return None, None
    gen = torch.Generator(device=s[names[0]].device).manual_seed(_SAMPLE_SEED)
    parts = []
    # ~total**(2/3) balances sorting the sample against the k-th value search among the bracketed candidates.
    size = min(_SAMPLE_SIZE, int(total ** (2 / 3)))
    for n in (n for n in names if s[n].numel()):
        count = max(1, s[n].numel() * size // total)
        idx = torch.randint(0, s[n].numel(), (count,), generator=gen, device=s[n].device)
        parts.append(s[n][idx][m[n][idx]])
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
