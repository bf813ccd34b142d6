"""Compaction (equal outputs on every registry model it supports), unit layouts, FLOPs counts, scratch baselines."""

import copy

import pytest
import torch
from torch import nn

from lth.models import build_model, reinitialize
from lth.pruning import neuron_scores, removal_count, select_neurons
from lth.reset import RESETS, Budget
from lth.structured import compact, flops, round_counts, scratch_state, scratch_steps, unit_layout
from lth.structured.compact import build, plan

MODELS = {  # name → (input shape, model options): small widths keep the test fast
    "mlp": ((1, 8, 8), {"hidden": (24, 16)}),
    "lenet_300_100": ((1, 6, 6), {}),
    "conv2": ((3, 8, 8), {"fc": (32, 16)}),
    "conv4": ((3, 8, 8), {"fc": (32, 16)}),
    "conv6": ((3, 8, 8), {"fc": (32, 16)}),
    "vgg16": ((3, 16, 16), {"width": 8}),
    "cnn1d": ((40,), {"channels": 12}),
    "resnet20": ((3, 8, 8), {"width": 4}),
}


def weight_masks(model):
    return {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()
            if isinstance(model.get_submodule(n.rpartition(".")[0]), (nn.Linear, nn.Conv1d, nn.Conv2d))
            and n.endswith("weight")}


def randomize(model):
    """Non-zero biases and BatchNorm statistics, so a dropped unit's bias would show in the outputs."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if getattr(m, "bias", None) is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen))
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen))
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return model


def masked_copy(model, masks):
    out = copy.deepcopy(model)
    with torch.no_grad():
        for n, m in masks.items():
            out.get_parameter(n).mul_(m)
    return out


def structured_masks(model, x, fraction=0.5, norm="l1", rounds=1, unstructured=0.0):
    layout = unit_layout(model, x)
    masks = weight_masks(model)
    for r in range(rounds):
        scores = neuron_scores(norm, {n: model.get_parameter(n) for n in masks}, masks,
                               generator=torch.Generator().manual_seed(r))
        masks = select_neurons(scores, masks, fraction, removable=layout.removable, consumers=layout.consumers)
    if unstructured:  # also some single weights off inside kept units
        gen = torch.Generator().manual_seed(1)
        masks = {n: m & (torch.rand(m.shape, generator=gen) >= unstructured) for n, m in masks.items()}
    return layout, masks


@pytest.mark.parametrize("name", list(MODELS))
def test_compact_equals_masked_model(name):
    shape, opts = MODELS[name]
    torch.manual_seed(0)
    model = randomize(build_model(name, shape, 10, **opts)).eval()
    x = torch.randn(3, *shape)
    layout, masks = structured_masks(model, x, rounds=2, unstructured=0.1)
    small = compact(model, masks, x)
    assert type(small) is type(model)
    with torch.no_grad():
        want = masked_copy(model, masks)(x)
        assert torch.allclose(small(x), want, atol=1e-5, rtol=1e-4)
        assert torch.allclose(small(2 * x + 1), masked_copy(model, masks)(2 * x + 1), atol=1e-4, rtol=1e-4)
    for p in layout.removable:  # every removable layer really shrank: 0.5 of the alive units, twice
        n = masks[p].shape[0]
        n1 = n - removal_count(0.5, n)
        assert small.get_parameter(p).shape[0] == n1 - removal_count(0.5, n1) < n
    f_masked, f_small = flops(model, x, masks), flops(small, x)
    assert f_small["flops_nonzero"] == f_masked["flops_nonzero"] < f_small["flops_dense"] < f_masked["flops_dense"]
    assert f_small["params_dense"] < f_masked["params_dense"]


def test_compact_train_mode_batchnorm_and_unit_counts():
    model = randomize(build_model("vgg16", (3, 16, 16), 10, width=8)).train()
    x = torch.randn(4, 3, 16, 16)
    layout, masks = structured_masks(model, x, fraction=0.5)
    small = compact(model, masks, x)
    assert torch.allclose(small(x), masked_copy(model, masks)(x), atol=1e-4)  # batch statistics per channel
    assert [small.get_parameter(p).shape[0] for p in layout.removable[:3]] == [4, 4, 8]  # 8,8,16 filters halved
    assert small.get_submodule("features.1").num_features == 4 and small.features[1].running_mean.shape == (4,)
    assert small.output.in_features == 32 and small.output.out_features == 10


def test_resnet_only_block_inner_convs_are_removable():
    model = build_model("resnet20", (3, 8, 8), 10, width=4)
    layout = unit_layout(model)
    assert layout.removable == [f"blocks.{i}.conv1.weight" for i in range(9)]
    assert layout.consumers["blocks.0.conv1.weight"] == ["blocks.0.conv2.weight"]
    assert layout.norms["blocks.0.conv1.weight"] == ["blocks.0.bn1"]
    assert "add" in layout.refused["blocks.0.conv2.weight"] and "add" in layout.refused["conv.weight"]


def test_residual_mlp_is_refused_clearly():
    model = build_model("mlp", (10,), 3, hidden=(6, 6), residual=True)
    layout = unit_layout(model)
    assert layout.removable == ["hidden.0.weight"] or layout.removable == []
    masks = weight_masks(model)
    scores = neuron_scores("l1", {n: model.get_parameter(n) for n in masks}, masks)
    if not layout.removable:
        with pytest.raises(ValueError, match="no layer's units can be removed"):
            select_neurons(scores, masks, 0.5, removable=layout.removable, consumers=layout.consumers)
    assert "add" in layout.refused["hidden.1.weight"]


def test_user_sequential_and_conv_flatten_linear():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 2 * 2, 12), nn.Tanh(), nn.Dropout(0.5),
        nn.Linear(12, 4),
    )
    randomize(model).eval()
    x = torch.randn(5, 2, 8, 8)
    layout, masks = structured_masks(model, x, fraction=0.5)
    assert layout.removable == ["0.weight", "4.weight", "7.weight"]
    assert layout.consumers == {"0.weight": ["4.weight"], "4.weight": ["7.weight"], "7.weight": ["10.weight"]}
    small = compact(model, masks)
    assert [small[i].weight.shape[0] for i in (0, 4, 7)] == [3, 4, 6]
    assert small[7].in_features == 4 * 2 * 2 and small[10].in_features == 6 and small[1].num_features == 3
    assert torch.allclose(small(x), masked_copy(model, masks)(x), atol=1e-5)


def test_rows_only_masks_keep_read_units_and_stay_exact():
    model = randomize(build_model("mlp", (5,), 3, hidden=(4,))).eval()
    masks = weight_masks(model)
    masks["hidden.0.weight"][1] = False  # row off, its bias still feeds the output layer through live columns
    small = compact(model, masks)
    assert small.hidden[0].out_features == 4
    x = torch.randn(7, 5)
    assert torch.allclose(small(x), masked_copy(model, masks)(x), atol=1e-6)
    masks["output.weight"][:, 1] = False  # now nobody reads unit 1: it goes, bias and all
    assert compact(model, masks).hidden[0].out_features == 3


def test_layer_with_every_unit_removed_keeps_one_silent_unit():
    model = randomize(build_model("conv2", (1, 4, 4), 3, fc=(6, 5))).eval()
    masks = weight_masks(model)
    masks["features.0.weight"][:] = False
    masks["features.2.weight"][:] = False  # nobody reads conv 0; conv 2 reads nothing
    masks["classifier.0.weight"][:] = False
    small = compact(model, masks)
    assert small.features[0].out_channels == 1 and small.features[2].out_channels == 1
    x = torch.randn(2, 1, 4, 4)
    assert torch.allclose(small(x), masked_copy(model, masks)(x), atol=1e-6)


def test_compact_rejects_bad_masks():
    model = build_model("mlp", (5,), 3, hidden=(4,))
    with pytest.raises(ValueError, match="names no parameter"):
        compact(model, {"nope.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="has shape"):
        compact(model, {"hidden.0.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="has shape"):
        flops(model, (5,), {"hidden.0.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="Linear or Conv"):
        unit_layout(model, prunables=["hidden.0.bias"])


def test_flops_mlp_hand_computed():
    model = build_model("mlp", (8,), 3, hidden=(4,))
    masks = weight_masks(model)
    masks = select_neurons({"hidden.0.weight": torch.tensor([1.0, 0.0, 3.0, 0.5])}, masks, 0.5,
                           consumers={"hidden.0.weight": ["output.weight"]})
    f = flops(model, torch.zeros(5, 8), masks, per_layer=True)
    # dense 8·4 + 4·3 = 44 MACs; units 1, 3 gone: 8·2 + 2·3 = 22; params 8·4+4 + 4·3+3 = 51, 22 of 44 weights pruned
    assert {k: f[k] for k in ("flops_dense", "flops_nonzero", "params_dense", "params_nonzero")} == {
        "flops_dense": 44, "flops_nonzero": 22, "params_dense": 51, "params_nonzero": 29}
    assert f["layers"] == {"hidden.0.weight": {"flops_dense": 32, "flops_nonzero": 16},
                           "output.weight": {"flops_dense": 12, "flops_nonzero": 6}}
    assert round_counts(model, masks, (8,), compacted=True) == {
        "flops_dense": 44, "flops_nonzero": 22, "params_dense": 51, "params_nonzero": 29,
        "flops_compact": 22, "params_compact": 8 * 2 + 2 + 2 * 3 + 3}


def test_flops_conv_hand_computed():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3))
    f = flops(model, (1, 4, 4))
    # conv: 16 output pixels × 18 weights = 288; linear 8·3 = 24; params 18+2 + 24+3
    assert (f["flops_dense"], f["flops_nonzero"], f["params_dense"]) == (312, 312, 47)
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] = 0.0  # no masks: non-zero entries count
    assert flops(model, torch.zeros(3, 1, 4, 4))["flops_nonzero"] == 312 - 16
    strided = nn.Sequential(nn.Conv1d(2, 3, 3, stride=2), nn.Flatten(), nn.Linear(6, 1))
    # length 5 → 2 outputs × 18 weights; linear 6
    assert flops(strided, (2, 5))["flops_dense"] == 2 * 18 + 6


def test_flops_restores_training_mode_and_bn_statistics():
    model = build_model("vgg16", (3, 16, 16), 10, width=8).train()
    before = model.features[1].running_mean.clone()
    flops(model, torch.randn(2, 3, 16, 16))
    assert model.training and model.features[1].training
    assert torch.equal(model.features[1].running_mean, before)


def test_scratch_steps_arithmetic():
    assert scratch_steps(1000, 300, 100) == 3000
    assert scratch_steps(1000, 300, 120) == 2500
    assert scratch_steps(7, 10, 3) == 23  # floor(70 / 3)
    assert scratch_steps(1000, 300, 100, cap=2) == 2000
    assert scratch_steps(7, 10, 3, cap=1.5) == 10  # floor(10.5)
    assert scratch_steps(1000, 300, 300) == 1000
    assert scratch_steps(30, 1440, 840, cap=1.2) == 36  # 1.2 as written: float 1.2 × 30 is 35.99…
    for bad in ((0, 3, 1), (10, 1, 2), (10, 3, 0)):
        with pytest.raises(ValueError):
            scratch_steps(*bad)
    with pytest.raises(ValueError, match="cap"):
        scratch_steps(10, 3, 1, cap=0.5)
    assert RESETS["scratch_e"].steps(Budget(1000, 300, 100)) == 1000
    assert RESETS["scratch_b"].steps(Budget(1000, 300, 100, scratch_cap=2)) == 2000
    assert RESETS["scratch_b"].steps(Budget(1000, 300, 100)) == 3000
    assert RESETS["continue"].steps(Budget(1000, 300, 100, finetune_steps=40)) == 40
    assert RESETS["continue"].steps(Budget(1000, 300, 100)) == 1000
    assert RESETS["rewind"].steps(Budget(1000, 300, 100, finetune_steps=40)) == 1000


def test_scratch_state_is_a_fresh_init_of_the_small_architecture():
    model = randomize(build_model("conv2", (1, 8, 8), 10, fc=(16, 8), init="kaiming_uniform"))
    x = torch.zeros(1, 1, 8, 8)
    _, masks = structured_masks(model, x, fraction=0.5)
    state = scratch_state(model, masks, seed=3)
    assert state.keys() == model.state_dict().keys()
    for n, m in masks.items():
        assert state[n].shape == m.shape and not state[n][~m].any()
    how = plan(model, masks)
    expected = build(model, masks, how)
    reinitialize(expected, 3)
    loaded = copy.deepcopy(model)
    loaded.load_state_dict(state)
    got = compact(loaded, masks)
    for k, v in expected.state_dict().items():
        assert torch.equal(got.state_dict()[k], v), k
    # drawn with the small model's own fan-in: kaiming_uniform bounds weights by 1/sqrt(fan_in), 32 filters × 4×4 inputs
    fc = got.classifier[0]
    assert fc.in_features == 32 * 4 * 4
    assert (64 * 4 * 4) ** -0.5 < fc.weight.abs().max() <= fc.in_features ** -0.5  # dense fan-in would bound it lower
    assert not torch.equal(scratch_state(model, masks, seed=4)["features.0.weight"], state["features.0.weight"])
    dense = scratch_state(model, masks, seed=3, compacted=False)  # unstructured: a fresh draw of the whole model
    fresh = copy.deepcopy(model)
    reinitialize(fresh, 3)
    assert torch.equal(dense["classifier.0.bias"], fresh.classifier[0].bias)
    assert torch.equal(dense["features.0.weight"], fresh.features[0].weight * masks["features.0.weight"])
