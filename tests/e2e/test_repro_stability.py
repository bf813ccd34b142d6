"""scripts/repro_stability.py end to end in quick mode: its lineages, the pairs they share, the page and figure."""

import subprocess
import sys
from pathlib import Path

import pytest

from lth.record import RunFolder

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_stability_study_quick(tmp_path, data_root):
    out, page = tmp_path / "out", tmp_path / "stability.md"
    before = (ROOT / "docs/results/stability.md").stat().st_mtime_ns if (ROOT / "docs/results/stability.md").exists() \
        else None
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/repro_stability.py"), "--quick", "--workers", "1", "--out", str(out),
         "--page", str(page), "--data-root", str(data_root), "--seeds", "0", "1"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = {p.parent.relative_to(out).as_posix() for p in out.rglob("rounds.jsonl")}
    assert found == {f"{v}/seed{s}/k{k}" for s in (0, 1) for v, k in
                     (("imp", 0), ("imp", 5), ("dense_mlp", 0), ("dense_lenet", 0), ("dense_cnn", 2))}
    for s in (0, 1):
        for k in (0, 5):
            rounds = RunFolder(out / f"imp/seed{s}/k{k}", writer=False).rounds()
            assert [r["round"] for r in rounds] == [0, 1]
            assert all(isinstance(r["instability_test"], float) and len(r["stability_seeds"]) == 2 for r in rounds)
            assert rounds[0]["stability_steps"] == 20 - k  # round 0's pair from θk trains the remaining steps
            assert (out / f"imp/seed{s}/k{k}/round_01/stability.jsonl").read_text().count("\n") == 30
    text = page.read_text()
    assert "### (a, b) Dense networks: instability of θk" in text and "| (b) CNN, MNIST-1D, lr 0.1 | 2 |" in text
    assert "| 100.0 | rewind to θ0 |" in text and "| 100.0 | rewind to θk, k=5 |" in text
    assert page.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    after = (ROOT / "docs/results/stability.md").stat().st_mtime_ns if (ROOT / "docs/results/stability.md").exists() \
        else None
    assert before == after  # a quick run never writes the committed page
