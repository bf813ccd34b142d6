"""FLOPs and parameter counts of dense, masked and compacted models, from forward hooks on Linear/Conv layers.

Convention (Liu et al.'s): a FLOP is one multiply-accumulate (MAC) of a Linear/Conv weight with an input, counted
per example; biases, BatchNorm, activations and pooling are not counted. A weight is used once per output position
(Linear: once per row of the input; Conv: once per output pixel, zero padding included), so a layer costs
positions × numel(weight) dense and positions × (kept weights) non-zero. Layers called twice count twice; weights
used outside a module call (functional code) are not seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

from lth.structured.layout import WEIGHTED, weight_of

COUNT_KEYS = ("flops_dense", "flops_nonzero", "params_dense", "params_nonzero")


def example_batch(model: nn.Module, input: Tensor | Sequence[int]) -> Tensor:
    """`input` itself, or a batch of one zero example of per-sample shape `input`, on the model's device and dtype."""
    if isinstance(input, Tensor):
        return input
    p = next(model.parameters())
    return torch.zeros((1, *(int(s) for s in input)), device=p.device, dtype=p.dtype)


@torch.no_grad()
def flops(model: nn.Module, input: Tensor | Sequence[int], masks: Mapping[str, Tensor] | None = None,
          per_layer: bool = False) -> dict[str, Any]:
    """Per-example FLOPs (= MACs) and parameter counts, dense and non-zero; `input`: a batch or a per-sample shape.

    Returns {flops_dense, flops_nonzero, params_dense, params_nonzero} (+ "layers": weight name → its two FLOP counts
    if `per_layer`). Non-zero = kept by `masks` for the masked weights, else the non-zero entries of Linear/Conv
    weights; params count every parameter (biases and BatchNorm too), params_nonzero less the pruned/zero weights.
    """
    x = example_batch(model, input)
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"input must be a batch with at least one example, got shape {tuple(x.shape)}")
    masks = masks or {}
    if masks:
        from lth.structured.compact import check_masks

        check_masks(model, masks)
    names = {m: weight_of(n) for n, m in model.named_modules() if isinstance(m, WEIGHTED)}
    layers: dict[str, list[int]] = {}

    def kept(mod: nn.Module) -> int:
        w = names[mod]
        return int(masks[w].sum()) if w in masks else int(torch.count_nonzero(mod.weight))

    def hook(mod: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
        if isinstance(mod, _ConvNd) and mod.transposed:
            positions = inputs[0].numel() // mod.in_channels
        else:
            positions = out.numel() // mod.weight.shape[0]
        acc = layers.setdefault(names[mod], [0, 0])
        acc[0] += positions * mod.weight.numel()
        acc[1] += positions * kept(mod)

    modes = {m: m.training for m in model.modules()}
    handles = [m.register_forward_hook(hook) for m in names]
    try:
        model.eval()  # no BatchNorm statistics updates, no dropout
        model(x)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    batch = int(x.shape[0])
    params_dense, params_nonzero = _param_counts(model, masks, set(names.values()))
    out: dict[str, Any] = {
        "flops_dense": sum(a[0] for a in layers.values()) // batch,
        "flops_nonzero": sum(a[1] for a in layers.values()) // batch,
        "params_dense": params_dense,
        "params_nonzero": params_nonzero,
    }
    if per_layer:
        out["layers"] = {w: {"flops_dense": a[0] // batch, "flops_nonzero": a[1] // batch} for w, a in layers.items()}
    return out


def _param_counts(model: nn.Module, masks: Mapping[str, Tensor], weights: set[str]) -> tuple[int, int]:
    """Parameters, and those not pruned by `masks` (or, for unmasked Linear/Conv `weights`, non-zero)."""
    dense = nonzero = 0
    for n, p in model.named_parameters():
        dense += p.numel()
        if n in masks:
            nonzero += int(masks[n].sum())
        elif n in weights:
            nonzero += int(torch.count_nonzero(p))
        else:
            nonzero += p.numel()
    return dense, nonzero


def round_counts(model: nn.Module, masks: Mapping[str, Tensor], input: Tensor | Sequence[int],
                 compacted: bool = False) -> dict[str, int]:
    """The counts a round records: `flops` of the masked model, plus flops_compact / params_compact if `compacted`."""
    from lth.structured.compact import compact

    x = example_batch(model, input)
    out = {k: v for k, v in flops(model, x, masks).items() if k in COUNT_KEYS}
    if compacted:
        small = flops(compact(model, masks, x), x)
        out["flops_compact"], out["params_compact"] = small["flops_dense"], small["params_dense"]
    return out
