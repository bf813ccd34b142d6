"""The gradual kind (Zhu & Gupta 2017): one training run whose masks shrink on the cubic schedule of `gradual.*`.

Its folder is a one-round run folder: `round_00/masks/step_XXXXXX.pt` holds the mask of each pruning step,
`round_00/mask.pt` the final mask and `snapshots.pt` θ0, so `branch.from=<this folder> branch.round=0` trains the final
mask from θ0 like any ticket. Round 0's record carries the final density and accuracy like every kind, and
`gradual_schedule`: one entry per pruning step (step, target and reached density, kept weights, per-layer densities);
its early-stop fields choose among the evaluations after the last pruning step (at the final density).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from lth.config import Config
from lth.kinds.base import Kind, register_kind
from lth.kinds.lineage import train_seed

if TYPE_CHECKING:
    from lth.gradual import GradualPruning
    from lth.runner import Lineage


def step_mask_path(round_dir: Path, step: int) -> Path:
    """Where the mask of pruning step `step` is saved in its round folder."""
    return round_dir / "masks" / f"step_{step:06d}.pt"


class StepMasks:
    """Saves the mask of each pruning step into a round folder (a plain object: it travels to spawned workers)."""

    def __init__(self, round_dir: Path, writer: bool = True) -> None:
        self.round_dir = round_dir
        self.writer = writer

    def __call__(self, step: int, masks: Mapping[str, Tensor]) -> None:
        from lth import masks as masks_io

        if self.writer:
            masks_io.save(masks, step_mask_path(self.round_dir, step))


@register_kind
class GradualKind(Kind):
    """gradual.final_density=<s_f>: train once, pruning to s_t every gradual.every steps from gradual.start_step."""

    name = "gradual"
    dense_round0 = False  # round 0 is the gradually pruned run itself

    @classmethod
    def applies(cls, cfg: Config) -> bool:
        return cfg.gradual.final_density is not None

    def check(self, cfg: Config) -> None:
        from lth.gradual import Schedule

        Schedule.from_config(cfg.gradual).check(cfg.trainer.max_steps)
        p, tk = cfg.pruning, cfg.ticket
        if p.target_density is not None:
            raise ValueError("pruning.target_density sets the per-round fraction of iterative pruning; a gradual run "
                             f"prunes to gradual.final_density={cfg.gradual.final_density}: drop pruning.target_density")
        if p.overrides or p.output_fraction is not None:
            raise ValueError("pruning.overrides / pruning.output_fraction are per-round fractions of iterative pruning; "
                             "a gradual run prunes every layer (pruning.scope=layerwise) or the pool (global) to the "
                             "schedule's density: drop them")
        if getattr(p.granularity, "value", p.granularity) != "weight":
            raise ValueError(f"pruning.granularity={getattr(p.granularity, 'value', p.granularity)}: a gradual run "
                             "prunes single weights; use pruning.granularity=weight")
        if tk.rewind_step or tk.rewind_epoch:
            raise ValueError("ticket.rewind_step / rewind_epoch have no meaning in a gradual run (one training run, "
                             "no reset); drop them")

    def total_rounds(self, cfg: Config) -> int:
        return 0

    def prepare(self, lineage: Lineage) -> None:
        from lth.gradual import check_reachable

        cfg, manager = lineage.cfg, lineage.manager
        check_reachable({n: p.numel() for n, p in zip(manager.names, manager.params)},
                        float(cfg.gradual.final_density), _value(cfg.pruning.scope))

    def run(self, lineage: Lineage) -> None:
        folder = lineage.folder
        if folder.record(0) is not None:
            folder.discard_checkpoint(0)  # a kill after the record, before the resume point was removed
            return
        lineage.start_dense()
        torch.manual_seed(train_seed(lineage.cfg, 0))
        lineage.train_round(0, lineage.ones())

    def callbacks(self, lineage: Lineage, r: int) -> list[pl.Callback]:
        from lth.gradual import GradualPruning, Schedule

        cfg, p = lineage.cfg, lineage.cfg.pruning
        saver = StepMasks(lineage.folder.round_dir(r), lineage.folder.writer)
        self.pruning: GradualPruning = GradualPruning(
            lineage.manager, Schedule.from_config(cfg.gradual), p.criterion, _value(p.scope),
            seed=p.seed if p.seed is not None else cfg.seed, save=saver)
        return [self.pruning]

    def record_fields(self, lineage: Lineage, r: int) -> dict[str, Any]:
        from lth.early_stop import early_stop_fields

        cfg = lineage.cfg
        # early stop among the evaluations at the final density: earlier ones measured a denser network
        best = early_stop_fields(lineage.module.history, cfg.trainer.early_stop_metric, after=self.pruning.schedule.end)
        return {"kind": self.name, "fraction": None, "reset": "none", "target_density": cfg.gradual.final_density,
                **best, "gradual_schedule": [dict(e) for e in self.pruning.entries]}

    def after_round(self, lineage: Lineage, r: int) -> None:
        lineage.folder.save_mask(r, lineage.manager.masks)  # the final mask replaces the all-ones mask of the start
        lineage.folder.save_snapshots(lineage.manager.state_dict())  # θ0: what a branch of this run resets to


def _value(x: Any) -> Any:
    return getattr(x, "value", x)
