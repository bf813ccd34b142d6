"""The model registry (`MODELS`, `build_model`) and seeded re-initialisation (`reinitialize`)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any

import torch
from torch import nn

from lth.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def model_options(name: str) -> list[str]:
    """The keyword options model `name` accepts (besides input_shape and num_classes)."""
    MODELS.check(name)
    params = list(inspect.signature(MODELS[name]).parameters.values())[2:]
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **kwargs: Any) -> nn.Module:
    """Build registered model `name` for per-sample `input_shape` (channels first) and `num_classes` outputs."""
    options = model_options(name)
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise ValueError(f"model '{name}' has no option {', '.join(map(repr, unknown))}; valid options: {options}")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return MODELS[name](tuple(int(s) for s in input_shape), int(num_classes), **kwargs)


def _reset(module: nn.Module) -> None:
    # A module with its own reset_parameters owns its whole subtree (registry models apply their scheme there).
    if callable(getattr(module, "reset_parameters", None)):
        module.reset_parameters()
        return
    for child in module.children():
        _reset(child)


def reinitialize(model: nn.Module, seed: int) -> None:
    """Redraw `model`'s weights in place from its own initialiser, seeded by `seed`; global RNG states are kept."""
    devices = sorted({t.device for t in chain(model.parameters(), model.buffers()) if t.device.type != "cpu"}, key=str)
    types = {d.type for d in devices}
    if len(types) > 1:
        raise ValueError(f"reinitialize needs a model on one device type; found {sorted(types)}")
    device_type = types.pop() if types else None
    indices = [d.index or 0 for d in devices]
    with torch.random.fork_rng(devices=indices, device_type=device_type):
        torch.default_generator.manual_seed(seed)
        if device_type is not None:
            module = torch.get_device_module(device_type)
            for i in indices:
                with module.device(i):
                    module.manual_seed(seed)
        _reset(model)
