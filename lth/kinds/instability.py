"""The instability kind (`stability.pair=true`): the instability of one starting point — θ0 or θk of this seed's
dense network, or (with `branch.from=<lineage> branch.round=K`) round K's mask under `ticket.reset` from that lineage's
snapshots — measured by training two copies to the end of the round and interpolating between them."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from lth.config import Config
from lth.kinds.base import Kind, register_kind
from lth.kinds.branch import BranchKind
from lth.kinds.pair import check_stability, measure_pair, train_from
from lth.masks import density
from lth.record import RoundRecord, RunFolder
from lth.seeds import derive_seed

if TYPE_CHECKING:
    from lth.runner import Lineage


@register_kind
class InstabilityKind(Kind):
    """stability.pair=true: two copies from one starting point, their linear path and its error barrier (one round)."""

    name = "instability"
    dense_round0 = False  # its round trains the pair, no dense parent before it

    @classmethod
    def applies(cls, cfg: Config) -> bool:
        return bool(cfg.stability.pair)

    def check(self, cfg: Config) -> None:
        check_stability(cfg)
        if cfg.stability.every_round:
            raise ValueError("stability.every_round adds the instability to each round of an IMP lineage; "
                             "stability.pair=true measures one starting point. Set one of them, not both")
        if cfg.supermask.method:
            raise ValueError(f"stability.pair=true trains ordinary weights; got supermask.method="
                             f"{cfg.supermask.method} (use supermask=none)")

    def total_rounds(self, cfg: Config) -> int:
        return int(cfg.branch["round"]) if cfg.branch.get("from") else 0

    def prepare(self, lineage: Lineage) -> None:
        cfg = lineage.cfg
        self.source: RunFolder | None = None
        if not cfg.branch.get("from"):
            self.round, self.masks = 0, lineage.ones()
            return
        BranchKind.prepare(self, lineage)  # type: ignore[arg-type]  sets source, round and masks
        assert self.source is not None
        theirs = (self.source.existing_config() or {}).get("ticket", {})
        for key in ("rewind_step", "rewind_epoch"):
            if int(theirs.get(key, 0) or 0) != int(getattr(cfg.ticket, key)):
                raise ValueError(f"ticket.{key}={getattr(cfg.ticket, key)} but branch.from={self.source.path} was "
                                 f"run with ticket.{key}={theirs.get(key, 0)}: give the same rewind point")

    def run(self, lineage: Lineage) -> None:
        r, cfg, folder, manager = self.round, lineage.cfg, lineage.folder, lineage.manager
        if folder.record(r) is not None:
            return
        lineage.stop.check(r)
        lineage.rounds_run += 1
        t0 = time.perf_counter()
        if self.source is None:  # the dense network's own training from θk (θ0)
            start, reset = self._dense_start(lineage), "none"
            schedule = lineage.continuation(lineage.plan.rewind_step)
        else:
            trained = self.source.load_trained(r - 1) if r > 0 else manager.state("init")
            lineage.reset(r, self.masks, trained, cfg.ticket.reset)
            start, reset = {n: v.detach().cpu().clone() for n, v in lineage.model.state_dict().items()}, cfg.ticket.reset
            schedule = lineage.schedule(self.masks, reset)  # as a round of the source under this reset trains
            folder.save_snapshots(manager.state_dict())
        folder.save_mask(r, self.masks)
        fields = measure_pair(lineage, r, start, self.masks, schedule)
        manager.set_masks(self.masks)
        folder.add(self._record(lineage, r, fields, reset, time.perf_counter() - t0))

    def _dense_start(self, lineage: Lineage) -> dict[str, torch.Tensor]:
        """θ0, or θk: this seed's dense network after k steps in the lineage's own data order (as its IMP lineage's
        round 0 gets there), trained once and kept in snapshots.pt."""
        folder, manager, k = lineage.folder, lineage.manager, lineage.plan.rewind_step
        if k == 0:
            folder.save_snapshots(manager.state_dict())
            return manager.state("init")
        if (folder.path / "snapshots.pt").exists():
            manager.load_state_dict(folder.load_snapshots())
        if not manager.has_snapshot("rewind"):
            cfg = lineage.cfg
            first_k = replace(lineage.schedule(lineage.ones()), steps=k)
            state = train_from(lineage, folder.round_dir(0) / "stability" / "rewind_point", manager.state("init"),
                               lineage.ones(), first_k, cfg.seed, derive_seed(cfg.seed, "train", 0), 0)
            lineage.model.load_state_dict(state)
            manager.snapshot("rewind")
            folder.save_snapshots(manager.state_dict())
        return manager.state("rewind")

    def _record(self, lineage: Lineage, r: int, fields: dict[str, Any], reset: str, seconds: float) -> RoundRecord:
        cfg = lineage.cfg
        errors = fields["pair_test_error"]
        values: dict[str, Any] = {
            "round": r, "density": density(self.masks), "layer_density": lineage.manager.layer_density(),
            "test_acc": 1.0 - sum(errors) / 2, "test_loss": sum(fields["pair_test_loss"]) / 2, "train_steps": fields["stability_steps"],
            "wall_seconds": round(seconds, 3), "criterion": cfg.pruning.criterion, "reset": reset,
            "fraction": lineage.plan.fraction, "scope": getattr(cfg.pruning.scope, "value", cfg.pruning.scope),
            "seed": cfg.seed, "granularity": getattr(cfg.pruning.granularity, "value", cfg.pruning.granularity),
            **fields, "kind": self.name,
        }
        if self.source is not None:
            values.update(branch_from=str(self.source.path), branch_round=r)
        return RoundRecord.build(**values)
