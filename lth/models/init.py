"""Init schemes for Linear/Conv layers (registry `INITS`) and the base class of registry models."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from lth.registry import Registry

Layer = nn.Linear | _ConvNd
INITS: Registry[Callable[[Layer], None]] = Registry("init")

WEIGHTED_LAYERS = (nn.Linear, _ConvNd)


def _zero_bias(layer: Layer) -> None:
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


@INITS.register("glorot_normal")
def glorot_normal(layer: Layer) -> None:
    """Gaussian Glorot: N(0, 2 / (fan_in + fan_out)), bias 0 (Frankle & Carbin)."""
    nn.init.xavier_normal_(layer.weight)
    _zero_bias(layer)


@INITS.register("glorot_uniform")
def glorot_uniform(layer: Layer) -> None:
    """Uniform Glorot: U(±sqrt(6 / (fan_in + fan_out))), bias 0."""
    nn.init.xavier_uniform_(layer.weight)
    _zero_bias(layer)


@INITS.register("kaiming_normal")
def kaiming_normal(layer: Layer) -> None:
    """He normal: N(0, 2 / fan_in), bias 0 (open_lth's CIFAR default)."""
    nn.init.kaiming_normal_(layer.weight)
    _zero_bias(layer)


@INITS.register("kaiming_uniform")
def kaiming_uniform(layer: Layer) -> None:
    """PyTorch's default Linear/Conv init, bias included: U(±1/sqrt(fan_in)) for both."""
    layer.reset_parameters()


@INITS.register("signed_kaiming_constant")
def signed_kaiming_constant(layer: Layer) -> None:
    """Random signs times sqrt(2 / fan_in) (Ramanujan et al.'s signed Kaiming constant), bias 0."""
    fan_in = layer.weight[0].numel()
    with torch.no_grad():
        layer.weight.bernoulli_(0.5).mul_(2).sub_(1).mul_(math.sqrt(2.0 / fan_in))
    _zero_bias(layer)


def check_init(scheme: str) -> None:
    """Raise ValueError naming the valid init schemes if `scheme` is unknown."""
    INITS.check(scheme)


def apply_init(module: nn.Module, scheme: str) -> None:
    """Apply `scheme` to every Linear/Conv layer inside `module`; BatchNorm to weight 1, bias 0, fresh running stats."""
    check_init(scheme)
    init = INITS[scheme]
    for layer in module.modules():
        if isinstance(layer, WEIGHTED_LAYERS):
            init(layer)
        elif isinstance(layer, _BatchNorm):
            layer.reset_parameters()


class InitModule(nn.Module):
    """A model whose `reset_parameters()` applies its init scheme (`init_scheme`) to all its layers."""

    def __init__(self, init: str) -> None:
        super().__init__()
        check_init(init)
        self.init_scheme = init

    def reset_parameters(self) -> None:
        """Draw fresh weights from this model's init scheme (uses the global RNG)."""
        apply_init(self, self.init_scheme)
