"""MNIST-1D lottery tickets: IMP lineages over seeds plus random-mask and random-reinit controls → a Markdown table.

    python scripts/mnist1d_tickets.py --seeds 0 1 2 --rounds 10 --out runs/mnist1d_tickets

Each lineage is `lth-run experiment=lth_mnist1d seed=S`; each control is a branch of one of its rounds. Reruns skip
finished rounds, so the script can be interrupted and restarted.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from lth.cli import compose_config
from lth.runner import run


def mean_std(xs: list[float]) -> str:
    """'m ± s' in percent (s = sample std; '-' for one value)."""
    if not xs:
        return "–"
    m = 100 * statistics.mean(xs)
    return f"{m:.1f} ± {100 * statistics.stdev(xs):.1f}" if len(xs) > 1 else f"{m:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--controls", type=int, nargs="*", default=[3, 6, 8, 9], help="rounds that get control branches")
    ap.add_argument("--out", default="runs/mnist1d_tickets")
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--table", default="docs/results/mnist1d_tickets.md")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = ap.parse_args()
    out = Path(args.out)
    common = ["experiment=lth_mnist1d", f"ticket.rounds={args.rounds}", f"data.root={args.data_root}", *args.overrides]
    acc: dict[tuple[str, int], list[float]] = {}
    density: dict[int, float] = {}
    for seed in args.seeds:
        lineage = out / f"seed{seed}" / "imp"
        for rec in run(compose_config([*common, f"seed={seed}"]), lineage):
            acc.setdefault(("ticket", rec["round"]), []).append(rec["test_acc"])
            density[rec["round"]] = rec["density"]
        for r in args.controls:
            for control, extra in (
                ("random mask", ["branch.random_mask=true", "ticket.reset=rewind"]),
                ("random reinit", ["ticket.reset=random_reinit"]),
            ):
                folder = out / f"seed{seed}" / f"{control.replace(' ', '_')}_r{r:02d}"
                branch = [f"branch.from={lineage}", f"branch.round={r}", *extra]
                (rec,) = run(compose_config([*common, f"seed={seed}", *branch]), folder)
                acc.setdefault((control, r), []).append(rec["test_acc"])
    rows = [
        "| round | density | ticket (rewind to θ0) | random mask | random reinit |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(density):
        cells = [mean_std(acc.get((k, r), [])) for k in ("ticket", "random mask", "random reinit")]
        rows.append(f"| {r} | {density[r]:.3f} | " + " | ".join(cells) + " |")
    table = "\n".join(rows)
    header = (
        f"Test accuracy (%) at the end of each round, mean ± std over seeds {args.seeds}; "
        f"`lth-run experiment=lth_mnist1d` ({' '.join(args.overrides) or 'no extra overrides'}).\n\n"
    )
    Path(args.table).parent.mkdir(parents=True, exist_ok=True)
    Path(args.table).write_text(header + table + "\n")
    print(header + table)


if __name__ == "__main__":
    main()
