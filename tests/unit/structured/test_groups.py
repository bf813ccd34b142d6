"""Dependency groups (residual adds, concatenations, depthwise convs, BatchNorm, flatten) found by name on the registry
models and on DenseNet- / MobileNetV2-style probes; unsupported ops refused by name; any masks compacted exactly."""

import warnings

import pytest
import torch
import torch.nn.functional as F
import torch.nn.utils.prune
from torch import nn

from lth.models import build_model
from lth.pruning import alive_channels, group_scores, select_groups
from lth.pruning.select import removal_count
from lth.structured import Slice, compact, dependency_groups
from tests.unit.structured.test_structured import masked_copy, randomize, weight_masks


class DenseProbe(nn.Module):
    """DenseNet-style: stem → two dense layers each concatenating its output to its input → 1×1 transition → fc."""

    def __init__(self, c: int = 4, g: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv1 = nn.Conv2d(c, g, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c + g)
        self.conv2 = nn.Conv2d(c + g, g, 3, padding=1)
        self.trans = nn.Conv2d(c + 2 * g, 5, 1)
        self.fc = nn.Linear(5, 10)

    def forward(self, x):
        x0 = self.stem(x)
        x1 = torch.cat([x0, self.conv1(F.relu(self.bn1(x0)))], 1)
        x2 = torch.cat([x1, self.conv2(F.relu(self.bn2(x1)))], 1)
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.trans(x2)), 1).flatten(1))


class InvertedResidual(nn.Module):
    """expand 1×1 → depthwise 3×3 → project 1×1, plus the skip."""

    def __init__(self, c: int, e: int) -> None:
        super().__init__()
        self.expand = nn.Conv2d(c, e, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(e)
        self.dw = nn.Conv2d(e, e, 3, padding=1, groups=e, bias=False)
        self.bn2 = nn.BatchNorm2d(e)
        self.project = nn.Conv2d(e, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)

    def forward(self, x):
        h = F.relu6(self.bn1(self.expand(x)))
        h = F.relu6(self.bn2(self.dw(h)))
        return x + self.bn3(self.project(h))


class MobileProbe(nn.Module):
    """MobileNetV2-style: stem → two inverted residual blocks → pool → fc."""

    def __init__(self, c: int = 4, e: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.block1 = InvertedResidual(c, e)
        self.block2 = InvertedResidual(c, e)
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        h = self.block2(self.block1(F.relu6(self.bn(self.stem(x)))))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def names(slices):
    return [s.name for s in slices]


def test_resnet20_stage_groups_hold_the_stem_every_second_conv_and_the_shortcut():
    layout = dependency_groups(build_model("resnet20", (3, 8, 8), 10, width=4))
    stage1 = layout["conv.weight"]
    assert names(stage1.producers) == ["conv.weight", "blocks.0.conv2.weight", "blocks.1.conv2.weight",
                                       "blocks.2.conv2.weight"]
    assert names(stage1.norms) == ["bn", "blocks.0.bn2", "blocks.1.bn2", "blocks.2.bn2"]
    assert names(stage1.consumers) == ["blocks.0.conv1.weight", "blocks.1.conv1.weight", "blocks.2.conv1.weight",
                                       "blocks.3.conv1.weight", "blocks.3.shortcut.0.weight"]
    assert stage1.size == 4 and stage1.coupled and all(s.offset == 0 for s in stage1.producers)
    stage2 = layout["blocks.3.shortcut.0.weight"]  # a group is found by any producer's name
    assert stage2.name == "blocks.3.conv2.weight" and stage2.size == 8
    assert names(stage2.producers) == ["blocks.3.conv2.weight", "blocks.3.shortcut.0.weight",
                                       "blocks.4.conv2.weight", "blocks.5.conv2.weight"]
    assert "blocks.3.shortcut.1" in names(stage2.norms)
    stage3 = layout["blocks.6.conv2.weight"]
    assert names(stage3.consumers) == ["blocks.7.conv1.weight", "blocks.8.conv1.weight", "output.weight"]
    inner = layout["blocks.4.conv1.weight"]
    assert not inner.coupled and names(inner.consumers) == ["blocks.4.conv2.weight"]
    assert len(layout.groups) == 3 + 9 and layout.refused == {"output.weight": "its channels are the model's outputs"}
    assert "residual add 'add'" in stage1.couplings[0] and "in module 'blocks.0'" in stage1.couplings[0]


def test_concat_probe_offsets():
    layout = dependency_groups(DenseProbe())
    g = layout["conv2.weight"]
    assert g.name == "stem.weight" and g.size == 4 + 3 + 3
    # channel i of input k is channel offset_k + i of the concatenation
    assert g.producers == [Slice("stem.weight", 0, 4), Slice("conv1.weight", 4, 3), Slice("conv2.weight", 7, 3)]
    assert g.norms == [Slice("bn1", 0, 4), Slice("bn2", 0, 7)]
    assert g.consumers == [Slice("conv1.weight", 0, 4), Slice("conv2.weight", 0, 7), Slice("trans.weight", 0, 10)]
    assert layout.removable == ["stem.weight", "trans.weight"]


def test_inverted_residual_probe_depthwise_joins_its_input():
    layout = dependency_groups(MobileProbe())
    inner = layout["block1.dw.weight"]
    assert inner.name == "block1.expand.weight" and inner.size == 8
    assert inner.producers == [Slice("block1.expand.weight", 0, 8), Slice("block1.dw.weight", 0, 8)]
    assert names(inner.norms) == ["block1.bn1", "block1.bn2"] and names(inner.consumers) == ["block1.project.weight"]
    skip = layout["stem.weight"]
    assert names(skip.producers) == ["stem.weight", "block1.project.weight", "block2.project.weight"]
    assert names(skip.consumers) == ["block1.expand.weight", "block2.expand.weight", "fc.weight"]
    assert names(skip.norms) == ["bn", "block1.bn3", "block2.bn3"]


def test_flatten_after_conv_is_a_block_of_columns():
    layout = dependency_groups(build_model("cnn1d", (40,), 10, channels=6))
    last = layout["features.4.weight"]
    assert last.consumers == [Slice("output.weight", 0, 6, block=5)]  # 40 → 19 → 10 → 5 positions per channel


class Roll(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        h = torch.roll(self.a(x), 1, dims=1)
        return self.fc(self.b(h).mean((2, 3)))


class Shuffle(Roll):
    def forward(self, x):
        h = self.a(x)
        n, c, hh, ww = h.shape
        h = h.view(n, 2, c // 2, hh, ww).transpose(1, 2).reshape(n, c, hh, ww)  # a channel shuffle
        return self.fc(self.b(h).mean((2, 3)))


class Chunk(Roll):
    def forward(self, x):
        u, v = self.a(x).chunk(2, dim=1)
        return self.fc(self.b(torch.cat([v, u], 1)).mean((2, 3)))


@pytest.mark.parametrize(("model", "op"), [(Roll(), "roll"), (Shuffle(), "size"), (Chunk(), "chunk")])
def test_unsupported_ops_are_refused_by_name(model, op):
    layout = dependency_groups(model)
    assert "a.weight" in layout.refused and "a.weight" not in layout.of
    why = layout.refused["a.weight"]
    assert op in why or "view" in why, why
    assert "which the layout cannot follow" in why or "combined" in why
    assert "in module ''" in why  # the module path of the op (the root module here)
    assert layout.removable == ["b.weight"] or "b.weight" in layout.refused


def test_refusals_name_the_op_and_module_path():
    assert layout_reason(Roll()) == ("it reaches 'roll' (call_function roll, in module ''), which the layout cannot "
                                     "follow")
    assert "'chunk' (call_method chunk, in module '')" in layout_reason(Chunk())


def layout_reason(model):
    return dependency_groups(model).refused["a.weight"]


def test_non_prunable_member_refuses_its_group():
    model = build_model("resnet20", (3, 8, 8), 10, width=4)
    prunables = [n for n, _ in model.named_parameters() if n.endswith("weight") and "bn" not in n
                 and "shortcut.1" not in n and n != "blocks.3.shortcut.0.weight"]
    layout = dependency_groups(model, prunables=prunables)
    assert layout.refused["blocks.3.conv2.weight"] == \
        "'blocks.3.shortcut.0' writes or reads its channels but is not prunable"
    assert "conv.weight" in layout.refused  # stage 1 is read by the shortcut conv
    assert layout.removable == [f"blocks.{i}.conv1.weight" for i in range(7)] + [
        "blocks.6.conv2.weight", "blocks.7.conv1.weight", "blocks.8.conv1.weight"]  # first-producer order


# -- compaction of group-pruned masks ---------------------------------------------------------------------------------

def group_masks(model, x, fraction=0.5, rounds=2, scope="layerwise"):
    layout = dependency_groups(model, x)
    masks = weight_masks(model)
    for r in range(rounds):
        scores = group_scores("l1", {n: model.get_parameter(n) for n in masks}, masks, layout)
        masks = select_groups(scores, masks, layout, fraction, scope=scope)
    return layout, masks


MODELS = {  # name → (input shape, model options)
    "mlp": ((1, 8, 8), {"hidden": (24, 16)}),
    "mlp_residual": ((1, 8, 8), {"hidden": (12, 12, 12), "residual": True}),
    "lenet_300_100": ((1, 6, 6), {}),
    "conv2": ((3, 8, 8), {"fc": (32, 16)}),
    "conv4": ((3, 8, 8), {"fc": (32, 16)}),
    "conv6": ((3, 8, 8), {"fc": (32, 16)}),
    "vgg11": ((3, 16, 16), {"width": 8}),
    "vgg16": ((3, 16, 16), {"width": 8}),
    "vgg19": ((3, 16, 16), {"width": 8}),
    "cnn1d": ((40,), {"channels": 12}),
    "resnet20": ((3, 8, 8), {"width": 4}),
    "resnet56": ((3, 8, 8), {"width": 4}),
    "dense_probe": ((3, 6, 6), None),
    "mobile_probe": ((3, 6, 6), None),
}


def make(name):
    shape, opts = MODELS[name]
    torch.manual_seed(0)
    if opts is None:
        model = {"dense_probe": DenseProbe, "mobile_probe": MobileProbe}[name]()
    else:
        model = build_model(name.removesuffix("_residual"), shape, 10, **opts)
    return randomize(model).eval(), torch.randn(3, *shape)


@pytest.mark.parametrize("name", list(MODELS))
def test_group_pruned_masks_compact_to_equal_outputs(name):
    model, x = make(name)
    layout, masks = group_masks(model, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small = compact(model, masks, x)
    with torch.no_grad():
        assert torch.allclose(small(x), masked_copy(model, masks)(x), atol=1e-5, rtol=1e-4)
    params = {n: p.shape for n, p in small.named_parameters()}
    alive = alive_channels(masks, layout)
    for g in layout.groups:  # every group lost exactly what two half rounds remove, in every member
        left = g.size - removal_count(0.5, g.size)
        assert int(alive[g.name].sum()) == left - removal_count(0.5, left), g.name
        for p in g.producers:
            # a producer whose channels all went keeps one silent one (torch has no zero-width conv)
            assert params[p.name][0] == max(1, int(alive[g.name][p.offset:p.offset + p.size].sum())), p.name
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


def test_resnet20_residual_groups_are_pruned_and_compacted():
    model, x = make("resnet20")
    _, masks = group_masks(model, x, rounds=1)
    small = compact(model, masks, x)
    # stage widths 4, 8, 16 → 2, 4, 8 in the stem, every block's second conv and the shortcuts
    assert [small.get_parameter(f"{n}.weight").shape[0] for n in ("conv", "blocks.0.conv2", "blocks.3.conv2",
                                                                   "blocks.3.shortcut.0", "blocks.8.conv2")] == [2, 2,
                                                                                                                4, 4, 8]
    assert small.output.in_features == 8 and small.blocks[3].shortcut[1].num_features == 4
    with torch.no_grad():
        assert torch.allclose(small(x), masked_copy(model, masks)(x), atol=1e-5)
    # every group halved: the same network at width 2
    assert sum(p.numel() for p in model.parameters()) == resnet20_params(4) == 17534
    assert sum(p.numel() for p in small.parameters()) == resnet20_params(2)


def resnet20_params(w):
    """Parameters of resnet20 at width w (3 input channels, 10 classes): convs 3×3 (1×1 shortcuts), BN γ and β."""
    stem = 3 * w * 9 + 2 * w
    stages = 0
    for c_in, c in ((w, w), (w, 2 * w), (2 * w, 4 * w)):
        first = c_in * c * 9 + c * c * 9 + 2 * 2 * c + (0 if c_in == c else c_in * c + 2 * c)
        stages += first + 2 * (2 * c * c * 9 + 2 * 2 * c)
    return stem + stages + 4 * w * 10 + 10


def conv_pool_linear():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 6, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(6 * 4, 10), nn.ReLU(),
                         nn.Linear(10, 4))


def test_rows_masked_model_compacts_to_fewer_parameters():
    model = conv_pool_linear().eval()
    masks = weight_masks(model)
    for i in (0, 3, 7):  # what torch.nn.utils.prune.ln_structured leaves: half the rows masked, their biases zero
        layer = model[i]
        torch.nn.utils.prune.ln_structured(layer, "weight", amount=0.5, n=1, dim=0)
        masks[f"{i}.weight"] = layer.weight_mask.to(torch.bool)
        torch.nn.utils.prune.remove(layer, "weight")
        with torch.no_grad():
            layer.bias[~masks[f"{i}.weight"].reshape(layer.weight.shape[0], -1).any(dim=1)] = 0
    small = compact(model, masks)
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(small(x), masked_copy(model, masks)(x), atol=1e-5)
    assert [small[i].weight.shape[0] for i in (0, 3, 7)] == [4, 3, 5]
    assert sum(p.numel() for p in model.parameters()) == 3 * 8 * 9 + 8 + 8 * 6 * 9 + 6 + 24 * 10 + 10 + 10 * 4 + 4
    assert sum(p.numel() for p in small.parameters()) == 3 * 4 * 9 + 4 + 4 * 3 * 9 + 3 + 12 * 5 + 5 + 5 * 4 + 4


def test_rows_masked_under_sigmoid_or_with_a_bias_are_kept():
    model = conv_pool_linear().eval()
    model[1] = nn.Sigmoid()  # sigmoid(0) = 0.5: a zero filter still sends 0.5 on
    masks = weight_masks(model)
    masks["0.weight"][:4] = False
    with torch.no_grad():
        model[0].bias[:4] = 0
    with pytest.warns(UserWarning, match="no channel can be removed"):
        small = compact(model, masks)
    assert small[0].weight.shape[0] == 8
    relu = conv_pool_linear().eval()
    masks = weight_masks(relu)
    masks["0.weight"][:4] = False  # rows off, biases not zero: relu(bias) still reaches the next conv
    with pytest.warns(UserWarning, match="unread by every consumer or provably zero.*9.weight is refused"):
        assert compact(relu, masks)[0].weight.shape[0] == 8


def test_batchnormed_zero_rows_need_a_zero_affine():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, bias=False), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(),
                          nn.Linear(6 * 4, 3))  # 4×4 inputs: 2×2 positions per channel
    randomize(model).eval()
    masks = weight_masks(model)
    masks["0.weight"][:3] = False
    with pytest.warns(UserWarning):  # BN outputs β − γ·mean/σ from a zero channel: not removable
        assert compact(model, masks)[0].weight.shape[0] == 6
    with torch.no_grad():
        model[1].weight[:2] = 0
        model[1].bias[:2] = 0
    small = compact(model, masks)
    assert small[0].weight.shape[0] == 4 and small[1].num_features == 4 and small[4].in_features == 16
    x = torch.randn(4, 3, 4, 4)
    for mode in (False, True):
        small.train(mode)
        big = masked_copy(model, masks).train(mode)
        with torch.no_grad():
            assert torch.allclose(small(x), big(x), atol=1e-5)


def test_dense_masks_compact_silently_and_keep_every_channel():
    model, x = make("resnet20")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small = compact(model, weight_masks(model), x)
    assert sum(p.numel() for p in small.parameters()) == sum(p.numel() for p in model.parameters())
