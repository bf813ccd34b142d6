"""Rethinking the value of network pruning on a residual network: fine-tuned vs scratch-E vs scratch-B after removing
50% of the channels of MNIST-1D's residual CNN through dependency groups.

    nice -n 10 python scripts/repro_rethinking_residual.py          # 5 seeds, 15 lineages: ~40 min on 2 loaded cores
    python scripts/repro_rethinking_residual.py --quick             # the pipeline in seconds (never writes docs/)

Per seed, one lineage of `experiment=structured_resnet1d_mnist1d` with `ticket.rounds=1 ticket.reset=continue
pruning.fraction=0.5`: the residual CNN (`model=resnet1d`: stem + 4 basic blocks, 32-32-64-64 channels) trained
dense for --steps steps (round 0), then half of the channels of every dependency group removed by the group's L1
norm — a residual stage's channels (stem, the blocks' second convs, the projection) as one group, each block's inner
conv as its own — and the survivors fine-tuned for --steps/4 steps at the same lr (round 1). Two branches of round 1
train the same compacted architecture from a fresh init: `ticket.reset=scratch_e` (--steps steps) and
`ticket.reset=scratch_b` (--steps × FLOPs_dense / FLOPs_pruned steps). Liu et al. (CIFAR-10, ResNet-56, L1-norm
filter pruning): fine-tuned 92.67, scratch-E 92.54 ± 0.19, scratch-B 93.05 ± 0.18.

Writes docs/results/rethinking_residual.md (+ .png), linked from docs/results/rethinking.md. Reruns skip finished
lineages.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lth.analysis import markdown, mean_std, subplots
from lth.reproduce import Job, parser, resolve_outputs, run_study

NAME, TITLE = "rethinking_residual", "Rethinking the value of network pruning on a residual network"
EXPERIMENT = "structured_resnet1d_mnist1d"
NETWORKS = ("dense", "fine-tuned", "scratch-E", "scratch-B")
SCRATCH = {"scratch-E": "scratch_e", "scratch-B": "scratch_b"}


def jobs(args: argparse.Namespace, out: Path) -> list[Job]:
    out_jobs = []
    for s in args.seeds:
        lineage = f"seed{s}/fine_tuned"
        out_jobs.append(Job(lineage, (f"seed={s}",), {"variant": "fine-tuned", "seed": s}))
        for variant, reset in SCRATCH.items():
            out_jobs.append(Job(f"seed{s}/{reset}", (f"seed={s}", f"branch.from={out / lineage}", "branch.round=1",
                                                     f"ticket.reset={reset}"),
                                {"variant": variant, "seed": s}, after=(lineage,)))
    return out_jobs


def report(df, args: argparse.Namespace):
    df = df.copy()
    df["network"] = ["dense" if r == 0 else v for r, v in zip(df["round"], df["variant"])]
    df["flops ratio"] = df["flops_nonzero"] / df["flops_dense"]
    df["params ratio"] = df["params_compact"] / df["params_dense"]
    parts = []
    bad = df[df["status"] != "ok"]
    if not bad.empty:
        parts.append("**Not every round trained cleanly:** " + ", ".join(
            f"{f} round {r}: {st}" for f, r, st in zip(bad["folder"], bad["round"], bad["status"])) + ".")
    tuned = df[df["network"] == "fine-tuned"].set_index("seed")
    rows = []
    for net in NETWORKS:
        sub = df[df["network"] == net]
        if sub.empty:
            continue
        steps = sorted({int(x) for x in sub["train_steps"]})
        by_seed = sub.set_index("seed")
        gap = [mean_std((by_seed[m] - tuned[m]).dropna()) if net in SCRATCH else "–"
               for m in ("test_acc", "early_stop_test_acc")]
        rows.append([net, f"{sub['flops ratio'].mean():.3f}", f"{sub['params ratio'].mean():.3f}",
                     "/".join(map(str, steps)) + (" (after dense)" if net == "fine-tuned" else ""),
                     mean_std(sub["test_acc"]), mean_std(sub["early_stop_test_acc"]), *gap])
    parts += [
        ("FLOPs ratio: multiply-accumulates per example over the dense network's (flops_nonzero / flops_dense); "
         "params ratio: the compacted network's parameters (BatchNorm included) over the dense network's; steps: "
         "the round's training steps; − fine-tuned: the scratch network's accuracy minus the fine-tuned one's of "
         "the same seed (percentage points)."),
        markdown(["network", "FLOPs ratio", "params ratio", "steps", "test acc. end (%)", "test acc. early stop (%)",
                  "− fine-tuned, end", "− fine-tuned, early stop"], rows),
    ]
    fig, (ax,) = subplots(1, width=5.6, height=3.8)
    for i, net in enumerate(NETWORKS):  # one point per seed: accuracy against the round's training steps
        sub = df[df["network"] == net]
        ax.scatter(sub["train_steps"], 100 * sub["test_acc"], color=f"C{i}", marker="o", label=f"{net} (end)")
        ax.scatter(sub["train_steps"], 100 * sub["early_stop_test_acc"], color=f"C{i}", marker="x", alpha=0.7)
    ax.set_xlabel("training steps of the round (fine-tuned: after the dense round)")
    ax.set_ylabel("test accuracy (%; o end, x early stop)")
    ax.set_title("resnet1d, 50% of channels removed through groups")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return "\n\n".join(parts), fig


def main(argv: list[str] | None = None):
    ap = parser(NAME, __doc__)
    ap.add_argument("--steps", type=int, default=500,
                    help="dense (and scratch-E) training steps; fine-tuning gets a quarter (quick: 20)")
    args = ap.parse_args(argv)
    resolve_outputs(ap, args, NAME)
    steps = 20 if args.quick else args.steps
    if steps < 4:
        raise SystemExit(f"--steps must be at least 4 (fine-tuning gets a quarter), got {steps}")
    common = [f"experiment={EXPERIMENT}", f"data.root={args.data_root}", "ticket.rounds=1", "ticket.reset=continue",
              "pruning.fraction=0.5", f"trainer.max_steps={steps}", f"trainer.eval_every={max(1, steps // 6)}",
              "trainer.checkpoint_every=0", f"ticket.finetune_steps={steps // 4}", *args.overrides]
    return run_study(NAME, TITLE, args, common, jobs, report)


if __name__ == "__main__":
    main()
