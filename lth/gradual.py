"""Gradual magnitude pruning (Zhu & Gupta 2017): the cubic density schedule, exact selection down to a density, and
the callback that prunes at the schedule's steps while the network trains.

Counting rule: at step t the target is `kept = round_half_even(s_t × N)` weights, N the layer's weights (layerwise) or
the global pool's (global), with s_t = s_f + (s_i − s_f)(1 − (t − t0)/(nΔt))³ taken in exact rational arithmetic on
the densities as written (`repr`), so 0.1 × 45 = 4.5 → 4 and the count never depends on float rounding. A pruning step
removes the kept weights with the lowest scores down to that count (ties and pool order as in `lth.pruning.select`);
masks only shrink: a layer already at or below its count loses nothing.
"""

from __future__ import annotations

import bisect
import functools
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from lth.config import GradualConfig, Scope, choices
from lth.early_stop import DEFAULT_RULE, EARLY_STOP_RULES
from lth.lit import MaskingCallback
from lth.masks import MaskManager
from lth.pruning.criteria import score
from lth.pruning.select import remove_lowest
from lth.seeds import derive_seed

SCOPES = choices(Scope)
MaskSaver = Callable[[int, Mapping[str, Tensor]], None]


def _exact(x: float) -> Fraction:
    return Fraction(repr(float(x)))


@dataclass(frozen=True)
class Schedule:
    """The density schedule of one gradual run: s_i at `start`, then every `every` steps down to s_f after `prunings`
    pruning steps."""

    initial: float
    final: float
    start: int
    every: int
    prunings: int

    @classmethod
    def from_config(cls, g: GradualConfig) -> Schedule:
        """The schedule of a `gradual` config section (its final_density must be set)."""
        if g.final_density is None:
            raise ValueError("gradual.final_density is not set: the run is no gradual run")
        return cls(float(g.initial_density), float(g.final_density), int(g.start_step), int(g.every), int(g.prunings))

    @property
    def end(self) -> int:
        """The last pruning step, t0 + nΔt."""
        return self.start + self.prunings * self.every

    def check(self, max_steps: int) -> None:
        """Raise ValueError naming the option for the first problem of this schedule in a run of `max_steps` steps."""
        if not 0.0 < self.final < 1.0:
            raise ValueError(f"gradual.final_density must be in (0, 1), got {self.final}")
        if not 0.0 < self.initial <= 1.0:
            raise ValueError(f"gradual.initial_density must be in (0, 1], got {self.initial}")
        if self.final >= self.initial:
            raise ValueError(f"gradual.final_density={self.final} must be below gradual.initial_density="
                             f"{self.initial}: the schedule only removes weights")
        if self.prunings < 1:
            raise ValueError(f"gradual.prunings (n, the number of pruning steps) must be >= 1, got {self.prunings}")
        if self.every < 1:
            raise ValueError(f"gradual.every (Δt, steps between pruning steps) must be >= 1, got {self.every}")
        if self.start < 0:
            raise ValueError(f"gradual.start_step (t0) must be >= 0, got {self.start}")
        if self.end >= max_steps:
            raise ValueError(
                f"gradual schedule ends at step {self.end} = gradual.start_step {self.start} + gradual.prunings "
                f"{self.prunings} × gradual.every {self.every}, not before the end of training trainer.max_steps="
                f"{max_steps}; the last pruning step must leave steps to train (lower gradual.start_step, "
                "gradual.prunings or gradual.every, or raise trainer.max_steps)")

    def exact(self, t: int) -> Fraction:
        """s_t as an exact fraction (s_i before t0, s_f after the last pruning step)."""
        si, sf = _exact(self.initial), _exact(self.final)
        progress = min(max(Fraction(t - self.start, self.prunings * self.every), Fraction(0)), Fraction(1))
        return sf + (si - sf) * (1 - progress) ** 3

    def density(self, t: int) -> float:
        """s_t = s_f + (s_i − s_f)(1 − (t − t0)/(nΔt))³, clamped to [t0, t0 + nΔt]."""
        return float(self.exact(t))

    def steps(self) -> list[int]:
        """The pruning steps: t0 + kΔt for k = 1..n, and t0 itself when s_i < 1 (at s_i = 1 it removes nothing)."""
        first = 0 if self.initial < 1.0 else 1
        return [self.start + k * self.every for k in range(first, self.prunings + 1)]


def kept_count(density: float | Fraction, total: int) -> int:
    """Weights a layer (or pool) of `total` keeps at `density`: round_half_even(density × total), exact."""
    d = density if isinstance(density, Fraction) else _exact(density)
    return round(d * int(total))


def check_reachable(counts: Mapping[str, int], density: float, scope: str) -> None:
    """Raise ValueError if `density` leaves a layer (layerwise) or the global pool with no weight."""
    groups = {"the global pool": sum(counts.values())} if scope == "global" else \
        {f"layer '{n}'": c for n, c in counts.items()}
    for what, total in groups.items():
        if kept_count(density, total) < 1:
            raise ValueError(f"gradual.final_density={density} keeps no weight of {what} ({total} weights, "
                             f"pruning.scope={scope}); every pruned layer must keep at least 1 weight. Use a higher "
                             "gradual.final_density.")


@torch.no_grad()
def prune_to_density(scores: Mapping[str, Tensor], masks: Mapping[str, Tensor], density: float | Fraction,
                     scope: str = "layerwise") -> dict[str, Tensor]:
    """New masks keeping `kept_count(density, N)` of each layer (layerwise) or of the pool (global): the kept weights
    with the lowest scores go; a layer (pool) already at or below its count is unchanged (inputs are not modified)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope '{scope}'; valid choices: {', '.join(SCOPES)}")
    if set(scores) != set(masks):
        raise ValueError(f"scores and masks name different layers: {sorted(scores)} vs {sorted(masks)}")
    names = list(masks)
    dtype = functools.reduce(torch.promote_types, [scores[n].dtype for n in names])
    flat_s = [scores[n].reshape(-1).to(dtype) for n in names]
    flat_m = [masks[n].reshape(-1).to(torch.bool) for n in names]
    groups = [list(range(len(names)))] if scope == "global" else [[i] for i in range(len(names))]
    out: list[Tensor] = [torch.empty(0)] * len(names)
    for group in groups:
        kept = sum(int(torch.count_nonzero(flat_m[i])) for i in group)
        target = kept_count(density, sum(flat_m[i].numel() for i in group))
        new = remove_lowest([flat_s[i] for i in group], max(kept - target, 0), [flat_m[i] for i in group])
        for i, m in zip(group, new):
            out[i] = m
    return {n: out[i].reshape(masks[n].shape) for i, n in enumerate(names)}


class GradualPruning(pl.Callback):
    """Prunes the manager's masks to the schedule's density at the start of each pruning step's batch (after t optimizer
    steps), scoring with `criterion`; `save(t, masks)` stores each step's mask. `entries` holds one entry per pruning step
    (step, target and reached density, kept weights, per-layer densities) and travels in checkpoints, so a run resumed
    between two pruning steps continues the same schedule. Between pruning steps the check is one int comparison."""

    def __init__(self, manager: MaskManager, schedule: Schedule, criterion: str = "large_final",
                 scope: str = "layerwise", seed: int = 0, save: MaskSaver | None = None) -> None:
        self.manager = manager
        self.schedule = schedule
        self.criterion = criterion
        self.scope = scope
        self.seed = seed
        self.save = save
        self.steps = schedule.steps()
        self.entries: list[dict[str, Any]] = []
        self._next = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        masking = [cb for cb in trainer.callbacks if isinstance(cb, MaskingCallback)]  # type: ignore[attr-defined]
        if not masking:
            raise RuntimeError("gradual pruning needs the MaskingCallback of the same manager in the Trainer")
        for cb in masking:
            cb.expect_mask_changes()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = trainer.global_step  # > 0 when resumed: the steps before it are done (their masks came with the state)
        self._next = bisect.bisect_left(self.steps, step)
        self.entries = [e for e in self.entries if e["step"] < step]

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._next < len(self.steps) and trainer.global_step >= self.steps[self._next]:
            self.prune(self.steps[self._next], save=trainer.is_global_zero)
            self._next += 1

    def prune(self, t: int, save: bool = True) -> dict[str, Tensor]:
        """Prune to s_t now (the masks of pruning step `t`), enforce and log them; `save`: hand them to `save`."""
        from lth.distributed import agree

        manager = self.manager
        current = manager.current()
        w_init = {n: v.to(current[n].device) for n, v in manager.weights("init").items()}
        gen = torch.Generator().manual_seed(derive_seed(self.seed, "gradual", t))
        target = self.schedule.exact(t)
        scores = score(self.criterion, w_init, current, generator=gen, masks=manager.masks)
        new = agree(prune_to_density(scores, manager.masks, target, self.scope))
        manager.set_masks(new)  # newly pruned weights are their mask-0 value from here on
        if save and self.save is not None:
            self.save(t, manager.masks)
        kept = {n: int(m.sum()) for n, m in manager.masks.items()}
        emptied = [n for n, k in kept.items() if k == 0]
        if emptied:
            warnings.warn(f"gradual pruning step {t}: layers {emptied} keep no weights (layer collapse)",
                          RuntimeWarning, stacklevel=2)
        self.entries.append({"step": t, "target": float(target), "density": sum(kept.values()) / manager.numel(),
                         "kept": sum(kept.values()),
                         "layer_density": {n: k / manager.masks[n].numel() for n, k in kept.items()}})
        return manager.masks

    def state_dict(self) -> dict[str, Any]:
        return {"log": [dict(e) for e in self.entries]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.entries = [dict(e) for e in state_dict.get("log", [])]


def early_stop_after(history: list[dict[str, float]], step: int, metric: str = DEFAULT_RULE) -> dict[str, float]:
    """The early-stop evaluation under rule `metric` (default: lowest validation loss) among those after `step` (ties:
    earliest); {} if none."""
    return EARLY_STOP_RULES[metric].best(history, after=step)
