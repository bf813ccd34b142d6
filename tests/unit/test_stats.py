"""Intervals, paired differences and verdicts, against hand-computed numbers."""

import math

import pytest

from lth.stats import Interval, fmt, interval, paired, t_quantile, verdict


def test_interval_of_one_to_four_by_hand():
    iv = interval([1, 2, 3, 4])
    # mean 2.5, sample std sqrt(5/3) = 1.2910, t_{0.975,3} = 3.1824 → half-width 3.1824 · 1.2910 / 2 = 2.0543
    assert iv.n == 4 and iv.mean == 2.5
    assert iv.std == pytest.approx(1.2909944, abs=1e-7)
    assert t_quantile(0.975, 3) == pytest.approx(3.1824463, abs=1e-7)
    assert iv.half == pytest.approx(2.0542603, abs=1e-6)
    assert (iv.lo, iv.hi) == (pytest.approx(0.4457397, abs=1e-6), pytest.approx(4.5542603, abs=1e-6))


def test_interval_confidence_changes_the_quantile_only():
    iv = interval([1, 2, 3, 4], confidence=0.90)  # t_{0.95,3} = 2.3534 → 2.3534 · 1.2910 / 2 = 1.5191
    assert iv.mean == 2.5 and iv.half == pytest.approx(1.5191, abs=1e-4)
    with pytest.raises(ValueError, match="confidence"):
        interval([1, 2], confidence=95)


def test_interval_drops_nans_and_handles_one_and_none():
    assert interval([1.0, float("nan"), None, 3.0]) == interval([1.0, 3.0])
    one = interval([0.7, float("nan")])
    assert one.n == 1 and one.mean == 0.7 and math.isnan(one.std) and math.isnan(one.lo) and math.isnan(one.hi)
    none = interval([float("nan")])
    assert none.n == 0 and all(math.isnan(x) for x in (none.mean, none.std, none.lo, none.hi))


def test_two_equal_values_give_a_zero_width_interval():
    iv = interval([0.5, 0.5])
    assert (iv.mean, iv.std, iv.lo, iv.hi) == (0.5, 0.0, 0.5, 0.5)


def test_paired_uses_only_the_shared_seeds():
    a = {0: 12.0, 1: 13.0, 2: 12.5, 3: 12.0, 4: 13.0, 9: 100.0}
    b = {0: 10.0, 1: 10.0, 2: 10.0, 3: 10.0, 4: 10.0, 7: -100.0}
    d = paired(a, b)
    # differences 2, 3, 2.5, 2, 3: mean 2.5, std 0.5, t_{0.975,4} = 2.7764 → half 2.7764 · 0.5 / √5 = 0.62083
    assert d.n == 5 and d.mean == 2.5 and d.std == 0.5
    assert (d.lo, d.hi) == (pytest.approx(1.87917, abs=1e-5), pytest.approx(3.12083, abs=1e-5))
    assert verdict(d, +1) == "agree" and verdict(d, -1) == "opposite"


def test_paired_is_not_the_unpaired_comparison():
    # a seed effect shared by both sides: unpaired intervals overlap, the paired difference is exactly 1 every time
    a = {s: 10.0 * s + 1 for s in range(4)}
    b = {s: 10.0 * s for s in range(4)}
    assert interval(a.values()).lo < interval(b.values()).hi
    d = paired(a, b)
    assert (d.mean, d.std, d.lo, d.hi) == (1.0, 0.0, 1.0, 1.0) and verdict(d, +1) == "agree"


def test_paired_without_shared_keys_is_an_error():
    with pytest.raises(ValueError, match="no key shared"):
        paired({0: 1.0, 1: 2.0}, {2: 1.0})


def test_paired_drops_a_pair_with_a_nan_side():
    d = paired({0: 3.0, 1: float("nan"), 2: 5.0}, {0: 1.0, 1: 1.0, 2: 2.0})
    assert d.n == 2 and d.mean == 2.5


def test_verdict_straddling_zero_or_too_few_is_inconclusive():
    straddle = paired({0: 0.72, 1: 0.69, 2: 0.71}, {0: 0.70, 1: 0.70, 2: 0.70})  # diffs .02 −.01 .01
    assert straddle.lo < 0 < straddle.hi
    assert verdict(straddle, +1) == verdict(straddle, -1) == "inconclusive"
    one = paired({0: 5.0}, {0: 1.0})
    assert one.n == 1 and verdict(one, +1) == "inconclusive"
    below = Interval(-2.0, 0.5, 5, -2.6, -1.4)
    assert verdict(below, -1) == "agree" and verdict(below, +1) == "opposite"
    touching = Interval(1.0, 0.5, 5, 0.0, 2.0)  # an interval that reaches 0 does not exclude it
    assert verdict(touching, +1) == "inconclusive"
    with pytest.raises(ValueError, match="direction"):
        verdict(below, 0)


def test_fmt_cells():
    iv = interval([0.60, 0.62, 0.64])  # mean .62, std .02, half 4.3027 · .02 / √3 = .049685
    assert fmt(iv) == "62.0 ± 2.0 [57.0, 67.0]"
    assert fmt(iv, scale=1, digits=3) == "0.620 ± 0.020 [0.570, 0.670]"
    assert fmt(interval([0.623])) == "62.3"
    assert fmt(interval([])) == "–"
    d = paired({0: 0.61, 1: 0.63}, {0: 0.60, 1: 0.60})  # diffs .01 .03: mean .02, std .014142, t_{.975,1} = 12.706
    assert fmt(d, sign=True) == "+2.0 ± 1.4 [-10.7, +14.7]"


def test_fmt_puts_the_interval_after_sep():
    assert fmt(interval([0.60, 0.62, 0.64]), sep="<br>") == "62.0 ± 2.0<br>[57.0, 67.0]"


def test_side_of_a_bound():
    from lth.stats import side

    # [1, 2, 3]: mean 2, std 1, half-width t_{0.975,2}/√3 = 4.303/1.732 = 2.484 → [-0.484, 4.484]
    iv = interval([1.0, 2.0, 3.0])
    assert side(iv, 5.0) == "below" and side(iv, -0.5) == "above"
    assert side(iv, 4.4) == "unclear" and side(iv, -0.4) == "unclear"
    assert side(interval([1.0]), 5.0) == "unclear"
