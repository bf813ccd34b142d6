"""Multi-process training: who writes, mask agreement across ranks, and a ddp_spawn that returns the workers' state.

Two launch shapes exist. With `ddp_spawn` the lineage runs in one main process; only `Trainer.fit`/`validate` run in
spawned workers, and `SpawnStrategy` brings the module's history, the loop counters and the callbacks' state (masks,
θk) back to the main process, which alone prunes and writes files. With `ddp` (Lightning's script relaunch, torchrun or
SLURM tasks via submitit) every rank runs the whole lineage: pruning is deterministic and its masks are broadcast from
rank 0 (`agree`), and only rank 0 writes (`is_writer`).
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from pytorch_lightning.trainer.states import TrainerFn
from torch import Tensor

from lth.masks import MaskManager, pack

# strategies that run only `fit` in new worker processes, and the start method of each
SPAWN_STRATEGIES = {"ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}
# replicated evaluation logs per-rank values on purpose; Lightning's advice to sync them does not apply
_WORKER_WARNINGS = (".*sync_dist=True.*", ".*does not have many workers.*", ".*across ranks is zero.*")
CARRIED_MODULE_ATTRS = ("history", "nonfinite_step")  # TicketModule results that live outside its state_dict


GPU_ACCELERATORS = ("gpu", "cuda")
# launches that work with CUDA: a fork after CUDA is initialised (the first round did it) breaks every later round
FORK_SAFE_GPU_STRATEGIES = "ddp_spawn (one node) or ddp under torchrun / SLURM tasks (launcher=slurm)"


def accelerator_kind(accelerator: Any) -> str | None:
    """'gpu' for a CUDA accelerator (also 'auto' when CUDA is available), 'cpu', or None when not given."""
    if accelerator is None:
        return None
    name = str(getattr(accelerator, "value", accelerator)).lower()
    if name in GPU_ACCELERATORS or (name == "auto" and torch.cuda.is_available()):
        return "gpu"
    return "cpu" if name in ("cpu", "auto") else name


def devices_per_node(devices: Any, accelerator: Any = None) -> int:
    """Processes per node a Trainer config asks for; -1 / "auto" resolve like Lightning's (all visible CUDA devices
    for a GPU accelerator, 1 on CPU); 1 for them when `accelerator` is not given."""
    if isinstance(devices, int) and devices > 0:
        return devices
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str) and devices.strip().isdigit():
        return int(devices)
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    auto = devices in (-1, None) or (isinstance(devices, str) and devices.strip() in ("-1", "auto"))
    if auto and accelerator_kind(accelerator) == "gpu":
        return max(torch.cuda.device_count(), 1)
    return 1


def device_indices(devices: Any) -> list[int]:
    """The device indices `devices` names ([0, 3] or "0,3"); [] for a count."""
    if isinstance(devices, (list, tuple)):
        return [int(d) for d in devices]
    if isinstance(devices, str) and "," in devices:
        return [int(d) for d in devices.split(",") if d.strip()]
    return []


def world_size(devices: Any, num_nodes: int = 1, accelerator: Any = None) -> int:
    """Processes a Trainer config asks for: devices per node (see `devices_per_node`) times nodes."""
    return devices_per_node(devices, accelerator) * max(int(num_nodes), 1)


def launch_world(t: Any) -> int:
    """The processes of this launch for trainer settings `t`: $WORLD_SIZE (torchrun, Lightning's ddp relaunch) or
    $SLURM_NTASKS (SLURM tasks) where the launcher set them, else the resolved config (`world_size`)."""
    if is_spawn(t.strategy):
        return world_size(t.devices, t.num_nodes, t.accelerator)
    env = os.environ
    for var in ("WORLD_SIZE", "SLURM_NTASKS"):
        if env.get(var, "").strip().isdigit() and int(env[var]) > 1:
            return int(env[var])
    return world_size(t.devices, t.num_nodes, t.accelerator)


def global_rank(per_node: int) -> int:
    """This process's rank from the launcher's variables: a process group's, $RANK (torchrun), $SLURM_PROCID (SLURM
    tasks), else Lightning's NODE_RANK (or GROUP_RANK) × `per_node` + LOCAL_RANK (manual multi-node, ddp relaunch)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"])
    if int(env.get("SLURM_NTASKS", 1)) > 1 and "SLURM_PROCID" in env:
        return int(env["SLURM_PROCID"])
    node = int(env.get("NODE_RANK", env.get("GROUP_RANK", 0)))
    return node * per_node + int(env.get("LOCAL_RANK", 0))


def is_spawn(strategy: Any) -> bool:
    """True for a strategy that runs only `fit` in spawned workers (the lineage stays in this process)."""
    return isinstance(strategy, str) and strategy in SPAWN_STRATEGIES


def is_writer(strategy: Any, devices: Any, num_nodes: int = 1, accelerator: Any = None) -> bool:
    """False on every rank but global rank 0 of a launch that runs the whole program on every rank (they must not
    write); True for a spawn strategy (the lineage stays in one process) and a one-process config."""
    if is_spawn(strategy):
        return True
    per_node = devices_per_node(devices, accelerator)
    if per_node * max(int(num_nodes), 1) == 1:  # a one-process config trains alone (Lightning ignores the launcher)
        return True
    return global_rank(per_node) == 0


def agree(masks: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rank 0's masks on every rank of an initialised process group (the input unchanged otherwise)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return masks
    if torch.distributed.get_world_size() == 1:
        return masks
    box: list[Any] = [{n: m.cpu() for n, m in masks.items()}]
    torch.distributed.broadcast_object_list(box, src=0)
    if torch.distributed.get_rank() != 0 and mask_digest(box[0]) != mask_digest(masks):
        warnings.warn("this rank pruned differently from rank 0 (non-deterministic scores?); using rank 0's masks",
                      stacklevel=2)
    return box[0]


def mask_digest(masks: Mapping[str, Tensor]) -> str:
    """A short fingerprint of masks (names, shapes and every keep-flag)."""
    h = hashlib.sha256()
    for n, entry in pack(masks).items():
        h.update(f"{n}:{entry['shape']}:".encode())
        h.update(entry["bits"].numpy().tobytes())
    return h.hexdigest()[:16]


def weights_digest(manager: MaskManager) -> str:
    """A short fingerprint of the prunables' current values."""
    h = hashlib.sha256()
    for n, p in zip(manager.names, manager.params):
        h.update(n.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class MaskAgreement(pl.Callback):
    """Checks that every rank holds the same masks when training starts and ends (and the same weights at the end).

    `digests[when]` keeps each rank's fingerprints; differing masks are an error (ranks would train different
    networks), differing weights a warning.
    """

    def __init__(self, manager: MaskManager) -> None:
        self.manager = manager
        self.digests: dict[str, list[dict[str, str]]] = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer, "fit_start")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer, "train_end")

    def _check(self, trainer: pl.Trainer, when: str) -> None:
        mine = {"masks": mask_digest(self.manager.masks), "weights": weights_digest(self.manager)}
        everyone: list[Any] = [mine]
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            everyone = [None] * trainer.world_size
            torch.distributed.all_gather_object(everyone, mine)
        self.digests[when] = everyone
        check_agreement(everyone, when)

    def state_dict(self) -> dict[str, Any]:
        return {"digests": self.digests}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.digests = dict(state_dict.get("digests", {}))


def check_agreement(per_rank: list[Mapping[str, str]], when: str) -> None:
    """Raise if ranks' mask fingerprints differ; warn if their weights do."""
    masks = [d["masks"] for d in per_rank]
    if len(set(masks)) > 1:
        raise RuntimeError(f"ranks hold different masks at {when}: {masks}; every rank must train the same network")
    weights = [d["weights"] for d in per_rank]
    if len(set(weights)) > 1:
        warnings.warn(f"ranks hold different weights at {when}: {weights}", stacklevel=2)


# ----- ddp_spawn that brings the workers' results home
def worker_state(trainer: pl.Trainer) -> dict[str, Any]:
    """What a spawned rank-0 worker hands back besides the weights: module results, loop counters, callback state."""
    module = trainer.lightning_module
    state: dict[str, Any] = {
        "module": {a: getattr(module, a) for a in CARRIED_MODULE_ATTRS if hasattr(module, a)},
        "callbacks": {cb.state_key: cb.state_dict() for cb in trainer.callbacks},
        "fit_loop": trainer.fit_loop.state_dict() if trainer.state.fn == TrainerFn.FITTING else None,
    }
    buf = io.BytesIO()
    torch.save(state, buf)  # bytes, not shared-memory tensors, cross the process boundary
    return {"bytes": buf.getvalue()}


def load_worker_state(trainer: pl.Trainer, carried: Mapping[str, Any]) -> None:
    """Give the main process's module, loops and callbacks the state a worker handed back."""
    state = torch.load(io.BytesIO(carried["bytes"]), map_location="cpu", weights_only=True)
    module = trainer.lightning_module
    for attr, value in state["module"].items():
        setattr(module, attr, value)
    if state["fit_loop"] is not None:
        trainer.fit_loop.load_state_dict(state["fit_loop"])
    for cb in trainer.callbacks:
        if state["callbacks"].get(cb.state_key):
            cb.load_state_dict(state["callbacks"][cb.state_key])


class _CarryBackLauncher(_MultiProcessingLauncher):
    def get_extra_results(self, trainer: pl.Trainer) -> dict[str, Any]:
        extra = super().get_extra_results(trainer)
        extra["lth"] = worker_state(trainer)
        return extra

    def update_main_process_results(self, trainer: pl.Trainer, extra: dict[str, Any]) -> None:
        super().update_main_process_results(trainer, extra)
        load_worker_state(trainer, extra["lth"])


class SpawnStrategy(DDPStrategy):
    """`ddp_spawn` (or `ddp_fork`) whose main process ends a fit as the rank-0 worker did: weights (as Lightning
    does), plus the module's history, `trainer.global_step` and the callbacks' state (the mask manager with θk)."""

    def __init__(self, start_method: str = "spawn", **kwargs: Any) -> None:
        super().__init__(start_method=start_method, **kwargs)

    def _configure_launcher(self) -> None:
        assert self.cluster_environment is not None
        self._launcher = _CarryBackLauncher(self, start_method=self._start_method)

    def setup_environment(self) -> None:
        for pattern in _WORKER_WARNINGS:
            warnings.filterwarnings("ignore", pattern)
        super().setup_environment()


def strategy_for(strategy: Any) -> Any:
    """The Trainer strategy for a config value: `SpawnStrategy` for ddp_spawn / ddp_fork, anything else as given."""
    return SpawnStrategy(SPAWN_STRATEGIES[strategy]) if is_spawn(strategy) else strategy
