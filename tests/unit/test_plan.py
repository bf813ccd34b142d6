"""The plan: fraction schedule, overrides matched to layers, rewind point, unit layout — decided before anything runs."""

import pytest

from lth.data import build_datamodule
from lth.masks import MaskManager
from lth.models import build_model
from lth.plan import make_plan


def plan_for(cfg, tmp_path):
    data = build_datamodule(cfg.data.name, **cfg.data.options(cfg.seed))
    data.setup("fit")
    model = build_model(cfg.model.name, data.input_shape, data.num_classes, **cfg.model.args)
    return make_plan(cfg, data, model, MaskManager(model)), data


def test_plan_of_the_smoke_lineage(smoke_config, tmp_path):
    plan, _ = plan_for(smoke_config("pruning.output_fraction=0.25", "ticket.reset_seed=7"), tmp_path)
    assert plan.fraction == 0.5 and plan.layer_fractions == {"output.weight": 0.25}
    assert plan.rewind_step == 0 and plan.reset_seed == 7 and plan.layout is None
    assert plan.world == 1 and plan.writer
    assert plan.flops_dense == 64 * 32 + 32 * 10  # the smoke MLP 64-32-10, per example
    counts, _, unit = plan.schedule_units(MaskManager(build_model("mlp", (1, 8, 8), 10, hidden=[32])))
    assert counts == {"hidden.0.weight": 2048, "output.weight": 320} and unit == "weight"


def test_target_density_and_rewind_epoch(smoke_config, tmp_path):
    plan, data = plan_for(smoke_config("pruning.target_density=0.25", "ticket.rounds=2", "ticket.rewind_epoch=1",
                                       "trainer.max_steps=200"), tmp_path)
    assert plan.fraction == pytest.approx(0.5)
    assert plan.rewind_step == data.steps_per_epoch and plan.reset_seed == 1  # the lineage seed + 1


def test_bad_plans_are_refused(smoke_config, tmp_path):
    with pytest.raises(ValueError, match="is step .* not before the round's end"):
        plan_for(smoke_config("ticket.rewind_epoch=5"), tmp_path)
    with pytest.raises(ValueError, match=r"override keys \['nothing'\] match no layer"):
        plan_for(smoke_config("+pruning.overrides={nothing: 0.3}"), tmp_path)


def test_neuron_granularity_lays_out_units(smoke_config, tmp_path):
    plan, _ = plan_for(smoke_config("pruning.granularity=neuron"), tmp_path)
    assert plan.layout.removable == ["hidden.0.weight"]
    counts, _, unit = plan.schedule_units(MaskManager(build_model("mlp", (1, 8, 8), 10, hidden=[32])))
    assert counts == {"hidden.0.weight": 32} and unit == "unit"
