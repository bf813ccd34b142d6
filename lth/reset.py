"""Reset strategies: what the network becomes before the next round (Zhou et al.'s mask-1 actions and the controls).

A reset strategy is one registered `Reset` object that owns everything the control means:
- `base_state`: the whole model state loaded first (biases, norm layers and other parameters): θ0 / θk by default,
  the trained state for `continue`, a fresh init of the pruned architecture for scratch-E / scratch-B;
- `weights`: the new values of the prunables, from a `ResetContext` (source θ0/θk, current, fresh draw, generator);
- `steps`: the round's training length (scratch-B's FLOPs budget, fine-tuning's steps);
- `optimizer`: the round's optimizer (fine-tuning's learning rate);
- `window`: where the round's learning-rate schedule starts (θk's step k with late rewinding and lr_rewind, the
  schedule's last step held for finetune); `steps` defaults to the rest of the schedule after it.
Adding a reset is one registered subclass plus its tests; the round loop never branches on a reset's name.

`weights` outputs are new full tensors for the prunables named by `ctx.masks`; values at pruned positions are left as
they come (the mask manager sets them to their mask-0 value). Inputs are never modified; outputs never alias them.
Randomness comes only from `ctx.generator` (and `ctx.fresh`), drawn layer by layer in mask-dict order.
Sign convention: sign(0) is taken as +1, so constant and signed resets never produce a kept zero.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from lth.masks import signs as _sign
from lth.registry import Registry
from lth.seeds import derive_seed

if TYPE_CHECKING:
    from lth.masks import MaskManager

OptimizerFactory = Callable[[Any], torch.optim.Optimizer]
RESETS: Registry[Reset] = Registry("reset")


@dataclass
class ResetContext:
    """Everything a reset's `weights` may draw on."""

    source: dict[str, Tensor]  # the rewind target: θ0, or θk with late rewinding
    current: dict[str, Tensor]  # the weights at the end of the last round
    masks: dict[str, Tensor]  # the NEW masks (keep flags)
    fresh: Callable[[], dict[str, Tensor]]  # a fresh draw of the prunables from the model's initialiser (seeded)
    generator: torch.Generator  # seeded by ticket.reset_seed


@dataclass
class ResetInputs:
    """What a reset receives from the lineage for one round."""

    model: nn.Module
    manager: MaskManager
    masks: dict[str, Tensor]  # the round's new masks
    trained: Mapping[str, Tensor] | None  # the whole state at the end of the previous round (None: there is none)
    tag: str  # the source snapshot: "init" (θ0) or "rewind" (θk)
    seed: int  # ticket.reset_seed
    r: int  # the round being prepared
    example: Tensor  # an input batch of one (for structured resets)
    compacted: bool  # neuron granularity: the masks remove whole units

    def seed_for(self, stream: str) -> int:
        """This round's seed of an independent random stream ("fresh", "reset", ...)."""
        return derive_seed(self.seed, stream, self.r)


@dataclass(frozen=True)
class Budget:
    """What a round's training length can depend on."""

    max_steps: int  # trainer.max_steps: the dense round's length
    flops_dense: float  # FLOPs per example of the dense network
    flops_pruned: float  # FLOPs per example under the round's masks
    scratch_cap: float | None = None  # ticket.scratch_cap
    finetune_steps: int | None = None  # ticket.finetune_steps
    rewind_step: int = 0  # k: ticket.rewind_step (or rewind_epoch in steps)
    from_rewind: bool = False  # the round's source snapshot is θk (else θ0)
    resume: bool = True  # ticket.rewind_schedule=resume: a round from θk resumes the lr schedule at k


@dataclass(frozen=True)
class Window:
    """Where a round's learning-rate schedule starts: at global step `start` of round 0's schedule (its lr after
    `start` scheduler steps), and held there for the whole round when `hold`."""

    start: int = 0
    hold: bool = False


class Reset:
    """A reset strategy; subclasses override `weights` and, where the control needs it, the other extension points."""

    name = ""

    def weights(self, ctx: ResetContext) -> dict[str, Tensor]:
        """New values of the prunables."""
        raise NotImplementedError

    def base_state(self, inp: ResetInputs) -> Mapping[str, Tensor]:
        """The whole model state loaded before the prunables are set: the source snapshot (θ0 or θk)."""
        return inp.manager.state(inp.tag)

    def fresh(self, inp: ResetInputs, base: Mapping[str, Tensor]) -> Callable[[], dict[str, Tensor]]:
        """A fresh, seeded draw of the prunables from the model's own initialiser (drawn only when asked for)."""
        return lambda: fresh_weights(inp.model, inp.manager.names, inp.seed_for("fresh"))

    def window(self, budget: Budget) -> Window:
        """The round's lr schedule: from θk's step k when the source is θk and ticket.rewind_schedule=resume."""
        return Window(budget.rewind_step if budget.from_rewind and budget.resume else 0)

    def steps(self, budget: Budget) -> int:
        """The round's training steps: the rest of the schedule after the window's start (T − k)."""
        return int(budget.max_steps) - self.window(budget).start

    def optimizer(self, factory: OptimizerFactory, finetune_lr: float | None = None) -> OptimizerFactory:
        """The round's optimizer factory."""
        return factory

    def apply(self, inp: ResetInputs) -> None:
        """Load the base state, set the new masks and the prunables' new values into the model."""
        base = self.base_state(inp)
        inp.model.load_state_dict(base)
        manager = inp.manager
        current = {n: inp.trained[n] for n in manager.names} if inp.trained is not None else manager.weights(inp.tag)
        ctx = ResetContext(
            source={n: v.cpu() for n, v in manager.weights(inp.tag).items()},
            current={n: v.cpu() for n, v in current.items()},
            masks={n: m.cpu() for n, m in inp.masks.items()},
            fresh=self.fresh(inp, base),
            generator=torch.Generator().manual_seed(inp.seed_for("reset")),
        )
        manager.set_masks(inp.masks)
        manager.load_weights(self.weights(ctx))


def reset_weights(name: str, ctx: ResetContext) -> dict[str, Tensor]:
    """New values of the prunables under reset strategy `name`."""
    RESETS.check(name)
    return RESETS[name].weights(ctx)


def register(cls: type[Reset]) -> type[Reset]:
    """Class decorator: register one instance of a Reset subclass under its `name`."""
    RESETS.register(cls.name)(cls())
    return cls


def fresh_weights(model: nn.Module, names: list[str], seed: int) -> dict[str, Tensor]:
    """A fresh draw of the prunables `names` from `model`'s own initialiser (the model itself is not changed)."""
    from lth.models import reinitialize

    other = copy.deepcopy(model).cpu()
    reinitialize(other, seed)
    params = dict(other.named_parameters())
    return {n: params[n].detach() for n in names}


def _layers(ctx: ResetContext, weights: Mapping[str, Tensor], what: str) -> dict[str, Tensor]:
    """`weights` restricted to the masked layers, checked for presence and shape."""
    missing = [n for n in ctx.masks if n not in weights]
    if missing:
        raise ValueError(f"{what} lacks masked layers {missing}; it has: {', '.join(weights)}")
    for n, m in ctx.masks.items():
        if weights[n].shape != m.shape:
            raise ValueError(f"layer '{n}': {what} shape {tuple(weights[n].shape)} != mask shape {tuple(m.shape)}")
    return {n: weights[n].detach() for n in ctx.masks}


def _sigma(t: Tensor) -> Tensor:
    """Population std (ddof 0, as numpy's np.std) of the whole tensor."""
    return t.std(correction=0) if t.numel() else torch.zeros((), dtype=t.dtype, device=t.device)


def _permutation(n: int, gen: torch.Generator, device: torch.device) -> Tensor:
    return torch.randperm(n, generator=gen, device=gen.device).to(device)


def _shuffle_kept(ctx: ResetContext, keep_signs: bool) -> dict[str, Tensor]:
    """Per layer, the source values (or magnitudes, with the signs left in place) permuted among kept positions."""
    out = {}
    for n, w in _layers(ctx, ctx.source, "source").items():
        keep = ctx.masks[n].to(device=w.device, dtype=torch.bool)
        kept = w[keep]
        perm = _permutation(kept.numel(), ctx.generator, w.device)
        new = w.clone()
        new[keep] = kept.abs()[perm] * _sign(kept) if keep_signs else kept[perm]
        out[n] = new
    return out


@register
class Rewind(Reset):
    """The source weights (θ0, or θk with late rewinding): the lottery-ticket reset."""

    name = "rewind"

    def weights(self, ctx: ResetContext) -> dict[str, Tensor]:
        return {n: w.clone() for n, w in _layers(ctx, ctx.source, "source").items()}


@register
class RandomReinit(Reset):
    """A fresh draw from the model's own initialiser (the random-reinit control); other parameters from the source."""

    name = "random_reinit"

    def weights(self, ctx: ResetContext) -> dict[str, Tensor]:
        return {n: w.clone() for n, w in _layers(ctx, ctx.fresh(), "fresh draw").items()}


@register
class Reshuffle(Reset):
    """Per layer, the source values at kept positions randomly permuted among the kept positions."""

    name = "reshuffle"

    def weights(self, ctx: ResetContext) -> dict[str, Tensor]:
        return _shuffle_kept(ctx, keep_signs=False)


@register
class SignedConstant(Reset):
    """σ_l·sign(source), σ_l the population std (ddof 0, as `np.std`) of the layer's whole source tensor."""

    name = "signed_constant"

    def weights(self, ctx: ResetContext) -> dict[str, Tensor]:
        return {n: _sigma(w) * _sign(w) for n, w in _layers(ctx, ctx.source, "source").items()}


@register
class SignedReinit(Reset):
    """|fresh draw| magnitudes with the source signs."""

    name = "signed_reinit"

    def weights(self, ctx: ResetContext) -> dict[str, Tensor]:
        src = _layers(ctx, ctx.source, "source")
        fresh = _layers(ctx, ctx.fresh(), "fresh draw")
        return {n: fresh[n].abs().to(w.dtype) * _sign(w) for n, w in src.items()}


@register
class SignedReshuffle(Reset):
    """Source magnitudes permuted among the kept positions; the source signs stay in place."""

    name = "signed_reshuffle"

    def weights(self, ctx: ResetContext) -> dict[str, Tensor]:
        return _shuffle_kept(ctx, keep_signs=True)


@register
class RandSignedConstant(Reset):
    """σ_l (population std of the whole source tensor) with uniformly random signs from the generator."""

    name = "rand_signed_constant"

    def weights(self, ctx: ResetContext) -> dict[str, Tensor]:
        out = {}
        for n, w in _layers(ctx, ctx.source, "source").items():
            bits = torch.randint(0, 2, w.shape, generator=ctx.generator, device=ctx.generator.device).to(w.device)
            out[n] = _sigma(w) * (2 * bits - 1).to(w.dtype)
        return out


@register
class Continue(Reset):
    """The trained state kept as it is: fine-tuning (ticket.finetune_lr, ticket.finetune_steps)."""

    name = "continue"

    def weights(self, ctx: ResetContext) -> dict[str, Tensor]:
        return {n: w.clone() for n, w in _layers(ctx, ctx.current, "current").items()}

    def base_state(self, inp: ResetInputs) -> Mapping[str, Tensor]:
        return inp.trained if inp.trained is not None else inp.manager.state(inp.tag)

    def window(self, budget: Budget) -> Window:
        return Window()

    def steps(self, budget: Budget) -> int:
        if budget.finetune_steps is None:
            return int(budget.max_steps)
        if int(budget.finetune_steps) != budget.finetune_steps or budget.finetune_steps < 1:
            raise ValueError(f"finetune_steps must be a positive int, got {budget.finetune_steps}")
        return int(budget.finetune_steps)

    def optimizer(self, factory: OptimizerFactory, finetune_lr: float | None = None) -> OptimizerFactory:
        if finetune_lr is None:
            return factory
        from lth.lit import with_lr

        return with_lr(factory, finetune_lr)


@register
class LrRewind(Continue):
    """Learning-rate rewinding (Renda et al. 2020): the trained weights, T − k steps with the lr schedule replayed from
    k = ticket.rewind_step (0: the whole schedule)."""

    name = "lr_rewind"

    def window(self, budget: Budget) -> Window:
        return Window(budget.rewind_step)

    def steps(self, budget: Budget) -> int:
        return int(budget.max_steps) - budget.rewind_step

    def optimizer(self, factory: OptimizerFactory, finetune_lr: float | None = None) -> OptimizerFactory:
        return factory


@register
class Finetune(Continue):
    """Fine-tuning (Renda et al. 2020): the trained weights, trained at the schedule's final lr (the lr of round 0's
    last step, T − 1) for ticket.finetune_steps (None: T)."""

    name = "finetune"

    def window(self, budget: Budget) -> Window:
        return Window(int(budget.max_steps) - 1, hold=True)

    def optimizer(self, factory: OptimizerFactory, finetune_lr: float | None = None) -> OptimizerFactory:
        return factory


class _Scratch(Reset):
    """A fresh seeded init of the pruned architecture: biases and BatchNorm included (Liu et al.'s scratch baselines).

    Under structured masks the compacted network is re-initialised (its small fan-in/out, as a network built at that
    size would have) and written back into the full shapes (`lth.structured.scratch_state`).
    """

    def weights(self, ctx: ResetContext) -> dict[str, Tensor]:
        return {n: w.clone() for n, w in _layers(ctx, ctx.fresh(), "fresh draw").items()}

    def base_state(self, inp: ResetInputs) -> Mapping[str, Tensor]:
        from lth.structured import scratch_state

        return scratch_state(inp.model, inp.masks, inp.seed_for("fresh"), inp.example, compacted=inp.compacted)

    def fresh(self, inp: ResetInputs, base: Mapping[str, Tensor]) -> Callable[[], dict[str, Tensor]]:
        return lambda: {n: base[n] for n in inp.manager.names}

    def window(self, budget: Budget) -> Window:
        return Window()


@register
class ScratchE(_Scratch):
    """Scratch-E: the pruned architecture from a fresh init, trained for the dense model's steps."""

    name = "scratch_e"


@register
class ScratchB(_Scratch):
    """Scratch-B: scratch-E's init trained for steps × FLOPs_dense / FLOPs_pruned (ticket.scratch_cap caps it)."""

    name = "scratch_b"

    def steps(self, budget: Budget) -> int:
        from lth.structured import scratch_steps

        return scratch_steps(budget.max_steps, budget.flops_dense, budget.flops_pruned, budget.scratch_cap)
