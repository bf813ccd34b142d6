"""lth.metrics: the logged names, the readable run name and the grouping rule shared by W&B, lth-dashboard and
lth.analysis."""

import pandas as pd
import pytest

from lth import analysis, metrics
from lth.metrics import compression, grouping_keys, is_grouping_key, run_name, varying_keys


def test_the_ticket_plot_names_are_fields_of_a_record_and_logged_per_round():
    assert metrics.TICKET_METRICS == ("test_acc", "early_stop_test_acc", "early_stop_step")
    assert set(metrics.TICKET_METRICS) <= set(metrics.ROUND_METRICS)
    assert metrics.DENSITY in metrics.ROUND_METRICS and metrics.DENSITY in metrics.TABLE_COLUMNS
    assert metrics.layer_density_key("hidden.0.weight") == "layer_density/hidden.0.weight"
    assert all(c.startswith(metrics.CURVE_PREFIXES) for c in metrics.CURVES)


@pytest.mark.parametrize(("density", "expected"), [(1.0, 1.0), (0.5, 2.0), (0.2, 5.0), (0.0125, 80.0), (0.0, None)])
def test_compression_is_one_over_density(density, expected):
    assert compression(density) == expected


@pytest.mark.parametrize(("folder", "expected"), [
    ("defaults", "rewind/large_final/seed=0"),
    ("seed=0", "rewind/large_final/seed=0"),
    ("seed=1,ticket.reset=random_reinit", "rewind/large_final/seed=0"),  # the name's values come from the config
    ("pruning.fraction=0.1,seed=2", "rewind/large_final/seed=0 pruning.fraction=0.1"),
    ("model.args.hidden=[64,64],seed=1", "rewind/large_final/seed=0 model.args.hidden=[64,64]"),
    ("debug=fast,pruning.criterion=random,ticket.rounds=2", "rewind/large_final/seed=0 debug=fast,ticket.rounds=2"),
])
def test_run_name_is_reset_criterion_seed_then_the_other_overrides(folder, expected):
    assert run_name("rewind", "large_final", 0, folder) == expected


def test_run_name_of_a_sweep_job():
    assert run_name("random_reinit", "movement", 2, "pruning.criterion=movement,seed=2,ticket.reset=random_reinit") \
        == "random_reinit/movement/seed=2"


@pytest.mark.parametrize(("key", "groups"), [
    ("ticket.reset", True), ("pruning.criterion", True), ("pruning.fraction", True), ("branch.round", True),
    ("seed", False), ("name", False), ("out_dir", False), ("logger.run_name", False), ("logger", False),
    ("pruning.seed", False), ("ticket.reset_seed", False), ("branch.from", False), ("data.root", False),
    ("trainer.threads", False), ("hydra.job.num", False), ("supermask.from", False), ("launcher", False),
])
def test_which_keys_may_group(key, groups):
    assert is_grouping_key(key) is groups


CONFIGS = [
    {"seed": s, "name": "sweep", "ticket": {"reset": r, "rounds": 2}, "pruning": {"criterion": "large_final",
     "seed": None}, "logger": {"run_name": f"{r}/{s}"}, "model": {"args": {"hidden": [32]}}}
    for r in ("rewind", "random_reinit") for s in (0, 1)
]


def test_varying_and_grouping_keys_of_a_two_by_two_sweep():
    assert varying_keys(CONFIGS) == ["logger.run_name", "seed", "ticket.reset"]
    assert grouping_keys(CONFIGS) == ["ticket.reset"]
    assert grouping_keys([CONFIGS[0]]) == []  # one lineage: nothing varies


def test_lists_compare_as_values():
    wider = [{**c, "model": {"args": {"hidden": [64]}}} for c in CONFIGS[:2]]
    assert grouping_keys(CONFIGS[:2] + wider) == ["model.args.hidden"]


def test_lth_analysis_groups_by_the_same_keys():
    frame = pd.DataFrame({f"cfg.{k}": [1, 2] for k in ("ticket.reset", "seed", "logger.run_name", "pruning.seed",
                                                         "branch.from", "pruning.fraction")})
    assert analysis.group_columns(frame) == ["cfg.ticket.reset", "cfg.pruning.fraction"]
    assert [c.removeprefix("cfg.") for c in analysis.group_columns(frame)] == [
        k for k in ("ticket.reset", "seed", "logger.run_name", "pruning.seed", "branch.from", "pruning.fraction")
        if is_grouping_key(k)]
