"""scripts/gpu_check.py on a machine without CUDA: the CPU parts run and pass, the CUDA parts are reported skipped."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import gpu_check  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only path")
def test_gpu_check_without_cuda_runs_the_cpu_parts_and_exits_0(tmp_path, capsys):
    out = tmp_path / "check.json"
    assert gpu_check.main(["--out", str(out)]) == 0
    r = json.loads(out.read_text())
    verdicts = {name: c["pass"] for name, c in r["checks"].items()}
    assert verdicts == {
        "deterministic smoke lineage twice, bit-identical (cpu)": True,
        "bf16-mixed: pruned weights exactly 0 (cpu)": True,
        "step benchmark on CUDA": None,
        "training steps under set_sync_debug_mode('error')": None,
        "2-GPU DDP mask agreement": None,
    }
    assert "3 rounds" in r["checks"]["bf16-mixed: pruned weights exactly 0 (cpu)"]["detail"]
    printed = capsys.readouterr().out
    assert "CUDA is not available" in printed and "| check | result | detail |" in printed


def test_a_failing_check_makes_the_exit_status_1(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "check_bf16", lambda *a: {"pass": False, "detail": "a pruned weight is 1e-3"})
    monkeypatch.setattr(gpu_check, "check_determinism", lambda *a: {"pass": True, "detail": "0 difference(s)"})
    assert gpu_check.main(["--out", str(tmp_path / "c.json")]) == 1
