"""Rethinking the Value of Network Pruning (Liu et al. 2019): scratch baselines of filter pruning at equal budgets,
and tickets vs random reinit over a learning-rate sweep.

    python scripts/repro_rethinking.py --seeds 0 1 2      # both parts, 42 lineages

(a) Structured pruning. Per seed, one `experiment=structured_cnn1d_mnist1d` lineage: the MNIST-1D CNN trained dense
(round 0, T steps: `--structured-steps`, default 750, half the preset's 1,500), then 50% of each conv's filters
removed by L1 norm and the survivors fine-tuned for T/4 steps (round 1, `ticket.reset=continue`, Liu et al.'s quarter
of the schedule). Branches of round 1 train the same pruned architecture from a fresh init: `ticket.reset=scratch_e`
(T steps) and `ticket.reset=scratch_b` (the dense model's FLOPs: B = T × FLOPs_dense / FLOPs_pruned, 3.35 × T).
Scratch-B so trains 2.7× the steps of the dense + fine-tuned networks; two controls give those the same budget B: a
lineage whose dense network trains B steps (then pruned and fine-tuned T/4 steps: Liu et al.'s protocol from a dense
network trained as long), and a branch that fine-tunes the T-step network's survivors for B − T steps (B in all). The
B-step dense network's evaluations also show whether the T-step one had stopped learning. Liu et al. (CIFAR-10,
ResNet-56-B): fine-tuned 92.67, scratch-E 92.54 ± 0.19, scratch-B 93.05 ± 0.18.

(b) Unstructured tickets over a learning-rate sweep. Per lr (`--lrs`, default 0.03, 0.1, 0.3) and seed, one IMP
lineage of the MNIST-1D MLP (`experiment=lth_mnist1d`) with SGD (momentum 0.9, `optimizer=sgd`), `--steps` (default
400) steps per round, 50% of each layer per round, rewound to θ0, for 3 rounds (12.5% density), and at rounds 1 and 3
(`--controls`) a branch with the ticket's own mask and fresh weights (`ticket.reset=random_reinit`), paired with it by
seed. The best lr is the one whose dense network has the highest mean validation accuracy. Liu et al. (and Frankle &
Carbin on CIFAR-10) find that the ticket's init beats random reinit only at a small lr, not at the optimal one.

Duration: on one idle thread a 1,500-step cnn1d round takes ~17 s and a 1,000-step MLP round ~10.5 s; part (a) is
~5.8 cnn1d rounds of 1,500 steps per seed, part (b) 5 MLP rounds of 400 steps per lr and seed: ~2 min per seed idle
(the sizes above were cut to fit a shared 2-core machine where a round ran 10–20× slower than that).

Other data (overrides apply to every lineage, so run one part with `--parts` and its own `--out`/`--page`):

    python scripts/repro_rethinking.py --parts b --experiment lth_lenet_mnist data.root=/path/to/mnist --steps 5000
    python scripts/repro_rethinking.py --parts a model=resnet20 model.name=resnet56 data=cifar10 \\
        data.root=/path/to/cifar10 optimizer=sgd optimizer.lr=0.1 ticket.finetune_lr=0.001 \\
        --structured-steps 64000 --out runs/repro/rethinking_cifar10 --page docs/results/rethinking_cifar10.md

Reruns skip finished lineages. Writes docs/results/rethinking.md (+ .png).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lth.analysis import CELL_SEP, grid, markdown, mean_std, paired_cell, plot_vs_density, subplots
from lth.reproduce import Job, study_main

# part (a)'s networks: (job variant, round) → row; a lineage's round 0 is its dense network
STRUCTURED = ("dense", "fine-tuned", "scratch-E", "scratch-B", "dense, budget B", "fine-tuned from dense-B",
              "fine-tuned, budget B")
SCRATCH = {"scratch-E": "scratch_e", "scratch-B": "scratch_b"}
TICKET_VARIANTS = ("ticket", "random reinit")
QUICK_STRUCTURED_STEPS = 20  # part (a)'s dense steps in --quick


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--parts", nargs="+", choices=("a", "b"), default=["a", "b"],
                    help="(a) fine-tuned vs scratch-E/B at equal budgets, (b) tickets vs random reinit, lr sweep")
    ap.add_argument("--structured-experiment", default="structured_cnn1d_mnist1d",
                    help="preset of part (a)'s lineages and branches (--experiment is part (b)'s)")
    ap.add_argument("--structured-steps", type=int, default=750,
                    help=f"part (a)'s dense steps T, fine-tuning T/4 (preset 1500; quick {QUICK_STRUCTURED_STEPS})")
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.03, 0.1, 0.3], help="part (b)'s SGD learning rates")
    ap.add_argument("--rounds", type=int, default=None, help="part (b)'s IMP rounds (default 3; quick 2)")
    ap.add_argument("--fraction", type=float, default=0.5, help="part (b)'s share of each layer pruned per round")
    ap.add_argument("--steps", type=int, default=400, help="part (b)'s training steps per round (not in --quick)")
    ap.add_argument("--controls", type=int, nargs="*", default=None,
                    help="part (b)'s rounds with a random-reinit branch (default every second from 1: 1 3; quick: all)")


def scratch_b_steps(overrides: list[str], steps: int) -> int:
    """Scratch-B's training steps for one pruning round of the lineage these overrides describe: `steps` × its dense
    over its pruned network's FLOPs, by the library's own pruning step and reset budget (no training)."""
    import torch

    from lth.cli import compose_config
    from lth.data import build_datamodule
    from lth.masks import MaskManager
    from lth.models import build_model
    from lth.plan import make_plan
    from lth.pruning.step import prune_step
    from lth.reset import RESETS, Budget
    from lth.structured import flops

    cfg = compose_config(overrides)
    data = build_datamodule(cfg.data.name, **cfg.data.options(cfg.seed))
    data.setup("fit")
    model = build_model(cfg.model.name, data.input_shape, data.num_classes, **cfg.model.args)
    manager = MaskManager(model, cfg.pruning.include, cfg.pruning.exclude)
    plan = make_plan(cfg, data, model, manager)
    weights = {n: p.detach() for n, p in zip(manager.names, manager.params)}
    masks = prune_step(1, cfg.pruning, plan.fraction, plan.overrides, plan.layout, manager.masks, {}, weights,
                       torch.Generator().manual_seed(0))  # how many units go is fixed; which ones does not matter
    pruned = flops(model, data.input_shape, masks)["flops_nonzero"]
    return RESETS["scratch_b"].steps(Budget(steps, plan.flops_dense, pruned, cfg.ticket.scratch_cap))


def _structured_jobs(args: argparse.Namespace, out: Path) -> list[Job]:
    """Part (a): per seed the dense → fine-tuned lineage, its scratch-E/B branches, and the budget-matched controls:
    a dense network trained scratch-B's steps B (then fine-tuned), and fine-tuning extended to B steps in all."""
    t = QUICK_STRUCTURED_STEPS if args.quick else args.structured_steps
    preset = f"experiment={args.structured_experiment}"
    finetune = f"ticket.finetune_steps={max(1, round(t / 4))}"  # Liu et al.: a quarter of the schedule
    budget = scratch_b_steps([f"data.root={args.data_root}", *args.overrides, preset, f"trainer.max_steps={t}"], t)
    args.budget = {"T": t, "B": budget}
    out_jobs = []
    for s in args.seeds:
        lineage = f"a/seed{s}/fine_tuned"
        labels = {"part": "a", "lr": None, "seed": s}
        # the lineage's round 0 is the dense network and its round 1 the fine-tuned one (see `report`)
        out_jobs.append(Job(lineage, (preset, finetune, f"trainer.max_steps={t}", f"seed={s}"),
                            {**labels, "variant": "fine-tuned", "dense": "dense"}))
        branch = (preset, finetune, f"trainer.max_steps={t}", f"seed={s}", f"branch.from={out / lineage}",
                  "branch.round=1")
        for variant, reset in SCRATCH.items():
            out_jobs.append(Job(f"a/seed{s}/{reset}", (*branch, f"ticket.reset={reset}"),
                                {**labels, "variant": variant}, after=(lineage,)))
        out_jobs.append(Job(f"a/seed{s}/finetune_budget", (*branch, "ticket.reset=continue",
                                                            f"ticket.finetune_steps={budget - t}"),
                            {**labels, "variant": "fine-tuned, budget B"}, after=(lineage,)))
        out_jobs.append(Job(f"a/seed{s}/dense_budget", (preset, finetune, f"trainer.max_steps={budget}", f"seed={s}"),
                            {**labels, "variant": "fine-tuned from dense-B", "dense": "dense, budget B"}))
    return out_jobs


def _ticket_jobs(args: argparse.Namespace, out: Path) -> list[Job]:
    """Part (b): per lr and seed an IMP lineage rewound to θ0 and random-reinit branches of its masks."""
    args.rounds = args.rounds if args.rounds is not None else (2 if args.quick else 3)
    controls = args.controls if args.controls is not None else (
        list(range(1, args.rounds + 1)) if args.quick else list(range(1, args.rounds + 1, 2)))
    bad = [r for r in controls if not 1 <= r <= args.rounds]
    if bad:
        raise SystemExit(f"--controls {bad}: control rounds must be within 1..{args.rounds}")
    steps = () if args.quick else (f"trainer.max_steps={args.steps}",)
    out_jobs = []
    for lr in args.lrs:
        common = ("optimizer=sgd", f"optimizer.lr={lr}", f"pruning.fraction={args.fraction}", *steps)
        for s in args.seeds:
            lineage = f"b/lr{lr:g}/seed{s}/ticket"
            labels = {"part": "b", "lr": lr, "seed": s}
            out_jobs.append(Job(lineage, (*common, f"seed={s}", f"ticket.rounds={args.rounds}", "ticket.reset=rewind"),
                                {**labels, "variant": "ticket"}))
            for r in controls:
                out_jobs.append(Job(f"b/lr{lr:g}/seed{s}/random_reinit_r{r:02d}",
                                    (*common, f"seed={s}", f"branch.from={out / lineage}", f"branch.round={r}",
                                     "ticket.reset=random_reinit"),
                                    {**labels, "variant": "random reinit"}, after=(lineage,)))
    return out_jobs


def jobs(args: argparse.Namespace, out: Path) -> list[Job]:
    return [*(_structured_jobs(args, out) if "a" in args.parts else ()),
            *(_ticket_jobs(args, out) if "b" in args.parts else ())]


def report(df, args: argparse.Namespace):
    parts = []
    bad = df[df["status"] != "ok"]
    if not bad.empty:
        parts.append("**Not every round trained cleanly:** " + ", ".join(
            f"{f} round {r}: {st}" for f, r, st in zip(bad["folder"], bad["round"], bad["status"])) + ".")
    a, b = df[df["part"] == "a"].copy(), df[df["part"] == "b"].copy()
    fig, axes = subplots(2, width=5.6, height=4.0)
    if not a.empty:
        a["network"] = [(d if r == 0 else v) for r, v, d in zip(a["round"], a["variant"], a["dense"])]
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


def _before(network: str, budget: dict[str, int]) -> int:
    """Steps a network's weights trained before its own round: the dense round it was fine-tuned from."""
    return {"fine-tuned": budget["T"], "fine-tuned, budget B": budget["T"],
            "fine-tuned from dense-B": budget["B"]}.get(network, 0)


# part (a)'s paired differences: (network, minus, Liu et al.'s direction: +1 network above, None no direction)
STRUCTURED_PAIRS = (
    ("scratch-E", "fine-tuned", None),
    ("scratch-B", "fine-tuned", 1),
    ("scratch-B", "fine-tuned, budget B", 1),
    ("scratch-B", "fine-tuned from dense-B", 1),
    ("fine-tuned, budget B", "fine-tuned", None),
    ("dense, budget B", "dense", None),
)


def _structured_tables(a, args: argparse.Namespace) -> list[str]:
    budget = args.budget
    rows = []
    for net in STRUCTURED:
        sub = a[a["network"] == net]
        if sub.empty:
            continue
        total = [int(x) + _before(net, budget) for x in sub["train_steps"]]
        rows.append([net, f"{100 * sub['density'].mean():.1f}", f"{sub['flops ratio'].mean():.3f}",
                     _steps(sub["train_steps"]),
                     _steps(total), mean_std(sub["test_acc"], sep=CELL_SEP),
                     mean_std(sub["early_stop_test_acc"], sep=CELL_SEP)])
    gaps = []
    for net, minus, direction in STRUCTURED_PAIRS:
        x, y = a[a["network"] == net], a[a["network"] == minus]
        if x.empty or y.empty:
            continue
        gaps.append([f"{net} − {minus}", *(paired_cell(x, y, m, direction=direction)
                                            for m in ("test_acc", "early_stop_test_acc"))])
    return [
        "## (a) Structured pruning: fine-tuned vs scratch-E vs scratch-B, at equal budgets",
        (f"Lineages and branches of this part run `experiment={args.structured_experiment}` in place of the "
         f"preset above, T = {budget['T']} dense steps; B = {budget['B']} is scratch-B's budget (T × the dense over "
         "the pruned network's FLOPs)."),
        ("Liu et al. (CIFAR-10, ResNet-56-B, L1-norm filter pruning): fine-tuned 92.67, scratch-E 92.54 ± 0.19, "
         "scratch-B 93.05 ± 0.18. FLOPs ratio: the network's multiply-accumulates per example over the dense "
         "network's (flops_nonzero / flops_dense); steps: the round's training steps; steps in all: with those of "
         "the dense network a fine-tuned one started from. *dense, budget B*: the dense network trained B steps; "
         "*fine-tuned from dense-B*: pruned from it and fine-tuned; *fine-tuned, budget B*: pruned from the T-step "
         "dense network and fine-tuned B − T steps, B in all. Cells: mean ± std over seeds, then the 95% interval "
         "for the mean."),
        markdown(["network", "density %", "FLOPs ratio", "steps", "steps in all", "test acc. end (%)",
                  "test acc. early stop (%)"], rows),
        ("Paired by seed (percentage points): mean difference ± std, its 95% interval, and with Liu et al.'s "
         "direction (scratch-B at least as accurate as fine-tuning) the verdict: *agree* only where the interval "
         "excludes 0 on that side."),
        markdown(["difference", "end of training", "early stop"], gaps),
        *_plateau(args),
    ]


def _plateau(args: argparse.Namespace) -> list[str]:
    """The B-step dense networks' test accuracy along training (from their evaluations): has it plateaued at T?"""
    from lth.io import read_jsonl

    t, b = args.budget["T"], args.budget["B"]
    at = [*range(t, b, t), b]
    curves = {}
    for s in args.seeds:
        path = Path(args.out) / f"a/seed{s}/dense_budget/round_00/evals.jsonl"
        if path.exists():
            curves[s] = {e["step"]: e for e in read_jsonl(path)}
    if not curves:
        return []
    rows = [[str(step), *(mean_std([c[step][m] for c in curves.values() if step in c], sep=CELL_SEP)
                          for m in ("test_acc", "val_acc"))] for step in at]
    return [f"### The dense network along B = {b} steps (is it still learning at T = {t}?)",
            markdown(["step", "test acc. (%)", "val. acc. (%)"], rows)]


def best_lr(b) -> float:
    """Part (b)'s best learning rate: the highest mean validation accuracy of the dense network (round 0)."""
    dense = b[(b["round"] == 0) & (b["variant"] == "ticket")]
    return float(dense.groupby("lr")["val_acc"].mean().idxmax())


def _ticket_tables(b, args: argparse.Namespace) -> list[str]:
    lrs = list(dict.fromkeys(b["lr"]))
    cols = [f"lr {lr:g}: {v}" for lr in lrs for v in TICKET_VARIANTS]
    best = best_lr(b)
    controlled = sorted(set(b[b["variant"] == "random reinit"]["density %"]), reverse=True)
    dense = b[(b["round"] == 0) & (b["variant"] == "ticket")]
    dense_rows = [[f"{lr:g}", *(mean_std(dense[dense["lr"] == lr][m], sep=CELL_SEP)
                                for m in ("val_acc", "test_acc"))] for lr in lrs]
    tables = []
    for metric, what in (("test_acc", "end of training"), ("early_stop_test_acc", "early stop")):
        gaps = []
        for d in controlled:
            at = b[b["density %"] == d]
            gaps.append([f"{d:.2f}", *(paired_cell(at[(at["lr"] == lr) & (at["variant"] == "ticket")],
                                                   at[(at["lr"] == lr) & (at["variant"] == "random reinit")],
                                                   metric, direction=1) for lr in lrs)])
        tables += [f"### Ticket minus random reinit at the same mask, {what} (percentage points, paired by seed)",
                   markdown(["density %", *(f"lr {lr:g}" + (" (best)" if lr == best else "") for lr in lrs)], gaps)]
    return [
        "## (b) Unstructured tickets vs random reinit over a learning-rate sweep",
        (f"IMP rewound to θ0 (ticket) vs the same mask with fresh weights (random reinit, a branch of the ticket's "
         f"lineage); SGD, momentum 0.9, {100 * args.fraction:g}% of each layer per round. Liu et al.: the ticket's "
         "init helps only at a small lr (0.01), not at the optimal one (0.1). The best lr is the one whose dense "
         f"network has the highest mean validation accuracy: **{best:g}**. Cells: mean ± std over seeds, then the "
         "95% interval for the mean."),
        "### The dense network (round 0) at each learning rate (%)",
        markdown(["lr", "val. acc. end", "test acc. end"], dense_rows),
        "### Test accuracy at the end of training (%)",
        grid(b, "density %", "column", "test_acc", _two_digits, cols),
        "### Test accuracy at the early-stop step (minimum validation loss) (%)",
        grid(b, "density %", "column", "early_stop_test_acc", _two_digits, cols),
        ("Paired differences: mean ± std, the 95% interval, and the verdict for the ticket being better "
         "(Frankle & Carbin's direction; Liu et al. expect it only at the small lr): *agree* only where the interval "
         "excludes 0 above it."),
        *tables,
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
    ax.set_xticks(range(len(nets)), [n.replace(", ", ",\n").replace(" from ", "\nfrom ") for n in nets],
                  fontsize=7, rotation=30, ha="right")
    lo = (a["early_stop_test_acc"].min() if a["early_stop_test_acc"].notna().any() else a["test_acc"].min()) * 100
    ax.set_ylim(max(0.0, min(lo, a["test_acc"].min() * 100) - 5), None)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("(a) 50% filters pruned: fine-tuned vs scratch")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)


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
