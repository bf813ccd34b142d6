"""lth.cli: the schema is registered, run folders are named after the overrides, errors end as one clear line."""

import sys

import pytest
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from lth import cli
from lth.config import Config


def test_run_folder_is_named_after_the_overrides():
    assert cli._run_dir_name("") == "defaults"
    assert cli._run_dir_name("seed=1,ticket.reset=rewind") == "seed=1,ticket.reset=rewind"
    node = OmegaConf.create({"empty": "", "dir": "runs/${lth_dirname:${empty}}"})
    assert node.dir == "runs/defaults"


def test_the_schema_is_in_the_config_store():
    assert "lth_schema.yaml" in ConfigStore.instance().list("")


def test_compose_config_is_typed_and_leaves_hydra_uninitialised():
    cfg = cli.compose_config(["seed=4"])
    assert isinstance(cfg, Config) and cfg.seed == 4
    assert not GlobalHydra.instance().is_initialized()  # a later compose or lth-run starts clean


QUIET = ["hydra/job_logging=disabled", "hydra/hydra_logging=disabled", "hydra.output_subdir=null"]


@pytest.fixture
def lth_run(monkeypatch, tmp_path):
    """Call `lth-run <args>` in this process with lth.runner.run replaced; returns the calls it received."""
    import lth.runner

    calls = []
    monkeypatch.setattr(lth.runner, "run", lambda config, out_dir: calls.append((config, out_dir)))

    def invoke(*args):
        monkeypatch.setattr(sys, "argv", ["lth-run", *args, f"hydra.run.dir={tmp_path / 'job'}", *QUIET])
        try:
            cli.main()
        finally:
            GlobalHydra.instance().clear()
        return calls

    return invoke


def test_lth_run_passes_a_typed_config_and_the_job_folder(lth_run, tmp_path):
    [(config, out_dir)] = lth_run("experiment=smoke", "seed=3", "ticket.rounds=2")
    assert isinstance(config, Config) and (config.name, config.seed, config.ticket.rounds) == ("smoke", 3, 2)
    assert out_dir == tmp_path / "job"
    assert config.logger.run_name == "rewind/large_final/seed=3 ticket.rounds=2"  # experiment is not part of it


def test_out_dir_and_run_name_given_are_kept(lth_run, tmp_path):
    [(config, out_dir)] = lth_run(f"out_dir={tmp_path / 'mine'}", "logger.run_name=named")
    assert out_dir == tmp_path / "mine" and config.logger.run_name == "named"


def test_a_config_error_ends_as_one_line(monkeypatch, lth_run):
    import lth.runner

    def refuse(config, out_dir):
        raise ValueError("ticket.reset: unknown reset 'x'")

    monkeypatch.setattr(lth.runner, "run", refuse)
    with pytest.raises(SystemExit) as e:
        lth_run("experiment=smoke")
    assert str(e.value.code) == "lth-run: error: ticket.reset: unknown reset 'x'"
