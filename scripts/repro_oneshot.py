"""One-shot vs iterative pruning (Frankle & Carbin 2019) at the same per-layer densities, both rewound to θ0.

    python scripts/repro_oneshot.py                      # MNIST-1D, 5 seeds: 69 min on one loaded core
    python scripts/repro_oneshot.py --experiment lth_lenet_mnist data.root=/path/to/mnist

Iterative: the IMP lineages of scripts/repro_tickets.py (20% of each hidden layer per round, output layer 10%); the
default --out is that script's, so its finished lineages are reused (else they are trained here). One-shot: per seed
and per compared round r, one lineage that prunes once from the dense network's round 0 with the fractions that leave
the same per-layer densities as r IMP rounds: 1 − 0.8^r of each hidden layer, 1 − 0.9^r of the output layer.
Writes docs/results/oneshot.md (+ .png).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lth.analysis import density_report, markdown, paired_cell
from lth.reproduce import Job, study_main

VARIANTS = ("iterative", "one-shot")


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.set_defaults(out="runs/repro/tickets")
    ap.add_argument("--compare", type=int, nargs="+", default=None,
                    help="IMP rounds whose densities one-shot pruning reaches (default 3 6 9 13 16 19; quick 1 2)")


def jobs(args: argparse.Namespace, out: Path) -> list[Job]:
    compare = args.compare or ([1, 2] if args.quick else [3, 6, 9, 13, 16, 19])
    rounds = 2 if args.quick else max(19, *compare)
    out_jobs = []
    for s in args.seeds:
        out_jobs.append(Job(f"seed{s}/imp", (f"seed={s}", f"ticket.rounds={rounds}", "pruning.fraction=0.2", "pruning.output_fraction=0.1"),
                            {"variant": "iterative", "seed": s}))
        for r in compare:
            out_jobs.append(Job(
                f"seed{s}/oneshot_r{r:02d}",
                (f"seed={s}", "ticket.rounds=1", f"pruning.fraction={1 - 0.8 ** r:.10g}",
                 f"pruning.output_fraction={1 - 0.9 ** r:.10g}"),
                {"variant": "one-shot", "seed": s, "imp_round": r}))
    args.compare = compare
    return out_jobs


def report(df, args: argparse.Namespace):
    # one-shot round 1 sits at IMP round r's per-layer densities (within rounding of the per-round counts)
    df = df[(df["variant"] == "iterative") & df["round"].isin([0, *args.compare])
            | (df["variant"] == "one-shot") & (df["round"] == 1)].copy()
    df.loc[df["variant"] == "iterative", "imp_round"] = df["round"]
    imp_density = df[df["variant"] == "iterative"].groupby("imp_round")["density"].first()
    df["density"] = df["imp_round"].map(imp_density)
    body, fig = density_report(df, "variant", VARIANTS, "One-shot vs iterative pruning, rewound to θ0")
    gaps = []
    for r in args.compare:
        at = df[df["imp_round"] == r]
        it, one = at[at["variant"] == "iterative"], at[at["variant"] == "one-shot"]
        gaps.append([f"{100 * imp_density[r]:.1f}", r,
                     *(paired_cell(it, one, metric, direction=+1) for metric in ("test_acc", "early_stop_test_acc"))])
    return "\n\n".join([
        body,
        ("### Iterative minus one-shot (percentage points, paired by seed: mean ± std, 95% interval; agree: the "
         "interval lies above 0, Frankle & Carbin's direction)"),
        markdown(["density %", "IMP rounds", "end of training", "early stop"], gaps),
    ]), fig


if __name__ == "__main__":
    study_main("oneshot", "One-shot vs iterative pruning", __doc__, jobs, report, add_args=add_args)
