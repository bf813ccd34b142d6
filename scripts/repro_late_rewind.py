"""Late rewinding (Frankle et al. 2020): at a high learning rate, rewinding to θ0 is no better than a random reinit,
and rewinding to θk, k early in training, restores the ticket.

    python scripts/repro_late_rewind.py                  # MNIST-1D CNN, 3 seeds: ~12 min on 2 cores
    python scripts/repro_late_rewind.py --experiment late_rewind_cnn1d_mnist1d optimizer.lr=0.01   # a low lr

`experiment=late_rewind_cnn1d_mnist1d`: MNIST-1D's CNN, SGD lr 0.1 with momentum 0.9 and no warm-up, 1,500 steps per
round, 20% of each layer per round (output layer 10%), 8 rounds (density 100% → 17%). Per seed, IMP lineages
rewound to θ0 and to θk for each --rewind-steps k (default 15 and 75: 1% and 5% of training), and random-reinit
branches of the θ0 lineage's masks at the --controls rounds. On CIFAR-10 where the data is present: --experiment
with `model=resnet20 data=cifar10 data.root=...` and the open_lth schedule (see REFERENCES in the README).
Writes docs/results/late_rewind.md (+ .png).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lth.analysis import density_report, markdown, mean_std
from lth.reproduce import Job, study_main


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--rewind-steps", type=int, nargs="+", default=None, help="k of θk (default 15 75; quick 5)")
    ap.add_argument("--controls", type=int, nargs="+", default=None,
                    help="rounds of the θ0 lineage that get a random-reinit branch (default 2 4 6 8; quick 2)")


def _label(k: int) -> str:
    return "rewind to θ0" if k == 0 else f"rewind to θk, k={k}"


def jobs(args: argparse.Namespace, out: Path) -> list[Job]:
    args.rewind_steps = args.rewind_steps or ([5] if args.quick else [15, 75])
    controls = args.controls or ([2] if args.quick else [2, 4, 6, 8])
    rounds = ("ticket.rounds=2",) if args.quick else ()
    args.variants = [_label(0), *(_label(k) for k in args.rewind_steps), "random reinit"]
    out_jobs = []
    for s in args.seeds:
        for k in [0, *args.rewind_steps]:
            out_jobs.append(Job(f"seed{s}/rewind_k{k}", (f"seed={s}", f"ticket.rewind_step={k}", *rounds),
                                {"variant": _label(k), "seed": s, "k": k}))
        for r in controls:
            out_jobs.append(Job(f"seed{s}/random_reinit_r{r:02d}",
                                (f"seed={s}", f"branch.from={out / f'seed{s}/rewind_k0'}", f"branch.round={r}",
                                 "ticket.reset=random_reinit", *rounds),
                                {"variant": "random reinit", "seed": s}, after=(f"seed{s}/rewind_k0",)))
    return out_jobs


def report(df, args: argparse.Namespace):
    body, fig = density_report(df, "variant", args.variants, "Rewinding to θ0 vs θk vs random reinit, lr 0.1")
    controlled = sorted({round(d, 6) for d in df[df["variant"] == "random reinit"]["density"]}, reverse=True)
    rows = []
    for d in controlled:
        at = df[df["density"].round(6) == d]
        reinit = at[at["variant"] == "random reinit"].set_index("seed")["test_acc"]
        cells = [mean_std((at[at["variant"] == v].set_index("seed")["test_acc"] - reinit).dropna())
                 for v in args.variants[:-1]]
        rows.append([f"{100 * d:.1f}", *cells])
    return "\n\n".join([
        body,
        ("### Rewound minus random reinit at the same density (end of training, percentage points, paired by seed; "
        "the random reinit keeps the θ0 ticket's mask, so only the θ0 column compares the same mask)"),
        markdown(["density %", *args.variants[:-1]], rows),
    ]), fig


if __name__ == "__main__":
    study_main("late_rewind", "Late rewinding (Frankle et al. 2020)", __doc__, jobs, report,
               experiment="late_rewind_cnn1d_mnist1d", add_args=add_args)
