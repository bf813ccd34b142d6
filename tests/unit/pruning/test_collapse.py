"""Layer collapse: empty layers and lost input→output paths found on crafted masks; refused or recorded."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lth.models import build_model
from lth.pruning.collapse import check_collapse, empty_layers, find_collapse, has_path


def mlp():
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def full(net):
    return {n: torch.ones_like(p, dtype=torch.bool) for n, p in net.named_parameters() if n.endswith("weight")}


def test_a_chain_with_kept_weights_but_no_path_is_collapsed():
    net, x = mlp(), torch.zeros(1, 4)
    masks = {n: torch.zeros_like(m) for n, m in full(net).items()}
    masks["0.weight"][0, 2] = True  # hidden unit 0 reads input 2
    masks["2.weight"][1, 1] = True  # output 1 reads hidden unit 1: nothing reaches it
    report = find_collapse(net, masks, x)
    assert report.empty == [] and report.path is False and report.collapsed
    assert report.density == pytest.approx(2 / 18)
    masks["2.weight"][1, 0] = True  # now output 1 reads hidden unit 0
    assert has_path(net, masks, x) is True
    assert not find_collapse(net, masks, x).collapsed


def test_negative_weights_and_biases_do_not_hide_or_fake_a_path():
    net, x = mlp(), torch.zeros(1, 4)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(-1.0)  # the real network would output only its bias; the check looks at the masks alone
    masks = full(net)
    assert has_path(net, masks, x) is True
    masks["0.weight"][:] = False
    assert has_path(net, masks, x) is False  # biases alone are no path
    assert empty_layers(masks) == ["0.weight"]


def test_residual_mlp_keeps_a_path_around_an_empty_layer():
    net = build_model("mlp", (4,), 2, hidden=[3, 3], residual=True)
    masks = full(net)
    masks["hidden.1.weight"][:] = False
    report = find_collapse(net, masks, torch.zeros(1, 4))
    assert report.empty == ["hidden.1.weight"] and report.path is True and report.collapsed


def test_conv_chain_reachability_follows_channels():
    net = build_model("cnn1d", (40,), 10, channels=2)
    x = torch.zeros(1, 40)
    masks = full(net)
    names = list(masks)  # features.0, features.2, features.4, output
    masks[names[1]][:, 0] = False  # the second conv never reads channel 0 of the first …
    masks[names[0]][1] = False  # … and the first conv's channel 1 reads nothing
    assert has_path(net, masks, x) is False
    masks[names[0]][1, 0, 0] = True
    assert has_path(net, masks, x) is True


def test_check_collapse_refuses_naming_layer_and_density_or_records():
    net, x = mlp(), torch.zeros(1, 4)
    masks = full(net)
    masks["2.weight"][:] = False
    with pytest.raises(ValueError, match=r"round 3: layer collapse at density 0\.6667: layer '2\.weight' keep no "
                                         r"weight.*pruning\.allow_collapse=true"):
        check_collapse(net, masks, x, allow=False, what="round 3")
    fields = check_collapse(net, masks, x, allow=True)
    assert fields["layer_collapse"] is True and fields["collapsed_layers"] == ["2.weight"]
    assert fields["kept_path"] is False
    assert check_collapse(net, full(net), x, allow=False) == {}


def test_layers_the_check_cannot_follow_report_only_empty_layers():
    net = mlp()

    class Odd(nn.Linear):
        pass

    net[2] = Odd(3, 2)
    assert has_path(net, full(net), torch.zeros(1, 4)) is None
    assert find_collapse(net, full(net), torch.zeros(1, 4)).collapsed is False
