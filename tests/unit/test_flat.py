"""Flattening nested configs into dotted keys."""

from omegaconf import OmegaConf

from lth.flat import flatten


def test_nested_mappings_become_dotted_keys():
    cfg = {"a": {"b": 1, "c": [1, 2], "d": {}}, "e": None, "f": {"g": {"h": "x"}}}
    assert flatten(cfg) == {"a.b": 1, "a.c": [1, 2], "a.d": {}, "e": None, "f.g.h": "x"}
    assert flatten({"x": {"y": 2}}, prefix="cfg.") == {"cfg.x.y": 2}
    assert flatten({}) == {}


def test_omegaconf_containers_flatten_like_dicts():
    node = OmegaConf.create({"pruning": {"scope": "global", "overrides": {}}})
    assert flatten(node) == {"pruning.scope": "global", "pruning.overrides": {}}
