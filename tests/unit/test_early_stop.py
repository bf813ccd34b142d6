"""Early-stop rules on a hand-made evaluation history, the record's fields under both rules, and the CLI's error."""

import dataclasses
import json
import math
import subprocess
import sys

import pytest

from lth.early_stop import EARLY_STOP_RULES, by_rule_fields, early_stop_fields, no_early_stop
from lth.gradual import early_stop_after
from lth.metrics import ROUND_METRICS
from lth.record import RoundRecord

# val_loss is lowest at steps 20 and 40 (earliest: 20); val_acc highest at 30 and 40 (earliest: 30); step 50 diverged
HISTORY = [
    {"step": 10, "val_loss": 0.50, "val_acc": 0.60, "test_acc": 0.61},
    {"step": 20, "val_loss": 0.40, "val_acc": 0.70, "test_acc": 0.69},
    {"step": 30, "val_loss": 0.45, "val_acc": 0.80, "test_acc": 0.79},
    {"step": 40, "val_loss": 0.40, "val_acc": 0.80, "test_acc": 0.80},
    {"step": 50, "val_loss": math.nan, "val_acc": math.nan, "test_acc": 0.10},
]


def test_the_rules_are_val_loss_and_val_acc():
    assert EARLY_STOP_RULES.names() == ["val_acc", "val_loss"]


def test_lowest_val_loss_and_highest_val_acc_ties_to_the_earliest():
    assert EARLY_STOP_RULES["val_loss"].best(HISTORY) == HISTORY[1]
    assert EARLY_STOP_RULES["val_acc"].best(HISTORY) == HISTORY[2]
    assert EARLY_STOP_RULES["val_loss"].best(HISTORY, after=25) == HISTORY[3]  # gradual: after the last pruning step
    assert EARLY_STOP_RULES["val_acc"].best(HISTORY, after=30) == HISTORY[3]
    assert early_stop_after(HISTORY, 25, "val_acc") == HISTORY[2]
    assert EARLY_STOP_RULES["val_acc"].best(HISTORY[4:]) == {}  # only non-finite values: no early-stop point


@pytest.mark.parametrize("metric", ["val_loss", "val_acc"])
def test_the_record_fields_carry_the_chosen_rule_and_both(metric):
    chosen = {"val_loss": HISTORY[1], "val_acc": HISTORY[2]}[metric]
    assert early_stop_fields(HISTORY, metric) == {
        "early_stop_metric": metric, "early_stop_step": chosen["step"], "early_stop_test_acc": chosen["test_acc"],
        "early_stop_val_loss": chosen["val_loss"], "early_stop_val_acc": chosen["val_acc"],
        "early_stop_by_val_loss_step": 20, "early_stop_by_val_loss_test_acc": 0.69,
        "early_stop_by_val_acc_step": 30, "early_stop_by_val_acc_test_acc": 0.79}


def test_no_evaluations_give_none_fields():
    fields = no_early_stop("val_acc")
    assert fields.pop("early_stop_metric") == "val_acc" and set(fields.values()) == {None} and len(fields) == 8


def test_unknown_rule_names_the_choices():
    with pytest.raises(KeyError, match="unknown early-stop metric 'val_los'; valid choices: val_acc, val_loss"):
        early_stop_fields(HISTORY, "val_los")


def test_every_rule_has_record_fields_and_round_metrics():
    typed = {f.name for f in dataclasses.fields(RoundRecord)}
    for name in EARLY_STOP_RULES:
        for key in by_rule_fields(name):
            assert key in typed and key in ROUND_METRICS
    assert "early_stop_metric" in typed


def test_the_cli_refuses_an_unknown_early_stop_metric_before_writing(tmp_path):
    out = tmp_path / "job"
    done = subprocess.run([sys.executable, "-m", "lth", "experiment=smoke", "trainer.early_stop_metric=val_los",
                           f"hydra.run.dir={out}", "hydra.output_subdir=null", f"data.root={tmp_path / 'data'}"],
                          check=False, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == ("lth-run: error: trainer.early_stop_metric: unknown early-stop "
                                                    "metric 'val_los'; valid choices: val_acc, val_loss")
    assert not (out / "config.yaml").exists() and not (out / "rounds.jsonl").exists()


def test_a_lineage_records_both_rules_from_one_training(tmp_path, smoke_config):
    from lth.runner import run

    # Adam at 0.05 on digits: validation loss is lowest at the last evaluation, accuracy peaks earlier (a tie, too)
    short = ("ticket.rounds=0", "trainer.eval_every=5", "trainer.checkpoint_every=0", "optimizer.lr=0.05")
    recs = {m: run(smoke_config(*short, f"trainer.early_stop_metric={m}"), tmp_path / m, sinks=[])[0]
            for m in ("val_loss", "val_acc")}
    evals = [json.loads(line) for line in (tmp_path / "val_acc" / "round_00" / "evals.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [5, 10, 15, 20, 25, 30, 35, 40]
    by_loss = min(evals, key=lambda e: (e["val_loss"], e["step"]))
    by_acc = min(evals, key=lambda e: (-e["val_acc"], e["step"]))
    assert by_loss["step"] != by_acc["step"]  # the two rules pick different evaluations here
    for m, rec in recs.items():
        assert rec["early_stop_metric"] == m
        assert (rec["early_stop_by_val_loss_step"], rec["early_stop_by_val_loss_test_acc"]) == (
            by_loss["step"], by_loss["test_acc"])
        assert (rec["early_stop_by_val_acc_step"], rec["early_stop_by_val_acc_test_acc"]) == (
            by_acc["step"], by_acc["test_acc"])
        assert (rec["early_stop_step"], rec["early_stop_test_acc"]) == (rec[f"early_stop_by_{m}_step"],
                                                                        rec[f"early_stop_by_{m}_test_acc"])
    assert recs["val_loss"]["test_acc"] == recs["val_acc"]["test_acc"]  # the rule changes no training
