"""The round loop of one lineage: train → record → prune → reset, resumable and idempotent; and branches."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import re
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from lth import masks as masks_lib
from lth.config import Config
from lth.lit import LastCheckpoint, MaskingCallback, RewindCallback, RNGStateCallback, TicketModule
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

    def __init__(self, cfg: Config, out_dir: str | Path, sinks: list[RoundSink] | None = None) -> None:
        from lth.data import build_datamodule
        from lth.models import build_model, reinitialize
        from lth.validate import validate

        self.cfg = cfg
        validate(cfg)
        self.cfg_dict = config_dict(cfg)
        self.folder = RunFolder(out_dir, sinks if sinks is not None else [ConsoleSink(cfg.ticket.rounds)])
        self.folder.claim(self.cfg_dict)

        d = cfg.data
        kwargs = {"root": d.root, "batch_size": d.batch_size, "eval_batch_size": d.eval_batch_size, "seed": cfg.seed}
        kwargs.update({k: v for k, v in (("val_size", d.val_size), ("num_train", d.num_train)) if v is not None})
        if d.download:
            kwargs["download"] = True
        self.data = build_datamodule(d.name, **kwargs, **d.args)
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
        for r in range(self.cfg.ticket.rounds + 1):
            if self.folder.record(r) is not None:
                masks, trained = self.folder.load_mask(r), self.folder.load_trained(r)
                if r == 0:
                    self.manager.load_state_dict(self.folder.load_snapshots())
                continue
            if r == 0:
                new_masks = {n: torch.ones_like(m) for n, m in self.manager.masks.items()}
                self._reset(new_masks, "rewind", trained_state=None)
            else:
                assert masks is not None and trained is not None
                new_masks = self.prune(r, masks, trained)
                self._reset(new_masks, self.cfg.ticket.reset, trained, r=r)
            self.train_round(r, new_masks)
            masks, trained = new_masks, {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def _run_branch(self) -> None:
        src = RunFolder(self.cfg.branch["from"])
        k = int(self.cfg.branch["round"])
        if src.record(k) is None:
            raise ValueError(f"branch.from={src.path} has no finished round {k}; finished: {[x['round'] for x in src.rounds()]}")
        self.manager.load_state_dict(src.load_snapshots())
        masks = src.load_mask(k)
        masks_lib.check_masks(masks, {n: p.shape for n, p in zip(self.manager.names, self.manager.params)})
        if self.cfg.branch.get("random_mask"):
            masks = random_masks_like(masks, derive_seed(self.reset_seed, "random_mask", k))
        trained = src.load_trained(k - 1) if k > 0 else self.manager.state("init")
        if self.folder.record(k) is None:
            self._reset(masks, self.cfg.ticket.reset, trained, r=k)
            self.train_round(k, masks, extra={"branch_from": str(src.path), "branch_round": k})

    # ----- prune and reset
    def prune(self, r: int, masks: dict[str, Tensor], trained: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The masks of round `r` from round r−1's masks and trained weights."""
        from lth.pruning import score, select

        p = self.cfg.pruning
        seed = p.seed if p.seed is not None else self.cfg.seed
        gen = torch.Generator().manual_seed(derive_seed(seed, "criterion", r))
        w_final = {n: trained[n] for n in self.manager.names}
        w_init = {n: v.cpu() for n, v in self.manager.weights("init").items()}
        scores = score(p.criterion, w_init, w_final, generator=gen, masks=masks)
        return select(scores, masks, self.fraction, scope=_value(p.scope), overrides=self.overrides)

    def _reset(self, masks: dict[str, Tensor], reset: str, trained_state: Mapping[str, Tensor] | None, r: int = 0) -> None:
        from lth.reset import ResetContext, reset_weights

        tag = "rewind" if self.rewind_step > 0 and self.manager.has_snapshot("rewind") else "init"
        source_state = self.manager.state(tag)
        base = trained_state if reset == "continue" and trained_state is not None else source_state
        self.model.load_state_dict(base)
        if r == 0 and reset == "rewind":
            self.manager.set_masks(masks)
            return
        current = {n: trained_state[n] for n in self.manager.names} if trained_state is not None else self.manager.weights(tag)
        ctx = ResetContext(
            source={n: v.cpu() for n, v in self.manager.weights(tag).items()},
            current={n: v.cpu() for n, v in current.items()},
            masks={n: m.cpu() for n, m in masks.items()},
            fresh=lambda: self.fresh_weights(derive_seed(self.reset_seed, "fresh", r)),
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
        cfg, folder = self.cfg, self.folder
        folder.save_mask(r, masks)
        start = time.perf_counter()
        module = TicketModule(self.model, optimizer_factory(cfg.optimizer), self.data.num_classes, scheduler_factory(cfg.scheduler))
        callbacks: list[pl.Callback] = [
            MaskingCallback(self.manager),
            RNGStateCallback(),
            LastCheckpoint(folder.checkpoint(r).parent, cfg.trainer.checkpoint_every),
        ]
        if r == 0 and self.rewind_step > 0 and not cfg.branch["from"]:
            callbacks.append(RewindCallback(self.manager, self.rewind_step))
        trainer = self._trainer(r, callbacks)
        ckpt = folder.checkpoint(r)
        evals = [self.data.val_dataloader(), self.data.test_dataloader()]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*Total length of .* across ranks is zero.*")
            trainer.fit(module, self.data.train_dataloader(), evals, ckpt_path=ckpt if ckpt.exists() else None)
            if module.nonfinite_step is None and (not module.history or module.history[-1]["step"] != trainer.global_step):
                trainer.validate(module, evals, verbose=False)
        record = self._record(r, module, trainer, time.perf_counter() - start, extra)
        folder.save_trained(r, self.model.state_dict())
        if r == 0 and not cfg.branch["from"]:
            folder.save_snapshots(self.manager.state_dict())
        _write_history(folder.round_dir(r) / "evals.jsonl", module.history)
        folder.add(record)
        if ckpt.exists():
            ckpt.unlink()  # the round's results are in trained.pt; the resume point is no longer needed
        return record

    def _trainer(self, r: int, callbacks: list[pl.Callback]) -> pl.Trainer:
        t = self.cfg.trainer
        logger: Any = False
        if self.cfg.logger.csv:
            from pytorch_lightning.loggers import CSVLogger

            logger = CSVLogger(str(self.folder.round_dir(r)), name="csv", version="")
        return pl.Trainer(
            max_steps=t.max_steps,
            max_epochs=-1,
            val_check_interval=t.eval_every,
            check_val_every_n_epoch=None,
            num_sanity_val_steps=0,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            logger=logger,
            log_every_n_steps=t.log_every_n_steps,
            callbacks=callbacks,
            accelerator=t.accelerator,
            devices=t.devices,
            num_nodes=t.num_nodes,
            strategy=t.strategy,
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
        }
        if module.nonfinite_step is not None:
            record["status"] = "nonfinite_loss"
            record["nonfinite_step"] = module.nonfinite_step
            log.warning("round %d: non-finite loss at step %d; round stopped and recorded", r, module.nonfinite_step)
        record.update(extra or {})
        return _json_safe(record)


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


def run(cfg: Config, out_dir: str | Path, sinks: list[RoundSink] | None = None) -> list[dict[str, Any]]:
    """Run (or resume) one lineage into `out_dir`; returns its round records."""
    return Lineage(cfg, out_dir, sinks).run()
