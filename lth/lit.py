"""TicketModule (a LightningModule around any nn.Module) and the callbacks that keep masks, θk and checkpoints."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

from lth.masks import MaskManager

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
EVAL_SPLITS = ("val", "test")  # validation dataloader 0 is the val split, 1 the test split


class RunningAccuracy(Metric):
    """Top-1 accuracy of logits `(N, C, ...)` against labels `(N, ...)`: two counters on the device, summed across
    processes on `compute()`. An update is three small kernels and no host sync (~4× cheaper than MulticlassAccuracy)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("correct", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor) -> None:
        self.correct.add_((logits.argmax(1) == target).sum())  # in place: no module attribute writes
        self.total.add_(target.numel())

    def compute(self) -> Tensor:
        return self.correct.float() / self.total.float()


class TicketModule(pl.LightningModule):
    """Trains any classifier `model`; evaluates val and test together every `eval_every` steps and keeps the history."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerFactory,
        num_classes: int,
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.num_classes = num_classes
        self.train_acc = RunningAccuracy()
        self.eval_acc = nn.ModuleList(RunningAccuracy() for _ in EVAL_SPLITS)
        self._eval_loss: list[Tensor] = []
        self._eval_count: list[int] = []
        self.history: list[dict[str, float]] = []  # one entry per evaluation: step, val/test loss and accuracy
        self.nonfinite_step: int | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets `_current_fx_name` around each of its ~15 hook calls per step; a plain string needs none of
        # nn.Module.__setattr__'s parameter/buffer/module bookkeeping (which costs ~5 µs a call).
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        self.train_acc.update(logits.detach(), y)
        if self._logs_this_step():  # a tensor goes to the logger: no host sync here
            self.log("train/loss", loss.detach(), on_step=True, on_epoch=False)
        return loss

    def _logs_this_step(self) -> bool:
        """Whether the Trainer writes step metrics at this training step (every `log_every_n_steps` steps).

        `self.log` costs up to ~1 ms of Python per call (Lightning moves its whole result record to the value's device),
        so it is called only on the steps whose value reaches the loggers (Lightning's own rule: step + 1 divisible).
        """
        trainer = self._trainer
        if trainer is None:
            return False
        n = trainer.log_every_n_steps
        return bool(trainer.fast_dev_run) or (n > 0 and (self.global_step + 1) % n == 0)

    def on_validation_epoch_start(self) -> None:
        self._eval_loss = [torch.zeros((), device=self.device) for _ in EVAL_SPLITS]
        self._eval_count = [0 for _ in EVAL_SPLITS]
        for acc in self.eval_acc:
            acc.reset()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
        logits = self.model(x)
        self._eval_loss[dataloader_idx] += F.cross_entropy(logits, y, reduction="sum")
        self._eval_count[dataloader_idx] += y.numel()
        self.eval_acc[dataloader_idx].update(logits, y)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        entry: dict[str, float] = {"step": int(self.global_step)}
        if self.train_acc.update_count:
            entry["train_acc"] = float(self.train_acc.compute())  # over the steps since the last evaluation
            self.train_acc.reset()
            self.log("train/acc", entry["train_acc"])
        for i, split in enumerate(EVAL_SPLITS):
            if self._eval_count[i] == 0:
                continue
            entry[f"{split}_loss"] = float(self._eval_loss[i]) / self._eval_count[i]
            entry[f"{split}_acc"] = float(self.eval_acc[i].compute())
            self.log(f"{split}/loss", entry[f"{split}_loss"], add_dataloader_idx=False)
            self.log(f"{split}/acc", entry[f"{split}_acc"], add_dataloader_idx=False)
        if self.history and self.history[-1]["step"] == entry["step"]:
            self.history[-1] = entry
        else:
            self.history.append(entry)
        if not all(math.isfinite(v) for k, v in entry.items() if k.endswith("_loss")):
            self.nonfinite_step = entry["step"]
            self.trainer.should_stop = True

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.model.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lth_history"] = list(self.history)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("lth_history", []))

    def early_stop(self) -> dict[str, float]:
        """The evaluation with the lowest validation loss (LTH's early-stop criterion); ties → earliest step."""
        finite = [h for h in self.history if math.isfinite(h.get("val_loss", math.nan))]
        if not finite:
            return {}
        return min(finite, key=lambda h: (h["val_loss"], h["step"]))


# Optimizers whose update of a weight with zero gradient and zero state is exactly zero (weight decay of a zero weight
# is zero too). With mask-0 `zero` and masks fixed for the fit, masked gradients alone keep pruned weights at 0 under
# them, so the after-step pass is skipped (exact types only: a subclass may change the update).
ZERO_PRESERVING_OPTIMIZERS: tuple[type, ...] = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)


class MaskingCallback(pl.Callback):
    """Zeroes pruned gradients before each optimizer step (so clipping sees them masked), re-masks after it when needed.

    The re-masking pass runs after every step unless the optimizer is one of ZERO_PRESERVING_OPTIMIZERS, mask-0 is
    `zero` and the masks are those of the fit's start; replacing the masks mid-fit (`set_masks`) turns it on, since the
    optimizer state of newly pruned weights is not zero.
    """

    def __init__(self, manager: MaskManager) -> None:
        self.manager = manager
        self._hooks: list[Any] = []
        self._unhooked: list[torch.optim.Optimizer] = []
        self._masks: Any = None

    def _hook(self, optimizer: torch.optim.Optimizer) -> None:
        self._hooks.append(optimizer.register_step_post_hook(lambda *_: self.manager.apply()))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.manager.apply()
        self._masks = self.manager.masks
        for optimizer in trainer.optimizers:
            if self.manager.mask0 == "zero" and type(optimizer) in ZERO_PRESERVING_OPTIMIZERS:
                self._unhooked.append(optimizer)
            else:
                self._hook(optimizer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        self._unhooked.clear()

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        self.manager.mask_grads()
        if self._unhooked and self.manager.masks is not self._masks:
            for unhooked in self._unhooked:
                self._hook(unhooked)
            self._unhooked.clear()

    def state_dict(self) -> dict[str, Any]:
        return {"manager": self.manager.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.manager.load_state_dict(state_dict["manager"])


class RewindCallback(pl.Callback):
    """Stores θk (snapshot "rewind") once `rewind_step` optimizer steps of the round are done."""

    def __init__(self, manager: MaskManager, rewind_step: int) -> None:
        self.manager = manager
        self.rewind_step = rewind_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if trainer.global_step == self.rewind_step and not self.manager.has_snapshot("rewind"):
            self.manager.snapshot("rewind")


class RNGStateCallback(pl.Callback):
    """Saves and restores the torch CPU (and CUDA) RNG states in checkpoints so a resumed round draws the same numbers.

    CUDA states are per device; resumed with fewer visible GPUs, the first min(saved, visible) are restored."""

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            # resumed on fewer (or more) visible GPUs: the first min(saved, visible) devices get their saved states
            for device, state in enumerate(state_dict["cuda"][: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(state, device)


class LastCheckpoint(pl.Callback):
    """Writes `<dirpath>/last.ckpt` atomically every `every_n_steps` optimizer steps.

    At a step followed by an evaluation the checkpoint is written after it, so a resumed round keeps that evaluation
    (Lightning does not redo it). Every rank calls `save` (Lightning's save is collective); rank 0 writes the file.
    """

    def __init__(self, dirpath: str | os.PathLike, every_n_steps: int) -> None:
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_steps = every_n_steps
        self._saved_step = -1

    def _due(self, trainer: pl.Trainer) -> bool:
        step = trainer.global_step
        return self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0 and step != self._saved_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self._due(trainer) and not _validates_after_this_batch(trainer):
            self.save(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking and self._due(trainer):
            self.save(trainer)

    def save(self, trainer: pl.Trainer) -> None:
        """Save now (temp file + rename)."""
        tmp = self.path.with_name(".last.ckpt.tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        self._saved_step = trainer.global_step


def _validates_after_this_batch(trainer: pl.Trainer) -> bool:
    """Whether Lightning's step-based validation (check_val_every_n_epoch=None) runs right after this batch."""
    every = trainer.val_check_batch
    if not trainer.enable_validation or every is None or every == float("inf"):
        return False
    return (trainer.fit_loop.epoch_loop.total_batch_idx + 1) % int(every) == 0


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
        from lth.io import fault_point

        fault_point(f"step:{self.r}:{trainer.global_step}")


def with_lr(factory: OptimizerFactory, lr: float) -> OptimizerFactory:
    """`factory` with every parameter group's lr set to `lr` (fine-tuning)."""

    def make(params: Any) -> torch.optim.Optimizer:
        optimizer = factory(params)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return optimizer

    return make


def optimizer_factory(spec: Any) -> OptimizerFactory:
    """A callable params → optimizer from a Hydra `_target_`/`_partial_` spec (or a ready callable)."""
    if callable(spec):
        return spec
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    node = OmegaConf.create(spec) if not OmegaConf.is_config(spec) else spec
    return instantiate(node, _partial_=True)


def scheduler_factory(spec: Any) -> Callable[[torch.optim.Optimizer], Any] | None:
    """A callable optimizer → LR scheduler from a spec, or None."""
    if spec is None or callable(spec):
        return spec
    return optimizer_factory(spec)


def build_trainer(t: Any, max_steps: int, callbacks: list[pl.Callback], loggers: list[Any], root_dir: str | Path,
                  single_process: bool = False) -> pl.Trainer:
    """A Trainer for one round from `trainer.*` settings `t`; `single_process`: evaluation in this process only."""
    from lth.distributed import strategy_for
    from lth.loggers import SafeLogger

    return pl.Trainer(
        max_steps=max_steps,
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
        default_root_dir=str(root_dir),
    )
