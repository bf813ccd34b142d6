"""The schema's enums: the word users type is the member name, aliases compose and compare as their canonical name."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import pytest
import yaml

from lth.cli import compose_config
from lth.config import ENUM_FIELDS, Config, Scope, canonical_config, choices
from lth.record import config_differences
from lth.runner import config_dict, run


def test_every_enum_field_is_found() -> None:
    assert set(ENUM_FIELDS) == {"pruning.scope", "pruning.granularity", "ticket.mask0"}


@pytest.mark.parametrize("key", sorted(ENUM_FIELDS))
def test_each_choice_is_typed_as_its_name_and_written_as_it(key: str) -> None:
    enum: type[Enum] = ENUM_FIELDS[key]
    for name in choices(enum):
        assert enum[name].value == name  # the word typed, the word in config.yaml and the record's value agree
        cfg = compose_config([f"{key}={name}"])
        group, leaf = key.split(".")
        assert getattr(getattr(cfg, group), leaf) is enum[name]
        assert config_dict(cfg)[group][leaf] == name


def test_scope_global_is_the_name_and_global_underscore_an_alias() -> None:
    assert choices(Scope) == ("layerwise", "global")
    assert Scope["global_"] is Scope["global"] and Scope("global").name == "global"
    for overrides in (["pruning.scope=global"], ["pruning.scope=global_"], ["pruning=global"]):
        assert compose_config(overrides).pruning.scope is Scope["global"]
    with pytest.raises(Exception, match="pruning.scope=globl") as e:
        compose_config(["pruning.scope=globl"])
    assert "Invalid value 'globl', expected one of [layerwise, global, global_]" in str(e.value.__cause__)


def test_canonical_config_maps_aliases_and_leaves_the_input_alone() -> None:
    old = {"pruning": {"scope": "global_", "fraction": 0.2}, "ticket": {"mask0": "zero"}, "seed": 1}
    assert canonical_config(old) == {"pruning": {"scope": "global", "fraction": 0.2}, "ticket": {"mask0": "zero"},
                                     "seed": 1}
    assert old["pruning"]["scope"] == "global_"
    assert canonical_config({"pruning": None}) == {"pruning": None}
    assert canonical_config({"pruning": {"scope": "bogus"}}) == {"pruning": {"scope": "bogus"}}


def test_old_global_underscore_config_equals_new_global() -> None:
    new = config_dict(compose_config(["pruning.scope=global"]))
    old = yaml.safe_load(yaml.safe_dump(new).replace("scope: global\n", "scope: global_\n"))
    assert old["pruning"]["scope"] == "global_"
    assert config_differences(old, new, config_dict(Config())) == []
    layerwise = config_dict(compose_config([]))
    assert config_differences(old, layerwise) == ["pruning.scope"]


def test_a_run_folder_written_with_global_underscore_resumes(tmp_path: Path, data_root: Path) -> None:
    overrides = ["experiment=smoke", "debug=fast", f"data.root={data_root}", "pruning.scope=global"]
    folder = tmp_path / "run"
    run(compose_config(overrides), folder, sinks=[])
    path = folder / "config.yaml"
    assert "scope: global\n" in path.read_text()
    path.write_text(path.read_text().replace("scope: global\n", "scope: global_\n"))  # as older versions wrote it
    records = run(compose_config([*overrides, "ticket.rounds=2"]), folder, sinks=[])
    assert [r["round"] for r in records] == [0, 1, 2] and records[-1]["scope"] == "global"


def test_stability_keys_default_off_and_take_overrides(smoke_config):
    from lth.config import Config, StabilityConfig

    s = Config().stability
    assert isinstance(s, StabilityConfig)
    assert (s.pair, s.every_round, s.alphas, s.batchnorm, s.bn_batches, s.train_examples) == (
        False, False, 30, "auto", None, None)
    cfg = smoke_config("stability.every_round=true", "stability.alphas=11", "stability.batchnorm=false",
                       "stability.train_examples=500")
    assert (cfg.stability.every_round, cfg.stability.alphas, cfg.stability.batchnorm,
            cfg.stability.train_examples) == (True, 11, False, 500)
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="stability.alpha"):
        smoke_config("stability.alpha=3")  # not a key of the schema
