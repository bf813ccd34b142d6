"""The pruning-at-init kind: θ0 scored and pruned to the target density before round 0 trains; exact counts, saved
scores, deterministic masks, collapse refused before anything is written, branches of it (sanity checks)."""

from __future__ import annotations

import pytest
import torch

from lth import masks as masks_lib
from lth.kinds import kind_for
from lth.pruning import removal_count
from lth.record import RunFolder
from lth.runner import run

PAI = ("pruning.at_init=true", "pruning.scope=global", "pruning.synflow_iterations=5")


def test_the_config_key_chooses_the_kind(smoke_config):
    assert kind_for(smoke_config(*PAI, "pruning.target_density=0.1")).name == "pruning_at_init"
    assert kind_for(smoke_config()).name == "lineage"
    assert kind_for(smoke_config(*PAI, "branch.from=x", "branch.round=0")).name == "branch"


@pytest.mark.slow
@pytest.mark.parametrize("criterion", ["synflow", "snip", "grasp", "large_init", "random"])
def test_pruned_at_init_to_the_exact_count_then_trained(tmp_path, smoke_config, criterion):
    cfg = smoke_config(*PAI, f"pruning.criterion={criterion}", "pruning.target_density=0.1")
    rec = run(cfg, tmp_path / "run", sinks=[])
    assert [r["round"] for r in rec] == [0]
    r0 = rec[0]
    assert r0["kind"] == "pruning_at_init" and r0["criterion"] == criterion and r0["target_density"] == 0.1
    folder = RunFolder(tmp_path / "run", writer=False)
    masks = folder.load_mask(0)
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    if criterion != "synflow":  # one shot: round_half_even(0.9 × all) removed
        assert kept == total - removal_count(0.9, total)
    assert r0["density"] == kept / total
    assert set(r0["layer_density"]) == set(masks)
    trained = folder.load_trained(0)
    for n, m in masks.items():
        assert torch.all(trained[n][~m] == 0)
    scores = torch.load(folder.round_dir(0) / "scores.pt", weights_only=True)
    assert {n: s.shape for n, s in scores.items()} == {n: m.shape for n, m in masks.items()}
    init = folder.load_snapshots()["snapshots"]["init"]
    assert all(not torch.equal(init[n], trained[n]) for n in masks)  # trained from θ0, which is kept whole


@pytest.mark.slow
def test_same_seed_same_mask_and_resume_is_a_no_op(tmp_path, smoke_config):
    cfg = smoke_config(*PAI, "pruning.criterion=snip", "pruning.target_density=0.2")
    a = run(cfg, tmp_path / "a", sinks=[])
    b = run(cfg, tmp_path / "b", sinks=[])
    ma, mb = masks_lib.load(tmp_path / "a/round_00/mask.pt"), masks_lib.load(tmp_path / "b/round_00/mask.pt")
    assert all(torch.equal(ma[n], mb[n]) for n in ma)
    assert a[0]["test_acc"] == b[0]["test_acc"]
    again = run(cfg, tmp_path / "a", sinks=[])
    assert [dict(x) for x in again] == [dict(x) for x in a]


@pytest.mark.slow
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, smoke_config):
    with pytest.raises(ValueError, match="pruning.target_density"):
        run(smoke_config("pruning.at_init=true"), tmp_path / "x", sinks=[])
    with pytest.raises(ValueError, match="pruning.criterion=snip scores the network at initialisation"):
        run(smoke_config("pruning.criterion=snip"), tmp_path / "x", sinks=[])
    with pytest.raises(ValueError, match="pruning.synflow_iterations must be >= 1"):
        run(smoke_config(*PAI, "pruning.target_density=0.1", "pruning.synflow_iterations=0"), tmp_path / "x", sinks=[])
    with pytest.raises(ValueError, match="round 0: layer collapse at density 0.00"):
        run(smoke_config(*PAI, "pruning.criterion=random", "pruning.target_density=0.001"), tmp_path / "x", sinks=[])
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_allowed_collapse_is_recorded(tmp_path, smoke_config):
    rec = run(smoke_config(*PAI, "pruning.criterion=random", "pruning.target_density=0.001",
                           "pruning.allow_collapse=true"), tmp_path / "x", sinks=[])
    assert rec[0]["layer_collapse"] is True and rec[0]["kept_path"] is False


@pytest.mark.slow
def test_sanity_branches_of_a_pruning_at_init_run(tmp_path, smoke_config):
    src = tmp_path / "src"
    run(smoke_config(*PAI, "pruning.criterion=snip", "pruning.target_density=0.3"), src, sinks=[])
    base = masks_lib.load(src / "round_00/mask.pt")
    scores = torch.load(src / "round_00/scores.pt", weights_only=True)
    out = {}
    for check in ("shuffle", "invert", "reinit"):
        rec = run(smoke_config(*PAI, "pruning.criterion=snip", "pruning.target_density=0.3", f"branch.from={src}",
                               "branch.round=0", f"branch.sanity={check}"), tmp_path / check, sinks=[])
        assert rec[0]["sanity"] == check and rec[0]["reset"] == ("random_reinit" if check == "reinit" else "rewind")
        out[check] = masks_lib.load(tmp_path / check / "round_00/mask.pt")
        assert {n: int(m.sum()) for n, m in out[check].items()} == {n: int(m.sum()) for n, m in base.items()}
    assert all(torch.equal(out["reinit"][n], base[n]) for n in base)
    assert not all(torch.equal(out["shuffle"][n], base[n]) for n in base)
    for n, m in out["invert"].items():  # every kept score is at most every dropped one, per layer
        assert scores[n][m].max() <= scores[n][~m].min()
    fresh = RunFolder(tmp_path / "reinit", writer=False).load_trained(0)
    init = RunFolder(src, writer=False).load_snapshots()["snapshots"]["init"]
    assert not torch.equal(fresh[next(iter(base))], init[next(iter(base))])
