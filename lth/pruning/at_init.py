"""Criteria that score a network at initialisation from the network itself and data (SNIP, GraSP, SynFlow).

The per-tensor criteria of `lth.pruning.criteria` score one weight tensor from θ0 and the trained weights; the
criteria here need the whole model (and, except SynFlow, training batches). Each is one registered `InitCriterion`
whose `scores(model, names, masks, batches)` returns a score per weight (higher = keep) and whose `prune(...)` turns
scores into masks through the same `lth.pruning.select` as every other criterion (scope, overrides, exact counts).
`at_init_criterion(name, pruning)` also wraps any per-tensor criterion (`large_init`, `random`, ...) applied to θ0, so a
pruning-at-init run accepts every name of `ALL_CRITERIA`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lth.pruning.criteria import CRITERIA, score
from lth.pruning.select import fraction_for_density, select
from lth.registry import Registry

Batches = Sequence[tuple[Tensor, Tensor]]
Masks = dict[str, Tensor]
INIT_CRITERIA: Registry[type[InitCriterion]] = Registry("criterion at initialisation")


class InitCriterion:
    """A criterion that scores the weights of a whole network (higher = keep) before training."""

    name = ""
    needs_data = True

    @classmethod
    def from_config(cls, pruning: Any) -> InitCriterion:
        """The criterion with its settings from a `pruning` config section."""
        return cls()

    def scores(self, model: nn.Module, names: Sequence[str], masks: Mapping[str, Tensor],
               batches: Batches) -> dict[str, Tensor]:
        """Score of every weight of the prunables `names` of `model` under `masks` (the model is left unchanged)."""
        raise NotImplementedError

    def prune(self, model: nn.Module, names: Sequence[str], masks: Mapping[str, Tensor], batches: Batches,
              fraction: float, scope: str = "global", overrides: Mapping[str, float] | None = None,
              ) -> tuple[Masks, dict[str, Tensor]]:
        """Masks removing `fraction` of the kept weights (one shot) and the scores they were chosen by."""
        s = self.scores(model, names, masks, batches)
        return select(s, masks, fraction, scope=scope, overrides=overrides), s


def _scoring_copy(model: nn.Module, names: Sequence[str], masks: Mapping[str, Tensor],
                  dtype: torch.dtype | None = None) -> tuple[nn.Module, list[nn.Parameter]]:
    """A copy of `model` (optionally cast) with pruned weights at 0, and its prunables in `names` order."""
    other = copy.deepcopy(model)
    if dtype is not None:
        other = other.to(dtype)
    params = dict(other.named_parameters())
    with torch.no_grad():
        for n in names:
            params[n].mul_(masks[n].to(device=params[n].device, dtype=params[n].dtype))
    for p in other.parameters():
        p.requires_grad_(False)
    chosen = [params[n] for n in names]
    for p in chosen:
        p.requires_grad_(True)
    return other, chosen


def _loss(model: nn.Module, batches: Batches, temperature: float = 1.0) -> Tensor:
    """Mean over `batches` of the cross-entropy of the logits divided by `temperature`."""
    if not batches:
        raise ValueError("scoring at initialisation needs at least one batch (pruning.init_batches >= 1)")
    total = sum(F.cross_entropy(model(x) / temperature, y) for x, y in batches)
    return total / len(batches)  # type: ignore[operator]


@INIT_CRITERIA.register("snip")
class Snip(InitCriterion):
    """SNIP (Lee et al. 2019): connection sensitivity |θ ⊙ ∂L/∂θ| on the given batches."""

    name = "snip"

    def scores(self, model: nn.Module, names: Sequence[str], masks: Mapping[str, Tensor],
               batches: Batches) -> dict[str, Tensor]:
        other, params = _scoring_copy(model, names, masks)
        grads = torch.autograd.grad(_loss(other, batches), params)
        return {n: (p.detach() * g).abs() for n, p, g in zip(names, params, grads)}


@INIT_CRITERIA.register("grasp")
class GraSP(InitCriterion):
    """GraSP (Wang et al. 2020): S = −θ ⊙ (H g); the highest S go, so the keep-score returned is θ ⊙ (H g)."""

    name = "grasp"

    def __init__(self, temperature: float = 200.0) -> None:
        if not temperature > 0:
            raise ValueError(f"pruning.grasp_temperature must be positive, got {temperature}")
        self.temperature = float(temperature)

    @classmethod
    def from_config(cls, pruning: Any) -> InitCriterion:
        return cls(getattr(pruning, "grasp_temperature", 200.0))

    def hessian_gradient(self, model: nn.Module, names: Sequence[str], masks: Mapping[str, Tensor],
                         batches: Batches) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """(g, H g) of the prunables: the loss gradient and the Hessian-gradient product by double backprop."""
        other, params = _scoring_copy(model, names, masks)
        grads = torch.autograd.grad(_loss(other, batches, self.temperature), params, create_graph=True)
        z = sum((g * g.detach()).sum() for g in grads)  # ∂z/∂θ = H · stopgrad(g)
        hg = torch.autograd.grad(z, params)
        return ({n: g.detach() for n, g in zip(names, grads)}, dict(zip(names, hg)))

    def scores(self, model: nn.Module, names: Sequence[str], masks: Mapping[str, Tensor],
               batches: Batches) -> dict[str, Tensor]:
        _, hg = self.hessian_gradient(model, names, masks, batches)
        params = dict(model.named_parameters())
        return {n: params[n].detach() * masks[n].to(params[n].dtype) * hg[n] for n in names}


@INIT_CRITERIA.register("synflow")
class SynFlow(InitCriterion):
    """SynFlow (Tanaka et al. 2020): |θ ⊙ ∂R/∂θ|, R = 1ᵀ(∏|W|)1 on an all-ones input, pruned over `iterations`."""

    name = "synflow"
    needs_data = False

    def __init__(self, iterations: int = 100, on_iteration: Callable[[int, float, Masks], None] | None = None,
                 biases: bool = True) -> None:
        if int(iterations) != iterations or iterations < 1:
            raise ValueError(f"pruning.synflow_iterations must be an integer >= 1, got {iterations}")
        self.iterations = int(iterations)
        self.biases = bool(biases)  # False: every additive term (bias, BN shift and mean) is 0 in the flow
        self.on_iteration = on_iteration  # (iteration, R before its scoring, masks it scored under)
        self.example: Tensor | None = None  # one input example (its shape); set by the caller

    @classmethod
    def from_config(cls, pruning: Any) -> InitCriterion:
        return cls(getattr(pruning, "synflow_iterations", 100), biases=getattr(pruning, "synflow_biases", True))

    def _linearised(self, model: nn.Module, names: Sequence[str]) -> tuple[nn.Module, list[nn.Parameter]]:
        """A float64 copy in eval mode (BatchNorm uses its running statistics) with every state tensor made |·|
        (additive terms zeroed when `biases` is False)."""
        other, params = _scoring_copy(model, names, {n: torch.ones((), dtype=torch.bool) for n in names},
                                      torch.float64)
        other.eval()
        with torch.no_grad():
            for key, t in other.state_dict().items():
                if not t.is_floating_point():
                    continue
                # Without biases R is a polynomial in the weights alone, so a layer cut off from the input scores 0
                # instead of passing on its biases' flow (which hides a collapse from the score).
                if not self.biases and key.rsplit(".", 1)[-1] in ("bias", "running_mean"):
                    t.zero_()
                else:
                    t.abs_()
        return other, params

    def _input(self, batches: Batches) -> Tensor:
        if self.example is not None:
            return torch.ones_like(self.example, dtype=torch.float64)
        if not batches:
            raise ValueError("synflow needs the input shape: set `example` or pass one batch")
        return torch.ones_like(batches[0][0][:1], dtype=torch.float64)

    def flow(self, model: nn.Module, names: Sequence[str], masks: Mapping[str, Tensor],
             batches: Batches = ()) -> tuple[float, dict[str, Tensor]]:
        """(R, scores) of `model` under `masks`: R = 1ᵀ f(1) with |θ| everywhere, scores |θ ⊙ ∂R/∂θ|."""
        other, params = self._linearised(model, names)
        with torch.no_grad():
            for p, n in zip(params, names):
                p.mul_(masks[n].to(device=p.device, dtype=p.dtype))
        r = other(self._input(batches).to(params[0].device)).sum()
        grads = torch.autograd.grad(r, params)
        return float(r.detach()), {n: (p.detach() * g).abs() for n, p, g in zip(names, params, grads)}

    def scores(self, model: nn.Module, names: Sequence[str], masks: Mapping[str, Tensor],
               batches: Batches = ()) -> dict[str, Tensor]:
        return self.flow(model, names, masks, batches)[1]

    def prune(self, model: nn.Module, names: Sequence[str], masks: Mapping[str, Tensor], batches: Batches,
              fraction: float, scope: str = "global", overrides: Mapping[str, float] | None = None,
              ) -> tuple[Masks, dict[str, Tensor]]:
        """Iterative SynFlow: `iterations` rounds of rescoring, each removing the share of n IMP rounds with the same
        target (1 − (1 − f)^(1/n) of the kept weights, per override too); the scores returned are the first ones
        (all weights kept), the ranking a one-shot SynFlow would use."""
        n = self.iterations
        step = fraction_for_density(1.0 - fraction, n)
        per_iter = {k: (fraction_for_density(1.0 - f, n) if f > 0 else 0.0) for k, f in (overrides or {}).items()}
        current = {k: m.to(torch.bool).clone() for k, m in masks.items()}
        first: dict[str, Tensor] | None = None
        for i in range(1, n + 1):
            r, s = self.flow(model, names, current, batches)
            if self.on_iteration is not None:
                self.on_iteration(i, r, current)
            if first is None:
                first = s
            current = select(s, current, step, scope=scope, overrides=per_iter)
        if self.on_iteration is not None:
            self.on_iteration(n + 1, self.flow(model, names, current, batches)[0], current)
        assert first is not None
        return current, first


class TensorCriterion(InitCriterion):
    """A per-tensor criterion of `lth.pruning.criteria` applied at initialisation (θ0 as both w_init and w_final)."""

    needs_data = False

    def __init__(self, name: str, generator: torch.Generator | None = None) -> None:
        CRITERIA.check(name)
        self.name = name
        self.generator = generator

    def scores(self, model: nn.Module, names: Sequence[str], masks: Mapping[str, Tensor],
               batches: Batches = ()) -> dict[str, Tensor]:
        params = dict(model.named_parameters())
        w0 = {n: params[n].detach() for n in names}
        return score(self.name, w0, w0, generator=self.generator, masks=masks)


class AllCriteria:
    """Every criterion name a config may give: per-tensor ones and those scoring at initialisation, in one list."""

    kind = "criterion"

    def __contains__(self, name: object) -> bool:
        return name in CRITERIA or name in INIT_CRITERIA

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self) -> list[str]:
        """All criterion names, sorted."""
        return sorted({*CRITERIA, *INIT_CRITERIA})

    def unknown(self, name: object) -> str:
        """The error message for an unknown name, listing the valid ones."""
        return f"unknown criterion '{name}'; valid choices: {', '.join(self.names())}"

    def check(self, name: str) -> None:
        """Raise ValueError naming the valid choices if `name` is no criterion."""
        if name not in self:
            raise ValueError(self.unknown(name))


ALL_CRITERIA = AllCriteria()


def at_init_criterion(name: str, pruning: Any = None, generator: torch.Generator | None = None) -> InitCriterion:
    """The criterion `name` ready to score a network at initialisation (settings from the `pruning` section)."""
    ALL_CRITERIA.check(name)
    if name in INIT_CRITERIA:
        return INIT_CRITERIA[name].from_config(pruning)
    return TensorCriterion(name, generator)


def take_batches(loader: Any, count: int) -> list[tuple[Tensor, Tensor]]:
    """The first `count` (inputs, targets) batches of `loader`."""
    out = []
    for batch in loader:
        if len(out) >= count:
            break
        x, y = batch[0], batch[1]
        out.append((x, y))
    return out
