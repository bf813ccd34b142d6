"""The round loop of one lineage: train → record → prune → reset, resumable and idempotent; and branches."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from lth import masks as masks_lib
from lth import structured
from lth.config import Config
from lth.distributed import MaskAgreement, agree, is_spawn, is_writer, strategy_for, world_size
from lth.io import FAULT_ENV, fault_point
from lth.lit import LastCheckpoint, MaskingCallback, RewindCallback, RNGStateCallback, TicketModule
from lth.loggers import SafeLogger
from lth.masks import MaskManager
from lth.pruning.select import match_overrides
from lth.record import RoundSink, RunFolder

log = logging.getLogger(__name__)


def derive_seed(*parts: int | str) -> int:
    """A 31-bit seed derived from several parts (independent streams for θ0, resets, random scores, ...)."""
    ints = [p if isinstance(p, int) else int.from_bytes(p.encode(), "little") % (2**32) for p in parts]
    return int(np.random.SeedSequence(ints).generate_state(1)[0] & 0x7FFFFFFF)


def config_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain, YAML-safe Python containers (enums as their values)."""
    node = OmegaConf.structured(cfg) if dataclasses.is_dataclass(cfg) else cfg
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True)  # type: ignore[return-value]


class ConsoleSink:
    """Prints one line per finished round."""

    def __init__(self, total_rounds: int) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.total = total_rounds

    def on_round(self, record: Mapping[str, Any]) -> None:
        es = record.get("early_stop_test_acc")
        self.console.print(
            f"[bold]round {record['round']}/{self.total}[/bold]  density {record['density']:.4f}  "
            f"test acc {record.get('test_acc', float('nan')):.4f}  "
            f"early-stop acc {es if es is None else f'{es:.4f}'} @ step {record.get('early_stop_step')}  "
            f"({record['wall_seconds']:.1f}s)"
        )

    def close(self) -> None:
        pass


class Lineage:
    """One lineage: builds data, model and mask manager from a config and runs (or resumes) its rounds."""

    def __init__(self, cfg: Config, out_dir: str | Path, sinks: list[RoundSink] | None = None, *,
                 datamodule: Any = None, callbacks: Sequence[pl.Callback] = ()) -> None:
        from lth.data import build_datamodule
        from lth.models import build_model, reinitialize
        from lth.validate import check_schedule, validate

        self.cfg = cfg
        validate(cfg)
        self.cfg_dict = config_dict(cfg)
        t = cfg.trainer
        writer = is_writer(t.strategy, t.devices, t.num_nodes)
        if sinks is None:
            sinks = [ConsoleSink(cfg.ticket.rounds)] if writer else []
        self.folder = RunFolder(out_dir, sinks, writer=writer)
        self.defaults = config_dict(Config())  # options added since an existing run was written compare as defaults
        self.folder.check_config(self.cfg_dict, self.defaults)  # another run's folder is refused before anything is built
        if cfg.logger.wandb and writer:
            self._add_wandb_sink()

        d = cfg.data
        kwargs = {"root": d.root, "batch_size": d.batch_size, "eval_batch_size": d.eval_batch_size, "seed": cfg.seed}
        kwargs.update({k: v for k, v in (("val_size", d.val_size), ("num_train", d.num_train)) if v is not None})
        if d.download:
            kwargs["download"] = True
        self.extra_callbacks = list(callbacks)
        self.data = datamodule if datamodule is not None else build_datamodule(d.name, **kwargs, **d.args)
        self.data.setup("fit")
        self.model: nn.Module = build_model(cfg.model.name, self.data.input_shape, self.data.num_classes, **cfg.model.args)
        reinitialize(self.model, derive_seed(cfg.seed, "init"))
        p = cfg.pruning
        self.fraction = p.fraction
        if p.target_density is not None:
            from lth.pruning import fraction_for_density

            self.fraction = fraction_for_density(p.target_density, cfg.ticket.rounds)
        self.manager = MaskManager(self.model, p.include, p.exclude, mask0=_value(cfg.ticket.mask0))
        self.rewind_step = rewind_step(cfg, self.data.steps_per_epoch)
        self.reset_seed = cfg.ticket.reset_seed if cfg.ticket.reset_seed is not None else cfg.seed + 1
        self.overrides = dict(p.overrides)
        if p.output_fraction is not None:
            self.overrides = {re.escape(self.manager.names[-1]): p.output_fraction, **self.overrides}
        match_overrides(self.manager.names, self.overrides)  # a key matching no layer fails here, before training
        if self.rewind_step >= cfg.trainer.max_steps:
            raise ValueError(
                f"ticket.rewind_epoch={cfg.ticket.rewind_epoch} is step {self.rewind_step}, not before the round's "
                f"end trainer.max_steps={cfg.trainer.max_steps}"
            )
        self.round_max_steps: int | None = None  # this round's training length (scratch-B, fine-tuning), set per round
        self.example = torch.zeros(1, *self.data.input_shape)
        self.layout = self._unit_layout() if _value(p.granularity) == "neuron" else None
        self.flops_dense = structured.flops(self.model, self.example)["flops_dense"]
        if not cfg.branch["from"]:
            counts = {n: p.numel() for n, p in zip(self.manager.names, self.manager.params)}
            overrides, unit = self.overrides, "weight"
            if self.layout is not None:  # neuron granularity: the units of the layers that lose them
                counts = {n: self.manager.masks[n].shape[0] for n in self.layout.removable}
                matched = match_overrides(self.manager.names, self.overrides)
                overrides = {re.escape(n): f for n, f in matched.items() if n in counts}
                unit = "unit"
            check_schedule(counts, self.fraction, cfg.ticket.rounds, _value(p.scope), overrides, unit)
        self.folder.claim(self.cfg_dict, self.defaults)  # all checks passed: lock the folder and write config.yaml

    def _add_wandb_sink(self) -> None:
        lg = self.cfg.logger
        try:
            from lth.wandb_sink import WandbSink

            sink = WandbSink(
                self.folder.path, self.cfg_dict, project=lg.project, entity=lg.entity, mode=lg.mode,
                group=lg.group or self.cfg.name, job_type=self.cfg.ticket.reset, name=lg.run_name,
                tags=list(lg.tags), log_masks=lg.log_masks,
            )
        except Exception as e:  # noqa: BLE001  W&B is a mirror: without it the local record still completes
            warnings.warn(f"W&B could not start ({type(e).__name__}: {e}); continuing with the local record only",
                          RuntimeWarning, stacklevel=2)
            return
        self.folder.sinks.append(sink)

    def _unit_layout(self) -> structured.UnitLayout:
        """Which prunables can lose units (pruning.granularity=neuron); ValueError if none can."""
        layout = structured.unit_layout(self.model, self.example, self.manager.names)
        if not layout.removable:
            why = "; ".join(f"{n}: {reason}" for n, reason in layout.refused.items())
            raise ValueError(f"pruning.granularity=neuron: no layer of model '{self.cfg.model.name}' can lose units ({why})")
        return layout

    # ----- the loop
    def run(self) -> list[dict[str, Any]]:
        """Run rounds 0..ticket.rounds, skipping finished ones; returns all round records."""
        try:
            if self.cfg.branch["from"]:
                self._run_branch()
            else:
                self._run_rounds()
        finally:
            self.folder.close()
        return self.folder.rounds()

    def _run_rounds(self) -> None:
        masks: dict[str, Tensor] | None = None
        trained: dict[str, Tensor] | None = None
        status = "ok"
        for r in range(self.cfg.ticket.rounds + 1):
            done = self._finished(r)
            if done is not None:
                masks, trained, status = done
                self._discard_checkpoint(r)  # a kill after the record, before the resume point was removed
                continue
            dropped = self.folder.drop_rounds(r)
            if [x for x in dropped if x != r]:
                warnings.warn(f"redoing round {r}: dropped the records of rounds {dropped}, which were derived from "
                              f"it", stacklevel=2)
            if r > 0 and status != "ok":
                warnings.warn(f"round {r - 1} ended with status '{status}' (see rounds.jsonl); the lineage stops: "
                              f"round {r} would prune non-finite weights. Lower the learning rate and rerun into "
                              "a new out_dir.", RuntimeWarning, stacklevel=2)
                return
            if r == 0:
                new_masks = {n: torch.ones_like(m) for n, m in self.manager.masks.items()}
                self._reset(new_masks, "rewind", trained_state=None)
            else:
                assert masks is not None and trained is not None
                new_masks = self.prune(r, masks, trained)
                self._reset(new_masks, self.cfg.ticket.reset, trained, r=r)
            torch.manual_seed(derive_seed(self.cfg.seed, "train", r))  # e.g. dropout: the same draws after a restart
            record = self.train_round(r, new_masks)
            masks, trained = new_masks, {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            status = record["status"]

    def _finished(self, r: int) -> tuple[dict[str, Tensor], dict[str, Tensor], str] | None:
        """Round `r`'s mask, trained weights and status if it finished and its files are intact; None: (re)do it."""
        record = self.folder.record(r)
        if record is None:
            return None
        try:
            masks = self.folder.load_mask(r)
            masks_lib.check_masks(masks, self._shapes())
            trained = self.folder.load_trained(r)
            check_state(trained, self.model.state_dict(), f"round {r}'s trained.pt")
            if r == 0:
                snapshots = self.folder.load_snapshots()
                for tag, state in snapshots.get("snapshots", {}).items():
                    check_state(state, self.model.state_dict(), f"snapshots.pt ({tag})")
                self.manager.load_state_dict(snapshots)
        except (ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
            warnings.warn(f"round {r} is recorded but its files are damaged or missing ({e}); redoing round {r} "
                          "and the rounds after it", stacklevel=3)
            return None
        return masks, trained, record.get("status", "ok")

    def _shapes(self) -> dict[str, torch.Size]:
        return {n: p.shape for n, p in zip(self.manager.names, self.manager.params)}

    def _discard_checkpoint(self, r: int) -> None:
        ckpt = self.folder.checkpoint(r)
        if self.folder.writer and ckpt.exists():
            ckpt.unlink()

    def _run_branch(self) -> None:
        src = RunFolder(self.cfg.branch["from"])
        k = int(self.cfg.branch["round"])
        if src.record(k) is None:
            raise ValueError(f"branch.from={src.path} has no finished round {k}; finished: {[x['round'] for x in src.rounds()]}")
        try:
            snapshots = src.load_snapshots()
            for tag, state in snapshots.get("snapshots", {}).items():
                check_state(state, self.model.state_dict(), f"its snapshots.pt ({tag})")
            self.manager.load_state_dict(snapshots)
            masks = src.load_mask(k)
            masks_lib.check_masks(masks, self._shapes())
        except (ValueError, KeyError) as e:
            raise ValueError(
                f"branch.from={src.path} does not match this model (model={self.cfg.model.name} "
                f"{dict(self.cfg.model.args)}): {e}"
            ) from None
        if self.cfg.branch.get("random_mask"):
            seed = derive_seed(self.reset_seed, "random_mask", k)
            if self.layout is None:
                masks = random_masks_like(masks, seed)
            else:  # the same number of units per layer, at random units
                from lth.pruning import random_neuron_masks_like

                masks = random_neuron_masks_like(masks, self.layout.removable, seed, self.layout.consumers)
        trained = src.load_trained(k - 1) if k > 0 else self.manager.state("init")
        if self.folder.record(k) is None:
            self._reset(masks, self.cfg.ticket.reset, trained, r=k)
            torch.manual_seed(derive_seed(self.cfg.seed, "train", k))
            self.train_round(k, masks, extra={"branch_from": str(src.path), "branch_round": k})
        else:
            self._discard_checkpoint(k)

    # ----- prune and reset
    def prune(self, r: int, masks: dict[str, Tensor], trained: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The masks of round `r` from round r−1's masks and trained weights (rank 0's on every rank)."""
        from lth.pruning import score, select

        p = self.cfg.pruning
        seed = p.seed if p.seed is not None else self.cfg.seed
        gen = torch.Generator().manual_seed(derive_seed(seed, "criterion", r))
        w_final = {n: trained[n] for n in self.manager.names}
        w_init = {n: v.cpu() for n, v in self.manager.weights("init").items()}
        if self.layout is not None:
            from lth.pruning import neuron_scores, select_neurons

            unit_scores = neuron_scores(p.structured_norm, w_final, masks, generator=gen)
            new = agree(select_neurons(unit_scores, masks, self.fraction, scope=_value(p.scope), overrides=self.overrides,
                                       removable=self.layout.removable, consumers=self.layout.consumers))
        else:
            scores = score(p.criterion, w_init, w_final, generator=gen, masks=masks)
            new = agree(select(scores, masks, self.fraction, scope=_value(p.scope), overrides=self.overrides))
        emptied = [n for n, m in new.items() if not bool(m.any())]
        if emptied:
            warnings.warn(f"round {r}: layers {emptied} keep no weights (layer collapse)", RuntimeWarning, stacklevel=2)
        return new
    def _reset(self, masks: dict[str, Tensor], reset: str, trained_state: Mapping[str, Tensor] | None, r: int = 0) -> None:
        from lth.reset import ResetContext, reset_weights

        tag = "rewind" if self.rewind_step > 0 and self.manager.has_snapshot("rewind") else "init"
        source_state = self.manager.state(tag)
        base = trained_state if reset == "continue" and trained_state is not None else source_state
        scratch = reset in structured.SCRATCH_RESETS
        if scratch:  # the pruned (compacted) architecture from a fresh seeded init, biases and BatchNorm included
            base = structured.scratch_state(self.model, masks, derive_seed(self.reset_seed, "fresh", r), self.example,
                                            compacted=self.layout is not None)
        self.model.load_state_dict(base)
        if r == 0 and reset == "rewind":
            self.manager.set_masks(masks)
            return
        current = {n: trained_state[n] for n in self.manager.names} if trained_state is not None else self.manager.weights(tag)
        ctx = ResetContext(
            source={n: v.cpu() for n, v in self.manager.weights(tag).items()},
            current={n: v.cpu() for n, v in current.items()},
            masks={n: m.cpu() for n, m in masks.items()},
            fresh=(lambda: {n: base[n] for n in self.manager.names}) if scratch
            else (lambda: self.fresh_weights(derive_seed(self.reset_seed, "fresh", r))),
            generator=torch.Generator().manual_seed(derive_seed(self.reset_seed, "reset", r)),
        )
        self.manager.set_masks(masks)
        self.manager.load_weights(reset_weights(reset, ctx))

    def fresh_weights(self, seed: int) -> dict[str, Tensor]:
        """A fresh draw of the prunables from the model's own initialiser."""
        from lth.models import reinitialize

        other = copy.deepcopy(self.model).cpu()
        reinitialize(other, seed)
        params = dict(other.named_parameters())
        return {n: params[n].detach() for n in self.manager.names}

    # ----- one round
    def train_round(self, r: int, masks: dict[str, Tensor], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Train the current model under `masks` as round `r`, then write its files and record."""
        cfg, folder, t = self.cfg, self.folder, self.cfg.trainer
        folder.save_mask(r, masks)
        start = time.perf_counter()
        steps, optimizer = self.round_plan(r, masks)
        module = TicketModule(self.model, optimizer, self.data.num_classes, scheduler_factory(cfg.scheduler))
        callbacks: list[pl.Callback] = [
            ResumableTrainAccuracy(),
            MaskingCallback(self.manager),
            RNGStateCallback(),
            LastCheckpoint(folder.checkpoint(r).parent, t.checkpoint_every),
        ]
        if r == 0 and self.rewind_step > 0 and not cfg.branch["from"]:
            callbacks.append(RewindCallback(self.manager, self.rewind_step))
        if world_size(t.devices, t.num_nodes) > 1:
            callbacks.append(MaskAgreement(self.manager))
        callbacks += self.extra_callbacks
        if os.environ.get(FAULT_ENV, "").startswith("step:"):
            callbacks.append(FaultCallback(r))
        self.round_max_steps = steps
        trainer = self._trainer(r, callbacks)
        ckpt = self._resume_point(r, module)
        evals = [self.data.val_dataloader(), self.data.test_dataloader()]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*Total length of .* across ranks is zero.*")
            warnings.filterwarnings("ignore", ".*sync_dist=True.*")  # evaluation is replicated, not sharded
            trainer.fit(module, self.data.train_dataloader(), evals, ckpt_path=ckpt)
            if module.nonfinite_step is None and (not module.history or module.history[-1]["step"] != trainer.global_step):
                # the last step was no evaluation step: evaluate it (in this process: evaluation is not sharded)
                evaluator = self._trainer(r, [], single_process=True) if is_spawn(t.strategy) else trainer
                evaluator.validate(module, evals, verbose=False)
        record = self._record(r, module, trainer, time.perf_counter() - start, extra)
        folder.save_trained(r, self.model.state_dict())
        if r == 0 and not cfg.branch["from"]:
            folder.save_snapshots(self.manager.state_dict())
        if folder.writer:
            _write_history(folder.round_dir(r) / "evals.jsonl", module.history)
        folder.add(record)
        self._discard_checkpoint(r)  # the round's results are in trained.pt; the resume point is no longer needed
        return record

    def _resume_point(self, r: int, module: TicketModule) -> Path | None:
        """Round `r`'s last.ckpt if it exists and fits this model; a damaged one is set aside with a warning."""
        ckpt = self.folder.checkpoint(r)
        if not ckpt.exists():
            return None
        try:
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or "state_dict" not in state:
                raise ValueError("not a Lightning checkpoint")
            expected = {f"model.{k}": v for k, v in self.model.state_dict().items()}
            check_state({k: v for k, v in state["state_dict"].items() if k.startswith("model.")}, expected, "its weights")
            manager = next((s["manager"] for k, s in state.get("callbacks", {}).items() if "MaskingCallback" in k), None)
            if manager is None or list(manager["names"]) != self.manager.names:
                raise ValueError(f"its prunables are not {self.manager.names}")
        except Exception as e:  # noqa: BLE001  whatever is wrong with it, it must not be trusted
            warnings.warn(f"ignoring {ckpt}: it is damaged or belongs to another model ({e}); round {r} restarts "
                          "from its start", stacklevel=3)
            if self.folder.writer:
                os.replace(ckpt, ckpt.with_name("last.ckpt.damaged"))
            return None
        return ckpt

    def round_plan(self, r: int, masks: Mapping[str, Tensor]) -> tuple[int, Callable[[Any], torch.optim.Optimizer]]:
        """Round `r`'s training steps and optimizer: scratch-B's FLOPs budget, fine-tuning's steps and lr."""
        cfg, tk = self.cfg, self.cfg.ticket
        reset = tk.reset if r > 0 or cfg.branch["from"] else "none"
        pruned = structured.flops(self.model, self.data.input_shape, masks)["flops_nonzero"]
        steps = structured.round_steps(reset, cfg.trainer.max_steps, self.flops_dense, pruned, tk.scratch_cap,
                                       tk.finetune_steps)
        factory = optimizer_factory(cfg.optimizer)
        if reset == "continue" and tk.finetune_lr is not None:
            factory = with_lr(factory, tk.finetune_lr)
        return steps, factory

    def _trainer(self, r: int, callbacks: list[pl.Callback], single_process: bool = False) -> pl.Trainer:
        t = self.cfg.trainer
        loggers: list[Any] = []
        if self.cfg.logger.csv:
            from pytorch_lightning.loggers import CSVLogger

            loggers.append(CSVLogger(str(self.folder.round_dir(r)), name="csv", version=""))
        if not is_spawn(t.strategy):  # a W&B run cannot travel to spawned workers
            loggers += [s.curve_logger(r * t.max_steps) for s in self.folder.sinks if hasattr(s, "curve_logger")]
        return pl.Trainer(
            max_steps=self.round_max_steps or t.max_steps,
            max_epochs=-1,
            val_check_interval=t.eval_every,
            check_val_every_n_epoch=None,
            num_sanity_val_steps=0,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            logger=[SafeLogger(lg) for lg in loggers] if loggers and not single_process else False,
            log_every_n_steps=t.log_every_n_steps,
            callbacks=callbacks,
            accelerator=t.accelerator,
            devices=1 if single_process else t.devices,
            num_nodes=1 if single_process else t.num_nodes,
            strategy="auto" if single_process else strategy_for(t.strategy),
            precision=t.precision,
            gradient_clip_val=t.gradient_clip_val,
            accumulate_grad_batches=t.accumulate_grad_batches,
            deterministic=t.deterministic,
            default_root_dir=str(self.folder.round_dir(r)),
        )

    def _record(self, r: int, module: TicketModule, trainer: pl.Trainer, seconds: float, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        cfg = self.cfg
        last = module.history[-1] if module.history else {}
        best = module.early_stop()
        record: dict[str, Any] = {
            "round": r,
            "density": self.manager.density(),
            "layer_density": self.manager.layer_density(),
            "test_acc": last.get("test_acc"),
            "test_loss": last.get("test_loss"),
            "val_acc": last.get("val_acc"),
            "val_loss": last.get("val_loss"),
            "early_stop_step": best.get("step"),
            "early_stop_test_acc": best.get("test_acc"),
            "early_stop_val_loss": best.get("val_loss"),
            "early_stop_val_acc": best.get("val_acc"),
            "train_steps": int(trainer.global_step),
            "wall_seconds": round(seconds, 3),
            "criterion": cfg.pruning.criterion,
            "reset": cfg.ticket.reset if r > 0 or cfg.branch["from"] else "none",
            "fraction": self.fraction,
            "scope": _value(cfg.pruning.scope),
            "seed": cfg.seed,
            "status": "ok",
            "granularity": _value(cfg.pruning.granularity),
        }
        # FLOPs / params per example: dense, non-zero (and the compacted network's under neuron granularity)
        record.update(structured.round_counts(self.model, self.manager.masks, self.data.input_shape,
                                              compacted=self.layout is not None))
        if module.nonfinite_step is not None:
            record["status"] = "nonfinite_loss"
            record["nonfinite_step"] = module.nonfinite_step
            msg = (f"round {r}: non-finite loss at step {module.nonfinite_step}; the round was stopped there and "
                   "recorded with status 'nonfinite_loss'")
            log.warning(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
        record.update(extra or {})
        return _json_safe(record)


class ResumableTrainAccuracy(pl.Callback):
    """Checkpoints the running training accuracy (since the last evaluation), so a resumed round reports the same."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pl_module.train_acc.persistent(True)  # its counts join the module's state_dict, hence checkpoints

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint["lth_train_acc_updates"] = pl_module.train_acc.update_count

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        pl_module.train_acc._update_count = int(checkpoint.get("lth_train_acc_updates", 0))


class FaultCallback(pl.Callback):
    """Calls `fault_point("step:<round>:<step>")` after every optimizer step (only added when $LTH_FAULT is set)."""

    def __init__(self, r: int) -> None:
        self.r = r

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        fault_point(f"step:{self.r}:{trainer.global_step}")


def check_state(state: Mapping[str, Tensor], expected: Mapping[str, Tensor], what: str) -> None:
    """Raise ValueError unless `state` has exactly `expected`'s names and shapes."""
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise ValueError(f"{what} does not match the model: missing {missing[:5]}, unexpected {extra[:5]}")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ValueError(f"{what} does not match the model: '{k}' has shape {tuple(state[k].shape)}, "
                             f"the model's has {tuple(v.shape)}")


def _write_history(path: Path, history: list[dict[str, float]]) -> None:
    from lth.io import write_jsonl

    write_jsonl(path, [_json_safe(h) for h in history])


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    return obj


def _value(x: Any) -> Any:
    return getattr(x, "value", x)


def rewind_step(cfg: Config, steps_per_epoch: int) -> int:
    """θk's step: ticket.rewind_step, or ticket.rewind_epoch × steps per epoch."""
    if cfg.ticket.rewind_epoch > 0:
        return cfg.ticket.rewind_epoch * steps_per_epoch
    return cfg.ticket.rewind_step


def random_masks_like(masks: Mapping[str, Tensor], seed: int) -> dict[str, Tensor]:
    """Random masks with exactly the same number of kept weights per layer."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for n, m in masks.items():
        kept = int(m.sum())
        flat = torch.zeros(m.numel(), dtype=torch.bool)
        flat[torch.randperm(m.numel(), generator=gen)[:kept]] = True
        out[n] = flat.reshape(m.shape)
    return out


def with_lr(factory: Callable[[Any], torch.optim.Optimizer], lr: float) -> Callable[[Any], torch.optim.Optimizer]:
    """`factory` with every parameter group's lr set to `lr` (fine-tuning)."""

    def make(params: Any) -> torch.optim.Optimizer:
        optimizer = factory(params)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return optimizer

    return make


def optimizer_factory(spec: Any) -> Callable[[Any], torch.optim.Optimizer]:
    """A callable params → optimizer from a Hydra `_target_`/`_partial_` spec (or a ready callable)."""
    if callable(spec):
        return spec
    from hydra.utils import instantiate

    node = OmegaConf.create(spec) if not OmegaConf.is_config(spec) else spec
    return instantiate(node, _partial_=True)


def scheduler_factory(spec: Any) -> Callable[[torch.optim.Optimizer], Any] | None:
    """A callable optimizer → LR scheduler from a spec, or None."""
    if spec is None or callable(spec):
        return spec
    return optimizer_factory(spec)


def run(cfg: Config, out_dir: str | Path, sinks: list[RoundSink] | None = None, *, datamodule: Any = None,
        callbacks: Sequence[pl.Callback] = ()) -> list[dict[str, Any]]:
    """Run (or resume) one lineage (a supermask experiment if supermask.method is set) into `out_dir`."""
    before = torch.get_num_threads()
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    try:
        if cfg.supermask.method:
            from lth.supermask.runner import run_supermask

            return run_supermask(cfg, out_dir, sinks)
        return Lineage(cfg, out_dir, sinks, datamodule=datamodule, callbacks=callbacks).run()
    finally:
        torch.set_num_threads(before)
