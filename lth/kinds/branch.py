"""The branch kind: a saved round's mask trained under another reset (or a random mask with the same per-layer counts),
without redoing the pruning."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from lth.config import Config
from lth.kinds.base import Kind, register_kind
from lth.kinds.lineage import train_seed
from lth.masks import check_masks, check_state, random_masks_like
from lth.record import RunFolder
from lth.seeds import derive_seed

if TYPE_CHECKING:
    from lth.runner import Lineage


@register_kind
class BranchKind(Kind):
    """branch.from=<run folder> branch.round=K: round K's mask, reset by ticket.reset from that run's snapshots."""

    name = "branch"

    @classmethod
    def applies(cls, cfg: Config) -> bool:
        return bool(cfg.branch.get("from")) and not cfg.supermask.method and not cfg.stability.pair

    def total_rounds(self, cfg: Config) -> int:
        return int(cfg.branch["round"])

    def prepare(self, lineage: Lineage) -> None:
        cfg, manager = lineage.cfg, lineage.manager
        self.source = src = RunFolder(cfg.branch["from"], writer=False)
        self.round = k = int(cfg.branch["round"])
        if src.record(k) is None:
            raise ValueError(f"branch.from={src.path} has no finished round {k}; "
                             f"finished: {[x['round'] for x in src.rounds()]}")
        try:
            snapshots = src.load_snapshots()
            for tag, state in snapshots.get("snapshots", {}).items():
                check_state(state, lineage.model.state_dict(), f"its snapshots.pt ({tag})")
            manager.load_state_dict(snapshots)
            masks = src.load_mask(k)
            check_masks(masks, {n: p.shape for n, p in zip(manager.names, manager.params)})
        except (ValueError, KeyError) as e:
            raise ValueError(f"branch.from={src.path} does not match this model (model={cfg.model.name} "
                             f"{dict(cfg.model.args)}): {e}") from None
        if cfg.branch.get("random_mask"):
            seed = derive_seed(lineage.plan.reset_seed, "random_mask", k)
            layout = lineage.plan.layout
            if layout is None:
                masks = random_masks_like(masks, seed)
            else:  # the same number of units per layer, at random units
                from lth.pruning import random_neuron_masks_like

                masks = random_neuron_masks_like(masks, layout.removable, seed, layout.consumers)
        self.masks = masks

    def run(self, lineage: Lineage) -> None:
        k, cfg = self.round, lineage.cfg
        if lineage.folder.record(k) is not None:
            lineage.folder.discard_checkpoint(k)
            return
        trained = self.source.load_trained(k - 1) if k > 0 else lineage.manager.state("init")
        lineage.reset(k, self.masks, trained, cfg.ticket.reset)
        torch.manual_seed(train_seed(cfg, k))
        lineage.train_round(k, self.masks, cfg.ticket.reset,
                            fields={"branch_from": str(self.source.path), "branch_round": k})

    def parent(self, lineage: Lineage) -> RunFolder:
        return self.source
