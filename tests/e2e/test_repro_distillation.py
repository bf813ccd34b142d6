"""scripts/repro_distillation.py end to end in quick mode: its lineages and branches, what each records, the page."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lth.record import RunFolder

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"
pytestmark = pytest.mark.slow


def records(folder):
    return {r["round"]: r for r in RunFolder(folder, writer=False).rounds()}


@pytest.fixture(scope="module")
def study(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("distill") / "out"
    committed = ROOT / "docs" / "results" / "distillation.md"
    before = committed.read_bytes() if committed.exists() else None
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "repro_distillation.py"), "--quick", "--workers", "1", "--out",
         str(out), "--data-root", str(data_root), "--seeds", "0", "1"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (committed.read_bytes() if committed.exists() else None) == before  # --quick never writes docs/results
    return out, (out / "distillation.md").read_text()


def test_lineages_branches_and_what_they_record(study):
    out, _ = study
    for s in (0, 1):
        imp = records(out / f"a/seed{s}/imp")
        assert [imp[r]["distilled"] for r in (0, 1, 2)] == [False, False, False]  # α = 0: plain, measured
        assert imp[2]["teacher"] == [f"{out / f'a/seed{s}/imp'}@0"]
        for r in (1, 2):
            ticket = records(out / f"a/seed{s}/distilled_r{r:02d}")[r]
            reinit = records(out / f"a/seed{s}/reinit_distilled_r{r:02d}")[r]
            assert ticket["distilled"] and reinit["distilled"] and ticket["density"] == imp[r]["density"]
            assert (ticket["reset"], reinit["reset"]) == ("rewind", "random_reinit")
            assert ticket["teacher"] == imp[2]["teacher"]  # the branch's default teacher: its source's round 0
            src = RunFolder(out / f"a/seed{s}/imp", writer=False)
            mine = RunFolder(out / f"a/seed{s}/distilled_r{r:02d}", writer=False)
            assert all(torch.equal(src.load_mask(r)[n], m) for n, m in mine.load_mask(r).items())
            assert not torch.equal(src.load_trained(r)["hidden.0.weight"], mine.load_trained(r)["hidden.0.weight"])
        ens = records(out / f"d/seed{s}/ensemble")[2]
        assert ens["teacher"] == [f"{out / f'a/seed{x}/imp'}@0" for x in (0, 1)]
        assert {records(out / f"c/seed{s}/T{t:g}")[2]["distilled"] for t in (1, 2, 8)} == {True}
        ft = records(out / f"b/seed{s}/fine_tuned")
        assert [ft[r]["reset"] for r in (0, 1, 2)] == ["none", "continue", "continue"]
        for r in (1, 2):
            plain = records(out / f"b/seed{s}/scratch_b_r{r}")[r]
            dist = records(out / f"b/seed{s}/scratch_b_distilled_r{r}")[r]
            assert plain["train_steps"] == dist["train_steps"] == 40  # scratch-B, capped at 2 × 20 steps
            assert not plain["distilled"] and dist["distilled"] and plain["density"] == dist["density"]


def test_page_has_every_part_and_the_figure(study):
    out, page = study
    for heading in ("## (a) Tickets", "## (b) Compacted networks", "## (c) Temperature", "## (d) An ensemble"):
        assert heading in page
    assert "| density % | ticket | ticket + distillation | random reinit + distillation |" in page
    assert "| 1 |" in page and "| 8 |" in page  # the temperatures
    assert (out / "distillation.png").read_bytes()[:8] == PNG
