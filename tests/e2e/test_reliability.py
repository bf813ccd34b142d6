"""Crash anywhere, resume identically: SIGKILL at exact points (LTH_FAULT), damaged files, folder guards, logging."""

import json
import multiprocessing as mp
import os
import random
import signal
import warnings

import pytest
import torch

from lth import masks as masks_lib
from lth.cli import compose_config
from lth.runner import run
from tests.faults import crash

# 3 rounds of 60 steps on digits (40 steps per epoch: checkpoints at 20, 40 = an epoch end, 60), Adam, θk at step 10
ARGS = ["experiment=smoke", "ticket.rounds=2", "trainer.max_steps=60", "trainer.eval_every=20",
        "trainer.checkpoint_every=20", "trainer.checkpoint_min_interval_s=0", "ticket.rewind_step=10"]
ROUNDS = (0, 1, 2)


def config(data_root, *extra):
    return compose_config([*ARGS, f"data.root={data_root}", *extra])


def records(path):
    return [json.loads(line) for line in (path / "rounds.jsonl").read_text().splitlines()]


def without_time(rows):
    return [{k: v for k, v in r.items() if k != "wall_seconds"} for r in rows]


def assert_same_run(a, b):
    """Bit-for-bit the same results: records (but wall time), masks, trained weights and evaluation histories."""
    assert without_time(records(a)) == without_time(records(b))
    for r in ROUNDS:
        d_a, d_b = a / f"round_{r:02d}", b / f"round_{r:02d}"
        ma, mb = masks_lib.load(d_a / "mask.pt"), masks_lib.load(d_b / "mask.pt")
        assert ma.keys() == mb.keys() and all(torch.equal(ma[n], mb[n]) for n in ma), f"round {r} masks differ"
        ta = torch.load(d_a / "trained.pt", weights_only=True)
        tb = torch.load(d_b / "trained.pt", weights_only=True)
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), f"round {r} weights differ"
        assert (d_a / "evals.jsonl").read_text() == (d_b / "evals.jsonl").read_text(), f"round {r} evals differ"
        assert not (d_a / "checkpoints" / "last.ckpt").exists()
    assert not list(a.rglob(".*.tmp")), "a temp file was left behind"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_root):
    """The uninterrupted run every crashed-and-resumed run must equal."""
    out = tmp_path_factory.mktemp("reference") / "run"
    torch.set_num_threads(1)
    run(config(data_root), out, sinks=[])
    return out




def resume(cfg, out):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(cfg, out, sinks=[])
    return [str(w.message) for w in caught]


@pytest.mark.parametrize(
    "fault,finished",
    [
        ("write:config.yaml", []),  # the very first write, half done
        ("step:0:5", []),  # during round 0, before its first checkpoint: round 0 restarts
        ("step:0:30", []),  # mid round 0, after θk (step 10): resumes from step 20 with θk from the checkpoint
        ("written:snapshots.pt", []),  # round 0 trained and saved, its record not yet written
        ("write:rounds.jsonl", []),  # while writing round 0's record
        ("write:mask.pt@2", [0]),  # while writing round 1's mask (pruned, not reset yet)
        ("written:mask.pt@2", [0]),  # between prune/reset and training: round 1's mask written, no step taken
        ("step:1:50", [0]),  # mid round 1, resuming from step 40 = an epoch end
        ("written:trained.pt@2", [0]),  # round 1 trained and saved, no record
        ("written:rounds.jsonl@2", [0, 1]),  # round 1 recorded, its checkpoint not yet removed
        ("write:trained.pt@3", [0, 1]),  # while writing round 2's weights
    ],
)
def test_sigkill_at_any_point_then_rerun_equals_uninterrupted(tmp_path, data_root, reference, fault, finished):
    out = tmp_path / "run"
    cfg = config(data_root)
    crash(cfg, out, fault)
    assert [r["round"] for r in (records(out) if (out / "rounds.jsonl").exists() else [])] == finished
    messages = resume(cfg, out)
    assert not [m for m in messages if "damaged" in m or "ignoring" in m], messages  # a clean kill damages nothing
    assert_same_run(out, reference)


def test_mid_round_kill_leaves_a_checkpoint_that_is_used(tmp_path, data_root, reference):
    out = tmp_path / "run"
    cfg = config(data_root)
    crash(cfg, out, "step:1:50")
    ckpt = out / "round_01" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == 40
    resume(cfg, out)
    assert_same_run(out, reference)


def test_a_kill_after_a_last_step_that_was_no_evaluation_step_resumes_identically(tmp_path, data_root):
    """The last checkpoint (step 50) precedes the round's closing evaluation; its training accuracy must survive."""
    cfg = config(data_root, "trainer.max_steps=50", "trainer.checkpoint_every=25", "trainer.checkpoint_min_interval_s=0", "ticket.rounds=1")
    reference = tmp_path / "reference"
    run(cfg, reference, sinks=[])
    out = tmp_path / "run"
    crash(cfg, out, "written:trained.pt@1")
    resume(cfg, out)
    for name in ("rounds.jsonl", "round_00/evals.jsonl", "round_01/evals.jsonl"):
        a, b = (out / name).read_text(), (reference / name).read_text()
        if name == "rounds.jsonl":
            a, b = (json.dumps(without_time([json.loads(x) for x in t.splitlines()])) for t in (a, b))
        assert a == b, name
    last = json.loads((out / "round_00/evals.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 50 and "train_acc" in last


# ----- damaged files: detected, never trusted


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("name", ["round_01/trained.pt", "round_01/mask.pt", "snapshots.pt"])
def test_a_damaged_file_of_a_finished_round_is_detected_and_the_round_redone(tmp_path, data_root, reference, name):
    out = tmp_path / "run"
    cfg = config(data_root)
    crash(cfg, out, "step:2:30")
    _truncate(out / name)
    messages = resume(cfg, out)
    first = 0 if name == "snapshots.pt" else 1
    assert any(f"round {first} is recorded but its files are damaged" in m for m in messages), messages
    assert_same_run(out, reference)


def test_a_damaged_checkpoint_is_ignored_and_the_round_restarts(tmp_path, data_root, reference):
    out = tmp_path / "run"
    cfg = config(data_root)
    crash(cfg, out, "step:1:50")
    ckpt = out / "round_01" / "checkpoints" / "last.ckpt"
    _truncate(ckpt)
    messages = resume(cfg, out)
    assert any("last.ckpt: it is damaged or belongs to another model" in m and "round 1 restarts" in m
               for m in messages), messages
    assert (ckpt.parent / "last.ckpt.damaged").exists()
    assert_same_run(out, reference)


def test_a_checkpoint_of_another_model_is_ignored(tmp_path, data_root, reference):
    other = tmp_path / "other"
    crash(config(data_root, "model.args.hidden=[16]"), other, "step:0:30")
    out = tmp_path / "run"
    cfg = config(data_root)
    crash(cfg, out, "step:0:5")
    ckpt = out / "round_00" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_bytes((other / "round_00" / "checkpoints" / "last.ckpt").read_bytes())
    messages = resume(cfg, out)
    assert any("model.hidden.0.weight' has shape (16, 64), the model's has (32, 64)" in m for m in messages), messages
    assert_same_run(out, reference)


def test_a_truncated_record_line_is_detected_and_its_round_redone(tmp_path, data_root, reference):
    out = tmp_path / "run"
    cfg = config(data_root)
    crash(cfg, out, "step:2:30")
    lines = (out / "rounds.jsonl").read_text().splitlines()
    assert len(lines) == 2
    (out / "rounds.jsonl").write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    messages = resume(cfg, out)
    assert any("rounds.jsonl line 2 is damaged" in m for m in messages), messages
    assert_same_run(out, reference)


@pytest.mark.slow
def test_sigkill_at_random_moments_until_done_equals_uninterrupted(tmp_path, data_root):
    """Kill the same run again and again at random moments (mid-step, mid-write, mid-checkpoint) until it finishes."""
    cfg = config(data_root, "trainer.max_steps=300", "trainer.eval_every=50")
    reference = tmp_path / "reference"
    run(cfg, reference, sinks=[])
    out = tmp_path / "run"
    rng = random.Random(20240601)
    kills = 0
    for _ in range(100):
        p = mp.get_context("fork").Process(target=run, args=(cfg, out), kwargs={"sinks": []})
        p.start()
        p.join(rng.uniform(0.1, 0.7))
        if p.exitcode is None:
            os.kill(p.pid, signal.SIGKILL)
            p.join()
            kills += 1
            continue
        assert p.exitcode == 0
        break
    assert kills >= 5, "the run finished before it could be killed often enough"
    resume(cfg, out)  # a no-op for a finished run
    assert_same_run(out, reference)
