"""Benchmarks of lth's overheads (training step, pruning, memory, start-up), each a ratio to a baseline run alongside.

Every timed figure is measured in one process against a baseline that process runs itself, the contenders taking turns
(warm-up, then a median of `repeats`), so a noisy machine shifts both alike. Absolute times are reported too.
Heavy imports (Lightning, the runner) happen inside the functions that need them: the memory worker subprocesses
import only torch and `lth.masks`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from unittest import mock

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SECTIONS = ("step", "pruning", "memory", "imports", "startup")
HEAVY_MODULES = ("wandb", "torchvision", "sklearn", "mnist1d")  # must stay unimported by `import lth, lth.runner, ...`
IMPORTED = ("lth", "lth.runner", "lth.cli")
LR = 1.2e-3  # Adam, as the LeNet preset
DENSITY = 0.2
TARGETS = {
    "step_overhead": 1.25,  # lth's masked round vs a raw PyTorch loop, per step
    "global_select_seconds": 1.0,  # one global select over a ResNet-50-sized model
    "mask_bytes_per_param": 1.0,  # masks in memory
    "mask_file_bits_per_param": 1.0,  # a saved mask file, not counting its fixed header
    "mask_file_header_bytes": 64 * 1024,  # that header
    "other_bytes_per_param": 0.5,  # peak RSS growth per parameter beyond masks and snapshots ...
    "other_bytes_fixed": 4 * 2**20,  # ... plus this much in all (allocator and page granularity)
}
DEFAULT_OUT = Path("docs") / "bench_cpu.json"


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

    def start(self) -> None:
        sync(self.device)
        self.t0 = (time.perf_counter(), time.process_time())

    def stop(self) -> None:
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

    The functions take turns, the order rotating each repeat, so drift of the machine hits all of them alike.
    """
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    out: dict[str, dict[str, list[float]]] = {n: {"total": []} for n in names}
    for r in range(repeats):
        k = r % len(names)
        for n in names[k:] + names[:k]:
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


# ------------------------------------------------------------------------------------------------------ step overhead
@dataclass(frozen=True)
class Contender:
    """One way of training a case: `raw` (plain PyTorch loop), `lightning` (bare LightningModule) or `lth` (a lineage
    round: TicketModule + MaskingCallback + metrics + records at density 0.2), compared with its `baseline`."""

    kind: str
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # lineage config fields (lth only)
    optimizer: Mapping[str, Any] = field(default_factory=dict)  # extra optimizer arguments
    baseline: str = "raw"


CONTENDERS: dict[str, Contender] = {
    "raw": Contender("raw"),
    "lightning": Contender("lightning"),
    "lth": Contender("lth"),
    # the runner's Trainer settings, one changed at a time
    "lth[deterministic=false]": Contender("lth", {"trainer": {"deterministic": False}}),
    "lth[logger=none]": Contender("lth", {"logger": {"csv": False}}),
    "lth[checkpoint_every=0]": Contender("lth", {"trainer": {"checkpoint_every": 0}}),
    # Adam's per-parameter Python update instead of the preset's fused kernel, against a raw loop with the same optimizer
    "raw[unfused]": Contender("raw", optimizer={"fused": False}),
    "lightning[unfused]": Contender("lightning", optimizer={"fused": False}, baseline="raw[unfused]"),
    "lth[unfused]": Contender("lth", optimizer={"fused": False}, baseline="raw[unfused]"),
}


@dataclass(frozen=True)
class StepCase:
    """One step-overhead benchmark: a registry model trained on random in-memory tensors shaped like `dataset`."""

    model: str
    dataset: str  # the registered dataset whose shape the tensors have (named in the lineage's config)
    input_shape: tuple[int, ...]
    steps: int
    eval_every: int
    num_train: int
    num_eval: int  # examples in each of val and test
    batch_size: int = 60
    eval_batch_size: int = 1000
    num_classes: int = 10
    contenders: tuple[str, ...] = ("raw", "lightning", "lth")

    @property
    def warm_steps(self) -> int:
        """The per-step clock starts after this many steps (after the first evaluation's one-off costs)."""
        return self.eval_every if self.steps > self.eval_every else 0


STEP_CASES: dict[str, StepCase] = {
    "lenet_300_100": StepCase(
        "lenet_300_100", "mnist", (1, 28, 28), steps=600, eval_every=100, num_train=12000, num_eval=1000,
        contenders=tuple(CONTENDERS),
    ),
    "conv4": StepCase("conv4", "cifar10", (3, 32, 32), steps=6, eval_every=3, num_train=600, num_eval=60),
}
QUICK_STEP_CASES: dict[str, StepCase] = {  # seconds in all: checks the machinery, not the numbers
    "lenet_300_100": replace(STEP_CASES["lenet_300_100"], steps=20, eval_every=10, num_train=600, num_eval=100,
                             contenders=("raw", "lightning", "lth")),
    "conv4": replace(
        STEP_CASES["conv4"], input_shape=(3, 8, 8), batch_size=4, steps=2, eval_every=1, num_train=16, num_eval=4
    ),
}


def optimizer_spec(**extra: Any) -> dict[str, Any]:
    """The shipped Adam preset (`optimizer=adam`, LeNet's 1.2e-3) as a `_target_` spec, plus `extra` arguments."""
    from omegaconf import OmegaConf

    import lth

    path = Path(lth.__file__).parent / "conf" / "optimizer" / "adam.yaml"
    spec = OmegaConf.to_container(OmegaConf.load(path))
    return {**spec, **extra}  # type: ignore[dict-item]


def fused_supported(device: torch.device) -> bool:
    """Whether torch.optim.Adam(fused=True) runs on `device` here."""
    p = nn.Parameter(torch.zeros(1, device=device))
    try:
        p.grad = torch.zeros_like(p)
        torch.optim.Adam([p], fused=True).step()
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


def random_datamodule(case: StepCase, **kwargs: Any) -> Any:
    """A TensorDataModule of seeded random tensors shaped like `case.dataset` (no files needed)."""
    from lth.data import TensorDataModule

    class RandomTensors(TensorDataModule):
        name = f"random_{case.dataset}"
        input_shape = case.input_shape
        num_classes = case.num_classes
        default_val_size = case.num_eval

        def load_pool(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            g = torch.Generator().manual_seed(self.seed)
            pool = case.num_train + case.num_eval
            x = torch.randn(pool, *case.input_shape, generator=g)
            y = torch.randint(0, case.num_classes, (pool,), generator=g)
            xt = torch.randn(case.num_eval, *case.input_shape, generator=g)
            yt = torch.randint(0, case.num_classes, (case.num_eval,), generator=g)
            return x, y, xt, yt

    known = ("root", "batch_size", "eval_batch_size", "val_size", "seed", "num_train")
    return RandomTensors(**{k: v for k, v in kwargs.items() if k in known})


def lineage_config(
    case: StepCase, device: torch.device, overrides: Mapping[str, Mapping[str, Any]], optimizer: Mapping[str, Any]
) -> Any:
    """The typed config of a lineage running `case` (rounds of `case.steps` steps, the runner's Trainer defaults),
    with `overrides` ({group: {field: value}}) applied."""
    from lth.config import Config, DataConfig, ModelConfig, TicketConfig, TrainerConfig

    cfg = Config(name="bench", seed=0)
    cfg.model = ModelConfig(name=case.model)
    cfg.data = DataConfig(
        name=case.dataset, batch_size=case.batch_size, eval_batch_size=case.eval_batch_size, val_size=case.num_eval,
        num_train=case.num_train,
    )
    cfg.trainer = TrainerConfig(max_steps=case.steps, eval_every=case.eval_every, accelerator=_accelerator(device))
    cfg.ticket = TicketConfig(rounds=1)
    cfg.optimizer = dict(optimizer)
    for group, fields in overrides.items():
        node = getattr(cfg, group)
        for k, v in fields.items():
            setattr(node, k, v)
    return cfg


def _accelerator(device: torch.device) -> str:
    return "gpu" if device.type == "cuda" else "cpu"


@functools.cache
def _lightning_kit() -> Any:
    """Lightning-based pieces (built on first use, so importing this module stays light)."""
    import pytorch_lightning as pl

    from lth.runner import Lineage

    class StepClock(pl.Callback):
        """Starts a Clock before training batch `warm_steps + 1`, stops it when training ends (evaluations included)."""

        def __init__(self, clock: Clock, warm_steps: int) -> None:
            self.clock, self.warm_steps = clock, warm_steps

        def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
            if trainer.global_step == self.warm_steps and self.clock.t0 is None:
                self.clock.start()

        def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.clock.stop()

    class ClockedLineage(Lineage):
        """A Lineage whose Trainers also carry a StepClock (nothing else changes)."""

        step_clock: StepClock | None = None

        def _trainer(self, r: int, callbacks: list[pl.Callback], *args: Any, **kwargs: Any) -> pl.Trainer:
            extra = [self.step_clock] if self.step_clock is not None else []
            return super()._trainer(r, [*callbacks, *extra], *args, **kwargs)

    class BareModule(pl.LightningModule):
        """Lightning's floor: cross-entropy training and val/test loss + accuracy sums, nothing else."""

        def __init__(self, model: nn.Module, optimizer: Callable[[Any], torch.optim.Optimizer]) -> None:
            super().__init__()
            self.model = model
            self.optimizer = optimizer
            self.sums: list[Tensor] = []

        def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
            x, y = batch
            return F.cross_entropy(self.model(x), y)

        def on_validation_epoch_start(self) -> None:
            self.sums = [torch.zeros(2, device=self.device) for _ in range(2)]

        def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
            x, y = batch
            logits = self.model(x)
            self.sums[dataloader_idx] += torch.stack(
                [F.cross_entropy(logits, y, reduction="sum"), (logits.argmax(1) == y).sum().to(logits.dtype)]
            )

        def on_validation_epoch_end(self) -> None:
            self.results = [s.tolist() for s in self.sums]

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return self.optimizer(self.model.parameters())

    return argparse.Namespace(pl=pl, StepClock=StepClock, ClockedLineage=ClockedLineage, BareModule=BareModule)


def evaluate(model: nn.Module, splits: Iterable[tuple[Tensor, Tensor]], batch_size: int, device: torch.device) -> list:
    """Summed loss and correct count per split (one host sync per split), as the raw loop's evaluation."""
    model.eval()
    out = []
    with torch.no_grad():
        for x, y in splits:
            sums = torch.zeros(2, device=device)
            for i in range(0, len(x), batch_size):
                xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
                logits = model(xb)
                sums += torch.stack(
                    [F.cross_entropy(logits, yb, reduction="sum"), (logits.argmax(1) == yb).sum().to(logits.dtype)]
                )
            out.append(sums.tolist())
    model.train()
    return out


def raw_loop(
    model: nn.Module, optimizer: torch.optim.Optimizer, data: Any, case: StepCase, device: torch.device, clock: Clock
) -> None:
    """A plain PyTorch loop: seeded epoch permutations of in-memory tensors, evaluation every `eval_every` steps."""
    from lth.data.memory import seeded_generator

    x, y = data.train
    evals = [data.val, data.test]
    bs, n = case.batch_size, len(x)
    step, epoch = 0, 0
    model.train()
    while step < case.steps:
        order = torch.randperm(n, generator=seeded_generator(data.seed, 0, epoch))
        epoch += 1
        for i in range(math.ceil(n / bs)):
            if step == case.warm_steps:
                clock.start()
            idx = order[i * bs : (i + 1) * bs]
            xb, yb = x[idx].to(device, non_blocking=True), y[idx].to(device, non_blocking=True)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step % case.eval_every == 0:
                evaluate(model, evals, case.eval_batch_size, device)
            if step == case.steps:
                break
    clock.stop()


def _density_masks(manager: Any, density: float, seed: int = 0) -> dict[str, Tensor]:
    """Masks keeping `density` of each prunable (random scores through the real `select`)."""
    from lth.pruning import select

    g = torch.Generator().manual_seed(seed)
    scores = {n: torch.rand(m.shape, generator=g) for n, m in manager.masks.items()}
    ones = {n: torch.ones_like(m, device="cpu") for n, m in manager.masks.items()}
    return select(scores, ones, 1.0 - density, scope="layerwise")


def _time_raw(model: nn.Module, spec: dict, data: Any, case: StepCase, device: torch.device) -> dict[str, float]:
    from lth.runner import optimizer_factory

    torch.use_deterministic_algorithms(False)  # a Trainer with deterministic=True leaves the global flag on
    clock = Clock(device)
    raw_loop(model, optimizer_factory(spec)(model.parameters()), data, case, device, clock)
    return clock.per_step(case.steps - case.warm_steps)


def _time_lightning(
    model: nn.Module, spec: dict, data: Any, case: StepCase, device: torch.device, workdir: Path
) -> dict[str, float]:
    from lth.data import TensorBatches
    from lth.runner import optimizer_factory

    kit = _lightning_kit()
    clock = Clock(device)
    trainer = kit.pl.Trainer(
        max_steps=case.steps, max_epochs=-1, val_check_interval=case.eval_every, check_val_every_n_epoch=None,
        num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        logger=False, deterministic=False, accelerator=_accelerator(device), devices=1,
        callbacks=[kit.StepClock(clock, case.warm_steps)],
        default_root_dir=str(workdir),
    )
    train = TensorBatches(*data.train, case.batch_size, shuffle=True, seed=data.seed)
    evals = [TensorBatches(*data.val, case.eval_batch_size, shuffle=False),
             TensorBatches(*data.test, case.eval_batch_size, shuffle=False)]
    trainer.fit(kit.BareModule(model, optimizer_factory(spec)), train, evals)
    return clock.per_step(case.steps - case.warm_steps)


def _time_lth(lineage: Any, masks: dict[str, Tensor], case: StepCase, device: torch.device) -> dict[str, float]:
    clock = Clock(device)
    lineage.step_clock = _lightning_kit().StepClock(clock, case.warm_steps)
    lineage.train_round(1, masks)
    return clock.per_step(case.steps - case.warm_steps)


def step_contenders(case: StepCase, device: torch.device, workdir: Path) -> dict[str, Timed]:
    """Timed callables of one case, one per contender; each returns its steady-state seconds per step."""
    from lth.models import build_model, reinitialize

    kit = _lightning_kit()
    data = random_datamodule(case, batch_size=case.batch_size, eval_batch_size=case.eval_batch_size, seed=0,
                             val_size=case.num_eval, num_train=case.num_train)
    data.setup("fit")
    fused = fused_supported(device)
    fns: dict[str, Timed] = {}

    def fresh_model() -> nn.Module:
        model = build_model(case.model, case.input_shape, case.num_classes)
        reinitialize(model, 0)
        return model.to(device)

    for name in case.contenders:
        c = CONTENDERS[name]
        spec = optimizer_spec(**c.optimizer)
        if spec.get("fused") and not fused:
            if "fused" in c.optimizer:
                continue
            spec["fused"] = False  # the preset's fused kernel does not run on this device: all use the unfused one
        if c.kind == "raw":
            fns[name] = functools.partial(_time_raw, fresh_model(), spec, data, case, device)
        elif c.kind == "lightning":
            fns[name] = functools.partial(_time_lightning, fresh_model(), spec, data, case, device, workdir / name)
        else:
            cfg = lineage_config(case, device, c.overrides, spec)
            with mock.patch("lth.data.build_datamodule", lambda _name, **kw: random_datamodule(case, **kw)):
                lineage = kit.ClockedLineage(cfg, workdir / name, sinks=[])
            masks = _density_masks(lineage.manager, DENSITY)
            lineage.manager.set_masks(masks)
            fns[name] = functools.partial(_time_lth, lineage, masks, case, device)
    return fns


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
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


def step_suite(cases: Mapping[str, StepCase], device: torch.device, repeats: int, warmup: int) -> dict[str, Any]:
    """Per case: ms per step (steady state, evaluations included) and seconds per round, with ratios to baselines."""
    out: dict[str, Any] = {}
    deterministic = torch.are_deterministic_algorithms_enabled()
    for key, case in cases.items():
        with tempfile.TemporaryDirectory(prefix="lth-bench-") as tmp, quiet():
            try:
                fns = step_contenders(case, device, Path(tmp))
                times = time_interleaved(fns, repeats, warmup, device)
            finally:
                torch.use_deterministic_algorithms(deterministic)
        base = {n: CONTENDERS[n].baseline for n in times}
        # One thread on a CPU: this process's CPU time, which other jobs on the machine inflate far less than wall
        # time (the two agree on an idle machine). Otherwise (threads spin, devices run asynchronously): wall time.
        clock = "cpu" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall"
        field_name = "step_cpu" if clock == "cpu" else "step"
        out[key] = {
            "case": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(case).items()},
            "density": DENSITY,
            "optimizer": optimizer_spec(),
            "timed_steps": case.steps - case.warm_steps,
            "baseline": base,
            "ms_per_step": {n: 1e3 * median(t["step"]) for n, t in times.items()},
            "cpu_ms_per_step": {n: 1e3 * median(t["step_cpu"]) for n, t in times.items()},
            "round_seconds": {n: median(t["total"]) for n, t in times.items()},
            "step_ratio": {n: paired_ratio(times[n]["step"], times[base[n]]["step"]) for n in times},
            "cpu_step_ratio": {n: paired_ratio(times[n]["step_cpu"], times[base[n]]["step_cpu"]) for n in times},
            "round_ratio": {n: paired_ratio(times[n]["total"], times[base[n]]["total"]) for n in times},
            "judged_clock": clock,
            "judged_ratio": {n: paired_ratio(times[n][field_name], times[base[n]][field_name]) for n in times},
            "times": {n: {k: [round(v, 6) for v in vs] for k, vs in t.items()} for n, t in times.items()},
        }
    return out


# ------------------------------------------------------------------------------------------------------------ pruning
def resnet50_shapes(width: float = 1.0, num_classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """Weight shapes of ResNet-50's convolutions and fc layer (25.5M weights at width 1), flat names."""
    def ch(c: int) -> int:
        return max(1, int(c * width))

    shapes: dict[str, tuple[int, ...]] = {"conv1": (ch(64), 3, 7, 7)}
    inplanes = ch(64)
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        planes = ch(planes)
        for b in range(blocks):
            p = f"layer{stage}_{b}"
            shapes[f"{p}_conv1"] = (planes, inplanes, 1, 1)
            shapes[f"{p}_conv2"] = (planes, planes, 3, 3)
            shapes[f"{p}_conv3"] = (planes * 4, planes, 1, 1)
            if b == 0:
                shapes[f"{p}_downsample"] = (planes * 4, inplanes, 1, 1)
            inplanes = planes * 4
    shapes["fc"] = (num_classes, inplanes)
    return shapes


def shaped_model(shapes: Mapping[str, tuple[int, ...]], device: torch.device, seed: int = 0) -> nn.Module:
    """Bias-free Conv2d/Linear layers with the given weight shapes, filled with N(0, 1) (no forward pass needed)."""
    layers = nn.ModuleDict()
    for name, s in shapes.items():
        if len(s) == 4:
            layers[name] = nn.Conv2d(s[1], s[0], s[2:], bias=False, device="meta")
        else:
            layers[name] = nn.Linear(s[1], s[0], bias=False, device="meta")
    layers = layers.to_empty(device=device)
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for p in layers.parameters():
            p.normal_(generator=g)
    return layers


def pruning_suite(width: float, device: torch.device, repeats: int, warmup: int) -> dict[str, Any]:
    """Times of global and layerwise `select` and of a full prune+reset over ResNet-50-sized tensors (random scores),
    against a naive global threshold (concatenate + kthvalue + compare) as the baseline."""
    from lth.masks import MaskManager
    from lth.pruning import score, select
    from lth.reset import ResetContext, reset_weights

    fraction = 0.2
    model = shaped_model(resnet50_shapes(width), device)
    manager = MaskManager(model)
    numel = manager.numel()
    g = torch.Generator(device=device).manual_seed(1)
    scores = {n: torch.rand(p.shape, generator=g, device=device) for n, p in zip(manager.names, manager.params)}
    ones = {n: torch.ones_like(m) for n, m in manager.masks.items()}
    w_init = {n: v for n, v in manager.weights("init").items()}
    trained = {n: v + 0.01 * torch.randn(v.shape, generator=g, device=device) for n, v in w_init.items()}

    def naive() -> None:
        flat = torch.cat([s.reshape(-1) for s in scores.values()])
        t = torch.kthvalue(flat, round(fraction * numel)).values
        {n: s > t for n, s in scores.items()}

    def prune_reset() -> dict[str, float]:
        t0 = time.perf_counter()
        s = score("large_final", w_init, trained, masks=ones)
        sync(device)
        t1 = time.perf_counter()
        masks = select(s, ones, fraction, scope="global")
        sync(device)
        t2 = time.perf_counter()
        ctx = ResetContext(source=w_init, current=trained, masks=masks, fresh=lambda: w_init,
                           generator=torch.Generator().manual_seed(2))
        new = reset_weights("rewind", ctx)
        manager.set_masks(masks)
        manager.load_weights(new)
        sync(device)
        return {"score": t1 - t0, "select": t2 - t1, "reset": time.perf_counter() - t2}

    fns: dict[str, Timed] = {
        "naive_global": naive,
        "select_global": lambda: select(scores, ones, fraction, scope="global") and None,
        "select_layerwise": lambda: select(scores, ones, fraction, scope="layerwise") and None,
        "prune_reset": prune_reset,
    }
    times = time_interleaved(fns, repeats, warmup, device)
    seconds = {n: median(t["total"]) for n, t in times.items()}
    return {
        "params": numel,
        "layers": len(manager.names),
        "fraction": fraction,
        "seconds": seconds,
        "ratio": {n: s / seconds["naive_global"] for n, s in seconds.items()},
        "prune_reset_parts": {k: median(v) for k, v in times["prune_reset"].items() if k != "total"},
    }


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


def _python_env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("WANDB_MODE", "disabled")
    env["PYTHONWARNINGS"] = "ignore"
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _python(code: str, env: Mapping[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(env))


def _collect(proc: subprocess.Popen, what: str) -> dict[str, Any]:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}):\n{err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def start_memory_workers(
    hidden: int, steps: int, device: torch.device, threads: int | None, separate: bool = True
) -> dict[tuple[str, ...], subprocess.Popen]:
    """Start the memory workers: one process per mode side by side (`separate`), or one running the modes in turn
    (cheaper; the peak is reset between modes, so it is exact where /proc/self/clear_refs works)."""
    env = _python_env(threads)
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"  # glibc: big tensors in their own mappings, so freed memory leaves the RSS
    code = ("import json, lth.bench as b; "
            "print(json.dumps({{m: b.memory_worker(m, {hidden}, {steps}, {device!r}) for m in {modes!r}}}))")
    groups = [(m,) for m in MEMORY_MODES] if separate else [MEMORY_MODES]
    return {g: _python(code.format(modes=g, hidden=hidden, steps=steps, device=str(device)), env) for g in groups}


def memory_results(procs: Mapping[tuple[str, ...], subprocess.Popen], hidden: int, steps: int) -> dict[str, Any]:
    """Peak RSS of the masked runs over the dense one (per parameter), and the size of a saved mask file."""
    from lth import masks as masks_lib

    reports = {}
    for modes, proc in procs.items():
        reports.update(_collect(proc, f"memory worker {', '.join(modes)}"))
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


# ------------------------------------------------------------------------------------------------- imports, start-up
_IMPORT_PROBE = (
    "import json, sys, time; t = time.perf_counter(); import {mods}; dt = time.perf_counter() - t; "
    "print(json.dumps({{'seconds': dt, 'loaded': [m for m in {heavy!r} if m in sys.modules]}}))"
)


def start_import_probe(threads: int | None) -> subprocess.Popen:
    """Start a fresh interpreter that imports lth's entry modules and reports which heavy libraries came along."""
    return _python(_IMPORT_PROBE.format(mods=", ".join(IMPORTED), heavy=HEAVY_MODULES), _python_env(threads))


def imports_results(proc: subprocess.Popen) -> dict[str, Any]:
    """The import probe's report."""
    report = _collect(proc, "import probe")
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
    env = _python_env(threads)
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


# ------------------------------------------------------------------------------------------------- targets and table
def check_targets(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each target of the performance issue: key, label, measured value, limit and pass (True/False; None for a timing
    target in quick mode, which is not judged). Sections not run are left out."""
    judge_time = not results.get("meta", {}).get("quick", False)
    checks: list[dict[str, Any]] = []

    def add(key: str, label: str, value: Any, limit: Any, ok: bool, timing: bool = False) -> None:
        verdict = bool(ok) if judge_time or not timing else None
        checks.append({"key": key, "target": label, "value": value, "limit": limit, "pass": verdict})

    for case_key, case in results.get("step", {}).items():
        if "lth" in case.get("judged_ratio", {}):
            r = case["judged_ratio"]["lth"]
            add(f"step_overhead/{case_key}", f"step overhead {case_key}: lth round / raw loop ({case['judged_clock']})", r,
                TARGETS["step_overhead"], r <= TARGETS["step_overhead"], timing=True)
    if "pruning" in results:
        p = results["pruning"]
        sec = p["seconds"]["select_global"]
        add("global_select", f"global select over {p['params'] / 1e6:.1f}M parameters (s)", sec,
            TARGETS["global_select_seconds"], sec <= TARGETS["global_select_seconds"], timing=True)
    if "memory" in results:
        mem = results["memory"]
        per = mem["per_param"].values()
        b = max(v["mask_bytes_per_param"] for v in per)
        add("mask_bytes", "masks in memory (bytes/param)", b, TARGETS["mask_bytes_per_param"],
            b <= TARGETS["mask_bytes_per_param"])
        other = max(v["other_bytes_per_param"] for v in per)
        limit = TARGETS["other_bytes_per_param"] + TARGETS["other_bytes_fixed"] / mem["params"]
        add("other_bytes", "peak RSS beyond masks + snapshots (bytes/param)", other, limit, other <= limit)
        f = mem["mask_file"]
        add("mask_file_bits", "mask file payload (bits/param)", f["payload_bits_per_param"],
            TARGETS["mask_file_bits_per_param"],
            f["payload_bits_per_param"] <= TARGETS["mask_file_bits_per_param"] and f["round_trip"])
        add("mask_file_header", "mask file fixed header (bytes)", f["header_bytes"],
            TARGETS["mask_file_header_bytes"], f["header_bytes"] <= TARGETS["mask_file_header_bytes"])
    if "imports" in results:
        loaded = results["imports"]["loaded"]
        add("lazy_imports", f"`import {', '.join(IMPORTED)}` loads none of {', '.join(HEAVY_MODULES)}", loaded, [],
            not loaded)
    return checks


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    if isinstance(x, list):
        return "[" + ", ".join(map(str, x)) + "]"
    return str(x)


def _verdict(check: Mapping[str, Any] | None) -> str:
    if check is None:
        return ""
    state = {True: "PASS", False: "FAIL", None: "not judged (quick)"}[check["pass"]]
    limit = "none" if check["limit"] == [] else f"≤ {_fmt(check['limit'])}"
    return f"{limit}: {state}"


def table(results: Mapping[str, Any]) -> str:
    """The results as a markdown table: figure, value, baseline, ratio, target."""
    rows: list[tuple[str, ...]] = []
    checks = {c["key"]: c for c in results.get("targets", [])}
    for key, case in results.get("step", {}).items():
        ms, cpu = case["ms_per_step"], case["cpu_ms_per_step"]
        for n in ms:
            base = case["baseline"][n]
            if n == base:
                rows.append((f"step {key}: {n}", f"{ms[n]:.3f} ms/step (cpu {cpu[n]:.3f})", "", "1.00×",
                             f"round {case['round_seconds'][n]:.2f} s"))
                continue
            rows.append((f"step {key}: {n}", f"{ms[n]:.3f} ms/step (cpu {cpu[n]:.3f})", f"{base} {ms[base]:.3f} ms",
                         (f"{case['step_ratio'][n]:.3f}× (cpu {case['cpu_step_ratio'][n]:.3f}×, "
                          f"round {case['round_ratio'][n]:.2f}×)"),
                         _verdict(checks.get(f"step_overhead/{key}")) if n == "lth" else ""))
    if "pruning" in results:
        p = results["pruning"]
        base = p["seconds"]["naive_global"]
        for n, sec in p["seconds"].items():
            rows.append((f"pruning {p['params'] / 1e6:.1f}M params: {n}", f"{sec:.3f} s",
                         "" if n == "naive_global" else f"naive {base:.3f} s", f"{p['ratio'][n]:.2f}×",
                         _verdict(checks.get("global_select")) if n == "select_global" else ""))
    if "memory" in results:
        m = results["memory"]
        for mode, v in m["per_param"].items():
            rows.append((f"memory {m['params'] / 1e6:.1f}M params: {mode}",
                         f"+{v['extra_rss_bytes_per_param']:.2f} B/param", "dense run's peak RSS",
                         f"{v['peak_rss_ratio']:.3f}×",
                         (f"masks {v['mask_bytes_per_param']:.2f} + snapshots {v['snapshot_bytes_per_param']:.2f} "
                          f"+ other {v['other_bytes_per_param']:.2f} B/param")))
        for key in ("mask_bytes", "other_bytes"):
            c = checks[key]
            rows.append((c["target"], f"{c['value']:.2f}", "", "", _verdict(c)))
        f = m["mask_file"]
        rows.append(("mask file on disk", f"{f['payload_bits_per_param']:.3f} bits/param + {f['header_bytes']} B",
                     f"{f['bytes']:,} B for {f['params']:,} weights", f"{f['bits_per_param']:.3f} bits/param in all",
                     f"payload {_verdict(checks['mask_file_bits'])}; header {_verdict(checks['mask_file_header'])}"))
    if "imports" in results:
        i = results["imports"]
        rows.append((f"import {', '.join(IMPORTED)}", f"loads {_fmt(i['loaded'])} of {', '.join(HEAVY_MODULES)}",
                     f"{i['import_seconds']:.2f} s", "", _verdict(checks.get("lazy_imports"))))
    if "startup" in results:
        s = results["startup"]
        base = s["seconds"]["import_torch"]
        for n, sec in s["seconds"].items():
            rows.append((f"start-up: {n}", f"{sec:.2f} s", "" if n == "import_torch" else f"import torch {base:.2f} s",
                         f"{s['ratio'][n]:.2f}×", ""))
    head = ("figure", "value", "baseline", "ratio", "target")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------------------- run
def meta(device: torch.device, quick: bool, repeats: int, warmup: int) -> dict[str, Any]:
    """Where and how the figures were measured."""
    import pytorch_lightning as pl

    info = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "pytorch_lightning": pl.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "quick": quick,
        "repeats": repeats,
        "warmup": warmup,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return info


def run(
    quick: bool = False,
    device: str = "cpu",
    sections: Sequence[str] = SECTIONS,
    repeats: int | None = None,
    warmup: int = 1,
    threads: int | None = None,
    pruning_threads: int | None = None,
) -> dict[str, Any]:
    """Run the chosen sections and return the results (with `targets`)."""
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown benchmark section(s) {unknown}; valid choices: {', '.join(SECTIONS)}")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device '{device}'; valid choices: cpu, cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for but torch.cuda.is_available() is False; valid choices here: cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unknown device '{device}'; valid choices: cpu, cuda")
    if dev.type == "cuda":  # the runner's deterministic=True needs it before cuBLAS starts
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if threads:
        torch.set_num_threads(threads)
    repeats = repeats if repeats is not None else (3 if quick else 5)
    results: dict[str, Any] = {"meta": meta(dev, quick, repeats, warmup)}
    pruning_threads = pruning_threads or torch.get_num_threads()
    results["meta"]["pruning_threads"] = pruning_threads
    hidden = 256 if quick else 3536  # the memory benchmark's MLP: 0.13M or 25M parameters
    # Quick mode overlaps the subprocess-only sections with the timed ones (its timings are not judged).
    early = {}
    if quick and "memory" in sections:
        early["memory"] = start_memory_workers(hidden, MEMORY_STEPS, dev, threads, separate=False)
    if quick and "imports" in sections:
        early["imports"] = start_import_probe(threads)
    if "step" in sections:
        results["step"] = step_suite(QUICK_STEP_CASES if quick else STEP_CASES, dev, repeats, warmup)
    if "pruning" in sections:
        with _threads(pruning_threads):
            results["pruning"] = pruning_suite(0.125 if quick else 1.0, dev, repeats, warmup)
    if "memory" in sections:
        procs = early.get("memory") or start_memory_workers(hidden, MEMORY_STEPS, dev, threads)
        results["memory"] = memory_results(procs, hidden, MEMORY_STEPS)
    if "imports" in sections:
        results["imports"] = imports_results(early.get("imports") or start_import_probe(threads))
    if "startup" in sections:
        results["startup"] = startup_suite(1 if quick else repeats, 0 if quick else warmup, threads)
    results["meta"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results["targets"] = check_targets(results)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """`python scripts/bench.py [--quick] [--out FILE] [--device cpu|cuda] ...`: print the table, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes and step counts (seconds; for tests)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON file to write (default {DEFAULT_OUT})")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (synchronised timers)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {', '.join(SECTIONS)}")
    ap.add_argument("--skip", default="", help="comma-separated sections to leave out")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per figure (median; default 5, quick 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs per figure")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (OMP_NUM_THREADS in subprocesses); default 1: step figures are then judged on "
                         "CPU time, which other jobs on the machine barely move")
    ap.add_argument("--pruning-threads", type=int, default=None, help="torch threads for pruning (default: --threads)")
    args = ap.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    sections = [s for s in args.only.split(",") if s and s not in skip]
    try:
        results = run(args.quick, args.device, sections, args.repeats, args.warmup, args.threads, args.pruning_threads)
    except ValueError as e:
        ap.error(str(e))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    print(table(results))
    judged = [c for c in results["targets"] if c["pass"] is not None]
    failed = [c["target"] for c in judged if not c["pass"]]
    print(f"\n{len(judged) - len(failed)}/{len(judged)} judged targets met; JSON: {args.out}")
    for name in failed:
        print(f"FAIL: {name}")
    return 0
