"""lth.models.conv: Conv-2/4/6 sizes on small images, the conv_stack / pooled_size / image_shape helpers."""

import pytest
import torch
from torch import nn

from lth.models import build_model
from lth.models.conv import conv_stack, image_shape, pooled_size


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_conv2_parameter_count_by_hand():
    # 1→64 (9·64 + 64), 64→64 (9·64·64 + 64), pool 4×4 → 2×2: 256 features, fc 8 (256·8 + 8), out 8·3 + 3
    model = build_model("conv2", (1, 4, 4), 3, fc=[8])
    assert count(model) == 640 + 36_928 + 2_056 + 27 == 39_651
    assert model(torch.randn(2, 1, 4, 4)).shape == (2, 3)


def test_odd_sizes_floor_at_each_pool():
    # conv4 on 1×5×7: two pools → 1×1 spatial, 128 features into fc
    assert build_model("conv4", (1, 5, 7), 2, fc=[]).output.in_features == 128


def test_conv_stack():
    layers, channels, pools = conv_stack((2, "M", 3), 1, batchnorm=True)
    assert [type(m) for m in layers] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.Conv2d,
                                         nn.BatchNorm2d, nn.ReLU]
    assert (channels, pools) == (3, 1)
    assert layers[4].padding == (1, 1) and layers[4].kernel_size == (3, 3)
    assert nn.BatchNorm2d not in {type(m) for m in conv_stack((2,), 1, batchnorm=False)[0]}


def test_shape_helpers_refuse_what_cannot_work():
    assert image_shape("conv2", [3, 32, 30]) == (3, 32, 30)
    with pytest.raises(ValueError, match=r"model 'conv2' needs an image input_shape \(C, H, W\); got \(40,\)"):
        image_shape("conv2", (40,))
    assert pooled_size("conv6", 8, 3) == 1
    with pytest.raises(ValueError, match="model 'conv6': input size 4 is too small for 3 2x2 pools"):
        build_model("conv6", (1, 4, 4), 10)
