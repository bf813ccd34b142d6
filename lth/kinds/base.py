"""Experiment kinds: what a run does with its rounds. Each kind is one registered class; the runner calls only the
extension points below, so a new kind never edits the runner.

Extension points (override what the kind needs; the defaults do nothing special):
- `applies(cfg)`   classmethod: whether a config asks for this kind (exactly one kind may apply; default: lineage);
- `check(cfg)`     config checks of the kind, before anything is built or written (ValueError naming the option);
- `total_rounds(cfg)` the last round's number, for the console;
- `prepare(lineage)` after data, model, mask manager and plan are built, before the folder is claimed: load sources,
                   swap modules, check schedules (still nothing written);
- `run(lineage)`   the rounds, built from the lineage's steps (`start_dense`, `train_round`, `evaluate_round`,
                   `prune`, `reset`, `folder`);
- `callbacks(lineage, r)` extra Lightning callbacks of round r's training;
- `record_fields(lineage, r)` fields the kind sets or adds in round r's record (after training);
- `after_round(lineage, r)` files the kind writes once round r is trained, before its record is added;
- `parent(lineage)` the run folder whose dense round 0 is the run's parent (distillation's default teacher);
- `dense_round0`   class attribute: whether round 0 trains the dense network (False: train.distill needs a named
                   teacher, refused before anything is written otherwise).

Every kind that trains through `lineage.train_round` gets the training objective of `train.distill` (lth.distill).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl

from lth.config import Config
from lth.registry import Registry

if TYPE_CHECKING:
    from lth.record import RunFolder
    from lth.runner import Lineage

KINDS: Registry[type[Kind]] = Registry("experiment kind")
DEFAULT_KIND = "lineage"


class Kind:
    """Base class of the experiment kinds (see the module docstring for the extension points)."""

    name = ""
    dense_round0 = True  # round 0 trains the dense network: train.distill's default teacher for later rounds

    @classmethod
    def applies(cls, cfg: Config) -> bool:
        """Whether `cfg` asks for this kind."""
        return False

    def check(self, cfg: Config) -> None:
        """Raise ValueError for the first problem of `cfg` this kind cannot run."""

    def total_rounds(self, cfg: Config) -> int:
        """The number of the last round (for progress lines)."""
        return cfg.ticket.rounds

    def prepare(self, lineage: Lineage) -> None:
        """Set the lineage up for this kind, before anything is written."""

    def run(self, lineage: Lineage) -> None:
        """Run (or resume) the rounds."""
        raise NotImplementedError

    def callbacks(self, lineage: Lineage, r: int) -> list[pl.Callback]:
        """Extra callbacks for round `r`'s training."""
        return []

    def record_fields(self, lineage: Lineage, r: int) -> dict[str, Any]:
        """Fields set or added in round `r`'s record."""
        return {}

    def after_round(self, lineage: Lineage, r: int) -> None:
        """Write the kind's files of round `r` (the record is added after this)."""

    def parent(self, lineage: Lineage) -> RunFolder:
        """The run folder whose dense round 0 this run descends from (the default distillation teacher): its own."""
        return lineage.folder


def register_kind(cls: type[Kind]) -> type[Kind]:
    """Class decorator: register an experiment kind under its `name`."""
    KINDS.register(cls.name)(cls)
    return cls


def kind_for(cfg: Config) -> Kind:
    """The kind `cfg` asks for: the one kind whose `applies` is true, else the default (IMP lineage)."""
    chosen = [name for name in KINDS if name != DEFAULT_KIND and KINDS[name].applies(cfg)]
    if len(chosen) > 1:
        raise ValueError(f"the config asks for several experiment kinds at once: {', '.join(chosen)}")
    return KINDS[chosen[0] if chosen else DEFAULT_KIND]()
