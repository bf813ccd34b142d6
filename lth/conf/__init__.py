"""Packaged Hydra configs, and the resolvers the launcher presets use to size a SLURM job from `trainer.*`."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

GPU_ACCELERATORS = ("gpu", "cuda")
SPAWN_STRATEGIES = ("ddp_spawn", "ddp_fork", "ddp_notebook")  # one process starts the workers


def tasks_per_node(devices: Any, strategy: Any = None) -> int:
    """SLURM tasks per node for `trainer.devices` (Lightning's DDP runs one task per device; a spawn strategy starts
    its workers from one task); a count is required."""
    count = devices_per_node(devices)
    return 1 if str(strategy) in SPAWN_STRATEGIES else count


def devices_per_node(devices: Any) -> int:
    """The number of devices per node `trainer.devices` names (a count, a list or a comma-separated string)."""
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
    """GPUs a SLURM node must provide: trainer.devices for a GPU accelerator, none (null) otherwise."""
    return devices_per_node(devices) if str(accelerator).lower() in GPU_ACCELERATORS else None


MEM_GB_PER_DEVICE = 16  # each device's process holds its own copy of the in-memory data and model


def mem_gb(devices: Any) -> int:
    """Memory a SLURM node must provide: MEM_GB_PER_DEVICE for each device's process on it."""
    return MEM_GB_PER_DEVICE * devices_per_node(devices)


for _name, _fn in (("lth_tasks_per_node", tasks_per_node), ("lth_gpus_per_node", gpus_per_node),
                   ("lth_mem_gb", mem_gb)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)
