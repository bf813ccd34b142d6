"""Conv-2/4/6 of Frankle & Carbin: 3x3 conv blocks with 2x2 max-pool, then fc 256, 256, num_classes."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from lth.models.base import MODELS
from lth.models.init import InitModule

Plan = Sequence[int | str]  # channel counts, "M" = 2x2 max-pool

CONV_PLANS: dict[str, Plan] = {
    "conv2": (64, 64, "M"),
    "conv4": (64, 64, "M", 128, 128, "M"),
    "conv6": (64, 64, "M", 128, 128, "M", 256, 256, "M"),
}


def image_shape(name: str, input_shape: Sequence[int]) -> tuple[int, int, int]:
    """`input_shape` as (C, H, W), or ValueError if it is not an image shape."""
    if len(input_shape) != 3:
        raise ValueError(f"model '{name}' needs an image input_shape (C, H, W); got {tuple(input_shape)}")
    c, h, w = (int(s) for s in input_shape)
    return c, h, w


def conv_stack(plan: Plan, in_channels: int, batchnorm: bool) -> tuple[nn.Sequential, int, int]:
    """3x3 same-padding convs (+BN) + ReLU per plan entry, max-pool per "M"; returns (layers, channels, pools)."""
    layers: list[nn.Module] = []
    channels, pools = in_channels, 0
    for entry in plan:
        if entry == "M":
            layers.append(nn.MaxPool2d(2))
            pools += 1
            continue
        layers.append(nn.Conv2d(channels, int(entry), 3, padding=1))
        if batchnorm:
            layers.append(nn.BatchNorm2d(int(entry)))
        layers.append(nn.ReLU())
        channels = int(entry)
    return nn.Sequential(*layers), channels, pools


def pooled_size(name: str, size: int, pools: int) -> int:
    """Spatial size after `pools` 2x2 max-pools, or ValueError if the input is too small."""
    out = size // 2**pools
    if out < 1:
        raise ValueError(f"model '{name}': input size {size} is too small for {pools} 2x2 pools")
    return out


class ConvNet(InitModule):
    """Conv blocks (`plan`) → flatten → fc layers with ReLU → output Linear."""

    def __init__(
        self,
        name: str,
        plan: Plan,
        input_shape: Sequence[int],
        num_classes: int,
        fc: Sequence[int] = (256, 256),
        init: str = "glorot_normal",
    ) -> None:
        super().__init__(init)
        c, h, w = image_shape(name, input_shape)
        self.features, channels, pools = conv_stack(plan, c, batchnorm=False)
        widths = [channels * pooled_size(name, h, pools) * pooled_size(name, w, pools), *(int(f) for f in fc)]
        hidden: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            hidden += [nn.Linear(a, b), nn.ReLU()]
        self.classifier = nn.Sequential(*hidden)
        self.output = nn.Linear(widths[-1], num_classes)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.classifier(self.features(x).flatten(1)))


def _register(name: str) -> None:
    def build(
        input_shape: tuple[int, ...], num_classes: int, fc: Sequence[int] = (256, 256), init: str = "glorot_normal"
    ) -> ConvNet:
        return ConvNet(name, CONV_PLANS[name], input_shape, num_classes, fc, init)

    build.__doc__ = f"{name} of Frankle & Carbin on (C, H, W) images: conv plan {CONV_PLANS[name]}, fc 256, 256."
    MODELS.register(name)(build)


for _name in CONV_PLANS:
    _register(_name)
