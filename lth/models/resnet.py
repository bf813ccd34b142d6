"""CIFAR ResNets of He et al. (as in open_lth): 3 stages of basic blocks, 1x1-conv+BN projection shortcuts."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from lth.models.base import MODELS
from lth.models.conv import image_shape
from lth.models.init import InitModule


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut (projection when the shape changes), then ReLU."""

    def __init__(self, f_in: int, f_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(f_in, f_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(f_out)
        self.conv2 = nn.Conv2d(f_out, f_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(f_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or f_in != f_out:
            self.shortcut = nn.Sequential(nn.Conv2d(f_in, f_out, 1, stride=stride, bias=False), nn.BatchNorm2d(f_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(InitModule):
    """conv3x3-BN-ReLU stem → 3 stages of (depth-2)/6 blocks at width, 2·width, 4·width → global avg pool → Linear."""

    def __init__(
        self, name: str, depth: int, input_shape: Sequence[int], num_classes: int, width: int, init: str
    ) -> None:
        super().__init__(init)
        if width < 1:
            raise ValueError(f"model '{name}': width must be a positive int, got {width}")
        c, _, _ = image_shape(name, input_shape)
        blocks_per_stage = (depth - 2) // 6
        self.conv = nn.Conv2d(c, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        blocks: list[nn.Module] = []
        f_in = width
        for stage in range(3):
            f_out = width * 2**stage
            for i in range(blocks_per_stage):
                blocks.append(BasicBlock(f_in, f_out, stride=2 if stage > 0 and i == 0 else 1))
                f_in = f_out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.output = nn.Linear(f_in, num_classes)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(F.relu(self.bn(self.conv(x))))
        return self.output(self.pool(out).flatten(1))


RESNET_DEPTHS = {"resnet20": 20, "resnet56": 56}


def _register(name: str) -> None:
    def build(input_shape: tuple[int, ...], num_classes: int, width: int = 16, init: str = "kaiming_normal") -> ResNet:
        return ResNet(name, RESNET_DEPTHS[name], input_shape, num_classes, width, init)

    build.__doc__ = f"CIFAR {name}; `width` = channels of the first stage (16 as published)."
    MODELS.register(name)(build)


for _name in RESNET_DEPTHS:
    _register(_name)
