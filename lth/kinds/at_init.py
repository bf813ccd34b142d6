"""The pruning-at-init kind: round 0 scores θ0 (SNIP, GraSP, SynFlow, magnitude at init, random), prunes to
`pruning.target_density` before any training, then trains the sparse network.

A config asks for it with `pruning.at_init=true` (the `experiment=pai_*` presets set it). Its folder is like every
other kind's: `snapshots.pt` (θ0), `round_00/mask.pt`, `round_00/trained.pt`, `rounds.jsonl`, plus
`round_00/scores.pt`, the scores the mask was chosen by (SynFlow: those of its first iteration, all weights kept), which
the `invert` sanity branch ranks by. `branch.from=<this folder> branch.round=0` branches it like any run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from lth.config import Config
from lth.distributed import agree
from lth.io import atomic_torch_save
from lth.kinds.base import Kind, register_kind
from lth.kinds.lineage import train_seed
from lth.seeds import derive_seed

if TYPE_CHECKING:
    from pathlib import Path

    from lth.runner import Lineage

SCORES_FILE = "scores.pt"


def at_init_density(cfg: Config) -> float:
    """The density a pruning-at-init run prunes to: pruning.target_density."""
    return float(cfg.pruning.target_density)


def scores_path(folder: Any, r: int) -> Path:
    """Where round `r`'s scores are saved in a run folder."""
    return folder.round_dir(r) / SCORES_FILE


@register_kind
class PruningAtInit(Kind):
    """pruning.at_init=true: round 0 = prune θ0 with pruning.criterion to pruning.target_density, then train."""

    name = "pruning_at_init"
    dense_round0 = False  # round 0 trains the mask chosen at init

    @classmethod
    def applies(cls, cfg: Config) -> bool:
        return bool(cfg.pruning.at_init) and not cfg.branch.get("from") and not cfg.supermask.method

    def check(self, cfg: Config) -> None:
        p = cfg.pruning
        if p.target_density is None:
            raise ValueError("pruning.at_init=true prunes once, before training, to pruning.target_density: set it "
                             "(e.g. pruning.target_density=0.01)")
        if getattr(p.granularity, "value", p.granularity) != "weight":
            raise ValueError("pruning.at_init=true prunes single weights; use pruning.granularity=weight")
        if cfg.ticket.rewind_step or cfg.ticket.rewind_epoch:
            raise ValueError("pruning.at_init=true trains from θ0 once; ticket.rewind_step/rewind_epoch do not apply")

    def total_rounds(self, cfg: Config) -> int:
        return 0

    def prepare(self, lineage: Lineage) -> None:
        from lth.pruning import at_init_criterion

        p = lineage.cfg.pruning
        self.fraction = 1.0 - at_init_density(lineage.cfg)
        gen = torch.Generator().manual_seed(derive_seed(p.seed if p.seed is not None else lineage.cfg.seed,
                                                        "criterion", 0))
        self.criterion = at_init_criterion(p.criterion, p, gen)
        if hasattr(self.criterion, "example"):
            self.criterion.example = lineage.plan.example
        self.chosen: tuple[dict[str, Tensor], dict[str, Tensor]] | None = None
        if lineage.folder.record(0) is None:  # scored before the folder is claimed: a refused collapse writes nothing
            self.chosen = self.masks(lineage)
            lineage.collapse_fields(0, self.chosen[0])

    def masks(self, lineage: Lineage) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Round 0's masks from θ0 (rank 0's on every rank) and the scores they were chosen by."""
        from lth.pruning.at_init import take_batches

        cfg, manager = lineage.cfg, lineage.manager
        batches = take_batches(lineage.data.train_dataloader(), cfg.pruning.init_batches) \
            if self.criterion.needs_data else []
        scope = getattr(cfg.pruning.scope, "value", cfg.pruning.scope)
        masks, scores = self.criterion.prune(lineage.model, manager.names, lineage.ones(), batches, self.fraction,
                                             scope=scope, overrides=lineage.plan.overrides)
        return agree(masks), {n: s.detach().cpu() for n, s in scores.items()}

    def run(self, lineage: Lineage) -> None:
        folder = lineage.folder
        if folder.record(0) is not None:
            folder.discard_checkpoint(0)
            return
        lineage.start_dense()
        masks, scores = self.chosen if self.chosen is not None else self.masks(lineage)
        if folder.writer:
            atomic_torch_save(scores, scores_path(folder, 0))
        lineage.manager.set_masks(masks)
        torch.manual_seed(train_seed(lineage.cfg, 0))
        lineage.train_round(0, masks, None, fields={"target_density": at_init_density(lineage.cfg)})

    def record_fields(self, lineage: Lineage, r: int) -> dict[str, Any]:
        return {"kind": self.name, "fraction": self.fraction}

    def after_round(self, lineage: Lineage, r: int) -> None:
        lineage.folder.save_snapshots(lineage.manager.state_dict())  # θ0: what branches reset to
