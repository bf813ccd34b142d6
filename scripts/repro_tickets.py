"""Lottery tickets (Frankle & Carbin 2019): IMP rewound to θ0 vs random reinit vs random mask, down to ≤ 2% density.

    python scripts/repro_tickets.py                      # MNIST-1D, 3 seeds, 19 rounds: ~15 min on 2 cores
    python scripts/repro_tickets.py --experiment lth_lenet_mnist data.root=/path/to/mnist   # the paper's LeNet

Per seed, one IMP lineage (20% of each hidden layer per round, the output layer at 10%) and, at the `--controls`
rounds, two branches on the same per-layer densities: `branch.random_mask=true` (a random mask with the ticket's
per-layer counts, rewound to θ0) and `ticket.reset=random_reinit` (the ticket's mask, fresh weights). Reruns skip
finished lineages. Writes docs/results/tickets.md (+ .png).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lth.analysis import density_report, markdown, mean_std
from lth.reproduce import Job, study_main

VARIANTS = ("ticket", "random mask", "random reinit")
CONTROLS = {"random mask": ("branch.random_mask=true", "ticket.reset=rewind"),
            "random reinit": ("ticket.reset=random_reinit",)}


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--rounds", type=int, default=None, help="IMP rounds (default 19: 1.7%% density; quick 2)")
    ap.add_argument("--controls", type=int, nargs="*", default=None,
                    help="rounds that get the control branches (default 3 6 9 11 13 15 17 19)")


def jobs(args: argparse.Namespace, out: Path) -> list[Job]:
    args.rounds = args.rounds if args.rounds is not None else (2 if args.quick else 19)
    controls = args.controls if args.controls is not None else ([2] if args.quick else [3, 6, 9, 11, 13, 15, 17, 19])
    bad = [r for r in controls if not 1 <= r <= args.rounds]
    if bad:
        raise SystemExit(f"--controls {bad}: control rounds must be within 1..{args.rounds}")
    out_jobs = []
    for s in args.seeds:
        imp = f"seed{s}/imp"
        out_jobs.append(Job(imp, (f"seed={s}", f"ticket.rounds={args.rounds}", "pruning.fraction=0.2", "pruning.output_fraction=0.1"),
                            {"variant": "ticket", "seed": s}))
        for r in controls:
            for variant, extra in CONTROLS.items():
                out_jobs.append(Job(
                    f"seed{s}/{variant.replace(' ', '_')}_r{r:02d}",
                    (f"seed={s}", "pruning.fraction=0.2", "pruning.output_fraction=0.1", f"branch.from={out / imp}", f"branch.round={r}",
                     *extra),
                    {"variant": variant, "seed": s}, after=(imp,)))
    return out_jobs


def report(df, args: argparse.Namespace):
    dense = df[(df["variant"] == "ticket") & (df["round"] == 0)]
    body, fig = density_report(df, "variant", VARIANTS,
                               "Lottery tickets: IMP rewound to θ0 vs random reinit vs random mask")
    controlled = sorted({round(100 * d, 1) for d in df[df["variant"] != "ticket"]["density"]}, reverse=True)
    parts = [
        (f"Dense network (round 0): test accuracy {mean_std(dense['test_acc'])} % at the end of training, "
        f"{mean_std(dense['early_stop_test_acc'])} % at the early-stop step "
        f"({mean_std(dense['early_stop_step'], 1, 0)})."),
        body,
        "### Ticket minus control at the same density (end of training, percentage points, paired by seed)",
        markdown(["density %", "ticket − random mask", "ticket − random reinit"], _gaps(df, controlled)),
    ]
    return "\n\n".join(parts), fig


def _gaps(df, densities):
    rows = []
    for d in densities:
        at = df[(100 * df["density"]).round(1) == d]
        ticket = at[at["variant"] == "ticket"].set_index("seed")["test_acc"]
        cells = []
        for control in ("random mask", "random reinit"):
            c = at[at["variant"] == control].set_index("seed")["test_acc"]
            cells.append(mean_std((ticket - c).dropna()))  # paired by seed
        rows.append([f"{d:.1f}", *cells])
    return rows


if __name__ == "__main__":
    study_main("tickets", "Lottery tickets (Frankle & Carbin 2019)", __doc__, jobs, report, add_args=add_args)
