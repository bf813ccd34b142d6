"""1-D CNN for MNIST-1D, shaped like the mnist1d package's ConvBase."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lth.models.base import MODELS
from lth.models.init import InitModule

# (kernel, stride, padding) of the three conv layers, as in mnist1d's ConvBase
CONV1D_LAYERS = ((5, 2, 1), (3, 2, 1), (3, 2, 1))


class CNN1d(InitModule):
    """Three strided Conv1d+ReLU layers → flatten → output Linear; (B, L) inputs are read as one channel."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: int, init: str) -> None:
        super().__init__(init)
        if len(input_shape) not in (1, 2):
            raise ValueError(f"model 'cnn1d' needs input_shape (C, L) or (L,); got {tuple(input_shape)}")
        in_channels = int(input_shape[0]) if len(input_shape) == 2 else 1
        length = int(input_shape[-1])
        layers: list[nn.Module] = []
        for kernel, stride, padding in CONV1D_LAYERS:
            layers += [nn.Conv1d(in_channels, channels, kernel, stride=stride, padding=padding), nn.ReLU()]
            in_channels = channels
            length = (length + 2 * padding - kernel) // stride + 1
        if length < 1:
            raise ValueError(f"model 'cnn1d': input length {input_shape[-1]} is too short for its 3 strided convs")
        self.features = nn.Sequential(*layers)
        self.output = nn.Linear(channels * length, num_classes)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        return self.output(self.features(x).flatten(1))


@MODELS.register("cnn1d")
def cnn1d(input_shape: tuple[int, ...], num_classes: int, channels: int = 25, init: str = "kaiming_uniform") -> CNN1d:
    """MNIST-1D CNN: conv1d k5/s2, k3/s2, k3/s2 (padding 1, `channels` each) + ReLU, then Linear (125 → classes)."""
    return CNN1d(input_shape, num_classes, channels, init)
