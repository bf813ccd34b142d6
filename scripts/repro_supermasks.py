"""Supermasks of a random network (Zhou et al. 2019; Ramanujan et al. 2020): a mask alone makes untrained weights classify.

    python scripts/repro_supermasks.py                   # digits MLP 64-128-10, 5 seeds, 145 lineages: 5 min on one loaded core
    python scripts/repro_supermasks.py --data-root /path/to/mnist data=mnist model.args.hidden=[300,100]  # Zhou's FC
    python scripts/repro_supermasks.py --data-root /path/to/cifar10 data=cifar10 model=conv4 '~model.args.hidden' \
        trainer.max_steps=20000 --source-steps 20000     # Conv4 on CIFAR-10 (hours on a CPU)
    python scripts/repro_supermasks.py --experiment supermask_mnist1d  # MNIST-1D, MLP 40-500-500-10, 3000 steps each

Per seed: a dense source lineage (`supermask=none ticket.rounds=0`, trained `--source-steps`); heuristic supermasks
of its round 0 at every `--densities` value (one lineage per variant, one round per density, no training): the
`large_final_same_sign` criterion on the signed constant or on θ0, `large_final` and `random` on the signed constant;
edge-popup at every `--ks` value for three frozen weights (Kaiming normal θ0, the signed Kaiming constant, and that
constant scaled by 1/√k; at k = 1 the scaled one is the unscaled one and is not run twice); learned Bernoulli
supermasks on θ0 or the signed constant, each with and without dynamic rescaling. The paper anchors (MNIST): 86% for
the heuristic supermask, 95.3% for the learned Bernoulli one; edge-popup accuracy is an inverted U in k with its top
at k = 0.3–0.7. `--experiment` defaults to `supermask_digits` (sklearn digits, no download; its learned supermasks
train 400 steps), whose edge-popup/Bernoulli presets set the papers' optimizers. Reruns skip finished lineages.
Writes docs/results/supermasks.md (+ .png).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from lth.analysis import grid, markdown, mean_std, paired_cell, paired_grid, plot_vs, plot_vs_density, subplots
from lth.reproduce import Job, study_main

HEURISTICS = {  # column → overrides of a heuristic supermask of the dense source's round 0
    "large_final_same_sign, signed constant": ("supermask.criterion=large_final_same_sign",
                                               "supermask.weights=signed_constant"),
    "large_final_same_sign, θ0": ("supermask.criterion=large_final_same_sign", "supermask.weights=init"),
    "large_final, signed constant": ("supermask.criterion=large_final", "supermask.weights=signed_constant"),
    "random, signed constant": ("supermask.criterion=random", "supermask.weights=signed_constant"),
}
EDGE_POPUP = {  # column → frozen weights of an edge-popup supermask
    "Kaiming normal": ("supermask.weights=init",),
    "signed Kaiming constant": ("supermask.weights=signed_kaiming_constant",),
    "signed Kaiming constant, scaled": ("supermask.weights=signed_kaiming_constant", "supermask.scale_fan=true"),
}
RANDOM = "random, signed constant"  # the heuristics' control: a random mask of the same density on the same weights
SCALED, UNSCALED = "signed Kaiming constant, scaled", "signed Kaiming constant"
BERNOULLI = {  # row → frozen weights of a learned Bernoulli supermask
    "θ0": ("supermask.weights=init",),
    "θ0, rescaled": ("supermask.weights=init", "supermask.rescale=true"),
    "signed constant": ("supermask.weights=signed_constant",),
    "signed constant, rescaled": ("supermask.weights=signed_constant", "supermask.rescale=true"),
}
QUICK = ("trainer.max_steps=20", "trainer.eval_every=20", "trainer.checkpoint_every=0", "logger=none")


def add_args(ap: argparse.ArgumentParser) -> None:
    """The study's own options."""
    ap.add_argument("--densities", type=float, nargs="+", default=None,
                    help="heuristic supermask densities (default 0.05 0.1 0.2 0.3 0.5; quick 0.1 0.5)")
    ap.add_argument("--ks", type=float, nargs="+", default=None,
                    help="edge-popup fractions kept (default 0.05 0.1 0.3 0.5 0.7 0.9 1.0; quick 0.3 1.0)")
    ap.add_argument("--source-steps", type=int, default=None,
                    help="training steps of the heuristic's dense source (default 1000; quick: the quick steps)")


def _slug(name: str) -> str:
    return name.replace(", ", "_").replace(" ", "_").replace("θ0", "theta0")


def jobs(args: argparse.Namespace, out: Path) -> list[Job]:
    """Per seed: the dense source, its heuristic supermasks, edge-popup per init and k, learned Bernoulli masks."""
    args.densities = args.densities or ([0.1, 0.5] if args.quick else [0.05, 0.1, 0.2, 0.3, 0.5])
    args.ks = args.ks or ([0.3, 1.0] if args.quick else [0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
    if args.source_steps is None and not args.quick:
        args.source_steps = 1000
    bad = [x for x in (*args.densities, *args.ks) if not 0.0 < x <= 1.0]
    if bad:
        raise SystemExit(f"densities and ks must be in (0, 1], got {bad}")
    densities = "[" + ",".join(f"{d:g}" for d in args.densities) + "]"
    steps = (f"trainer.max_steps={args.source_steps}",) if args.source_steps else ()
    out_jobs = []
    for s in args.seeds:
        seed, src = f"seed={s}", f"seed{s}/dense"
        out_jobs.append(Job(src, (seed, "supermask=none", "ticket.rounds=0", *steps),
                            {"method": "dense", "variant": "dense", "seed": s}))
        for name, extra in HEURISTICS.items():
            out_jobs.append(Job(f"seed{s}/heuristic/{_slug(name)}",
                                (seed, "supermask=heuristic", f"supermask.from={out / src}", "supermask.round=0",
                                 f"supermask.density={densities}", *extra),
                                {"method": "heuristic", "variant": name, "seed": s}, after=(src,)))
        for name, extra in EDGE_POPUP.items():
            for k in args.ks:
                if k == 1.0 and name == SCALED:
                    continue  # × 1/√1: the unscaled lineage (the report shows it in both columns)
                out_jobs.append(Job(f"seed{s}/edge_popup/{_slug(name)}_k{k:g}",
                                    (seed, "supermask=edge_popup", f"supermask.k={k}", *extra),
                                    {"method": "edge_popup", "variant": name, "seed": s, "k": k}))
        for name, extra in BERNOULLI.items():
            out_jobs.append(Job(f"seed{s}/bernoulli/{_slug(name)}", (seed, "supermask=bernoulli", *extra),
                                {"method": "bernoulli", "variant": name, "seed": s}))
    return out_jobs


def _g(x: float) -> str:
    return f"{x:g}"


def heuristic_frame(df: pd.DataFrame, densities: Sequence[float]) -> pd.DataFrame:
    """The heuristic rows with `target density`: round r of a heuristic lineage is the r-th requested density."""
    h = df[df["method"] == "heuristic"].copy()
    h["target density"] = [densities[int(r)] for r in h["round"]]
    return h


def edge_popup_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The edge-popup rows, the unscaled signed Kaiming constant at k = 1 standing in for the scaled one (× 1/√1)."""
    e = df[df["method"] == "edge_popup"]
    if not ((e["variant"] == SCALED) & (e["k"] == 1.0)).any():
        e = pd.concat([e, e[(e["variant"] == UNSCALED) & (e["k"] == 1.0)].assign(variant=SCALED)])
    return e


def report(df: pd.DataFrame, args: argparse.Namespace) -> tuple[str, Any]:
    """Tables (mean ± std over seeds) and a three-panel figure."""
    dense = df[df["method"] == "dense"]
    h = heuristic_frame(df, args.densities).assign(density=lambda x: x["target density"])
    e = edge_popup_frame(df)
    b = df[df["method"] == "bernoulli"]
    parts = [
        (f"Dense source (`supermask=none`, {mean_std(dense['train_steps'], 1, 0)} training steps): test accuracy "
         f"{mean_std(dense['test_acc'])} %. Chance is 10 %."),
        "### Heuristic supermasks on θ0, no training: test accuracy (%)",
        "Masks of the dense source's round 0 (criterion, frozen weights) kept at each density per layer.",
        grid(h, "density", "variant", "test_acc", _g, list(HEURISTICS)),
        (f"Minus `{RANDOM}` at the same density, paired by seed (percentage points; agree: the 95% interval lies "
         "above 0, Zhou et al.'s direction):"),
        paired_grid(h, "density", "variant", "test_acc", RANDOM, +1, row_fmt=_g, cols=list(HEURISTICS)),
        "### Edge-popup: test accuracy (%) against k (fraction of each layer kept)",
        grid(e, "k", "variant", "test_acc", _g, list(EDGE_POPUP)),
        *(["At k = 1 the scaled constant (× 1/√k) equals the unscaled one: both columns show the same lineages."]
          if 1.0 in args.ks else []),
        "### Learned Bernoulli supermasks (expected mask σ(s) > 0.5)",
        markdown(["weights", "test accuracy (%)", "learned density (%)"],
                 [[name, mean_std(b[b["variant"] == name]["test_acc"]), mean_std(b[b["variant"] == name]["density"])]
                  for name in BERNOULLI]),
        ("Dynamic rescaling minus none, paired by seed (percentage points; agree: above 0, Zhou et al.'s "
         "direction):"),
        markdown(["weights", "rescaled − not rescaled"],
                 [[w, paired_cell(b[b["variant"] == f"{w}, rescaled"], b[b["variant"] == w], "test_acc", direction=+1)]
                  for w in ("θ0", "signed constant")]),
    ]
    fig, axes = subplots(3, width=4.8)
    plot_vs_density(axes[0], h, "test_acc", "variant", list(HEURISTICS), at="density", scale=100)
    axes[0].set_xticks(args.densities, [f"{d:g}" for d in args.densities])
    axes[0].minorticks_off()
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].set_title("heuristic supermasks (no training)")
    axes[0].legend(fontsize=7)
    plot_vs(axes[1], e, "k", "test_acc", "variant", list(EDGE_POPUP), scale=100, legend=True)
    axes[1].set_xlabel("k (fraction of each layer kept)")
    axes[1].set_ylabel("test accuracy (%)")
    axes[1].set_title("edge-popup")
    for i, name in enumerate(BERNOULLI):
        sub = b[b["variant"] == name]
        std = float(sub["test_acc"].std()) * 100 if len(sub) > 1 else 0.0
        axes[2].errorbar([i], [sub["test_acc"].mean() * 100], yerr=[std], fmt="o", capsize=4)
        axes[2].annotate(f"density {sub['density'].mean():.2f}", (i, sub["test_acc"].mean() * 100),
                         textcoords="offset points", xytext=(0, 8), ha="center", fontsize=7)
    axes[2].set_xticks(range(len(BERNOULLI)), list(BERNOULLI), rotation=20, fontsize=7)
    axes[2].set_xlim(-0.5, len(BERNOULLI) - 0.5)
    axes[2].set_ylabel("test accuracy (%)")
    axes[2].set_title("learned Bernoulli supermasks")
    axes[2].grid(True, axis="y", alpha=0.3)
    fig.suptitle("Supermasks of a random network (mean ± std over seeds)")
    return "\n\n".join(parts), fig


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """Run the study (options as on the command line); the frame of its round records."""
    return study_main("supermasks", "Supermasks (Zhou et al. 2019; Ramanujan et al. 2020)", __doc__, jobs, report,
                      experiment="supermask_digits", quick=QUICK, add_args=add_args, argv=argv)


if __name__ == "__main__":
    main()
