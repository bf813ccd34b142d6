"""Structured selection: unit scores (L1/L2/random), layerwise/global counts, overrides, output layer, iterative IMP."""

import math

import pytest
import torch

from lth import masks as masks_lib
from lth.pruning import alive_units, neuron_scores, random_neuron_masks_like, select_neurons
from lth.pruning.select import removal_count
from lth.structured import unit_layout


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
