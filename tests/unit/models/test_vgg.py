"""lth.models.vgg: channel scaling by width, parameter counts by hand, inputs too small for the pools."""

import pytest
import torch
from torch import nn

from lth.models import build_model


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_vgg11_width_8_parameter_count_by_hand():
    # channels 64/128/256/512 scaled by 8/64 → 8, 16, 32, 64; each conv: 9·in·out + out bias + 2·out BN
    # 3→8: 240, 8→16: 1200, 16→32: 4704, 32→32: 9312, 32→64: 18624, then 3 × 64→64: 37056; fc 64·10 + 10
    model = build_model("vgg11", (3, 16, 16), 10, width=8)
    assert count(model) == 240 + 1_200 + 4_704 + 9_312 + 18_624 + 3 * 37_056 + 650 == 145_898
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_channels_never_scale_below_one():
    model = build_model("vgg16", (1, 16, 16), 2, width=1)
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [1, 1, 2, 2, 4, 4, 4, 8, 8, 8, 8, 8, 8]


def test_refusals():
    with pytest.raises(ValueError, match="model 'vgg11': input size 8 is too small for 4 2x2 pools"):
        build_model("vgg11", (3, 8, 8), 10, width=8)
    with pytest.raises(ValueError, match="model 'vgg19': width must be a positive int, got 0"):
        build_model("vgg19", (3, 32, 32), 10, width=0)
