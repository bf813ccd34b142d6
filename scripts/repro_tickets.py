"""Lottery tickets (Frankle & Carbin 2019) in two setups: ours (experiment=lth_mnist1d) and the MNIST-1D notebook's own
(experiment=lth_mnist1d_notebook), each IMP rewound to θ0 against a random mask with the ticket's per-layer counts.

    python scripts/repro_tickets.py                      # MNIST-1D, both setups, 5 seeds
    python scripts/repro_tickets.py --seeds 0 1 2 --rounds 5 --controls 3 4 5

Per setup and seed, one IMP lineage (large_final, `--fraction` of each layer's remaining weights per round) and, at the
`--controls` rounds, a branch of it with a fresh random mask of the same per-layer counts, rewound to θ0
(`branch.random_mask=true`: as the notebook's random control, a new random mask for that density on θ0). A branch
keeps its lineage's seed, so ticket − random mask is paired by seed. The setups differ where the notebook differs
from ours (see lth/conf/experiment/lth_mnist1d_notebook.yaml): ours prunes weights only, the output layer at half the
rate, Glorot-normal weights with zero biases, 3,500 training examples (500 held out for early stop); the notebook's
prunes weights and biases together, the output layer at the hidden rate, PyTorch's default uniform init with biases,
all 4,000 examples. Both report the test accuracy at the end of training and the best over the evaluations (every
100 steps: the notebook prints both). Writes docs/results/tickets.md (+ .png).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from lth.analysis import _pyplot, density_report, grid, mean_std, paired_grid, plot_vs_density, subplots
from lth.record import RunFolder
from lth.reproduce import Job, parser, resolve_outputs, run_study

SETUPS = {  # name → (preset, preset with --quick, overrides of its own)
    "ours": ("lth_mnist1d", "smoke", ("output_half",)),
    "notebook": ("lth_mnist1d_notebook", "smoke", ("pruning.biases=true", "data.val_size=0")),
}


def _setup_overrides(name: str, args: argparse.Namespace) -> tuple[str, ...]:
    preset, quick, own = SETUPS[name]
    if name == "ours" and args.experiment:
        preset = quick = args.experiment
    out = [f"experiment={quick if args.quick else preset}", f"pruning.fraction={args.fraction:g}"]
    for o in own:
        if o == "output_half":
            out.append(f"pruning.output_fraction={args.fraction / 2:g}")
        elif args.quick:  # the smoke preset gets what the notebook preset sets
            out.append(o)
    return tuple(out)


def jobs(args: argparse.Namespace, out: Path) -> list[Job]:
    args.rounds = args.rounds if args.rounds is not None else (2 if args.quick else 5)
    controls = args.controls if args.controls is not None else ([2] if args.quick else [3, 4, 5])
    bad = [r for r in controls if not 1 <= r <= args.rounds]
    if bad:
        raise SystemExit(f"--controls {bad}: control rounds must be within 1..{args.rounds}")
    out_jobs = []
    for setup in args.setups:
        common = _setup_overrides(setup, args)
        for s in args.seeds:
            imp = f"{setup}/seed{s}/imp"
            out_jobs.append(Job(imp, (*common, f"seed={s}", f"ticket.rounds={args.rounds}"),
                                {"setup": setup, "variant": f"{setup}: ticket", "seed": s}))
            for r in controls:
                out_jobs.append(Job(
                    f"{setup}/seed{s}/random_mask_r{r:02d}",
                    (*common, f"seed={s}", f"branch.from={out / imp}", f"branch.round={r}", "branch.random_mask=true",
                     "ticket.reset=rewind"),
                    {"setup": setup, "variant": f"{setup}: random mask", "seed": s}, after=(imp,)))
    return out_jobs


def best_test_acc(folder: Path, r: int) -> float:
    """The best test accuracy over round `r`'s evaluations (its CSV log)."""
    log = pd.read_csv(RunFolder(folder, writer=False).round_dir(r) / "csv" / "metrics.csv")
    return float(log["test/acc"].max())


def report(df, args: argparse.Namespace):
    out = Path(args.out).resolve()
    df = df.assign(best_test_acc=[best_test_acc(out / f, r) for f, r in zip(df["folder"], df["round"])])
    parts = []
    for setup in args.setups:
        sub = df[df["setup"] == setup]
        ticket, control = f"{setup}: ticket", f"{setup}: random mask"
        dense = sub[(sub["variant"] == ticket) & (sub["round"] == 0)]
        body, fig = density_report(sub, "variant", [ticket, control], "", control=ticket, direction={control: -1})
        _pyplot().close(fig)
        best = sub.assign(test_acc=sub["best_test_acc"], **{"density %": (100 * sub["density"]).round(1)})
        paired = best[best["density %"].isin(best[best["variant"] == control]["density %"])]
        preset = _setup_overrides(setup, args)[0]
        parts += [f"## {setup}: `{preset}`",
                  (f"Dense network (round 0): test accuracy {mean_std(dense['test_acc'])} % at the end of training, "
                   f"best over the evaluations {mean_std(dense['best_test_acc'])} %."),
                  body,
                  "### Best test accuracy over the evaluations (every 100 steps; the notebook prints it) (%)",
                  grid(best, "density %", "variant", "test_acc", lambda d: f"{d:.1f}", [ticket, control]),
                  (f"### Minus {ticket} at the same density, paired by seed (best over the evaluations, percentage "
                   "points; agree: the 95% interval excludes 0 in the expected direction)"),
                  paired_grid(paired, "density %", "variant", "test_acc", ticket, {control: -1},
                              row_fmt=lambda d: f"{d:.1f}", cols=[control])]
    fig, axes = subplots(2, width=4.6)
    order = [f"{s}: {v}" for s in args.setups for v in ("ticket", "random mask")]
    for ax, metric, label in ((axes[0], "test_acc", "test accuracy, end of training (%)"),
                              (axes[1], "best_test_acc", "best test accuracy over the evaluations (%)")):
        plot_vs_density(ax, df, metric, "variant", order, at="density", scale=100)
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.suptitle("Tickets vs a random mask: ours and the MNIST-1D notebook's setup (mean ± std over seeds)")
    return "\n\n".join(parts), fig


def main(argv=None):
    ap = parser("tickets", __doc__)
    ap.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    ap.add_argument("--experiment", default=None, help="the preset of the `ours` setup (default lth_mnist1d; --quick: "
                    "smoke), e.g. lth_lenet_mnist with --setups ours")
    ap.add_argument("--fraction", type=float, default=0.5, help="share of each layer's remaining weights per round "
                    "(ours: the output layer at half of it)")
    ap.add_argument("--rounds", type=int, default=None, help="IMP rounds (default 5: 3.1%% density; quick 2)")
    ap.add_argument("--controls", type=int, nargs="*", default=None,
                    help="rounds that get a random-mask branch (default 3 4 5)")
    args = ap.parse_args(argv)
    resolve_outputs(ap, args, "tickets")
    common = [f"data.root={args.data_root}",
              *(("trainer.max_steps=20", "trainer.eval_every=10", "trainer.checkpoint_every=0") if args.quick else ()),
              *args.overrides]
    return run_study("tickets", "Lottery tickets (Frankle & Carbin 2019)", args, common, jobs, report)


if __name__ == "__main__":
    main()
