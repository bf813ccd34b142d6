"""Late rewinding (Frankle et al. 2020): at a high learning rate, rewinding to θ0 is no better than a random reinit,
and rewinding to θk, k early in training, restores the ticket.

    python scripts/repro_late_rewind.py --seeds 0 1 2    # MNIST-1D CNN down to 3.9%, 15 lineages
    python scripts/repro_late_rewind.py optimizer.lr=0.01 --out runs/repro/late_rewind_lr001   # a low lr

`experiment=late_rewind_cnn1d_mnist1d`: MNIST-1D's CNN, SGD lr 0.1 with momentum 0.9 and no warm-up, T steps per
round (`--steps`, default 750: half the preset's 1,500; the dense network's validation loss is lowest near step 850).
Per seed, IMP lineages rewound to θ0 and to θk for each --rewind-steps k (default 38: 5% of T), and random-reinit
branches of the θ0 lineage's masks at the --controls rounds. A θk round trains the remaining T − k steps with the lr
schedule resuming at step k (`ticket.rewind_schedule=resume`, the default; the page says which schedule its rounds
used). To reach 5% density in few rounds a round removes 59.04% of each conv layer and 34.39% of the output layer
(--fraction, --output-fraction: four of the preset's 20% / 10% steps at once), 5 rounds (density 100% → 3.9%).
Duration: 6 rounds per lineage, 39 rounds of 750 steps for three seeds (~9 s each on one idle thread). On CIFAR-10
where the data is present: --experiment with `model=resnet20 data=cifar10 data.root=...` and the open_lth schedule
(see REFERENCES in the README). Writes docs/results/late_rewind.md (+ .png).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lth.analysis import density_report, paired_grid
from lth.reproduce import Job, study_main


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--steps", type=int, default=750,
                    help="training steps T of every round (preset 1500; not in --quick)")
    ap.add_argument("--rewind-steps", type=int, nargs="+", default=None,
                    help="k of θk (default 38: 5%% of T; quick 5)")
    ap.add_argument("--rounds", type=int, default=None, help="IMP rounds (default 5: density 3.9%%; quick 2)")
    ap.add_argument("--fraction", type=float, default=0.5904,
                    help="share of each conv layer pruned per round (0.5904: four of the preset's 20%% steps at once)")
    ap.add_argument("--output-fraction", type=float, default=0.3439,
                    help="share of the output layer pruned per round (0.3439: four of the preset's 10%% steps)")
    ap.add_argument("--controls", type=int, nargs="+", default=None,
                    help="rounds of the θ0 lineage that get a random-reinit branch (default 2 4 5; quick 2)")


def _label(k: int) -> str:
    return "rewind to θ0" if k == 0 else f"rewind to θk, k={k}"


def jobs(args: argparse.Namespace, out: Path) -> list[Job]:
    args.rewind_steps = args.rewind_steps or ([5] if args.quick else [38])
    args.rounds = args.rounds if args.rounds is not None else (2 if args.quick else 5)
    controls = args.controls or ([2] if args.quick else [2, 4, 5])
    bad = [r for r in controls if not 1 <= r <= args.rounds]
    if bad:
        raise SystemExit(f"--controls {bad}: control rounds must be within 1..{args.rounds}")
    schedule = (*(() if args.quick else (f"trainer.max_steps={args.steps}",)), f"ticket.rounds={args.rounds}",
                f"pruning.fraction={args.fraction}", f"pruning.output_fraction={args.output_fraction}")
    args.variants = [_label(0), *(_label(k) for k in args.rewind_steps), "random reinit"]
    out_jobs = []
    for s in args.seeds:
        for k in [0, *args.rewind_steps]:
            out_jobs.append(Job(f"seed{s}/rewind_k{k}", (f"seed={s}", f"ticket.rewind_step={k}", *schedule),
                                {"variant": _label(k), "seed": s, "k": k}))
        for r in controls:
            out_jobs.append(Job(f"seed{s}/random_reinit_r{r:02d}",
                                (f"seed={s}", f"branch.from={out / f'seed{s}/rewind_k0'}", f"branch.round={r}",
                                 "ticket.reset=random_reinit", *schedule),
                                {"variant": "random reinit", "seed": s}, after=(f"seed{s}/rewind_k0",)))
    return out_jobs


def schedule_note(df, args: argparse.Namespace) -> str:
    """Which schedule the θk rounds trained on, from their configs and records: `ticket.rewind_schedule` and the
    rounds' steps and schedule start."""
    notes = []
    for k in args.rewind_steps:
        rows = df[(df["variant"] == _label(k)) & (df["round"] > 0)]
        if rows.empty:
            continue
        schedules = sorted({_config(Path(args.out) / f)["ticket"]["rewind_schedule"] for f in rows["folder"].unique()})
        steps = sorted({int(x) for x in rows["train_steps"]})
        starts = sorted({int(x) for x in (rows["schedule_start"].fillna(0) if "schedule_start" in rows else [0])})
        notes.append(f"k = {k}: `ticket.rewind_schedule={'/'.join(schedules)}`, every pruned round trained "
                     f"{'/'.join(map(str, steps))} steps with its lr schedule starting at step "
                     f"{'/'.join(map(str, starts))} of round 0's")
    dense = sorted({int(x) for x in df[df["round"] == 0]["train_steps"]})
    return (f"Round 0 trained T = {'/'.join(map(str, dense))} steps. Rounds rewound to θk: " + "; ".join(notes)
            + ".") if notes else ""


def _config(folder: Path) -> dict:
    import yaml

    return yaml.safe_load((folder / "config.yaml").read_text())


def report(df, args: argparse.Namespace):
    body, fig = density_report(df, "variant", args.variants, "Rewinding to θ0 vs θk vs random reinit")
    df = df.assign(**{"density %": (100 * df["density"]).round(1)})
    pct = lambda d: f"{d:.1f}"
    rewound, theta_k = args.variants[:-1], args.variants[1:-1]
    controlled = df[df["density %"].isin(set(df[df["variant"] == "random reinit"]["density %"]))]
    tables = []
    for metric, what in (("test_acc", "end of training"), ("early_stop_test_acc", "early stop")):
        tables += [
            f"### Rewound minus random reinit at the same density, {what} (percentage points, paired by seed)",
            paired_grid(controlled, "density %", "variant", metric, "random reinit", dict.fromkeys(theta_k, 1),
                        row_fmt=pct, cols=rewound),
            f"### θk minus θ0 at the same density, {what} (percentage points, paired by seed)",
            paired_grid(df[df["variant"].isin(rewound) & (df["round"] > 0)], "density %", "variant", metric,
                        _label(0), 1, row_fmt=pct, cols=rewound),
        ]
    return "\n\n".join([
        schedule_note(df, args),
        body,
        ("Paired differences: mean ± std over seeds, the 95% interval, and the verdict where Frankle et al. give a "
         "direction (θk above random reinit and above θ0): *agree* only where the interval excludes 0 on that side. "
         "Their claim for θ0 at a high lr is *no* difference from random reinit, so its column has no verdict. The "
         "random reinit keeps the θ0 lineage's mask, so only the θ0 column compares the same mask."),
        *tables,
    ]), fig


if __name__ == "__main__":
    study_main("late_rewind", "Late rewinding (Frankle et al. 2020)", __doc__, jobs, report,
               experiment="late_rewind_cnn1d_mnist1d", add_args=add_args)
