"""The typed round record: building, the JSON form, reading old files, the run folder's writer and reader."""

import json

import pytest

from lth.record import RECORD_VERSION, RoundRecord, RunFolder

V1_LINE = {  # a record as written before record_version existed
    "round": 1, "density": 0.5, "layer_density": {"a": 0.5}, "test_acc": 0.9, "test_loss": 0.3, "val_acc": 0.8,
    "val_loss": 0.4, "early_stop_step": 20, "early_stop_test_acc": 0.85, "early_stop_val_loss": 0.35,
    "early_stop_val_acc": 0.8, "train_steps": 40, "wall_seconds": 1.5, "criterion": "large_final", "reset": "rewind",
    "fraction": 0.5, "scope": "layerwise", "seed": 0, "status": "ok", "granularity": "weight", "flops_dense": 100,
    "flops_nonzero": 50, "params_dense": 120, "params_nonzero": 70, "branch_from": "runs/x",
}


def test_build_splits_typed_fields_and_extra():
    rec = RoundRecord.build(round=2, density=0.25, test_acc=float("nan"), branch_round=2, supermask="edge_popup")
    assert rec.round == 2 and rec.density == 0.25
    assert rec.test_acc is None  # non-finite values are stored as null
    assert rec.extra == {"branch_round": 2, "supermask": "edge_popup"}
    assert rec["branch_round"] == 2 and rec.get("missing") is None
    assert rec["record_version"] == RECORD_VERSION
    json.dumps(rec.as_dict())  # JSON-safe


def test_an_old_record_reads_the_same_and_is_rewritten_unchanged():
    rec = RoundRecord.from_json(V1_LINE)
    assert rec.record_version == 1 and rec.extra == {"branch_from": "runs/x"}
    assert rec.as_dict() == V1_LINE and rec == V1_LINE
    assert rec.replace(test_acc=0.5)["test_acc"] == 0.5 and rec.replace(test_acc=0.5).record_version == 1


def test_a_newer_record_is_refused():
    with pytest.raises(ValueError, match="newer than this lth reads"):
        RoundRecord.from_json({**V1_LINE, "record_version": RECORD_VERSION + 1})


def test_folder_writes_and_reads_records(tmp_path):
    folder = RunFolder(tmp_path)
    (tmp_path / "rounds.jsonl").write_text(json.dumps(V1_LINE) + "\n")
    folder.add(RoundRecord.build(round=2, density=0.25, reset="rewind"))
    rows = folder.rounds()
    assert [r.round for r in rows] == [1, 2] and all(isinstance(r, RoundRecord) for r in rows)
    lines = [json.loads(x) for x in (tmp_path / "rounds.jsonl").read_text().splitlines()]
    assert lines[0] == V1_LINE  # the old line keeps its form
    assert lines[1]["record_version"] == RECORD_VERSION and lines[1]["density"] == 0.25
    assert folder.drop_rounds(2) == [2] and [r.round for r in folder.rounds()] == [1]
