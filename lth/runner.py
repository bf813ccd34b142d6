"""One run: a validated plan, then the experiment kind's rounds (train → record → prune → reset); resumable."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from lth import structured
from lth.config import Config, config_dict
from lth.distill import check_default_teacher, distiller_for
from lth.distributed import MaskAgreement, agree, is_spawn, is_writer
from lth.io import FAULT_ENV
from lth.kinds import Kind, kind_for
from lth.lit import (
    FaultCallback,
    LastCheckpoint,
    MaskingCallback,
    OptimizerFactory,
    ProgressCallback,
    ResumableCSVLogger,
    ResumableTrainAccuracy,
    RNGStateCallback,
    TicketModule,
    build_trainer,
    optimizer_factory,
    scheduler_factory,
    windowed,
)
from lth.loggers import quiet_third_party, wandb_sinks
from lth.masks import MaskManager
from lth.plan import Plan, make_plan
from lth.preempt import Interrupted, StopSignals, hand_over
from lth.record import ConsoleSink, RoundRecord, RoundSink, RunFolder, checkpoint_step, measured
from lth.reset import RESETS, Budget, ResetInputs
from lth.seeds import derive_seed


@dataclass(frozen=True)
class RoundSchedule:
    """A round's training: its steps, optimizer and lr-scheduler factories, and the schedule's global start step."""

    steps: int
    optimizer: OptimizerFactory
    scheduler: Callable[[torch.optim.Optimizer], Any] | None
    start: int = 0


class Lineage:
    """One run folder: its data, model, mask manager and plan, and the steps its kind's rounds are made of.

    `datamodule`: a ready datamodule instead of one built from `cfg.data`; `callbacks`: extra Lightning callbacks in
    every training round (e.g. a timer); `label`: the prefix of the default console's lines (a sweep's job).
    """

    def __init__(self, cfg: Config, out_dir: str | Path, sinks: list[RoundSink] | None = None, *,
                 datamodule: Any = None, callbacks: Sequence[pl.Callback] = (), label: str = "") -> None:
        from lth.data import build_datamodule
        from lth.models import build_model, reinitialize
        from lth.validate import validate

        self.cfg = cfg
        validate(cfg)
        self.kind: Kind = kind_for(cfg)
        self.kind.check(cfg)
        check_default_teacher(cfg.train.distill, self.kind)
        self.config = config_dict(cfg)
        writer = is_writer(cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.num_nodes, cfg.trainer.accelerator)
        if sinks is None:
            sinks = [ConsoleSink(self.kind.total_rounds(cfg), label)] if writer else []
        self.console: ConsoleSink | None = next((s for s in sinks if isinstance(s, ConsoleSink)), None)
        self.stop = StopSignals()  # a signal during `run`: stop at the next step with a checkpoint (lth.preempt)
        self.rounds_run = 0  # rounds trained or evaluated by this invocation
        self.round_schedule: RoundSchedule | None = None  # the training round's, set before its callbacks are built
        self.folder = RunFolder(out_dir, sinks, writer=writer)
        self.defaults = config_dict(Config())  # options added since an existing run was written compare as defaults
        self.folder.check_config(self.config, self.defaults)  # another run's folder is refused before anything is built
        if cfg.logger.wandb and writer:
            self.folder.sinks += wandb_sinks(cfg, self.folder.path, self.config, self.kind.name)
        self.extra_callbacks = list(callbacks)
        self.data = datamodule if datamodule is not None else build_datamodule(cfg.data.name, **cfg.data.options(cfg.seed))
        self.data.setup("fit")
        self.model: nn.Module = build_model(cfg.model.name, self.data.input_shape, self.data.num_classes, **cfg.model.args)
        reinitialize(self.model, derive_seed(cfg.seed, "init"))
        self.manager = MaskManager(self.model, cfg.pruning.include, cfg.pruning.exclude, mask0=_value(cfg.ticket.mask0),
                                   biases=cfg.pruning.biases)
        self.plan: Plan = make_plan(cfg, self.data, self.model, self.manager)
        self.kind.prepare(self)
        self.distiller = distiller_for(cfg, self.data)  # train.distill (lth.distill): an explicit teacher loads here
        self.folder.claim(self.config, self.defaults)  # all checks passed: lock the folder and write config.yaml

    def run(self) -> list[RoundRecord]:
        """Run (or resume) the kind's rounds, skipping finished ones; returns all round records.

        SIGINT/SIGTERM/SIGUSR1/SIGUSR2 stop the round at the next step with a checkpoint and raise
        `lth.preempt.Interrupted`."""
        done = len(self.folder.rounds())
        self._say(f"run folder {self.folder.path}" + (f" ({done} rounds recorded)" if done else ""))
        try:
            with self.stop.handling(), quiet_third_party():
                for sink in (s for s in self.folder.sinks if hasattr(s, "catch_up")):
                    sink.catch_up(self.folder.rounds())  # a mirror (W&B) added to a finished folder logs what it lacks
                self.kind.run(self)
        finally:
            self.folder.close()
        records = self.folder.rounds()
        status = "done" if self.rounds_run else "complete, nothing to do"
        self._say(f"{status}: {len(records)} rounds recorded in {self.folder.path}")
        return records

    def _say(self, text: str) -> None:
        if self.console is not None:
            self.console.say(text)

    # ----- the steps of a round
    def ones(self) -> dict[str, Tensor]:
        """All-kept masks (the dense network)."""
        return {n: torch.ones_like(m) for n, m in self.manager.masks.items()}

    def source_tag(self) -> str:
        """The snapshot resets rewind to: θk once it exists (late rewinding), else θ0."""
        return "rewind" if self.plan.rewind_step > 0 and self.manager.has_snapshot("rewind") else "init"

    def start_dense(self) -> None:
        """Round 0's state: the source snapshot, every weight kept."""
        self.model.load_state_dict(self.manager.state(self.source_tag()))
        self.manager.set_masks(self.ones())

    def prune(self, r: int, masks: dict[str, Tensor], trained: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The masks of round `r` from round r−1's masks and trained weights (rank 0's on every rank)."""
        from lth.pruning.step import prune_step

        p, plan = self.cfg.pruning, self.plan
        gen = torch.Generator().manual_seed(derive_seed(p.seed if p.seed is not None else self.cfg.seed, "criterion", r))
        w_init = {n: v.cpu() for n, v in self.manager.weights("init").items()} if plan.layout is None else {}
        return agree(prune_step(r, p, plan.fraction, plan.overrides, plan.layout, masks, w_init,
                                {n: trained[n] for n in self.manager.names}, gen, state=trained))

    def reset(self, r: int, masks: dict[str, Tensor], trained: Mapping[str, Tensor] | None, name: str) -> None:
        """Set masks and weights for round `r` under reset strategy `name` (from round r−1's `trained` state)."""
        RESETS[name].apply(ResetInputs(
            model=self.model, manager=self.manager, masks=masks, trained=trained, tag=self.source_tag(),
            seed=self.plan.reset_seed, r=r, example=self.plan.example, compacted=self.plan.layout is not None))

    def schedule(self, masks: Mapping[str, Tensor], reset: str | None = None) -> RoundSchedule:
        """How long a round under `masks` prepared by `reset` trains, and its optimizer and lr schedule (None: the
        dense round's)."""
        cfg, tk = self.cfg, self.cfg.ticket
        optimizer, scheduler = optimizer_factory(self.plan.optimizer), scheduler_factory(cfg.scheduler)
        if reset is None:
            return RoundSchedule(cfg.trainer.max_steps, optimizer, scheduler)
        strategy = RESETS[reset]
        pruned = structured.flops(self.model, self.data.input_shape, masks)["flops_nonzero"]
        budget = Budget(cfg.trainer.max_steps, self.plan.flops_dense, pruned, tk.scratch_cap, tk.finetune_steps,
                        self.plan.rewind_step, self.source_tag() == "rewind", tk.rewind_schedule == "resume")
        window = strategy.window(budget)
        optimizer, scheduler = windowed(strategy.optimizer(optimizer, tk.finetune_lr), scheduler, window.start,
                                        window.hold)
        return RoundSchedule(strategy.steps(budget), optimizer, scheduler, window.start)

    def continuation(self, k: int) -> RoundSchedule:
        """The dense round's training after its step `k`: the remaining max_steps − k steps, lr schedule from k."""
        optimizer, scheduler = windowed(optimizer_factory(self.plan.optimizer), scheduler_factory(self.cfg.scheduler),
                                        k)
        return RoundSchedule(self.cfg.trainer.max_steps - k, optimizer, scheduler, k)

    def train_round(self, r: int, masks: dict[str, Tensor], reset: str | None = None,
                    fields: Mapping[str, Any] | None = None) -> RoundRecord:
        """Train the current model under `masks` as round `r` (prepared by `reset`), then write its files and record."""
        folder, t = self.folder, self.cfg.trainer
        self.stop.check(r)
        fields = {**self.collapse_fields(r, masks), **(fields or {})}
        self.rounds_run += 1
        folder.save_mask(r, masks)
        start = time.perf_counter()
        self.round_schedule = sched = self.schedule(masks, reset)
        steps = sched.steps
        if sched.start:  # the round's steps count from its own start; the schedule's global step is start + step
            fields = {"schedule_start": sched.start, **(fields or {})}
        objective = self.distiller.objective(self.kind.parent(self), masks) if self.distiller else None
        module = TicketModule(self.model, sched.optimizer, self.data.num_classes, sched.scheduler, objective)
        self.module = module  # the round's evaluations, for the kind's record_fields
        ckpt = folder.resume_point(r, self.model.state_dict(), self.manager.names)
        resume_step = checkpoint_step(ckpt) if ckpt is not None else None
        if resume_step is not None:
            self._say(f"round {r}: resuming at step {resume_step} from {ckpt}")
        trainer = self.trainer(r, steps, self._callbacks(r), resume_step=resume_step)
        evals = [self.data.val_dataloader(), self.data.test_dataloader()]
        with quiet_third_party():
            trainer.fit(module, self.data.train_dataloader(), evals, ckpt_path=ckpt)
            if module.nonfinite_step is None and (not module.history or module.history[-1]["step"] != trainer.global_step):
                # the last step was no evaluation step: evaluate it (in this process: evaluation is not sharded)
                evaluator = self.trainer(r, steps, [], single_process=True) if is_spawn(t.strategy) else trainer
                module.eval_step = int(trainer.global_step)  # a fresh evaluator's own step count is 0
                evaluator.validate(module, evals, verbose=False)
        if self.distiller:  # the teacher, its test accuracy and the student's agreement with it
            fields = {**self.distiller.fields(self.model, self.data.test_dataloader()), **(fields or {})}
        record = self.record(r, module, int(trainer.global_step), time.perf_counter() - start,
                             {"reset": reset or "none", **(fields or {})})
        self.save_state(r)
        folder.save_history(r, module.history)
        self.kind.after_round(self, r)
        folder.add(record)
        folder.discard_checkpoint(r)  # the round's results are in trained.pt; the resume point is no longer needed
        return record

    def evaluate_round(self, r: int, masks: dict[str, Tensor], fields: Mapping[str, Any] | None = None) -> RoundRecord:
        """Evaluate the current model under `masks` on val and test, without training, as round `r`."""
        start = time.perf_counter()
        self.stop.check(r)
        fields = {**self.collapse_fields(r, masks), **(fields or {})}
        self.rounds_run += 1
        self.folder.save_mask(r, masks)
        self.manager.set_masks(masks)
        module = TicketModule(self.model, optimizer_factory(self.plan.optimizer), self.data.num_classes)
        trainer = self.trainer(r, self.cfg.trainer.max_steps, [])
        trainer.validate(module, [self.data.val_dataloader(), self.data.test_dataloader()], verbose=False)
        record = self.record(r, module, int(trainer.global_step), time.perf_counter() - start, fields)
        self.save_state(r)
        self.folder.add(record)
        return record

    def save_state(self, r: int) -> None:
        """Write round `r`'s trained state (trained.pt) and, under neuron granularity, its compacted network as
        config + state dict (compact.json, compact.pt: `lth.structured.load_compact` rebuilds it)."""
        self.folder.save_trained(r, self.model.state_dict())
        if self.plan.layout is None or not self.folder.writer:
            return
        small = structured.compact(self.model, self.manager.masks, self.plan.example)
        model = self.config["model"]
        config = structured.compact_config(small, model["name"], model.get("args") or {}, self.data.input_shape,
                                           self.data.num_classes)
        structured.save_compact(self.folder.round_dir(r), small, config)

    def collapse_fields(self, r: int, masks: Mapping[str, Tensor]) -> dict[str, Any]:
        """Round `r`'s record fields of a collapsed mask (an empty layer, no input→output path); ValueError naming the
        layer and the density unless pruning.allow_collapse."""
        from lth.pruning.collapse import check_collapse

        return check_collapse(self.model, masks, self.plan.example, self.cfg.pruning.allow_collapse, f"round {r}")

    def _callbacks(self, r: int) -> list[pl.Callback]:
        t = self.cfg.trainer
        last = LastCheckpoint(self.folder.checkpoint(r).parent, t.checkpoint_every, self.stop, r,
                              listen=not is_spawn(t.strategy), min_interval_s=t.checkpoint_min_interval_s)
        callbacks: list[pl.Callback] = [
            ResumableTrainAccuracy(), MaskingCallback(self.manager), RNGStateCallback(), last,
            *self.kind.callbacks(self, r),
        ]
        if self.console is not None:
            callbacks.append(ProgressCallback(self.console.round_title(r), self.console.bar))
        if self.plan.world > 1:
            callbacks.append(MaskAgreement(self.manager))
        callbacks += self.extra_callbacks
        if os.environ.get(FAULT_ENV, "").startswith("step:"):
            callbacks.append(FaultCallback(r))
        return callbacks

    def trainer(self, r: int, steps: int, callbacks: list[pl.Callback], single_process: bool = False,
                resume_step: int | None = None) -> pl.Trainer:
        """The Trainer of round `r`: `steps` optimizer steps, the CSV log (continued from `resume_step` when the round
        resumes) and the sinks' curve loggers."""
        t = self.cfg.trainer
        loggers: list[Any] = []
        if self.cfg.logger.csv:
            loggers.append(ResumableCSVLogger(self.folder.round_dir(r), resume_step))
        if not is_spawn(t.strategy):  # a W&B run cannot travel to spawned workers
            loggers += [s.curve_logger(r * t.max_steps) for s in self.folder.sinks if hasattr(s, "curve_logger")]
        return build_trainer(t, steps, callbacks, loggers, self.folder.round_dir(r), single_process)

    def record(self, r: int, module: TicketModule, steps: int, seconds: float,
               fields: Mapping[str, Any] | None = None) -> RoundRecord:
        """Round `r`'s record from the module's evaluations; `fields` (the kind's) set or add fields."""
        cfg = self.cfg
        values = {**measured(r, module, self.manager, steps, seconds, cfg.trainer.early_stop_metric),
                  "criterion": cfg.pruning.criterion, "reset": "none", "fraction": self.plan.fraction,
                  "scope": _value(cfg.pruning.scope), "seed": cfg.seed, "granularity": _value(cfg.pruning.granularity)}
        # FLOPs / params per example: dense, non-zero (and the compacted network's under neuron granularity)
        values.update(structured.round_counts(self.model, self.manager.masks, self.data.input_shape,
                                              compacted=self.plan.layout is not None))
        values.update(fields or {})
        values.update(self.kind.record_fields(self, r))
        return RoundRecord.build(**values)


def _value(x: Any) -> Any:
    return getattr(x, "value", x)


def run(cfg: Config, out_dir: str | Path, sinks: list[RoundSink] | None = None, *, datamodule: Any = None,
        callbacks: Sequence[pl.Callback] = (), label: str = "") -> list[RoundRecord]:
    """Run (or resume) one lineage of any kind (IMP, branch, supermask) into `out_dir`; its round records.

    `label` prefixes the console's lines (a sweep's job). Raises `lth.preempt.Interrupted` (a SystemExit; `.round`,
    `.step`) when SIGINT/SIGTERM/SIGUSR1/SIGUSR2 stopped the run."""
    before = torch.get_num_threads()
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    try:
        return Lineage(cfg, out_dir, sinks, datamodule=datamodule, callbacks=callbacks, label=label).run()
    except Interrupted as stopped:  # a signal stopped the run: its former handler (submitit's) requeues the job
        hand_over(stopped)
        raise
    finally:
        torch.set_num_threads(before)
