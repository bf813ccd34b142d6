"""Supermask layers, module swap, exact top-k counts, straight-through gradients, Bernoulli statistics, heuristics."""

import copy
import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lth import masks as masks_lib
from lth.models import build_model, reinitialize
from lth.supermask import (
    frozen_weights,
    heuristic_masks,
    kept_count,
    supermask_layers,
    supermask_masks,
    to_supermask,
    top_mask,
    top_masks,
)
from lth.supermask.layers import Bernoulli, SupermaskConv2d, SupermaskLinear


def small_convnet():
    torch.manual_seed(0)
    layers = [nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 32), nn.ReLU(), nn.Linear(32, 10)]
    return nn.Sequential(*layers)


# ----- counting and top-k


def test_kept_count_rounds_half_to_even_exactly():
    assert [kept_count(0.5, 5), kept_count(0.5, 7), kept_count(0.1, 25)] == [2, 4, 2]
    counts = [kept_count(0.3, 2048), kept_count(0.7, 2048), kept_count(0.1, 36), kept_count(1.0, 320)]
    assert counts == [614, 1434, 4, 320]
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        kept_count(0.0, 10)


def test_top_mask_keeps_exactly_the_highest_and_breaks_ties_by_index():
    s = torch.tensor([3.0, 1.0, 2.0, 2.0, 2.0, 0.0])
    # threshold at 2: 3.0 is kept, then two of the three 2.0s: the higher flat indices (3, 4)
    assert top_mask(s, 3).tolist() == [True, False, False, True, True, False]
    assert top_mask(torch.ones(4), 2).tolist() == [False, False, True, True]
    assert top_mask(s, 0).sum() == 0 and top_mask(s, 6).all()


def test_top_masks_layerwise_and_global_counts():
    scores = {"a": torch.arange(10.0), "b": torch.arange(30.0) + 100}
    lw = top_masks(scores, 0.25)
    assert (int(lw["a"].sum()), int(lw["b"].sum())) == (2, 8)  # 2.5 -> 2, 7.5 -> 8
    assert lw["a"].tolist() == [False] * 8 + [True] * 2
    glob = top_masks(scores, 0.25, scope="global")  # 10 of 40, all of b's scores are higher
    assert (int(glob["a"].sum()), int(glob["b"].sum())) == (0, 10)
    with pytest.raises(ValueError, match="unknown scope 'sideways'; valid choices: layerwise, global"):
        top_masks(scores, 0.5, scope="sideways")


# ----- module swap


@pytest.mark.parametrize("k", [0.1, 0.5, 0.7])
def test_edge_popup_forward_uses_exactly_the_top_k_scores_of_each_layer(k):
    model = to_supermask(small_convnet(), "edge_popup", k=k, seed=0)
    layers = supermask_layers(model)
    assert list(layers) == ["0", "3", "5"]
    expected = {"0": kept_count(k, 36), "3": kept_count(k, 144 * 32), "5": kept_count(k, 320)}
    # 0.1: 3.6 -> 4, 460.8 -> 461; 0.7: 25.2 -> 25, 3225.6 -> 3226
    assert expected == {"0.1": {"0": 4, "3": 461, "5": 32}, "0.5": {"0": 18, "3": 2304, "5": 160},
                        "0.7": {"0": 25, "3": 3226, "5": 224}}[str(k)]
    for name, layer in layers.items():
        m = layer.supermask.mask(layer.scores, training=True)
        assert set(m.unique().tolist()) <= {0.0, 1.0} and int(m.sum()) == expected[name]
        kept, dropped = layer.scores.abs()[m.bool()], layer.scores.abs()[~m.bool()]
        assert kept.min() >= dropped.max()  # the largest |scores|
        assert torch.equal(layer.effective_weight(), layer.weight * m)
    masks = supermask_masks(model)
    assert {n: int(v.sum()) for n, v in masks.items()} == {f"{n}.weight": c for n, c in expected.items()}


def test_swap_keeps_the_original_parameter_names_and_objects_and_freezes_them():
    model = build_model("mlp", (1, 8, 8), 10, hidden=[16])
    params = dict(model.named_parameters())
    to_supermask(model, "edge_popup", k=0.5, seed=1)
    assert [n for n, _ in model.named_parameters()] == [
        "hidden.0.weight", "hidden.0.bias", "hidden.0.scores", "output.weight", "output.bias", "output.scores"]
    new = dict(model.named_parameters())
    assert all(new[n] is p and not p.requires_grad for n, p in params.items())
    assert new["hidden.0.scores"].requires_grad and isinstance(model.hidden[0], nn.Linear)
    assert masks_lib.find_prunables(model) == ["hidden.0.weight", "output.weight"]


def test_reinitialize_redraws_weights_and_leaves_scores_alone():
    model = to_supermask(build_model("mlp", (1, 8, 8), 10, hidden=[16]), "edge_popup", k=0.5, seed=1)
    scores = {n: p.clone() for n, p in model.named_parameters() if n.endswith("scores")}
    w = model.hidden[0].weight.clone()
    reinitialize(model, 123)
    assert not torch.equal(model.hidden[0].weight, w)
    assert all(torch.equal(p, scores[n]) for n, p in model.named_parameters() if n.endswith("scores"))


def test_scores_are_seeded():
    a = to_supermask(small_convnet(), "edge_popup", k=0.5, seed=3)
    b = to_supermask(small_convnet(), "edge_popup", k=0.5, seed=3)
    c = to_supermask(small_convnet(), "edge_popup", k=0.5, seed=4)
    assert torch.equal(a[0].scores, b[0].scores) and not torch.equal(a[0].scores, c[0].scores)


def test_pickle_and_deepcopy_round_trip_of_a_swapped_model():
    model = to_supermask(small_convnet(), "edge_popup", k=0.3, seed=0).eval()
    x = torch.randn(5, 1, 8, 8)
    for other in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert isinstance(other[0], SupermaskConv2d) and isinstance(other[5], SupermaskLinear)
        assert other[0].supermask.k == 0.3 and not other[0].weight.requires_grad and other[0].scores.requires_grad
        assert torch.equal(other(x), model(x))
        sd, osd = model.state_dict(), other.state_dict()
        assert list(sd) == list(osd) and all(torch.equal(sd[k], osd[k]) for k in sd)


def test_a_model_that_is_a_single_layer_and_conv1d_layers_are_swapped():
    layer = to_supermask(nn.Linear(10, 4), "bernoulli", seed=0)
    assert isinstance(layer, SupermaskLinear) and list(supermask_masks(layer)) == ["weight"]
    conv = to_supermask(nn.Sequential(nn.Conv1d(1, 3, 5, padding=2, padding_mode="circular")), "edge_popup", k=0.5)
    x = torch.randn(2, 1, 9)
    w = conv[0].weight * conv[0].supermask.hard_mask(conv[0].scores)
    expected = F.conv1d(F.pad(x, (2, 2), mode="circular"), w, conv[0].bias)
    assert torch.allclose(conv(x), expected)


def test_bad_swaps_are_rejected_with_the_valid_choices():
    with pytest.raises(ValueError, match="unknown supermask method 'popup'; valid choices: bernoulli, edge_popup"):
        to_supermask(small_convnet(), "popup")
    with pytest.raises(ValueError, match=r"'bernoulli' has no option\(s\) \['k'\]; valid options: \['rescale', "):
        to_supermask(small_convnet(), "bernoulli", k=0.5)
    with pytest.raises(ValueError, match=r"k \(the fraction of weights kept\) must be in \(0, 1\], got 1.5"):
        to_supermask(small_convnet(), "edge_popup", k=1.5)
    with pytest.raises(ValueError, match="unknown eval_mask 'mean'; valid choices: expected, sampled"):
        to_supermask(small_convnet(), "bernoulli", eval_mask="mean")
    swapped = to_supermask(small_convnet(), "edge_popup", k=0.5)
    with pytest.raises(ValueError, match="layer '0' is already a supermask layer"):
        to_supermask(swapped, "edge_popup", k=0.5)

    class Scaled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    with pytest.raises(ValueError, match=r"layer '1' \(Scaled\) overrides Linear.forward"):
        to_supermask(nn.Sequential(nn.Linear(3, 3), Scaled(3, 2)), "edge_popup", k=0.5)
    with pytest.raises(ValueError, match="layer '0' is a LayerNorm; supermask layers replace only Linear, Conv1d"):
        to_supermask(nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 2)), "edge_popup", k=0.5, include=[r"0\.weight"])


# ----- gradients


def test_edge_popup_gradient_reaches_scores_straight_through_and_not_weights():
    torch.manual_seed(0)
    layer = to_supermask(nn.Linear(6, 4), "edge_popup", k=0.5, seed=0)
    x, g = torch.randn(8, 6), torch.randn(8, 4)
    (layer(x) * g).sum().backward()
    assert layer.weight.grad is None and layer.bias.grad is None
    grad_w_eff = g.T @ x  # ∂L/∂W_eff of L = Σ g ⊙ (x W_effᵀ + b)
    expected = torch.sign(layer.scores.detach()) * grad_w_eff * layer.weight.detach()
    assert torch.allclose(layer.scores.grad, expected, atol=1e-6)
    assert (layer.scores.grad != 0).sum() == 24  # every score gets a gradient, kept or not


def test_bernoulli_forward_is_w_times_a_fresh_sample_and_gradient_is_straight_through():
    layer = to_supermask(nn.Linear(6, 4), "bernoulli", seed=0)
    with torch.no_grad():
        layer.scores.copy_(torch.linspace(-2, 2, 24).reshape(4, 6))
    x, g = torch.randn(8, 6), torch.randn(8, 4)
    torch.manual_seed(7)
    y = layer(x)
    torch.manual_seed(7)
    p = torch.sigmoid(layer.scores.detach())
    b = torch.bernoulli(p)
    assert torch.equal(y, F.linear(x, layer.weight * b, layer.bias))  # exactly w ⊙ b
    (y * g).sum().backward()
    expected = p * (1 - p) * (g.T @ x) * layer.weight.detach()  # ∂L/∂b = ∂L/∂W_eff ⊙ W, times σ'(s)
    assert torch.allclose(layer.scores.grad, expected, atol=1e-6) and layer.weight.grad is None
    assert not torch.equal(layer.effective_weight(), layer.effective_weight())  # a fresh sample each forward


def test_bernoulli_sample_means_match_the_probabilities():
    # 4000 draws per logit: the sample mean has std sqrt(p(1-p)/4000) <= 0.0079; 0.04 is 5 std (false alarm ~1e-6)
    logits = torch.tensor([-3.0, -1.0, 0.0, 0.5, 2.0])
    scores = logits[:, None].expand(5, 4000).clone()
    torch.manual_seed(0)
    m = Bernoulli().mask(scores, training=True)
    assert set(m.unique().tolist()) == {0.0, 1.0}
    assert torch.allclose(m.mean(dim=1), torch.sigmoid(logits), atol=0.04)


def test_bernoulli_evaluation_expected_and_sampled_and_rescaling():
    scores = torch.tensor([[-1.0, 0.0, 0.3, 2.0]])
    expected = Bernoulli().mask(scores, training=False)
    assert expected.tolist() == [[0.0, 0.0, 1.0, 1.0]]  # σ(s) > 0.5; σ(0) = 0.5 is not kept
    rescaled = Bernoulli(rescale=True).mask(scores, training=False)
    assert rescaled.tolist() == [[0.0, 0.0, 2.0, 2.0]]  # × numel / Σb = 4 / 2
    torch.manual_seed(1)
    sampled = Bernoulli(eval_mask="sampled").mask(torch.zeros(1, 200), training=False)
    assert 0 < int(sampled.sum()) < 200  # a draw, not the (empty) expected mask
    assert Bernoulli().hard_mask(scores).tolist() == [[False, False, True, True]]


def test_frozen_weights_stay_bit_identical_under_sgd_with_momentum_and_weight_decay():
    model = to_supermask(small_convnet(), "edge_popup", k=0.5, seed=0)
    frozen = {n: p.clone() for n, p in model.named_parameters() if not n.endswith("scores")}
    scores = model[0].scores.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-2)
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(model(torch.randn(16, 1, 8, 8)), torch.randint(0, 10, (16,))).backward()
        opt.step()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert not torch.equal(model[0].scores, scores)


# ----- frozen weights and heuristic masks


def test_frozen_weight_choices():
    w = {"fc.weight": torch.tensor([[0.5, -1.0, 0.0], [2.0, -0.5, 1.0]])}
    sc = frozen_weights("signed_constant", w)["fc.weight"]
    sigma = w["fc.weight"].std(correction=0)
    assert torch.equal(sc, sigma * torch.tensor([[1.0, -1.0, 1.0], [1.0, -1.0, 1.0]]))
    skc = frozen_weights("signed_kaiming_constant", w)["fc.weight"]
    assert torch.allclose(skc.abs(), torch.full((2, 3), math.sqrt(2 / 3))) and torch.equal(skc.sign(), sc.sign())
    scaled = frozen_weights("init", w, k=0.25, scale_fan=True)["fc.weight"]
    assert torch.equal(scaled, 2 * w["fc.weight"])  # × 1/√k
    with pytest.raises(ValueError, match="unknown supermask weights 'ones'; valid choices: init, signed_constant"):
        frozen_weights("ones", w)


def test_heuristic_large_final_same_sign_hand_example():
    w_init = {"l": torch.tensor([1.0, -1.0, 1.0, -1.0])}
    w_final = {"l": torch.tensor([0.5, 0.9, -2.0, -0.1])}  # positions 1 and 2 flipped sign
    assert heuristic_masks("large_final_same_sign", w_init, w_final, 0.5)["l"].tolist() == [True, False, False, True]
    assert heuristic_masks("large_final", w_init, w_final, 0.5)["l"].tolist() == [False, True, True, False]
    # a source mask without position 0: among the rest, flipped -2.0 (score -1/3) beats flipped 0.9 (-1/1.9)
    src = {"l": torch.tensor([False, True, True, True])}
    got = heuristic_masks("large_final_same_sign", w_init, w_final, 0.5, source_masks=src)["l"]
    assert got.tolist() == [False, False, True, True]
    with pytest.raises(ValueError, match=r"density 1.0 keeps 4 weights of l, but the source mask kept only 3"):
        heuristic_masks("large_final", w_init, w_final, 1.0, source_masks=src)
    with pytest.raises(ValueError, match="unknown criterion 'biggest'"):
        heuristic_masks("biggest", w_init, w_final, 0.5)


def test_a_parametrized_layer_is_refused():
    model = nn.Sequential(nn.Linear(4, 3))
    nn.utils.parametrizations.weight_norm(model[0])
    with pytest.raises(ValueError, match=r"layers \['0'\] have parametrizations"):
        to_supermask(model, "edge_popup", k=0.5)


def test_the_config_schema_has_a_from_field_and_imports_no_torch():
    import subprocess
    import sys

    from lth.supermask.config import SupermaskConfig

    c = SupermaskConfig(**{"method": "heuristic", "from": "runs/x", "density": [0.1, 0.5]})
    assert (c.source, c.densities(), SupermaskConfig(density=0.2).densities()) == ("runs/x", [0.1, 0.5], [0.2])
    assert c == SupermaskConfig(**{"method": "heuristic", "from": "runs/x", "density": [0.1, 0.5]}) != SupermaskConfig()
    with pytest.raises(TypeError, match=r"no field\(s\) \['dens'\]"):
        SupermaskConfig(dens=0.1)
    code = "import sys, lth.config; assert 'torch' not in sys.modules, 'torch imported'"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False).returncode == 0
