"""Structured selection: unit scores (L1/L2/random), layerwise/global counts, overrides, output layer, iterative IMP;
dependency groups scored over all their members (L1/L2/random/BN scale) with exact counts and a per-group cap."""

import functools
import math

import pytest
import torch

from lth import masks as masks_lib
from lth.pruning import (
    alive_channels,
    alive_units,
    group_scores,
    neuron_scores,
    random_group_masks_like,
    random_neuron_masks_like,
    select_groups,
    select_neurons,
)
from lth.pruning.select import removal_count
from lth.structured import dependency_groups, unit_layout


def ones(*shape):
    return torch.ones(*shape, dtype=torch.bool)


def rows(mask):
    return mask.reshape(mask.shape[0], -1).any(dim=1).tolist()


def test_l1_l2_scores_hand_computed_and_masked():
    w = torch.tensor([[1.0, -2.0], [3.0, 0.0], [0.5, 0.5]])
    s = neuron_scores("l1", {"a": w})
    assert s["a"].tolist() == [3.0, 3.0, 1.0]
    s = neuron_scores("l2", {"a": w})
    assert torch.allclose(s["a"], torch.tensor([math.sqrt(5), 3.0, math.sqrt(0.5)]))
    mask = torch.tensor([[True, False], [True, True], [False, True]])
    assert neuron_scores("l1", {"a": w}, {"a": mask})["a"].tolist() == [1.0, 3.0, 0.5]
    conv = torch.arange(2 * 3 * 2 * 2, dtype=torch.float).reshape(2, 3, 2, 2) - 10
    assert neuron_scores("l1", {"c": conv})["c"].tolist() == [sum(abs(v - 10) for v in range(12)),
                                                             sum(abs(v - 10) for v in range(12, 24))]


def test_random_scores_are_seeded_and_unknown_norm_is_refused():
    w = {"a": torch.zeros(5, 3)}
    a = neuron_scores("random", w, generator=torch.Generator().manual_seed(3))["a"]
    b = neuron_scores("random", w, generator=torch.Generator().manual_seed(3))["a"]
    assert a.shape == (5,) and torch.equal(a, b)
    with pytest.raises(ValueError, match="l1, l2, random"):
        neuron_scores("l3", w)
    with pytest.raises(ValueError, match="at least 2 dims"):
        neuron_scores("l1", {"b": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"mask 'a' has shape \(3, 5\), the parameter has \(5, 3\)"):
        neuron_scores("l1", w, masks={"a": ones(3, 5)})


def mlp_masks():
    # hidden a: 4 units (3 inputs), hidden b: 4 units (4 inputs), output c: 2 units
    return {"a": ones(4, 3), "b": ones(4, 4), "c": ones(2, 4)}


CONSUMERS = {"a": ["b"], "b": ["c"]}


def test_layerwise_rows_and_consumer_columns():
    scores = {"a": torch.tensor([0.5, 0.1, 0.9, 0.3]), "b": torch.tensor([4.0, 3.0, 2.0, 1.0])}
    new = select_neurons(scores, mlp_masks(), 0.5, consumers=CONSUMERS)
    assert rows(new["a"]) == [True, False, True, False]
    assert new["b"].tolist() == [[True, False, True, False], [True, False, True, False],
                                 [False, False, False, False], [False, False, False, False]]
    assert new["c"].tolist() == [[True, True, False, False]] * 2  # output: rows stay, columns of b's dead units go
    assert new["a"][1].sum() == 0 and new["a"][0].all()


def test_without_consumers_only_rows_go():
    scores = {"a": torch.tensor([0.5, 0.1, 0.9, 0.3]), "b": torch.tensor([4.0, 3.0, 2.0, 1.0])}
    new = select_neurons(scores, mlp_masks(), 0.5)
    assert rows(new["a"]) == [True, False, True, False]
    assert int(new["b"].sum()) == 2 * 4 and int(new["c"].sum()) == 8


def test_global_pool_and_exact_count():
    scores = {"a": torch.tensor([0.5, 0.1, 0.9, 0.3]), "b": torch.tensor([0.2, 0.8, 0.05, 0.25])}
    # lowest 4 of 8 units: b2 0.05, a1 0.1, b0 0.2, b3 0.25
    new = select_neurons(scores, mlp_masks(), 0.5, scope="global", consumers=CONSUMERS)
    assert rows(new["a"]) == [True, False, True, True]
    assert rows(new["b"]) == [False, True, False, False]
    assert new["c"].tolist() == [[False, True, False, False]] * 2


def test_output_layer_never_loses_units_and_its_override_is_refused():
    masks = {"a": ones(4, 3), "c": ones(2, 4)}
    new = select_neurons({"a": torch.arange(4.0), "c": torch.tensor([0.0, 1.0])}, masks, 0.75)
    assert rows(new["c"]) == [True, True] and rows(new["a"]) == [False, False, False, True]
    with pytest.raises(ValueError, match="never removed"):
        select_neurons({"a": torch.arange(4.0)}, masks, 0.5, overrides={"c": 0.5})
    with pytest.raises(ValueError, match="no layer's units can be removed"):
        select_neurons({}, {"c": ones(2, 4)}, 0.5)
    with pytest.raises(ValueError, match=r"removable layers \['x'\] have no mask"):
        select_neurons({"a": torch.arange(4.0)}, masks, 0.5, removable=["a", "x"])


def test_overrides_layerwise_and_bad_scope():
    scores = {"a": torch.tensor([0.5, 0.1, 0.9, 0.3]), "b": torch.tensor([4.0, 3.0, 2.0, 1.0])}
    new = select_neurons(scores, mlp_masks(), 0.5, overrides={"b": 0.25}, consumers=CONSUMERS)
    assert rows(new["a"]) == [True, False, True, False]
    assert rows(new["b"]) == [True, True, True, False]  # round(0.25 × 4) = 1
    with pytest.raises(ValueError, match="layerwise, global"):
        select_neurons(scores, mlp_masks(), 0.5, scope="per_unit")
    with pytest.raises(ValueError, match="match no layer"):
        select_neurons(scores, mlp_masks(), 0.5, overrides={"zz": 0.1})


def test_iterative_counts_of_remaining_units_and_no_revival():
    masks = mlp_masks()
    scores = {"a": torch.tensor([0.5, 0.1, 0.9, 0.3]), "b": torch.tensor([4.0, 3.0, 2.0, 1.0])}
    r1 = select_neurons(scores, masks, 0.5, consumers=CONSUMERS)
    # dead units now score highest: they still stay dead; 0.5 of the 2 alive units = 1 goes
    r2 = select_neurons({"a": torch.tensor([0.4, 9.0, 0.6, 9.0]), "b": torch.tensor([1.0, 0.0, 9.0, 9.0])},
                        r1, 0.5, consumers=CONSUMERS)
    assert rows(r2["a"]) == [False, False, True, False]
    assert rows(r2["b"]) == [True, False, False, False]
    for n in r1:
        assert not (r2[n] & ~r1[n]).any()  # masks only shrink
    assert r2["b"].tolist()[0] == [False, False, True, False]


def test_exact_counts_on_lenet_with_layout():
    from lth.models import build_model

    model = build_model("lenet_300_100", (1, 4, 4), 10)
    layout = unit_layout(model)
    assert layout.removable == ["hidden.0.weight", "hidden.1.weight"]
    assert layout.consumers == {"hidden.0.weight": ["hidden.1.weight"], "hidden.1.weight": ["output.weight"]}
    assert "outputs" in layout.refused["output.weight"]
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters() if n.endswith("weight")}
    expect = {"hidden.0.weight": 300, "hidden.1.weight": 100, "output.weight": 10}
    for _ in range(3):
        scores = neuron_scores("l2", {n: model.get_parameter(n) for n in masks}, masks)
        masks = select_neurons(scores, masks, 0.2, removable=layout.removable, consumers=layout.consumers)
        expect = {n: c - (removal_count(0.2, c) if n != "output.weight" else 0) for n, c in expect.items()}
        assert {n: int(a.sum()) for n, a in alive_units(masks).items()} == expect
    assert expect == {"hidden.0.weight": 154, "hidden.1.weight": 51, "output.weight": 10}  # 100→80→64→51
    assert int(masks["hidden.1.weight"].sum()) == 51 * 154 and int(masks["output.weight"].sum()) == 10 * 51


def test_conv_flatten_linear_columns():
    masks = {"conv": ones(4, 1, 3, 3), "fc": ones(5, 4 * 2 * 2), "out": ones(2, 5)}
    new = select_neurons({"conv": torch.tensor([3.0, 0.0, 2.0, 1.0]), "fc": torch.arange(5.0)}, masks, 0.25,
                         consumers={"conv": ["fc"], "fc": ["out"]})
    assert rows(new["conv"]) == [True, False, True, True]
    assert new["fc"][1].tolist() == [True] * 4 + [False] * 4 + [True] * 8  # filter 1 = columns 4..7
    assert rows(new["fc"]) == [False, True, True, True, True]
    assert new["out"][0].tolist() == [False, True, True, True, True]


def test_random_neuron_masks_keep_unit_counts():
    masks = select_neurons({"a": torch.tensor([0.5, 0.1, 0.9, 0.3]), "b": torch.tensor([4.0, 3.0, 2.0, 1.0])},
                           mlp_masks(), 0.5, consumers=CONSUMERS)
    rnd = random_neuron_masks_like(masks, ["a", "b"], seed=1, consumers=CONSUMERS)
    assert {n: int(a.sum()) for n, a in alive_units(rnd).items()} == {"a": 2, "b": 2, "c": 2}
    assert torch.equal(rnd["a"], random_neuron_masks_like(masks, ["a", "b"], seed=1, consumers=CONSUMERS)["a"])


def test_random_neuron_masks_shuffle_the_alive_units_of_removable_layers():
    masks = {"h": ones(6, 4), "o": ones(3, 6)}
    masks["h"][[1, 4]] = False  # 4 of 6 units alive
    got = random_neuron_masks_like(masks, ["h"], seed=2, consumers={"h": ["o"]})
    alive = got["h"].any(dim=1)
    assert int(alive.sum()) == 4 and torch.equal(got["h"], alive.view(-1, 1).expand(6, 4))
    assert torch.equal(got["o"], alive.view(1, -1).expand(3, 6))
    assert torch.equal(alive, masks_lib.random_masks_like({"h": masks["h"].any(dim=1)}, 2)["h"])


# -- dependency groups: channels scored over every member and removed together ---------------------------------------

class TinyRes(torch.nn.Module):
    """h = a(x); h = h + relu(b(h)); h = h + d(relu(c(h))); out(h): a, b, d write group 'a', c writes group 'c'."""

    def __init__(self) -> None:
        super().__init__()
        lin = functools.partial(torch.nn.Linear, bias=False)
        self.a, self.b, self.c, self.d, self.out = lin(2, 3), lin(3, 3), lin(3, 3), lin(3, 3), lin(3, 2)
        with torch.no_grad():
            self.a.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -2.0], [3.0, 0.0]]))  # rows L1 1, 2, 3
            self.b.weight.copy_(torch.tensor([[1.0, 1.0, -1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))  # 3, 0, 1
            self.c.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 2.0]]))  # 1, 4, 2
            self.d.weight.copy_(torch.full((3, 3), 0.5 / 3))  # 0.5 each
            self.out.weight.copy_(torch.ones(2, 3))

    def forward(self, x):
        h = self.a(x)
        h = h + torch.relu(self.b(h))
        h = h + self.d(torch.relu(self.c(h)))
        return self.out(h)


def tiny():
    model = TinyRes()
    layout = dependency_groups(model)
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    weights = {n: p.detach() for n, p in model.named_parameters()}
    return layout, masks, weights


def test_tiny_residual_groups_and_scores_hand_computed():
    layout, masks, weights = tiny()
    assert layout.removable == ["a.weight", "c.weight"]
    assert [p.name for p in layout["d.weight"].producers] == ["a.weight", "b.weight", "d.weight"]
    assert [c.name for c in layout["a.weight"].consumers] == ["b.weight", "c.weight", "out.weight"]
    s = group_scores("l1", weights, masks, layout)
    assert torch.allclose(s["a.weight"], torch.tensor([4.5, 2.5, 4.5])) and s["c.weight"].tolist() == [1.0, 4.0, 2.0]
    sq = torch.tensor([1 + 3 + 1 / 12, 4 + 0 + 1 / 12, 9 + 1 + 1 / 12])  # Σw² over a, b, d rows
    assert torch.allclose(group_scores("l2", weights, masks, layout)["a.weight"], sq.sqrt())
    r = group_scores("random", weights, masks, layout, generator=torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    assert torch.equal(r["a.weight"], torch.rand(3, generator=gen)) and torch.equal(r["c.weight"], torch.rand(3, generator=gen))
    with pytest.raises(ValueError, match="group 'a.weight' has no BatchNorm"):
        group_scores("scale", weights, masks, layout)
    with pytest.raises(ValueError, match="unknown structured norm 'l3'; valid choices: l1, l2, random, scale"):
        group_scores("l3", weights, masks, layout)


def test_tiny_residual_layerwise_selection_removes_whole_channels():
    layout, masks, weights = tiny()
    new = select_groups(group_scores("l1", weights, masks, layout), masks, layout, 0.5)
    # group a: round(1.5) = 2 of [4.5, 2.5, 4.5] go: 1, then 0 (tie with 2: the lower index first); group c: 0 and 2
    assert {n: a.tolist() for n, a in alive_channels(new, layout).items()} == {
        "a.weight": [False, False, True], "c.weight": [False, True, False]}
    for w in ("a.weight", "b.weight", "d.weight"):  # every producer's rows 0, 1 off
        assert rows(new[w]) == [False, False, True]
    for w in ("b.weight", "c.weight", "out.weight"):  # every consumer's columns 0, 1 off
        assert new[w].any(dim=0).tolist() == [False, False, True]
    assert new["b.weight"].tolist() == [[False] * 3, [False] * 3, [False, False, True]]
    assert new["c.weight"].tolist() == [[False] * 3, [False, False, True], [False] * 3]
    assert new["d.weight"].tolist() == [[False] * 3, [False] * 3, [False, True, False]]  # reads c's channel 1 only
    assert new["out.weight"].tolist() == [[False, False, True]] * 2


def test_tiny_residual_global_selection_and_max_group_ratio():
    layout, masks, weights = tiny()
    scores = group_scores("l1", weights, masks, layout)
    # 3 of the 6 channels: c0 (1), c2 (2), a1 (2.5)
    new = select_groups(scores, masks, layout, 0.5, scope="global")
    assert {n: a.tolist() for n, a in alive_channels(new, layout).items()} == {
        "a.weight": [True, False, True], "c.weight": [False, True, False]}
    # at most round(0.34 × 3) = 1 channel of a group ever goes: only c0 and a1, fewer than 3 when the caps bind
    capped = select_groups(scores, masks, layout, 0.5, scope="global", max_ratio=0.34)
    assert {n: a.tolist() for n, a in alive_channels(capped, layout).items()} == {
        "a.weight": [True, False, True], "c.weight": [False, True, True]}
    again = select_groups(scores, capped, layout, 0.5, scope="global", max_ratio=0.34)
    assert all(torch.equal(again[n], capped[n]) for n in masks)  # the caps are on the dense size: nothing more goes
    layer = select_groups(scores, masks, layout, 0.9, max_ratio=0.34)  # layerwise: round(2.7) = 3 asked, 1 allowed
    assert {n: int(a.sum()) for n, a in alive_channels(layer, layout).items()} == {"a.weight": 2, "c.weight": 2}
    with pytest.raises(ValueError, match=r"max_ratio must be in \(0, 1\]"):
        select_groups(scores, masks, layout, 0.5, max_ratio=0.0)


def test_tiny_residual_overrides_name_any_producer():
    layout, masks, weights = tiny()
    scores = group_scores("l1", weights, masks, layout)
    new = select_groups(scores, masks, layout, 0.5, overrides={"d.weight": 0.34})  # group a: round(1.02) = 1
    assert {n: a.tolist() for n, a in alive_channels(new, layout).items()} == {
        "a.weight": [True, False, True], "c.weight": [False, True, False]}
    with pytest.raises(ValueError, match="overrides give group 'a.weight' two fractions"):
        select_groups(scores, masks, layout, 0.5, overrides={"b.weight": 0.3, "d.weight": 0.2})
    with pytest.raises(ValueError, match=r"overrides give a fraction to \['out.weight'\], whose units are never"):
        select_groups(scores, masks, layout, 0.5, overrides={"out.weight": 0.3})


@pytest.mark.parametrize(("name", "shape", "opts"), [
    ("mlp", (1, 6, 6), {"hidden": (12, 8)}), ("conv4", (3, 8, 8), {"fc": (16, 8)}),
    ("vgg16", (3, 16, 16), {"width": 4}), ("cnn1d", (40,), {"channels": 6})])
@pytest.mark.parametrize("norm", ["l1", "l2", "random"])
@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_uncoupled_models_select_bit_identically_to_layer_units(name, shape, opts, norm, scope):
    from lth.models import build_model

    model = build_model(name, shape, 10, **opts)
    old_layout, layout = unit_layout(model), dependency_groups(model)
    assert layout.removable == old_layout.removable and not any(g.coupled for g in layout.groups)
    weights = {n: p.detach() for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1}
    old = new = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    for r in range(2):
        s_old = neuron_scores(norm, weights, old, generator=torch.Generator().manual_seed(r))
        old = select_neurons(s_old, old, 0.3, scope=scope, removable=old_layout.removable,
                             consumers=old_layout.consumers)
        s_new = group_scores(norm, weights, new, layout, generator=torch.Generator().manual_seed(r))
        new = select_groups(s_new, new, layout, 0.3, scope=scope)
        assert all(torch.equal(old[n], new[n]) for n in weights)
    assert all(torch.equal(random_neuron_masks_like(old, old_layout.removable, 3, old_layout.consumers)[n],
                           random_group_masks_like(new, layout, 3)[n]) for n in weights)


def test_bn_scale_scores_sum_the_groups_batchnorm_weights():
    from lth.models import build_model

    model = build_model("resnet20", (3, 8, 8), 10, width=4)
    with torch.no_grad():
        for i, m in enumerate(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            m.weight.copy_(torch.arange(m.num_features) * (-1) ** i + 0.5 * i)
    layout = dependency_groups(model)
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()
             if n.endswith("weight") and p.dim() > 1}
    gammas = {n: model.get_submodule(n).weight for g in layout.groups for n in [s.name for s in g.norms]}
    s = group_scores("scale", {n: model.get_parameter(n) for n in masks}, masks, layout, norms=gammas)
    want = sum(model.get_submodule(n).weight.abs() for n in ("bn", "blocks.0.bn2", "blocks.1.bn2", "blocks.2.bn2"))
    assert torch.equal(s["conv.weight"], want.detach())
    assert torch.equal(s["blocks.0.conv1.weight"], model.blocks[0].bn1.weight.abs().detach())


def test_prune_step_on_resnet20_removes_residual_channels():
    from types import SimpleNamespace

    from lth.models import build_model
    from lth.pruning.step import prune_step
    from lth.structured import compact

    model = build_model("resnet20", (3, 8, 8), 10, width=4).eval()
    layout = dependency_groups(model)
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()
             if n.endswith("weight") and p.dim() > 1}
    pruning = SimpleNamespace(scope="layerwise", structured_norm="l1", max_group_ratio=None)
    new = prune_step(1, pruning, 0.5, {}, layout, masks, {}, {n: model.get_parameter(n) for n in masks},
                     torch.Generator().manual_seed(0), state=model.state_dict())
    alive = alive_units(new)
    assert int(alive["conv.weight"].sum()) == 2 and torch.equal(alive["conv.weight"], alive["blocks.2.conv2.weight"])
    assert torch.equal(alive["blocks.3.conv2.weight"], alive["blocks.3.shortcut.0.weight"])
    assert int(alive["blocks.8.conv2.weight"].sum()) == 8 and int(new["output.weight"].any(dim=0).sum()) == 8
    small = compact(model, new)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        masked = {n: p * new[n] if n in new else p for n, p in model.state_dict().items()}
        big = build_model("resnet20", (3, 8, 8), 10, width=4).eval()
        big.load_state_dict(masked)
        assert torch.allclose(small(x), big(x), atol=1e-5)
    half = build_model("resnet20", (3, 8, 8), 10, width=2)
    assert sum(p.numel() for p in small.parameters()) == sum(p.numel() for p in half.parameters()) == 4556
