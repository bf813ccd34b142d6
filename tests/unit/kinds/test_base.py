"""Experiment kinds: selection from the config, and a new kind and a new reset plugged in without touching the runner."""

import typing

import pytest
import torch

from lth.cli import compose_config
from lth.kinds import KINDS, Kind, kind_for, register_kind
from lth.reset import RESETS, Reset, register
from lth.runner import run


def cfg(data_root, *overrides):
    return compose_config(["experiment=smoke", f"data.root={data_root}", "trainer.max_steps=20",
                           "trainer.eval_every=10", "trainer.checkpoint_every=0", *overrides])


def test_registered_kinds():
    assert set(KINDS) == {"lineage", "branch", "heuristic_supermask", "learned_supermask", "pruning_at_init", "gradual",
                          "instability"}


def test_kind_selection(data_root, tmp_path):
    assert kind_for(cfg(data_root)).name == "lineage"
    assert kind_for(cfg(data_root, f"branch.from={tmp_path}", "branch.round=1")).name == "branch"
    assert kind_for(cfg(data_root, "supermask=edge_popup")).name == "learned_supermask"
    assert kind_for(cfg(data_root, "supermask=heuristic")).name == "heuristic_supermask"
    assert kind_for(cfg(data_root, "gradual.final_density=0.1")).name == "gradual"


class DenseOnly(Kind):
    """A toy kind: evaluates the untrained dense network at two fixed masks, through the public extension points."""

    name = "test_dense_only"
    seen: typing.ClassVar[list[str]] = []

    @classmethod
    def applies(cls, cfg):
        return cfg.name == "dense_only"

    def total_rounds(self, cfg):
        return 1

    def prepare(self, lineage):
        self.seen.append("prepare")

    def run(self, lineage):
        lineage.start_dense()
        lineage.evaluate_round(0, lineage.ones(), {"note": "dense"})
        half = {n: torch.arange(m.numel()).reshape(m.shape) % 2 == 0 for n, m in lineage.ones().items()}
        lineage.evaluate_round(1, half, {"note": "half"})


@pytest.fixture
def dense_only():
    register_kind(DenseOnly)
    yield DenseOnly
    KINDS._items.pop(DenseOnly.name)


def test_a_new_kind_plugs_in(data_root, tmp_path, dense_only):
    records = run(cfg(data_root, "name=dense_only"), tmp_path / "run", sinks=[])
    assert [r["round"] for r in records] == [0, 1]
    assert [r["note"] for r in records] == ["dense", "half"]
    assert records[0]["density"] == 1.0
    assert records[1]["density"] == 0.5  # every layer of the smoke MLP has an even number of weights
    assert records[0]["train_steps"] == 0 and dense_only.seen == ["prepare"]


class Negate(Reset):
    """A toy reset: −θ0 for the kept weights, trained for half the steps."""

    name = "test_negate"

    def weights(self, ctx):
        return {n: -w for n, w in ctx.source.items() if n in ctx.masks}

    def steps(self, budget):
        return budget.max_steps // 2


@pytest.fixture
def negate():
    register(Negate)
    yield
    RESETS._items.pop(Negate.name)


def test_a_new_reset_plugs_in(data_root, tmp_path, negate):
    from lth.runner import Lineage

    records = run(cfg(data_root, "ticket.reset=test_negate"), tmp_path / "run", sinks=[])
    assert [r["reset"] for r in records] == ["none", "test_negate"]
    assert [r["train_steps"] for r in records] == [20, 10]

    lineage = Lineage(cfg(data_root, "ticket.reset=test_negate"), tmp_path / "other", sinks=[])
    theta0 = {n: w.clone() for n, w in lineage.manager.weights("init").items()}
    half = {n: torch.arange(m.numel()).reshape(m.shape) % 2 == 0 for n, m in lineage.ones().items()}
    lineage.reset(1, half, dict(lineage.model.state_dict()), "test_negate")
    for n, w in lineage.manager.current().items():
        assert torch.equal(w, torch.where(half[n], -theta0[n], torch.zeros_like(w)))
    lineage.folder.release()
