"""lth.io: atomic writes leave the old file or the whole new one, JSON-lines reading, stale temp files."""

import json
import os

import pytest
import torch

from lth import io


def test_atomic_write_replaces_the_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "deep" / "er" / "result.txt"  # missing parents are created
    io.atomic_write_text(path, "first")
    io.atomic_write_text(path, "second ü")
    assert path.read_bytes() == "second ü".encode()
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.txt"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    io.atomic_write_text(path, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        io.atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_atomic_torch_save_round_trips(tmp_path):
    obj = {"w": torch.arange(6).reshape(2, 3), "mask": torch.tensor([True, False])}
    io.atomic_torch_save(obj, tmp_path / "m.pt")
    back = torch.load(tmp_path / "m.pt")
    assert torch.equal(back["w"], obj["w"]) and torch.equal(back["mask"], obj["mask"])
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_remove_stale_temp_files_removes_only_temp_files(tmp_path):
    (tmp_path / ".rounds.jsonl.abc.tmp").write_text("half")
    (tmp_path / "rounds.jsonl").write_text("{}\n")
    (tmp_path / "notes.tmp").write_text("not hidden: kept")
    removed = io.remove_stale_temp_files(tmp_path)
    assert [p.name for p in removed] == [".rounds.jsonl.abc.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.tmp", "rounds.jsonl"]


def test_jsonl_round_trip_sorted_keys_and_missing_file(tmp_path):
    path = tmp_path / "rounds.jsonl"
    assert io.read_jsonl(path) == []
    io.write_jsonl(path, [{"b": 1, "a": 2}, {"round": 1}])
    assert path.read_text() == '{"a": 2, "b": 1}\n{"round": 1}\n'
    assert io.read_jsonl(path) == [{"a": 2, "b": 1}, {"round": 1}]


def test_a_damaged_line_is_an_error_naming_it_or_skipped_with_a_warning(tmp_path):
    path = tmp_path / "rounds.jsonl"
    path.write_text(json.dumps({"round": 0}) + "\n\n" + '{"round": 1, "acc' + "\n" + "[1, 2]\n" + '{"round": 2}\n')
    with pytest.raises(ValueError, match="line 3 is damaged"):
        io.read_jsonl(path)
    with pytest.warns(UserWarning) as caught:
        rows = io.read_jsonl(path, skip_damaged=True)
    assert rows == [{"round": 0}, {"round": 2}]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2  # the truncated object and the list, one warning each
    assert "line 3" in messages[0] and "line 4" in messages[1] and "a list, not an object" in messages[1]


def test_fault_point_fires_only_on_the_named_passage(monkeypatch):
    kills = []
    monkeypatch.setattr(io.os, "kill", lambda pid, sig: kills.append(sig))
    monkeypatch.setattr(io, "_fault_hits", io.Counter())
    monkeypatch.delenv(io.FAULT_ENV, raising=False)
    io.fault_point("step:0:3")
    assert kills == []
    monkeypatch.setenv(io.FAULT_ENV, "step:0:3@2")
    io.fault_point("step:0:4")
    io.fault_point("step:0:3")
    assert kills == []
    io.fault_point("step:0:3")
    assert kills == [io.signal.SIGKILL]
    io.fault_point("step:0:3")
    assert len(kills) == 1
