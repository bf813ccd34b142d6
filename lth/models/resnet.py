"""CIFAR ResNets of He et al. (as in open_lth): 3 stages of basic blocks, 1x1-conv+BN projection shortcuts; and a
small 1-D residual CNN for MNIST-1D (`resnet1d`) made of the same blocks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from lth.models.base import MODELS
from lth.models.conv import image_shape
from lth.models.init import InitModule

LAYERS = {1: (nn.Conv1d, nn.BatchNorm1d), 2: (nn.Conv2d, nn.BatchNorm2d)}  # spatial dims → (conv, BatchNorm)


class BasicBlock(nn.Module):
    """conv3-BN-ReLU-conv3-BN plus shortcut (projection when the shape changes), then ReLU; `dims` 2 (images) or 1."""

    def __init__(self, f_in: int, f_out: int, stride: int, dims: int = 2) -> None:
        super().__init__()
        conv, norm = LAYERS[dims]
        self.conv1 = conv(f_in, f_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(f_out)
        self.conv2 = conv(f_out, f_out, 3, padding=1, bias=False)
        self.bn2 = norm(f_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or f_in != f_out:
            self.shortcut = nn.Sequential(conv(f_in, f_out, 1, stride=stride, bias=False), norm(f_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Residual(InitModule):
    """stem conv-BN-ReLU → blocks → pool → flatten → Linear (`conv`, `bn`, `blocks`, `pool`, `output` set by subclasses)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(F.relu(self.bn(self.conv(x))))
        return self.output(self.pool(out).flatten(1))


class ResNet(Residual):
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


RESNET_DEPTHS = {"resnet20": 20, "resnet56": 56}


def _register(name: str) -> None:
    def build(input_shape: tuple[int, ...], num_classes: int, width: int = 16, init: str = "kaiming_normal") -> ResNet:
        return ResNet(name, RESNET_DEPTHS[name], input_shape, num_classes, width, init)

    build.__doc__ = f"CIFAR {name}; `width` = channels of the first stage (16 as published)."
    MODELS.register(name)(build)


for _name in RESNET_DEPTHS:
    _register(_name)


class ResNet1d(Residual):
    """Conv1d k5/s2 stem-BN-ReLU → basic blocks (the first of each new width strided 2, with a 1x1 projection) →
    global average pool → Linear; (B, L) inputs are read as one channel."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, widths: Sequence[int], init: str) -> None:
        super().__init__(init)
        if len(input_shape) not in (1, 2):
            raise ValueError(f"model 'resnet1d' needs input_shape (C, L) or (L,); got {tuple(input_shape)}")
        widths = [int(w) for w in widths]
        if not widths or min(widths) < 1:
            raise ValueError(f"model 'resnet1d': widths must be positive ints (one per block), got {widths}")
        in_channels = int(input_shape[0]) if len(input_shape) == 2 else 1
        self.conv = nn.Conv1d(in_channels, widths[0], 5, stride=2, padding=2, bias=False)
        self.bn = nn.BatchNorm1d(widths[0])
        f_in, blocks = widths[0], []
        for f_out in widths:
            blocks.append(BasicBlock(f_in, f_out, stride=1 if f_out == f_in else 2, dims=1))
            f_in = f_out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.output = nn.Linear(f_in, num_classes)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.unsqueeze(1) if x.dim() == 2 else x)


@MODELS.register("resnet1d")
def resnet1d(input_shape: tuple[int, ...], num_classes: int, widths: Sequence[int] = (32, 32, 64, 64),
             init: str = "kaiming_normal") -> ResNet1d:
    """MNIST-1D residual CNN: stem (`widths[0]` channels) + one basic block per entry of `widths`, avg pool, Linear."""
    return ResNet1d(input_shape, num_classes, widths, init)
