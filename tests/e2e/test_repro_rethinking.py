"""scripts/repro_rethinking.py end to end in its quick mode: lineages, branches, records, page and figure."""

import json
import math
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lth.record import RunFolder

ROOT = Path(__file__).resolve().parents[2]
SEEDS = (0, 1)
LRS = ("0.03", "0.1", "0.3")  # the script's default sweep
QUICK_STEPS = 20  # the script's quick dense steps of part (a) (lth.reproduce's quick trainer.max_steps)
FINETUNE_STEPS = 5  # the script's quick ticket.finetune_steps
VERDICTS = ("agree", "opposite", "inconclusive")


@pytest.fixture(scope="module")
def study(tmp_path_factory, data_root):
    tmp = tmp_path_factory.mktemp("rethinking")
    out, page = tmp / "out", tmp / "rethinking.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "repro_rethinking.py"), "--quick", "--workers", "1", "--out", str(out),
         "--page", str(page), "--data-root", str(data_root), "--seeds", *map(str, SEEDS)],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, page


def rounds(folder: Path) -> dict[int, dict]:
    return {r["round"]: r for r in RunFolder(folder, writer=False).rounds()}


def config(folder: Path) -> dict:
    return yaml.safe_load((folder / "config.yaml").read_text())


def same_masks(a: Path, b: Path, r: int) -> bool:
    ma, mb = RunFolder(a, writer=False).load_mask(r), RunFolder(b, writer=False).load_mask(r)
    return ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)


@pytest.mark.slow
def test_exactly_the_expected_lineages(study):
    out, _ = study
    found = {p.parent.relative_to(out).as_posix() for p in out.rglob("rounds.jsonl")}
    expected = {f"a/seed{s}/{v}" for s in SEEDS
                for v in ("fine_tuned", "scratch_e", "scratch_b", "finetune_budget", "dense_budget")}
    expected |= {f"b/lr{lr}/seed{s}/{v}" for lr in LRS for s in SEEDS
                 for v in ("ticket", "random_reinit_r01", "random_reinit_r02")}
    assert found == expected


@pytest.mark.slow
def test_structured_lineage_and_scratch_branches(study):
    out, _ = study
    for s in SEEDS:
        lineage = out / f"a/seed{s}/fine_tuned"
        recs = rounds(lineage)
        assert sorted(recs) == [0, 1]
        dense, tuned = recs[0], recs[1]
        assert dense["density"] == 1.0 and dense["train_steps"] == QUICK_STEPS
        assert tuned["reset"] == "continue" and tuned["granularity"] == "neuron"
        assert tuned["train_steps"] == FINETUNE_STEPS and tuned["density"] < 0.5
        steps = {}
        for reset in ("scratch_e", "scratch_b"):
            branch = out / f"a/seed{s}/{reset}"
            cfg = config(branch)
            assert cfg["name"] == "structured_cnn1d_mnist1d" and cfg["model"]["name"] == "cnn1d"
            assert cfg["pruning"]["granularity"] == "neuron" and cfg["ticket"]["reset"] == reset
            (rec,) = rounds(branch).values()
            assert rec["round"] == 1 and rec["reset"] == reset and rec["status"] == "ok"
            assert rec["density"] == tuned["density"] and same_masks(branch, lineage, 1)
            assert rec["flops_nonzero"] == tuned["flops_nonzero"] < rec["flops_dense"] == dense["flops_dense"]
            steps[reset] = rec["train_steps"]
        ratio = tuned["flops_dense"] / tuned["flops_nonzero"]
        assert steps["scratch_e"] == QUICK_STEPS
        assert steps["scratch_b"] == math.floor(QUICK_STEPS * ratio) > steps["scratch_e"]


@pytest.mark.slow
def test_budget_matched_dense_and_fine_tuned_networks(study):
    """The controls of scratch-B's budget B: a dense network trained B steps (then fine-tuned), and fine-tuning of the
    T-step dense network extended to B steps in all, on the lineage's own round-1 mask."""
    out, _ = study
    for s in SEEDS:
        lineage = out / f"a/seed{s}/fine_tuned"
        tuned = rounds(lineage)
        (scratch_b,) = rounds(out / f"a/seed{s}/scratch_b").values()
        budget = scratch_b["train_steps"]
        (extended,) = rounds(out / f"a/seed{s}/finetune_budget").values()
        assert extended["round"] == 1 and extended["reset"] == "continue" and extended["status"] == "ok"
        assert extended["train_steps"] == budget - QUICK_STEPS  # B in all with the dense network's T
        assert same_masks(out / f"a/seed{s}/finetune_budget", lineage, 1)
        assert config(out / f"a/seed{s}/finetune_budget")["ticket"]["finetune_steps"] == budget - QUICK_STEPS
        long = out / f"a/seed{s}/dense_budget"
        recs = rounds(long)
        assert sorted(recs) == [0, 1]
        assert recs[0]["density"] == 1.0 and recs[0]["train_steps"] == budget
        assert recs[1]["reset"] == "continue" and recs[1]["train_steps"] == FINETUNE_STEPS
        assert recs[1]["density"] == tuned[1]["density"]  # the same number of filters removed
        # its first T steps are the T-step dense network's: the same evaluation at step T
        evals = {e["step"]: e for e in map(json.loads, (long / "round_00/evals.jsonl").read_text().splitlines())}
        assert evals[QUICK_STEPS]["test_acc"] == tuned[0]["test_acc"]
        assert evals[QUICK_STEPS]["val_loss"] == tuned[0]["val_loss"]
        assert max(evals) == budget


@pytest.mark.slow
def test_ticket_lineages_and_random_reinit_branches(study):
    out, _ = study
    for lr in LRS:
        for s in SEEDS:
            lineage = out / f"b/lr{lr}/seed{s}/ticket"
            cfg = config(lineage)
            assert cfg["optimizer"]["_target_"] == "torch.optim.SGD" and cfg["optimizer"]["lr"] == float(lr)
            assert cfg["optimizer"]["momentum"] == 0.9 and cfg["ticket"]["reset"] == "rewind"
            recs = rounds(lineage)
            assert sorted(recs) == [0, 1, 2]
            assert [recs[r]["density"] for r in (0, 1, 2)] == pytest.approx([1.0, 0.5, 0.25], abs=0.01)
            for r in (1, 2):
                branch = out / f"b/lr{lr}/seed{s}/random_reinit_r{r:02d}"
                bcfg = config(branch)
                assert bcfg["optimizer"] == cfg["optimizer"] and bcfg["ticket"]["reset"] == "random_reinit"
                (rec,) = rounds(branch).values()
                assert rec["round"] == r and rec["reset"] == "random_reinit" and rec["branch_round"] == r
                assert rec["density"] == recs[r]["density"] and same_masks(branch, lineage, r)


@pytest.mark.slow
def test_page_tables_and_figure(study):
    _, page = study
    text = page.read_text()
    assert text.startswith("# Rethinking the value of network pruning")
    assert text.count("<!-- results:start -->") == 1 and text.count("<!-- results:end -->") == 1
    assert ("| network | density % | FLOPs ratio | steps | steps in all | test acc. end (%) | "
            "test acc. early stop (%) |") in text
    for net in ("dense", "fine-tuned", "scratch-E", "scratch-B", "dense, budget B", "fine-tuned from dense-B",
                "fine-tuned, budget B"):
        assert f"\n| {net} | " in text
    budget = rounds(study[0] / "a/seed0/scratch_b")[1]["train_steps"]
    row = next(line for line in text.splitlines() if line.startswith("| fine-tuned, budget B | "))
    assert f"| {budget - QUICK_STEPS} | {budget} | " in row  # its own steps, then B in all
    row = next(line for line in text.splitlines() if line.startswith("| fine-tuned from dense-B | "))
    assert f"| {FINETUNE_STEPS} | {budget + FINETUNE_STEPS} | " in row
    for diff in ("scratch-E − fine-tuned", "scratch-B − fine-tuned", "scratch-B − fine-tuned, budget B",
                 "scratch-B − fine-tuned from dense-B", "fine-tuned, budget B − fine-tuned",
                 "dense, budget B − dense"):
        assert f"\n| {diff} | " in text
    rows = [line for line in text.splitlines() if line.startswith("| scratch-B − ")]
    assert len(rows) == 3 and all(line.count("<br>") == 4 for line in rows)  # mean ± std <br> interval <br> verdict
    assert all(any(v in line for v in VERDICTS) for line in rows)
    scratch_e = next(line for line in text.splitlines() if line.startswith("| scratch-E − fine-tuned | "))
    assert not any(v in scratch_e for v in VERDICTS)  # no direction claimed
    assert "| step | test acc. (%) | val. acc. (%) |" in text
    for step in (QUICK_STEPS, 2 * QUICK_STEPS, 3 * QUICK_STEPS, budget):
        assert f"\n| {step} | " in text
    header = ("| density % | lr 0.03: ticket | lr 0.03: random reinit | lr 0.1: ticket | lr 0.1: random reinit | "
              "lr 0.3: ticket | lr 0.3: random reinit |")
    assert text.count(header) == 2  # end of training and early stop
    best = re.search(r"highest mean validation accuracy: \*\*([0-9.]+)\*\*", text).group(1)
    assert best in LRS
    dense_val = {lr: statistics.fmean(rounds(study[0] / f"b/lr{lr}/seed{s}/ticket")[0]["val_acc"] for s in SEEDS)
                 for lr in LRS}
    assert best == max(dense_val, key=dense_val.get)
    paired = "| density % | " + " | ".join(f"lr {lr}" + (" (best)" if lr == best else "") for lr in LRS) + " |"
    assert text.count(paired) == 2  # end of training and early stop
    for lr in LRS:
        assert f"\n| {lr} | " in text  # the dense network's row
    for d in ("100.00", "50.00", "25.00"):
        assert text.count(f"\n| {d} | ") == (2 if d == "100.00" else 4)
    gaps = [line for line in text.splitlines() if line.startswith("| 25.00 | ") and any(v in line for v in VERDICTS)]
    assert len(gaps) == 2 and all(line.count("<br>") == 2 * len(LRS) for line in gaps)  # a verdict in every lr
    assert "Not every round trained cleanly" not in text
    png = page.with_suffix(".png")
    assert "](rethinking.png)" in text
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
