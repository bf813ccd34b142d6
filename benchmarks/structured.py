"""Inference latency of weight (unstructured) vs neuron (structured) pruning: does removing FLOPs make it faster?

    python scripts/bench_structured.py            # lenet_300_100, conv4 (densities 0.5 0.2 0.1), resnet20, resnet56 (0.5 0.25)
    python scripts/bench_structured.py --models resnet56 --densities 1.0 0.5 --batches 256 --device cuda

For each model and density, four networks compute the same kind of function:
  dense      the unpruned model;
  mask       magnitude-pruned weights (layerwise, every prunable at the density) kept in dense kernels with zeros;
  csr        the same pruned weights as torch.sparse CSR matrices: Linear by `torch.sparse.mm`, Conv2d by im2col
             (`F.unfold`) + `torch.sparse.mm` (in chunks of the batch);
  compacted  whole neurons/filters removed by their dependency group's L1 norm (the same share of every group —
             a residual stage's channels are one group —, output layer kept) until the FLOPs match the density,
             then `lth.structured.compact` into a physically smaller dense model.
Latency = median over repeats of the mean over an inner loop (≥ 5 ms), after warm-up, the variants timed in turn, in inference mode, with the
thread count pinned; CUDA is used when present (timings synchronised). Writes JSON and a Markdown table with the
speed-up over dense, the FLOP ratio (dense FLOPs / the variant's non-zero FLOPs) and their quotient (1.0 = the
variant is as much faster as it has fewer FLOPs).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.common import Clock
from lth.models import build_model, reinitialize
from lth.pruning import group_scores, select, select_groups
from lth.structured import compact, dependency_groups, flops

INPUT_SHAPES = {"lenet_300_100": (1, 28, 28), "conv2": (3, 32, 32), "conv4": (3, 32, 32), "conv6": (3, 32, 32),
                "vgg16": (3, 32, 32), "mlp": (1, 28, 28), "resnet20": (3, 32, 32), "resnet56": (3, 32, 32),
                "resnet1d": (1, 40), "cnn1d": (1, 40)}
VARIANTS = ("mask", "csr", "compacted")
# per model, when --densities / --variants are not given: the residual networks at 2x and 4x fewer FLOPs, compacted
# only (their dense-kernel masks cost what dense costs, and CSR im2col convolutions are far slower: see the table)
DEFAULT_DENSITIES = {"resnet20": (1.0, 0.5, 0.25), "resnet56": (1.0, 0.5, 0.25)}
DEFAULT_VARIANTS = {"resnet20": ("compacted",), "resnet56": ("compacted",)}


class CSRLinear(nn.Module):
    """A Linear whose (pruned) weight is a CSR matrix: y = W x via torch.sparse.mm."""

    def __init__(self, layer: nn.Linear) -> None:
        super().__init__()
        self.weight = layer.weight.detach().to_sparse_csr()
        self.bias = None if layer.bias is None else layer.bias.detach()

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, x.shape[-1])
        y = torch.sparse.mm(self.weight, flat.t()).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], -1)


class CSRConv2d(nn.Module):
    """A Conv2d as im2col + CSR weight (O × C·kh·kw) @ columns, over chunks of the batch to bound memory."""

    def __init__(self, layer: nn.Conv2d, max_floats: int = 1 << 24) -> None:
        super().__init__()
        if layer.groups != 1 or not isinstance(layer.padding, tuple):
            raise ValueError("CSRConv2d needs groups=1 and numeric padding")
        self.weight = layer.weight.detach().reshape(layer.out_channels, -1).to_sparse_csr()
        self.bias = None if layer.bias is None else layer.bias.detach().view(1, -1, 1)
        self.args = {"kernel_size": layer.kernel_size, "dilation": layer.dilation, "padding": layer.padding,
                     "stride": layer.stride}
        self.max_floats = max_floats

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        k, d, p, s = (self.args[a] for a in ("kernel_size", "dilation", "padding", "stride"))
        ho = (h + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
        wo = (w + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1
        chunk = max(1, self.max_floats // (self.weight.shape[1] * ho * wo))
        outs = []
        for xs in x.split(chunk):
            cols = F.unfold(xs, **self.args)  # (b, C·k·k, L)
            b = cols.shape[0]
            y = torch.sparse.mm(self.weight, cols.transpose(0, 1).reshape(cols.shape[1], -1))  # (O, b·L)
            y = y.reshape(-1, b, ho * wo).transpose(0, 1)
            outs.append(y + self.bias if self.bias is not None else y)
        return torch.cat(outs).reshape(n, -1, ho, wo)


def to_csr(model: nn.Module) -> nn.Module:
    """A copy of `model` with every Linear and Conv2d replaced by its CSR version."""
    out = copy.deepcopy(model)
    for name, mod in list(out.named_modules()):
        new = CSRLinear(mod) if isinstance(mod, nn.Linear) else CSRConv2d(mod) if isinstance(mod, nn.Conv2d) else None
        if new is not None:
            parent, _, leaf = name.rpartition(".")
            setattr(out.get_submodule(parent), leaf, new)
    return out


def prunables(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1]


def masked(model: nn.Module, masks: dict[str, Tensor]) -> nn.Module:
    out = copy.deepcopy(model)
    with torch.no_grad():
        for n, m in masks.items():
            out.get_parameter(n).mul_(m)
    return out


def magnitude_masks(model: nn.Module, density: float) -> dict[str, Tensor]:
    """Every prunable keeps its `density` largest-magnitude weights."""
    weights = {n: model.get_parameter(n).detach() for n in prunables(model)}
    ones = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    return select({n: w.abs() for n, w in weights.items()}, ones, 1.0 - density)


def neuron_masks(model: nn.Module, x: Tensor, density: float) -> tuple[dict[str, Tensor], float]:
    """Channel masks, group L1 norm with one fraction for every dependency group (a residual stage's channels are one
    group), whose FLOPs are closest to `density` of dense; and that FLOP density."""
    layout = dependency_groups(model, x[:1], prunables(model))
    weights = {n: model.get_parameter(n).detach() for n in prunables(model)}
    ones = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    scores = group_scores("l1", weights, ones, layout)
    dense = flops(model, x[:1])["flops_dense"]

    def at(fraction: float) -> tuple[dict[str, Tensor], float]:
        m = select_groups(scores, ones, layout, fraction)
        return m, flops(model, x[:1], m)["flops_nonzero"] / dense

    lo, hi = 1e-6, 1 - 1e-6
    best = at(0.5)
    for _ in range(30):  # bisection on the fraction of units removed; FLOPs fall as it grows
        mid = (lo + hi) / 2
        cand = at(mid)
        if abs(cand[1] - density) < abs(best[1] - density):
            best = cand
        lo, hi = (mid, hi) if cand[1] > density else (lo, mid)
    return best


def interleaved_latency_ms(fns: list[Callable[[Tensor], Tensor]], x: Tensor, repeats: int,
                           warmup: int) -> list[float]:
    """Per function, the median over `repeats` rounds of the mean time of an inner loop lasting ≥ ~5 ms; the rounds
    visit the functions in turn, so a change in machine load hits all of them alike. On the CPU the time is this
    process's CPU time (time another job takes from the cores is not counted: a loaded machine still gives ratios);
    on CUDA it is wall time between device synchronisations."""
    clock = Clock(x.device)
    elapsed = (lambda: clock.seconds) if x.is_cuda else (lambda: clock.cpu_seconds)
    inner, times = [], [[] for _ in fns]
    with torch.inference_mode():
        for fn in fns:
            for _ in range(warmup):
                fn(x)
            clock.start()
            fn(x)
            clock.stop()
            inner.append(max(1, int(0.005 / max(elapsed(), 1e-7))))
        for _ in range(repeats):
            for i, fn in enumerate(fns):
                clock.start()
                for _ in range(inner[i]):
                    fn(x)
                clock.stop()
                times[i].append(elapsed() / inner[i])
    return [1e3 * statistics.median(t) for t in times]


def bench_model(name: str, densities: list[float], batches: list[int], repeats: int, warmup: int,
                device: torch.device, seed: int, kinds: tuple[str, ...] = VARIANTS) -> list[dict]:
    shape = INPUT_SHAPES.get(name, (3, 32, 32))
    model = build_model(name, shape, 10)
    reinitialize(model, seed)
    model.eval()
    probe = torch.randn(2, *shape)
    dense_flops = flops(model, probe[:1])["flops_dense"]
    variants: list[tuple[float, str, nn.Module, int]] = [(1.0, "dense", model, dense_flops)]
    for d in densities:
        if d >= 1.0:
            continue
        if {"mask", "csr"} & set(kinds):
            m = magnitude_masks(model, d)
            pruned = masked(model, m)
            nz = flops(model, probe[:1], m)["flops_nonzero"]
            if "mask" in kinds:
                variants.append((d, "mask", pruned, nz))
            if "csr" in kinds:
                variants.append((d, "csr", to_csr(pruned), nz))
        if "compacted" in kinds:
            nm, _ = neuron_masks(model, probe, d)
            small = compact(model, nm, probe)
            assert torch.allclose(small(probe), masked(model, nm)(probe), atol=1e-4)
            variants.append((d, "compacted", small, flops(small, probe[:1])["flops_dense"]))
    rows = []
    for batch in batches:
        x = torch.randn(batch, *shape, device=device)
        nets = [net.to(device) for _, _, net, _ in variants]
        times = interleaved_latency_ms(nets, x, repeats if batch < 64 else max(3, repeats // 3), warmup)
        for (d, kind, _, nz), ms in zip(variants, times):
            ratio = dense_flops / nz
            row = {"model": name, "batch": batch, "density": d, "variant": kind, "mflops": nz / 1e6,
                   "flop_ratio": ratio, "latency_ms": ms, "speedup": times[0] / ms,
                   "speedup_per_flop_ratio": times[0] / ms / ratio}
            rows.append(row)
            print(f"{name:14s} b={batch:<4d} d={d:<4g} {kind:10s} {nz / 1e6:9.2f} MFLOPs  x{ratio:5.2f}  "
                  f"{ms:9.3f} ms  speed-up {row['speedup']:5.2f}", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    out = ["| model | batch | density | variant | MFLOPs | FLOP ratio | latency (ms) | speed-up | speed-up / FLOP ratio |",
           "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['model']} | {r['batch']} | {r['density']:g} | {r['variant']} | {r['mflops']:.2f} | "
                   f"{r['flop_ratio']:.2f} | {r['latency_ms']:.3f} | {r['speedup']:.2f} | "
                   f"{r['speedup_per_flop_ratio']:.2f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["lenet_300_100", "conv4", "resnet20", "resnet56"])
    ap.add_argument("--densities", type=float, nargs="+", default=None,
                    help="FLOP densities (1/FLOP reduction; default 1 0.5 0.2 0.1, residual networks 1 0.5 0.25)")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=None,
                    help=f"pruned networks timed against dense (default {' '.join(VARIANTS)}; residual networks: "
                         "compacted)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (CPU)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    ap.add_argument("--json", default="docs/bench_structured.json")
    ap.add_argument("--table", default=None, help="also write the Markdown table to this file")
    ap.add_argument("--update", action="store_true",
                    help="keep the --json file's rows of the models not timed now (`runs` says which run timed which)")
    args = ap.parse_args(argv)
    for d in args.densities or ():
        if not 0.0 < d <= 1.0:
            raise SystemExit(f"densities must be in (0, 1], got {d}")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    load_before = os.getloadavg()
    rows = []
    for name in args.models:
        densities = args.densities or list(DEFAULT_DENSITIES.get(name, (1.0, 0.5, 0.2, 0.1)))
        kinds = tuple(args.variants or DEFAULT_VARIANTS.get(name, VARIANTS))
        rows += bench_model(name, densities, args.batches, args.repeats, args.warmup, device, args.seed, kinds)
    meta = {"torch": torch.__version__, "device": str(device), "threads": args.threads,
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "repeats": args.repeats,
            "warmup": args.warmup, "clock": "wall time (CUDA synchronised)" if device.type == "cuda" else
            "process CPU time", "load_average_1min": {"start": load_before[0], "end": os.getloadavg()[0]},
            "flops": "multiply-accumulates per example of Linear/Conv weights (lth.structured.flops)"}
    path = Path(args.json)
    if args.update and path.exists():  # the other models' rows stay, each with the meta of the run that timed it
        old = json.loads(path.read_text())
        kept = [r for r in old["rows"] if r["model"] not in args.models]
        runs = old.get("runs", [{**old["meta"], "models": sorted({r["model"] for r in old["rows"]})}])
        runs = [{**m, "models": [x for x in m["models"] if x not in args.models]} for m in runs]
        runs = [m for m in runs if m["models"]] + [{**meta, "models": list(args.models)}]
        rows = kept + rows
    else:
        runs = [{**meta, "models": list(args.models)}]
    table = markdown(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "runs": runs, "rows": rows, "markdown": table}, indent=1) + "\n")
    if args.table:
        Path(args.table).write_text(f"Inference latency on {device} ({args.threads} thread(s), torch "
                                    f"{torch.__version__}).\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
