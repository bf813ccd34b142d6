"""Intervals for means over seeds, paired differences (ticket − control by seed), and the verdict they support."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

VERDICTS = ("agree", "opposite", "inconclusive")


@dataclass(frozen=True)
class Interval:
    """Mean, sample std, count and the two-sided Student-t interval for the mean (nan where undefined)."""

    mean: float
    std: float
    n: int
    lo: float
    hi: float

    @property
    def half(self) -> float:
        """Half the interval's width (nan below two values)."""
        return (self.hi - self.lo) / 2


def _finite(xs: Iterable[Any]) -> list[float]:
    """The values as floats, None and NaN dropped (±inf kept: they are results, not gaps)."""
    return [float(x) for x in xs if x is not None and not math.isnan(float(x))]


def t_quantile(p: float, df: int) -> float:
    """The `p` quantile of Student's t distribution with `df` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(p, df))


def interval(xs: Iterable[float], confidence: float = 0.95) -> Interval:
    """Mean, sample std and the `confidence` t interval for the mean of `xs` (NaNs dropped; one value: lo = hi = nan;
    none: everything nan, n = 0)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    v = _finite(xs)
    nan = math.nan
    if not v:
        return Interval(nan, nan, 0, nan, nan)
    mean = statistics.fmean(v)
    if len(v) == 1:
        return Interval(mean, nan, 1, nan, nan)
    std = statistics.stdev(v)
    half = t_quantile(0.5 + confidence / 2, len(v) - 1) * std / math.sqrt(len(v))
    return Interval(mean, std, len(v), mean - half, mean + half)


def paired(a: Mapping[Any, float], b: Mapping[Any, float], confidence: float = 0.95) -> Interval:
    """The interval of a[k] − b[k] over the keys (seeds) present in both (a pair with a NaN side is dropped)."""
    shared = [k for k in a if k in b]
    if not shared:
        raise ValueError(f"no key shared by the two sides to pair on (a: {sorted(map(str, a))[:8]}, "
                         f"b: {sorted(map(str, b))[:8]})")
    return interval((float(a[k]) - float(b[k]) for k in shared), confidence)


def verdict(diff: Interval, direction: int) -> str:
    """"agree" when `diff`'s interval excludes 0 on the side of `direction` (+1: a > b expected, −1: a < b),
    "opposite" when it excludes 0 on the other side, "inconclusive" otherwise (also below two pairs)."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 (a > b expected) or -1 (a < b expected), got {direction!r}")
    where = side(diff, 0.0)
    if where == "unclear":
        return "inconclusive"
    return "agree" if (where == "above") == (direction == 1) else "opposite"


def fmt(iv: Interval, scale: float = 100.0, digits: int = 1, sign: bool = False, sep: str = " ") -> str:
    """'mean ± std [lo, hi]' times `scale` (one value: the mean alone; none: '–'); `sign`: '+' on positive numbers
    (for differences); `sep` goes before the interval (a table cell's '<br>' puts it on a second line)."""
    if iv.n == 0:
        return "–"
    f = f"{{:{'+' if sign else ''}.{digits}f}}".format
    if iv.n == 1:
        return f(scale * iv.mean)
    return f"{f(scale * iv.mean)} ± {scale * iv.std:.{digits}f}{sep}[{f(scale * iv.lo)}, {f(scale * iv.hi)}]"


def side(iv: Interval, bound: float) -> str:
    """"below" when the interval lies under `bound`, "above" when it lies over it, "unclear" when it contains it (or
    has fewer than two values)."""
    if iv.n < 2 or math.isnan(iv.lo) or math.isnan(iv.hi):
        return "unclear"
    return "below" if iv.hi < bound else "above" if iv.lo > bound else "unclear"
