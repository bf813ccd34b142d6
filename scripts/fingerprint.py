"""Fingerprint the results of a fixed set of small runs (every kind, several resets), to check that a change of the
code leaves results bit-identical on CPU.

    python scripts/fingerprint.py --out /tmp/fp_before.json      # on the old code
    python scripts/fingerprint.py --out /tmp/fp_after.json --compare /tmp/fp_before.json

A fingerprint holds, per run folder: every round record (without its wall-clock time) and a SHA-256 of every tensor in
each round's mask.pt and trained.pt and in snapshots.pt.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

# (folder, overrides); "{root}" is replaced by the runs' temporary folder
RUNS: list[tuple[str, list[str]]] = [
    ("smoke", ["experiment=smoke", "ticket.rounds=2", "ticket.rewind_step=10"]),
    ("smoke_global", ["experiment=smoke", "ticket.rounds=2", "pruning.scope=global", "pruning.output_fraction=0.25"]),
    ("freeze_init", ["experiment=smoke", "ticket.mask0=freeze_init", "ticket.reset=signed_constant"]),
    ("branch_reinit", ["experiment=smoke", "branch.from={root}/smoke", "branch.round=2", "ticket.reset=random_reinit"]),
    ("branch_random_mask", ["experiment=smoke", "branch.from={root}/smoke", "branch.round=1",
                            "branch.random_mask=true"]),
    ("branch_reshuffle", ["experiment=smoke", "branch.from={root}/smoke", "branch.round=2", "ticket.reset=reshuffle"]),
    ("continue", ["experiment=smoke", "ticket.rounds=2", "ticket.reset=continue", "ticket.finetune_lr=0.0005",
                  "ticket.finetune_steps=15"]),
    ("gradual", ["experiment=gmp_digits", "trainer.max_steps=40", "trainer.eval_every=20", "trainer.checkpoint_every=20",
                 "gradual.start_step=10", "gradual.every=5", "gradual.prunings=4"]),
    ("edge_popup", ["experiment=supermask_digits", "trainer.max_steps=40", "trainer.eval_every=20",
                    "trainer.checkpoint_every=20"]),
    ("bernoulli", ["experiment=supermask_digits", "supermask=bernoulli", "trainer.max_steps=40",
                   "trainer.eval_every=20", "trainer.checkpoint_every=20"]),
    ("heuristic", ["experiment=smoke", "supermask=heuristic", "supermask.from={root}/smoke", "supermask.round=2",
                   "supermask.density=[0.2,0.1]"]),
    ("structured", ["experiment=structured_imp_digits", "trainer.max_steps=40", "trainer.eval_every=20",
                    "trainer.checkpoint_every=20", "ticket.rounds=2"]),
    ("structured_scratch_b", ["experiment=structured_imp_digits", "trainer.max_steps=40", "trainer.eval_every=20",
                              "trainer.checkpoint_every=20", "branch.from={root}/structured", "branch.round=2",
                              "ticket.reset=scratch_b"]),
    ("structured_random_mask", ["experiment=structured_imp_digits", "trainer.max_steps=40", "trainer.eval_every=20",
                                "trainer.checkpoint_every=20", "branch.from={root}/structured", "branch.round=1",
                                "branch.random_mask=true", "ticket.reset=scratch_e"]),
    ("pai_synflow", ["experiment=pai_digits", "trainer.max_steps=40", "trainer.eval_every=20",
                     "trainer.checkpoint_every=20", "pruning.synflow_iterations=10", "pruning.target_density=0.05"]),
    ("pai_snip", ["experiment=pai_digits", "trainer.max_steps=40", "trainer.eval_every=20", "trainer.checkpoint_every=20",
                  "pruning.criterion=snip", "pruning.target_density=0.05"]),
    ("pai_invert", ["experiment=pai_digits", "trainer.max_steps=40", "trainer.eval_every=20",
                    "trainer.checkpoint_every=20", "branch.from={root}/pai_snip", "branch.round=0",
                    "branch.sanity=invert"]),
]


def _digest(state: dict[str, Any]) -> dict[str, str]:
    import torch

    out = {}
    for k, v in sorted(state.items()):
        if isinstance(v, torch.Tensor):
            out[k] = hashlib.sha256(v.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
        elif isinstance(v, dict):
            out.update({f"{k}.{a}": b for a, b in _digest(v).items()})
    return out


def fingerprint(folder: Path) -> dict[str, Any]:
    """Records (minus wall time) and tensor digests of one run folder."""
    import torch

    from lth import masks

    records = [json.loads(x) for x in (folder / "rounds.jsonl").read_text().splitlines() if x.strip()]
    for r in records:
        r.pop("wall_seconds", None)
    fp: dict[str, Any] = {"records": records}
    for d in sorted(folder.glob("round_*")):
        if (d / "mask.pt").exists():
            fp[f"{d.name}/mask"] = _digest(masks.load(d / "mask.pt"))
        for step in sorted((d / "masks").glob("step_*.pt")):  # a gradual run's mask at each pruning step
            fp[f"{d.name}/masks/{step.name}"] = _digest(masks.load(step))
        if (d / "trained.pt").exists():
            fp[f"{d.name}/trained"] = _digest(torch.load(d / "trained.pt", weights_only=True))
    if (folder / "snapshots.pt").exists():
        fp["snapshots"] = _digest(torch.load(folder / "snapshots.pt", weights_only=True))
    return fp


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="JSON file for the fingerprints")
    ap.add_argument("--compare", default=None, help="an earlier fingerprint file: report every difference")
    ap.add_argument("--data-root", default="data")
    args = ap.parse_args(argv)

    import torch

    from lth.cli import compose_config
    from lth.runner import run

    torch.set_num_threads(1)
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in RUNS:
            ov = [o.replace("{root}", tmp) for o in overrides] + [f"data.root={args.data_root}"]
            run(compose_config(ov), Path(tmp) / name, sinks=[])
            result[name] = json.loads(json.dumps(fingerprint(Path(tmp) / name)).replace(tmp, "<runs>"))
            print(f"ran {name}", flush=True)
    Path(args.out).write_text(json.dumps(result, indent=1, sort_keys=True))
    print(f"wrote {args.out}")
    if args.compare:
        old = json.loads(Path(args.compare).read_text())
        diffs = _differences(old, result)
        for d in diffs:
            print("DIFFERS:", d)
        print(f"{len(diffs)} difference(s) over {len(result)} runs")
        return 1 if diffs else 0
    return 0


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}/{k}: only in {'new' if k in b else 'old'}")
            else:
                out += _differences(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} -> {b!r}"]


if __name__ == "__main__":
    sys.exit(main())
