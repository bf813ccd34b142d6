"""lth.preempt: the interruption's exit code and message, and the hand-over to the handler the process had before."""

import signal


def test_interrupted_is_the_exit_code_and_names_the_step():
    from lth.preempt import Interrupted

    stopped = Interrupted(0, 37, signal.SIGUSR1)
    assert isinstance(stopped, SystemExit) and stopped.code == 138 and stopped.step == 37
    assert "SIGUSR1 at step 37" in str(stopped)


def test_the_handler_before_the_round_gets_the_signal(monkeypatch):
    """Under submitit (launcher=slurm) the handler the job had is submitit's: it requeues the job."""
    from lth.preempt import Interrupted, Preemption, hand_over

    got = []
    monkeypatch.setattr(signal, "getsignal", lambda s: (lambda n, f: got.append(n)) if s == signal.SIGUSR2 else signal.SIG_DFL)
    callback = Preemption(0, checkpoint=None)
    stopped = Interrupted(0, 5, signal.SIGUSR2)
    stopped.previous = callback.previous
    hand_over(stopped)
    assert got == [signal.SIGUSR2]
    stopped = Interrupted(0, 5, signal.SIGTERM)
    stopped.previous = callback.previous
    hand_over(stopped)  # the default action: nothing to call, the SystemExit ends the process
    assert got == [signal.SIGUSR2]
