"""Supermask experiments as lineages: heuristic masks evaluated on θ0 without training, and learned supermasks.

`SupermaskLineage` reuses `lth.runner.Lineage` (data, model, mask manager, folder, trainer, records). Its folder has
what a branch needs: `snapshots.pt` (θ0 of this run = the frozen weights the supermask multiplies, under the
original parameter names), `round_XX/mask.pt` (an ordinary mask) and `round_XX/trained.pt`, so
`branch.from=<this folder> branch.round=K` trains a supermask as a ticket.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lth import masks as masks_lib
from lth.config import Config
from lth.lit import TicketModule
from lth.record import RoundSink, RunFolder
from lth.runner import ConsoleSink, Lineage, derive_seed, optimizer_factory
from lth.supermask.config import EVAL_MASKS
from lth.supermask.config import METHODS as ALL_METHODS
from lth.supermask.heuristic import heuristic_masks
from lth.supermask.swap import method_options, supermask_masks, to_supermask
from lth.supermask.weights import WEIGHTS, frozen_weights


def check_config(cfg: Config) -> None:
    """Raise ValueError for the first problem in `cfg.supermask` (before any file is written)."""
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
    if s.method == "heuristic":
        _check_heuristic(cfg)
        return
    if s.source is not None:
        raise ValueError(f"supermask.from is read by supermask.method=heuristic only, not '{s.method}'")
    if not 0.0 < s.k <= 1.0:
        raise ValueError(f"supermask.k (the fraction of weights kept) must be in (0, 1], got {s.k}")
    if s.eval_mask not in EVAL_MASKS:
        raise ValueError(f"supermask.eval_mask: unknown '{s.eval_mask}'; valid choices: {', '.join(EVAL_MASKS)}")
    if cfg.ticket.rewind_step or cfg.ticket.rewind_epoch:
        raise ValueError("ticket.rewind_step / rewind_epoch have no meaning for a learned supermask "
                         "(its weights are frozen)")


def _check_heuristic(cfg: Config) -> None:
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
    src = RunFolder(s.source)
    if not (src.path / "rounds.jsonl").exists():
        raise ValueError(f"supermask.from={src.path} is not a run folder (no rounds.jsonl)")
    if src.record(int(s.round)) is None:
        raise ValueError(f"supermask.from={src.path} has no finished round {s.round}; "
                         f"finished: {[r['round'] for r in src.rounds()]}")


class SupermaskLineage(Lineage):
    """A supermask experiment in a lineage folder: one round per density (heuristic) or round 0 (learned)."""

    def __init__(self, cfg: Config, out_dir: str | Path, sinks: list[RoundSink] | None = None) -> None:
        check_config(cfg)
        self.heuristic = cfg.supermask.method == "heuristic"
        self.densities = cfg.supermask.densities() if self.heuristic else []
        super().__init__(cfg, out_dir, sinks if sinks is not None else [ConsoleSink(max(len(self.densities) - 1, 0))])
        if self.heuristic:
            self._load_source()
        else:
            self._swap_in()

    # ----- setup
    def _freeze(self, w0: Mapping[str, Tensor]) -> None:
        """Load the frozen weights (from θ0 `w0`) and make them this run's "init" snapshot."""
        s = self.cfg.supermask
        self.manager.set_masks({n: torch.ones_like(m) for n, m in self.manager.masks.items()})
        self.manager.load_weights(frozen_weights(s.weights, w0, s.k, s.scale_fan))
        self.manager.snapshot("init")

    def _swap_in(self) -> None:
        s, p = self.cfg.supermask, self.cfg.pruning
        self._freeze({n: v.clone() for n, v in self.manager.weights("init").items()})
        options = {o: getattr(s, o) for o in method_options(s.method)}
        self.model = to_supermask(self.model, s.method, include=p.include, exclude=p.exclude,
                                  seed=derive_seed(self.cfg.seed, "supermask", "scores"), **options)

    def _load_source(self) -> None:
        s = self.cfg.supermask
        self.source = RunFolder(s.source)
        self.manager.load_state_dict(self.source.load_snapshots())  # names must match: the same model config
        try:
            self.model.load_state_dict(self.manager.state("init"))
        except RuntimeError as e:
            raise ValueError(f"supermask.from={self.source.path} holds another model than model={self.cfg.model.name} "
                             f"{dict(self.cfg.model.args)}: {e}") from None
        self.w_init = {n: v.detach().cpu().clone() for n, v in self.manager.weights("init").items()}
        self._freeze(self.w_init)

    # ----- the loop
    def run(self) -> list[dict[str, Any]]:
        """Evaluate every density (heuristic) or train round 0 (learned), skipping finished rounds."""
        try:
            if self.heuristic:
                self._run_heuristic()
            else:
                self._run_learned()
        finally:
            self.folder.close()
        return self.folder.rounds()

    def _run_learned(self) -> None:
        if self.folder.record(0) is not None:
            return
        torch.manual_seed(derive_seed(self.cfg.seed, "train", 0))  # Bernoulli samples: the same draws after a restart
        self.train_round(0, {n: torch.ones_like(m) for n, m in self.manager.masks.items()})

    def _run_heuristic(self) -> None:
        s, p = self.cfg.supermask, self.cfg.pruning
        k = int(s.round)
        trained = self.source.load_trained(k)
        w_final = {n: trained[n] for n in self.manager.names}
        source_masks = self.source.load_mask(k)
        seed = p.seed if p.seed is not None else self.cfg.seed
        all_masks = [  # every density is checked before the first evaluation
            heuristic_masks(s.criterion, self.w_init, w_final, d, scope=getattr(p.scope, "value", p.scope),
                            source_masks=source_masks,
                            generator=torch.Generator().manual_seed(derive_seed(seed, "supermask", k)))
            for d in self.densities
        ]
        self.folder.save_snapshots(self.manager.state_dict())
        for r, masks in enumerate(all_masks):
            if self.folder.record(r) is None:
                self.evaluate_round(r, masks)

    def evaluate_round(self, r: int, masks: dict[str, Tensor]) -> dict[str, Any]:
        """Evaluate the frozen weights under `masks` on val and test, without training, as round `r`."""
        start = time.perf_counter()
        self.folder.save_mask(r, masks)
        self.model.load_state_dict(self.manager.state("init"))
        self.manager.set_masks(masks)
        module = TicketModule(self.model, optimizer_factory(self.cfg.optimizer), self.data.num_classes)
        trainer = self._trainer(r, [])
        trainer.validate(module, [self.data.val_dataloader(), self.data.test_dataloader()], verbose=False)
        record = self._record(r, module, trainer, time.perf_counter() - start, None)
        self.folder.save_trained(r, self.model.state_dict())
        self.folder.add(record)
        return record

    # ----- records
    def _record(self, r: int, module: TicketModule, trainer: Any, seconds: float,
                extra: Mapping[str, Any] | None) -> dict[str, Any]:
        record = super()._record(r, module, trainer, seconds, extra)
        s = self.cfg.supermask
        record.update(supermask=s.method, weights=s.weights, trained=False, reset="none", fraction=None)
        if self.heuristic:
            record.update(criterion=s.criterion, source=str(self.source.path), source_round=int(s.round))
            record.update(dict.fromkeys(("early_stop_step", "early_stop_test_acc", "early_stop_val_loss",
                                         "early_stop_val_acc")))  # no training: nothing to stop early
            return record
        masks = supermask_masks(self.model)
        self.folder.save_mask(r, masks)  # the learned supermask replaces the all-ones mask saved before training
        record.update({o: getattr(s, o) for o in method_options(s.method)})
        record.update(criterion=None, scale_fan=s.scale_fan, density=masks_lib.density(masks),
                      layer_density={n: int(m.sum()) / m.numel() for n, m in masks.items()})
        return record


def run_supermask(cfg: Config, out_dir: str | Path, sinks: list[RoundSink] | None = None) -> list[dict[str, Any]]:
    """Run (or resume) one supermask experiment into `out_dir`; returns its round records."""
    return SupermaskLineage(cfg, out_dir, sinks).run()

