"""Preemption and cluster settings, for real on CPU: `python -m lth` stopped by SIGUSR1 / SIGTERM mid-round checkpoints
at that step, exits with 128 + the signal, and its rerun equals an uninterrupted run bit for bit; bf16-mixed with
gradient clipping and a fused Adam trains."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lth.runner import run

REPO = Path(__file__).resolve().parents[2]
# 2 rounds of 60 steps on digits; periodic checkpoints every 20 steps, evaluations every 20
ARGS = ["experiment=smoke", "ticket.rounds=1", "trainer.max_steps=60", "trainer.eval_every=20",
        "trainer.checkpoint_every=20", "trainer.checkpoint_min_interval_s=0", "trainer.threads=1"]


def lth(out: Path, data_root: Path) -> subprocess.Popen:
    """`python -m lth <ARGS> out_dir=<out>` as a child process (output captured)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "lth", *ARGS, f"data.root={data_root}", f"out_dir={out}",
         f"hydra.run.dir={out.parent / (out.name + '_hydra')}"],
        cwd=out.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(p: subprocess.Popen) -> tuple[int, str]:
    out, _ = p.communicate(timeout=600)
    return p.returncode, out


def records(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "wall_seconds"}
            for line in (path / "rounds.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    code, text = finish(lth(out, data_root))
    assert code == 0, text[-3000:]
    return out


@pytest.mark.slow  # a subprocess lineage (or two) with a real signal/kill: minutes on 2 cores
@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM], ids=lambda s: s.name)
def test_a_signal_mid_round_checkpoints_there_and_the_rerun_equals_an_uninterrupted_run(
        tmp_path, data_root, uninterrupted, sig):
    out = tmp_path / "run"
    p = lth(out, data_root)
    first = out / "round_00" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not first.exists():  # round 0 is training (its first periodic checkpoint, step 20, is written)
        assert p.poll() is None and time.monotonic() < deadline, "round 0 never wrote a checkpoint"
        time.sleep(0.01)
    p.send_signal(sig)
    code, text = finish(p)
    assert code == 128 + sig, text[-3000:]
    said = re.search(rf"round 0 interrupted by {sig.name} at step (\d+)", text)
    assert said, text[-3000:]
    step = int(said.group(1))
    ckpt = torch.load(first, map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == step and 20 <= step <= 60
    assert not (out / "rounds.jsonl").exists() or records(out) == []  # round 0 was not recorded
    code, text = finish(lth(out, data_root))  # the rerun resumes round 0 at `step`
    assert code == 0, text[-3000:]
    assert records(out) == records(uninterrupted)
    for r in (0, 1):
        a = torch.load(out / f"round_{r:02d}" / "trained.pt", weights_only=True)
        b = torch.load(uninterrupted / f"round_{r:02d}" / "trained.pt", weights_only=True)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"round {r} weights differ"


def test_bf16_mixed_with_clipping_and_fused_adam_trains(tmp_path, smoke_config):
    cfg = smoke_config("trainer.precision=bf16-mixed", "trainer.gradient_clip_val=1.0", "optimizer=adam",
                       "ticket.rounds=0", "trainer.max_steps=6", "trainer.eval_every=3", "trainer.checkpoint_every=3", "trainer.checkpoint_min_interval_s=0")
    assert cfg.optimizer["fused"] is True
    rounds = run(cfg, tmp_path / "run", sinks=[])
    assert [r.train_steps for r in rounds] == [6] and rounds[0].status == "ok"
