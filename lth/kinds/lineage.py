"""The lineage kind (iterative magnitude pruning): round 0 trains dense, each later round prunes, resets and trains."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from lth.config import Config
from lth.kinds.base import Kind, register_kind
from lth.lit import RewindCallback
from lth.masks import check_masks, check_state

if TYPE_CHECKING:
    from lth.runner import Lineage

Finished = tuple[dict[str, Tensor], dict[str, Tensor], str]


@register_kind
class LineageKind(Kind):
    """IMP: train → record → prune → reset for rounds 0..ticket.rounds, resuming after the last finished round."""

    name = "lineage"

    def check(self, cfg: Config) -> None:
        if cfg.stability.every_round:
            from lth.kinds.pair import check_stability

            check_stability(cfg)

        from lth.pruning import INIT_CRITERIA

        if cfg.pruning.criterion in INIT_CRITERIA:
            raise ValueError(f"pruning.criterion={cfg.pruning.criterion} scores the network at initialisation; run it "
                             "as pruning at init (pruning.at_init=true, e.g. experiment=pai_mlp_mnist1d) or choose a "
                             "criterion of trained weights for IMP")

    def prepare(self, lineage: Lineage) -> None:
        from lth.validate import check_schedule

        counts, overrides, unit = lineage.plan.schedule_units(lineage.manager)
        check_schedule(counts, lineage.plan.fraction, lineage.cfg.ticket.rounds,
                       getattr(lineage.cfg.pruning.scope, "value", lineage.cfg.pruning.scope), overrides, unit)

    def run(self, lineage: Lineage) -> None:
        masks: dict[str, Tensor] | None = None
        trained: dict[str, Tensor] | None = None
        status = "ok"
        folder = lineage.folder
        for r in range(lineage.cfg.ticket.rounds + 1):
            done = finished_round(lineage, r)
            if done is not None:
                masks, trained, status = done
                folder.discard_checkpoint(r)  # a kill after the record, before the resume point was removed
                continue
            dropped = folder.drop_rounds(r)
            if [x for x in dropped if x != r]:
                warnings.warn(f"redoing round {r}: dropped the records of rounds {dropped}, which were derived from "
                              "it", stacklevel=2)
            if r > 0 and status != "ok":
                warnings.warn(f"round {r - 1} ended with status '{status}' (see rounds.jsonl); the lineage stops: "
                              f"round {r} would prune non-finite weights. Lower the learning rate and rerun into "
                              "a new out_dir.", RuntimeWarning, stacklevel=2)
                return
            if r == 0:
                lineage.start_dense()
                new_masks, reset = lineage.ones(), None
            else:
                assert masks is not None and trained is not None
                new_masks, reset = lineage.prune(r, masks, trained), lineage.cfg.ticket.reset
                lineage.reset(r, new_masks, trained, reset)
            torch.manual_seed(train_seed(lineage.cfg, r))  # e.g. dropout: the same draws after a restart
            record = lineage.train_round(r, new_masks, reset)
            masks = new_masks
            trained = {k: v.detach().cpu().clone() for k, v in lineage.model.state_dict().items()}
            status = record["status"]

    def callbacks(self, lineage: Lineage, r: int) -> list[pl.Callback]:
        if lineage.cfg.stability.every_round:  # the reset has set the round's start: the pair's starting point
            self._every_round().remember_start(lineage)
        if r == 0 and lineage.plan.rewind_step > 0:
            return [RewindCallback(lineage.manager, lineage.plan.rewind_step)]
        return []

    def record_fields(self, lineage: Lineage, r: int) -> dict[str, Any]:
        if lineage.cfg.stability.every_round:  # instability_test / instability_train of this round's subnetwork
            return self._every_round().fields(lineage, r)
        return {}

    def _every_round(self) -> Any:
        from lth.kinds.pair import EveryRound

        if not hasattr(self, "_stability"):
            self._stability = EveryRound()
        return self._stability

    def after_round(self, lineage: Lineage, r: int) -> None:
        if r == 0:  # θ0 (and θk): what every later round and every branch resets to
            lineage.folder.save_snapshots(lineage.manager.state_dict())


def train_seed(cfg: Config, r: int) -> int:
    """The global torch seed of round `r`'s training (dropout, Bernoulli samples)."""
    from lth.seeds import derive_seed

    return derive_seed(cfg.seed, "train", r)


def finished_round(lineage: Lineage, r: int) -> Finished | None:
    """Round `r`'s mask, trained weights and status if it finished and its files are intact; None: (re)do it."""
    folder, manager = lineage.folder, lineage.manager
    record = folder.record(r)
    if record is None:
        return None
    state = lineage.model.state_dict()
    try:
        masks = folder.load_mask(r)
        check_masks(masks, {n: p.shape for n, p in zip(manager.names, manager.params)})
        trained = folder.load_trained(r)
        check_state(trained, state, f"round {r}'s trained.pt")
        if r == 0:
            snapshots = folder.load_snapshots()
            for tag, snap in snapshots.get("snapshots", {}).items():
                check_state(snap, state, f"snapshots.pt ({tag})")
            manager.load_state_dict(snapshots)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
        warnings.warn(f"round {r} is recorded but its files are damaged or missing ({e}); redoing round {r} "
                      "and the rounds after it", stacklevel=3)
        return None
    return masks, trained, record.get("status", "ok")
