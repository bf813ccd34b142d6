"""Memory: peak RSS of masked training over dense training (fresh processes), and the size of a saved mask file.

The workers import only torch, `lth.masks` and this module's light neighbours.
"""

from __future__ import annotations

import math
import resource
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import DENSITY, LR, ROOT, collect, python, python_env, sync

# ------------------------------------------------------------------------------------------------------------- memory
MEMORY_MODES = ("dense", "masks", "masks_rewind")
MEMORY_STEPS = 3


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux: VmHWM via /proc/self/clear_refs); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def peak_rss() -> int:
    """Peak resident set size of this process in bytes (since the last `reset_peak_rss`, where supported)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def memory_worker(mode: str, hidden: int, steps: int, device: str) -> dict[str, Any]:
    """In a fresh process: train an MLP (dense, or masked with θ0, or with θ0 and θk) and report its peak memory."""
    from lth.masks import MaskManager

    if mode not in MEMORY_MODES:
        raise ValueError(f"unknown memory mode '{mode}'; valid choices: {', '.join(MEMORY_MODES)}")
    dev = torch.device(device)
    torch.manual_seed(0)
    reset_peak_rss()  # the imports' own peak is not the run's
    model = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                          nn.Linear(hidden, 10)).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    manager = None
    if mode != "dense":
        manager = MaskManager(model)
        masks = {}
        for n, m in manager.masks.items():  # density 0.2 without a float temporary
            keep = torch.zeros_like(m)
            keep.view(-1)[::5] = True
            masks[n] = keep
        manager.set_masks(masks)
    x = torch.randn(16, hidden, device=dev)
    y = torch.randint(0, 10, (16,), device=dev)
    for step in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if manager is not None:
            manager.mask_grads()
        opt.step()
        if manager is not None:
            manager.apply()
            if mode == "masks_rewind" and step == 0:
                manager.snapshot("rewind")
    sync(dev)
    params = sum(p.numel() for p in model.parameters())
    snapshots = 0 if manager is None else sum(
        t.numel() * t.element_size() for tag in ("init", "rewind") if manager.has_snapshot(tag)
        for t in manager.state(tag).values()
    )
    report = {
        "mode": mode,
        "params": params,
        "prunable": 0 if manager is None else manager.numel(),
        "peak_rss_bytes": peak_rss(),
        "mask_bytes": 0 if manager is None else sum(m.numel() * m.element_size() for m in manager.masks.values()),
        "snapshot_bytes": snapshots,
    }
    if dev.type == "cuda":
        report["peak_device_bytes"] = torch.cuda.max_memory_allocated(dev)
    return report


def start_memory_workers(
    hidden: int, steps: int, device: torch.device, threads: int | None, separate: bool = True
) -> dict[tuple[str, ...], subprocess.Popen]:
    """Start the memory workers: one process per mode side by side (`separate`), or one running the modes in turn
    (cheaper; the peak is reset between modes, so it is exact where /proc/self/clear_refs works)."""
    env = python_env(threads)
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"  # glibc: big tensors in their own mappings, so freed memory leaves the RSS
    code = ("import json, sys; sys.path.insert(0, {root!r}); import benchmarks.memory as b; "
            "print(json.dumps({{m: b.memory_worker(m, {hidden}, {steps}, {device!r}) for m in {modes!r}}}))")
    groups = [(m,) for m in MEMORY_MODES] if separate else [MEMORY_MODES]
    return {g: python(code.format(root=str(ROOT), modes=g, hidden=hidden, steps=steps, device=str(device)), env) for g in groups}


def memory_results(procs: Mapping[tuple[str, ...], subprocess.Popen], hidden: int, steps: int) -> dict[str, Any]:
    """Peak RSS of the masked runs over the dense one (per parameter), and the size of a saved mask file."""
    from lth import masks as masks_lib

    reports = {}
    for modes, proc in procs.items():
        reports.update(collect(proc, f"memory worker {', '.join(modes)}"))
    dense = reports["dense"]
    params = dense["params"]
    per_param: dict[str, Any] = {}
    for mode in MEMORY_MODES[1:]:
        r = reports[mode]
        extra = (r["peak_rss_bytes"] - dense["peak_rss_bytes"]) / params
        explained = (r["mask_bytes"] + r["snapshot_bytes"]) / params
        per_param[mode] = {
            "extra_rss_bytes_per_param": extra,
            "mask_bytes_per_param": r["mask_bytes"] / r["prunable"],
            "snapshot_bytes_per_param": r["snapshot_bytes"] / params,
            "other_bytes_per_param": extra - explained,
            "peak_rss_ratio": r["peak_rss_bytes"] / dense["peak_rss_bytes"],
        }
        if "peak_device_bytes" in r:
            device_extra = r["peak_device_bytes"] - dense["peak_device_bytes"]
            per_param[mode]["extra_device_bytes_per_param"] = device_extra / params
    return {"hidden": hidden, "steps": steps, "params": params, "processes": len(procs), "workers": reports,
            "per_param": per_param, "mask_file": mask_file_size(masks_lib, hidden)}


def memory_suite(hidden: int, steps: int, device: torch.device, threads: int | None) -> dict[str, Any]:
    """Peak RSS of masked runs over a dense one (each in its own process, run side by side), and mask sizes."""
    return memory_results(start_memory_workers(hidden, steps, device, threads), hidden, steps)


def mask_file_size(masks_lib: Any, hidden: int) -> dict[str, Any]:
    """Bytes of a saved mask file (`lth.masks.save`) for the memory benchmark's MLP at density 0.2."""
    shapes = [(hidden, hidden), (hidden, hidden), (10, hidden)]
    g = torch.Generator().manual_seed(0)
    masks = {f"{i * 2}.weight": torch.rand(s, generator=g) < DENSITY for i, s in enumerate(shapes)}
    numel = sum(m.numel() for m in masks.values())
    payload = sum(math.ceil(m.numel() / 8) for m in masks.values())
    with tempfile.TemporaryDirectory(prefix="lth-bench-") as tmp:
        path = Path(tmp) / "mask.pt"
        masks_lib.save(masks, path)
        size = path.stat().st_size
        same = all(torch.equal(a, b) for a, b in zip(masks.values(), masks_lib.load(path).values()))
    return {
        "params": numel,
        "bytes": size,
        "payload_bytes": payload,
        "header_bytes": size - payload,
        "bits_per_param": 8 * size / numel,
        "payload_bits_per_param": 8 * payload / numel,
        "round_trip": same,
    }

