"""Stopping a run on a signal: the round in progress checkpoints at its current step, and the run exits.

One mechanism for every stop. While a run is under way, `StopSignals` catches SIGINT (Ctrl-C), SIGTERM (SLURM's
preemption / `scancel`, `kill`), SIGUSR1 (SLURM's `--signal=USR1@N` pre-timeout warning) and SIGUSR2 (submitit's
pre-timeout signal under `launcher=slurm`). In a round's training `lth.lit.LastCheckpoint` sees it at the next step
boundary, writes the round's `last.ckpt` at that step (after the step's evaluation when one follows it) and raises
`Interrupted`; between rounds the next round's start raises it. A second signal stops at once (the round then resumes
from its last checkpoint). Under DDP the ranks agree on whether any got a signal every `AGREE_EVERY` steps and at each
evaluation, so all stop at the same step.

`Interrupted` is a `SystemExit` with code 128 + the signal's number (130 SIGINT, 143 SIGTERM, 138 SIGUSR1, 140 SIGUSR2),
so a scheduler sees a run stopped by the signal. `lth.runner.run` hands the signal to the handler the process had before
the run (submitit's: it requeues the job) and re-raises. Rerunning the same command resumes the round from that
checkpoint to the same result as an uninterrupted run.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
AGREE_EVERY = 16  # under DDP: steps between the ranks' agreement on a pending stop (one small all-reduce each)


class Interrupted(SystemExit):
    """A signal stopped the run: round `round` at optimizer step `step` (its checkpoint holds that step), or before
    round `round` (`step` None), or at once (both None: a second signal); exit code 128 + signum."""

    def __init__(self, round: int | None, step: int | None, signum: int) -> None:
        super().__init__(128 + int(signum))
        self.round, self.step, self.signum = round, step, int(signum)
        self.previous: dict[int, Any] = {}  # the process's handlers before the run (see `hand_over`)

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        if self.step is not None:
            return (f"round {self.round} interrupted by {name} at step {self.step}; its checkpoint is saved: rerun "
                    "the same command to resume")
        where = f" before round {self.round}" if self.round is not None else ""
        return f"interrupted by {name}{where}: rerun the same command to resume"


class StopSignals:
    """The run's stop request: set by the first of STOP_SIGNALS while `handling()`; a second one stops at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {int(s): signal.getsignal(s) for s in STOP_SIGNALS}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise self._interrupted(Interrupted(None, None, signum))
        self.signum = signum
        print("\nlth-run: stopping after this step (again to stop at once)", file=sys.stderr, flush=True)

    def _interrupted(self, stopped: Interrupted) -> Interrupted:
        stopped.previous = self.previous
        return stopped

    def install(self) -> None:
        """Route STOP_SIGNALS to this object (main thread only; elsewhere a no-op). A fit calls it again once Lightning
        has put its own handlers in (they would stop without a checkpoint); Lightning restores ours after the fit."""
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                signal.signal(s, self._handler)

    @contextmanager
    def handling(self) -> Iterator[StopSignals]:
        """Install the handlers for the duration of the block, then restore the process's previous ones."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        self.previous = {int(s): signal.getsignal(s) for s in STOP_SIGNALS}
        self.install()
        try:
            yield self
        finally:
            for s, handler in self.previous.items():
                signal.signal(s, handler if handler is not None else signal.SIG_DFL)

    def check(self, r: int) -> None:
        """Raise Interrupted before round `r` starts if a stop was requested."""
        if self.signum is not None:
            raise self._interrupted(Interrupted(r, None, self.signum))

    def stop_at(self, r: int, step: int) -> Interrupted:
        """The Interrupted of round `r` stopped at `step` (a rank without a signal of its own, stopping with the
        others under DDP, reports SIGTERM)."""
        return self._interrupted(Interrupted(r, step, self.signum if self.signum is not None else int(signal.SIGTERM)))


def hand_over(stopped: Interrupted) -> None:
    """Call the handler the process had for the signal before the run (e.g. submitit's, which requeues the job and
    exits); nothing for the default actions, an ignored signal, or a handler that only ends the process
    (`exits_only`, e.g. the CLI's own)."""
    handler: Callable[..., Any] | Any = stopped.previous.get(stopped.signum)
    if callable(handler) and handler is not signal.default_int_handler and not getattr(handler, "exits_only", False):
        handler(stopped.signum, None)


def exits_only(handler: Callable[[int, Any], Any]) -> Callable[[int, Any], Any]:
    """Mark a signal handler that only ends the process: `hand_over` does not call it after a checkpointed stop."""
    handler.exits_only = True  # type: ignore[attr-defined]
    return handler
