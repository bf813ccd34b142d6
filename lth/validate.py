"""Checks a lineage's config before any training: one clear error naming what is wrong and the valid choices."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lth.config import BRANCH_DEFAULTS, REWIND_SCHEDULES, Config
from lth.early_stop import EARLY_STOP_RULES


def _in_open_unit(name: str, x: float) -> None:
    if not 0.0 < x < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {x}")


def validate(cfg: Config) -> None:
    """Raise ValueError for the first problem found in `cfg`: the values first (no heavy imports), then the names
    in the registries (criteria, resets and models need torch; datasets Lightning, so they come last)."""
    _validate_values(cfg)
    for what, module, attr, name in (
        ("pruning.criterion", "lth.pruning", "ALL_CRITERIA", cfg.pruning.criterion),
        ("ticket.reset", "lth.reset", "RESETS", cfg.ticket.reset),
        ("model.name", "lth.models", "MODELS", cfg.model.name),
        ("data.name", "lth.data", "DATASETS", cfg.data.name),
    ):
        registry = getattr(importlib.import_module(module), attr)
        if name not in registry:
            raise ValueError(f"{what}: {registry.unknown(name)}")
    _validate_structured(cfg)
    _validate_world(cfg)


def _validate_values(cfg: Config) -> None:
    """The checks that need no registry (and no torch)."""
    _in_open_unit("pruning.fraction", cfg.pruning.fraction)
    if cfg.pruning.target_density is not None:
        _in_open_unit("pruning.target_density", cfg.pruning.target_density)
        if cfg.ticket.rounds < 1:
            raise ValueError("pruning.target_density needs ticket.rounds >= 1 (1 = one-shot pruning)")
    for key, frac in {"pruning.output_fraction": cfg.pruning.output_fraction, **{
        f"pruning.overrides[{k}]": v for k, v in cfg.pruning.overrides.items()}}.items():
        if frac is not None and not 0.0 <= frac < 1.0:
            raise ValueError(f"{key} must be in [0, 1), got {frac}")
    t, tk = cfg.trainer, cfg.ticket
    if t.max_steps <= 0:
        raise ValueError(f"trainer.max_steps must be positive, got {t.max_steps}")
    if t.eval_every <= 0:
        raise ValueError(f"trainer.eval_every must be positive, got {t.eval_every}")
    if t.checkpoint_every < 0 or t.checkpoint_min_interval_s < 0:
        raise ValueError("trainer.checkpoint_every (steps; 0: never) and trainer.checkpoint_min_interval_s (seconds; 0: "
                         f"every due step) must be >= 0, got {t.checkpoint_every} and {t.checkpoint_min_interval_s}")
    if t.threads is not None and t.threads < 1:
        raise ValueError(f"trainer.threads must be a positive number of threads or null (torch's default), got {t.threads}")
    if tk.rounds < 0:
        raise ValueError(f"ticket.rounds must be >= 0, got {tk.rounds}")
    if tk.rewind_step < 0 or tk.rewind_epoch < 0:
        raise ValueError("ticket.rewind_step and ticket.rewind_epoch must be >= 0")
    if tk.rewind_step > 0 and tk.rewind_epoch > 0:
        raise ValueError("set ticket.rewind_step or ticket.rewind_epoch, not both")
    if tk.rewind_step >= t.max_steps:
        raise ValueError(
            f"ticket.rewind_step={tk.rewind_step} must be smaller than the round's length trainer.max_steps={t.max_steps}"
        )
    if t.early_stop_metric not in EARLY_STOP_RULES:
        raise ValueError(f"trainer.early_stop_metric: {EARLY_STOP_RULES.unknown(t.early_stop_metric)}")
    if tk.rewind_schedule not in REWIND_SCHEDULES:
        raise ValueError(f"ticket.rewind_schedule={tk.rewind_schedule!r} is not one of: {', '.join(REWIND_SCHEDULES)}")
    _validate_branch(cfg.branch)
    _validate_sync(cfg.logger)
    _validate_distill(cfg.train.distill)
    _validate_at_init(cfg)


def _validate_sync(lg: Any) -> None:
    """logger.sync_hook: it uploads a W&B run, so it needs one, logged offline, and the wandb-osh package."""
    if not lg.sync_hook:
        return
    if not lg.wandb:
        raise ValueError("logger.sync_hook=true uploads the lineage's W&B run: it needs logger=wandb")
    if lg.mode != "offline":
        raise ValueError(f"logger.sync_hook=true uploads offline runs: it needs logger.mode=offline, got {lg.mode!r}")
    if importlib.util.find_spec("wandb_osh") is None:
        raise ValueError("logger.sync_hook=true needs the wandb-osh package (pip install wandb-osh)")


def _validate_at_init(cfg: Config) -> None:
    """The settings of the criteria that score at initialisation."""
    p = cfg.pruning
    if p.init_batches < 1:
        raise ValueError(f"pruning.init_batches must be >= 1, got {p.init_batches}")
    if not p.grasp_temperature > 0:
        raise ValueError(f"pruning.grasp_temperature must be positive, got {p.grasp_temperature}")
    if p.synflow_iterations < 1:
        raise ValueError(f"pruning.synflow_iterations must be >= 1, got {p.synflow_iterations}")


def _validate_structured(cfg: Config) -> None:
    from lth.pruning import GROUP_NORMS

    p, tk = cfg.pruning, cfg.ticket
    if p.biases:
        other = [why for why, on in (
            ("pruning.granularity=neuron", getattr(p.granularity, "value", p.granularity) == "neuron"),
            ("pruning.at_init=true", p.at_init), (f"supermask.method={cfg.supermask.method}", cfg.supermask.method),
            ("gradual.final_density", cfg.gradual.final_density is not None)) if on]
        if other:
            raise ValueError(f"pruning.biases=true ranks each layer's bias with its weights in iterative pruning and "
                             f"its branches; it does not apply with {other[0]}: set pruning.biases=false")
    if p.max_group_ratio is not None and not 0.0 < p.max_group_ratio <= 1.0:
        raise ValueError(f"pruning.max_group_ratio must be in (0, 1] (the most of a group's channels ever removed) or "
                         f"null, got {p.max_group_ratio}")
    if p.max_group_ratio is not None and getattr(p.granularity, "value", p.granularity) != "neuron":
        raise ValueError("pruning.max_group_ratio caps the channels a dependency group loses; it needs "
                         "pruning.granularity=neuron")
    if getattr(p.granularity, "value", p.granularity) == "neuron":
        if p.structured_norm not in GROUP_NORMS:
            raise ValueError(f"pruning.structured_norm: {GROUP_NORMS.unknown(p.structured_norm)}")
        if p.criterion != "large_final":
            raise ValueError(f"pruning.criterion={p.criterion} is not used with pruning.granularity=neuron; choose the "
                             f"unit score with pruning.structured_norm ({', '.join(GROUP_NORMS.names())})")
        if p.output_fraction is not None:
            raise ValueError("pruning.output_fraction: with pruning.granularity=neuron the output layer's units are "
                             "never removed; drop it")
        if getattr(tk.mask0, "value", tk.mask0) != "zero":
            raise ValueError("ticket.mask0=freeze_init keeps pruned weights at θ0, so removed neurons would still "
                             "compute; pruning.granularity=neuron needs ticket.mask0=zero")
    if tk.scratch_cap is not None and not tk.scratch_cap >= 1:
        raise ValueError(f"ticket.scratch_cap must be >= 1 (a multiple of trainer.max_steps) or null, got {tk.scratch_cap}")
    if tk.finetune_lr is not None and not tk.finetune_lr > 0:
        raise ValueError(f"ticket.finetune_lr must be positive or null, got {tk.finetune_lr}")
    if tk.finetune_steps is not None and tk.finetune_steps < 1:
        raise ValueError(f"ticket.finetune_steps must be >= 1 or null, got {tk.finetune_steps}")


def _validate_world(cfg: Config) -> None:
    """Devices that exist, a strategy that works with them, and batches that split evenly over the processes."""
    from lth.distributed import (
        FORK_SAFE_GPU_STRATEGIES,
        accelerator_kind,
        device_indices,
        devices_per_node,
        launch_world,
    )

    t = cfg.trainer
    accelerator = accelerator_kind(t.accelerator)
    if accelerator == "cpu" and (t.devices == -1 or str(t.devices).strip() == "-1"):
        raise ValueError("trainer.devices=-1 (all devices) needs a GPU accelerator; on CPU give a number of processes")
    if accelerator == "gpu":
        import torch

        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        wanted = devices_per_node(t.devices, t.accelerator)
        if visible == 0 or wanted > visible or any(i >= visible for i in device_indices(t.devices)):
            raise ValueError(
                f"trainer.accelerator={t.accelerator} trainer.devices={t.devices} asks for {wanted} CUDA device(s); "
                f"{visible} visible on this machine (check CUDA_VISIBLE_DEVICES and torch.cuda.is_available(), or "
                "run on CPU with trainer=default)")
        if t.strategy in ("ddp_fork", "ddp_notebook"):
            raise ValueError(
                f"trainer.strategy={t.strategy} forks processes after CUDA is initialised (from the second round on), "
                f"which CUDA does not support; use {FORK_SAFE_GPU_STRATEGIES}")
    n = launch_world(t)
    if n > 1 and cfg.data.batch_size % n:
        raise ValueError(
            f"data.batch_size={cfg.data.batch_size} must be divisible by the {n} processes "
            f"(trainer.devices={t.devices} x trainer.num_nodes={t.num_nodes}): each rank takes an equal slice of "
            "every batch"
        )


def check_schedule(counts: Mapping[str, int], fraction: float, rounds: int, scope: str = "layerwise",
                   overrides: Mapping[str, float] | None = None, unit: str = "weight") -> None:
    """Raise ValueError if pruning `rounds` rounds at `fraction` would leave a layer (layerwise, overrides) or the
    global pool with no `unit` (weight, or unit under neuron granularity): that density is unreachable."""
    from lth.pruning import removal_count
    from lth.pruning.select import match_overrides

    per_layer = match_overrides(list(counts), overrides)
    pooled = [n for n in counts if n not in per_layer] if scope == "global" else []
    groups = {n: ([n], per_layer.get(n, fraction)) for n in counts if n not in pooled}
    if pooled:
        groups["the global pool"] = (pooled, fraction)
    kept = {what: sum(counts[n] for n in names) for what, (names, _) in groups.items()}
    for r in range(1, rounds + 1):  # rounds outside: the first layer to empty is reported
        for what, (names, frac) in groups.items():
            kept[what] -= removal_count(frac, kept[what])
            if kept[what] < 1:
                label = what if what == "the global pool" else f"layer '{what}'"
                raise ValueError(
                    f"density unreachable: pruning {frac:g} of the remaining {unit}s per round would leave "
                    f"{label} ({sum(counts[n] for n in names)} {unit}s) with none by round {r} of {rounds}; "
                    f"every pruned layer must keep at least 1 {unit}. Use a higher pruning.target_density, a smaller "
                    "pruning.fraction or fewer ticket.rounds."
                )


def _validate_branch(branch: Any) -> None:
    unknown = sorted(set(branch) - set(BRANCH_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown branch key(s) {unknown}; valid: {', '.join(BRANCH_DEFAULTS)}")
    if branch.get("from") is None:
        if branch.get("round") is not None or branch.get("random_mask") or branch.get("sanity"):
            raise ValueError("branch.round / branch.random_mask / branch.sanity need branch.from=<a finished run's "
                             "folder>")
        return
    src = Path(branch["from"])
    if not (src / "rounds.jsonl").exists():
        raise ValueError(f"branch.from={src} is not a run folder (no rounds.jsonl)")
    if branch.get("round") is None:
        raise ValueError("branch.from needs branch.round=<K>, the round whose mask to train")


def _validate_distill(d: Any) -> None:
    """train.distill: α in [0, 1], T > 0, teacher folders that are run folders, nothing set while it is off."""
    import math

    if not d.enabled:
        if d.teacher:
            raise ValueError("train.distill.teacher is set but train.distill.enabled=false; add train.distill.enabled=true")
        return
    if not 0.0 <= d.alpha <= 1.0:
        raise ValueError(f"train.distill.alpha must be in [0, 1] (the soft-target term's weight), got {d.alpha}")
    if not (math.isfinite(d.temperature) and d.temperature > 0):
        raise ValueError(f"train.distill.temperature must be positive, got {d.temperature}")
    if d.teacher_round < 0:
        raise ValueError(f"train.distill.teacher_round must be >= 0, got {d.teacher_round}")
    for path in d.teacher:
        if not (Path(path) / "rounds.jsonl").exists():
            raise ValueError(f"train.distill.teacher: {path} is not a run folder (no rounds.jsonl)")
