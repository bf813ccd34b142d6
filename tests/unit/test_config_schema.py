"""lth.config: the typed schema; the packaged defaults compose into it, enums are the choice lists."""

from dataclasses import fields
from itertools import zip_longest
from pathlib import Path

import pytest

from lth.cli import compose_config
from lth.config import BRANCH_DEFAULTS, Config, DataConfig, Granularity, Mask0, ModelConfig, Scope
from lth.supermask.config import SupermaskConfig


def test_enums_are_the_choice_lists():
    assert [s.value for s in Scope] == ["layerwise", "global"]
    assert [g.value for g in Granularity] == ["weight", "neuron"]
    assert [m.value for m in Mask0] == ["zero", "freeze_init"]
    assert Scope("global") is Scope.global_ and Scope.layerwise == "layerwise"  # str enums compare as their value


def test_mutable_defaults_are_not_shared_between_configs():
    a, b = Config(), Config()
    a.model.args["hidden"] = [8]
    a.branch["round"] = 3
    a.logger.tags.append("x")
    assert b.model.args == {} and b.branch == BRANCH_DEFAULTS == {"from": None, "round": None, "random_mask": False,
                                                         "sanity": None}
    assert b.logger.tags == [] and a.branch is not BRANCH_DEFAULTS
    assert isinstance(b.supermask, SupermaskConfig) and b.supermask.method is None


def test_the_bare_defaults_compose_into_the_typed_schema():
    cfg = compose_config()
    assert isinstance(cfg, Config) and isinstance(cfg.model, ModelConfig) and isinstance(cfg.data, DataConfig)
    assert cfg.name == "lth_mnist1d"  # the embedded default experiment
    assert (cfg.model.name, cfg.data.name, cfg.data.batch_size) == ("mlp", "mnist1d", 100)
    assert cfg.pruning.scope is Scope.layerwise and cfg.ticket.mask0 is Mask0.zero
    assert (cfg.pruning.criterion, cfg.pruning.fraction, cfg.ticket.rounds, cfg.ticket.reset) == (
        "large_final", 0.2, 10, "rewind")
    assert cfg.optimizer["_target_"] == "torch.optim.Adam" and cfg.optimizer["lr"] == 2.0e-2
    # every key of the schema is present after composition (no preset drops one)
    assert [f.name for f in fields(Config)] == [f.name for f in fields(cfg)]


def test_overrides_are_converted_to_the_schema_types(smoke_config, data_root):
    cfg = smoke_config("pruning.granularity=neuron", "ticket.mask0=freeze_init",
                       "trainer.max_steps=7", "supermask.from=/x", "model.args.hidden=[5,3]")
    assert cfg.name == "smoke" and cfg.data.name == "digits" and cfg.data.root == str(data_root)
    assert cfg.pruning.granularity is Granularity.neuron
    assert cfg.ticket.mask0 is Mask0.freeze_init
    assert cfg.trainer.max_steps == 7 and cfg.model.args["hidden"] == [5, 3]
    assert cfg.supermask.source == "/x"


def test_an_unknown_enum_value_is_refused_naming_the_key():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="mask0"):
        compose_config(["ticket.mask0=nan"])


CONF = Path(__file__).resolve().parents[2] / "lth" / "conf"
# groups composed together, one option of each per composition (experiments replace groups, so they go alone;
# sweep and launcher presets need a multirun and are covered end to end)
TOGETHER = ("model", "data", "pruning", "ticket", "optimizer", "trainer", "logger", "supermask", "debug")


def test_every_packaged_option_composes():
    options = {g: sorted(p.stem for p in (CONF / g).glob("*.yaml")) for g in TOGETHER}
    assert options["pruning"] and options["model"], options
    runs = [[f"{g}={o}" for g, o in zip(TOGETHER, row) if o is not None]
            for row in zip_longest(*options.values())]
    runs += [[f"experiment={p.stem}"] for p in sorted((CONF / "experiment").glob("*.yaml"))]
    failures = []
    for overrides in runs:
        try:
            assert isinstance(compose_config(overrides), Config)
        except Exception as e:  # noqa: BLE001  collect them all
            failures.append(f"{' '.join(overrides)}: {str(e).splitlines()[0]}")
    assert not failures, "packaged presets that do not compose:\n" + "\n".join(failures)


def test_scope_global_is_written_as_documented():
    assert compose_config(["pruning.scope=global"]).pruning.scope is Scope.global_
