"""Crash a lineage on purpose: run it in a forked child that SIGKILLs itself at a fault point (lth.runner's FAULT_ENV)."""

import multiprocessing as mp
import os
import signal

from lth.io import FAULT_ENV
from lth.runner import run


def crash(cfg, out, fault):
    """Run `cfg` into `out` in a forked child that SIGKILLs itself at `fault` (asserting it was killed)."""

    def child():
        os.environ[FAULT_ENV] = fault
        run(cfg, out, sinks=[])

    p = mp.get_context("fork").Process(target=child)
    p.start()
    p.join(120)
    assert p.exitcode == -signal.SIGKILL, f"fault {fault} was never reached (exit code {p.exitcode})"
