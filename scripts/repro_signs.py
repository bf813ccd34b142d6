"""Resets and signs (Zhou et al. 2019): what the kept weights become, on the same masks, and what the pruned ones are.

    python scripts/repro_signs.py                        # MNIST-1D, 5 seeds
    python scripts/repro_signs.py --experiment lth_mnist1d data.root=/path/to/mnist1d --seeds 0 1 2

Per seed one IMP lineage with the large_final criterion, rewound to θ0 (the settings of scripts/repro_criteria.py:
its `large_final` lineage, shared under the default --out). Every other reset is a BRANCH of that lineage's masks at
the rounds that land on 6.7%, 1.9% and 1.0% density (`branch.from=<lineage> branch.round=R ticket.reset=...`), so the
mask is the same for every reset and only the reset differs; a branch keeps its lineage's seed, so the comparison with
rewinding is paired by seed. Resets that keep θ0's sign: signed_constant (σ_l·sign θ0), signed_reinit (fresh
magnitudes), signed_reshuffle; resets that lose it: random_reinit, reshuffle, rand_signed_constant. Mask-0: pruned
weights frozen at θ0 (`ticket.mask0=freeze_init`, with rewind) against zero (all the others).
Writes docs/results/signs.md (+ .png).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from repro_criteria import zhou_job

from lth.analysis import density_report
from lth.reproduce import Job, study_main

VARIANTS = {  # label → (reset, mask0)
    "rewind": ("rewind", "zero"),
    "signed_constant": ("signed_constant", "zero"),
    "signed_reinit": ("signed_reinit", "zero"),
    "signed_reshuffle": ("signed_reshuffle", "zero"),
    "random_reinit": ("random_reinit", "zero"),
    "reshuffle": ("reshuffle", "zero"),
    "rand_signed_constant": ("rand_signed_constant", "zero"),
    "rewind, pruned frozen at θ0": ("rewind", "freeze_init"),
}
# Zhou et al.'s claim for reset − rewind: below it (−1) for a reset that loses θ0's sign and for pruned weights frozen
# at θ0; a sign-keeping reset ≈ rewind (no direction: its paired interval is shown without a verdict)
DIRECTION = {"random_reinit": -1, "reshuffle": -1, "rand_signed_constant": -1, "rewind, pruned frozen at θ0": -1}
ROUNDS = (4, 6, 7)  # 50% of each hidden layer (25% of the output layer) per round: 6.7%, 1.9%, 1.0% density
QUICK_ROUNDS = (1, 2)


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.set_defaults(out="runs/repro/zhou")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="VARIANT")
    ap.add_argument("--rounds", type=int, nargs="+", default=None,
                    help="lineage rounds the resets branch from (default 4 6 7: 6.7%%, 1.9%%, 1.0%% density; quick 1 2)")


def _folder(variant: str) -> str:
    reset, mask0 = VARIANTS[variant]
    return f"signs/{reset}_{mask0}"


def jobs(args: argparse.Namespace, out: Path) -> list[Job]:
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS)
    args.rounds = rounds
    out_jobs = []
    for s in args.seeds:
        lineage = zhou_job(s, "large_final", "rewind", "zero", args.quick, variant="rewind")
        out_jobs.append(lineage)
        for v in args.variants:
            if v == "rewind":
                continue
            reset, mask0 = VARIANTS[v]
            for r in rounds:
                out_jobs.append(Job(f"{_folder(v)}/seed{s}_r{r:02d}",
                                    (*lineage.overrides, f"branch.from={out / lineage.folder}", f"branch.round={r}",
                                     f"ticket.reset={reset}", f"ticket.mask0={mask0}"),
                                    {"seed": s, "variant": v}, after=(lineage.folder,)))
    return out_jobs


def report(df, args: argparse.Namespace):
    # the lineage's rows at the branched rounds (its round 0 is the dense network every branch descends from)
    lineage = df["variant"] == "rewind"
    df = df[~lineage | df["round"].isin([0, *args.rounds])]
    variants = ["rewind", *(v for v in args.variants if v != "rewind")]
    body, fig = density_report(df, "variant", variants, "Resets and mask-0 actions on the same large_final masks",
                               control="rewind", direction=DIRECTION)
    note = ("Verdicts against Zhou et al.: a reset that loses θ0's sign, and pruned weights frozen at θ0, below "
            "rewinding (`agree` where the paired 95% interval lies below 0); the sign-keeping resets ≈ rewinding "
            "(no verdict: their interval is shown).")
    return f"{note}\n\n{body}", fig


if __name__ == "__main__":
    study_main("signs", "Resets and signs (Zhou et al. 2019)", __doc__, jobs, report, add_args=add_args)
