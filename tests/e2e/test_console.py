"""What `lth-run` prints, as users type it: the run folder, round lines, a finished rerun, interrupts, sweep job
prefixes, one fast error line (no folder left), the help text, and a whole training curve after a resume."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lth.cli import check_keys, compose_config
from lth.io import FAULT_ENV

LTH_RUN = str(Path(sys.executable).with_name("lth-run"))
SMOKE = ["experiment=smoke", "trainer.max_steps=20", "trainer.eval_every=10"]
OWN_LINES = re.compile(r"^(\[#\d+ [^\]]*\] )?(run folder |round \d+/\d+ |round \d+: resuming at step |done: |complete, )")


def lth_run(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`lth-run <args>` in `cwd`, stdout and stderr captured (not a terminal)."""
    return subprocess.run([LTH_RUN, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_a_run_prints_its_folder_and_rounds_only_and_a_rerun_says_complete(tmp_path, data_root):
    out = tmp_path / "run"
    args = [*SMOKE, f"out_dir={out}", f"data.root={data_root}", "logger=wandb"]
    first = lth_run(tmp_path, *args, env={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)})
    assert first.returncode == 0, first.stderr[-3000:]
    printed = lines(first.stdout + first.stderr)
    assert printed[0] == f"run folder {out}"
    assert [x.split("  ")[0] for x in printed if "  density " in x] == ["round 0/1", "round 1/1"]
    assert printed[-1] == f"done: 2 rounds recorded in {out}"
    noise = [x for x in printed if not OWN_LINES.match(x)]  # Lightning, torch, pytree and W&B lines
    assert noise == [], noise
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "wandb"] or sorted(
        p.name for p in tmp_path.iterdir()) == ["run"], "the job folder Hydra made for out_dir elsewhere is left"
    again = lth_run(tmp_path, *args, env={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)})
    assert again.returncode == 0, again.stderr[-3000:]
    assert lines(again.stderr)[-1] == f"complete, nothing to do: 2 rounds recorded in {out}"
    assert not [x for x in lines(again.stderr) if "  density " in x]


@pytest.mark.parametrize("override,message", [
    ("+ticket.round=5", "lth-run: error: unknown config key `ticket.round` (did you mean `ticket.rounds`?)"),
    ("+trainer.max_step=5", "lth-run: error: unknown config key `trainer.max_step` (did you mean `trainer.max_steps`?)"),
    ("pruning.fraction=2", "lth-run: error: pruning.fraction must be in (0, 1), got 2.0"),
])
def test_a_refused_config_is_one_fast_line_and_leaves_no_folder(tmp_path, data_root, override, message):
    start = time.perf_counter()
    p = lth_run(tmp_path, "experiment=smoke", override, f"data.root={data_root}")
    seconds = time.perf_counter() - start
    assert p.returncode == 1
    assert lines(p.stdout + p.stderr) == [message + ("; `lth-run --help` lists the options" if "key" in message else "")]
    assert list(tmp_path.iterdir()) == [], "a refused config left a folder"
    assert seconds < 6, f"{seconds:.1f} s to the error line (the checks run before Lightning is imported)"


def test_keys_outside_the_schema_are_refused_except_in_free_form_nodes():
    cfg = compose_config(["experiment=smoke", "+pruning.overrides.hidden=0.1", "+model.args.width=3",
                          "+optimizer.weight_decay=0.1", "+data.args.noise=0.1"])
    assert cfg.pruning.overrides == {"hidden": 0.1} and cfg.model.args["width"] == 3
    with pytest.raises(ValueError, match=r"unknown config key `supermask.methd` \(did you mean `supermask.method`\?\)"):
        compose_config(["+supermask.methd=bernoulli"])
    with pytest.raises(ValueError, match=r"unknown config key `seeds` \(did you mean `seed`\?\)"):
        check_keys({"seeds": 1})
    check_keys({"supermask": {"from": "x"}, "branch": {"from": None}})  # `from`: the keyword-named fields


def test_help_is_the_projects_usage_then_groups_and_options(tmp_path):
    p = lth_run(tmp_path, "--help")
    assert p.returncode == 0, p.stderr
    text = p.stdout
    for part in ("A lineage is one sequence of rounds", "Examples:", "Sweeps: lth-run -m", "README.md",
                 "== Config groups (group=option) ==", "experiment: ", "sweep: criteria, reset_controls",
                 "== Options", "ticket:\n  rounds:", "lth-run --hydra-help"):
        assert part in text, part
    assert "powered by Hydra" not in text
    examples = re.findall(r"^  lth-run (.*?)\s+#", text.split("Examples:")[1].split("Sweeps:")[0], re.MULTILINE)
    assert len(examples) == 7
    for example in examples:  # each composes into a valid typed config
        compose_config(example.split())
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_prefixes_round_lines_with_the_job(tmp_path, data_root):
    p = lth_run(tmp_path, "-m", *SMOKE, "ticket.rounds=0", "seed=0,1", f"data.root={data_root}")
    assert p.returncode == 0, p.stderr[-3000:]
    rounds = [x.split("  ")[0] for x in lines(p.stderr) if re.match(r"^\[#\d", x) and "  density " in x]
    jobs = "ticket.rounds=0,trainer.eval_every=10,trainer.max_steps=20"  # the job's override_dirname
    assert rounds == [f"[#0 seed=0,{jobs}] round 0/0", f"[#1 seed=1,{jobs}] round 0/0"]
    assert not [x for x in lines(p.stderr) if x.startswith("round ")], "a sweep's line without its job"


def _wait_for(proc: subprocess.Popen, pattern: str, timeout: float = 120) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if re.search(pattern, line):
            return seen
    raise AssertionError(f"no line matching {pattern!r}: {''.join(seen)[-2000:]}")


@pytest.mark.slow  # a subprocess lineage (or two) with a real signal/kill: minutes on 2 cores
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_at_a_checkpointed_step_and_the_rerun_resumes(tmp_path, data_root, sig, code):
    out = tmp_path / "run"
    args = ["experiment=smoke", "ticket.rounds=0", "trainer.max_steps=20000", "trainer.eval_every=5000",
            "trainer.checkpoint_every=100000", f"out_dir={out}", f"data.root={data_root}"]
    proc = subprocess.Popen([LTH_RUN, *args], cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True)
    try:
        _wait_for(proc, r"round 0/0  step \d+/20000")  # training is under way (plain progress lines)
        proc.send_signal(sig)
        rest = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    assert proc.returncode == code
    m = re.search(r"lth-run: interrupted at step (\d+) of round 0 — rerun the same command to resume", rest)
    assert m, rest[-2000:]
    step = int(m.group(1))
    assert 0 < step < 20000 and (out / "round_00" / "checkpoints" / "last.ckpt").exists()
    if sig == signal.SIGINT:  # the rerun resumes at that step (and is stopped again: the round is long)
        proc = subprocess.Popen([LTH_RUN, *args], cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                text=True)
        try:
            _wait_for(proc, rf"round 0: resuming at step {step} from ")
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=120)
        finally:
            proc.kill()
        assert proc.returncode == 130


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # a subprocess lineage (or two) with a real signal/kill: minutes on 2 cores
def test_the_training_curve_is_whole_after_a_resume(tmp_path, data_root):
    args = ["experiment=smoke", "ticket.rounds=1", "trainer.max_steps=30", "trainer.eval_every=10",
            "trainer.checkpoint_every=10", "trainer.checkpoint_min_interval_s=0", "trainer.log_every_n_steps=5", f"data.root={data_root}"]
    whole = lth_run(tmp_path, *args, f"out_dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = lth_run(tmp_path, *args, f"out_dir={tmp_path / 'resumed'}", env={FAULT_ENV: "step:1:25"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = lth_run(tmp_path, *args, f"out_dir={tmp_path / 'resumed'}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "round 1: resuming at step 20 from " in resumed.stderr
    assert "Previous log files" not in resumed.stderr
    for r in (0, 1):
        a = _rows(tmp_path / "whole" / f"round_{r:02d}" / "csv" / "metrics.csv")
        b = _rows(tmp_path / "resumed" / f"round_{r:02d}" / "csv" / "metrics.csv")
        assert [x["step"] for x in b] == [x["step"] for x in a]
        assert int(b[0]["step"]) < 10 and int(b[-1]["step"]) == 29
        assert b == a, f"round {r}: the resumed curve differs"
