"""Pruning at initialisation (SNIP, GraSP, SynFlow, magnitude at init, random) vs IMP tickets and gradual magnitude
pruning, and the "missing the mark" sanity checks (Frankle et al. 2021).

    python scripts/repro_pruning_at_init.py              # MNIST-1D MLP and CNN + digits, 5 seeds: 24 min on 2 cores
    python scripts/repro_pruning_at_init.py --quick --seeds 0    # seconds: checks the pipeline, not the claim

Per network (pai_mlp_mnist1d, pai_digits, pai_cnn1d_mnist1d presets; --networks chooses) and seed:
- one pruning-at-init run per criterion and density 10^(−r/2), r = 2..6 (10%, 3.2%, 1%, 0.32%, 0.1% of the weights),
  one global threshold, SynFlow over 100 iterations, SNIP and GraSP on one training batch (GraSP at temperature 200);
- one IMP lineage (large_final, global, rewound to θ0) of 6 rounds of 1 − 0.001^(1/6) = 68.4% of the remaining
  weights, so that its rounds 2..6 sit at the same densities (IMP to 0.1% at the LTH's 20% per round would take 31
  rounds; this larger per-round fraction is what the study can afford);
- gradual magnitude pruning (Zhu & Gupta, the `gradual` kind, GMP_PRESETS) to the same final densities, one run each;
- the sanity checks shuffle / invert / reinit as branches of the MLP's SynFlow masks and IMP tickets at 3.2% and 0.32%.
Every training is 150 steps on MNIST-1D, 200 on digits (`--steps`), with the preset's optimizer; collapsed masks are
recorded (`pruning.allow_collapse=true`), not refused, so their chance accuracy shows. Writes docs/results/pruning_at_init.md
(+ .png) at the default sizes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lth.analysis import markdown, mean_std, paired_cell, percent_log_axis, subplots
from lth.reproduce import Job, parser, resolve_outputs, run_study

NAME = "pruning_at_init"
TITLE = "Pruning at initialisation vs IMP and GMP"
NETWORKS = {"mlp_mnist1d": "pai_mlp_mnist1d", "cnn1d_mnist1d": "pai_cnn1d_mnist1d", "digits": "pai_digits"}
STEPS = {"mlp_mnist1d": 150, "cnn1d_mnist1d": 150, "digits": 200}  # training steps of every run, per network
DEFAULT_NETWORKS = ("mlp_mnist1d", "digits", "cnn1d_mnist1d")
GMP_PRESETS = {"mlp_mnist1d": "gmp_mlp_mnist1d", "cnn1d_mnist1d": "gmp_cnn1d_mnist1d", "digits": "gmp_digits"}
AT_INIT = ("synflow", "snip", "grasp", "large_init", "random")
METHODS = ("imp", "gmp", *AT_INIT)
POWERS = (2, 3, 4, 5, 6)  # density 10^(−r/2)
IMP_ROUNDS = 6
SANITY = ("shuffle", "invert", "reinit")
ABLATION_NETWORK = "mlp_mnist1d"
ABLATION_POWERS = (3, 5)
ABLATION_SOURCES = ("synflow", "imp")
CONTROL = "random"  # every method is compared with a random mask of the same density (Frankle et al. 2021's baseline)
# Frankle et al. 2021: the ablations leave pruning-at-init accuracy unchanged (no direction to test), and lower IMP's
SANITY_DIRECTION = {"imp": -1}


def nominal(r: int) -> float:
    """Density 10^(−r/2)."""
    return 10 ** (-r / 2)


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--steps", type=int, default=None,
                    help=f"training steps of every run (default per network {STEPS}; quick: 20)")
    ap.add_argument("--networks", nargs="+", default=None, choices=list(NETWORKS),
                    help=f"networks (default: {' '.join(DEFAULT_NETWORKS)}; quick: digits)")


def jobs(args: argparse.Namespace, out: Path) -> list[Job]:
    """The study's lineages: pruning at init, IMP, GMP (when available) and the sanity branches."""
    quick = args.quick
    nets = args.networks or (["digits"] if quick else list(DEFAULT_NETWORKS))
    powers = (2,) if quick else POWERS
    ablation_net = nets[0] if quick else ABLATION_NETWORK
    ablation_powers = (2,) if quick else ABLATION_POWERS
    extra = ("pruning.synflow_iterations=5",) if quick else ()
    out_jobs: list[Job] = []
    for net in nets:
        steps = args.steps or (20 if quick else STEPS[net])
        preset = (f"experiment={NETWORKS[net]}", f"trainer.max_steps={steps}",
                  f"trainer.eval_every={max(1, min(25, steps // 2))}")
        for s in args.seeds:
            imp = f"{net}/imp/seed{s}"
            out_jobs.append(Job(imp, (*preset, f"seed={s}", "pruning.at_init=false", "pruning.criterion=large_final",
                                      f"ticket.rounds={IMP_ROUNDS}", f"pruning.target_density={nominal(2 * 3):.10g}"),
                                {"network": net, "method": "imp", "seed": s}))
            for c in AT_INIT:
                for r in powers:
                    out_jobs.append(Job(f"{net}/{c}/d{r}/seed{s}",
                                        (*preset, f"seed={s}", f"pruning.criterion={c}",
                                         f"pruning.target_density={nominal(r):.10g}", *extra),
                                        {"network": net, "method": c, "seed": s, "power": r}))
            for r in powers:
                out_jobs.append(gmp_job(net, s, r, steps))
            if net != ablation_net:
                continue
            for src in ABLATION_SOURCES:
                for r in ablation_powers:
                    source = imp if src == "imp" else f"{net}/{src}/d{r}/seed{s}"
                    k = r if src == "imp" else 0
                    what = ("pruning.at_init=false", "pruning.criterion=large_final") if src == "imp" else \
                        (f"pruning.criterion={src}",)
                    for check in SANITY:
                        out_jobs.append(Job(
                            f"{net}/sanity/{src}_d{r}_{check}/seed{s}",
                            (*preset, f"seed={s}", *what, f"branch.from={out / source}", f"branch.round={k}",
                             f"branch.sanity={check}"),
                            {"network": net, "method": src, "seed": s, "power": r, "sanity": check},
                            after=(source,)))
    return out_jobs


def gmp_job(net: str, seed: int, r: int, steps: int) -> Job:
    """One gradual-magnitude-pruning run to density 10^(−r/2), one global threshold like the others: cubic schedule
    from 10% of training, every 5%, over 60% of it, so the last 30% trains the final mask."""
    start, every = max(1, steps // 10), max(1, steps // 20)
    return Job(f"{net}/gmp/d{r}/seed{seed}",
               (f"experiment={GMP_PRESETS[net]}", f"trainer.max_steps={steps}",
                f"trainer.eval_every={max(1, min(25, steps // 2))}", f"seed={seed}",
                f"gradual.final_density={nominal(r):.10g}",
                f"gradual.start_step={start}", f"gradual.every={every}", "gradual.prunings=12", "pruning.scope=global"),
               {"network": net, "method": "gmp", "seed": seed, "power": r})


def _rows(df):
    """The rows compared at a nominal density: pruning-at-init and GMP runs' last records, IMP rounds 0..6."""
    import numpy as np
    import pandas as pd

    plain = df[df["sanity"].isna()] if "sanity" in df else df
    imp = plain[plain["method"] == "imp"].copy()
    imp["power"] = imp["round"]
    other = plain[plain["method"] != "imp"]
    other = other.sort_values("round").groupby("folder", as_index=False).last()
    rows = pd.concat([imp, other], ignore_index=True)
    rows["nominal %"] = (100 * np.power(10.0, -rows["power"].astype(float) / 2)).round(2)
    return rows


def _pct(x: float) -> str:
    return f"{x:g}"


def report(df, args: argparse.Namespace) -> tuple[str, object]:
    """Tables (accuracy per network, collapses, sanity checks) and the figure."""
    if "layer_collapse" not in df:
        df["layer_collapse"] = False
    df["layer_collapse"] = df["layer_collapse"].fillna(False).astype(bool)
    if "sanity" not in df:
        df["sanity"] = None
    rows = _rows(df)
    methods = [m for m in METHODS if m in set(rows["method"])]
    parts = []
    nets = list(dict.fromkeys(rows["network"]))
    for net in nets:
        sub = rows[rows["network"] == net]
        dense = sub[(sub["method"] == "imp") & (sub["round"] == 0)]["test_acc"]
        table = []
        for d in sorted(set(sub[sub["power"] >= 2]["nominal %"]), reverse=True):
            at = sub[sub["nominal %"] == d]
            table.append([_pct(d), *(mean_std(at[at["method"] == m]["test_acc"]) for m in methods)])
        parts += [f"### {net}: test accuracy at the end of training (%), dense {mean_std(dense)}",
                  markdown(["density %", *methods], table)]
        if CONTROL in methods:
            others = [m for m in methods if m != CONTROL]
            gaps = []
            for d in sorted(set(sub[sub["power"] >= 2]["nominal %"]), reverse=True):
                at = sub[sub["nominal %"] == d]
                ref = at[at["method"] == CONTROL]
                gaps.append([_pct(d), *(paired_cell(at[at["method"] == m], ref, "test_acc", direction=+1)
                                        for m in others)])
            parts += [(f"{net}, each method minus `{CONTROL}` at the same density, paired by seed (percentage points; "
                       "agree: the 95% interval lies above 0):"),
                      markdown(["density %", *(f"{m} − {CONTROL}" for m in others)], gaps)]
    # collapses: how many runs of each method (all networks, all seeds) kept no input→output path or emptied a layer
    col = []
    for d in sorted(set(rows[rows["power"] >= 2]["nominal %"]), reverse=True):
        at = rows[rows["nominal %"] == d]
        col.append([_pct(d), *(f"{int(at[at['method'] == m]['layer_collapse'].sum())}/{int((at['method'] == m).sum())}"
                               for m in methods)])
    parts += ["### Collapsed masks (runs with an empty layer or no input→output path / runs)",
              markdown(["density %", *methods], col)]
    # sanity checks: branch accuracy next to the source's
    san = df[df["sanity"].notna()].copy()
    if not san.empty:
        table = []
        for (src, r), grp in san.groupby(["method", "power"], sort=False):
            base = rows[(rows["network"] == grp["network"].iloc[0]) & (rows["method"] == src) & (rows["power"] == r)]
            cells = [mean_std(base["test_acc"])]
            for check in SANITY:
                b = grp[grp["sanity"] == check]
                change = paired_cell(b, base, "test_acc", direction=SANITY_DIRECTION.get(src), sep=" ")
                cells.append(f"{mean_std(b['test_acc'])} ({change})")
            table.append([src, _pct(round(100 * nominal(int(r)), 2)), *cells])
        parts += [(f"### Sanity checks on {san['network'].iloc[0]}: test accuracy (%) and, in brackets, the change "
                  "from the unmodified mask (paired by seed, points, with its 95% interval; for IMP, agree: the interval lies "
                  "below 0, as Frankle et al. found; for pruning at init they found no change)"),
                  markdown(["mask", "density %", "as found", *SANITY], table)]
    return "\n\n".join(parts), figure(rows, nets, methods)


def figure(rows, nets, methods):
    """Accuracy against density per network, and the per-layer densities each method chose at 1% (first network)."""
    import numpy as np

    fig, axes = subplots(len(nets) + 1, width=4.4, height=3.6)
    for ax, net in zip(axes, nets):
        sub = rows[(rows["network"] == net) & (rows["power"] >= 2)]
        for m in methods:
            part = sub[sub["method"] == m].groupby("nominal %")["test_acc"].agg(["mean", "std"]).sort_index()
            if part.empty:
                continue
            xs = part.index.to_numpy() / 100
            (line,) = ax.plot(xs, 100 * part["mean"], marker="o", ms=3, label=m,
                              ls="-" if m in ("imp", "gmp") else "--")
            ax.fill_between(xs, 100 * (part["mean"] - part["std"].fillna(0)),
                            100 * (part["mean"] + part["std"].fillna(0)), alpha=0.12, color=line.get_color())
        ax.set_xscale("log")
        ax.invert_xaxis()
        percent_log_axis(ax.xaxis, [nominal(r) for r in POWERS])
        ax.set_xlabel("weights remaining (%)")
        ax.set_ylabel("test accuracy, end of training (%)")
        ax.set_title(net, fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    ax = axes[-1]
    sub = rows[(rows["network"] == nets[0]) & (rows["nominal %"] == 1.0)]
    cols = [c for c in sub.columns if c.startswith("layer_density.") and sub[c].notna().any()]
    width = 0.8 / max(len(methods), 1)
    for i, m in enumerate(methods):
        vals = sub[sub["method"] == m][cols].mean()
        if vals.isna().all():
            continue
        ax.bar(np.arange(len(cols)) + i * width, 100 * vals.to_numpy(), width, label=m)
    ax.set_xticks(np.arange(len(cols)) + 0.4 - width / 2, [c.split(".", 1)[1] for c in cols], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("weights remaining in the layer (%)")
    ax.set_title(f"per-layer density at 1%: {nets[0]}", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle("Pruning at initialisation vs IMP (rewind to θ0) and GMP (mean ± std over seeds)")
    return fig


def main(argv: list[str] | None = None):
    """Run the study and write its page and figure; the frame of all records."""
    ap = parser(NAME, __doc__)
    add_args(ap)
    args = ap.parse_args(argv)
    resolve_outputs(ap, args, NAME)
    common = [f"data.root={args.data_root}", "trainer.checkpoint_every=0", "pruning.allow_collapse=true",
              *args.overrides]
    return run_study(NAME, TITLE, args, common, jobs, report, note=lambda df: (
        f" Networks: {', '.join(dict.fromkeys(df['network']))}; training steps of every run: {args.steps or STEPS}."))


if __name__ == "__main__":
    main(sys.argv[1:])
