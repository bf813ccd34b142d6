"""scripts/repro_rethinking_residual.py --quick: the residual CNN's lineage, its scratch-E/B branches, the page; the
committed results page is never touched by a quick run."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lth.record import RunFolder
from lth.structured import load_compact

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # 3 lineages in subprocesses: minutes on 2 loaded cores


def test_quick_study_runs_lineage_and_branches(tmp_path, data_root):
    committed = ROOT / "docs" / "results" / "rethinking_residual.md"
    before = committed.read_bytes() if committed.exists() else None
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "repro_rethinking_residual.py"), "--quick", "--workers", "1",
         "--seeds", "0", "--out", str(out), "--data-root", str(data_root)],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    page = (out / "rethinking_residual.md").read_text()  # --quick: the page goes next to the lineages
    assert (committed.read_bytes() if committed.exists() else None) == before
    for row in ("| dense | 1.000 | 1.000 | 20 |", "| fine-tuned |", "| scratch-E |", "| scratch-B |"):
        assert row in page
    lineage = {r["round"]: r for r in RunFolder(out / "seed0" / "fine_tuned", writer=False).rounds()}
    assert sorted(lineage) == [0, 1] and lineage[1]["train_steps"] == 5 and lineage[1]["reset"] == "continue"
    ratio = lineage[1]["flops_dense"] / lineage[1]["flops_nonzero"]
    assert 3.0 < ratio < 4.5  # half of every group's channels: about a quarter of the FLOPs of each conv
    (e,) = RunFolder(out / "seed0" / "scratch_e", writer=False).rounds()
    (b,) = RunFolder(out / "seed0" / "scratch_b", writer=False).rounds()
    assert (e["train_steps"], b["train_steps"]) == (20, math.floor(20 * ratio))
    for folder in ("fine_tuned/round_01", "scratch_e/round_01", "scratch_b/round_01"):
        small = load_compact(out / "seed0" / folder)
        assert sum(p.numel() for p in small.parameters()) == lineage[1]["params_compact"]
        assert small(torch.zeros(2, 1, 40)).shape == (2, 10)
