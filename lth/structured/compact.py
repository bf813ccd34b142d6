"""Compaction: the masked model rebuilt physically smaller, and the way back (a small model's state in the big shapes).

Compaction works on dependency groups (`lth.structured.groups`): channel j of a group is dropped from every member
at once (producers' rows and bias entries, BatchNorm entries, consumers' input columns) when its value cannot matter:
- *unread*: every consumer's input columns for j are zero (masked) — what `lth.pruning.select_groups` leaves; or
- *provably zero*: every producer's row j and bias entry j are zero (masked weights count as zero), every BatchNorm on
  the group has weight j = bias j = 0 (a BatchNorm'd channel outputs its bias, or −γ·mean/σ + β, even from a zero
  input — so its affine must be zero; running statistics do not matter then, in train or eval mode), and every step on
  the group's values maps 0 to 0 (ReLU-like activations, pooling, dropout, flatten, adds of other zero channels; not
  sigmoid, softplus or an added constant) — what `torch.nn.utils.prune.ln_structured` leaves with zero biases.
In a residual group both rules hold for the channel as a whole: all producers summed into it are zero, or no layer
reads it. Groups refused by the walk (the output layer's, or any reaching an op it cannot follow) are not sliced.
The compacted model is a copy of the model whose pruned weights are zero (mask applied) and whose Linear/Conv/
BatchNorm layers are sliced; it computes what the masked model computes. Each member keeps at least one of its
channels (its outgoing weights are all masked, or it is zero: it changes nothing): torch has no zero-width conv.
When nothing can be removed although weights are pruned, `compact` warns with the reasons.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

from lth import masks as masks_lib
from lth.structured.groups import Group, GroupLayout, Slice, dependency_groups
from lth.structured.layout import WEIGHTED, module_of

Masks = Mapping[str, Tensor]


@dataclass
class Plan:
    """Index tensors that slice each module: rows (dim 0: units, BatchNorm features) and cols (dim 1: inputs)."""

    layout: GroupLayout
    kept: dict[str, Tensor] = field(default_factory=dict)  # group name → kept-channel flags
    rows: dict[str, Tensor] = field(default_factory=dict)  # module name → kept indices along dim 0
    cols: dict[str, Tensor] = field(default_factory=dict)  # module name → kept indices along dim 1


def check_masks(model: nn.Module, masks: Masks) -> None:
    """Raise ValueError unless every mask names a parameter of `model` with its shape (`lth.masks.check_masks`)."""
    params = dict(model.named_parameters())
    unknown = [n for n in masks if n not in params]
    if unknown:
        raise ValueError(f"mask '{unknown[0]}' names no parameter of the model")
    masks_lib.check_masks(masks, {n: params[n].shape for n in masks})


def _effective(model: nn.Module, masks: Masks, name: str) -> Tensor:
    """Weight `name` with its mask applied (as it computes)."""
    w = model.get_parameter(name).detach()
    return w * masks[name].to(device=w.device, dtype=w.dtype) if name in masks else w


def _spread(group: Group, piece: Slice, flags: Tensor, fill: bool) -> Tensor:
    """A member's per-unit `flags` placed at its channels of `group` (`fill` elsewhere)."""
    out = torch.full((group.size,), fill, dtype=torch.bool, device=flags.device)
    out[piece.offset:piece.offset + piece.size] = flags
    return out


@torch.no_grad()
def kept_channels(model: nn.Module, masks: Masks, layout: GroupLayout) -> dict[str, Tensor]:
    """Per group, 1-D flags of the channels that stay: read by some consumer and not provably zero (module doc)."""
    out = {}
    for g in layout.groups:
        read = torch.zeros(g.size, dtype=torch.bool)
        for c in g.consumers:
            w = _effective(model, masks, c.name).cpu()
            cols = w.reshape(w.shape[0], c.size, c.block, -1) != 0
            read |= _spread(g, c, cols.any(dim=3).any(dim=2).any(dim=0), False)
        zero = torch.full((g.size,), g.zero_safe, dtype=torch.bool)
        if g.zero_safe:
            for p in g.producers:
                w = _effective(model, masks, p.name).cpu()
                silent = (w.reshape(w.shape[0], -1) == 0).all(dim=1)
                bias = model.get_submodule(module_of(p.name)).bias
                if bias is not None:
                    silent &= bias.detach().cpu() == 0
                zero &= _spread(g, p, silent, True)
            for n in g.norms:
                bn = model.get_submodule(n.name)
                silent = torch.zeros(n.size, dtype=torch.bool)
                if bn.affine:
                    silent = (bn.weight.detach().cpu() == 0) & (bn.bias.detach().cpu() == 0)
                zero &= _spread(g, n, silent, True)
        keep = read & ~zero
        for piece in [*g.producers, *g.norms, *g.consumers]:  # every member keeps one channel at least
            if not keep[piece.offset:piece.offset + piece.size].any():
                keep[piece.offset] = True
        out[g.name] = keep
    return out


def plan(model: nn.Module, masks: Masks, example_input: Tensor | None = None) -> Plan:
    """How compaction slices each module of `model` under `masks`."""
    check_masks(model, masks)
    layout = dependency_groups(model, example_input)
    result = Plan(layout, kept_channels(model, masks, layout))
    for g in layout.groups:
        keep = result.kept[g.name]
        if bool(keep.all()):
            continue
        for piece in [*g.producers, *g.norms]:
            mod = piece.name if piece in g.norms else module_of(piece.name)
            result.rows[mod] = _indices(keep, piece)
        for c in g.consumers:
            idx = _indices(keep, c)
            result.cols[module_of(c.name)] = (idx.view(-1, 1) * c.block + torch.arange(c.block).view(1, -1)).reshape(-1)
    return result


def _indices(keep: Tensor, piece: Slice) -> Tensor:
    """The member's own indices (0 … size − 1) of the kept channels in its stretch."""
    return torch.nonzero(keep[piece.offset:piece.offset + piece.size]).reshape(-1).cpu()


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
    if isinstance(mod, _ConvNd) and mod.groups > 1:  # depthwise: one filter per input channel
        mod.in_channels = mod.groups = int(mod.weight.shape[0])
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
    Warns (UserWarning) with the reasons when weights are pruned but no channel can go.
    """
    how = plan(model, masks, example_input)
    if not how.rows and not how.cols and _prunes_something(model, masks):
        warnings.warn(f"compact: no channel can be removed, the model keeps its size: {nothing_removed(how.layout)}",
                      UserWarning, stacklevel=2)
    return build(model, masks, how)


def _prunes_something(model: nn.Module, masks: Masks) -> bool:
    """Whether `masks` switch off a weight, or a Linear/Conv weight is zero."""
    if any(not bool(m.all()) for m in masks.values()):
        return True
    return any(bool((m.weight == 0).any()) for m in model.modules() if isinstance(m, WEIGHTED))


def nothing_removed(layout: GroupLayout) -> str:
    """Why compaction removed nothing: the refused groups' reasons and the rule the others failed."""
    parts = [(f"{len(layout.groups)} group(s) have no channel that is unread by every consumer or provably zero "
              "(rows, biases and BatchNorm weight and bias all zero, under activations that map 0 to 0)")]
    parts += [f"{g.name} is refused: {layout.refused[g.name]}" for g in layout.refused_groups]
    return "; ".join(parts)


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
