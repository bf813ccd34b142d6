"""The reproduction scripts for tickets, one-shot, criteria, signs and late rewinding, end to end in quick mode."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lth.record import RunFolder

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"
pytestmark = pytest.mark.slow


def script(name, tmp, data_root, out, *args):
    page = tmp / f"{name}.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / f"repro_{name}.py"), "--quick", "--workers", "1", "--out", str(out),
         "--page", str(page), "--data-root", str(data_root), "--seeds", "0", "1", *args],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert page.with_suffix(".png").read_bytes()[:8] == PNG
    return page.read_text()


def records(folder):
    return {r["round"]: r for r in RunFolder(folder, writer=False).rounds()}


def masks(folder, r):
    return RunFolder(folder, writer=False).load_mask(r)


def branch_mask(folder):
    """A branch's one round keeps its source round's number."""
    (r,) = records(folder)
    return masks(folder, r)


def lineages(out):
    return {p.parent.relative_to(out).as_posix() for p in out.rglob("rounds.jsonl")}


@pytest.fixture(scope="module")
def tickets(tmp_path_factory, data_root):
    tmp = tmp_path_factory.mktemp("tickets")
    out = tmp / "out"
    page = script("tickets", tmp, data_root, out)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("trained.pt")}
    oneshot = script("oneshot", tmp, data_root, out)
    return out, page, oneshot, stamps


def test_tickets_lineages_controls_and_page(tickets):
    out, page, _, _ = tickets
    assert lineages(out) >= {f"seed{s}/{v}" for s in (0, 1) for v in ("imp", "random_mask_r02", "random_reinit_r02")}
    for s in (0, 1):
        imp = records(out / f"seed{s}/imp")
        assert sorted(imp) == [0, 1, 2]
        ticket = masks(out / f"seed{s}/imp", 2)
        same = branch_mask(out / f"seed{s}/random_reinit_r02")
        shuffled = branch_mask(out / f"seed{s}/random_mask_r02")
        assert all(torch.equal(same[n], ticket[n]) for n in ticket)  # random reinit: the ticket's own mask
        assert all(int(shuffled[n].sum()) == int(ticket[n].sum()) for n in ticket)  # same per-layer counts ...
        assert not torch.equal(shuffled["hidden.0.weight"], ticket["hidden.0.weight"])  # ... elsewhere
        # 20% of the hidden layer per round: 2048 − round(409.6) = 1638 − round(327.6) = 1310;
        # 10% of the output layer: 320 − 32 = 288 − round(28.8) = 259
        assert int(ticket["hidden.0.weight"].sum()) == 1310 and int(ticket["output.weight"].sum()) == 259
    for header in ("### Test accuracy at the end of training (%)", "### Early-stop step",
                   "| density % | ticket | random mask | random reinit |", "| density % | ticket − random mask |"):
        assert header in page
    assert "<!-- results:start -->" in page and "![Lottery tickets" in page


def test_oneshot_reuses_the_ticket_lineages_and_equals_them_after_one_round(tickets):
    out, _, page, stamps = tickets
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # the IMP lineages were not trained again
    assert lineages(out) >= {f"seed{s}/oneshot_r0{r}" for s in (0, 1) for r in (1, 2)}
    for s in (0, 1):
        imp, one1, one2 = (records(out / f"seed{s}/{f}") for f in ("imp", "oneshot_r01", "oneshot_r02"))
        assert one1[0]["test_acc"] == imp[0]["test_acc"]  # the same dense round 0
        assert one1[1]["test_acc"] == imp[1]["test_acc"]  # one round of 20% / 10% is one-shot to that density
        assert abs(one2[1]["density"] - imp[2]["density"]) < 2e-3  # 1 − 0.8², 1 − 0.9² in one step
    assert "| density % | iterative | one-shot |" in page
    row = next(line for line in page.splitlines() if line.startswith("| ") and "| 1 |" in line)
    assert row.endswith("| 0.0 ± 0.0 [0.0, 0.0] | 0.0 ± 0.0 [0.0, 0.0] |"), row


def test_criteria_and_signs_share_the_rewind_lineage(tmp_path, data_root):
    out = tmp_path / "zhou"
    page = script("criteria", tmp_path, data_root, out, "--criteria", "large_final", "small_final")
    stamp = (out / "large_final_rewind_zero/seed0/round_02/trained.pt").stat().st_mtime_ns
    signs = script("signs", tmp_path, data_root, out, "--variants", "rewind", "signed_constant",
                   "rewind, pruned frozen at θ0")
    assert (out / "large_final_rewind_zero/seed0/round_02/trained.pt").stat().st_mtime_ns == stamp
    assert lineages(out) == {f"{c}/seed{s}" for s in (0, 1) for c in (
        "large_final_rewind_zero", "small_final_rewind_zero", "large_final_signed_constant_zero",
        "large_final_rewind_freeze_init")}
    big, small = masks(out / "large_final_rewind_zero/seed0", 1), masks(out / "small_final_rewind_zero/seed0", 1)
    kept = big["hidden.0.weight"] & small["hidden.0.weight"]
    assert int(kept.sum()) == 0  # keep the largest half vs the smallest half of the same trained layer
    assert "| density % | large_final | small_final |" in page
    assert "| density % | rewind | signed_constant | rewind, pruned frozen at θ0 |" in signs


def test_late_rewind_stores_theta_k_and_branches_the_theta0_masks(tmp_path, data_root):
    out = tmp_path / "late"
    page = script("late_rewind", tmp_path, data_root, out)
    assert lineages(out) == {f"seed{s}/{v}" for s in (0, 1) for v in ("rewind_k0", "rewind_k5", "random_reinit_r02")}
    snaps = torch.load(out / "seed0/rewind_k5/snapshots.pt", weights_only=False)
    theta0, theta_k = snaps["snapshots"]["init"], snaps["snapshots"]["rewind"]
    assert not torch.equal(theta0["hidden.0.weight"], theta_k["hidden.0.weight"])  # θ5: five SGD steps away
    k0, k5 = records(out / "seed0/rewind_k0"), records(out / "seed0/rewind_k5")
    assert k0[0]["test_acc"] == k5[0]["test_acc"]  # θk is only stored during round 0, not used by it
    assert k0[1]["test_acc"] != k5[1]["test_acc"]  # round 1 starts from θ0 vs θ5
    branch = branch_mask(out / "seed0/random_reinit_r02")
    assert all(torch.equal(branch[n], m) for n, m in masks(out / "seed0/rewind_k0", 2).items())
    assert "| density % | rewind to θ0 | rewind to θk, k=5 |" in page
