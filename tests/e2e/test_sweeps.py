"""Hydra multirun sweeps through the real command line: joblib in parallel, submitit_local, failures, reruns."""

import json
import os
import subprocess
import sys

import pytest


def lth_run(args, cwd, timeout=600):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "lth", *args], check=False, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def lineages(root):
    return {p.parent.name: [json.loads(x) for x in p.read_text().splitlines()] for p in root.rglob("rounds.jsonl")}


def test_joblib_runs_two_jobs_in_parallel_and_a_rerun_skips_them(tmp_path, data_root):
    sweep = tmp_path / "sweep"
    args = ["-m", "experiment=smoke", f"data.root={data_root}", "seed=0,1", "launcher=joblib",
            f"hydra.sweep.dir={sweep}"]
    p = lth_run(args, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Joblib.Parallel" in p.stderr + p.stdout or "joblib" in (p.stderr + p.stdout).lower()
    found = lineages(sweep)
    assert sorted(found) == ["seed=0", "seed=1"]
    assert all([r["round"] for r in recs] == [0, 1] for recs in found.values())
    assert found["seed=0"][1]["test_acc"] != found["seed=1"][1]["test_acc"]
    assert all("threads: 1" in (sweep / k / "config.yaml").read_text() for k in found)  # one torch thread per job
    before = {k: (sweep / k / "round_01" / "trained.pt").stat().st_mtime_ns for k in found}
    p = lth_run(args, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert {k: (sweep / k / "round_01" / "trained.pt").stat().st_mtime_ns for k in found} == before


@pytest.mark.slow
def test_a_failed_job_does_not_lose_the_others(tmp_path, data_root):
    sweep = tmp_path / "sweep"
    p = lth_run(["-m", "experiment=smoke", f"data.root={data_root}", "pruning.criterion=large_final,bogus,random",
                 f"hydra.sweep.dir={sweep}"], tmp_path)
    assert p.returncode != 0 and "unknown criterion 'bogus'" in p.stderr
    assert sorted(lineages(sweep)) == ["pruning.criterion=large_final", "pruning.criterion=random"]


@pytest.mark.slow
def test_submitit_local_launcher_runs_the_slurm_code_path(tmp_path, data_root):
    sweep = tmp_path / "sweep"
    p = lth_run(["-m", "experiment=smoke", f"data.root={data_root}", "seed=0", "launcher=submitit_local",
                 f"hydra.sweep.dir={sweep}"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert sorted(lineages(sweep)) == ["seed=0"]
    assert list((sweep / ".submitit").iterdir())  # submitit's job folders


def test_slurm_launcher_config_ties_tasks_to_the_trainer():
    from hydra import compose, initialize_config_module

    import lth.cli  # noqa: F401  registers the config schema

    with initialize_config_module("lth.conf", version_base="1.3"):
        cfg = compose("config", overrides=["launcher=slurm", "trainer.devices=4", "trainer.num_nodes=2"],
                      return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert (cfg.hydra.launcher.tasks_per_node, cfg.hydra.launcher.nodes) == (4, 2)


@pytest.mark.parametrize("preset,key", [("reset_controls", "ticket.reset"), ("criteria", "pruning.criterion")])
def test_sweep_presets_define_the_paper_comparisons(preset, key):
    from hydra import compose, initialize_config_module

    import lth.cli  # noqa: F401  registers the config schema

    with initialize_config_module("lth.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"sweep={preset}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params["seed"] == "0,1,2" and len(params[key].split(",")) >= 6
