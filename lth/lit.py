"""TicketModule (a LightningModule around any nn.Module) and the callbacks that keep masks, θk and checkpoints."""

from __future__ import annotations

import contextlib
import csv
import functools
import inspect
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.profilers import PassThroughProfiler
from torch import Tensor, nn
from torchmetrics import Metric

from lth.early_stop import DEFAULT_RULE, EARLY_STOP_RULES
from lth.masks import MaskManager
from lth.metrics import TRAIN_LOSS, curve
from lth.preempt import AGREE_EVERY, StopSignals

log = logging.getLogger(__name__)

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

    def _wrap_update(self, update: Callable[[Tensor, Tensor], None]) -> Callable[[Tensor, Tensor], None]:
        # torchmetrics' wrapper writes two attributes through nn.Module.__setattr__ and enters a grad-mode context on
        # every call (~half the cost of an update here); its count and cache reset are kept, written directly. No grad
        # context is needed: argmax, == and sum never build a graph.
        state = self.__dict__

        def counted(logits: Tensor, target: Tensor) -> None:
            state["_computed"] = None
            state["_update_count"] += 1
            update(logits, target)

        return counted

    def compute(self) -> Tensor:
        return self.correct.float() / self.total.float()


# LightningModule hooks whose base implementation does nothing and whose result Lightning does not need; five of them
# are called at every training step.
NO_OP_MODULE_HOOKS = (
    "on_train_batch_start", "on_before_zero_grad", "on_before_backward", "on_after_backward", "on_before_optimizer_step",
    "on_train_epoch_start", "on_train_epoch_end",
)  # (the evaluation batch hooks stay: Lightning reads their signatures)


class TicketModule(pl.LightningModule):
    """Trains any classifier `model`; evaluates val and test together every `eval_every` steps and keeps the history."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerFactory,
        num_classes: int,
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        objective: Any = None,
    ) -> None:
        super().__init__()
        self.model = model
        # the training loss when not plain cross-entropy (`lth.distill.Distillation`): a plain object, not a module, so
        # whatever it holds (a teacher) stays out of the optimizer, checkpoints and DDP
        self.objective = objective
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.num_classes = num_classes
        self.train_acc = RunningAccuracy()
        self.eval_acc = nn.ModuleList(RunningAccuracy() for _ in EVAL_SPLITS)
        self._eval_loss: list[Tensor] = []
        self._eval_count: list[int] = []
        self.history: list[dict[str, float]] = []  # one entry per evaluation: step, val/test loss and accuracy
        self.nonfinite_step: int | None = None
        self.eval_step: int | None = None  # the step an evaluation is recorded at, when not the Trainer's own
        for name in NO_OP_MODULE_HOOKS:  # not overridden: Lightning skips a non-callable hook (~5 µs a call, per step)
            if getattr(type(self), name) is getattr(pl.LightningModule, name):
                self.__dict__[name] = None
        step_fn = type(self).training_step
        if inspect.isfunction(step_fn) and "__signature__" not in vars(step_fn):
            # Lightning inspects training_step's signature at every step (does it take batch_idx?): ~21 µs a step
            # for inspect to rebuild it, ~8 µs from this cached copy of the same signature
            step_fn.__signature__ = inspect.signature(step_fn)
        self._step_loss: Tensor | None = None  # this step's training loss, when the logger writes it
        self.last_train_loss: Tensor | None = None  # the last training loss written (the progress display shows it)

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets `_current_fx_name` around each of its ~15 hook calls per step; a plain string needs none of
        # nn.Module.__setattr__'s parameter/buffer/module bookkeeping (which costs ~5 µs a call).
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _place_batches(self, loaders: Any) -> None:
        """Make in-memory loaders (`to_device`, e.g. `TensorBatches`) yield batches on this module's device."""
        if self.device.type == "cpu":
            return
        for loader in leaf_loaders(loaders):
            if hasattr(loader, "to_device"):
                loader.to_device(self.device)

    def on_train_start(self) -> None:
        self._place_batches(self.trainer.train_dataloader)
        if self.objective is not None and hasattr(self.objective, "attach"):
            self.objective.attach(leaf_loaders(self.trainer.train_dataloader), self.device)

    def on_validation_start(self) -> None:
        self._place_batches(self.trainer.val_dataloaders)

    def on_test_start(self) -> None:
        self._place_batches(self.trainer.test_dataloaders)

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        logits = self.model(x)
        loss = F.cross_entropy(logits, y) if self.objective is None else self.objective.loss(logits, batch)
        self.train_acc.update(logits.detach(), y)
        if self._logs_this_step():  # kept as a tensor: read after the step, on the steps the logger writes only
            self._step_loss = loss.detach()
        return loss

    def on_train_batch_end(self, *args: Any) -> None:
        trainer = self._trainer
        if self._step_loss is None or trainer is None or trainer.fit_loop.epoch_loop._should_accumulate():
            return
        self.last_train_loss, self._step_loss = self._step_loss, None
        self._write({TRAIN_LOSS: self.last_train_loss})

    def _logs_this_step(self) -> bool:
        """Whether the training loss is written at this training step (every `log_every_n_steps` steps, Lightning's
        rule: step + 1 divisible)."""
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
        entry: dict[str, float] = {"step": int(self.global_step) if self.eval_step is None else self.eval_step}
        if self.train_acc.update_count:
            entry["train_acc"] = float(self.train_acc.compute())  # over the steps since the last evaluation
            self.train_acc.reset()
        for i, split in enumerate(EVAL_SPLITS):
            if self._eval_count[i] == 0:
                continue
            entry[f"{split}_loss"] = float(self._eval_loss[i]) / self._eval_count[i]
            entry[f"{split}_acc"] = float(self.eval_acc[i].compute())
        self._write({curve(*k.split("_", 1)): v for k, v in entry.items() if k != "step"})  # val_loss: val/loss
        if self.history and self.history[-1]["step"] == entry["step"]:
            self.history[-1] = entry
        else:
            self.history.append(entry)
        if not all(math.isfinite(v) for k, v in entry.items() if k.endswith("_loss")):
            self.nonfinite_step = entry["step"]
            self.trainer.should_stop = True

    def _write(self, metrics: dict[str, Any]) -> None:
        """Hand `metrics` to the Trainer's loggers at the step and with the epoch Lightning's own logging gives them.

        Written directly, not through `self.log`: each of its calls costs ~1–2 ms of Python (Lightning moves its whole
        result record to the value's device), several percent of a small network's round; lth reads its results from
        `history`, not from Lightning's callback metrics."""
        trainer = self._trainer
        if trainer is None or not trainer.loggers or not metrics or not trainer.is_global_zero:
            return
        row = {k: float(v) for k, v in metrics.items()}
        row["epoch"] = trainer.current_epoch
        step = trainer.fit_loop.epoch_loop._batches_that_stepped
        for logger in trainer.loggers:
            logger.log_metrics(row, step)
            logger.save()

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.model.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lth_history"] = list(self.history)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("lth_history", []))

    def early_stop(self, metric: str = DEFAULT_RULE) -> dict[str, float]:
        """The early-stop evaluation under rule `metric` (default: lowest validation loss, LTH's); ties → earliest."""
        return EARLY_STOP_RULES[metric].best(self.history)


def leaf_loaders(loaders: Any) -> list[Any]:
    """The loaders inside a Trainer's dataloader attribute (a loader, list, dict or Lightning's CombinedLoader)."""
    out, stack = [], [loaders]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif hasattr(item, "iterables") and not hasattr(item, "to_device"):  # Lightning's CombinedLoader
            stack.append(item.iterables)
        elif item is not None:
            out.append(item)
    return out


# Optimizers whose update of a weight with zero gradient and zero state is exactly zero (weight decay of a zero weight
# is zero too). With mask-0 `zero` and masks fixed for the fit, masked gradients alone keep pruned weights at 0 under
# them, so the after-step pass is skipped (exact types only: a subclass may change the update).
ZERO_PRESERVING_OPTIMIZERS: tuple[type, ...] = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)


class MaskingCallback(pl.Callback):
    """Zeroes pruned gradients before each optimizer step (so clipping sees them masked), re-masks after it when needed.

    In a single process each gradient is zeroed as backward accumulates it (a post-accumulate-grad hook per prunable),
    under DDP all of them once before the step.

    The re-masking pass runs after every step unless the optimizer is one of ZERO_PRESERVING_OPTIMIZERS, mask-0 is
    `zero` and the masks are those of the fit's start; replacing the masks mid-fit (`set_masks`) turns it on, since the
    optimizer state of newly pruned weights is not zero.
    """

    def __init__(self, manager: MaskManager) -> None:
        self.manager = manager
        self._hooks: list[Any] = []
        self._unhooked: list[torch.optim.Optimizer] = []
        self._masks: Any = None
        self._changing = False
        self._grad_hooks: list[Any] = []  # per-prunable post-accumulate-grad hooks (single-process fits)
        self._factors: list[Tensor] = []  # this step's mask factors, read by those hooks

    def expect_mask_changes(self) -> None:
        """Re-mask after every optimizer step of this fit: its masks change during training (gradual pruning), and a
        fit resumed from a checkpoint restores the non-zero optimizer state of weights pruned before it."""
        self._changing = True
        for optimizer in self._unhooked:
            self._hook(optimizer)
        self._unhooked.clear()

    def _hook(self, optimizer: torch.optim.Optimizer) -> None:
        self._hooks.append(optimizer.register_step_post_hook(lambda *_: self.manager.apply()))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.manager.apply()
        self._masks = self.manager.masks
        if trainer.world_size == 1:
            # Each gradient is masked the moment backward has accumulated it, while it is still in cache (a pass over
            # every gradient after backward evicts what the optimizer reads next). Under DDP the reducer's own hooks
            # copy gradients into its buckets in an order of its own, so there they are masked before the step.
            self._factors = self.manager.mask_factors()
            for i, p in enumerate(self.manager.params):
                if p.requires_grad:  # (frozen weights, e.g. under a supermask, get no gradient)
                    self._grad_hooks.append(p.register_post_accumulate_grad_hook(functools.partial(self._mask_grad, i)))
        # one of the two per-step hooks runs (Lightning skips an attribute set to None)
        setattr(self, "on_before_optimizer_step" if trainer.world_size == 1 else "on_before_backward", None)
        for optimizer in trainer.optimizers:
            if self.manager.mask0 == "zero" and type(optimizer) in ZERO_PRESERVING_OPTIMIZERS and not self._changing:
                self._unhooked.append(optimizer)
            else:
                self._hook(optimizer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for h in self._hooks + self._grad_hooks:
            h.remove()
        self._hooks.clear()
        self._grad_hooks.clear()
        self._unhooked.clear()
        self._factors = []
        for name in ("on_before_optimizer_step", "on_before_backward"):
            self.__dict__.pop(name, None)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.on_fit_end(trainer, pl_module)  # a later fit of the same model must not find this fit's hooks

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        self._factors = self.manager.mask_factors()  # this step's masks (gradual pruning replaces them)
        self._follow_mask_changes(trainer.optimizers)

    def _mask_grad(self, i: int, param: Tensor) -> None:
        param.grad.mul_(self._factors[i])

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        self.manager.mask_grads()
        self._follow_mask_changes([optimizer])

    def _follow_mask_changes(self, optimizers: list[torch.optim.Optimizer]) -> None:
        """Masks replaced during the fit: the optimizer state of newly pruned weights zeroed, and re-masking after
        every step from now on (see the class docstring)."""
        if self.manager.masks is self._masks:
            return
        self._masks = self.manager.masks
        for optimizer in optimizers:
            self.manager.mask_state(optimizer)
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
    """Writes `<dirpath>/last.ckpt` atomically every `every_n_steps` optimizer steps (but not within `min_interval_s`
    seconds of the last one), and at the step where a stop was requested (`stop`, a lth.preempt.StopSignals: then
    raises lth.preempt.Interrupted).

    At a step followed by an evaluation the checkpoint is written after it, so a resumed round keeps that evaluation
    (Lightning does not redo it). Every rank calls `save` (Lightning's save is collective); rank 0 writes the file.
    Under DDP the ranks agree on a pending stop every AGREE_EVERY steps and after each evaluation (one small
    all-reduce), never per step. Loggers are flushed first, so a resumed round's CSV keeps every row up to the
    checkpoint. `stop` is listened to only outside `ddp_spawn` (`listen=False` there: the signal goes to the parent).
    """

    def __init__(self, dirpath: str | os.PathLike, every_n_steps: int, stop: StopSignals | None = None,
                 r: int | None = None, listen: bool = True, min_interval_s: float = 0.0) -> None:
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_steps = every_n_steps
        self.min_interval_s = min_interval_s
        self.stop = stop if listen else None
        self.r = r
        self._saved_step = -1
        self._saved_time = 0.0  # when the fit started or the last checkpoint was written (time.monotonic)
        self._eval_every = 0  # the fit's validation interval in batches (0: none), read once when training starts

    def _due(self, trainer: pl.Trainer) -> bool:
        """A periodic checkpoint is due: every `every_n_steps` steps, once `min_interval_s` seconds have passed since
        the last one (or the fit's start); under DDP rank 0's clock decides for all (the save is collective)."""
        step = trainer.global_step
        if not (self.every_n_steps > 0 and step > 0 and step % self.every_n_steps == 0 and step != self._saved_step):
            return False
        if self.min_interval_s <= 0:
            return True
        ready = time.monotonic() - self._saved_time >= self.min_interval_s
        return bool(trainer.strategy.broadcast(ready, src=0)) if trainer.world_size > 1 else ready

    def _stopping(self, trainer: pl.Trainer, evaluated: bool) -> bool:
        """Whether to stop at this step boundary: a pending signal, agreed by every rank under DDP."""
        if self.stop is None:
            return False
        asked = self.stop.signum is not None
        if trainer.world_size == 1:
            return asked
        if not evaluated and trainer.global_step % AGREE_EVERY:
            return False
        return bool(trainer.strategy.reduce_boolean_decision(asked, all=False))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_every = validation_interval(trainer)
        self._saved_time = time.monotonic()
        if self.stop is not None:
            self.stop.install()  # over the handlers Lightning put in for the fit (they stop without a checkpoint)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        every = self._eval_every  # a batch followed by an evaluation: its boundary comes after it (in the checkpoint)
        if not every or (trainer.fit_loop.epoch_loop.total_batch_idx + 1) % every:
            self._boundary(trainer, evaluated=False)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._boundary(trainer, evaluated=True)

    def _boundary(self, trainer: pl.Trainer, evaluated: bool) -> None:
        stopping = trainer.global_step < trainer.max_steps and self._stopping(trainer, evaluated)
        if (stopping or self._due(trainer)) and trainer.global_step != self._saved_step:
            self.save(trainer)
        if stopping:
            stopped = self.stop.stop_at(self.r if self.r is not None else 0, int(trainer.global_step))
            if trainer.is_global_zero:
                log.warning("%s (%s)", stopped, self.path)
            raise stopped

    def save(self, trainer: pl.Trainer) -> None:
        """Save now (temp file + rename)."""
        tmp = self.path.with_name(".last.ckpt.tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for logger in trainer.loggers:
            logger.save()
        with without_crc32():
            trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        self._saved_step = trainer.global_step
        self._saved_time = time.monotonic()


@contextlib.contextmanager
def without_crc32() -> Iterator[None]:
    """torch.save without the per-record CRC32 pass inside the block (where torch has the option), then as before.

    last.ckpt is lth's own resume file, read back only by torch.load (which accepts it) and replaced atomically, so a
    torn write never stands; the CRC pass is ~40% of serialising it (LeNet-300-100's 4.3 MB: 21 → 13 ms)."""
    get = getattr(torch.serialization, "get_crc32_options", None)
    if get is None:
        yield
        return
    before = get()
    torch.serialization.set_crc32_options(False)
    try:
        yield
    finally:
        torch.serialization.set_crc32_options(before)


def validation_interval(trainer: pl.Trainer) -> int:
    """Every how many training batches Lightning's step-based validation (check_val_every_n_epoch=None) runs in this
    fit: after batch i when (i + 1) % interval == 0; 0 when it does not. Fixed once the fit's data is set up."""
    every = trainer.val_check_batch
    if not trainer.enable_validation or every is None or every == float("inf"):
        return 0
    return int(every)


class ProgressCallback(pl.Callback):
    """A round's progress on rank 0: a bar (steps, loss, ETA) on a terminal, else a plain line every 10% of the round.

    The loss shown is the last value already logged (`train/loss`), read only when the display refreshes (every
    `refresh_s` seconds on a terminal): no host sync per step. Per step it costs a comparison or a clock read. Plain
    lines come at most every `min_gap_s` seconds (a round of seconds prints none).
    """

    def __init__(self, title: str, bar: bool, stream: IO[str] | None = None, refresh_s: float = 0.5,
                 min_gap_s: float = 2.0) -> None:
        self.title = title
        self.bar = bar
        self.stream = stream
        self.refresh_s = refresh_s
        self.min_gap_s = min_gap_s
        self._last_line = 0.0
        self._start = (0.0, 0)
        self._next_step = 0
        self._next_time = 0.0
        self._shown = False

    def _out(self) -> IO[str]:
        return self.stream if self.stream is not None else sys.stderr

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = trainer.global_step
        self._start = (time.monotonic(), step)
        self._next_time = self._start[0] + self.refresh_s
        self._next_step = self._tenth_after(step, trainer.max_steps)
        self._last_line = self._start[0]

    @staticmethod
    def _tenth_after(step: int, total: int) -> int:
        """The first 10% mark of the round strictly after `step`."""
        tenths = (10 * step) // max(total, 1) + 1
        return max(step + 1, -(-tenths * total // 10))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self.bar:
            now = time.monotonic()
            if now >= self._next_time:
                self._next_time = now + self.refresh_s
                self._show(trainer, now)
        elif trainer.global_step >= self._next_step:
            total = trainer.max_steps
            self._next_step = self._tenth_after(trainer.global_step, total)
            now = time.monotonic()
            if trainer.global_step < total and now - self._last_line >= self.min_gap_s:  # the round's line: the end
                self._last_line = now
                self._show(trainer, now)

    def _show(self, trainer: pl.Trainer, now: float) -> None:
        if not trainer.is_global_zero:
            return
        step, total = trainer.global_step, trainer.max_steps
        t0, s0 = self._start
        eta = (now - t0) / (step - s0) * (total - step) if step > s0 else None
        loss = getattr(trainer.lightning_module, "last_train_loss", None)  # the last written value, already computed
        parts = [f"step {step}/{total}", f"loss {float(loss):.4f}" if loss is not None else "",
                 f"ETA {_duration(eta)}" if eta is not None else ""]
        text = "  ".join(p for p in parts if p)
        out = self._out()
        if self.bar:
            width = 20
            done = int(width * step / max(total, 1))
            out.write(f"\r\x1b[K{self.title} [{'#' * done}{'.' * (width - done)}] {100 * step // max(total, 1):3d}%  "
                      f"{text}")
            self._shown = True
        else:
            out.write(f"{self.title}  {text}  ({100 * step // max(total, 1)}%)\n")
        out.flush()

    def _clear(self) -> None:
        if self._shown:
            self._out().write("\r\x1b[K")
            self._out().flush()
            self._shown = False

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._clear()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._clear()


def _duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger for `<save_dir>/csv/metrics.csv` that continues a resumed round's file: rows logged before
    `resume_step` are kept, later ones (redone after the resume) dropped; None starts the file afresh. Rows are
    written as they are logged (every `log_every_n_steps` steps), so a kill loses none before its checkpoint."""

    def __init__(self, save_dir: str | os.PathLike, resume_step: int | None = None) -> None:
        super().__init__(str(save_dir), name="csv", version="", flush_logs_every_n_steps=1)
        self.resume_step = resume_step

    @property
    def experiment(self) -> _ResumableWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumableWriter(self.log_dir, self.resume_step)
        return self._experiment  # type: ignore[return-value]


class _ResumableWriter(ExperimentWriter):
    """ExperimentWriter that keeps an existing metrics.csv's rows before `resume_step` (drops it when None)."""

    def __init__(self, log_dir: str, resume_step: int | None) -> None:
        self._resume_step = resume_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        if self._resume_step is None:
            path.unlink()
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            keys = list(reader.fieldnames or [])
            rows = [row for row in reader if row.get("step") and int(row["step"]) < self._resume_step]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = keys


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


def windowed(optimizer: OptimizerFactory, scheduler: Callable[[torch.optim.Optimizer], Any] | None, start: int,
             hold: bool = False) -> tuple[OptimizerFactory, Callable[[torch.optim.Optimizer], Any] | None]:
    """The round's optimizer and scheduler factories with the lr schedule starting at global step `start` (the
    scheduler fast-forwarded by `start` steps, as round 0's was after `start` optimizer steps); `hold`: that lr for the
    whole round (no scheduler). The optimizer's own state (Adam's moments and step count) starts fresh."""
    if scheduler is None or (start == 0 and not hold):
        return optimizer, scheduler

    def forwarded(opt: torch.optim.Optimizer) -> Any:
        sched = scheduler(opt)
        with warnings.catch_warnings():  # no optimizer step before these scheduler steps, on purpose
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
            for _ in range(start):
                sched.step()
        return sched

    if not hold:
        return optimizer, forwarded

    def held(params: Any) -> torch.optim.Optimizer:
        opt = optimizer(params)
        forwarded(opt)  # sets every group's lr to the schedule's lr at `start`; the scheduler is then dropped
        return opt

    return held, None


# Hooks Lightning calls through `_call_callback_hooks`, which skips an attribute that is not callable; the checkpoint
# hooks are called directly and stay.
_SKIPPABLE_HOOKS = tuple(
    name for name, value in vars(pl.Callback).items()
    if callable(value) and (name.startswith("on_") or name in ("setup", "teardown"))
    and name not in ("on_save_checkpoint", "on_load_checkpoint")
)


def lean(callbacks: Iterable[pl.Callback]) -> list[pl.Callback]:
    """The callbacks with every hook they do not override set to None on the instance, so Lightning skips it.

    Lightning otherwise enters a profiler context and calls the base class's no-op for each callback and hook: about
    35 calls per training step for a lineage's callbacks, a few percent of a small network's step.
    """
    out = list(callbacks)
    for cb in out:
        for name in _SKIPPABLE_HOOKS:
            if name not in vars(cb) and getattr(type(cb), name, None) is getattr(pl.Callback, name):
                setattr(cb, name, None)
    return out


class LeanProfiler(PassThroughProfiler):
    """Lightning's default profiler (it records nothing) without a generator context per call: Lightning enters
    `profile()` ~30 times a training step, ~1.9 µs each through the base class's @contextmanager, 0.3 µs here."""

    _nothing = contextlib.nullcontext()

    def profile(self, action_name: str) -> contextlib.nullcontext:  # type: ignore[override]
        return self._nothing


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
        callbacks=lean(callbacks),
        accelerator=t.accelerator,
        devices=1 if single_process else t.devices,
        num_nodes=1 if single_process else t.num_nodes,
        strategy="auto" if single_process else strategy_for(t.strategy),
        precision=t.precision,
        gradient_clip_val=t.gradient_clip_val,
        accumulate_grad_batches=t.accumulate_grad_batches,
        deterministic=t.deterministic,
        profiler=LeanProfiler(),
        default_root_dir=str(root_dir),
    )
