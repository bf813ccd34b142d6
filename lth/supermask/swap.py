"""The module swap: Linear/Conv layers → supermask layers, and the learned supermask as an ordinary mask dict."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from lth.masks import find_prunables
from lth.supermask.layers import METHODS, SUPERMASK_LAYERS, SupermaskLayer


def method_options(method: str) -> list[str]:
    """The keyword options supermask method `method` accepts."""
    METHODS.check(method)
    params = list(inspect.signature(METHODS[method].__init__).parameters.values())[1:]
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _supermask_type(name: str, layer: nn.Module) -> type[SupermaskLayer]:
    if isinstance(layer, SupermaskLayer):
        raise ValueError(f"layer '{name}' is already a supermask layer ({type(layer).__name__})")  # noqa: TRY004
    for base, swap in SUPERMASK_LAYERS.items():
        if isinstance(layer, base):
            if type(layer).forward is not base.forward:
                raise ValueError(
                    f"layer '{name}' ({type(layer).__name__}) overrides {base.__name__}.forward; a supermask layer "
                    f"would replace that forward (exclude it with exclude=[...])"
                )
            return swap
    kinds = ", ".join(t.__name__ for t in SUPERMASK_LAYERS)
    raise ValueError(f"layer '{name}' is a {type(layer).__name__}; supermask layers replace only {kinds}")


def to_supermask(
    model: nn.Module,
    method: str,
    k: float | None = None,
    *,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    seed: int | None = None,
    **options: Any,
) -> nn.Module:
    """Swap `model`'s prunable Linear/Conv layers (default: all) for supermask layers, in place; returns the model.

    `k` is edge-popup's fraction kept; `options` are the method's other options (bernoulli: `rescale`, `eval_mask`).
    Weights and biases are frozen (the same Parameter objects, requires_grad False); only `<layer>.scores` train.
    Scores are drawn from a generator seeded by `seed` (the global RNG if None). A model that is itself a single
    layer is returned as a new module.
    """
    valid = method_options(method)
    if k is not None:
        options = {**options, "k": k}
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"supermask method '{method}' has no option(s) {unknown}; valid options: {valid}")
    parametrized = [n for n, m in model.named_modules() if parametrize.is_parametrized(m)]
    if parametrized:
        raise ValueError(f"layers {parametrized} have parametrizations; remove them before swapping in supermask layers")
    layer_names = []
    for pname in find_prunables(model, include, exclude):
        if pname != "weight" and not pname.endswith(".weight"):
            raise ValueError(f"prunable '{pname}' is not a layer's weight; supermask layers mask Linear/Conv weights")
        layer_names.append(pname[: -len(".weight")] if "." in pname else "")
    if not layer_names:
        raise ValueError(f"the model has no Linear/Conv layer to swap (include={include!r}, exclude={exclude!r})")
    swaps = {name: _supermask_type(name, model.get_submodule(name)) for name in layer_names}
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    for name, cls in swaps.items():
        layer = model.get_submodule(name)
        new = cls.from_layer(layer, METHODS[method](**options), generator)
        if name == "":
            return new
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, new)
    return model


def supermask_layers(model: nn.Module) -> dict[str, SupermaskLayer]:
    """Module name → supermask layer, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, SupermaskLayer)}


@torch.no_grad()
def supermask_masks(model: nn.Module) -> dict[str, Tensor]:
    """The learned supermask as an ordinary mask: `<layer>.weight` → BoolTensor (CPU), the original weight names."""
    layers = supermask_layers(model)
    if not layers:
        raise ValueError("the model has no supermask layers (swap them in with lth.supermask.to_supermask)")
    return {(f"{n}.weight" if n else "weight"): layer.hard_mask().cpu() for n, layer in layers.items()}
