"""The README's config-groups table lists every packaged option, and every registered model and dataset has one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "lth" / "conf"
# lth/conf/hydra/ holds lth's versions of Hydra's own groups (help text, job logging), not options users choose
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and not p.name.startswith("_") and p.name != "hydra")


def _groups_table() -> dict[str, set[str]]:
    """The README's `### Config groups` table: group → the backticked words of its options cell."""
    text = (REPO / "README.md").read_text()
    section = text.split("### Config groups", 1)[1].split("\n\n", 2)[1]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = re.fullmatch(r"`(\w+)`", cells[0])
        if m and len(cells) == 2:
            rows[m.group(1)] = set(re.findall(r"`([^`]+)`", cells[1]))
    return rows


def test_the_table_has_a_row_per_config_group():
    assert sorted(_groups_table()) == GROUPS


@pytest.mark.parametrize("group", GROUPS)
def test_the_table_lists_every_option_of_the_group(group):
    options = {p.stem for p in (CONF / group).glob("*.yaml")}
    missing = options - _groups_table().get(group, set())
    assert not missing, f"README's config-groups table misses {group}={sorted(missing)}"


@pytest.mark.parametrize(("group", "registry"), [("model", "lth.models:MODELS"), ("data", "lth.data:DATASETS")])
def test_every_registered_name_has_its_config_file(group, registry):
    import importlib

    module, name = registry.split(":")
    names = set(getattr(importlib.import_module(module), name))
    files = {p.stem: yaml.safe_load(p.read_text()) for p in (CONF / group).glob("*.yaml")}
    assert names <= set(files), f"{group}.name choices without lth/conf/{group}/<name>.yaml: {sorted(names - set(files))}"
    assert all(files[n]["name"] == n for n in names)
    assert {f["name"] for f in files.values()} <= names  # every option builds a registered name
