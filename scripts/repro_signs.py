"""Resets and signs (Zhou et al. 2019): what the kept weights become each round, and what the pruned ones are.

    python scripts/repro_signs.py                        # MNIST-1D, 8 variants × 3 seeds: ~17 min on 2 cores
    python scripts/repro_signs.py --experiment lth_lenet_mnist data.root=/path/to/mnist

IMP lineages with the large_final criterion and the settings of scripts/repro_criteria.py (its `large_final` lineage
is this study's `rewind`, shared under the default --out). Resets that keep θ0's sign: rewind, signed_constant
(σ_l·sign θ0), signed_reinit (fresh magnitudes), signed_reshuffle; resets that lose it: random_reinit, reshuffle,
rand_signed_constant. Mask-0: pruned weights at zero (all of the above) vs frozen at θ0 (`ticket.mask0=freeze_init`,
with rewind). Writes docs/results/signs.md (+ .png).
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


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.set_defaults(out="runs/repro/zhou")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="VARIANT")


def jobs(args: argparse.Namespace, out: Path) -> list[Job]:
    return [zhou_job(s, "large_final", *VARIANTS[v], args.quick, variant=v) for v in args.variants for s in args.seeds]


def report(df, args: argparse.Namespace):
    return density_report(df, "variant", args.variants, "Resets and mask-0 actions, large_final IMP")


if __name__ == "__main__":
    study_main("signs", "Resets and signs (Zhou et al. 2019)", __doc__, jobs, report, add_args=add_args)
