"""CIFAR VGG (as in open_lth): 3x3 conv+BN+ReLU blocks, global average pool, one Linear output layer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lth.models.base import MODELS
from lth.models.conv import Plan, conv_stack, image_shape, pooled_size
from lth.models.init import InitModule

VGG_PLANS: dict[str, Plan] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512),
}


class VGG(InitModule):
    """Conv+BN+ReLU stack (`plan`, channels scaled by width/64) → global avg pool → output Linear."""

    def __init__(
        self, name: str, plan: Plan, input_shape: Sequence[int], num_classes: int, width: int, init: str
    ) -> None:
        super().__init__(init)
        if width < 1:
            raise ValueError(f"model '{name}': width must be a positive int, got {width}")
        c, h, w = image_shape(name, input_shape)
        scaled = [e if e == "M" else max(1, int(e) * width // 64) for e in plan]
        self.features, channels, pools = conv_stack(scaled, c, batchnorm=True)
        pooled_size(name, min(h, w), pools)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.output = nn.Linear(channels, num_classes)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.pool(self.features(x)).flatten(1))


def _register(name: str) -> None:
    def build(input_shape: tuple[int, ...], num_classes: int, width: int = 64, init: str = "kaiming_normal") -> VGG:
        return VGG(name, VGG_PLANS[name], input_shape, num_classes, width, init)

    build.__doc__ = f"CIFAR {name} with BatchNorm; `width` = channels of the first block (64 as published)."
    MODELS.register(name)(build)


for _name in VGG_PLANS:
    _register(_name)
