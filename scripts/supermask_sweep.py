"""Supermasks of a random network: heuristic masks at θ0, edge-popup accuracy vs k per weight init, Bernoulli masks.

    python scripts/supermask_sweep.py --seeds 0 1 2 --out runs/supermask_sweep

Every run is `lth.supermask.run_supermask` on an `lth-run` config (`experiment=supermask_digits` by default; the
heuristic's source is the same model trained densely with `supermask=none`). Reruns skip finished runs, so the script
can be interrupted and restarted. Prints three Markdown tables (test accuracy %, mean ± std over seeds).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import warnings
from pathlib import Path

import torch

from lth.cli import compose_config
from lth.runner import run
from lth.supermask import run_supermask

EDGE_POPUP_INITS = {  # column → overrides
    "Kaiming normal": ["supermask.weights=init"],
    "signed Kaiming constant": ["supermask.weights=signed_kaiming_constant"],
    "signed Kaiming constant, scaled": ["supermask.weights=signed_kaiming_constant", "supermask.scale_fan=true"],
}
HEURISTICS = {
    "large_final_same_sign, signed constant": ["supermask.criterion=large_final_same_sign",
                                               "supermask.weights=signed_constant"],
    "large_final_same_sign, θ0": ["supermask.criterion=large_final_same_sign", "supermask.weights=init"],
    "large_final, signed constant": ["supermask.criterion=large_final", "supermask.weights=signed_constant"],
    "random, signed constant": ["supermask.criterion=random", "supermask.weights=signed_constant"],
}
BERNOULLI = {
    "θ0": ["supermask.weights=init"],
    "θ0, rescaled": ["supermask.weights=init", "supermask.rescale=true"],
    "signed constant": ["supermask.weights=signed_constant"],
    "signed constant, rescaled": ["supermask.weights=signed_constant", "supermask.rescale=true"],
}


def mean_std(xs: list[float]) -> str:
    """'m ± s' in percent (sample std; a single value alone)."""
    m = 100 * statistics.mean(xs)
    return f"{m:.1f} ± {100 * statistics.stdev(xs):.1f}" if len(xs) > 1 else f"{m:.1f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ks", type=float, nargs="+", default=[0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
    ap.add_argument("--densities", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3, 0.5])
    ap.add_argument("--experiment", default="supermask_digits")
    ap.add_argument("--source-steps", type=int, default=1000, help="training steps of the heuristic's dense source")
    ap.add_argument("--out", default="runs/supermask_sweep")
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--table", default=None, help="also write the tables to this file")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    out = Path(args.out)
    common = [f"experiment={args.experiment}", f"data.root={args.data_root}", *args.overrides]

    def one(folder: Path, overrides: list[str], runner=run_supermask) -> list[dict]:
        records = runner(compose_config([*common, *overrides]), folder, sinks=[])
        print(f"{folder}: " + ", ".join(f"{100 * r['test_acc']:.1f}%" for r in records), flush=True)
        return records

    edge: dict[tuple[str, float], list[float]] = {}
    heur: dict[tuple[str, float], list[float]] = {}
    bern: dict[str, list[tuple[float, float]]] = {}
    dense: list[float] = []
    for seed in args.seeds:
        s = f"seed={seed}"
        src = out / f"seed{seed}" / "dense"
        (rec,) = one(src, [s, "supermask=none", "ticket.rounds=0", f"trainer.max_steps={args.source_steps}"], run)
        dense.append(rec["test_acc"])
        dens = "[" + ",".join(str(d) for d in args.densities) + "]"
        for col, extra in HEURISTICS.items():
            folder = out / f"seed{seed}" / "heuristic" / col.replace(", ", "_").replace(" ", "_")
            recs = one(folder, [s, "supermask=heuristic", f"supermask.from={src}", f"supermask.density={dens}", *extra])
            for d, r in zip(args.densities, recs):
                heur.setdefault((col, d), []).append(r["test_acc"])
        for col, extra in EDGE_POPUP_INITS.items():
            for k in args.ks:
                if k == 1.0 and "supermask.scale_fan=true" in extra:
                    continue  # × 1/√1: the unscaled run (filled in below)
                folder = out / f"seed{seed}" / "edge_popup" / f"{col.replace(', ', '_').replace(' ', '_')}_k{k}"
                (r,) = one(folder, [s, "supermask=edge_popup", f"supermask.k={k}", *extra])
                edge.setdefault((col, k), []).append(r["test_acc"])
        for row, extra in BERNOULLI.items():
            folder = out / f"seed{seed}" / "bernoulli" / row.replace(", ", "_").replace(" ", "_")
            (r,) = one(folder, [s, "supermask=bernoulli", *extra])
            bern.setdefault(row, []).append((r["test_acc"], r["density"]))

    for (col, k), accs in list(edge.items()):
        if k == 1.0 and col == "signed Kaiming constant":
            edge[("signed Kaiming constant, scaled", k)] = accs

    def cell(d: dict, key: tuple) -> str:
        return mean_std(d[key]) if key in d else "–"

    parts = [
        f"`{args.experiment}`, seeds {args.seeds}, test accuracy % (mean ± std); "
        f"dense trained source ({args.source_steps} steps): {mean_std(dense)}"
        + (f"; overrides: {' '.join(args.overrides)}" if args.overrides else ""),
        "Heuristic supermasks at θ0 (no training), by density:",
        table(["density", *HEURISTICS], [[f"{d:g}", *(cell(heur, (c, d)) for c in HEURISTICS)] for d in args.densities]),
        "Edge-popup, accuracy vs k (fraction of weights kept):",
        table(["k", *EDGE_POPUP_INITS], [[f"{k:g}", *(cell(edge, (c, k)) for c in EDGE_POPUP_INITS)] for k in args.ks]),
        "Learned Bernoulli supermasks (expected mask σ(s) > 0.5):",
        table(["weights", "test accuracy", "density"], [
            [row, mean_std([a for a, _ in v]), f"{statistics.mean(d for _, d in v):.3f}"] for row, v in bern.items()]),
    ]
    text = "\n\n".join(parts) + "\n"
    print("\n" + text)
    if args.table:
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        Path(args.table).write_text(text)


if __name__ == "__main__":
    main()
