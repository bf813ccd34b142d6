"""Mask criteria at a small learning rate: does large_init_large_final join large_final when the weights stay near θ0?

    python scripts/repro_criteria_lr.py                  # MNIST-1D, 5 seeds
    python scripts/repro_criteria_lr.py --lrs 0.02 0.001 --seeds 0 1 2

The criteria study (scripts/repro_criteria.py) finds large_init_large_final barely above random at 1–2% density with
Adam 2e-2, and explains it by the weights travelling far from θ0 at that learning rate, so that |θ0| says little about
a weight. This study tests the explanation: the pair large_final / large_init_large_final, IMP rewound to θ0 with the
criteria study's settings (its lineages at the preset's 2e-2 are shared under the default --out), at each of `--lrs`.
Per lr it reports the accuracies, the paired difference large_final − large_init_large_final, and how far training
moves the kept weights: ‖(θT − θ0)⊙m‖ / ‖θ0⊙m‖ over all prunable weights, per round. Writes
docs/results/criteria_lr.md (+ .png).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from repro_criteria import zhou_job

from lth.analysis import density_report, markdown, mean_std, paired_grid
from lth.record import RunFolder
from lth.reproduce import Job, study_main

PAIR = ("large_final", "large_init_large_final")
PRESET_LR = 2e-2  # experiment=lth_mnist1d's Adam learning rate


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.set_defaults(out="runs/repro/zhou")
    ap.add_argument("--lrs", type=float, nargs="+", default=[PRESET_LR, 2e-3], help="Adam learning rates")
    ap.add_argument("--at-preset-lr", nargs="+", default=list(PAIR), choices=PAIR,
                    help="the criteria run at the preset's lr 2e-2 (the criteria study has both there)")


def label(criterion: str, lr: float) -> str:
    return f"{criterion}, lr {lr:g}"


def jobs(args: argparse.Namespace, out: Path) -> list[Job]:
    # the smaller learning rates first; at the preset's, the criteria of --at-preset-lr
    return [zhou_job(s, c, "rewind", "zero", args.quick, None if lr == PRESET_LR else lr, criterion=c, learning_rate=lr,
                     variant=label(c, lr)) for lr in sorted(args.lrs) for c in PAIR for s in args.seeds
            if lr != PRESET_LR or c in args.at_preset_lr]


def movement(folder: Path, r: int) -> float:
    """‖(θT − θ0)⊙m‖ / ‖θ0⊙m‖ over the prunable weights of round `r` (m: the round's mask)."""
    run = RunFolder(folder, writer=False)
    init, trained, mask = run.load_snapshots()["snapshots"]["init"], run.load_trained(r), run.load_mask(r)
    moved = sum(float(((trained[n] - init[n]) * m).pow(2).sum()) for n, m in mask.items())
    start = sum(float((init[n] * m).pow(2).sum()) for n, m in mask.items())
    return (moved / start) ** 0.5


def report(df, args: argparse.Namespace):
    out = Path(args.out).resolve()
    df = df.assign(movement=[movement(out / f, r) for f, r in zip(df["folder"], df["round"])])
    order = [v for v in (label(c, lr) for lr in args.lrs for c in PAIR) if v in set(df["variant"])]
    body, fig = density_report(df, "variant", order, "large_final vs large_init_large_final at each learning rate")
    dens = (100 * df["density"]).round(1)
    rows = [[f"{d:.1f}", *(mean_std(df[(dens == d) & (df["variant"] == v)]["movement"], 1, 2) for v in order)]
            for d in sorted(set(dens), reverse=True)]
    parts = [body,
             "### How far training moves the kept weights: ‖(θT − θ0)⊙m‖ / ‖θ0⊙m‖ (mean ± std over seeds)",
             markdown(["density %", *order], rows),
             ("### large_init_large_final minus large_final at each learning rate (percentage points, paired by seed; "
              "Zhou et al. put both in the top group, so no direction and no verdict: the 95% interval is shown)")]
    pruned = df[df["round"] > 0].assign(**{"density %": (100 * df["density"]).round(1)})
    for lr in args.lrs:
        a, b = label(PAIR[1], lr), label(PAIR[0], lr)
        if {a, b} <= set(df["variant"]):
            parts += [f"**lr {lr:g}**, end of training / early-stop step:",
                      paired_grid(pruned, "density %", "variant", "test_acc", b, {}, row_fmt=lambda d: f"{d:.1f}",
                                  cols=[a]),
                      paired_grid(pruned, "density %", "variant", "early_stop_test_acc", b, {},
                                  row_fmt=lambda d: f"{d:.1f}", cols=[a])]
    return "\n\n".join(parts), fig


if __name__ == "__main__":
    study_main("criteria_lr", "Mask criteria at a small learning rate", __doc__, jobs, report, add_args=add_args)
