"""Step overhead: a masked lth round against a plain PyTorch loop and a bare LightningModule, per step."""

from __future__ import annotations

import argparse
import functools
import io
import math
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.common import DENSITY, Clock, Timed, median, paired_interval, paired_ratio, quiet, time_interleaved


# ------------------------------------------------------------------------------------------------------ step overhead
@dataclass(frozen=True)
class Contender:
    """One way of training a case: `raw` (plain PyTorch loop), `lightning` (bare LightningModule) or `lth` (a lineage
    round: TicketModule + MaskingCallback + metrics + records at density 0.2), compared with its `baseline`."""

    kind: str
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # lineage config fields (lth only)
    optimizer: Mapping[str, Any] = field(default_factory=dict)  # extra optimizer arguments
    baseline: str = "raw"
    teacher: bool = False  # lth only: a frozen teacher of the student's architecture for train.distill

    @property
    def floor(self) -> str:
        """The Lightning floor an lth contender is also compared with: the bare LightningModule with its optimizer."""
        return "lightning[unfused]" if self.optimizer.get("fused") is False else "lightning"


def _distill(**options: Any) -> dict[str, Any]:
    """`train` overrides of a distilled round (α 0.5, T 4) with `options` changed."""
    from lth.config import DistillConfig

    return {"distill": DistillConfig(enabled=True, alpha=0.5, temperature=4.0, **options)}


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
    # train.distill against the plain lth round: teacher outputs cached once on the device, or a teacher forward per step
    "lth[distill]": Contender("lth", {"train": _distill()}, baseline="lth", teacher=True),
    "lth[distill,per_batch]": Contender("lth", {"train": _distill(cache=False)}, baseline="lth", teacher=True),
}
DISTILL_CONTENDERS = ("lth", "lth[distill]", "lth[distill,per_batch]")


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
        contenders=tuple(n for n in CONTENDERS if n not in DISTILL_CONTENDERS[1:]),
    ),
    # train.distill: the same round with a distillation loss, against the plain lth round
    "lenet_300_100_distill": StepCase(
        "lenet_300_100", "mnist", (1, 28, 28), steps=600, eval_every=100, num_train=12000, num_eval=1000,
        contenders=DISTILL_CONTENDERS,
    ),
    "conv4": StepCase("conv4", "cifar10", (3, 32, 32), steps=60, eval_every=10, num_train=600, num_eval=60),
}
MIN_TIMED_STEPS = 50  # every full-size case times at least this many steps
QUICK_STEP_CASES: dict[str, StepCase] = {  # seconds in all: checks the machinery, not the numbers
    "lenet_300_100": replace(STEP_CASES["lenet_300_100"], steps=20, eval_every=10, num_train=600, num_eval=100,
                             contenders=("raw", "lightning", "lth")),
    "conv4": replace(
        STEP_CASES["conv4"], input_shape=(3, 8, 8), batch_size=4, steps=2, eval_every=1, num_train=16, num_eval=4
    ),
    "lenet_300_100_distill": replace(STEP_CASES["lenet_300_100_distill"], steps=20, eval_every=10, num_train=600,
                                     num_eval=100),
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
    """A TensorDataModule of seeded random tensors shaped like `case.dataset` (no files needed); `kwargs` are the
    datamodule arguments (unknown ones ignored)."""
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

    class StepClock(pl.Callback):
        """Starts a Clock before training batch `warm_steps + 1`, stops it when training ends (evaluations included)."""

        def __init__(self, clock: Clock, warm_steps: int) -> None:
            self.clock, self.warm_steps = clock, warm_steps

        def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
            if trainer.global_step == self.warm_steps and self.clock.t0 is None:
                self.clock.start()

        def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.clock.stop()

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

    return argparse.Namespace(pl=pl, StepClock=StepClock, BareModule=BareModule)


def progress() -> Any:
    """The progress display every lth run shows (`lth.lit.ProgressCallback`, its bar: a clock read per step), written
    to memory; the Lightning floor gets one too, so both sides pay for the same display."""
    from lth.lit import ProgressCallback

    return ProgressCallback("bench", bar=True, stream=io.StringIO())


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

    x, y = (t.to(device) for t in data.train)  # on the device once, as lth's data module places it
    evals = [tuple(t.to(device) for t in split) for split in (data.val, data.test)]
    bs, n = case.batch_size, len(x)
    step, epoch = 0, 0
    model.train()
    while step < case.steps:
        order = torch.randperm(n, generator=seeded_generator(data.seed, 0, epoch))
        epoch += 1
        for i in range(math.ceil(n / bs)):
            if step == case.warm_steps:
                clock.start()
            idx = order[i * bs : (i + 1) * bs].to(device, non_blocking=True)
            xb, yb = x[idx], y[idx]
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


def set_determinism(deterministic: bool) -> None:
    """Torch's global determinism settings as Lightning's `Trainer(deterministic=...)` sets them."""
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = False


def from_start(model: nn.Module, fn: Timed) -> Timed:
    """`fn`, with `model` put back in place (the same parameter tensors) to its present weights and buffers before every
    call, so every repeat trains from the same weights.

    A network trained on across repeats drifts: the LeNet case's raw loop, its logits at most 8 after one repeat, had
    logits of 167 after 45 and 519 of 6,000 softmax probabilities denormal; each contender (dense or masked) would
    time different work at each repeat, and the pairs of a paired ratio would differ in more than the contender."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def run() -> Mapping[str, float] | None:
        model.load_state_dict(state)
        return fn()

    run.__wrapped__ = fn  # type: ignore[attr-defined]  # (what it times, for inspection)
    return run


def _time_raw(
    model: nn.Module, spec: dict, data: Any, case: StepCase, device: torch.device, deterministic: bool
) -> dict[str, float]:
    from lth.lit import optimizer_factory

    set_determinism(deterministic)  # the same flag as the Trainers of the other contenders (each sets it again)
    clock = Clock(device)
    raw_loop(model, optimizer_factory(spec)(model.parameters()), data, case, device, clock)
    return clock.per_step(case.steps - case.warm_steps)


def _time_lightning(
    model: nn.Module, spec: dict, data: Any, case: StepCase, device: torch.device, workdir: Path, deterministic: bool
) -> dict[str, float]:
    from lth.data import TensorBatches
    from lth.lit import lean, optimizer_factory

    kit = _lightning_kit()
    clock = Clock(device)
    trainer = kit.pl.Trainer(
        max_steps=case.steps, max_epochs=-1, val_check_interval=case.eval_every, check_val_every_n_epoch=None,
        num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        logger=False, deterministic=deterministic, accelerator=_accelerator(device), devices=1,
        # the clock and the display as lth's Trainer gets them (`lean`: inherited no-op hooks skipped), so neither side
        # pays for the other's measurement
        callbacks=lean([kit.StepClock(clock, case.warm_steps), progress()]),
        default_root_dir=str(workdir),
    )
    # the data placed as lth's data module places it (on the device when it fits)
    train = TensorBatches(*data.train, case.batch_size, shuffle=True, seed=data.seed, device=device)
    evals = [TensorBatches(*data.val, case.eval_batch_size, shuffle=False, device=device),
             TensorBatches(*data.test, case.eval_batch_size, shuffle=False, device=device)]
    trainer.fit(kit.BareModule(model, optimizer_factory(spec)), train, evals)
    return clock.per_step(case.steps - case.warm_steps)


def _time_lth(lineage: Any, clock: Clock, masks: dict[str, Tensor], case: StepCase) -> dict[str, float]:
    clock.reset()  # the lineage's StepClock starts and stops it during the round
    lineage.train_round(1, masks)
    return clock.per_step(case.steps - case.warm_steps)


def lineage_datamodule(case: StepCase, cfg: Any) -> Any:
    """The random datamodule a lineage with config `cfg` gets, built from the same `cfg.data` fields as the runner's."""
    d = cfg.data
    return random_datamodule(case, root=d.root, batch_size=d.batch_size, eval_batch_size=d.eval_batch_size,
                             seed=cfg.seed, val_size=d.val_size, num_train=d.num_train)


def step_contenders(case: StepCase, device: torch.device, workdir: Path, deterministic: bool = True
                    ) -> dict[str, Timed]:
    """Timed callables of one case, one per contender; each returns its steady-state seconds per step.

    Every contender runs with the same `deterministic` flag (lth's default, `trainer.deterministic=true`); a contender's
    own override (`lth[deterministic=false]`) is the one exception, there to show what the flag costs.
    """
    from lth.models import build_model, reinitialize
    from lth.runner import Lineage

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
            model = fresh_model()
            fns[name] = from_start(model, functools.partial(_time_raw, model, spec, data, case, device, deterministic))
        elif c.kind == "lightning":
            model = fresh_model()
            fns[name] = from_start(model, functools.partial(_time_lightning, model, spec, data, case, device,
                                                            workdir / name, deterministic))
        else:
            overrides = {"trainer": {"deterministic": deterministic}}
            overrides = {g: {**overrides.get(g, {}), **f} for g, f in {**overrides, **c.overrides}.items()}
            cfg = lineage_config(case, device, overrides, spec)
            clock = Clock(device)
            lineage = Lineage(cfg, workdir / name, sinks=[], datamodule=lineage_datamodule(case, cfg),
                              callbacks=[kit.StepClock(clock, case.warm_steps), progress()])
            if c.teacher:  # the dense parent a distilled round learns from (here: a fresh network of the same shape)
                from lth.distill import Teacher

                lineage.distiller.teacher = Teacher([fresh_model()], ["bench"])
            masks = _density_masks(lineage.manager, DENSITY)
            lineage.manager.set_masks(masks)
            fns[name] = from_start(lineage.model, functools.partial(_time_lth, lineage, clock, masks, case))
    return fns


def choose_contenders(cases: Mapping[str, StepCase], names: Iterable[str]) -> dict[str, StepCase]:
    """`cases` with only the contenders `names` (each case keeps its own order); ValueError naming the valid choices
    for an unknown contender or a case left with none."""
    names = list(names)
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        raise ValueError(f"unknown step contender(s) {unknown}; valid choices: {', '.join(CONTENDERS)}")
    chosen = {}
    for key, case in cases.items():
        kept = tuple(n for n in case.contenders if n in names)
        if not kept:
            raise ValueError(f"step case {key} times none of the contenders {names}; valid choices for it: "
                             f"{', '.join(case.contenders)}")
        chosen[key] = replace(case, contenders=kept)
    return chosen


def step_suite(cases: Mapping[str, StepCase], device: torch.device, repeats: int, warmup: int,
               deterministic: bool = True) -> dict[str, Any]:
    """Per case: ms per step (steady state, evaluations included) and seconds per round, with ratios to baselines."""
    out: dict[str, Any] = {}
    before = torch.are_deterministic_algorithms_enabled()
    for key, case in cases.items():
        with tempfile.TemporaryDirectory(prefix="lth-bench-") as tmp, quiet():
            try:
                fns = step_contenders(case, device, Path(tmp), deterministic)
                times = time_interleaved(fns, repeats, warmup, device)
            finally:
                torch.use_deterministic_algorithms(before)
        # a contender whose baseline this case does not time is its own baseline (the distillation case's plain round)
        base = {n: CONTENDERS[n].baseline if CONTENDERS[n].baseline in times else n for n in times}
        floor = {n: CONTENDERS[n].floor for n in times if CONTENDERS[n].kind == "lth" and CONTENDERS[n].floor in times}
        # One thread on a CPU: this process's CPU time, which other jobs on the machine inflate far less than wall
        # time (the two agree on an idle machine). Otherwise (threads spin, devices run asynchronously): wall time.
        clock = "cpu" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall"
        field_name = "step_cpu" if clock == "cpu" else "step"
        out[key] = {
            "case": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(case).items()},
            "density": DENSITY,
            "optimizer": optimizer_spec(),
            "timed_steps": case.steps - case.warm_steps,
            "deterministic": deterministic,
            "baseline": base,
            "ms_per_step": {n: 1e3 * median(t["step"]) for n, t in times.items()},
            "cpu_ms_per_step": {n: 1e3 * median(t["step_cpu"]) for n, t in times.items()},
            "round_seconds": {n: median(t["total"]) for n, t in times.items()},
            "step_ratio": {n: paired_ratio(times[n]["step"], times[base[n]]["step"]) for n in times},
            "cpu_step_ratio": {n: paired_ratio(times[n]["step_cpu"], times[base[n]]["step_cpu"]) for n in times},
            "round_ratio": {n: paired_ratio(times[n]["total"], times[base[n]]["total"]) for n in times},
            "judged_clock": clock,
            "judged_ratio": {n: paired_ratio(times[n][field_name], times[base[n]][field_name]) for n in times},
            # lth's own cost: each lth contender over the bare LightningModule with the same optimizer (judged clock)
            "floor": floor,
            "floor_ratio": {n: paired_ratio(times[n][field_name], times[f][field_name]) for n, f in floor.items()},
            # where those medians lie: 95% distribution-free intervals over the per-repeat ratios
            "judged_ratio_interval": {n: paired_interval(times[n][field_name], times[base[n]][field_name])
                                      for n in times},
            "floor_ratio_interval": {n: paired_interval(times[n][field_name], times[f][field_name])
                                     for n, f in floor.items()},
            "times": {n: {k: [round(v, 6) for v in vs] for k, vs in t.items()} for n, t in times.items()},
        }
    return out

