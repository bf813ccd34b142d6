"""Linear mode connectivity and instability (Frankle, Dziugaite, Roy & Carbin 2020): a starting point is stable when two
copies trained from it with different data orders end in one linearly connected minimum (error barrier < 2%), and
sparse IMP subnetworks match the dense network exactly where they are stable — why late rewinding works.

    python scripts/repro_stability.py            # MNIST-1D, 5 seeds, 110 trainings: 11 min on 2 idle cores
    python scripts/repro_stability.py --quick    # toy sizes: checks the pipeline, not the claim

Every lineage starts from `experiment=late_rewind_cnn1d_mnist1d` (MNIST-1D's CNN, SGD lr 0.1 with momentum 0.9, no
warm-up, batch 100, 1,500 steps per round) and measures instability on 30 points of the path, on the test set and on
the training split. Per seed:
  (a) dense MLPs from θ0, copies of --mlp-steps (500) steps — `stability.pair=true`: MNIST-1D's 40-500-500-10 (its
      lottery-ticket notebook's, Adam 2e-2) and LeNet-300-100 on sklearn digits (Adam 1.2e-3, batch 60, as LTH's LeNet);
  (b) dense CNN from θk, k in --rewind-steps (0, 8, 15, 30, 75: 0–5% of training), the copies training the remaining
      1,500 − k steps: k = 0 and k = --imp-rewind are round 0 of the IMP lineages (c) (the same pair, bit for bit, as
      `stability.pair=true ticket.rewind_step=k`), the other k their own `stability.pair=true` lineages;
  (c) IMP lineages of the CNN rewound to θ0 and to θk (k = --imp-rewind, 75) with `stability.every_round=true`:
      --imp-rounds (1) round of --imp-fraction (60%; output layer 30%) after the dense one.
Writes docs/results/stability.md (+ .png).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lth.reproduce import Job, study_main

MLP = ("model=mlp_mnist1d", "optimizer=adam", "optimizer.lr=2e-2")
LENET = ("model=lenet_300_100", "data=digits", "data.batch_size=60", "optimizer=adam", "optimizer.lr=1.2e-3")
NAMES = {"mlp": "MLP 40-500-500-10, MNIST-1D", "lenet": "LeNet-300-100, digits", "cnn1d": "CNN, MNIST-1D, lr 0.1"}
THRESHOLD = 0.02


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--rewind-steps", type=int, nargs="+", default=None,
                    help="k of the dense CNN's starting points θk (default 0 8 15 30 75; quick 0 2 5)")
    ap.add_argument("--imp-rewind", type=int, default=None, help="the late rewind point of (c) (default 75; quick 5)")
    ap.add_argument("--imp-rounds", type=int, default=None, help="IMP rounds after the dense one (default 1)")
    ap.add_argument("--mlp-steps", type=int, default=500, help="training steps of the dense MLP's copies (a)")
    ap.add_argument("--imp-fraction", type=float, default=0.6, help="share of each layer pruned per round (output: half)")
    ap.add_argument("--tolerance", type=float, default=0.01,
                    help="matching: mean test accuracy at least the dense network's minus this (default 1 point)")


def jobs(args: argparse.Namespace, out: Path) -> list[Job]:
    args.rewind_steps = args.rewind_steps or ([0, 2, 5] if args.quick else [0, 8, 15, 30, 75])
    args.imp_rewind = args.imp_rewind if args.imp_rewind is not None else (5 if args.quick else 75)
    args.imp_rounds = args.imp_rounds or 1
    args.alphas = 30
    imp = (f"ticket.rounds={args.imp_rounds}", f"pruning.fraction={args.imp_fraction}",
           f"pruning.output_fraction={args.imp_fraction / 2}", "stability.every_round=true")
    mlp = (*MLP, *(() if args.quick else (f"trainer.max_steps={args.mlp_steps}",)))
    # quick: smoke's own MLP stands in for LeNet (smoke's model.args would not fit lenet_300_100)
    lenet = tuple(x for x in LENET if not x.startswith("model=")) if args.quick else (
        *LENET, f"trainer.max_steps={args.mlp_steps}")
    imp_jobs, dense_jobs = [], []
    for s in args.seeds:
        for k in (0, args.imp_rewind):  # their round 0 is the dense CNN's pair from θ0 / θk (part b)
            imp_jobs.append(Job(f"imp/seed{s}/k{k}", (f"seed={s}", f"ticket.rewind_step={k}", *imp),
                                {"part": "c", "model": "cnn1d", "seed": s, "k": k,
                                 "variant": "rewind to θ0" if k == 0 else f"rewind to θk, k={k}"}))
        dense_jobs.append(Job(f"dense_mlp/seed{s}/k0", (f"seed={s}", *mlp, "stability.pair=true"),
                              {"part": "a", "model": "mlp", "seed": s, "k": 0}))
        dense_jobs.append(Job(f"dense_lenet/seed{s}/k0", (f"seed={s}", *lenet, "stability.pair=true"),
                              {"part": "a", "model": "lenet", "seed": s, "k": 0}))
    for k in [k for k in args.rewind_steps if k not in (0, args.imp_rewind)]:
        for s in args.seeds:
            dense_jobs.append(Job(f"dense_cnn/seed{s}/k{k}", (f"seed={s}", f"ticket.rewind_step={k}",
                                                              "stability.pair=true"),
                                  {"part": "b", "model": "cnn1d", "seed": s, "k": k}))
    return imp_jobs + dense_jobs  # the longest lineages first, so that the workers finish together


def _dense_label(model: str, k: int) -> str:
    name = {"mlp": "MLP", "lenet": "LeNet, digits"}.get(model, "CNN")
    return f"{name} from θ0" if k == 0 else f"{name} from θk, k={k}"


def report(df, args: argparse.Namespace):
    import pandas as pd

    from lth.analysis import (
        by_key,
        markdown,
        mean_std,
        path_rows,
        plot_instability_vs,
        plot_instability_vs_density,
        plot_paths,
        plot_vs_density,
        subplots,
    )
    from lth.stats import fmt, interval, paired, side

    out = Path(args.out).resolve()
    stable = lambda xs: f"{int((xs < THRESHOLD).sum())}/{int(xs.notna().sum())}"
    # the dense CNN from θ0 and θk_imp: round 0 of the IMP lineages (the same pair, bit for bit, as stability.pair=true
    # at that k: tests/unit/kinds/test_pair.py), the other k: their own stability.pair=true lineages
    first = df[(df["part"] == "c") & (df["round"] == 0)].assign(part="b")
    dense = pd.concat([df[df["part"].isin(["a", "b"])], first], ignore_index=True)
    dense["total"] = dense["stability_steps"] + dense["k"]
    rows = []
    for (part, model, k), g in dense.groupby(["part", "model", "k"], sort=True):
        total = int(g["total"].iloc[0])
        copies = 1 - g["pair_test_error"].map(lambda e: sum(e) / 2)
        rows.append([f"({part}) {NAMES.get(model, model)}", k, f"{100 * k / total:.2g}", mean_std(g["instability_test"]),
                     mean_std(g["instability_train"]), stable(g["instability_test"]), mean_std(copies)])
    dense_table = markdown(["network", "k (steps)", "k (% of training)", "instability, test (%)",
                            "instability, train (%)", "stable seeds (test < 2%)", "the copies' test acc (%)"], rows)

    imp = df[df["part"] == "c"].copy()
    dense_acc = float(imp[imp["round"] == 0]["test_acc"].mean())
    imp["density %"] = (100 * imp["density"]).round(1)
    rows = []
    variants = list(dict.fromkeys(imp.sort_values("k")["variant"]))
    words = {"stable": {"below": "yes", "above": "no"}, "matching": {"above": "yes", "below": "no"}}
    for d in sorted(imp["density %"].unique(), reverse=True):
        for v in variants:
            lineage = imp[imp["variant"] == v]
            g = lineage[lineage["density %"] == d]
            # each seed's sparse network against its own lineage's dense round 0
            gap = paired(by_key(g, "test_acc"), by_key(lineage[lineage["round"] == 0], "test_acc"))
            ins = interval(g["instability_test"])
            rows.append([f"{d:.1f}", v, mean_std(g["test_acc"]), fmt(gap, sign=True),
                         mean_std(g["instability_test"]), mean_std(g["instability_train"]),
                         words["matching"].get(side(gap, -args.tolerance), "unclear"),
                         words["stable"].get(side(ins, THRESHOLD), "unclear")])
    imp_table = markdown(["density %", "rewind", "test acc (%)", "minus dense, paired by seed (points)",
                          "instability, test (%)", "instability, train (%)",
                          f"matching (95% interval of the gap above −{100 * args.tolerance:g})",
                          "stable (95% interval below 2%)"], rows)

    paths = []
    for _, j in dense.drop_duplicates("folder").iterrows():
        if j["k"] in (0, max(args.rewind_steps)):
            paths += [{"start": _dense_label(j["model"], j["k"]), "seed": j["seed"], **row}
                      for row in path_rows(out / j["folder"]) if row["round"] == 0]
    paths = pd.DataFrame(paths)
    order = sorted(paths["start"].unique(), key=lambda x: (x.startswith("CNN"), x))
    fig, axes = subplots(4, width=4.6)
    plot_paths(axes[0], paths, "start", "test", order)
    axes[0].set_title("(a, b) test error on the linear path", fontsize=9)
    axes[0].legend(fontsize=7)
    cnn = dense[dense["part"] == "b"].assign(split="test")
    plot_instability_vs(axes[1], cnn, by="model", order=["cnn1d"])
    plot_instability_vs(axes[1], cnn, by="model", order=["cnn1d"], metric="instability_train")
    lines = axes[1].get_lines()
    lines[0].set_label("test")
    lines[2].set_label("train")
    axes[1].set_ylabel("instability (%)")
    axes[1].set_title("(b) dense CNN, lr 0.1: instability vs k", fontsize=9)
    axes[1].legend([lines[0], lines[2], lines[1]], ["test", "train", "stable below 2%"], fontsize=7)
    plot_instability_vs_density(axes[2], imp, dense_acc, "variant", order=variants, tolerance=args.tolerance)
    axes[2].set_title("(c) IMP subnetworks: instability (filled = matching)", fontsize=9)
    axes[2].legend(fontsize=7)
    plot_vs_density(axes[3], imp, "test_acc", "variant", variants, at="density", scale=100)
    axes[3].axhline(100 * dense_acc, color="0.4", ls="--", lw=1, label="dense")
    axes[3].set_title("(c) IMP subnetworks: test accuracy", fontsize=9)
    axes[3].legend(fontsize=7)
    fig.suptitle("Linear mode connectivity, MNIST-1D (mean ± std over seeds)")
    body = "\n\n".join([
        (f"{len(args.seeds)} seeds; {args.alphas} points on each path; instability = max over α of error(α) − mean of "
         "the two ends' errors, in percentage points; stable below 2%."),
        "### (a, b) Dense networks: instability of θk",
        dense_table,
        f"### (c) IMP subnetworks of the CNN (dense test accuracy {100 * dense_acc:.1f}%): matching where stable?",
        imp_table,
    ])
    return body, fig


if __name__ == "__main__":
    study_main("stability", "Linear mode connectivity and instability (Frankle et al. 2020)", __doc__, jobs, report,
               experiment="late_rewind_cnn1d_mnist1d", add_args=add_args)
