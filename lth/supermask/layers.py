"""Supermask layers: Linear/Conv layers whose frozen weights are multiplied by a mask computed from trainable scores.

A layer's forward uses w_eff = w ⊙ m(s), where `s` (the parameter `scores`) is the only trainable tensor and the
mask m comes from the layer's method (`METHODS`):

- `edge_popup` (Ramanujan et al.): keep the top-k fraction of |s| (exact count, see `lth.supermask.topk`);
  straight-through backward, ∂L/∂|s| = ∂L/∂w_eff ⊙ w, passed through |·| as in the authors' code.
  Scores start Kaiming-uniform (a=√5).
- `bernoulli` (Zhou et al.): b ~ Bernoulli(σ(s)), a fresh sample each training forward; straight-through backward,
  ∂L/∂σ(s) = ∂L/∂b. Evaluation uses the expected mask σ(s) > 0.5 (`eval_mask="expected"`) or a fresh sample
  (`"sampled"`). Optional dynamic weight rescaling multiplies by numel / Σb. Logits start at 0 (p = 0.5).

Layers subclass the original `nn.Linear`/`nn.ConvNd` (so weight names, init schemes and mask managers see them as
before) and keep no closures or parametrizations, so models stay picklable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lth.registry import Registry
from lth.supermask.config import EVAL_MASKS
from lth.supermask.topk import kept_count, top_mask

METHODS: Registry[type[SupermaskMethod]] = Registry("supermask method")


class StraightThrough(torch.autograd.Function):
    """Forward: the hard (0/1) mask in `soft`'s dtype; backward: the gradient handed unchanged to `soft`."""

    @staticmethod
    def forward(ctx: object, soft: Tensor, hard: Tensor) -> Tensor:
        return hard.to(dtype=soft.dtype, copy=True)  # never hand back an input as the output

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


class SupermaskMethod:
    """How a layer turns its scores into a mask; a plain picklable object held by each supermask layer."""

    def init_scores(self, weight: Tensor, generator: torch.Generator | None) -> Tensor:
        """Initial scores for a weight tensor."""
        raise NotImplementedError

    def mask(self, scores: Tensor, training: bool) -> Tensor:
        """The mask multiplying the weights in forward (differentiable to the scores)."""
        raise NotImplementedError

    def hard_mask(self, scores: Tensor) -> Tensor:
        """The mask exported as the layer's supermask (a BoolTensor)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


@METHODS.register("edge_popup")
class EdgePopup(SupermaskMethod):
    """Keep the top `k` fraction of |scores| per layer."""

    def __init__(self, k: float = 0.5) -> None:
        if not 0.0 < k <= 1.0:
            raise ValueError(f"edge-popup k (the fraction of weights kept) must be in (0, 1], got {k}")
        self.k = float(k)

    def init_scores(self, weight: Tensor, generator: torch.Generator | None) -> Tensor:
        scores = torch.empty_like(weight)
        return nn.init.kaiming_uniform_(scores, a=math.sqrt(5), generator=generator)

    def mask(self, scores: Tensor, training: bool) -> Tensor:
        magnitude = scores.abs()
        return StraightThrough.apply(magnitude, self.hard_mask(scores))

    def hard_mask(self, scores: Tensor) -> Tensor:
        return top_mask(scores.detach().abs(), kept_count(self.k, scores.numel()))


@METHODS.register("bernoulli")
class Bernoulli(SupermaskMethod):
    """b ~ Bernoulli(σ(scores)) in training; σ(scores) > 0.5 (or a sample) in evaluation."""

    def __init__(self, rescale: bool = False, eval_mask: str = "expected") -> None:
        if eval_mask not in EVAL_MASKS:
            raise ValueError(f"unknown eval_mask '{eval_mask}'; valid choices: {', '.join(EVAL_MASKS)}")
        self.rescale = bool(rescale)
        self.eval_mask = eval_mask

    def init_scores(self, weight: Tensor, generator: torch.Generator | None) -> Tensor:
        return torch.zeros_like(weight)

    def mask(self, scores: Tensor, training: bool) -> Tensor:
        p = torch.sigmoid(scores)
        hard = torch.bernoulli(p.detach()) if training or self.eval_mask == "sampled" else p.detach() > 0.5
        m = StraightThrough.apply(p, hard)
        if self.rescale:  # the scale is a normaliser, not a path for gradients
            m = m * (hard.numel() / hard.sum(dtype=p.dtype).clamp_min(1.0))
        return m

    def hard_mask(self, scores: Tensor) -> Tensor:
        return torch.sigmoid(scores.detach()) > 0.5


class SupermaskLayer(nn.Module):
    """Mixin of the supermask layers: frozen `weight`/`bias`, trainable `scores`, forward with w ⊙ m(scores)."""

    supermask: SupermaskMethod
    scores: nn.Parameter

    @classmethod
    def from_layer(cls, layer: nn.Module, method: SupermaskMethod, generator: torch.Generator | None = None
                   ) -> SupermaskLayer:
        """A supermask layer sharing `layer`'s settings and Parameter objects (frozen), with fresh scores."""
        new = cls.__new__(cls)
        # the module's own dicts/sets (parameters, buffers, hooks) are copied; the Parameter objects are shared
        new.__dict__.update({k: (v.copy() if isinstance(v, (dict, set)) else v) for k, v in layer.__dict__.items()})
        for p in new._parameters.values():
            if p is not None:
                p.requires_grad_(False)
        new.supermask = method
        # drawn on the CPU (where a seeded generator lives), then moved to the weight's device
        scores = method.init_scores(new.weight.detach().cpu(), generator)
        new.scores = nn.Parameter(scores.to(device=new.weight.device))
        return new

    def effective_weight(self) -> Tensor:
        """w ⊙ m(scores) as used by forward (sampled afresh in training for Bernoulli layers)."""
        return self.weight * self.supermask.mask(self.scores, self.training)

    def hard_mask(self) -> Tensor:
        """This layer's supermask (name it `<layer>.weight` in a mask dict)."""
        return self.supermask.hard_mask(self.scores)

    def forward(self, x: Tensor) -> Tensor:
        return self.weighted(x, self.effective_weight())

    def weighted(self, x: Tensor, weight: Tensor) -> Tensor:
        """The original layer's operation with `weight` in place of its own."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, supermask={self.supermask!r}"


class SupermaskLinear(SupermaskLayer, nn.Linear):
    """nn.Linear with a supermask."""

    def weighted(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.linear(x, weight, self.bias)


class SupermaskConv1d(SupermaskLayer, nn.Conv1d):
    """nn.Conv1d with a supermask."""

    def weighted(self, x: Tensor, weight: Tensor) -> Tensor:
        return self._conv_forward(x, weight, self.bias)


class SupermaskConv2d(SupermaskLayer, nn.Conv2d):
    """nn.Conv2d with a supermask."""

    def weighted(self, x: Tensor, weight: Tensor) -> Tensor:
        return self._conv_forward(x, weight, self.bias)


class SupermaskConv3d(SupermaskLayer, nn.Conv3d):
    """nn.Conv3d with a supermask."""

    def weighted(self, x: Tensor, weight: Tensor) -> Tensor:
        return self._conv_forward(x, weight, self.bias)


# original layer type → its supermask layer (subclasses are accepted when they keep the original forward)
SUPERMASK_LAYERS: dict[type[nn.Module], type[SupermaskLayer]] = {
    nn.Linear: SupermaskLinear,
    nn.Conv1d: SupermaskConv1d,
    nn.Conv2d: SupermaskConv2d,
    nn.Conv3d: SupermaskConv3d,
}
