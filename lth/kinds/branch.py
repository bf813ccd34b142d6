"""The branch kind: a saved round's mask trained under another reset (or a random mask with the same per-layer counts,
or a sanity check of `lth.kinds.sanity`: shuffle, invert, reinit), without redoing the pruning."""

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

    def check(self, cfg: Config) -> None:
        from lth.kinds.sanity import SANITY_CHECKS

        sanity = cfg.branch.get("sanity")
        if sanity is None:
            return
        if sanity not in SANITY_CHECKS:
            raise ValueError(f"branch.sanity: {SANITY_CHECKS.unknown(sanity)}")
        if cfg.branch.get("random_mask"):
            raise ValueError("branch.random_mask and branch.sanity both choose the mask; give one "
                             "(branch.sanity=shuffle is the same per-layer counts at random positions)")
        if getattr(cfg.pruning.granularity, "value", cfg.pruning.granularity) != "weight":
            raise ValueError("branch.sanity transforms a weight mask; use it with pruning.granularity=weight")

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
            mask0 = manager.mask0  # the branch's own ticket.mask0, not its source's
            manager.load_state_dict(snapshots)
            manager.mask0 = mask0
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
                from lth.pruning import random_group_masks_like

                masks = random_group_masks_like(masks, layout, seed)
        self.reset_name = cfg.ticket.reset
        self.sanity = cfg.branch.get("sanity")
        if self.sanity:
            from lth.kinds.sanity import SANITY_CHECKS, SanityInputs

            check = SANITY_CHECKS[self.sanity]
            masks = check.masks(SanityInputs(src, k, masks, derive_seed(lineage.plan.reset_seed, "sanity", k),
                                             list(manager.names)))
            self.reset_name = check.reset or cfg.ticket.reset
        self.masks = masks

    def run(self, lineage: Lineage) -> None:
        k, cfg = self.round, lineage.cfg
        if lineage.folder.record(k) is not None:
            lineage.folder.discard_checkpoint(k)
            return
        trained = self.source.load_trained(k - 1) if k > 0 else lineage.manager.state("init")
        lineage.reset(k, self.masks, trained, self.reset_name)
        torch.manual_seed(train_seed(cfg, k))
        fields = {"branch_from": str(self.source.path), "branch_round": k}
        if self.sanity:
            fields["sanity"] = self.sanity
        lineage.train_round(k, self.masks, self.reset_name, fields=fields)

    def parent(self, lineage: Lineage) -> RunFolder:
        return self.source
