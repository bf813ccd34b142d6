"""lth.preempt: the stop request, the interruption's exit code and message, and the hand-over to the handler the
process had before the run."""

import os
import signal

import pytest

from lth.preempt import STOP_SIGNALS, Interrupted, StopSignals, exits_only, hand_over


def test_interrupted_is_the_exit_code_and_names_the_step():
    stopped = Interrupted(0, 37, signal.SIGUSR1)
    assert isinstance(stopped, SystemExit) and stopped.code == 138 and stopped.step == 37
    assert "SIGUSR1 at step 37" in str(stopped)
    assert Interrupted(2, None, signal.SIGINT).code == 130
    assert "by SIGINT before round 2" in str(Interrupted(2, None, signal.SIGINT))


def test_the_handler_before_the_run_gets_the_signal(monkeypatch):
    """Under submitit (launcher=slurm) the handler the job had is submitit's: it requeues the job."""
    got = []
    monkeypatch.setattr(signal, "getsignal",
                        lambda s: (lambda n, f: got.append(n)) if s == signal.SIGUSR2 else signal.SIG_DFL)
    stop = StopSignals()
    stop.signum = int(signal.SIGUSR2)
    stopped = stop.stop_at(0, 5)
    hand_over(stopped)
    assert got == [signal.SIGUSR2] and stopped.code == 140
    stop.signum = int(signal.SIGTERM)
    hand_over(stop.stop_at(0, 5))  # the default action: nothing to call, the SystemExit ends the process
    assert got == [signal.SIGUSR2]


def test_handlers_that_only_exit_and_python_s_sigint_handler_are_not_handed_over(monkeypatch):
    called = []

    @exits_only
    def cli_handler(n, f):
        called.append(n)

    stopped = Interrupted(0, 3, signal.SIGTERM)
    stopped.previous = {int(signal.SIGTERM): cli_handler, int(signal.SIGINT): signal.default_int_handler}
    hand_over(stopped)
    hand_over(Interrupted(0, 3, signal.SIGINT))
    stopped = Interrupted(0, 3, signal.SIGINT)
    stopped.previous = {int(signal.SIGINT): signal.default_int_handler}
    hand_over(stopped)  # would raise KeyboardInterrupt if called
    assert called == []


def test_one_signal_requests_a_stop_a_second_stops_at_once_and_handlers_are_restored():
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    stop = StopSignals()
    with stop.handling():
        assert all(signal.getsignal(s) == stop._handler for s in STOP_SIGNALS)
        stop.check(0)  # nothing asked yet
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.signum == signal.SIGUSR1
        with pytest.raises(Interrupted) as e:
            stop.check(3)
        assert (e.value.round, e.value.step, e.value.code) == (3, None, 138)
        with pytest.raises(Interrupted) as e:
            os.kill(os.getpid(), signal.SIGINT)
        assert (e.value.round, e.value.step, e.value.code) == (None, None, 130)
    assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == before
