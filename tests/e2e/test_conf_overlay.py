"""The user's config overlay: presets in ./conf (or a --config-dir) are found after the packaged ones."""

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import yaml

from lth.cli import compose_config

REPO = Path(__file__).resolve().parents[2]

TINY = textwrap.dedent("""\
    # @package _global_
    defaults:
      - override /model: mlp
      - override /data: digits
    name: {name}
    model:
      args:
        hidden: [8]
    pruning:
      fraction: 0.5
""")


def lth_run(args, cwd, timeout=300):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "lth", *args], check=False, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def write_preset(conf: Path, group: str, name: str, text: str) -> Path:
    path = conf / group / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "rounds.jsonl").read_text().splitlines()]


def test_example_preset_runs_from_the_repository_root(tmp_path, data_root):
    out = tmp_path / "run"
    p = lth_run(["experiment=my_digits_tickets", "debug=fast", f"data.root={data_root}", f"out_dir={out}"], REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    recs = records(out)
    assert [r["round"] for r in recs] == [0, 1]  # debug=fast: one pruning round
    assert recs[1]["density"] == 0.8  # the preset's 20% per round
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["name"] == "my_digits_tickets" and config["model"]["args"]["hidden"] == [100, 100]
    assert "not available" not in p.stderr


def test_a_preset_in_the_working_directorys_conf_is_found(tmp_path):
    write_preset(tmp_path / "conf", "experiment", "mine", TINY.format(name="mine"))
    p = lth_run(["experiment=mine", "debug=fast", "--cfg", "job"], tmp_path)  # composed as the run would be
    assert p.returncode == 0, p.stderr[-3000:]
    job = yaml.safe_load(p.stdout)
    assert job["name"] == "mine" and job["model"]["args"]["hidden"] == [8] and job["pruning"]["fraction"] == 0.5
    assert job["data"]["name"] == "digits" and job["trainer"]["max_steps"] == 20  # debug=fast still applies


def test_config_dir_adds_an_overlay_from_another_working_directory(tmp_path):
    write_preset(tmp_path / "presets" / "conf", "experiment", "elsewhere", TINY.format(name="elsewhere"))
    cwd = tmp_path / "somewhere_else"
    cwd.mkdir()
    p = lth_run(["--config-dir", str(tmp_path / "presets" / "conf"), "experiment=elsewhere", "--cfg", "job"], cwd)
    assert p.returncode == 0, p.stderr[-3000:]
    job = yaml.safe_load(p.stdout)
    assert job["name"] == "elsewhere" and job["model"] == {"name": "mlp", "args": {"hidden": [8]}}
    unknown = lth_run(["experiment=elsewhere", "--cfg", "job"], cwd)  # without the flag (and no ./conf): not found
    assert unknown.returncode != 0 and "elsewhere" in unknown.stderr


def test_without_a_conf_folder_nothing_warns_and_packaged_presets_compose(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = compose_config(["experiment=smoke"])
    assert cfg.name == "smoke"
    assert not [w for w in caught if "searchpath" in str(w.message)]
    p = lth_run(["experiment=smoke", "--cfg", "job"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert yaml.safe_load(p.stdout)["name"] == "smoke" and "not available" not in p.stderr


def test_compose_config_sees_the_overlay_after_the_packaged_configs(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    write_preset(conf, "experiment", "mine", TINY.format(name="mine"))
    write_preset(conf, "experiment", "smoke", TINY.format(name="not_the_packaged_smoke"))
    write_preset(conf, "sweep", "my_seeds", "# @package _global_\nhydra:\n  sweeper:\n    params:\n      seed: 5,6\n")
    monkeypatch.chdir(tmp_path)
    assert compose_config(["experiment=mine"]).model.args == {"hidden": [8]}
    assert compose_config(["experiment=smoke"]).name == "smoke"  # a packaged preset wins over one of the same name

    from hydra import compose, initialize_config_module

    with initialize_config_module("lth.conf", version_base="1.3"):
        hydra_cfg = compose("config", overrides=["sweep=my_seeds"], return_hydra_config=True)
    assert hydra_cfg.hydra.sweeper.params.seed == "5,6"
