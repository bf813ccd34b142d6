"""`lth-run` as typed, from a fresh working directory: each lineage's folder is one readable path component named after
its result-changing overrides; options that do not change results (W&B, threads, launcher) reuse a finished lineage's
folder without retraining, and W&B then mirrors its existing rounds once; debug runs never share a real run's folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.wandb_reader import find_run_file, read_history

TINY = ("experiment=smoke", "trainer.max_steps=4", "trainer.eval_every=2")
LTH_RUN = Path(sys.executable).with_name("lth-run")  # the console script, as typed


def lth_run(cwd: Path, data_root: Path, *args: str, multirun: bool = False) -> subprocess.CompletedProcess[str]:
    """`lth-run [-m] <TINY> data.root=<data_root> <args>` in `cwd` (hydra.run/sweep.dir left to the naming rule)."""
    cmd = [str(LTH_RUN), *(["-m"] if multirun else []), *TINY, f"data.root={data_root}", *args]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def named(*overrides: str) -> str:
    """The folder (under runs/) of `lth-run <TINY> <overrides>`: runs/smoke/<sorted overrides joined by ",">."""
    return "smoke/" + ",".join(sorted([*overrides, "trainer.eval_every=2", "trainer.max_steps=4"]))


def lineages(cwd: Path) -> set[str]:
    """The lineage folders (holding rounds.jsonl) under cwd/runs, relative to it."""
    return {p.parent.relative_to(cwd / "runs").as_posix() for p in (cwd / "runs").rglob("rounds.jsonl")}


def stamps(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("trained.pt")}


def offline_runs(wandb_dir: Path) -> list[Path]:
    return sorted(wandb_dir.rglob("offline-run-*"))


@pytest.mark.slow  # CLI subprocess lineages: minutes on 2 cores
def test_branch_from_a_path_is_one_folder_level(tmp_path: Path, data_root: Path) -> None:
    lth_run(tmp_path, data_root)
    source = named()
    assert lineages(tmp_path) == {source}
    # a folder name holds "=" and ",": Hydra needs the value quoted
    lth_run(tmp_path, data_root, f"branch.from='runs/{source}'", "branch.round=1", "ticket.reset=random_reinit")
    branch = lineages(tmp_path) - {source}
    assert len(branch) == 1
    (name,) = branch
    assert name.count("/") == 1, name  # runs/smoke/<one component>
    leaf = name.split("/")[1]
    assert leaf.startswith(f"branch.from='runs~{source.replace('/', '~')}',branch.round=1,"), leaf

    # a long absolute path is shortened to a bounded, readable name that still tells the source apart
    src = (tmp_path / "runs" / source).resolve()
    lth_run(tmp_path, data_root, f"branch.from='{src}'", "branch.round=1", "ticket.reset=random_reinit")
    (absolute,) = lineages(tmp_path) - {source, name}
    leaf = absolute.split("/")[1]
    assert absolute.count("/") == 1 and len(leaf) <= 160, leaf
    assert leaf.startswith(f"branch.from={source.replace('/', '~')}-"), leaf


@pytest.mark.slow
def test_wandb_threads_launcher_reuse_a_finished_lineage_and_wandb_mirrors_it_once(tmp_path: Path,
                                                                                  data_root: Path) -> None:
    wandb_dir = Path(os.environ["WANDB_DIR"])
    lth_run(tmp_path, data_root, "ticket.rounds=2")
    lineage = named("ticket.rounds=2")
    folder = tmp_path / "runs" / lineage
    before = stamps(folder)
    assert len(before) == 3 and lineages(tmp_path) == {lineage}
    rounds = (folder / "rounds.jsonl").read_bytes()

    lth_run(tmp_path, data_root, "ticket.rounds=2", "logger=wandb")  # W&B added to the finished lineage
    assert lineages(tmp_path) == {lineage}
    assert stamps(folder) == before and (folder / "rounds.jsonl").read_bytes() == rounds  # nothing retrained
    [run_dir] = offline_runs(wandb_dir)
    per_round = [h for h in read_history(find_run_file(wandb_dir)) if "round" in h]
    assert [h["round"] for h in per_round] == [0, 1, 2]
    assert [h["test_acc"] for h in per_round] == [r["test_acc"] for r in map(eval_json, rounds.splitlines())]

    lth_run(tmp_path, data_root, "ticket.rounds=2", "logger=wandb")  # rerun: nothing new to log
    assert offline_runs(wandb_dir) == [run_dir]
    assert [h["round"] for h in read_history(find_run_file(wandb_dir)) if "round" in h] == [0, 1, 2]

    lth_run(tmp_path, data_root, "ticket.rounds=2", "trainer.threads=1", "logger=wandb", "logger.log_masks=false")
    lth_run(tmp_path, data_root, "ticket.rounds=2", "launcher=joblib", multirun=True)  # a one-job sweep
    assert lineages(tmp_path) == {lineage}
    assert stamps(folder) == before and offline_runs(wandb_dir) == [run_dir]


@pytest.mark.slow
def test_a_finished_wandb_sweep_rerun_opens_no_new_run(tmp_path: Path, data_root: Path) -> None:
    wandb_dir = Path(os.environ["WANDB_DIR"])
    lth_run(tmp_path, data_root, "seed=0,1", "logger=wandb", multirun=True)
    assert lineages(tmp_path) == {named("seed=0"), named("seed=1")}
    first = offline_runs(wandb_dir)
    assert len(first) == 2
    before = {f: stamps(tmp_path / "runs" / f) for f in lineages(tmp_path)}
    lth_run(tmp_path, data_root, "seed=0,1", "logger=wandb", multirun=True)
    assert offline_runs(wandb_dir) == first
    assert {f: stamps(tmp_path / "runs" / f) for f in lineages(tmp_path)} == before
    for run in first:
        [log] = run.glob("run-*.wandb")
        assert [h["round"] for h in read_history(log) if "round" in h] == [0, 1]


@pytest.mark.slow  # CLI subprocess lineages: minutes on 2 cores
def test_debug_fast_never_lands_in_the_real_runs_folder(tmp_path: Path, data_root: Path) -> None:
    lth_run(tmp_path, data_root, "debug=fast")
    lth_run(tmp_path, data_root)  # the real run afterwards: not refused, not mixed with the debug one
    assert lineages(tmp_path) == {named("debug=fast"), named()}
    for name in lineages(tmp_path):
        assert len(stamps(tmp_path / "runs" / name)) == 2  # each trained its own rounds 0 and 1


def eval_json(line: bytes) -> dict:
    """One rounds.jsonl line."""
    import json

    return json.loads(line)
