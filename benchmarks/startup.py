"""Import weight and start-up: which heavy libraries `import lth` pulls in, and `lth-run` against `import torch`."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import Timed, collect, median, python, python_env, time_interleaved

HEAVY_MODULES = ("wandb", "torchvision", "sklearn", "mnist1d")  # must stay unimported by `import lth, lth.runner, ...`
IMPORTED = ("lth", "lth.runner", "lth.cli")


_IMPORT_PROBE = (
    "import json, sys, time; t = time.perf_counter(); import {mods}; dt = time.perf_counter() - t; "
    "print(json.dumps({{'seconds': dt, 'loaded': [m for m in {heavy!r} if m in sys.modules]}}))"
)


def start_import_probe(threads: int | None) -> subprocess.Popen:
    """Start a fresh interpreter that imports lth's entry modules and reports which heavy libraries came along."""
    return python(_IMPORT_PROBE.format(mods=", ".join(IMPORTED), heavy=HEAVY_MODULES), python_env(threads))


def imports_results(proc: subprocess.Popen) -> dict[str, Any]:
    """The import probe's report."""
    report = collect(proc, "import probe")
    return {"imported": list(IMPORTED), "checked": list(HEAVY_MODULES), "loaded": report["loaded"],
            "import_seconds": report["seconds"]}


def imports_suite(threads: int | None) -> dict[str, Any]:
    """Which heavy optional libraries `import lth, lth.runner, lth.cli` loads (in a fresh process), and how long it takes."""
    return imports_results(start_import_probe(threads))


def _lth_run_command() -> list[str]:
    script = Path(sys.executable).with_name("lth-run")
    return [str(script)] if script.exists() else [sys.executable, "-m", "lth.cli"]


def startup_suite(repeats: int, warmup: int, threads: int | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Wall time of `lth-run experiment=smoke` (fresh run folder each time) vs `python -c "import torch"` and vs
    importing lth's entry modules, subprocesses taking turns; data cached by an untimed first run."""
    env = python_env(threads)
    with tempfile.TemporaryDirectory(prefix="lth-bench-") as tmp:
        runs = iter(range(10**6))

        def cmd(args: list[str]) -> Timed:
            def run() -> None:
                proc = subprocess.run(args, check=False, cwd=tmp, env=env, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
            return run

        def smoke() -> None:
            out = Path(tmp) / f"run_{next(runs)}"
            cmd([*_lth_run_command(), "experiment=smoke", f"data.root={Path(tmp) / 'data'}", f"out_dir={out}",
                 *overrides])()

        smoke()  # caches the data (MNIST-1D / digits) and compiled bytecode
        fns: dict[str, Timed] = {
            "import_torch": cmd([sys.executable, "-c", "import torch"]),
            "import_lth": cmd([sys.executable, "-c", f"import {', '.join(IMPORTED)}"]),
            "lth_run_smoke": smoke,
        }
        times = time_interleaved(fns, repeats, warmup, torch.device("cpu"))
    seconds = {n: median(t["total"]) for n, t in times.items()}
    return {
        "command": "lth-run experiment=smoke " + " ".join(overrides),
        "seconds": seconds,
        "ratio": {n: s / seconds["import_torch"] for n, s in seconds.items()},
    }

