"""Typed config of the supermask experiments (`supermask.*`); imports nothing heavy."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

METHODS = ("heuristic", "bernoulli", "edge_popup")
EVAL_MASKS = ("expected", "sampled")


def _with_from_field(cls: type) -> type:
    """Add the field `from` (a Python keyword, so it cannot be written in a class body): the source run's folder."""
    cls.__annotations__ = {**cls.__annotations__, "from": "str | None"}
    setattr(cls, "from", None)
    return cls


@dataclass(init=False, repr=False, eq=False)
@_with_from_field
class SupermaskConfig:
    """`method: null` runs an ordinary lineage; otherwise one supermask experiment (see docs/supermask.md)."""

    method: str | None = None  # heuristic | bernoulli | edge_popup
    # the frozen weights: init (the model's θ0) | signed_constant (σ_l·sign θ0)
    # | signed_kaiming_constant (√2/√fan_in·sign θ0)
    weights: str = "init"
    # edge_popup
    k: float = 0.5  # fraction of each layer's weights kept (top-k of |scores|)
    scale_fan: bool = False  # the scaled variants: weights × 1/√k (fan_in × k in the Kaiming formula)
    # bernoulli
    rescale: bool = False  # dynamic weight rescaling: w ⊙ b × numel / Σb
    eval_mask: str = "expected"  # evaluate with σ(s) > 0.5 (expected) or a fresh Bernoulli sample (sampled)
    # heuristic: `from` (the run folder, set with supermask.from=...), its round, the criterion, the densities
    round: int = 0
    criterion: str = "large_final_same_sign"  # any entry of lth.pruning.CRITERIA
    density: Any = 0.5  # a float or a list of floats (each evaluated as its own round)

    def __init__(self, **kwargs: Any) -> None:
        for f in fields(self):
            setattr(self, f.name, kwargs.pop(f.name) if f.name in kwargs else f.default)
        if kwargs:
            valid = [f.name for f in fields(self)]
            raise TypeError(f"SupermaskConfig has no field(s) {sorted(kwargs)}; fields: {valid}")

    def __repr__(self) -> str:
        return "SupermaskConfig(" + ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)) + ")"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SupermaskConfig):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in fields(self))

    @property
    def source(self) -> str | None:
        """The `from` field (the source run of a heuristic supermask)."""
        return getattr(self, "from")

    def densities(self) -> list[float]:
        """`density` as a list."""
        d = self.density
        return [float(d)] if isinstance(d, (int, float)) else [float(x) for x in d]
