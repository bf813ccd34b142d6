"""Knowledge distillation (Hinton et al. 2015) into lottery tickets and into compacted networks, on MNIST-1D.

    python scripts/repro_distillation.py                 # 4 parts, 5 seeds, 100 lineages: ~80 min on 2 busy cores
    python scripts/repro_distillation.py --quick         # seconds: checks the pipeline, not the claim

Every distilled round trains on α·T²·KL(p_teacher(T) ‖ p_student(T)) + (1 − α)·CE with `--alpha` (default 0.9) and
`--temperature` (default 4), the teacher being the lineage's own dense round 0 (`train.distill.teacher=[]`) unless
said otherwise; every plain round runs with `train.distill.alpha=0` (bit for bit the plain loss) so that its
agreement with the same teacher is recorded too.

(a) Tickets. Per seed, one IMP lineage of the MNIST-1D MLP (`experiment=lth_mnist1d`: 40-500-500-10, Adam 2e-2,
batch 100) with `--steps` (default 500) steps per round, rewound to θ0, pruning 1 − 10^−0.1 ≈ 20.6% of each layer
per round for 20 rounds, so rounds 7, 13, 17 and 20 are at 20%, 5%, 2% and 1% density. At each of those rounds two
branches train the ticket's mask with distillation from the dense parent (round 0): rewound to θ0 (the distilled
ticket; the plain ticket is the lineage's own round) and with fresh weights (`ticket.reset=random_reinit`, the
control).
(b) Compacted networks. Per seed, one `experiment=structured_cnn1d_mnist1d` lineage (MNIST-1D CNN, `--cnn-steps`
default 800 steps dense) pruning 50% of each conv's filters per round by L1 norm for 2 rounds (50% and 25% of the
filters kept), fine-tuned after each (`ticket.reset=continue`, a quarter of the steps). Branches of rounds 1 and 2:
the fine-tuning distilled, and the compacted network from a fresh init trained for scratch-B's budget (dense FLOPs,
at most `--scratch-cap` × the dense steps) without and with distillation.
(c) Temperature T ∈ `--temperatures` (default 1 2 4 8) for the 5% tickets (round 13).
(d) An ensemble of every seed's dense network (5 by default) as the teacher of the 5% tickets vs the single dense parent.

Anchor (Hinton et al., MNIST): a 784-800-800-10 net makes 146 test errors trained alone and 74 distilled from a
784-1200-1200-10 teacher (67 errors), T = 20. Writes docs/results/distillation.md (+ .png).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from lth.analysis import CELL_SEP, markdown, mean_std, paired_cell, plot_vs_density, subplots
from lth.reproduce import Job, study_main, unclean_rounds

FRACTION = 1 - 10 ** -0.1  # 20 rounds reach 1%; rounds 7, 13, 17 hit 20%, 5%, 2% (to 0.3%)
DENSITY_ROUNDS = (7, 13, 17, 20)
T_ROUND = 13  # 5%: the temperature and ensemble parts
TICKETS = ("ticket", "ticket + distillation", "random reinit + distillation")
COMPACTED = ("fine-tuned", "fine-tuned + distillation", "scratch-B", "scratch-B + distillation")


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--alpha", type=float, default=0.9, help="train.distill.alpha of the distilled runs")
    ap.add_argument("--temperature", type=float, default=4.0, help="train.distill.temperature of parts (a, b, d)")
    ap.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0], help="part (c)'s T")
    ap.add_argument("--steps", type=int, default=500, help="training steps per round of the MLP (not in --quick)")
    ap.add_argument("--cnn-steps", type=int, default=800, help="part (b)'s dense steps (not in --quick)")
    ap.add_argument("--scratch-cap", type=float, default=2.0, help="part (b)'s scratch-B steps: at most × dense")
    ap.add_argument("--parts", nargs="+", choices=("a", "b", "c", "d"), default=["a", "b", "c", "d"])


def _distill(args: argparse.Namespace, alpha: float | None = None, t: float | None = None) -> tuple[str, ...]:
    a = args.alpha if alpha is None else alpha
    return ("train.distill.enabled=true", f"train.distill.alpha={a:g}",
            f"train.distill.temperature={args.temperature if t is None else t:g}")


def jobs(args: argparse.Namespace, out: Path) -> list[Job]:
    rounds = (1, 2) if args.quick else DENSITY_ROUNDS
    t_round = rounds[-1] if args.quick else T_ROUND
    imp = ("ticket.reset=rewind", f"pruning.fraction={0.5 if args.quick else FRACTION:.6f}",
           f"ticket.rounds={rounds[-1]}", *(() if args.quick else (f"trainer.max_steps={args.steps}",)))
    steps = () if args.quick else (f"trainer.max_steps={args.steps}",)
    out_jobs: list[Job] = []
    lineages = {s: f"a/seed{s}/imp" for s in args.seeds}
    for s in args.seeds:
        lineage = lineages[s]
        if {"a", "c", "d"} & set(args.parts):  # the tickets' lineage (and dense parent) of parts (a), (c), (d)
            out_jobs.append(Job(lineage, (f"seed={s}", *imp, *_distill(args, alpha=0)),
                                {"part": "a", "variant": "ticket", "seed": s}))

        def branch(folder: str, r: int, reset: str, labels: dict, extra: tuple[str, ...] = (),
                   after: tuple[str, ...] = (lineage,), s: int = s, lineage: str = lineage) -> Job:
            return Job(folder, (f"seed={s}", f"branch.from={out / lineage}", f"branch.round={r}",
                                f"ticket.reset={reset}", *steps, *extra), {**labels, "seed": s}, after=after)

        if "a" in args.parts:
            for r in rounds:
                out_jobs.append(branch(f"a/seed{s}/distilled_r{r:02d}", r, "rewind",
                                       {"part": "a", "variant": TICKETS[1]}, _distill(args)))
                out_jobs.append(branch(f"a/seed{s}/reinit_distilled_r{r:02d}", r, "random_reinit",
                                       {"part": "a", "variant": TICKETS[2]}, _distill(args)))
        if "c" in args.parts:
            for t in args.temperatures:
                if t == args.temperature and "a" in args.parts:
                    continue  # part (a)'s distilled ticket of that round
                out_jobs.append(branch(f"c/seed{s}/T{t:g}", t_round, "rewind",
                                       {"part": "c", "variant": f"T={t:g}", "T": t}, _distill(args, t=t)))
        if "d" in args.parts:
            teachers = ",".join(str(out / lineages[x]) for x in args.seeds)
            out_jobs.append(branch(f"d/seed{s}/ensemble", t_round, "rewind",
                                   {"part": "d", "variant": f"ensemble of {len(args.seeds)}"},
                                   (*_distill(args), f"train.distill.teacher=[{teachers}]"),
                                   after=tuple(lineages.values())))
        if "b" in args.parts:
            out_jobs += _compacted_jobs(args, out, s)
    return out_jobs


def _compacted_jobs(args: argparse.Namespace, out: Path, s: int) -> list[Job]:
    if args.quick:  # the smoke MLP's neurons stand in for the CNN's filters
        base = ("pruning.granularity=neuron", "pruning.fraction=0.5", "ticket.finetune_steps=5")
    else:
        base = ("experiment=structured_cnn1d_mnist1d", f"trainer.max_steps={args.cnn_steps}",
                f"ticket.finetune_steps={args.cnn_steps // 4}")
    base = (f"seed={s}", *base, "ticket.rounds=2", "ticket.reset=continue", f"ticket.scratch_cap={args.scratch_cap:g}")
    lineage = f"b/seed{s}/fine_tuned"
    out_jobs = [Job(lineage, (*base, *_distill(args, alpha=0)), {"part": "b", "variant": "fine-tuned", "seed": s})]
    for r in (1, 2):
        for folder, reset, variant, distill in (
            ("fine_tuned_distilled", "continue", COMPACTED[1], _distill(args)),
            ("scratch_b", "scratch_b", COMPACTED[2], _distill(args, alpha=0)),
            ("scratch_b_distilled", "scratch_b", COMPACTED[3], _distill(args)),
        ):
            out_jobs.append(Job(f"b/seed{s}/{folder}_r{r}", (*base, f"branch.from={out / lineage}",
                                                             f"branch.round={r}", f"ticket.reset={reset}", *distill),
                                {"part": "b", "variant": variant, "seed": s}, after=(lineage,)))
    return out_jobs


# ----------------------------------------------------------------------------------------------------------- report
def report(df, args: argparse.Namespace):
    parts = unclean_rounds(df)
    df = df.copy()
    df["density %"] = (100 * df["density"]).round(2)
    fig, axes = subplots(4, width=5.0, height=3.6)
    a = df[df["part"] == "a"]
    imp = a[a["variant"] == "ticket"]
    dense = imp[imp["round"] == 0]
    if not dense.empty:
        parts.append(f"Dense parents (round 0, the teachers of every part but (d)'s ensemble): test accuracy "
                     f"{mean_std(dense['test_acc'])} % (MNIST-1D MLP); the compacted part's dense CNNs: "
                     f"{mean_std(df[(df['part'] == 'b') & (df['round'] == 0)]['test_acc'])} %.")
    parts.append(PAIRED_NOTE)
    parts += _tickets(a, args, axes[0])
    parts += _compacted(df[df["part"] == "b"], args, axes[1])
    parts += _temperatures(df, a, args, axes[2])
    parts += _ensemble(df, a, args, axes[3])
    fig.suptitle(f"Knowledge distillation into tickets and compacted networks (α={args.alpha:g}; mean ± std)")
    return "\n\n".join(parts), fig


PAIRED_NOTE = ("Cells: mean ± std over seeds, then the 95% t interval for the mean; differences are paired by seed, "
               "with \"agree\" where the interval excludes 0 in the direction Hinton et al. (distillation helps) or "
               "the lottery-ticket hypothesis (the ticket beats its reinitialised control) expect, \"opposite\" "
               "where it excludes 0 the other way, \"inconclusive\" otherwise.")


def _acc_cell(sub, metric: str = "test_acc") -> str:
    return mean_std(sub[metric], sep=CELL_SEP)


def _paired(x, y, metric: str = "test_acc", direction: int | None = +1) -> str:
    """x − y paired by seed (percentage points) with its interval, and the verdict for `direction` (None: none)."""
    return paired_cell(x, y, metric, direction=direction)


def _finish_panel(ax, title: str) -> None:
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=7)


def _tickets(a, args, ax) -> list[str]:
    if a.empty:
        ax.set_axis_off()
        return []
    levels = sorted(set(a[a["variant"] == TICKETS[1]]["round"]))
    rows, gaps = [], []
    for r in levels:
        cells = {v: a[(a["variant"] == v) & (a["round"] == r)] for v in TICKETS}
        d = cells["ticket"]["density"].mean()
        rows.append([f"{100 * d:.2f}", *(_acc_cell(cells[v]) for v in TICKETS),
                     *(_acc_cell(cells[v], "teacher_agreement") for v in TICKETS[:2])])
        gaps.append([f"{100 * d:.2f}", _paired(cells[TICKETS[1]], cells["ticket"]),
                     _paired(cells[TICKETS[1]], cells["ticket"], "early_stop_test_acc"),
                     _paired(cells[TICKETS[1]], cells[TICKETS[2]])])
    for v, style in zip(TICKETS, ("-", "--", ":")):
        sub = a[a["variant"] == v]
        if v == "ticket":
            sub = sub[sub["round"].isin([0, *levels])]
        plot_vs_density(ax, sub, "test_acc", "variant", at="density", scale=100, linestyle=style)
    ax.set_title("(a) tickets: with vs without distillation")
    ax.legend(fontsize=7)
    return [
        "## (a) Tickets trained with and without distillation from the dense parent",
        ("IMP masks of the plain lineage (rewound to θ0); the distilled ticket trains the same mask from the same θ0 "
         "with the distillation loss (teacher: that lineage's round 0); the control trains it from fresh weights "
         "with the same teacher. Test accuracy at the end of training (%) and top-1 agreement with the teacher on "
         "the test set (%)."),
        markdown(["density %", "ticket", "ticket + distillation", "random reinit + distillation",
                  "agreement: ticket", "agreement: distilled"], rows),
        "Paired by seed (percentage points):",
        markdown(["density %", "distilled − plain (end)", "distilled − plain (early stop)",
                  "distilled ticket − distilled reinit"], gaps),
    ]


def _compacted(b, args, ax) -> list[str]:
    if b.empty:
        ax.set_axis_off()
        return []
    b = b[b["round"] > 0].copy()
    b["flops ratio"] = b["flops_nonzero"] / b["flops_dense"]
    rows, gaps = [], []
    for r in sorted(set(b["round"])):
        at = b[b["round"] == r]
        kept = 100 * 0.5 ** r
        for v in COMPACTED:
            sub = at[at["variant"] == v]
            if sub.empty:
                continue
            rows.append([f"{kept:g}", v, f"{sub['flops ratio'].mean():.3f}", f"{sub['train_steps'].mean():.0f}",
                         _acc_cell(sub), _acc_cell(sub, "early_stop_test_acc"), _acc_cell(sub, "teacher_agreement")])
        cells = {v: at[at["variant"] == v] for v in COMPACTED}
        gaps.append([f"{kept:g}", _paired(cells[COMPACTED[3]], cells[COMPACTED[2]]),
                     _paired(cells[COMPACTED[3]], cells["fine-tuned"], direction=None),
                     _paired(cells[COMPACTED[1]], cells["fine-tuned"])])
    width = 0.2
    for i, v in enumerate(COMPACTED):
        g = b[b["variant"] == v].groupby("round")["test_acc"]
        m, s = g.mean() * 100, g.std().fillna(0) * 100
        ax.bar([x + (i - 1.5) * width for x in range(len(m))], m.values, width, yerr=s.values, capsize=2, label=v)
    ax.set_xticks(range(len(set(b["round"]))), [f"{100 * 0.5 ** r:g}% filters kept" for r in sorted(set(b["round"]))])
    lo = b["test_acc"].min() * 100
    ax.set_ylim(max(0.0, lo - 5), None)
    _finish_panel(ax, "(b) compacted CNN: distilled vs fine-tuned vs scratch-B")
    return [
        "## (b) Compacted networks: distilled vs fine-tuned vs scratch-B",
        ("L1-norm filter pruning of the MNIST-1D CNN (50% of each conv's filters per round, the output layer kept), "
         "its FLOPs ratio (flops_nonzero / flops_dense, what the compacted network computes) and training steps "
         "(fine-tuning: after the dense round; scratch-B: dense FLOPs, capped at "
         f"{args.scratch_cap:g} × the dense steps). Teacher: the lineage's dense round 0."),
        markdown(["filters kept %", "network", "FLOPs ratio", "steps", "test acc. end (%)",
                  "test acc. early stop (%)", "agreement (%)"], rows),
        "Paired by seed (percentage points, end of training):",
        markdown(["filters kept %", "scratch-B: distilled − plain", "distilled scratch-B − fine-tuned",
                  "fine-tuned: distilled − plain"], gaps),
    ]


def _temperatures(df, a, args, ax) -> list[str]:
    import pandas as pd

    t_round = 2 if args.quick else T_ROUND
    c = df[df["part"] == "c"].copy()
    if c.empty and "c" not in args.parts:
        ax.set_axis_off()
        return []
    base = a[(a["variant"] == TICKETS[1]) & (a["round"] == t_round)].copy()
    base["T"] = args.temperature
    c = pd.concat([c, base])
    plain = a[(a["variant"] == "ticket") & (a["round"] == t_round)]
    rows = []
    for t in sorted(set(c["T"])):
        sub = c[c["T"] == t]
        rows.append([f"{t:g}", _acc_cell(sub), _paired(sub, plain), _acc_cell(sub, "teacher_agreement"),
                     f"{sub['teacher_kl'].mean():.3f}"])
    g = c.groupby("T")["test_acc"]
    ax.errorbar(list(g.mean().index), list(g.mean() * 100), yerr=list(g.std().fillna(0) * 100), marker="o",
                capsize=3, label="distilled ticket")
    if not plain.empty:
        ax.axhline(plain["test_acc"].mean() * 100, color="gray", linestyle="--", label="plain ticket")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("temperature T")
    _finish_panel(ax, f"(c) temperature, tickets at {plain['density'].mean() * 100:.1f}% density" if not plain.empty
                  else "(c) temperature")
    return [
        f"## (c) Temperature (tickets at {plain['density'].mean() * 100:.2f}% density)" if not plain.empty else
        "## (c) Temperature",
        ("The same mask and θ0, distilled at each T (α fixed); KL: the student's KL(p_teacher ‖ p_student) at T = 1 "
         "on the test set (nats). Plain ticket: " + mean_std(plain["test_acc"]) + " %."),
        markdown(["T", "test acc. end (%)", "distilled − plain (pp)", "agreement (%)", "KL"], rows),
    ]


def _ensemble(df, a, args, ax) -> list[str]:
    d = df[df["part"] == "d"]
    if d.empty:
        ax.set_axis_off()
        return []
    t_round = 2 if args.quick else T_ROUND
    single = a[(a["variant"] == TICKETS[1]) & (a["round"] == t_round)]
    plain = a[(a["variant"] == "ticket") & (a["round"] == t_round)]
    rows = [[name, _acc_cell(sub, "teacher_test_acc"), _acc_cell(sub), _paired(sub, plain),
             _acc_cell(sub, "teacher_agreement")]
            for name, sub in (("one dense network (the parent)", single), (d["variant"].iloc[0], d))]
    labels = ["plain", "one teacher", "ensemble"]
    subs = [plain, single, d]
    ax.bar(range(3), [s["test_acc"].mean() * 100 for s in subs], yerr=[s["test_acc"].std() * 100 for s in subs],
           capsize=3, color=["gray", "C0", "C1"])
    teach = [math.nan, single["teacher_test_acc"].mean() * 100, d["teacher_test_acc"].mean() * 100]
    ax.plot(range(3), teach, "k_", markersize=25, label="teacher's accuracy")
    ax.set_xticks(range(3), labels)
    ax.set_ylim(max(0.0, min(s["test_acc"].min() for s in subs) * 100 - 5), None)
    _finish_panel(ax, "(d) ensemble teacher vs one")
    return [
        "## (d) An ensemble of dense teachers vs one",
        ("Tickets of part (c)'s density distilled from the average of the softened probabilities of the "
         f"{len(args.seeds)} seeds' dense networks (its own parent among them) vs from the parent alone "
         f"(T = {args.temperature:g}). Plain ticket: {mean_std(plain['test_acc'])} %."),
        markdown(["teacher", "teacher test acc. (%)", "student test acc. (%)", "student − plain (pp)",
                  "agreement (%)"], rows),
    ]


if __name__ == "__main__":
    study_main("distillation", "Knowledge distillation into tickets and compacted networks", __doc__, jobs, report,
               add_args=add_args)
