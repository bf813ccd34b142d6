"""Layer collapse: a prunable layer left with no kept weight, or no kept path from the input to the output.

The path check runs the network once on an all-ones input with every kept weight at 1, every pruned weight at 0,
biases and norm shifts at 0, norm scales and running variances at 1, and every prunable layer's output cut to 0/1
(`> 0`): an output unit is 1 exactly when some chain of kept weights reaches it from the input. This follows any
network of Linear/Conv layers, ReLU-like activations, pooling, flattening, BatchNorm and residual additions. It cannot
follow operations that turn a zero input into a positive one (a sigmoid, softmax attention, a constant added): for those
it may see a path that the masks do not keep; it never misses one that exists. Layers other than plain
Linear/Conv (e.g. supermask layers, which select their own weights) are not followed: then only empty layers are
reported (`path` is None).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass
class Collapse:
    """What a mask leaves of the network: layers with no kept weight, and whether an input→output path is kept."""

    empty: list[str] = field(default_factory=list)
    path: bool | None = True  # None: not checked (a layer the check cannot follow)
    density: float = 1.0
    layer_density: dict[str, float] = field(default_factory=dict)

    @property
    def collapsed(self) -> bool:
        """Whether the mask collapses the network (an empty layer or no path)."""
        return bool(self.empty) or self.path is False

    def message(self) -> str:
        """One line naming the empty layers (with the density that emptied them) or the lost path."""
        parts = []
        if self.empty:
            parts.append(f"layer{'s' if len(self.empty) > 1 else ''} {', '.join(repr(n) for n in self.empty)} "
                         "keep no weight")
        if self.path is False:
            low = sorted(self.layer_density.items(), key=lambda kv: kv[1])[:3]
            parts.append("no kept path from the input to the output (sparsest layers: "
                         + ", ".join(f"{n} {d:.3g}" for n, d in low) + ")")
        return f"layer collapse at density {self.density:.4g}: " + "; ".join(parts)


def empty_layers(masks: Mapping[str, Tensor]) -> list[str]:
    """The layers of `masks` with no kept weight, in mask order (a prunable bias left empty is no collapse: its layer
    still computes from its weights)."""
    return [n for n, m in masks.items() if not n.endswith("bias") and not bool(m.any())]


PLAIN_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@torch.no_grad()
def has_path(model: nn.Module, masks: Mapping[str, Tensor], example: Tensor) -> bool | None:
    """Whether the kept weights leave a path from the input to some output of `model` (see the module docstring);
    None when a masked layer is not a plain Linear/Conv."""
    modules = dict(model.named_modules())
    owners = {n.rpartition(".")[0] for n in masks}
    if any(type(modules.get(o)) not in PLAIN_LAYERS for o in owners):
        return None
    other = copy.deepcopy(model).to(device="cpu", dtype=torch.float64).eval()
    modules = dict(other.named_modules())
    for name, t in [*other.named_parameters(), *other.named_buffers()]:
        if not t.is_floating_point():
            continue
        leaf = name.rpartition(".")[2]
        if name in masks:
            t.copy_(masks[name].to(device="cpu", dtype=torch.float64))
        elif leaf in ("bias", "running_mean"):
            t.zero_()
        else:  # norm scales, running variances, unmasked weights: a kept connection
            t.fill_(1.0)
    hooks = [modules[o].register_forward_hook(lambda _m, _i, out: (out > 0).to(out.dtype)) for o in owners]
    try:
        out = other(torch.ones_like(example, dtype=torch.float64, device="cpu"))
    finally:
        for h in hooks:
            h.remove()
    return bool((out > 0).any())


def find_collapse(model: nn.Module, masks: Mapping[str, Tensor], example: Tensor | None = None) -> Collapse:
    """The collapse report of `masks` on `model` (the path is checked when an input `example` is given)."""
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    return Collapse(
        empty=empty_layers(masks),
        path=True if example is None else has_path(model, masks, example),
        density=kept / max(total, 1),
        layer_density={n: int(m.sum()) / max(m.numel(), 1) for n, m in masks.items()},
    )


def check_collapse(model: nn.Module, masks: Mapping[str, Tensor], example: Tensor | None, allow: bool,
                   what: str = "") -> dict[str, object]:
    """Record fields of a mask's collapse; ValueError (naming the layer and the density) unless `allow`."""
    report = find_collapse(model, masks, example)
    if not report.collapsed:
        return {}
    if not allow:
        raise ValueError(f"{what + ': ' if what else ''}{report.message()}. Choose a higher density or another "
                         "criterion, or set pruning.allow_collapse=true to record it (layer_collapse: true) and go on")
    return {"layer_collapse": True, "collapsed_layers": list(report.empty), "kept_path": report.path,
            "collapse": report.message()}

