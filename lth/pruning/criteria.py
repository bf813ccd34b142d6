"""Pruning criteria: per-weight scores from initial and final weights (higher score = keep).

Every entry of `CRITERIA` is `fn(w_init, w_final, *, generator=None, mask=None) -> Tensor`: a floating tensor of the
weight's shape. `mask` (keep flags of the weights still alive) is optional and only changes the rank-based criteria
(`large_init_large_final`, `small_init_small_final`), which rank among the kept weights; the others ignore it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from lth.masks import check_masks
from lth.registry import Registry

CRITERIA: Registry = Registry("criterion")


@CRITERIA.register("large_final")
def large_final(w_init: Tensor, w_final: Tensor, *, generator: torch.Generator | None = None,
                mask: Tensor | None = None) -> Tensor:
    """|wf|: keep the weights that are large after training (Frankle & Carbin)."""
    return w_final.abs()


@CRITERIA.register("small_final")
def small_final(w_init: Tensor, w_final: Tensor, *, generator: torch.Generator | None = None,
                mask: Tensor | None = None) -> Tensor:
    """−|wf|: keep the weights that are small after training."""
    return -w_final.abs()


@CRITERIA.register("large_init")
def large_init(w_init: Tensor, w_final: Tensor, *, generator: torch.Generator | None = None,
               mask: Tensor | None = None) -> Tensor:
    """|wi|: keep the weights that were large at initialisation."""
    return w_init.abs()


@CRITERIA.register("small_init")
def small_init(w_init: Tensor, w_final: Tensor, *, generator: torch.Generator | None = None,
               mask: Tensor | None = None) -> Tensor:
    """−|wi|: keep the weights that were small at initialisation."""
    return -w_init.abs()


def _ranks(values: Tensor, mask: Tensor | None) -> Tensor:
    """Ordinal ascending rank in 1..m among kept entries (ties: lower flat index ranks lower); 0 at pruned ones."""
    flat = values.reshape(-1)
    keep = torch.ones_like(flat, dtype=torch.bool) if mask is None else mask.reshape(-1).to(torch.bool)
    kept = flat[keep]
    order = torch.argsort(kept, stable=True)
    kept_ranks = torch.empty_like(order)
    kept_ranks[order] = torch.arange(1, kept.numel() + 1, device=flat.device)
    ranks = torch.zeros_like(flat, dtype=torch.long)
    ranks[keep] = kept_ranks
    return ranks.reshape(values.shape)


def _common_percentile(a: Tensor, b: Tensor, mask: Tensor | None) -> Tensor:
    """min of the per-layer normalised ranks of `a` and `b` in (0, 1]; 0 at pruned positions."""
    m = a.numel() if mask is None else int(mask.sum())
    low = torch.minimum(_ranks(a, mask), _ranks(b, mask))
    return low.to(torch.promote_types(a.dtype, torch.float32)) / max(m, 1)


@CRITERIA.register("large_init_large_final")
def large_init_large_final(w_init: Tensor, w_final: Tensor, *, generator: torch.Generator | None = None,
                           mask: Tensor | None = None) -> Tensor:
    """min(rank|wi|, rank|wf|)/m: top-k keeps the weights above one common per-layer percentile in both |wi| and |wf|.

    A weight scores ≥ p exactly when it is in the top (1−p) of the layer by |wi| and by |wf| (ordinal ranks among the
    m kept weights, ties by flat index), so keeping the k best keeps those above the lowest common percentile that
    leaves k; where two weights share the same min-rank, selection's tie rule decides.
    """
    return _common_percentile(w_init.abs(), w_final.abs(), mask)


@CRITERIA.register("small_init_small_final")
def small_init_small_final(w_init: Tensor, w_final: Tensor, *, generator: torch.Generator | None = None,
                           mask: Tensor | None = None) -> Tensor:
    """`large_init_large_final` on −|wi|, −|wf|: keep weights below a common percentile in both magnitudes."""
    return _common_percentile(-w_init.abs(), -w_final.abs(), mask)


@CRITERIA.register("magnitude_increase")
def magnitude_increase(w_init: Tensor, w_final: Tensor, *, generator: torch.Generator | None = None,
                       mask: Tensor | None = None) -> Tensor:
    """|wf| − |wi|: keep the weights that grew most in magnitude."""
    return w_final.abs() - w_init.abs()


@CRITERIA.register("movement")
def movement(w_init: Tensor, w_final: Tensor, *, generator: torch.Generator | None = None,
             mask: Tensor | None = None) -> Tensor:
    """|wf − wi|: keep the weights that moved most during training."""
    return (w_final - w_init).abs()


@CRITERIA.register("random")
def random(w_init: Tensor, w_final: Tensor, *, generator: torch.Generator | None = None,
           mask: Tensor | None = None) -> Tensor:
    """Uniform [0, 1) draws from `generator` (global RNG if None): a random mask with the same counts."""
    device = generator.device if generator is not None else w_final.device
    draws = torch.rand(w_final.shape, generator=generator, device=device)
    return draws.to(device=w_final.device)


@CRITERIA.register("large_final_same_sign")
def large_final_same_sign(w_init: Tensor, w_final: Tensor, *, generator: torch.Generator | None = None,
                          mask: Tensor | None = None) -> Tensor:
    """|wf| where wi and wf share a sign; −1/(1+|wf|) ∈ [−1, 0) where the sign flipped, below every same-sign weight.

    Only a strict flip (one positive, the other negative) counts; a zero on either side is not a flip. Among flipped
    weights a larger |wf| still scores higher.
    """
    mag = w_final.abs()
    flipped = torch.sign(w_init) * torch.sign(w_final) < 0
    return torch.where(flipped, -1.0 / (1.0 + mag), mag)


@torch.no_grad()
def score(name: str, w_init: Mapping[str, Tensor], w_final: Mapping[str, Tensor],
          generator: torch.Generator | None = None, masks: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Score every layer of `w_final` with criterion `name` (layers in `w_final` order, one shared `generator`)."""
    CRITERIA.check(name)
    if set(w_init) != set(w_final):
        raise ValueError(f"w_init and w_final name different layers: {sorted(w_init)} vs {sorted(w_final)}")
    if masks is not None:
        check_masks(masks, {n: w.shape for n, w in w_final.items()})
    fn = CRITERIA[name]
    out: dict[str, Tensor] = {}
    for n, wf in w_final.items():
        wi = w_init[n]
        if wi.shape != wf.shape:
            raise ValueError(f"layer '{n}': w_init shape {tuple(wi.shape)} != w_final shape {tuple(wf.shape)}")
        extra = {} if masks is None else {"mask": masks[n]}
        out[n] = fn(wi, wf, generator=generator, **extra)
    return out
