"""Instability of a starting point: two copies trained from it with different data orders (the same weights, mask and
steps), then the linear path between them (`lth.stability`). Shared by the instability kind and by IMP lineages with
`stability.every_round=true`.

The copies train one after the other in the run's process (each resumable from its own checkpoint): deterministic,
and a study already keeps every worker busy with other lineages. Files of round r: `round_XX/stability/copy_a|b/`
(`trained.pt`, a `checkpoints/last.ckpt` while it trains) and `round_XX/stability.jsonl` (the path, one row per α).
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from lth.config import Config
from lth.io import atomic_torch_save, write_jsonl
from lth.seeds import derive_seed
from lth.stability import has_batchnorm, instabilities, interpolate

if TYPE_CHECKING:
    from lth.runner import Lineage, RoundSchedule

COPIES = ("a", "b")
PATH_FILE = "stability.jsonl"


def check_stability(cfg: Config) -> None:
    """Raise ValueError for the first bad `stability.*` value."""
    s = cfg.stability
    if not isinstance(s.alphas, int) or s.alphas < 2:
        raise ValueError(f"stability.alphas must be an integer >= 2 (both ends of the path), got {s.alphas!r}")
    if s.batchnorm not in (True, False, "auto"):
        raise ValueError(f"stability.batchnorm must be one of true, false, auto; got {s.batchnorm!r}")
    for key in ("bn_batches", "train_examples"):
        v = getattr(s, key)
        if v is not None and v < 1:
            raise ValueError(f"stability.{key} must be a positive number or null (all), got {v}")


def copy_seeds(seed: int, r: int) -> tuple[int, int]:
    """The seeds of round `r`'s two copies (data order and torch's global stream), derived from the lineage seed."""
    return derive_seed(seed, "stability", r, COPIES[0]), derive_seed(seed, "stability", r, COPIES[1])


def with_order(data: Any, seed: int) -> Any:
    """The data module with its training order drawn from `seed`; the splits and their standardisation unchanged."""
    data.setup("fit")
    other = copy.copy(data)
    other.seed = seed
    other._train_loader = other._pending_train_state = None
    return other


def copy_dir(lineage: Lineage, r: int, name: str) -> Path:
    """Where copy `name` of round `r` trains."""
    return lineage.folder.round_dir(r) / "stability" / f"copy_{name}"


def train_from(lineage: Lineage, where: Path, start: Mapping[str, Tensor], masks: Mapping[str, Tensor],
               schedule: RoundSchedule, order_seed: int, torch_seed: int, r: int) -> dict[str, Tensor]:
    """Train the model from `start` under `masks` on `schedule`, data in the order of `order_seed`, into `where`
    (`trained.pt`; resumes from `checkpoints/last.ckpt`, or returns a finished `trained.pt`); the trained state."""
    from lth.lit import (
        LastCheckpoint,
        MaskingCallback,
        ResumableTrainAccuracy,
        RNGStateCallback,
        TicketModule,
        build_trainer,
    )
    from lth.loggers import quiet_third_party

    done = where / "trained.pt"
    if done.exists():
        return torch.load(done, map_location="cpu", weights_only=True)
    cfg, model, manager = lineage.cfg, lineage.model, lineage.manager
    model.load_state_dict(dict(start))
    manager.set_masks(masks)
    data = with_order(lineage.data, order_seed)
    module = TicketModule(model, schedule.optimizer, data.num_classes, schedule.scheduler)
    last = LastCheckpoint(where / "checkpoints", cfg.trainer.checkpoint_every, lineage.stop, r,
                          min_interval_s=cfg.trainer.checkpoint_min_interval_s)
    ckpt = last.path if last.path.exists() else None
    trainer = build_trainer(cfg.trainer, schedule.steps, [ResumableTrainAccuracy(), MaskingCallback(manager),
                                                 RNGStateCallback(), last], [], where)
    torch.manual_seed(torch_seed)
    with quiet_third_party(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no `val_dataloader`")  # the path evaluates the copies
        trainer.fit(module, data.train_dataloader(), ckpt_path=ckpt)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if lineage.folder.writer:
        atomic_torch_save(state, done)
        if last.path.exists():
            last.path.unlink()
    return state


def path(lineage: Lineage, state_a: Mapping[str, Tensor], state_b: Mapping[str, Tensor],
         masks: Mapping[str, Tensor]) -> list[dict[str, float]]:
    """The linear path between two trained states: test and train loss and error at `stability.alphas` points."""
    s, data, model = lineage.cfg.stability, lineage.data, lineage.model
    x_train, y_train = data.train
    n = s.train_examples or len(x_train)
    splits = {"test": data.test, "train": (x_train[:n], y_train[:n])}
    bn = None
    if s.batchnorm is True or (s.batchnorm == "auto" and has_batchnorm(model)):
        bs = lineage.cfg.data.batch_size
        bn = [x_train[i:i + bs] for i in range(0, len(x_train), bs)][: s.bn_batches]
    kept = masks if lineage.manager.mask0 == "zero" else None  # freeze_init: pruned weights are θ0 at both ends
    return interpolate(model, state_a, state_b, s.alphas, splits, kept, bn, lineage.cfg.data.eval_batch_size)


def measure_pair(lineage: Lineage, r: int, start: Mapping[str, Tensor], masks: Mapping[str, Tensor],
                 schedule: RoundSchedule) -> dict[str, Any]:
    """Train round `r`'s two copies from `start` on `schedule` and write their path; the record's fields
    (`instability_test`, `instability_train`, the copies' seeds, steps, schedule start, endpoint errors). The model is
    left at copy a."""
    t0 = time.perf_counter()
    seeds = copy_seeds(lineage.cfg.seed, r)
    start = {k: v.detach().cpu().clone() for k, v in start.items()}
    if lineage.console is not None:
        lineage.console.say(f"round {r}: instability pair, {schedule.steps} steps per copy")
    states = [train_from(lineage, copy_dir(lineage, r, name), start, masks, schedule, seed, seed, r)
              for name, seed in zip(COPIES, seeds)]
    curve = path(lineage, states[0], states[1], masks)
    if lineage.folder.writer:
        write_jsonl(lineage.folder.round_dir(r) / PATH_FILE, curve)
    return {
        **instabilities(curve),
        "stability_seeds": list(seeds),
        "stability_steps": schedule.steps,
        "stability_schedule_start": schedule.start,
        "stability_rewind_step": lineage.plan.rewind_step,
        "stability_alphas": len(curve),
        "pair_test_error": [curve[0]["test_error"], curve[-1]["test_error"]],
        "pair_test_loss": [curve[0]["test_loss"], curve[-1]["test_loss"]],
        "pair_train_error": [curve[0]["train_error"], curve[-1]["train_error"]],
        "stability_seconds": round(time.perf_counter() - t0, 3),
    }


class EveryRound:
    """`stability.every_round=true` in an IMP lineage: each round's instability from its rewind point, measured
    after the round is trained (its trained weights and mask are put back afterwards)."""

    def __init__(self) -> None:
        self.start: dict[str, Tensor] | None = None
        self.schedule: RoundSchedule | None = None

    def remember_start(self, lineage: Lineage) -> None:
        """Keep the round's starting weights and schedule (called once the reset has set them, before training)."""
        self.start = {k: v.detach().cpu().clone() for k, v in lineage.model.state_dict().items()}
        self.schedule = lineage.round_schedule

    def fields(self, lineage: Lineage, r: int) -> dict[str, Any]:
        """Round `r`'s instability fields; round 0 starts from θk (rewind point) when there is one, and trains the
        rest of its schedule after θk (max_steps − k steps, lr from step k); later rounds train as the round did from
        its reset."""
        manager, model = lineage.manager, lineage.model
        trained = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        masks = {n: m.detach().cpu().clone() for n, m in manager.masks.items()}
        k = lineage.plan.rewind_step
        if r == 0 and k > 0:
            start, schedule = manager.state("rewind"), lineage.continuation(k)
        else:
            assert self.start is not None and self.schedule is not None, "the round's start was not remembered"
            start, schedule = self.start, self.schedule
        try:
            return measure_pair(lineage, r, start, masks, schedule)
        finally:
            model.load_state_dict(trained)
            manager.set_masks(masks)
