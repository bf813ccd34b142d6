"""Reset strategies: what the kept weights become before the next round (Zhou et al.'s mask-1 actions).

Every entry of `RESETS` is `fn(ctx: ResetContext) -> dict[str, Tensor]`: new full tensors for the prunables named by
`ctx.masks`. Values at pruned positions are left as they come (the mask manager sets them to their mask-0 value).
Inputs are never modified; outputs never alias them. Randomness comes only from `ctx.generator` (and `ctx.fresh`),
drawn layer by layer in mask-dict order, so the same seed gives the same weights.
Sign convention: sign(0) is taken as +1, so constant and signed resets never produce a kept zero.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from lth.masks import signs as _sign
from lth.registry import Registry

RESETS: Registry = Registry("reset")


@dataclass
class ResetContext:
    """Everything a reset may draw on."""

    source: dict[str, Tensor]  # the rewind target: θ0, or θk with late rewinding
    current: dict[str, Tensor]  # the weights at the end of the last round
    masks: dict[str, Tensor]  # the NEW masks (keep flags)
    fresh: Callable[[], dict[str, Tensor]]  # a fresh draw of the prunables from the model's initialiser (seeded)
    generator: torch.Generator  # seeded by ticket.reset_seed


def reset_weights(name: str, ctx: ResetContext) -> dict[str, Tensor]:
    """New values of the prunables under reset strategy `name`."""
    RESETS.check(name)
    return RESETS[name](ctx)


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


@RESETS.register("rewind")
def rewind(ctx: ResetContext) -> dict[str, Tensor]:
    """The source weights (θ0, or θk with late rewinding): the lottery-ticket reset."""
    return {n: w.clone() for n, w in _layers(ctx, ctx.source, "source").items()}


@RESETS.register("random_reinit")
def random_reinit(ctx: ResetContext) -> dict[str, Tensor]:
    """A fresh draw from the model's own initialiser (the random-reinit control)."""
    return {n: w.clone() for n, w in _layers(ctx, ctx.fresh(), "fresh draw").items()}


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


@RESETS.register("reshuffle")
def reshuffle(ctx: ResetContext) -> dict[str, Tensor]:
    """Per layer, the source values at kept positions randomly permuted among the kept positions."""
    return _shuffle_kept(ctx, keep_signs=False)


@RESETS.register("signed_constant")
def signed_constant(ctx: ResetContext) -> dict[str, Tensor]:
    """σ_l·sign(source), σ_l the population std of the layer's whole source tensor."""
    return {n: _sigma(w) * _sign(w) for n, w in _layers(ctx, ctx.source, "source").items()}


@RESETS.register("signed_reinit")
def signed_reinit(ctx: ResetContext) -> dict[str, Tensor]:
    """|fresh draw| magnitudes with the source signs."""
    src = _layers(ctx, ctx.source, "source")
    fresh = _layers(ctx, ctx.fresh(), "fresh draw")
    return {n: fresh[n].abs().to(w.dtype) * _sign(w) for n, w in src.items()}


@RESETS.register("signed_reshuffle")
def signed_reshuffle(ctx: ResetContext) -> dict[str, Tensor]:
    """Source magnitudes permuted among the kept positions; the source signs stay in place."""
    return _shuffle_kept(ctx, keep_signs=True)


@RESETS.register("rand_signed_constant")
def rand_signed_constant(ctx: ResetContext) -> dict[str, Tensor]:
    """σ_l (population std of the whole source tensor) with uniformly random signs from the generator."""
    out = {}
    for n, w in _layers(ctx, ctx.source, "source").items():
        bits = torch.randint(0, 2, w.shape, generator=ctx.generator, device=ctx.generator.device).to(w.device)
        out[n] = _sigma(w) * (2 * bits - 1).to(w.dtype)
    return out


@RESETS.register("scratch_e")
def scratch_e(ctx: ResetContext) -> dict[str, Tensor]:
    """A fresh seeded init of the pruned architecture, trained for the dense model's steps (Liu et al.'s scratch-E).

    The runner makes `ctx.fresh` draw the compacted architecture (structured masks) and loads its biases and
    BatchNorm too (`lth.structured.scratch_state`).
    """
    return random_reinit(ctx)


@RESETS.register("scratch_b")
def scratch_b(ctx: ResetContext) -> dict[str, Tensor]:
    """Scratch-E's init, trained for steps × FLOPs_dense / FLOPs_pruned (Liu et al.'s scratch-B; ticket.scratch_cap)."""
    return random_reinit(ctx)


@RESETS.register("continue")
def continue_training(ctx: ResetContext) -> dict[str, Tensor]:
    """The current (trained) weights: no reset, i.e. fine-tuning."""
    return {n: w.clone() for n, w in _layers(ctx, ctx.current, "current").items()}
