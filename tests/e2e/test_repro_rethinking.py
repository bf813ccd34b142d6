"""scripts/repro_rethinking.py end to end in its quick mode: lineages, branches, records, page and figure."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lth.record import RunFolder

ROOT = Path(__file__).resolve().parents[2]
SEEDS = (0, 1)
LRS = ("0.1", "0.01")
QUICK_STEPS = 20  # lth.reproduce's quick trainer.max_steps
FINETUNE_STEPS = 5  # the script's quick ticket.finetune_steps


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
    expected = {f"a/seed{s}/{v}" for s in SEEDS for v in ("fine_tuned", "scratch_e", "scratch_b")}
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
    assert "| network | density % | FLOPs ratio | steps | test acc. end (%) | test acc. early stop (%) |" in text
    for net in ("dense", "fine-tuned", "scratch-E", "scratch-B"):
        assert f"\n| {net} | " in text
    assert "| scratch-E − fine-tuned |" in text and "| scratch-B − fine-tuned |" in text
    header = "| density % | lr 0.1: ticket | lr 0.1: random reinit | lr 0.01: ticket | lr 0.01: random reinit |"
    assert text.count(header) == 2  # end of training and early stop
    assert "| density % | lr 0.1: end | lr 0.1: early stop | lr 0.01: end | lr 0.01: early stop |" in text
    for d in ("100.00", "50.00", "25.00"):
        assert text.count(f"\n| {d} | ") == (2 if d == "100.00" else 3)
    assert "Not every round trained cleanly" not in text
    png = page.with_suffix(".png")
    assert "](rethinking.png)" in text
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
