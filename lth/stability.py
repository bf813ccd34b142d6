"""Linear mode connectivity (Frankle, Dziugaite, Roy & Carbin 2020): loss and error on the straight line between two
trained networks, and the instability of their starting point (the error barrier on that line)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEFAULT_ALPHAS = 30  # the paper's number of points on the path, both ends included
STABLE_BELOW = 0.02  # an instability under 2% (error, as a fraction) counts as stable

Batch = tuple[Tensor, Tensor]


def evenly_spaced(n: int = DEFAULT_ALPHAS) -> list[float]:
    """`n` evenly spaced interpolation coefficients from 0 to 1, both included."""
    if n < 2:
        raise ValueError(f"stability.alphas must be >= 2 (both ends of the path), got {n}")
    return [i / (n - 1) for i in range(n)]


def has_batchnorm(model: nn.Module) -> bool:
    """Whether `model` has a BatchNorm layer (whose statistics must be re-estimated along a path)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def interpolated_state(state_a: Mapping[str, Tensor], state_b: Mapping[str, Tensor], alpha: float,
                       masks: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """(1−α)·a + α·b for every floating tensor (integer buffers, e.g. BatchNorm's step count, are a's); pruned
    weights (False in `masks`) are 0 all along the path."""
    if state_a.keys() != state_b.keys():
        raise ValueError(f"the two states differ in keys: {sorted(set(state_a) ^ set(state_b))}")
    out: dict[str, Tensor] = {}
    for k, a in state_a.items():
        b = state_b[k]
        if a.shape != b.shape:
            raise ValueError(f"the two states differ in the shape of {k}: {tuple(a.shape)} vs {tuple(b.shape)}")
        if a.is_floating_point():
            if alpha == 0.0:  # the ends are the endpoints themselves, bit for bit
                v = a.clone()
            elif alpha == 1.0:
                v = b.to(a.device).clone()
            else:
                v = (1.0 - alpha) * a + alpha * b.to(a.device)
        else:
            v = a.clone()
        if masks is not None and k in masks:
            v = torch.where(masks[k].to(v.device), v, torch.zeros((), dtype=v.dtype, device=v.device))
        out[k] = v
    return out


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, batches: Iterable[Tensor]) -> None:
    """Recompute every BatchNorm layer's running mean and variance as the average over `batches` of the per-batch
    statistics (momentum None: a cumulative average), the rest of the model unchanged; leaves the model in eval mode."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        for x in batches:
            model(x)
    finally:
        for m, mom in zip(layers, saved):
            m.momentum = mom
        model.eval()


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000) -> tuple[float, float]:
    """(mean cross-entropy, error rate) of `model` in eval mode on `(x, y)` (one host sync at the end)."""
    model.eval()
    device = next(model.parameters()).device
    loss = torch.zeros((), dtype=torch.float64, device=device)
    wrong = torch.zeros((), dtype=torch.int64, device=device)
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        logits = model(xb)
        loss += F.cross_entropy(logits.float(), yb, reduction="sum").double()
        wrong += (logits.argmax(1) != yb).sum()
    n = max(len(x), 1)
    return float(loss) / n, int(wrong) / n


def interpolate(model: nn.Module, state_a: Mapping[str, Tensor], state_b: Mapping[str, Tensor],
                alphas: Sequence[float] | int = DEFAULT_ALPHAS, data: Mapping[str, Batch] | None = None,
                masks: Mapping[str, Tensor] | None = None, bn_batches: Iterable[Tensor] | None = None,
                batch_size: int = 1000) -> list[dict[str, float]]:
    """Loss and error at each α on the line (1−α)·a + α·b, one row per α: `{"alpha", "<split>_loss",
    "<split>_error"}` for every `(x, y)` in `data` (e.g. {"test": ..., "train": ...}).

    `alphas`: the coefficients, or how many evenly spaced ones (default 30, both ends included). `masks`: pruned
    weights stay 0 along the path. `bn_batches`: training inputs on which BatchNorm statistics are re-estimated at every
    α, the ends included (None: the statistics are interpolated like the weights; right for nets without BatchNorm).
    The model is left holding state a, in the train/eval mode it had."""
    points = evenly_spaced(alphas) if isinstance(alphas, int) else [float(a) for a in alphas]
    if not data:
        raise ValueError("interpolate needs data: a mapping of split name → (x, y)")
    # copies: the states may be the model's own tensors (`model.state_dict()`), which loading overwrites
    state_a = {k: v.detach().clone() for k, v in state_a.items()}
    state_b = {k: v.detach().clone() for k, v in state_b.items()}
    reestimate = list(bn_batches) if bn_batches is not None else None
    was_training = model.training
    rows = []
    try:
        for alpha in points:
            model.load_state_dict(interpolated_state(state_a, state_b, alpha, masks))
            if reestimate is not None:
                reestimate_batchnorm(model, reestimate)
            row = {"alpha": alpha}
            for split, (x, y) in data.items():
                row[f"{split}_loss"], row[f"{split}_error"] = evaluate(model, x, y, batch_size)
            rows.append(row)
    finally:
        model.load_state_dict(dict(state_a))
        model.train(was_training)
    return rows


def instability(errors: Sequence[float]) -> float:
    """The error barrier of a path: max over α of error(α) − mean(error(0), error(1)) (errors in α order)."""
    if len(errors) < 2:
        raise ValueError(f"a path needs at least its two ends, got {len(errors)} errors")
    return max(errors) - (errors[0] + errors[-1]) / 2


def instabilities(curve: Sequence[Mapping[str, Any]], splits: Sequence[str] = ("test", "train")) -> dict[str, float]:
    """`instability_<split>` of an `interpolate` curve for every split it holds."""
    return {f"instability_{s}": instability([row[f"{s}_error"] for row in curve])
            for s in splits if curve and f"{s}_error" in curve[0]}


def is_stable(value: float, threshold: float = STABLE_BELOW) -> bool:
    """Whether an instability counts as stable (below 2% by default, the paper's threshold)."""
    return value < threshold
