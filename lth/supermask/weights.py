"""The frozen weights a supermask is found for: θ0 itself or a signed constant derived from it (registry `WEIGHTS`).

Every entry is `fn(w0: Tensor) -> Tensor`, applied per prunable weight tensor; sign(0) is taken as +1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from lth.masks import signs
from lth.registry import Registry

WEIGHTS: Registry[Callable[[Tensor], Tensor]] = Registry("supermask weights")


@WEIGHTS.register("init")
def init(w0: Tensor) -> Tensor:
    """θ0 as the model's initialiser drew it (model.args.init chooses e.g. kaiming_normal)."""
    return w0.clone()


@WEIGHTS.register("signed_constant")
def signed_constant(w0: Tensor) -> Tensor:
    """σ_l·sign(θ0), σ_l the population std of the layer's whole θ0 (Zhou et al.)."""
    return w0.std(correction=0) * signs(w0)


@WEIGHTS.register("signed_kaiming_constant")
def signed_kaiming_constant(w0: Tensor) -> Tensor:
    """sign(θ0)·√2/√fan_in, the signed Kaiming constant for ReLU networks (Ramanujan et al.)."""
    fan_in = w0[0].numel() if w0.dim() > 1 else w0.numel()
    return signs(w0) * math.sqrt(2.0 / fan_in)


@torch.no_grad()
def frozen_weights(name: str, weights: Mapping[str, Tensor], k: float = 1.0, scale_fan: bool = False
                   ) -> dict[str, Tensor]:
    """The weights a supermask multiplies: `WEIGHTS[name]` of each θ0 tensor, × 1/√k with `scale_fan`."""
    WEIGHTS.check(name)
    if scale_fan and not 0.0 < k <= 1.0:
        raise ValueError(f"scale_fan needs k in (0, 1], got {k}")
    scale = 1.0 / math.sqrt(k) if scale_fan else 1.0
    out = {}
    for n, w in weights.items():
        new = WEIGHTS[name](w)
        out[n] = new * scale if scale != 1.0 else new
    return out
