"""What users type for pruning at initialisation: the one-line PaI run, each sanity branch of it, a refused collapse,
and the study script in quick mode (real subprocesses, tiny settings)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lth.record import RunFolder

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"
pytestmark = pytest.mark.slow
TINY = ("trainer.max_steps=10", "trainer.eval_every=5", "trainer.checkpoint_every=0", "pruning.synflow_iterations=5")


def lth_run(tmp_path, data_root, *args):
    proc = subprocess.run([sys.executable, "-m", "lth", "experiment=pai_digits", f"data.root={data_root}", *TINY, *args],
                          check=False, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    return proc


def test_one_line_pai_run_and_its_sanity_branches(tmp_path, data_root):
    src = tmp_path / "pai"
    proc = lth_run(tmp_path, data_root, "pruning.criterion=synflow", "pruning.target_density=0.05", f"out_dir={src}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rec,) = RunFolder(src, writer=False).rounds()
    assert rec["kind"] == "pruning_at_init" and abs(rec["density"] - 0.05) < 0.002
    base = RunFolder(src, writer=False).load_mask(0)
    for check in ("shuffle", "invert", "reinit"):
        out = tmp_path / check
        proc = lth_run(tmp_path, data_root, f"branch.from={src}", "branch.round=0", f"branch.sanity={check}",
                       f"out_dir={out}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        (b,) = RunFolder(out, writer=False).rounds()
        assert b["sanity"] == check and b["branch_from"] == str(src)
        mask = RunFolder(out, writer=False).load_mask(0)
        assert {n: int(m.sum()) for n, m in mask.items()} == {n: int(m.sum()) for n, m in base.items()}
        assert all(torch.equal(mask[n], base[n]) for n in base) == (check == "reinit")


def test_a_collapse_is_refused_with_one_message_and_no_folder(tmp_path, data_root):
    out = tmp_path / "x"
    proc = lth_run(tmp_path, data_root, "pruning.criterion=random", "pruning.target_density=0.001", f"out_dir={out}")
    assert proc.returncode != 0
    assert "layer collapse at density 0.001" in proc.stderr and "pruning.allow_collapse=true" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_study_quick(tmp_path, data_root):
    out, page = tmp_path / "out", tmp_path / "page.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "repro_pruning_at_init.py"), "--quick", "--workers", "1", "--seeds",
         "0", "--out", str(out), "--page", str(page), "--data-root", str(data_root)],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = page.read_text()
    for word in ("synflow", "snip", "grasp", "large_init", "random", "imp", "shuffle", "invert", "reinit"):
        assert word in text
    assert page.with_suffix(".png").read_bytes()[:8] == PNG
    assert (out / "digits/imp/seed0/round_06/mask.pt").exists()
    assert (out / "digits/sanity/synflow_d2_invert/seed0/rounds.jsonl").exists()
