"""Scratch baselines (Liu et al., "Rethinking the Value of Network Pruning"): the pruned architecture from a fresh
seeded init, trained for the dense model's steps (scratch-E) or for the same compute (scratch-B).
The resets `scratch_e` / `scratch_b` in `lth.reset` use these.

scratch-B trains floor(steps × FLOPs_dense / FLOPs_pruned) steps, as Liu et al.'s `int(epochs × ratio)`; `cap`
limits it to floor(cap × steps), cap taken as written (their CIFAR scripts use no cap, the ImageNet ones 2×).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction

from torch import Tensor, nn


def scratch_steps(max_steps: int, flops_dense: float, flops_pruned: float, cap: float | None = None) -> int:
    """Scratch-B's training steps: floor(max_steps × flops_dense / flops_pruned), at most floor(cap × max_steps)."""
    if int(max_steps) != max_steps or max_steps < 1:
        raise ValueError(f"max_steps must be a positive int, got {max_steps}")
    if not (math.isfinite(flops_dense) and math.isfinite(flops_pruned)) or flops_pruned <= 0 or flops_dense <= 0:
        raise ValueError(f"FLOPs must be positive, got dense {flops_dense}, pruned {flops_pruned}")
    if flops_pruned > flops_dense:
        raise ValueError(f"pruned FLOPs {flops_pruned} exceed the dense model's {flops_dense}")
    if cap is not None and not (math.isfinite(cap) and cap >= 1):
        raise ValueError(f"scratch-B cap must be >= 1 (a multiple of the dense steps) or None, got {cap}")
    steps = math.floor(int(max_steps) * Fraction(flops_dense) / Fraction(flops_pruned))
    if cap is not None:
        steps = min(steps, math.floor(Fraction(repr(float(cap))) * int(max_steps)))  # 1.2 as written, not 1.19999…
    return steps


def scratch_state(model: nn.Module, masks: Mapping[str, Tensor], seed: int, example_input: Tensor | None = None,
                  compacted: bool = True) -> dict[str, Tensor]:
    """`model`'s state dict holding a fresh seeded init of the pruned architecture, pruned weights zero.

    `compacted`: the compacted model is re-initialised with the model's own initialiser (its fan-in/out are the small
    ones, as a network built at that size would have), biases and BatchNorm included, then written back into the full
    shapes. Otherwise (unstructured masks) it is a fresh draw of the whole model, masked.
    """
    import copy

    from lth.models import reinitialize
    from lth.structured.compact import build, expand_state, plan

    if compacted:
        how = plan(model, masks, example_input)
        small = build(model, masks, how)
        reinitialize(small, seed)
        state = expand_state(model, small, how)
    else:
        fresh = copy.deepcopy(model)
        reinitialize(fresh, seed)
        state = {k: v.detach().clone() for k, v in fresh.state_dict().items()}
    for n, m in masks.items():
        state[n] = state[n] * m.to(device=state[n].device, dtype=state[n].dtype)
    return state
