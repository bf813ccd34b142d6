"""Structured pruning through the round loop: neuron masks per round, FLOPs in the record, scratch-E/B and
fine-tuning branches, and the config checks. Skipped until the runner knows `pruning.granularity`."""

import dataclasses
import json

import pytest
import torch

from lth import masks as masks_lib
from lth.config import PruningConfig
from lth.pruning import alive_units
from lth.structured import compact, scratch_steps

pytestmark = pytest.mark.skipif("granularity" not in {f.name for f in dataclasses.fields(PruningConfig)},
                                reason="pruning.granularity is not in the config schema")


def structured(data_root, *overrides):
    from lth.cli import compose_config

    return compose_config(["experiment=structured_imp_digits", f"data.root={data_root}", "model.args.hidden=[16,16]",
                           "trainer.max_steps=30", "trainer.eval_every=15", "trainer.checkpoint_every=0",
                           "ticket.rounds=2", *overrides])


def run(cfg, out):
    from lth.runner import run as run_lineage

    return run_lineage(cfg, out, sinks=[])


@pytest.fixture(scope="module")
def lineage(tmp_path_factory, data_root):
    torch.set_num_threads(1)  # a module fixture runs before conftest's per-test setting; 2 threads crawl here
    out = tmp_path_factory.mktemp("structured") / "imp"
    return out, run(structured(data_root), out)


def test_rounds_remove_whole_neurons_with_exact_counts(lineage):
    out, records = lineage
    counts = []
    for r in range(3):
        m = masks_lib.load(out / f"round_{r:02d}" / "mask.pt")
        counts.append({n: int(a.sum()) for n, a in alive_units(m).items()})
        # whole rows: a unit keeps all the inputs of alive units of the layer below, or nothing
        assert int(m["hidden.1.weight"].sum()) == counts[-1]["hidden.1.weight"] * counts[-1]["hidden.0.weight"]
        assert int(m["output.weight"].sum()) == 10 * counts[-1]["hidden.1.weight"]
    # 16 units, 20% of the remaining per round: 16 - round(3.2) = 13, 13 - round(2.6) = 10; the output layer stays
    assert counts == [{"hidden.0.weight": 16, "hidden.1.weight": 16, "output.weight": 10},
                      {"hidden.0.weight": 13, "hidden.1.weight": 13, "output.weight": 10},
                      {"hidden.0.weight": 10, "hidden.1.weight": 10, "output.weight": 10}]
    rec = records[2]
    assert rec["granularity"] == "neuron" and rec["flops_dense"] == 64 * 16 + 16 * 16 + 16 * 10
    assert rec["flops_nonzero"] == rec["flops_compact"] == 64 * 10 + 10 * 10 + 10 * 10
    assert rec["params_compact"] == 64 * 10 + 10 + 10 * 10 + 10 + 10 * 10 + 10


def test_trained_round_compacts_exactly(lineage):
    from lth.models import build_model

    out, _ = lineage
    model = build_model("mlp", (1, 8, 8), 10, hidden=[16, 16])
    model.load_state_dict(torch.load(out / "round_02" / "trained.pt", weights_only=True))
    masks = masks_lib.load(out / "round_02" / "mask.pt")
    small = compact(model, masks)
    assert [small.hidden[0].out_features, small.hidden[1].out_features] == [10, 10]
    x = torch.randn(5, 1, 8, 8)
    assert torch.allclose(small(x), model(x), atol=1e-5)


def test_residual_channels_are_pruned_as_one_group(tmp_path, data_root):
    # hidden.1 adds its input: hidden.0's and hidden.1's units are one group, removed together
    records = run(structured(data_root, "+model.args.residual=true"), tmp_path / "res")
    m = masks_lib.load(tmp_path / "res" / "round_02" / "mask.pt")
    alive = alive_units(m)
    assert torch.equal(alive["hidden.0.weight"], alive["hidden.1.weight"]) and int(alive["hidden.0.weight"].sum()) == 10
    assert torch.equal(m["output.weight"].any(dim=0), alive["hidden.0.weight"])  # 16 - 3 - 3 = 10 units, read by both
    assert torch.equal(m["hidden.1.weight"].any(dim=0), alive["hidden.0.weight"])
    assert records[2]["flops_compact"] == records[2]["flops_nonzero"] == 64 * 10 + 10 * 10 + 10 * 10


@pytest.mark.parametrize("reset", ["scratch_e", "scratch_b", "continue"])
def test_branches_train_for_their_budget(lineage, tmp_path, data_root, reset):
    src, records = lineage
    extra = ["ticket.finetune_steps=7", "ticket.finetune_lr=1e-4"] if reset == "continue" else []
    (rec,) = run(structured(data_root, f"branch.from={src}", "branch.round=2", f"ticket.reset={reset}", *extra),
                 tmp_path / reset)
    # scratch-B: 30 steps × 1440 dense FLOPs / 840 pruned = 51.4 → 51
    expected = {"scratch_e": 30, "continue": 7, "scratch_b": 51}[reset]
    assert rec["train_steps"] == expected and rec["reset"] == reset
    assert scratch_steps(30, records[2]["flops_dense"], records[2]["flops_nonzero"]) == 51
    masks = masks_lib.load(tmp_path / reset / "round_02" / "mask.pt")
    trained = torch.load(tmp_path / reset / "round_02" / "trained.pt", weights_only=True)
    assert not trained["hidden.1.weight"][~masks["hidden.1.weight"]].any()


def test_scratch_cap_limits_scratch_b(lineage, tmp_path, data_root):
    src, _ = lineage
    (rec,) = run(structured(data_root, f"branch.from={src}", "branch.round=2", "ticket.reset=scratch_b",
                            "ticket.scratch_cap=1.2"), tmp_path / "capped")
    assert rec["train_steps"] == 36


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("pruning.output_fraction=0.1", "output layer's units are never removed"),
        ("pruning.criterion=random", "structured_norm"),
        ("pruning.structured_norm=l3", "unknown structured norm 'l3'; valid choices: l1, l2, random"),
        ("ticket.mask0=freeze_init", "mask0=zero"),
        ("ticket.scratch_cap=0.5", "scratch_cap must be >= 1"),
        ("model.args.hidden=[]", "no layer of model 'mlp' can lose units"),
        ("pruning.max_group_ratio=1.5", r"max_group_ratio must be in \(0, 1\]"),
        ("pruning.structured_norm=scale", "group 'hidden.0.weight' has no BatchNorm"),
    ],
)
def test_bad_structured_config_is_rejected_before_training(tmp_path, data_root, override, message):
    with pytest.raises(ValueError, match=message):
        run(structured(data_root, override), tmp_path / "run")
    assert not (tmp_path / "run" / "round_00").exists()


def test_presets_compose():
    from lth.cli import compose_config

    cfg = compose_config(["experiment=structured_cnn1d_mnist1d"])
    assert (cfg.model.name, cfg.pruning.structured_norm, cfg.ticket.reset, cfg.ticket.finetune_steps) == (
        "cnn1d", "l1", "continue", 375)
    assert json.dumps(cfg.pruning.granularity.value) == '"neuron"'
