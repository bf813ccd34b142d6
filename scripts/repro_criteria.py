"""Mask criteria (Zhou et al. 2019): IMP with each criterion, rewound to θ0, along the same density trajectory.

    python scripts/repro_criteria.py                     # MNIST-1D, 7 criteria × 5 seeds: 48 min on 2 loaded cores
    python scripts/repro_criteria.py --experiment lth_lenet_mnist data.root=/path/to/mnist

Per criterion and seed one lineage: 7 rounds of 50% of each hidden layer (output layer 25%), 1,000 steps each
(MNIST-1D's validation loss bottoms out near step 200–300), density 100% → 1.0%. The lineage of `large_final` is the
one scripts/repro_signs.py uses for `rewind` (same folder under the shared default --out, trained once). Each
criterion is compared with `random` at the same density, paired by seed, in the direction Zhou et al. found: the
criteria that keep large (or growing) weights above random, the two that keep small weights below it.
Writes docs/results/criteria.md (+ .png).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lth.analysis import density_report
from lth.reproduce import Job, study_main

CONTROL = "random"
# Zhou et al. 2019, Fig. 2: +1 above the random mask, −1 below it
DIRECTION = {"large_final": 1, "magnitude_increase": 1, "movement": 1, "large_init_large_final": 1, "small_final": -1,
             "small_init_small_final": -1}
CRITERIA = ("large_final", "magnitude_increase", "movement", "large_init_large_final", "random", "small_final",
            "small_init_small_final")
# Zhou's setting here: 50% per round of each hidden layer, the output layer at half that rate
SETTINGS = ("ticket.rounds=7", "pruning.fraction=0.5", "pruning.output_fraction=0.25", "trainer.max_steps=1000")
QUICK_SETTINGS = ("ticket.rounds=2", "pruning.fraction=0.5", "pruning.output_fraction=0.25")


def zhou_job(seed: int, rule: str, reset: str, mask0: str, quick: bool, lr: float | None = None, **labels) -> Job:
    """One IMP lineage (criterion `rule`; `lr`: another Adam learning rate than the preset's) of the criteria, signs
    and criteria-lr studies; shared folders, so shared ones run once."""
    return Job(f"{rule}_{reset}_{mask0}{'' if lr is None else f'_lr{lr:g}'}/seed{seed}",
               (f"seed={seed}", f"pruning.criterion={rule}", f"ticket.reset={reset}", f"ticket.mask0={mask0}",
                *(QUICK_SETTINGS if quick else SETTINGS), *(() if lr is None else (f"optimizer.lr={lr:g}",))),
               {"seed": seed, **labels})


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.set_defaults(out="runs/repro/zhou")
    ap.add_argument("--criteria", nargs="+", default=list(CRITERIA))


def jobs(args: argparse.Namespace, out: Path) -> list[Job]:
    return [zhou_job(s, c, "rewind", "zero", args.quick, criterion=c) for c in args.criteria for s in args.seeds]


def report(df, args: argparse.Namespace):
    control = CONTROL if CONTROL in args.criteria else None
    return density_report(df, "criterion", args.criteria, "Mask criteria, IMP rewound to θ0", control=control,
                          direction=DIRECTION)


if __name__ == "__main__":
    study_main("criteria", "Mask criteria (Zhou et al. 2019)", __doc__, jobs, report, add_args=add_args)
