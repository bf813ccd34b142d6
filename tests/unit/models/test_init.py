"""lth.models.init: each scheme's bias rule, the signed Kaiming constant exactly, BatchNorm reset, unknown names."""

import math

import pytest
import torch
from torch import nn

from lth.models import INITS, apply_init
from lth.models.init import InitModule


def test_registered_schemes():
    assert INITS.names() == ["glorot_normal", "glorot_uniform", "kaiming_normal", "kaiming_uniform",
                             "signed_kaiming_constant"]


@pytest.mark.parametrize("scheme, zero_bias", [("glorot_normal", True), ("glorot_uniform", True),
                                               ("kaiming_normal", True), ("kaiming_uniform", False),
                                               ("signed_kaiming_constant", True)])
def test_bias_rule(scheme, zero_bias):
    torch.manual_seed(0)
    layer = nn.Linear(50, 40)
    nn.init.constant_(layer.bias, 3.0)
    apply_init(layer, scheme)
    assert torch.all(layer.bias == 0).item() is zero_bias
    assert layer.bias.abs().max() <= 1 / math.sqrt(50)  # kaiming_uniform redraws it in ±1/√fan_in


def test_glorot_uniform_bound():
    torch.manual_seed(0)
    layer = nn.Linear(30, 20)
    apply_init(layer, "glorot_uniform")
    bound = math.sqrt(6 / 50)
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound


def test_signed_kaiming_constant_is_exactly_sqrt_2_over_fan_in():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 5)  # fan_in = 3·5·5 = 75
    apply_init(conv, "signed_kaiming_constant")
    value = math.sqrt(2 / 75)
    assert torch.allclose(conv.weight.abs(), torch.full_like(conv.weight, value))
    positives = (conv.weight > 0).float().mean().item()
    assert 0.4 < positives < 0.6  # 600 fair coin flips


def test_batchnorm_gets_weight_1_bias_0_and_fresh_statistics():
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    with torch.no_grad():
        net[1].weight.fill_(5.0)
        net[1].running_mean.fill_(2.0)
    net[1].num_batches_tracked.fill_(7)
    apply_init(net, "kaiming_normal")
    bn = net[1]
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0) and torch.all(bn.running_mean == 0)
    assert bn.num_batches_tracked.item() == 0


def test_unknown_scheme_names_the_choices():
    with pytest.raises(ValueError, match="unknown init 'xavier'; valid choices: glorot_normal, glorot_uniform"):
        apply_init(nn.Linear(2, 2), "xavier")
    with pytest.raises(ValueError, match="unknown init 'he'"):
        InitModule("he")


def test_init_module_redraws_with_its_scheme():
    class Net(InitModule):
        def __init__(self):
            super().__init__("signed_kaiming_constant")
            self.fc = nn.Linear(8, 3)

    torch.manual_seed(1)
    net = Net()
    net.reset_parameters()
    assert net.init_scheme == "signed_kaiming_constant"
    assert torch.allclose(net.fc.weight.abs(), torch.full((3, 8), 0.5))  # √(2/8)
