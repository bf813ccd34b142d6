"""Supermask kinds: heuristic masks evaluated on θ0 without training, and learned supermasks (edge-popup, Bernoulli).

Their folders hold what a branch needs: `snapshots.pt` (θ0 of this run = the frozen weights the supermask multiplies,
under the original parameter names), `round_XX/mask.pt` (an ordinary mask) and `round_XX/trained.pt`, so
`branch.from=<this folder> branch.round=K` trains a supermask as a ticket.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from lth.config import Config
from lth.early_stop import no_early_stop
from lth.kinds.base import Kind, register_kind
from lth.kinds.lineage import train_seed
from lth.masks import density
from lth.record import RunFolder
from lth.seeds import derive_seed
from lth.supermask.config import EVAL_MASKS
from lth.supermask.config import METHODS as ALL_METHODS

if TYPE_CHECKING:
    from lth.runner import Lineage



def check_supermask(cfg: Config) -> None:
    """Raise ValueError for the first problem in `cfg.supermask` that every method shares."""
    from lth.supermask.weights import WEIGHTS

    s = cfg.supermask
    if s.method not in ALL_METHODS:
        raise ValueError(f"supermask.method: unknown supermask method '{s.method}'; valid choices: "
                         f"{', '.join(sorted(ALL_METHODS))}")
    if s.weights not in WEIGHTS:
        raise ValueError(f"supermask.weights: {WEIGHTS.unknown(s.weights)}")
    if cfg.branch.get("from"):
        raise ValueError("branch.from trains a saved mask as a ticket; run the branch without a supermask "
                         "(supermask=none), e.g. `branch.from=<supermask run> branch.round=0`")
    if s.scale_fan and s.method != "edge_popup":
        raise ValueError("supermask.scale_fan (weights × 1/√k) applies to supermask.method=edge_popup only")


class _Supermask(Kind):
    """What both supermask kinds share: frozen weights from θ0 that become this run's "init" snapshot."""

    def freeze(self, lineage: Lineage, w0: Mapping[str, Tensor]) -> None:
        """Load the frozen weights (from θ0 `w0`) and make them this run's "init" snapshot."""
        from lth.supermask.weights import frozen_weights

        s, manager = lineage.cfg.supermask, lineage.manager
        manager.set_masks(lineage.ones())
        manager.load_weights(frozen_weights(s.weights, w0, s.k, s.scale_fan))
        manager.snapshot("init")

    def common_fields(self, cfg: Config) -> dict[str, Any]:
        s = cfg.supermask
        return {"supermask": s.method, "weights": s.weights, "trained": False, "reset": "none", "fraction": None}


@register_kind
class HeuristicSupermask(_Supermask):
    """supermask.method=heuristic: a criterion applied to a finished run's θ0 and trained weights, evaluated on θ0."""

    name = "heuristic_supermask"

    @classmethod
    def applies(cls, cfg: Config) -> bool:
        return cfg.supermask.method == "heuristic"

    def check(self, cfg: Config) -> None:
        check_supermask(cfg)
        s = cfg.supermask
        try:
            densities = s.densities()
        except (TypeError, ValueError):
            raise ValueError(f"supermask.density must be a number or a list of numbers, got {s.density!r}") from None
        if not densities or not all(0.0 < d <= 1.0 for d in densities):
            raise ValueError(f"supermask.density values must be in (0, 1], got {s.density!r}")
        from lth.pruning import CRITERIA

        if s.criterion not in CRITERIA:
            raise ValueError(f"supermask.criterion: {CRITERIA.unknown(s.criterion)}")
        if s.source is None:
            raise ValueError("supermask.method=heuristic needs supermask.from=<a finished run's folder> "
                             "(and supermask.round=<K>, default 0)")
        src = RunFolder(s.source, writer=False)
        if not (src.path / "rounds.jsonl").exists():
            raise ValueError(f"supermask.from={src.path} is not a run folder (no rounds.jsonl)")
        if src.record(int(s.round)) is None:
            raise ValueError(f"supermask.from={src.path} has no finished round {s.round}; "
                             f"finished: {[r['round'] for r in src.rounds()]}")

    def total_rounds(self, cfg: Config) -> int:
        return max(len(cfg.supermask.densities()) - 1, 0)

    def prepare(self, lineage: Lineage) -> None:
        from lth.supermask.heuristic import heuristic_masks

        cfg, manager = lineage.cfg, lineage.manager
        s, p = cfg.supermask, cfg.pruning
        self.source = RunFolder(s.source, writer=False)
        manager.load_state_dict(self.source.load_snapshots())  # names must match: the same model config
        try:
            lineage.model.load_state_dict(manager.state("init"))
        except RuntimeError as e:
            raise ValueError(f"supermask.from={self.source.path} holds another model than model={cfg.model.name} "
                             f"{dict(cfg.model.args)}: {e}") from None
        w_init = {n: v.detach().cpu().clone() for n, v in manager.weights("init").items()}
        self.freeze(lineage, w_init)
        k = int(s.round)
        trained = self.source.load_trained(k)
        seed = p.seed if p.seed is not None else cfg.seed
        self.masks = [  # every density is checked before anything is written
            heuristic_masks(s.criterion, w_init, {n: trained[n] for n in manager.names}, d,
                            scope=getattr(p.scope, "value", p.scope), source_masks=self.source.load_mask(k),
                            generator=torch.Generator().manual_seed(derive_seed(seed, "supermask", k)))
            for d in s.densities()
        ]

    def run(self, lineage: Lineage) -> None:
        s = lineage.cfg.supermask
        lineage.folder.save_snapshots(lineage.manager.state_dict())
        fields = {**self.common_fields(lineage.cfg), "criterion": s.criterion, "source": str(self.source.path),
                  "source_round": int(s.round), **no_early_stop(lineage.cfg.trainer.early_stop_metric)}
        for r, masks in enumerate(self.masks):
            if lineage.folder.record(r) is None:
                lineage.model.load_state_dict(lineage.manager.state("init"))
                lineage.evaluate_round(r, masks, fields)


@register_kind
class LearnedSupermask(_Supermask):
    """supermask.method=edge_popup | bernoulli: scores trained over frozen weights; the learned mask is round 0's."""

    name = "learned_supermask"

    @classmethod
    def applies(cls, cfg: Config) -> bool:
        return bool(cfg.supermask.method) and cfg.supermask.method != "heuristic"

    def check(self, cfg: Config) -> None:
        check_supermask(cfg)
        s = cfg.supermask
        if s.source is not None:
            raise ValueError(f"supermask.from is read by supermask.method=heuristic only, not '{s.method}'")
        if not 0.0 < s.k <= 1.0:
            raise ValueError(f"supermask.k (the fraction of weights kept) must be in (0, 1], got {s.k}")
        if s.eval_mask not in EVAL_MASKS:
            raise ValueError(f"supermask.eval_mask: unknown '{s.eval_mask}'; valid choices: {', '.join(EVAL_MASKS)}")
        if cfg.ticket.rewind_step or cfg.ticket.rewind_epoch:
            raise ValueError("ticket.rewind_step / rewind_epoch have no meaning for a learned supermask "
                             "(its weights are frozen)")

    def total_rounds(self, cfg: Config) -> int:
        return 0

    def prepare(self, lineage: Lineage) -> None:
        from lth.supermask.swap import method_options, to_supermask

        s, p = lineage.cfg.supermask, lineage.cfg.pruning
        self.freeze(lineage, {n: v.clone() for n, v in lineage.manager.weights("init").items()})
        options = {o: getattr(s, o) for o in method_options(s.method)}
        lineage.model = to_supermask(lineage.model, s.method, include=p.include, exclude=p.exclude,
                                     seed=derive_seed(lineage.cfg.seed, "supermask", "scores"), **options)

    def run(self, lineage: Lineage) -> None:
        if lineage.folder.record(0) is not None:
            return
        torch.manual_seed(train_seed(lineage.cfg, 0))  # Bernoulli samples: the same draws after a restart
        lineage.train_round(0, lineage.ones())

    def record_fields(self, lineage: Lineage, r: int) -> dict[str, Any]:
        from lth.supermask.swap import method_options, supermask_masks

        s = lineage.cfg.supermask
        masks = supermask_masks(lineage.model)
        return {**self.common_fields(lineage.cfg), **{o: getattr(s, o) for o in method_options(s.method)},
                "criterion": None, "scale_fan": s.scale_fan, "density": density(masks),
                "layer_density": {n: int(m.sum()) / m.numel() for n, m in masks.items()}}

    def after_round(self, lineage: Lineage, r: int) -> None:
        from lth.supermask.swap import supermask_masks

        lineage.folder.save_mask(r, supermask_masks(lineage.model))  # the learned supermask replaces the all-ones mask
        lineage.folder.save_snapshots(lineage.manager.state_dict())
