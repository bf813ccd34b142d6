"""Selection of new masks from scores: counts, scopes, overrides, ties, rounding, speed."""

import importlib
import time

import pytest
import torch

from lth.pruning import density_schedule, fraction_for_density, select
from lth.pruning.select import expected_counts, removal_count

# `lth.pruning.select` the attribute is the function; the module is reached through importlib.
sel = importlib.import_module("lth.pruning.select")


def ones(*shape):
    return torch.ones(*shape, dtype=torch.bool)


def t(*values):
    return torch.tensor(values)


def kept(mask):
    return torch.nonzero(mask.flatten()).flatten().tolist()


def test_layerwise_exact():
    scores = {"a": t(0.5, 0.1, 0.9, 0.3), "b": torch.tensor([[3.0, 1.0], [2.0, 4.0]])}
    masks = {"a": ones(4), "b": ones(2, 2)}
    new = select(scores, masks, 0.5)
    assert new["a"].tolist() == [True, False, True, False]
    assert new["b"].tolist() == [[True, False], [False, True]]
    assert new["b"].dtype == torch.bool and new["b"].shape == (2, 2)


def test_global_exact():
    scores = {"a": t(0.5, 0.1, 0.9, 0.3), "b": t(0.2, 0.8, 0.05, 0.25)}
    masks = {"a": ones(4), "b": ones(4)}
    # pooled lowest 4 of 8: b2 0.05, a1 0.1, b0 0.2, b3 0.25
    new = select(scores, masks, 0.5, scope="global")
    assert new["a"].tolist() == [True, False, True, True]
    assert new["b"].tolist() == [False, True, False, False]
    # layerwise would take two from each
    lw = select(scores, masks, 0.5, scope="layerwise")
    assert kept(lw["a"]) == [0, 2] and kept(lw["b"]) == [1, 3]


def test_override_leaves_global_pool():
    scores = {"a": t(0.5, 0.1, 0.9, 0.3), "b": t(0.2, 0.8, 0.05, 0.25), "fc3.weight": t(0.01, 0.02, 0.03, 0.04)}
    masks = {n: ones(4) for n in scores}
    for key in ("fc3", "fc3.weight", "fc.*", r"fc\d\.weight"):
        new = select(scores, masks, 0.5, scope="global", overrides={key: 0.25})
        # fc3: round(0.25 * 4) = 1 removed; the pool a+b loses 4 as without fc3
        assert new["fc3.weight"].tolist() == [False, True, True, True], key
        assert new["a"].tolist() == [True, False, True, True]
        assert new["b"].tolist() == [False, True, False, False]


def test_override_layerwise_first_key_wins_and_zero():
    scores = {"fc1.weight": t(4.0, 3.0, 2.0, 1.0), "fc2.weight": t(1.0, 2.0, 3.0, 4.0), "fc3.weight": t(1.0, 2, 3, 4)}
    masks = {n: ones(4) for n in scores}
    new = select(scores, masks, 0.5, overrides={"fc3": 0.0, "fc.*": 0.25})
    assert new["fc1.weight"].tolist() == [True, True, True, False]  # fc.* → 1 removed
    assert new["fc2.weight"].tolist() == [False, True, True, True]
    assert new["fc3.weight"].tolist() == [True, True, True, True]  # fc3 matched first: 0 = not pruned


def test_override_errors():
    scores = {"fc1.weight": t(1.0, 2.0), "fc2.weight": t(1.0, 2.0)}
    masks = {n: ones(2) for n in scores}
    with pytest.raises(ValueError, match=r"\['fc9'\] match no layer; layers: fc1.weight, fc2.weight"):
        select(scores, masks, 0.5, overrides={"fc9": 0.1})
    with pytest.raises(ValueError, match=r"override fraction for 'fc1' must be in \[0, 1\)"):
        select(scores, masks, 0.5, overrides={"fc1": 1.0})
    with pytest.raises(ValueError, match="not a valid regular expression"):
        select(scores, masks, 0.5, overrides={"fc[": 0.1})
    # a key shadowed by an earlier key still matches a layer: no error
    new = select(scores, masks, 0.5, overrides={"fc.*": 0.0, "fc1": 0.5})
    assert new["fc1.weight"].tolist() == [True, True]


def test_half_even_rounding():
    assert removal_count(0.5, 5) == 2 and removal_count(0.5, 7) == 4
    assert removal_count(0.1, 25) == 2  # exact 2.5 → 2, not the float 2.5000000000000004 → 3
    assert removal_count(0.2, 1000) == 200
    five = select({"w": t(5.0, 4.0, 3.0, 2.0, 1.0)}, {"w": ones(5)}, 0.5)["w"]
    assert five.tolist() == [True, True, True, False, False]
    seven = select({"w": torch.arange(7.0)}, {"w": ones(7)}, 0.5)["w"]
    assert kept(seven) == [4, 5, 6]


def test_ties_lower_index_removed_first():
    assert select({"w": torch.ones(5)}, {"w": ones(5)}, 0.4)["w"].tolist() == [False, False, True, True, True]
    # among the remaining only: index 0 is already pruned
    mask = t(False, True, True, True, True)
    assert select({"w": torch.ones(5)}, {"w": mask}, 0.5)["w"].tolist() == [False, False, False, True, True]
    # global: the pool runs in mask-dict order
    new = select({"a": torch.ones(2), "b": torch.ones(2)}, {"a": ones(2), "b": ones(2)}, 0.75, scope="global")
    assert new["a"].tolist() == [False, False] and new["b"].tolist() == [False, True]
    new = select({"a": torch.ones(2), "b": torch.ones(2)}, {"b": ones(2), "a": ones(2)}, 0.75, scope="global")
    assert new["b"].tolist() == [False, False] and new["a"].tolist() == [False, True]
    # ties at the threshold only: 0.1 < 0.5 = 0.5 = 0.5; remove 2 → 0.1 and the first 0.5
    assert select({"w": t(0.5, 0.1, 0.5, 0.5)}, {"w": ones(4)}, 0.5)["w"].tolist() == [False, False, True, True]


def test_pruned_never_revived_and_inputs_untouched():
    scores = {"w": t(9.0, 1.0, 2.0, 3.0)}
    masks = {"w": t(False, True, True, True)}
    before_s, before_m = scores["w"].clone(), masks["w"].clone()
    new = select(scores, masks, 0.34)  # round(1.02) = 1
    assert new["w"].tolist() == [False, False, True, True]
    assert torch.equal(scores["w"], before_s) and torch.equal(masks["w"], before_m)
    assert new["w"] is not masks["w"]
    untouched = select(scores, masks, 0.1)  # round(0.3) = 0: same mask, new tensor
    assert untouched["w"].tolist() == [False, True, True, True] and untouched["w"] is not masks["w"]


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_repeated_rounds_exact_counts(scope):
    g = torch.Generator().manual_seed(0)
    masks = {"w": ones(1000)}
    counts = []
    for _ in range(3):
        new = select({"w": torch.rand(1000, generator=g)}, masks, 0.2, scope=scope)
        assert not (new["w"] & ~masks["w"]).any()
        masks = new
        counts.append(int(masks["w"].sum()))
    assert counts == [800, 640, 512]


def test_expected_counts_match_select():
    counts = {"fc1.weight": 1000, "fc3.weight": 100}
    exp = expected_counts(counts, 0.2, 2, overrides={"fc3": 0.1})
    assert exp == [counts, {"fc1.weight": 800, "fc3.weight": 90}, {"fc1.weight": 640, "fc3.weight": 81}]
    g = torch.Generator().manual_seed(1)
    masks = {n: ones(c) for n, c in counts.items()}
    for r in (1, 2):
        scores = {n: torch.rand(c, generator=g) for n, c in counts.items()}
        masks = select(scores, masks, 0.2, overrides={"fc3": 0.1})
        assert {n: int(m.sum()) for n, m in masks.items()} == exp[r]


def test_density_helpers():
    assert fraction_for_density(0.2) == pytest.approx(0.8)
    assert fraction_for_density(0.512, 3) == pytest.approx(0.2)
    assert density_schedule(0.2, 3) == pytest.approx([1.0, 0.8, 0.64, 0.512])
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"target density must be in \(0, 1\)"):
            fraction_for_density(bad)
    with pytest.raises(ValueError, match="rounds"):
        fraction_for_density(0.5, 0)


def test_select_errors():
    s, m = {"w": t(1.0, 2.0)}, {"w": ones(2)}
    for bad in (0.0, 1.0, -0.1, 1.2):
        with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\)"):
            select(s, m, bad)
    with pytest.raises(ValueError, match="unknown scope 'net'; valid choices: layerwise, global"):
        select(s, m, 0.5, scope="net")
    with pytest.raises(ValueError, match="different layers"):
        select(s, {"v": ones(2)}, 0.5)
    with pytest.raises(ValueError, match=r"layer 'w': score shape \(2,\) != mask shape \(3,\)"):
        select(s, {"w": ones(3)}, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        select({"w": t(1.0, float("nan"))}, m, 0.5)


def reference(scores, masks, fraction, scope):
    """Sort-based selection: stable sort of the kept scores in pool order, remove the first k."""
    pools = [[n] for n in masks] if scope == "layerwise" else [list(masks)]
    out = {n: masks[n].flatten().clone() for n in masks}
    for pool in pools:
        idx = [(n, torch.nonzero(out[n]).flatten()) for n in pool]
        vals = torch.cat([scores[n].flatten()[i] for n, i in idx])
        k = removal_count(fraction, vals.numel())
        order = torch.argsort(vals, stable=True)[:k]
        offsets = torch.cumsum(torch.tensor([0] + [len(i) for _, i in idx]), 0)
        for j, (n, i) in enumerate(idx):
            sel_j = order[(order >= offsets[j]) & (order < offsets[j + 1])] - offsets[j]
            out[n][i[sel_j]] = False
    return {n: out[n].reshape(masks[n].shape) for n in masks}


@pytest.mark.parametrize("sample_size", [256, 1 << 16])  # 256: the sampled bracket is used
@pytest.mark.parametrize("kind", ["normal", "ties", "sorted", "reversed", "clustered"])
def test_matches_sort_reference(monkeypatch, sample_size, kind):
    monkeypatch.setattr(sel, "_SAMPLE_SIZE", sample_size)
    g = torch.Generator().manual_seed(3)
    sizes = {"a": (40, 30), "b": (500,), "c": (7, 3, 3)}
    make = {
        "normal": lambda n: torch.randn(n, generator=g),
        "ties": lambda n: torch.randint(0, 4, (n,), generator=g).float(),
        "sorted": lambda n: torch.arange(n).float(),
        "reversed": lambda n: -torch.arange(n).float(),
        "clustered": lambda n: torch.where(torch.rand(n, generator=g) < 0.9, 0.0, torch.randn(n, generator=g)),
    }[kind]
    for scope in ("layerwise", "global"):
        masks = {n: torch.rand(s, generator=g) < 0.7 for n, s in sizes.items()}
        for fraction in (0.2, 0.5, 0.93):
            scores = {n: make(torch.Size(s).numel()).reshape(s) for n, s in sizes.items()}
            got = select(scores, masks, fraction, scope=scope)
            want = reference(scores, masks, fraction, scope)
            for n in sizes:
                assert torch.equal(got[n], want[n]), (scope, fraction, n)
            masks = got


@pytest.mark.parametrize("bracket", ["too_high", "too_low", "both_wrong", "none"])
def test_wrong_bracket_still_exact(monkeypatch, bracket):
    """The sample only narrows the search: a bracket that misses the k-th value falls back without changing results."""
    lows = {"too_high": (5.0, 6.0), "too_low": (-6.0, -5.0), "both_wrong": (1.0, -1.0), "none": (None, None)}
    lo, hi = lows[bracket]

    def fake(*args):
        return (None if lo is None else torch.tensor(lo)), (None if hi is None else torch.tensor(hi))

    monkeypatch.setattr(sel, "_bracket", fake)
    g = torch.Generator().manual_seed(4)
    scores = {"a": torch.randn(300, generator=g), "b": torch.randn(5, 20, generator=g)}
    masks = {"a": torch.rand(300, generator=g) < 0.6, "b": ones(5, 20)}
    for scope in ("layerwise", "global"):
        got = select(scores, masks, 0.3, scope=scope)
        want = reference(scores, masks, 0.3, scope)
        assert all(torch.equal(got[n], want[n]) for n in masks)


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_select_speed_resnet50_sized(scope):
    g = torch.Generator().manual_seed(0)
    sizes = [2_359_296] * 6 + [589_824] * 8 + [147_456] * 10 + [36_864] * 6 + [16_384] * 20
    sizes.append(25_000_000 - sum(sizes))
    scores = {f"layer{i}.weight": torch.randn(n, generator=g) for i, n in enumerate(sizes)}
    masks = {n: torch.rand(s.shape, generator=g) < 0.8 for n, s in scores.items()}
    remaining = sum(int(m.sum()) for m in masks.values())
    select(scores, masks, 0.2, scope=scope)  # warm-up
    start = time.perf_counter()
    new = select(scores, masks, 0.2, scope=scope)
    elapsed = time.perf_counter() - start
    print(f"select scope={scope} over {sum(sizes):,} weights ({len(sizes)} tensors): {elapsed:.3f} s")
    expected = remaining - removal_count(0.2, remaining) if scope == "global" else sum(
        int(m.sum()) - removal_count(0.2, int(m.sum())) for m in masks.values())
    assert sum(int(m.sum()) for m in new.values()) == expected
    assert elapsed < 2.0


def test_remove_lowest_pool_ties_by_position_and_all_kept_default():
    a, b = t(1.0, 1.0, 2.0), t(1.0, 0.0)
    got = sel.remove_lowest([a, b], 2)  # 0.0 goes, then the first 1.0 in pool order
    assert [g.tolist() for g in got] == [[False, True, True], [True, False]]
    got = sel.remove_lowest([a, b], 2, [t(True, False, True), ones(2)])  # a[1] is pruned already: a[0] is the first tie
    assert [g.tolist() for g in got] == [[False, False, True], [True, False]]
    masks = [ones(3), ones(2)]
    for k in range(6):
        assert all(torch.equal(x, y) for x, y in zip(sel.remove_lowest([a, b], k), sel.remove_lowest([a, b], k, masks)))
    unchanged = sel.remove_lowest([a], 0, [masks[0]])[0]
    assert torch.equal(unchanged, masks[0]) and unchanged is not masks[0]


def test_remove_lowest_serves_top_mask():
    from lth.supermask.topk import top_mask

    g = torch.Generator().manual_seed(5)
    s = torch.randint(0, 5, (6, 7), generator=g).float()
    for kept in range(s.numel() + 1):
        assert torch.equal(top_mask(s, kept).reshape(-1), sel.remove_lowest([s.reshape(-1)], s.numel() - kept)[0])


def test_groups_pool_a_layers_weight_and_bias():
    """pruning.biases: a layer's weight and bias are one pool. Pool of fc: |w| 0.5, 0.1, 0.3, 0.05 and |b| 0.9, 0.8;
    half of 6 = 3 go: 0.05, 0.1, 0.3 — all weights (pruned separately, the bias would lose 0.8 and the weight keep 0.3)."""
    scores = {"fc.weight": torch.tensor([[0.5, 0.1], [0.3, 0.05]]), "fc.bias": t(0.9, 0.8), "out.weight": t(1.0, 2.0)}
    masks = {n: ones(*s.shape) for n, s in scores.items()}
    groups = {"fc": ["fc.weight", "fc.bias"], "out": ["out.weight"]}
    new = select(scores, masks, 0.5, groups=groups)
    assert kept(new["fc.weight"]) == [0] and kept(new["fc.bias"]) == [0, 1] and kept(new["out.weight"]) == [1]
    apart = select(scores, masks, 0.5)
    assert kept(apart["fc.weight"]) == [0, 2] and kept(apart["fc.bias"]) == [0]
    # an override naming the layer's weight sets the whole pool's fraction: round_half_even(0.25 × 6) = 2 go
    over = select(scores, masks, 0.5, overrides={"fc": 0.25}, groups=groups)
    assert kept(over["fc.weight"]) == [0, 2] and kept(over["fc.bias"]) == [0, 1]
    # global scope: one pool of all 8 scores either way; half = 4 go: 0.05, 0.1, 0.3, 0.5
    glob = select(scores, masks, 0.5, scope="global", groups=groups)
    assert kept(glob["fc.weight"]) == [] and kept(glob["fc.bias"]) == [0, 1] and kept(glob["out.weight"]) == [0, 1]
    with pytest.raises(ValueError, match="exactly once"):
        select(scores, masks, 0.5, groups={"fc": ["fc.weight"], "out": ["out.weight"]})
