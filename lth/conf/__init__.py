"""Packaged Hydra configs, and the resolvers the launcher presets use to size a SLURM job from `trainer.*`."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

GPU_ACCELERATORS = ("gpu", "cuda")


def tasks_per_node(devices: Any) -> int:
    """SLURM tasks per node for `trainer.devices` (Lightning's DDP runs one task per device); a count is required."""
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > 0:
        return devices
    if isinstance(devices, str) and devices.strip().isdigit() and int(devices) > 0:
        return int(devices)
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    if OmegaConf.is_list(devices) or isinstance(devices, (list, tuple)):
        return len(devices)
    raise ValueError(f"launcher=slurm needs trainer.devices as a number of devices per node (the job's tasks per "
                     f"node), got {devices!r}: the submitting machine cannot see the nodes' GPUs")


def gpus_per_node(accelerator: Any, devices: Any) -> int | None:
    """GPUs a SLURM node must provide: one per task for a GPU accelerator, none (null) otherwise."""
    return tasks_per_node(devices) if str(accelerator).lower() in GPU_ACCELERATORS else None


for _name, _fn in (("lth_tasks_per_node", tasks_per_node), ("lth_gpus_per_node", gpus_per_node)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)
