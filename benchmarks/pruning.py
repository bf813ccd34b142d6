"""Pruning cost: global and layerwise `select` and a full prune + reset over ResNet-50-sized tensors."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from benchmarks.common import Timed, median, sync, time_interleaved


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

