"""The plan of a lineage: everything decided (and checked) from its config, data and model before anything is written."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lth.config import Config
from lth.distributed import is_writer, launch_world
from lth.masks import MaskManager, layer_groups, layer_of
from lth.pruning.select import match_overrides

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """A lineage's validated decisions: fraction schedule, overrides matched to layers, rewind point, unit layout,
    world size and writer role, the dense network's FLOPs."""

    fraction: float  # share of the remaining weights (units) removed per round
    overrides: dict[str, float]  # pattern → fraction (pruning.overrides, the output layer's pruning.output_fraction)
    layer_fractions: dict[str, float]  # prunable → its own fraction, for the layers the overrides match
    rewind_step: int  # θk's step (0: rewind to θ0)
    reset_seed: int  # ticket.reset_seed, or the lineage seed + 1
    layout: Any  # lth.structured.GroupLayout under neuron granularity, else None
    world: int  # processes of the launch
    writer: bool  # whether this process writes the run folder
    example: Tensor  # one input example (FLOPs, unit layout, scratch inits)
    flops_dense: float  # FLOPs per example of the dense network
    optimizer: Any = None  # the optimizer spec the rounds use (cfg.optimizer, fused off where AMP clipping needs it)
    biases: bool = False  # pruning.biases: each layer's weight and bias selected as one pool

    def schedule_units(self, manager: MaskManager) -> tuple[dict[str, int], dict[str, float], str]:
        """What the fraction schedule removes from: counts per layer, its overrides and the unit's name."""
        if self.layout is None:
            counts = {n: p.numel() for n, p in zip(manager.names, manager.params)}
            if self.biases:  # a layer's weight and bias are one pool: counted under the weight's name
                counts = {g[0]: sum(counts[n] for n in g) for g in layer_groups(manager.names).values()}
            return counts, self.overrides, "weight"
        counts = {g.name: g.size for g in self.layout.groups}  # an override naming any producer sets its group's
        return counts, {re.escape(self.layout.of[n]): f for n, f in self.layer_fractions.items()
                        if n in self.layout.of}, "unit"


def rewind_step(cfg: Config, steps_per_epoch: int) -> int:
    """θk's step: ticket.rewind_step, or ticket.rewind_epoch × steps per epoch."""
    if cfg.ticket.rewind_epoch > 0:
        return cfg.ticket.rewind_epoch * steps_per_epoch
    return cfg.ticket.rewind_step


def make_plan(cfg: Config, data: Any, model: nn.Module, manager: MaskManager) -> Plan:
    """Check and fix a lineage's decisions; ValueError naming the option for the first problem found."""
    from lth import structured

    p, t = cfg.pruning, cfg.trainer
    fraction = p.fraction
    if p.target_density is not None:
        from lth.pruning import fraction_for_density

        fraction = fraction_for_density(p.target_density, cfg.ticket.rounds)
    overrides = dict(p.overrides)
    if p.output_fraction is not None:  # the last layer's weight (its bias, with pruning.biases, is pooled with it)
        last = layer_groups(manager.names)[layer_of(manager.names[-1])][0]
        overrides = {re.escape(last): p.output_fraction, **overrides}
    matched = match_overrides(manager.names, overrides)  # a key matching no layer fails here, before training
    step = rewind_step(cfg, data.steps_per_epoch)
    if step >= t.max_steps:
        raise ValueError(f"ticket.rewind_epoch={cfg.ticket.rewind_epoch} is step {step}, not before the round's "
                         f"end trainer.max_steps={t.max_steps}")
    example = torch.zeros(1, *data.input_shape)
    layout = None
    if getattr(p.granularity, "value", p.granularity) == "neuron":
        layout = structured.dependency_groups(model, example, manager.names)
        if not layout.groups:
            why = "; ".join(f"{n}: {reason}" for n, reason in layout.refused.items())
            raise ValueError(f"pruning.granularity=neuron: no layer of model '{cfg.model.name}' can lose units ({why})")
        from lth.pruning.groups import check_groups

        check_groups(p.structured_norm, layout, model.state_dict(), manager.names, overrides)
    return Plan(
        fraction=fraction, overrides=overrides, layer_fractions=matched, rewind_step=step,
        reset_seed=cfg.ticket.reset_seed if cfg.ticket.reset_seed is not None else cfg.seed + 1, layout=layout,
        world=launch_world(t), writer=is_writer(t.strategy, t.devices, t.num_nodes, t.accelerator),
        example=example, flops_dense=structured.flops(model, example)["flops_dense"],
        optimizer=amp_safe_optimizer(cfg.optimizer, t.precision, t.gradient_clip_val), biases=p.biases,
    )


def amp_safe_optimizer(spec: Any, precision: Any, clip: float | None) -> Any:
    """`spec` with `fused: false, foreach: true` when mixed precision clips gradients (Lightning refuses clipping with
    an optimizer that unscales gradients itself, as fused Adam/AdamW do); `spec` unchanged otherwise."""
    if not clip or not str(precision).endswith("-mixed") or callable(spec):
        return spec
    from omegaconf import OmegaConf

    node = OmegaConf.create(spec) if not OmegaConf.is_config(spec) else spec
    if not node.get("fused"):
        return spec
    log.warning("trainer.precision=%s with trainer.gradient_clip_val=%s: optimizer %s runs with foreach instead of "
                "fused (Lightning cannot clip gradients of a fused optimizer under mixed precision)",
                precision, clip, node.get("_target_"))
    safe = OmegaConf.to_container(node)
    safe.update(fused=False, foreach=True)
    return safe
