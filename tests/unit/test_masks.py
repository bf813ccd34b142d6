import re

import pytest
import torch
from torch import nn

from lth import masks as masks_lib
from lth.masks import MaskManager


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3))


def test_prunables_default_include_exclude():
    m = net()
    assert MaskManager(m).names == ["0.weight", "3.weight", "5.weight"]
    assert MaskManager(m, exclude="5").names == ["0.weight", "3.weight"]
    assert MaskManager(m, include=[r"3\.(weight|bias)"]).names == ["3.weight", "3.bias"]
    with pytest.raises(ValueError, match="no prunable parameters"):
        MaskManager(nn.Sequential(nn.BatchNorm1d(3)))
    with pytest.raises(ValueError, match="valid choices: zero, freeze_init"):
        MaskManager(m, mask0="nan")



def test_name_matches_a_parameter_or_the_module_owning_a_weight():
    assert masks_lib.name_matches("fc1", "fc1.weight") and masks_lib.name_matches("fc.*", "fc1.weight")
    assert not masks_lib.name_matches("fc1", "fc1.bias")  # a module name names its weight, not its bias
    assert masks_lib.name_matches(r"fc1\.bias", "fc1.bias") and masks_lib.name_matches(r"fc\d\.weight", "fc2.weight")
    assert not masks_lib.name_matches("fc", "fc1.weight")  # a full match, not a search
    assert masks_lib.name_matches(re.compile("block.0"), "block.0.weight")


def test_one_name_rule_for_include_exclude_and_overrides():
    from lth.pruning.select import match_overrides

    m = net()
    assert MaskManager(m, include=["3"]).names == ["3.weight"]
    assert MaskManager(m, include=["3", r"3\.bias"]).names == ["3.weight", "3.bias"]
    assert MaskManager(m, include=["3", r"3\.bias"], exclude=["3"]).names == ["3.bias"]
    assert match_overrides(["3.weight", "3.bias", "5.weight"], {"3": 0.1}) == {"3.weight": 0.1}
    assert match_overrides(["3.weight", "3.bias"], {r"3\.bias": 0.2, "3": 0.1}) == {"3.weight": 0.1, "3.bias": 0.2}


def test_masks_are_not_buffers_and_density():
    m = net()
    mm = MaskManager(m)
    assert not any("mask" in k for k in m.state_dict())
    assert mm.density() == 1.0 and mm.numel() == 18 + 32 + 12
    new = {n: v.clone() for n, v in mm.masks.items()}
    new["3.weight"][:2] = False  # 16 of 32 pruned
    new["0.weight"].view(-1)[:9] = False  # 9 of 18
    mm.set_masks(new)
    assert mm.density() == pytest.approx((62 - 25) / 62)
    assert mm.layer_density() == {"0.weight": 0.5, "3.weight": 0.5, "5.weight": 1.0}
    assert torch.all(m[3].weight[:2] == 0) and torch.all(m[3].weight[2:] != 0)


def test_apply_freeze_init_and_grad_masking():
    m = net()
    mm = MaskManager(m, mask0="freeze_init")
    w0 = m[5].weight.detach().clone()
    new = {n: v.clone() for n, v in mm.masks.items()}
    new["5.weight"][0] = False
    with torch.no_grad():
        m[5].weight.add_(1.0)
    mm.set_masks(new)
    assert torch.equal(m[5].weight[0], w0[0]) and torch.equal(m[5].weight[1:], w0[1:] + 1)
    m(torch.randn(2, 1, 4, 4)).sum().backward()
    mm.mask_grads()
    assert torch.all(m[5].weight.grad[0] == 0) and torch.any(m[5].weight.grad[1:] != 0)


def test_snapshots_and_state_dict_round_trip():
    m = net()
    mm = MaskManager(m)
    w0 = {k: v.clone() for k, v in mm.weights("init").items()}
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1)
    mm.snapshot("rewind")
    assert torch.equal(mm.weights("init")["3.weight"], w0["3.weight"])
    assert torch.equal(mm.weights("rewind")["3.weight"], w0["3.weight"] + 1)
    assert "1.running_mean" in mm.state("init")  # the whole state: buffers too
    new = {n: torch.rand_like(v, dtype=torch.float) > 0.5 for n, v in mm.masks.items()}
    mm.set_masks(new)
    other = MaskManager(net())
    other.load_state_dict(mm.state_dict())
    assert all(torch.equal(other.masks[n], new[n]) for n in new)
    assert torch.equal(other.weights("rewind")["5.weight"], mm.weights("rewind")["5.weight"])
    bad = MaskManager(nn.Sequential(nn.Linear(3, 3)))
    with pytest.raises(ValueError, match="does not match the model"):
        bad.load_state_dict(mm.state_dict())


def test_mask_file_is_bit_packed_versioned_and_checked(tmp_path):
    g = torch.Generator().manual_seed(0)
    masks = {"a.weight": torch.rand(300, 784, generator=g) > 0.8, "b.weight": torch.rand(7, generator=g) > 0.5}
    path = tmp_path / "mask.pt"
    masks_lib.save(masks, path)
    back = masks_lib.load(path)
    assert set(back) == set(masks) and all(torch.equal(back[n], masks[n]) and back[n].dtype == torch.bool for n in masks)
    n_params = 300 * 784 + 7
    assert path.stat().st_size <= n_params / 8 + 4096  # 1 bit per weight plus a fixed-size header
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="cannot read mask file"):
        masks_lib.load(path)
    torch.save({"format": "lth.mask", "version": 99, "masks": {}}, path)
    with pytest.raises(ValueError, match="version 99"):
        masks_lib.load(path)


def test_check_masks_names_and_shapes():
    shapes = {"a": torch.Size([2, 3])}
    with pytest.raises(ValueError, match=r"missing \['a'\], unexpected \['b'\]"):
        masks_lib.check_masks({"b": torch.ones(2, 3, dtype=torch.bool)}, shapes)
    with pytest.raises(ValueError, match=r"'a' has shape \(3, 2\), the parameter has \(2, 3\)"):
        masks_lib.check_masks({"a": torch.ones(3, 2, dtype=torch.bool)}, shapes)


def test_signs_are_plus_minus_one_with_zero_positive():
    t = torch.tensor([-2.0, -0.0, 0.0, 3.0, -1e-30], dtype=torch.float64)
    s = masks_lib.signs(t)
    assert s.tolist() == [-1.0, 1.0, 1.0, 1.0, -1.0] and s.dtype == torch.float64


def test_random_masks_like_keeps_each_layers_count_and_is_seeded():
    g = torch.Generator().manual_seed(1)
    src = {"a": torch.rand(30, 20, generator=g) < 0.3, "b": torch.rand(7, 3, 3, generator=g) < 0.8,
           "none": torch.zeros(4, dtype=torch.bool), "all": torch.ones(2, 5, dtype=torch.bool)}
    got = masks_lib.random_masks_like(src, 0)
    assert list(got) == list(src)
    for n, m in src.items():
        assert got[n].dtype == torch.bool and got[n].shape == m.shape and int(got[n].sum()) == int(m.sum()), n
    again, other = masks_lib.random_masks_like(src, 0), masks_lib.random_masks_like(src, 1)
    assert all(torch.equal(got[n], again[n]) for n in src)
    assert not torch.equal(got["a"], other["a"]) and not torch.equal(got["a"], src["a"])
    first = masks_lib.random_masks_like({"a": src["a"]}, 0)["a"]  # layers draw in dict order from one generator
    assert torch.equal(first, got["a"])


def test_check_state_names_and_shapes():
    expected = {"a": torch.zeros(2, 3), "b": torch.zeros(4)}
    masks_lib.check_state({"a": torch.ones(2, 3), "b": torch.ones(4)}, expected, "trained.pt")
    many = {f"x{i}": torch.zeros(1) for i in range(7)}
    with pytest.raises(ValueError, match=re.escape(
            "trained.pt does not match the model: missing ['b'], unexpected ['x0', 'x1', 'x2', 'x3', 'x4']")):
        masks_lib.check_state({"a": torch.zeros(2, 3), **many}, expected, "trained.pt")
    with pytest.raises(ValueError, match=re.escape(
            "snapshots.pt (init) does not match the model: 'a' has shape (3, 2), the model's has (2, 3)")):
        masks_lib.check_state({"a": torch.zeros(3, 2), "b": torch.zeros(4)}, expected, "snapshots.pt (init)")
