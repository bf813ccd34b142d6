"""Check lth on a GPU machine in one command: prints a pass/fail table and writes JSON.

    python scripts/gpu_check.py                 # on a machine with CUDA (two GPUs add the DDP check)
    python scripts/gpu_check.py --quick         # toy benchmark sizes

Checks: the step benchmark on CUDA (lth vs the raw loop vs Lightning's floor, LeNet-300-100 and conv4); a smoke
lineage run twice with `trainer.deterministic=true`, bit-identical; `trainer.precision=bf16-mixed` leaves every pruned
weight exactly 0; a training round whose steps run under `torch.cuda.set_sync_debug_mode("error")` (no host sync);
with two GPUs, every DDP rank trains under the same masks. Without CUDA it says so, runs the determinism and bf16 checks
on the CPU and exits 0 when they pass.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's benchmarks/ and scripts/ (not in the wheel)
sys.path.insert(0, str(ROOT / "scripts"))

SMOKE = ["experiment=smoke", "ticket.rounds=2", "logger.csv=false"]


def _run(overrides: list[str], out: Path, callbacks: list[Any] | None = None) -> Path:
    from lth.cli import compose_config
    from lth.runner import run

    run(compose_config(overrides), out, sinks=[], callbacks=callbacks or [])
    return out


def _device_overrides(device: str) -> list[str]:
    return ["trainer.accelerator=gpu", "trainer.devices=1"] if device == "cuda" else ["trainer.accelerator=cpu"]


def check_determinism(device: str, tmp: Path, data_root: str) -> dict[str, Any]:
    """The smoke lineage twice with deterministic=true: records, masks and weights bit-identical."""
    from fingerprint import _differences, fingerprint

    ov = SMOKE + _device_overrides(device) + ["trainer.deterministic=true", f"data.root={data_root}"]
    a = fingerprint(_run(ov, tmp / "det_a"))
    b = fingerprint(_run(ov, tmp / "det_b"))
    diffs = _differences(a, b)
    return {"pass": not diffs, "detail": f"{len(diffs)} difference(s)" + (f": {diffs[:3]}" if diffs else "")}


def check_bf16(device: str, tmp: Path, data_root: str) -> dict[str, Any]:
    """bf16-mixed training: every pruned weight of every round's trained state is exactly 0."""
    import torch

    from lth import masks as masks_lib

    folder = _run(SMOKE + _device_overrides(device) + ["trainer.precision=bf16-mixed", f"data.root={data_root}"],
                  tmp / "bf16")
    worst, rounds = 0.0, 0
    for d in sorted(folder.glob("round_*")):
        mask = masks_lib.load(d / "mask.pt")
        state = torch.load(d / "trained.pt", map_location="cpu", weights_only=True)
        for name, m in mask.items():
            worst = max(worst, float(state[name][~m].abs().max()) if (~m).any() else 0.0)
        rounds += 1
    pruned = sum(not bool(m.all()) for d in sorted(folder.glob("round_*")) for m in masks_lib.load(d / "mask.pt").values())
    ok = rounds > 1 and pruned > 0 and worst == 0.0
    return {"pass": ok, "detail": f"{rounds} rounds, largest |pruned weight| = {worst}"}


def _sync_guard() -> Any:
    import pytorch_lightning as pl
    import torch

    class SyncGuard(pl.Callback):
        """Training steps (forward, backward, masking, optimizer step) under set_sync_debug_mode("error")."""

        def __init__(self) -> None:
            self.steps = 0

        def on_train_batch_start(self, *args: Any) -> None:
            torch.cuda.set_sync_debug_mode("error")

        def on_train_batch_end(self, *args: Any) -> None:
            torch.cuda.set_sync_debug_mode(0)
            self.steps += 1

        def on_exception(self, *args: Any) -> None:
            torch.cuda.set_sync_debug_mode(0)

    return SyncGuard()


def check_sync_free(tmp: Path, data_root: str) -> dict[str, Any]:
    """A training round (IMP, then edge-popup) on CUDA whose steps never synchronise with the host."""
    guard = _sync_guard()
    base = SMOKE + _device_overrides("cuda") + [f"data.root={data_root}", "trainer.log_every_n_steps=1000",
                                                "trainer.deterministic=false"]
    _run(base, tmp / "sync_imp", [guard])
    _run(["experiment=supermask_digits", "trainer.max_steps=40", "trainer.eval_every=20",
                     "trainer.log_every_n_steps=1000", f"data.root={data_root}"] + _device_overrides("cuda"),
         tmp / "sync_edge_popup", [guard])
    return {"pass": guard.steps > 0, "detail": f"{guard.steps} steps without a host sync"}


def _agreement() -> Any:
    import pytorch_lightning as pl
    import torch

    class MaskAgreement(pl.Callback):
        """At the end of each fit, every rank's masks digest is gathered; rank 0 writes whether they agree."""

        def __init__(self, out: Path) -> None:
            self.out = out

        def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            manager = next(cb.manager for cb in trainer.callbacks if hasattr(cb, "manager"))
            h = hashlib.sha256(b"".join(manager.masks[n].cpu().numpy().tobytes() for n in manager.names)).digest()
            mine = torch.tensor([int.from_bytes(h[:7], "little")], device=pl_module.device)
            gathered = trainer.strategy.all_gather(mine).reshape(-1).tolist()
            if trainer.is_global_zero:
                with open(self.out, "a") as f:
                    f.write(json.dumps({"digests": gathered, "agree": len(set(gathered)) == 1}) + "\n")

    return MaskAgreement


def check_ddp(tmp: Path, data_root: str) -> dict[str, Any]:
    """Two GPUs under DDP: every rank trains each round under the same masks."""
    log = tmp / "agreement.jsonl"
    cb = _agreement()(log)
    _run(SMOKE + ["trainer.accelerator=gpu", "trainer.devices=2", "trainer.strategy=ddp_spawn",
                  f"data.root={data_root}"], tmp / "ddp", [cb])
    rows = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    return {"pass": bool(rows) and all(r["agree"] and len(r["digests"]) == 2 for r in rows),
            "detail": f"{len(rows)} fits checked"}


def check_bench(quick: bool) -> dict[str, Any]:
    """The step benchmark on CUDA: lth vs the raw loop vs Lightning's floor (ratios reported, not judged here)."""
    from benchmarks.harness import run

    results = run(quick=quick, device="cuda", sections=["step"])
    ratios = {case: {n: round(r, 3) for n, r in s["judged_ratio"].items()} for case, s in results["step"].items()}
    return {"pass": True, "detail": json.dumps(ratios), "results": results["step"]}


def main(argv: list[str] | None = None) -> int:
    """Run the checks this machine can run; print the table; write the JSON; 1 if any check failed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="JSON file (default docs/gpu_check_<cpu|cuda>.json)")
    ap.add_argument("--quick", action="store_true", help="toy benchmark sizes")
    ap.add_argument("--data-root", default="data")
    args = ap.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if not cuda:
        print("CUDA is not available: running the CPU parts only (determinism, bf16-mixed exact zeros).")
    checks: dict[str, Callable[[Path], dict[str, Any]]] = {
        f"deterministic smoke lineage twice, bit-identical ({device})": lambda t: check_determinism(device, t,
                                                                                                  args.data_root),
        f"bf16-mixed: pruned weights exactly 0 ({device})": lambda t: check_bf16(device, t, args.data_root),
    }
    skipped: dict[str, str] = {}
    names = ["step benchmark on CUDA", "training steps under set_sync_debug_mode('error')", "2-GPU DDP mask agreement"]
    if cuda:
        checks[names[0]] = lambda t: check_bench(args.quick)
        checks[names[1]] = lambda t: check_sync_free(t, args.data_root)
        if torch.cuda.device_count() >= 2:
            checks[names[2]] = lambda t: check_ddp(t, args.data_root)
        else:
            skipped[names[2]] = "fewer than 2 GPUs"
    else:
        skipped.update({n: "no CUDA" for n in names})

    results: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "checks": {}}
    for name, fn in checks.items():
        with tempfile.TemporaryDirectory(prefix="lth-gpu-check-") as tmp:
            try:
                results["checks"][name] = fn(Path(tmp))
            except Exception as e:  # a check that crashes fails; the others still run
                results["checks"][name] = {"pass": False, "detail": f"{type(e).__name__}: {e}",
                                           "traceback": traceback.format_exc()}
        print(f"{'PASS' if results['checks'][name]['pass'] else 'FAIL'}: {name}", flush=True)
    for name, why in skipped.items():
        results["checks"][name] = {"pass": None, "detail": f"skipped: {why}"}

    print("\n| check | result | detail |\n|---|---|---|")
    for name, r in results["checks"].items():
        verdict = {True: "PASS", False: "FAIL", None: "skipped"}[r["pass"]]
        print(f"| {name} | {verdict} | {r['detail'][:200]} |")
    out = args.out or ROOT / "docs" / f"gpu_check_{device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"JSON: {out}")
    return 1 if any(r["pass"] is False for r in results["checks"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
