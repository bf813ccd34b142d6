"""logger=wandb: one offline run per lineage, read back from its .wandb file, equal to rounds.jsonl."""

import json

import pytest

from lth.cli import compose_config
from lth.runner import run
from lth.wandb_sink import ROUND_METRICS
from tests.wandb_reader import find_run_file, read_config, read_history


def test_offline_run_mirrors_every_round(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out = tmp_path / "run"
    cfg = compose_config(["experiment=smoke", f"data.root={data_root}", "logger=wandb", "ticket.rounds=2",
                          "trainer.log_every_n_steps=10"])
    records = run(cfg, out, sinks=None)
    assert [json.loads(x) for x in (out / "rounds.jsonl").read_text().splitlines()] == records
    history = read_history(find_run_file(tmp_path / "wb"))
    per_round = [h for h in history if "round" in h]
    assert [h["round"] for h in per_round] == [0, 1, 2]
    for h, rec in zip(per_round, records):
        for key in ROUND_METRICS:
            if rec.get(key) is not None:
                assert h[key] == pytest.approx(rec[key], rel=1e-12), key
        assert h["layer_density/hidden.0.weight"] == rec["layer_density"]["hidden.0.weight"]
        assert h["rounds/nrows"] == rec["round"] + 1  # the incremental round table grows by one row per round
    curves = [h for h in history if "train/loss" in h]
    assert curves and max(h["train/global_step"] for h in curves) > 80  # round 2's curve sits after rounds 0 and 1
    config = read_config(find_run_file(tmp_path / "wb"))
    assert config["pruning"]["criterion"] == "large_final" and config["ticket"]["rounds"] == 2
    assert len([h for h in history if "rounds/nrows" in h]) == 3


def test_a_failing_wandb_warns_and_the_local_record_completes(tmp_path, data_root, monkeypatch):
    import wandb

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(wandb, "init", broken)
    cfg = compose_config(["experiment=smoke", f"data.root={data_root}", "logger=wandb"])
    with pytest.warns(RuntimeWarning, match="W&B could not start.*disk full"):
        records = run(cfg, tmp_path / "run", sinks=None)
    assert [r["round"] for r in records] == [0, 1]


def test_mask_overlap_is_the_share_of_kept_weights_the_source_keeps_too(tmp_path):
    import torch

    from lth.masks import save
    from lth.wandb_sink import mask_overlap

    a = {"w": torch.tensor([[1, 1, 0], [1, 0, 1]], dtype=torch.bool), "v": torch.tensor([1, 0], dtype=torch.bool)}
    b = {"w": torch.tensor([[1, 0, 0], [1, 1, 1]], dtype=torch.bool), "v": torch.tensor([0, 1], dtype=torch.bool)}
    save(a, tmp_path / "a.pt")
    save(b, tmp_path / "b.pt")
    assert mask_overlap(tmp_path / "a.pt", tmp_path / "b.pt") == 3 / 5  # kept by a: 5; by both: (0,0) (1,0) (1,2)
    assert mask_overlap(tmp_path / "b.pt", tmp_path / "a.pt") == 3 / 5
    assert mask_overlap(tmp_path / "a.pt", tmp_path / "a.pt") == 1.0
