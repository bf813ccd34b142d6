"""Shared pieces of the benchmarks: device-synchronised clocks, interleaved timing, threads, quiet Lightning, and
fresh-interpreter subprocesses."""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

LR = 1.2e-3  # Adam, as the LeNet preset
DENSITY = 0.2
ROOT = Path(__file__).resolve().parents[1]  # the repository (its lth and benchmarks/)


# ----------------------------------------------------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    """Wait for queued device work (CUDA), so wall-clock timers measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """A start/stop clock (wall and this process's CPU time) that synchronises the device at both ends."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.t0: tuple[float, float] | None = None
        self.t1: tuple[float, float] | None = None

    def reset(self) -> None:
        """Forget both ends (the clock can time another run)."""
        self.t0 = self.t1 = None

    def start(self) -> None:
        """Synchronise the device and note the start."""
        sync(self.device)
        self.t0 = (time.perf_counter(), time.process_time())

    def stop(self) -> None:
        """Synchronise the device and note the end."""
        sync(self.device)
        self.t1 = (time.perf_counter(), time.process_time())

    @property
    def seconds(self) -> float:
        """Wall seconds between start and stop (NaN if either is missing)."""
        return math.nan if self.t0 is None or self.t1 is None else self.t1[0] - self.t0[0]

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds this process used between start and stop (all its threads; NaN if either is missing)."""
        return math.nan if self.t0 is None or self.t1 is None else self.t1[1] - self.t0[1]

    def per_step(self, steps: int) -> dict[str, float]:
        """Wall ("step") and CPU ("step_cpu") seconds per step."""
        return {"step": self.seconds / max(steps, 1), "step_cpu": self.cpu_seconds / max(steps, 1)}


Timed = Callable[[], Mapping[str, float] | None]


def time_interleaved(fns: Mapping[str, Timed], repeats: int, warmup: int, device: torch.device) -> dict[str, dict]:
    """Per function: wall seconds of each repeat ("total") plus the named durations it returns itself.

    The functions take turns, in the given order one repeat and the reverse the next (a, b, c, c, b, a, a, b, ...):
    neighbours in the order stay neighbours in time, each one before the other as often as after, so a paired ratio
    compares runs seconds apart and a drift of the machine cancels between two repeats.
    """
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    out: dict[str, dict[str, list[float]]] = {n: {"total": []} for n in names}
    for r in range(repeats):
        for n in names if r % 2 == 0 else names[::-1]:
            sync(device)
            t = time.perf_counter()
            extra = fns[n]() or {}
            sync(device)
            out[n]["total"].append(time.perf_counter() - t)
            for key, v in extra.items():
                out[n].setdefault(key, []).append(float(v))
    return out


def median(xs: Sequence[float]) -> float:
    """Median of `xs`."""
    return float(statistics.median(xs))


def paired_ratio(xs: Sequence[float], base: Sequence[float]) -> float:
    """Median over repeats of x / baseline within the same repeat (neighbours in time share the machine's load)."""
    return median([x / b for x, b in zip(xs, base)])


def median_interval(xs: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """A distribution-free interval for the median of `xs`: the order statistics x_(k), x_(n+1-k) with the largest k
    whose binomial coverage is at least `level` (the whole range when no k reaches it, e.g. n < 6 at 95%)."""
    s, n = sorted(xs), len(xs)
    if n == 0:
        return math.nan, math.nan
    k = 1
    # coverage of [x_(k), x_(n+1-k)]: P(k <= Binomial(n, 1/2) <= n - k)
    while k + 1 <= n - k and 1 - 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n >= level:
        k += 1
    return s[k - 1], s[n - k]


def paired_interval(xs: Sequence[float], base: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """`median_interval` of the per-repeat ratios x / baseline: where the paired ratio's median lies."""
    return median_interval([x / b for x, b in zip(xs, base)], level)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `n` inside the block (unchanged for None)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence Lightning's info lines and known warnings while benchmarking."""
    import logging
    import warnings

    import pytorch_lightning  # noqa: F401  (its import sets its loggers' levels; override them after)

    loggers = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


# ------------------------------------------------------------------------------------------------------ subprocesses
def python_env(threads: int | None) -> dict[str, str]:
    """The environment of a benchmark subprocess: W&B off unless set, warnings silenced, `threads` OpenMP threads."""
    env = dict(os.environ)
    env.setdefault("WANDB_MODE", "disabled")
    env["PYTHONWARNINGS"] = "ignore"
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def python(code: str, env: Mapping[str, str]) -> subprocess.Popen:
    """Start a fresh interpreter running `code` (stdout and stderr captured)."""
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(env))


def collect(proc: subprocess.Popen, what: str) -> dict[str, Any]:
    """Wait for `proc` and parse the JSON of its last output line (its stderr in the error if it failed)."""
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}):\n{err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])

