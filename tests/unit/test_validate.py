"""lth.validate: one clear error naming the key (and the valid choices) for each rule, before anything runs."""

import re

import pytest

from lth.config import Config, Granularity, Mask0
from lth.validate import check_schedule, validate


def config(**changes):
    """A default Config with dotted-key changes applied (`pruning__fraction=0.5` sets pruning.fraction)."""
    cfg = Config()
    for key, value in changes.items():
        *path, leaf = key.split("__")
        node = cfg
        for part in path:
            node = getattr(node, part)
        if isinstance(node, dict):
            node[leaf] = value
        else:
            setattr(node, leaf, value)
    return cfg


def test_the_default_config_is_valid():
    validate(Config())


@pytest.mark.parametrize("key, value, choices", [
    ("pruning__criterion", "biggest", "large_final"),
    ("ticket__reset", "rewinds", "rewind"),
    ("model__name", "lenet5", "lenet_300_100"),
    ("data__name", "imagenet", "mnist1d"),
])
def test_unknown_registry_names_list_the_choices(key, value, choices):
    with pytest.raises(ValueError) as e:
        validate(config(**{key: value}))
    message = str(e.value)
    assert message.startswith(f"{key.replace('__', '.')}: unknown ") and f"'{value}'" in message
    listed = message.split("valid choices: ")[1].split(", ")
    assert choices in listed and listed == sorted(listed)


@pytest.mark.parametrize("changes, pattern", [
    ({"pruning__fraction": 1.0}, r"pruning.fraction must be in (0, 1), got 1.0"),
    ({"pruning__fraction": 0.0}, r"pruning.fraction must be in (0, 1), got 0.0"),
    ({"pruning__target_density": 1.5}, r"pruning.target_density must be in (0, 1), got 1.5"),
    ({"pruning__target_density": 0.1, "ticket__rounds": 0}, r"pruning.target_density needs ticket.rounds >= 1"),
    ({"pruning__output_fraction": 1.0}, r"pruning.output_fraction must be in [0, 1), got 1.0"),
    ({"pruning__overrides": {"hidden.0": -0.1}}, r"pruning.overrides[hidden.0] must be in [0, 1), got -0.1"),
    ({"trainer__max_steps": 0}, r"trainer.max_steps must be positive, got 0"),
    ({"trainer__eval_every": -1}, r"trainer.eval_every must be positive, got -1"),
    ({"trainer__threads": 0}, r"trainer.threads must be a positive number of threads"),
    ({"trainer__checkpoint_min_interval_s": -1.0},
     "trainer.checkpoint_min_interval_s (seconds; 0: every due step) must be >= 0, got 200 and -1.0"),
    ({"trainer__checkpoint_every": -5}, r"must be >= 0, got -5 and 60.0"),
    ({"ticket__rounds": -1}, r"ticket.rounds must be >= 0, got -1"),
    ({"ticket__rewind_step": -1}, r"ticket.rewind_step and ticket.rewind_epoch must be >= 0"),
    ({"ticket__rewind_step": 2, "ticket__rewind_epoch": 1}, r"set ticket.rewind_step or ticket.rewind_epoch, not both"),
    ({"ticket__rewind_schedule": "resumed"}, r"ticket.rewind_schedule='resumed' is not one of: resume, restart"),
    ({"ticket__rewind_step": 1000}, (r"ticket.rewind_step=1000 must be smaller than the round's length "
                                     r"trainer.max_steps=1000")),
    ({"ticket__scratch_cap": 0.5}, r"ticket.scratch_cap must be >= 1"),
    ({"ticket__finetune_lr": 0.0}, r"ticket.finetune_lr must be positive or null, got 0.0"),
    ({"ticket__finetune_steps": 0}, r"ticket.finetune_steps must be >= 1 or null, got 0"),
    ({"trainer__devices": 4, "data__batch_size": 30}, r"data.batch_size=30 must be divisible by the 4 processes"),
    ({"trainer__devices": "0,1,2", "data__batch_size": 64}, r"divisible by the 3 processes"),
])
def test_each_rule_names_its_key(changes, pattern):
    with pytest.raises(ValueError, match=re.escape(pattern)):
        validate(config(**changes))


def test_limits_that_are_still_valid():
    validate(config(pruning__output_fraction=0.0, trainer__devices=4, data__batch_size=64, ticket__rewind_step=999,
                    ticket__scratch_cap=1.0, trainer__threads=1))


@pytest.mark.parametrize("changes, pattern", [
    ({"pruning__structured_norm": "l3"}, "pruning.structured_norm: unknown"),
    ({"pruning__criterion": "movement"}, "pruning.criterion=movement is not used with pruning.granularity=neuron"),
    ({"pruning__output_fraction": 0.1}, "pruning.output_fraction: with pruning.granularity=neuron"),
    ({"ticket__mask0": Mask0.freeze_init}, "needs ticket.mask0=zero"),
])
def test_neuron_granularity_rules(changes, pattern):
    validate(config(pruning__granularity=Granularity.neuron))
    with pytest.raises(ValueError, match=re.escape(pattern)):
        validate(config(pruning__granularity=Granularity.neuron, **changes))


def test_branch_rules(tmp_path):
    with pytest.raises(ValueError, match=re.escape("unknown branch key(s) ['form']; valid: from, round, random_mask")):
        validate(config(branch__form="x"))
    with pytest.raises(ValueError, match="branch.round / branch.random_mask / branch.sanity need branch.from"):
        validate(config(branch__round=2))
    with pytest.raises(ValueError, match=r"is not a run folder \(no rounds.jsonl\)"):
        validate(config(branch__from=str(tmp_path)))
    (tmp_path / "rounds.jsonl").write_text("")
    with pytest.raises(ValueError, match="branch.from needs branch.round=<K>"):
        validate(config(branch__from=str(tmp_path)))
    validate(config(branch__from=str(tmp_path), branch__round=1))


def test_check_schedule_reports_the_first_layer_to_empty():
    # layer a: 10 → 5 → 2 (round half even of 2.5) → 1 → 0 (0.5 rounds to 0, so it stays at 1)
    check_schedule({"a": 10, "b": 100}, 0.5, rounds=6)
    # 3 weights at 0.9: round(2.7) = 3 removed in round 1
    with pytest.raises(ValueError, match=re.escape(
            "density unreachable: pruning 0.9 of the remaining weights per round would leave layer 'a' (3 weights) "
            "with none by round 1 of 2")):
        check_schedule({"b": 100, "a": 3}, 0.9, rounds=2)


def test_check_schedule_overrides_and_global_pool():
    # b is overridden to 0; a and c are pooled globally: 4 → 2 → 1 → 0 (0.5 of 1 rounds to 0) stays
    check_schedule({"a": 2, "b": 1, "c": 2}, 0.5, rounds=5, scope="global", overrides={"b": 0.0})
    with pytest.raises(ValueError, match=re.escape("the global pool (4 units) with none by round 2 of 3")):
        check_schedule({"a": 2, "b": 1, "c": 2}, 0.75, rounds=3, scope="global", overrides={"b": 0.0}, unit="unit")
    with pytest.raises(ValueError, match=re.escape("layer 'b' (1 weights) with none by round 1")):
        check_schedule({"a": 2, "b": 1}, 0.5, rounds=1, overrides={"b": 0.9})


# ----- logger.sync_hook: an upload of the offline W&B run through wandb-osh
def test_the_sync_hook_needs_an_offline_wandb_run():
    validate(config(logger__wandb=True, logger__sync_hook=True))
    with pytest.raises(ValueError, match=r"logger.sync_hook=true uploads the lineage's W&B run: it needs logger=wandb"):
        validate(config(logger__sync_hook=True))
    with pytest.raises(ValueError, match=r"it needs logger.mode=offline, got 'online'"):
        validate(config(logger__wandb=True, logger__mode="online", logger__sync_hook=True))


def test_the_sync_hook_needs_wandb_osh(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb_osh" else real(name, *a))
    with pytest.raises(ValueError, match=r"needs the wandb-osh package \(pip install wandb-osh\)"):
        validate(config(logger__wandb=True, logger__sync_hook=True))


def test_max_group_ratio_is_a_fraction_for_neuron_granularity():
    validate(config(pruning__granularity=Granularity.neuron, pruning__max_group_ratio=0.9))
    with pytest.raises(ValueError, match=re.escape("pruning.max_group_ratio must be in (0, 1]")):
        validate(config(pruning__granularity=Granularity.neuron, pruning__max_group_ratio=0.0))
    with pytest.raises(ValueError, match=re.escape("pruning.max_group_ratio caps the channels a dependency group "
                                                   "loses; it needs pruning.granularity=neuron")):
        validate(config(pruning__max_group_ratio=0.5))
