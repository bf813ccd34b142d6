"""Typed config schema of one lineage (registered in Hydra's ConfigStore by the CLI)."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from lth.supermask.config import SupermaskConfig

# OmegaConf reads and writes an enum field by member *name*, so every member's name is the word users type
# (`pruning.scope=global`). `global` is a Python keyword, hence the functional form; `global_` stays an alias
# (same member) because run folders written before hold `scope: global_` in their config.yaml.
Scope = Enum(  # type: ignore[misc]
    "Scope", [("layerwise", "layerwise"), ("global", "global"), ("global_", "global")], type=str, module=__name__
)
Scope.__doc__ = "pruning.scope: layerwise (each layer its own fraction) or global (one threshold over all prunables)."


class Granularity(str, Enum):
    """pruning.granularity: single weights, or whole neurons / filters."""

    weight = "weight"
    neuron = "neuron"


class Mask0(str, Enum):
    """ticket.mask0: what pruned weights are (0, or frozen at θ0)."""

    zero = "zero"
    freeze_init = "freeze_init"


def choices(enum: type[Enum]) -> tuple[str, ...]:
    """The names a config accepts for an enum field, canonical ones only (aliases left out)."""
    return tuple(m.name for m in enum)


BRANCH_DEFAULTS: dict[str, Any] = {"from": None, "round": None, "random_mask": False,
                                   "sanity": None}  # sanity: shuffle | invert | reinit (lth.kinds.sanity)


# Config keys that do not change a lineage's results: a lineage's folder name leaves them out (lth.cli) and they may
# change between invocations of one lineage (the config guard below), e.g. adding `logger=wandb` to a finished one.
NON_SEMANTIC_KEYS = (
    "out_dir",
    "name",
    "trainer.threads",
    "trainer.checkpoint_every",
    "trainer.checkpoint_min_interval_s",
    "trainer.log_every_n_steps",
    "logger",
    "data.root",
    "data.download",
    "pruning.allow_collapse",  # only whether a collapsed mask is refused or recorded
)
# Keys that extend a lineage without changing its earlier rounds: the guard lets them change (more rounds continue the
# folder given as out_dir), but they stay in the folder name (a sweep over them gets one folder per value).
EXTENDING_KEYS = ("ticket.rounds",)


@dataclass
class ModelConfig:
    name: str = "lenet_300_100"
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    name: str = "mnist1d"
    root: str = "data"
    batch_size: int = 60
    eval_batch_size: int = 1000
    val_size: int | None = None  # None: the dataset's default
    num_train: int | None = None
    download: bool = False
    on_device: Any = "auto"  # true | false | auto: keep the data on the accelerator (auto: when it fits)
    args: dict[str, Any] = field(default_factory=dict)

    def options(self, seed: int) -> dict[str, Any]:
        """The keyword options of `lth.data.build_datamodule` (unset sizes are left to the dataset's defaults)."""
        kwargs = {"root": self.root, "batch_size": self.batch_size, "eval_batch_size": self.eval_batch_size,
                  "seed": seed}
        kwargs.update({k: v for k, v in (("val_size", self.val_size), ("num_train", self.num_train)) if v is not None})
        if self.download:
            kwargs["download"] = True
        if self.on_device != "auto":
            kwargs["on_device"] = self.on_device
        return {**kwargs, **self.args}


@dataclass
class PruningConfig:
    criterion: str = "large_final"
    fraction: float = 0.2  # share of the remaining weights removed per round
    target_density: float | None = None  # if set: the fraction that reaches it after ticket.rounds rounds
    scope: Scope = Scope.layerwise
    output_fraction: float | None = None  # the output layer's own fraction (LTH: half the rate)
    overrides: dict[str, float] = field(default_factory=dict)  # regex or layer name -> fraction
    include: list[str] | None = None  # regexes choosing prunables (default: Linear/Conv weights)
    exclude: list[str] | None = None
    # biases: every Linear/Conv bias is prunable too, ranked together with its layer's weights (one pool per layer at
    # the layer's fraction), as the MNIST-1D lottery-ticket notebook prunes
    biases: bool = False
    seed: int | None = None  # for the random criterion; None: the lineage seed
    granularity: Granularity = Granularity.weight  # neuron: whole rows of Linear / filters of Conv (lth.structured)
    structured_norm: str = "l1"  # granularity=neuron: channel score over its group, l1 | l2 | random | scale (BN |γ|)
    max_group_ratio: float | None = None  # granularity=neuron: most of a group's channels ever removed (None: no cap)
    # pruning at initialisation (lth.kinds.at_init): prune to target_density before round 0's training, then train
    at_init: bool = False
    init_batches: int = 1  # training batches snip / grasp score on
    grasp_temperature: float = 200.0  # grasp: logits divided by this (the authors' 200)
    synflow_iterations: int = 100  # synflow: scoring-and-pruning iterations on the exponential schedule
    synflow_biases: bool = True  # synflow: biases (and BN shifts) carry flow, as the authors' code; False: weights only
    allow_collapse: bool = False  # a mask with an empty layer or no input-output path: record it and go on


REWIND_SCHEDULES = ("resume", "restart")  # ticket.rewind_schedule


@dataclass
class TicketConfig:
    rounds: int = 5  # rounds after round 0 (round 0 trains dense)
    reset: str = "rewind"
    rewind_step: int = 0  # θk: weights after this many steps of round 0 (0: θ0)
    rewind_epoch: int = 0  # the same in epochs (converted with the data's steps per epoch)
    mask0: Mask0 = Mask0.zero
    reset_seed: int | None = None  # None: the lineage seed + 1
    scratch_cap: float | None = None  # scratch_b: at most this many × trainer.max_steps (None: uncapped)
    finetune_lr: float | None = None  # reset=continue: the optimizer's lr in rounds after 0 (None: unchanged)
    finetune_steps: int | None = None  # reset=continue: steps of rounds after 0 (None: trainer.max_steps)
    # a round from θk: resume = T − k steps, the lr schedule resuming at step k; restart = T steps, schedule from 0
    rewind_schedule: str = "resume"


@dataclass
class GradualConfig:
    """Gradual magnitude pruning (Zhu & Gupta 2017): the density during one training run follows
    s_t = s_f + (s_i − s_f)(1 − (t − t0)/(n·Δt))³ at steps t = t0, t0 + Δt, ..., t0 + n·Δt."""

    final_density: float | None = None  # s_f; set: the run is the `gradual` kind
    initial_density: float = 1.0  # s_i, reached at start_step
    start_step: int = 100  # t0 (optimizer steps)
    every: int = 50  # Δt (optimizer steps between pruning steps)
    prunings: int = 10  # n: pruning steps after start_step; the last at start_step + prunings × every


@dataclass
class TrainerConfig:
    max_steps: int = 1000
    eval_every: int = 100  # evaluate val + test every this many steps (LTH's early-stop check)
    # which evaluation is the round's early-stop point: lowest val_loss (LTH's) or highest val_acc (lth.early_stop)
    early_stop_metric: str = "val_loss"
    checkpoint_every: int = 200  # write round_XX/checkpoints/last.ckpt every this many steps (0: never) ...
    # ... but not within this many seconds of the last one: a small network's 200 steps take a second, and a checkpoint
    # per second is several percent of its round and a burden on a cluster's shared file system (signals still save)
    checkpoint_min_interval_s: float = 60.0
    log_every_n_steps: int = 50
    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    deterministic: bool = True
    threads: int | None = None  # torch intra-op threads for this job (None: torch's default); sweeps pin 1 per job


@dataclass
class LoggerConfig:
    csv: bool = True  # Lightning CSV log per round (round_XX/csv/metrics.csv)
    wandb: bool = False  # mirror the lineage to one W&B run (offline unless mode=online or WANDB_MODE says so)
    project: str = "lth"
    entity: str | None = None
    mode: str = "offline"
    group: str | None = None  # None: the experiment name
    run_name: str | None = None  # None: the CLI sets reset/criterion/seed=N and the folder's other overrides
    tags: list[str] = field(default_factory=list)
    log_masks: bool = True  # each round's mask.pt as a W&B artifact
    # compute nodes without internet: after every round, ask `wandb-osh` on a login node to upload the offline run
    sync_hook: bool = False
    sync_dir: str | None = None  # the folder shared with wandb-osh (None: its default, ~/.wandb_osh_command_dir)


@dataclass
class StabilityConfig:
    """Linear mode connectivity: the instability kind (`pair`) and per-round instability of IMP lineages."""

    pair: bool = False  # the instability kind: two copies from one starting point, then their linear path
    every_round: bool = False  # IMP lineages: each round's instability from its rewind point, in its record
    alphas: int = 30  # points on the path, both ends included
    batchnorm: Any = "auto"  # re-estimate BatchNorm statistics at each α: true | false | auto (when the model has BN)
    bn_batches: int | None = None  # training batches for that (None: one pass over the training split)
    train_examples: int | None = None  # train error on the path from this many training examples (None: all)


@dataclass
class DistillConfig:
    """train.distill: knowledge distillation (Hinton et al. 2015) from a frozen teacher into every trained round."""

    enabled: bool = False
    alpha: float = 0.5  # weight of the soft-target term α·T²·KL; the labels' cross-entropy gets 1 − α (0: plain loss)
    temperature: float = 4.0  # T: both softmaxes of the soft-target term are taken at z / T
    teacher: list[str] = field(default_factory=list)  # run folders ([]: the run's own dense round 0); several: ensemble
    teacher_round: int = 0  # which saved round of the teacher folders
    cache: bool = True  # in-memory data without augmentation: teacher outputs computed once, on the device


@dataclass
class TrainConfig:
    """train.*: the training objective of every round."""

    distill: DistillConfig = field(default_factory=DistillConfig)


@dataclass
class Config:
    name: str = "default"
    seed: int = 0
    out_dir: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    ticket: TicketConfig = field(default_factory=TicketConfig)
    optimizer: Any = field(default_factory=lambda: {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1.2e-3})
    scheduler: Any = None
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # `from` is a Python keyword, so the branch node is a plain mapping with exactly these keys:
    # from (a finished run's folder), round (which of its rounds), random_mask (same per-layer counts, random positions)
    branch: Any = field(default_factory=lambda: dict(BRANCH_DEFAULTS))
    supermask: SupermaskConfig = field(default_factory=SupermaskConfig)
    gradual: GradualConfig = field(default_factory=GradualConfig)
    stability: StabilityConfig = field(default_factory=StabilityConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def config_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain, YAML-safe Python containers (enums as their names)."""
    from omegaconf import OmegaConf

    node = OmegaConf.structured(cfg) if dataclasses.is_dataclass(cfg) else cfg
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True)  # type: ignore[return-value]


def _enum_fields(cls: type, prefix: str = "") -> dict[str, type[Enum]]:
    """Dotted key → enum type, for every enum-typed field of a schema dataclass (nested ones included)."""
    out: dict[str, type[Enum]] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t = hints.get(f.name)
        if isinstance(t, type) and issubclass(t, Enum):
            out[prefix + f.name] = t
        elif isinstance(t, type) and dataclasses.is_dataclass(t):
            out.update(_enum_fields(t, f"{prefix}{f.name}."))
    return out


def canonical_config(d: Mapping[str, Any]) -> dict[str, Any]:
    """A plain config dict (e.g. a run folder's config.yaml) with every enum field written as its canonical name, so
    an alias (`scope: global_`) compares equal to the name it stands for (`scope: global`)."""
    out: dict[str, Any] = dict(d)
    for key, enum in ENUM_FIELDS.items():
        *parents, leaf = key.split(".")
        node: Any = out
        for p in parents:  # copy the path down to the field, leaving the caller's dict untouched
            if not isinstance(node.get(p), Mapping):
                break
            node[p] = dict(node[p])
            node = node[p]
        else:
            v = node.get(leaf)
            if isinstance(v, Enum):
                v = v.name
            if isinstance(v, str):
                member = enum.__members__.get(v) or next((m for m in enum if m.value == v), None)
                if member is not None:
                    node[leaf] = member.name
    return out


ENUM_FIELDS: dict[str, type[Enum]] = _enum_fields(Config)
