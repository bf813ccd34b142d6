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


def test_tickets_both_setups_lineages_random_mask_branches_and_page(tickets):
    out, page, _, _ = tickets
    assert lineages(out) >= {f"{setup}/seed{s}/{v}" for setup in ("ours", "notebook") for s in (0, 1)
                             for v in ("imp", "random_mask_r02")}
    for s in (0, 1):
        for setup in ("ours", "notebook"):
            assert sorted(records(out / f"{setup}/seed{s}/imp")) == [0, 1, 2]
            (branch,) = records(out / f"{setup}/seed{s}/random_mask_r02").values()
            assert branch["seed"] == s and branch["reset"] == "rewind"  # paired with its lineage by seed, on θ0
        ours, nb = masks(out / f"ours/seed{s}/imp", 2), masks(out / f"notebook/seed{s}/imp", 2)
        # ours: half of the hidden layer per round, the output layer at half that rate, weights only:
        # 2048 → 1024 → 512; 320 → 240 → 180
        assert list(ours) == ["hidden.0.weight", "output.weight"]
        assert int(ours["hidden.0.weight"].sum()) == 512 and int(ours["output.weight"].sum()) == 180
        # the notebook's: every layer's weight + bias as one pool, the output layer at the same rate:
        # 2048 + 32 → 1040 → 520; 320 + 10 → 165 → 165 − round_half_even(82.5) = 83
        assert int(nb["hidden.0.weight"].sum() + nb["hidden.0.bias"].sum()) == 520
        assert int(nb["output.weight"].sum() + nb["output.bias"].sum()) == 83
        shuffled = branch_mask(out / f"notebook/seed{s}/random_mask_r02")
        assert all(int(shuffled[n].sum()) == int(nb[n].sum()) for n in nb)  # same per-tensor counts, biases too ...
        assert not torch.equal(shuffled["hidden.0.weight"], nb["hidden.0.weight"])  # ... elsewhere
    for header in ("## ours: `experiment=smoke`", "## notebook: `experiment=smoke`", "### Test accuracy at the end of training (%)",
                   "### Best test accuracy over the evaluations", "| density % | ours: ticket | ours: random mask |",
                   "| density % | notebook: random mask − notebook: ticket |"):
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
    zero = "+0.0 ± 0.0<br>[+0.0, +0.0]<br>inconclusive"  # one round: the same run, no difference either way
    assert row.endswith(f"| {zero} | {zero} |"), row


def test_criteria_and_signs_share_the_rewind_lineage(tmp_path, data_root):
    out = tmp_path / "zhou"
    page = script("criteria", tmp_path, data_root, out, "--criteria", "large_final", "small_final")
    stamp = (out / "large_final_rewind_zero/seed0/round_02/trained.pt").stat().st_mtime_ns
    signs = script("signs", tmp_path, data_root, out, "--variants", "rewind", "signed_constant",
                   "rewind, pruned frozen at θ0")
    assert (out / "large_final_rewind_zero/seed0/round_02/trained.pt").stat().st_mtime_ns == stamp
    # every reset is a branch of the one rewind lineage per seed, at its rounds 1 and 2 (quick): no other lineage
    assert lineages(out) == {f"{c}/seed{s}" for s in (0, 1) for c in ("large_final_rewind_zero",
                                                                      "small_final_rewind_zero")} | {
        f"signs/{v}/seed{s}_r0{r}" for s in (0, 1) for r in (1, 2) for v in ("signed_constant_zero",
                                                                              "rewind_freeze_init")}
    big, small = masks(out / "large_final_rewind_zero/seed0", 1), masks(out / "small_final_rewind_zero/seed0", 1)
    kept = big["hidden.0.weight"] & small["hidden.0.weight"]
    assert int(kept.sum()) == 0  # keep the largest half vs the smallest half of the same trained layer
    assert "| density % | large_final | small_final |" in page
    for s in (0, 1):
        lineage = out / f"large_final_rewind_zero/seed{s}"
        init = RunFolder(lineage, writer=False).load_snapshots()["snapshots"]["init"]
        for r in (1, 2):
            mask = masks(lineage, r)
            for v in ("signed_constant_zero", "rewind_freeze_init"):
                branch = out / f"signs/{v}/seed{s}_r0{r}"
                (rec,) = records(branch).values()
                assert rec["seed"] == s and rec["round"] == r  # paired with its lineage's round r by seed
                assert all(torch.equal(branch_mask(branch)[n], mask[n]) for n in mask)  # the lineage's own mask
            frozen = RunFolder(out / f"signs/rewind_freeze_init/seed{s}_r0{r}", writer=False).load_trained(r)
            w = "hidden.0.weight"
            assert torch.equal(frozen[w][~mask[w]], init[w][~mask[w]])  # pruned weights frozen at θ0
    assert "| density % | rewind | signed_constant | rewind, pruned frozen at θ0 |" in signs
    assert "| density % | signed_constant − rewind | rewind, pruned frozen at θ0 − rewind |" in signs


@pytest.fixture(scope="module")
def late(tmp_path_factory, data_root):
    tmp = tmp_path_factory.mktemp("late")
    out = tmp / "late"
    return out, script("late_rewind", tmp, data_root, out)


def test_late_rewind_stores_theta_k_and_branches_the_theta0_masks(late):
    out, page = late
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


def test_criteria_lr_runs_the_pair_at_each_lr_and_reports_how_far_weights_move(tmp_path, data_root):
    out = tmp_path / "zhou"
    page = script("criteria_lr", tmp_path, data_root, out, "--lrs", "0.02", "0.002")
    assert lineages(out) == {f"{c}/seed{s}" for s in (0, 1) for c in (
        "large_final_rewind_zero", "large_init_large_final_rewind_zero",
        "large_final_rewind_zero_lr0.002", "large_init_large_final_rewind_zero_lr0.002")}
    cfg = (out / "large_final_rewind_zero_lr0.002/seed0/config.yaml").read_text()
    assert "lr: 0.002" in cfg
    # round 0 of both criteria is the same dense run: the same movement, and a paired difference of exactly 0
    assert "### How far training moves the kept weights" in page
    assert "| density % | large_init_large_final, lr 0.02 − large_final, lr 0.02 |" in page


def test_late_rewind_resumes_the_schedule_and_prunes_four_preset_steps_a_round(late):
    """θk rounds train T − k steps from step k of the schedule; a round removes 59.04% of each hidden layer and
    34.39% of the output layer (four of the preset's 20% / 10% steps); the page says which schedule, pairs by seed."""
    out, page = late
    for s in (0, 1):
        k0, k5 = records(out / f"seed{s}/rewind_k0"), records(out / f"seed{s}/rewind_k5")
        assert [k0[r]["train_steps"] for r in (0, 1, 2)] == [20, 20, 20]  # lth.reproduce's quick max_steps T
        assert [k5[r]["train_steps"] for r in (0, 1, 2)] == [20, 15, 15]  # T − k
        assert [k5[r].get("schedule_start") for r in (1, 2)] == [5, 5] and "schedule_start" not in k0[1]
        for lineage in ("rewind_k0", "rewind_k5"):
            m = masks(out / f"seed{s}/{lineage}", 2)
            # smoke MLP 64-32-10: 2048 − round(1209.14) = 839 − round(495.35) = 344; 320 − round(110.05) = 210 −
            # round(72.22) = 138
            assert int(m["hidden.0.weight"].sum()) == 344 and int(m["output.weight"].sum()) == 138
    assert ("Round 0 trained T = 20 steps. Rounds rewound to θk: k = 5: `ticket.rewind_schedule=resume`, every pruned "
            "round trained 15 steps with its lr schedule starting at step 5 of round 0's.") in page
    assert "| density % | rewind to θ0 − random reinit | rewind to θk, k=5 − random reinit |" in page
    assert "| density % | rewind to θk, k=5 − rewind to θ0 |" in page
    verdicts = ("agree", "opposite", "inconclusive")
    for header in ("### Rewound minus random reinit at the same density, end of training",
                   "### θk minus θ0 at the same density, early stop"):
        table = page.split(header)[1].split("###")[0]
        rows = [line for line in table.splitlines() if line.startswith("| ") and "density" not in line
                and "---" not in line]
        assert rows and all(any(v in line.rsplit("|", 2)[-2] for v in verdicts) for line in rows)
    reinit = page.split("### Rewound minus random reinit at the same density, end of training")[1].split("###")[0]
    row = next(line for line in reinit.splitlines() if line.startswith("| ") and "<br>" in line)
    assert not any(v in row.split("|")[2] for v in verdicts)  # θ0 vs random reinit: no direction claimed
