"""Fully connected networks: `mlp` (optionally residual) and `lenet_300_100`."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from lth.models.base import MODELS
from lth.models.init import InitModule
from lth.registry import Registry

ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation")
ACTIVATIONS.register("relu")(nn.ReLU)
ACTIVATIONS.register("tanh")(nn.Tanh)
ACTIVATIONS.register("gelu")(nn.GELU)
ACTIVATIONS.register("sigmoid")(nn.Sigmoid)
ACTIVATIONS.register("identity")(nn.Identity)


class MLP(InitModule):
    """Flatten → hidden Linear+activation layers (identity skips where widths match, if residual) → output Linear."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: Sequence[int] = (300, 100),
        init: str = "glorot_normal",
        residual: bool = False,
        activation: str = "relu",
    ) -> None:
        super().__init__(init)
        ACTIVATIONS.check(activation)
        widths = [in_features, *(int(h) for h in hidden)]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.skips = [bool(residual) and a == b for a, b in itertools.pairwise(widths)]
        self.activation = ACTIVATIONS[activation]()
        self.output = nn.Linear(widths[-1], num_classes)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for layer, skip in zip(self.hidden, self.skips):
            out = self.activation(layer(h))
            h = out + h if skip else out
        return self.output(h)


@MODELS.register("mlp")
def mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: Sequence[int] = (300, 100),
    init: str = "glorot_normal",
    residual: bool = False,
    activation: str = "relu",
) -> MLP:
    """MLP on the flattened input; `residual=True` adds h + act(W h + b) where a hidden layer keeps its width."""
    return MLP(math.prod(input_shape), num_classes, hidden, init, residual, activation)


@MODELS.register("lenet_300_100")
def lenet_300_100(input_shape: tuple[int, ...], num_classes: int, init: str = "glorot_normal") -> MLP:
    """LeNet-300-100 of Frankle & Carbin: fc 300, 100, num_classes."""
    return MLP(math.prod(input_shape), num_classes, (300, 100), init)
