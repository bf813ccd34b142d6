"""Rethinking the Value of Network Pruning (Liu et al. 2019): scratch baselines of filter pruning, and tickets vs lr.

    python scripts/repro_rethinking.py                   # both parts, 3 seeds, 39 lineages: ~7 min on 2 cores

(a) Structured pruning. Per seed, one `experiment=structured_cnn1d_mnist1d` lineage: the MNIST-1D CNN trained dense
(round 0, 1,500 steps), then 50% of each conv's filters removed by L1 norm and the survivors fine-tuned for 375 steps
(round 1, `ticket.reset=continue`). Two branches of round 1 train the same pruned architecture from a fresh init:
`ticket.reset=scratch_e` (the dense model's 1,500 steps) and `ticket.reset=scratch_b` (the dense model's FLOPs:
1,500 × FLOPs_dense / FLOPs_pruned steps). Liu et al. (CIFAR-10, ResNet-56-B): fine-tuned 92.67, scratch-E
92.54 ± 0.19, scratch-B 93.05 ± 0.18: training the pruned architecture from scratch matches fine-tuning.

(b) Unstructured tickets at a small and a large learning rate. Per lr (`--lrs`, default 0.1 and 0.01) and seed, one
IMP lineage of the MNIST-1D MLP (`experiment=lth_mnist1d`) with SGD (momentum 0.9, `optimizer=sgd`), 1,000 steps per
round, 50% of each layer per round, rewound to θ0, for 4 rounds (6.25% density), and at every pruned round a branch
with the ticket's mask and fresh weights (`ticket.reset=random_reinit`). Liu et al. (and Frankle & Carbin on
CIFAR-10) find that the ticket's init beats random reinit only at the small lr 0.01, not at the larger, optimal 0.1.
A dense 1,000-step round at lr 0.1 trains stably on this MLP (69% test accuracy, no divergence), so 0.1 and 0.01
are the two lrs.

Duration: ~8 min for the default study on 2 cores (workers 2): measured on one thread, a 1,500-step cnn1d round
takes ~17 s (its lineage with fine-tuning ~22 s; scratch-B's ~5,000 steps ~55 s) and a 1,000-step MLP round ~10.5 s,
so ~95 s of part (a) and ~95 s of part (b) per seed (and lr), ~850 s in all, halved by the two workers.

Other data (overrides apply to every lineage, so run one part with `--parts` and its own `--out`/`--page`):

    python scripts/repro_rethinking.py --parts b --experiment lth_lenet_mnist data.root=/path/to/mnist --steps 5000
    python scripts/repro_rethinking.py --parts a model=resnet20 model.name=resnet56 data=cifar10 \\
        data.root=/path/to/cifar10 optimizer=sgd optimizer.lr=0.1 trainer.max_steps=64000 \\
        ticket.finetune_lr=0.001 ticket.finetune_steps=16000 \\
        --out runs/repro/rethinking_cifar10 --page docs/results/rethinking_cifar10.md

Reruns skip finished lineages. Writes docs/results/rethinking.md (+ .png).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lth.analysis import grid, markdown, mean_std, plot_vs_density, subplots
from lth.reproduce import Job, study_main

STRUCTURED = ("dense", "fine-tuned", "scratch-E", "scratch-B")
SCRATCH = {"scratch-E": "scratch_e", "scratch-B": "scratch_b"}
TICKET_VARIANTS = ("ticket", "random reinit")


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--parts", nargs="+", choices=("a", "b"), default=["a", "b"],
                    help="(a) fine-tuned vs scratch-E/B, (b) tickets vs random reinit at two lrs")
    ap.add_argument("--structured-experiment", default="structured_cnn1d_mnist1d",
                    help="preset of part (a)'s lineages and branches (--experiment is part (b)'s)")
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.1, 0.01], help="part (b)'s SGD learning rates")
    ap.add_argument("--rounds", type=int, default=None, help="part (b)'s IMP rounds (default 4; quick 2)")
    ap.add_argument("--fraction", type=float, default=0.5, help="part (b)'s share of each layer pruned per round")
    ap.add_argument("--steps", type=int, default=1000, help="part (b)'s training steps per round (not in --quick)")
    ap.add_argument("--controls", type=int, nargs="*", default=None,
                    help="part (b)'s rounds that get a random-reinit branch (default: every pruned round)")


def jobs(args: argparse.Namespace, out: Path) -> list[Job]:
    out_jobs: list[Job] = []
    if "a" in args.parts:
        # the same preset for the branches: they must rebuild the lineage's model and neuron granularity
        base = (f"experiment={args.structured_experiment}", *(("ticket.finetune_steps=5",) if args.quick else ()))
        for s in args.seeds:
            lineage = f"a/seed{s}/fine_tuned"
            # the lineage's round 0 is the dense network and its round 1 the fine-tuned one (see `report`)
            out_jobs.append(Job(lineage, (*base, f"seed={s}"), {"part": "a", "lr": None, "variant": "fine-tuned",
                                                               "seed": s}))
            for variant, reset in SCRATCH.items():
                out_jobs.append(Job(f"a/seed{s}/{reset}",
                                    (*base, f"seed={s}", f"branch.from={out / lineage}", "branch.round=1",
                                     f"ticket.reset={reset}"),
                                    {"part": "a", "lr": None, "variant": variant, "seed": s}, after=(lineage,)))
    if "b" in args.parts:
        args.rounds = args.rounds if args.rounds is not None else (2 if args.quick else 4)
        controls = args.controls if args.controls is not None else list(range(1, args.rounds + 1))
        bad = [r for r in controls if not 1 <= r <= args.rounds]
        if bad:
            raise SystemExit(f"--controls {bad}: control rounds must be within 1..{args.rounds}")
        steps = () if args.quick else (f"trainer.max_steps={args.steps}",)
        for lr in args.lrs:
            common = ("optimizer=sgd", f"optimizer.lr={lr}", f"pruning.fraction={args.fraction}", *steps)
            for s in args.seeds:
                lineage = f"b/lr{lr:g}/seed{s}/ticket"
                out_jobs.append(Job(lineage, (*common, f"seed={s}", f"ticket.rounds={args.rounds}",
                                              "ticket.reset=rewind"),
                                    {"part": "b", "lr": lr, "variant": "ticket", "seed": s}))
                for r in controls:
                    out_jobs.append(Job(f"b/lr{lr:g}/seed{s}/random_reinit_r{r:02d}",
                                        (*common, f"seed={s}", f"branch.from={out / lineage}", f"branch.round={r}",
                                         "ticket.reset=random_reinit"),
                                        {"part": "b", "lr": lr, "variant": "random reinit", "seed": s},
                                        after=(lineage,)))
    return out_jobs


def report(df, args: argparse.Namespace):
    parts = []
    bad = df[df["status"] != "ok"]
    if not bad.empty:
        parts.append("**Not every round trained cleanly:** " + ", ".join(
            f"{f} round {r}: {st}" for f, r, st in zip(bad["folder"], bad["round"], bad["status"])) + ".")
    a, b = df[df["part"] == "a"].copy(), df[df["part"] == "b"].copy()
    fig, axes = subplots(2, width=5.2, height=3.8)
    if not a.empty:
        a["network"] = [("dense" if r == 0 else v) for r, v in zip(a["round"], a["variant"])]
        a["flops ratio"] = a["flops_nonzero"] / a["flops_dense"]
        parts += _structured_tables(a, args)
        _structured_panel(axes[0], a)
    else:
        axes[0].set_axis_off()
    if not b.empty:
        b["density %"] = (100 * b["density"]).round(2)
        b["column"] = [f"lr {lr:g}: {v}" for lr, v in zip(b["lr"], b["variant"])]
        parts += _ticket_tables(b, args)
        _ticket_panel(axes[1], b)
    else:
        axes[1].set_axis_off()
    fig.suptitle("Rethinking the value of network pruning (mean ± std over seeds)")
    return "\n\n".join(parts), fig


def _steps(xs) -> str:
    vals = sorted({int(x) for x in xs})
    return str(vals[0]) if len(vals) == 1 else mean_std(xs, 1, 0)


def _structured_tables(a, args: argparse.Namespace) -> list[str]:
    rows = []
    for net in STRUCTURED:
        sub = a[a["network"] == net]
        if sub.empty:
            continue
        steps = _steps(sub["train_steps"]) + (" (after dense)" if net == "fine-tuned" else "")
        rows.append([net, mean_std(sub["density"]), f"{sub['flops ratio'].mean():.3f}", steps,
                     mean_std(sub["test_acc"]), mean_std(sub["early_stop_test_acc"])])
    gaps = []
    tuned = a[a["network"] == "fine-tuned"].set_index("seed")
    for net in ("scratch-E", "scratch-B"):
        other = a[a["network"] == net].set_index("seed")
        gaps.append([f"{net} − fine-tuned", mean_std((other["test_acc"] - tuned["test_acc"]).dropna()),
                     mean_std((other["early_stop_test_acc"] - tuned["early_stop_test_acc"]).dropna())])
    return [
        "## (a) Structured pruning: fine-tuned vs scratch-E vs scratch-B",
        (f"Lineages and branches of this part run `experiment={args.structured_experiment}` in place of the "
         "preset above."),
        ("Liu et al. (CIFAR-10, ResNet-56-B, L1-norm filter pruning): fine-tuned 92.67, scratch-E 92.54 ± 0.19, "
         "scratch-B 93.05 ± 0.18. FLOPs ratio: the network's multiply-accumulates per example over the dense "
         "network's (flops_nonzero / flops_dense); steps: the round's training steps."),
        markdown(["network", "density %", "FLOPs ratio", "steps", "test acc. end (%)",
                  "test acc. early stop (%)"], rows),
        "Paired by seed (percentage points):",
        markdown(["difference", "end of training", "early stop"], gaps),
    ]


def _ticket_tables(b, args: argparse.Namespace) -> list[str]:
    lrs = list(dict.fromkeys(b["lr"]))
    cols = [f"lr {lr:g}: {v}" for lr in lrs for v in TICKET_VARIANTS]
    controlled = sorted(set(b[b["variant"] == "random reinit"]["density %"]), reverse=True)
    gaps = []
    for d in controlled:
        cells = []
        for lr in lrs:
            at = b[(b["density %"] == d) & (b["lr"] == lr)]
            ticket, reinit = (at[at["variant"] == v].set_index("seed") for v in TICKET_VARIANTS)
            cells += [mean_std((ticket[m] - reinit[m]).dropna()) for m in ("test_acc", "early_stop_test_acc")]
        gaps.append([f"{d:.2f}", *cells])
    gap_header = ["density %", *(f"lr {lr:g}: {w}" for lr in lrs for w in ("end", "early stop"))]
    return [
        "## (b) Unstructured tickets at a large and a small learning rate",
        (f"IMP rewound to θ0 (ticket) vs the same mask with fresh weights (random reinit); SGD, momentum 0.9, "
         f"{100 * args.fraction:g}% of each layer per round. Liu et al.: the ticket's init helps only at the "
         "small lr (0.01), not at the optimal 0.1."),
        "### Test accuracy at the end of training (%)",
        grid(b, "density %", "column", "test_acc", _two_digits, cols),
        "### Test accuracy at the early-stop step (minimum validation loss) (%)",
        grid(b, "density %", "column", "early_stop_test_acc", _two_digits, cols),
        "### Ticket minus random reinit at the same density (percentage points, paired by seed)",
        markdown(gap_header, gaps),
    ]


def _two_digits(d: float) -> str:
    return f"{d:.2f}"


def _structured_panel(ax, a) -> None:
    nets = [n for n in STRUCTURED if n in set(a["network"])]
    for i, (metric, label) in enumerate((("test_acc", "end of training"), ("early_stop_test_acc", "early stop"))):
        g = a.groupby("network")[metric]
        m, s = g.mean().reindex(nets) * 100, g.std().fillna(0).reindex(nets) * 100
        ax.bar([x + (i - 0.5) * 0.38 for x in range(len(nets))], m.values, 0.38, yerr=s.values, capsize=3,
               label=label, alpha=0.85)
    steps = a.groupby("network")["train_steps"].mean().reindex(nets)
    ax.set_xticks(range(len(nets)), [f"{n}\n{'+' if n == 'fine-tuned' else ''}{round(st)} steps"
                                     for n, st in zip(nets, steps)])
    lo = (a["early_stop_test_acc"].min() if a["early_stop_test_acc"].notna().any() else a["test_acc"].min()) * 100
    ax.set_ylim(max(0.0, min(lo, a["test_acc"].min() * 100) - 5), None)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("(a) 50% filters pruned: fine-tuned vs scratch")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend()


def _ticket_panel(ax, b) -> None:
    for i, lr in enumerate(dict.fromkeys(b["lr"])):
        for v, ls in zip(TICKET_VARIANTS, ("-", "--")):
            sub = b[(b["lr"] == lr) & (b["variant"] == v)]
            plot_vs_density(ax, sub, "test_acc", "column", at="density", scale=100, color=f"C{i}", linestyle=ls)
    ax.set_ylabel("test accuracy, end of training (%)")
    ax.set_title("(b) ticket (θ0) vs random reinit, SGD")
    ax.legend(fontsize=8)


if __name__ == "__main__":
    study_main("rethinking", "Rethinking the value of network pruning (Liu et al. 2019)", __doc__, jobs, report,
               add_args=add_args)
