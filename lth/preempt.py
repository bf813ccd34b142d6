"""Preemption: a signal stops a training round at its current step with a checkpoint there, and the run exits.

On SIGTERM (SLURM's preemption / `scancel`, `kill`), SIGUSR1 (SLURM's `--signal=USR1@N` pre-timeout warning) or
SIGUSR2 (submitit's pre-timeout signal under `launcher=slurm`), `Preemption` finishes the step in progress, writes the
round's `last.ckpt` at that step (after the step's evaluation, when one follows it) and raises `Interrupted`. Under DDP
every rank stops at the same step (the ranks agree on whether any got the signal). `lth.runner.run` then hands the
signal to the handler the process had before the round (submitit's: it requeues the job) and re-raises; `Interrupted`
is a `SystemExit` with code 128 + the signal's number (143 for SIGTERM, 138 for SIGUSR1, 140 for SIGUSR2), so a
scheduler sees a run stopped by the signal. Rerunning the same command resumes the round from that checkpoint to the
same result as an uninterrupted run. Outside a round's training loop the process's own handlers (or the default
action) apply; the run folder's atomic writes make a rerun resume from the last finished file.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytorch_lightning as pl

log = logging.getLogger(__name__)

PREEMPT_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class Interrupted(SystemExit):
    """A signal stopped round `round` at optimizer step `step` (its checkpoint holds that step); exit code 128 + signum."""

    def __init__(self, round: int, step: int, signum: int) -> None:
        super().__init__(128 + int(signum))
        self.round, self.step, self.signum = round, step, int(signum)
        self.previous: dict[int, Any] = {}  # the process's handlers before the round (see `hand_over`)

    def __str__(self) -> str:
        return (f"round {self.round} interrupted by {signal.Signals(self.signum).name} at step {self.step}; its "
                "checkpoint is saved: rerun the same command to resume")


class Preemption(pl.Callback):
    """Catches PREEMPT_SIGNALS while a round trains; at the next step boundary saves `checkpoint` and raises
    `Interrupted`. `previous` keeps the handlers the process had when the callback was made (see `hand_over`)."""

    def __init__(self, r: int, checkpoint: Any) -> None:
        self.r = r
        self.checkpoint = checkpoint  # a lth.lit.LastCheckpoint: save(trainer) writes last.ckpt now
        self.signum: int | None = None
        self.previous: dict[int, Any] = {int(s): signal.getsignal(s) for s in PREEMPT_SIGNALS}
        self._installed: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after Lightning registered its own handlers (it does so once the fit's setup is done): ours replace them
        if threading.current_thread() is threading.main_thread():
            self._installed = {int(s): signal.signal(s, self._handle) for s in PREEMPT_SIGNALS}

    def _restore(self) -> None:
        for s, handler in self._installed.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._installed = {}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        from lth.lit import _validates_after_this_batch

        if not _validates_after_this_batch(trainer):  # else after the step's evaluation (kept in the checkpoint)
            self._maybe_stop(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._maybe_stop(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._maybe_stop(trainer)  # a signal during the last step
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _maybe_stop(self, trainer: pl.Trainer) -> None:
        stop = self.signum is not None
        if trainer.world_size > 1:  # every rank stops at the same step if any got the signal
            stop = bool(trainer.strategy.reduce_boolean_decision(stop, all=False))
        if not stop:
            return
        signum = self.signum if self.signum is not None else int(signal.SIGTERM)
        if self.checkpoint._saved_step != trainer.global_step:
            self.checkpoint.save(trainer)
        self._restore()
        stopped = Interrupted(self.r, int(trainer.global_step), signum)
        stopped.previous = self.previous
        if trainer.is_global_zero:
            log.warning("%s (%s)", stopped, self.checkpoint.path)
        raise stopped


def hand_over(stopped: Interrupted) -> None:
    """Call the handler the process had for the signal before the round (e.g. submitit's, which requeues the job and
    exits); nothing for the default action or an ignored signal."""
    handler: Callable[..., Any] | Any = stopped.previous.get(stopped.signum)
    if callable(handler):
        handler(stopped.signum, None)
