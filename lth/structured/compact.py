"""Compaction: the masked model rebuilt physically smaller, and the way back (a small model's state in the big shapes).

A unit of a removable producer is dropped when no consumer reads it (every weight of its input slice is masked) —
what `lth.pruning.select_neurons` leaves behind. The compacted model is a copy of the model whose pruned weights are
zero (mask applied) and whose Linear/Conv/BatchNorm layers are sliced: the dropped rows/filters with their biases and
BatchNorm entries, and the consumers' matching input columns/channels. It computes what the masked model computes.
A layer that loses every unit keeps one (its outgoing weights are all masked, so it changes nothing): torch has no
zero-width conv.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

from lth import masks as masks_lib
from lth.structured.layout import UnitLayout, module_of, unit_layout

Masks = Mapping[str, Tensor]


@dataclass
class Plan:
    """Index tensors that slice each module: rows (dim 0: units, BatchNorm features) and cols (dim 1: inputs)."""

    layout: UnitLayout
    kept: dict[str, Tensor] = field(default_factory=dict)  # producer weight → kept-unit flags
    rows: dict[str, Tensor] = field(default_factory=dict)  # module name → kept indices along dim 0
    cols: dict[str, Tensor] = field(default_factory=dict)  # module name → kept indices along dim 1


def check_masks(model: nn.Module, masks: Masks) -> None:
    """Raise ValueError unless every mask names a parameter of `model` with its shape (`lth.masks.check_masks`)."""
    params = dict(model.named_parameters())
    unknown = [n for n in masks if n not in params]
    if unknown:
        raise ValueError(f"mask '{unknown[0]}' names no parameter of the model")
    masks_lib.check_masks(masks, {n: params[n].shape for n in masks})


def kept_units(masks: Masks, layout: UnitLayout) -> dict[str, Tensor]:
    """Per removable producer, 1-D flags of the units some consumer still reads (all alive rows if none reads it)."""
    out = {}
    for p in layout.removable:
        n = masks[p].shape[0]
        cons = layout.consumers.get(p, [])
        if cons:
            keep = torch.zeros(n, dtype=torch.bool, device=masks[p].device)
            for c in cons:
                m = masks[c].to(torch.bool)
                keep |= m.reshape(m.shape[0], n, -1).any(dim=2).any(dim=0).to(keep.device)
        else:
            keep = masks[p].to(torch.bool).reshape(n, -1).any(dim=1)
        if not keep.any():
            keep[0] = True
        out[p] = keep
    return out


def plan(model: nn.Module, masks: Masks, example_input: Tensor | None = None) -> Plan:
    """How compaction slices each module of `model` under `masks`."""
    check_masks(model, masks)
    layout = unit_layout(model, example_input, list(masks))
    result = Plan(layout, kept_units(masks, layout))
    for p, keep in result.kept.items():
        if bool(keep.all()):
            continue
        idx = torch.nonzero(keep).reshape(-1).cpu()
        result.rows[module_of(p)] = idx
        for bn in layout.norms.get(p, []):
            result.rows[bn] = idx
        for c in layout.consumers.get(p, []):
            group = masks[c].shape[1] // keep.numel()
            result.cols[module_of(c)] = (idx.view(-1, 1) * group + torch.arange(group).view(1, -1)).reshape(-1)
    return result


def _slice(t: Tensor, rows: Tensor | None, cols: Tensor | None) -> Tensor:
    if rows is not None and t.dim() >= 1:
        t = t.index_select(0, rows.to(t.device))
    if cols is not None and t.dim() >= 2:
        t = t.index_select(1, cols.to(t.device))
    return t.clone()


_SIZE_ATTRS = {nn.Linear: ("out_features", "in_features"), _ConvNd: ("out_channels", "in_channels")}


@torch.no_grad()
def _slice_module(mod: nn.Module, rows: Tensor | None, cols: Tensor | None) -> None:
    """Slice every parameter and buffer of `mod` in place (a Linear/Conv weight on dims 0 and 1, others on dim 0)."""
    for name, p in list(mod.named_parameters(recurse=False)):
        setattr(mod, name, nn.Parameter(_slice(p.data, rows, cols), requires_grad=p.requires_grad))
    for name, b in list(mod.named_buffers(recurse=False)):
        if b is not None and b.dim() >= 1:
            setattr(mod, name, _slice(b, rows, None))
    for kind, (out_attr, in_attr) in _SIZE_ATTRS.items():
        if isinstance(mod, kind):
            setattr(mod, out_attr, int(mod.weight.shape[0]))
            setattr(mod, in_attr, int(mod.weight.shape[1]))
    if hasattr(mod, "num_features") and rows is not None:
        mod.num_features = int(rows.numel())


@torch.no_grad()
def build(model: nn.Module, masks: Masks, how: Plan) -> nn.Module:
    """A copy of `model` with `masks` applied (pruned weights zero), sliced as `how` says."""
    small = copy.deepcopy(model)
    for n, m in masks.items():
        p = small.get_parameter(n)
        p.mul_(m.to(device=p.device, dtype=p.dtype))
    for name in sorted(set(how.rows) | set(how.cols)):
        _slice_module(small.get_submodule(name), how.rows.get(name), how.cols.get(name))
    return small


def compact(model: nn.Module, masks: Masks, example_input: Tensor | None = None) -> nn.Module:
    """A new, physically smaller model computing what `model` with `masks` applied computes; `model` is unchanged.

    `example_input` is only needed for models whose forward branches on input shapes (it is traced on a meta copy).
    """
    return build(model, masks, plan(model, masks, example_input))


@torch.no_grad()
def expand_state(model: nn.Module, small: nn.Module, how: Plan) -> dict[str, Tensor]:
    """`model`'s state dict with `small`'s values (a model built by `build` with plan `how`) at the kept positions."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for k, v in small.state_dict().items():
        mod = k.rpartition(".")[0]
        rows = how.rows.get(mod) if v.dim() >= 1 else None
        cols = how.cols.get(mod) if v.dim() >= 2 else None
        t = state[k]
        if rows is None and cols is None:
            t.copy_(v)
        elif rows is not None and cols is not None:
            t[rows.to(t.device).view(-1, 1), cols.to(t.device).view(1, -1)] = v.to(t.device)
        elif rows is not None:
            t[rows.to(t.device)] = v.to(t.device)
        else:
            t[:, cols.to(t.device)] = v.to(t.device)
    return state
