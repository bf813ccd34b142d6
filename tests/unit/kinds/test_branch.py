"""The branch kind: a saved round's mask trained under another reset, or a random mask with its per-layer counts."""

import pytest
import torch

from lth import masks as masks_lib
from lth.record import RunFolder
from lth.runner import run


@pytest.mark.parametrize("reset", ["random_reinit", "signed_constant", "continue"])
def test_branch_trains_a_saved_mask_with_another_reset(tmp_path, smoke_config, reset):
    src = tmp_path / "src"
    run(smoke_config(), src, sinks=[])
    out = tmp_path / "branch"
    rec = run(smoke_config(f"branch.from={src}", "branch.round=1", f"ticket.reset={reset}"), out, sinks=[])
    assert [r["round"] for r in rec] == [1] and rec[0]["reset"] == reset and rec[0]["branch_from"] == str(src)
    a, b = masks_lib.load(src / "round_01/mask.pt"), masks_lib.load(out / "round_01/mask.pt")
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert rec[0]["density"] == 0.5


def test_branch_random_mask_keeps_per_layer_counts(tmp_path, smoke_config):
    src = tmp_path / "src"
    run(smoke_config(), src, sinks=[])
    out = tmp_path / "branch"
    run(smoke_config(f"branch.from={src}", "branch.round=1", "branch.random_mask=true"), out, sinks=[])
    a, b = masks_lib.load(src / "round_01/mask.pt"), masks_lib.load(out / "round_01/mask.pt")
    assert all(int(a[n].sum()) == int(b[n].sum()) for n in a)
    assert not all(torch.equal(a[n], b[n]) for n in a)


def test_branch_mask0_is_its_own_not_its_sources(tmp_path, smoke_config):
    """A source trained with pruned weights at zero, branched with ticket.mask0=freeze_init: the branch's pruned
    weights stay at θ0 (bit-identical) through training, its kept ones move."""
    src = tmp_path / "src"
    run(smoke_config(), src, sinks=[])
    out = tmp_path / "branch"
    run(smoke_config(f"branch.from={src}", "branch.round=1", "ticket.mask0=freeze_init"), out, sinks=[])
    init = RunFolder(src, writer=False).load_snapshots()["snapshots"]["init"]
    mask = masks_lib.load(out / "round_01/mask.pt")
    trained = RunFolder(out, writer=False).load_trained(1)
    for n, m in mask.items():
        assert int((~m).sum()) > 0
        assert torch.equal(trained[n][~m], init[n][~m])  # frozen at θ0, not zero
        assert not torch.equal(trained[n][m], init[n][m])


def test_a_missing_source_round_is_refused_before_anything_is_written(tmp_path, smoke_config):
    src = tmp_path / "src"
    run(smoke_config("ticket.rounds=0"), src, sinks=[])
    with pytest.raises(ValueError, match=r"has no finished round 3; finished: \[0\]"):
        run(smoke_config(f"branch.from={src}", "branch.round=3"), tmp_path / "branch", sinks=[])
    assert not (tmp_path / "branch").exists()


def test_a_source_of_another_model_is_refused(tmp_path, smoke_config):
    src = tmp_path / "src"
    run(smoke_config("ticket.rounds=0", "model.args.hidden=[16]"), src, sinks=[])
    with pytest.raises(ValueError, match="does not match this model"):
        run(smoke_config(f"branch.from={src}", "branch.round=0"), tmp_path / "branch", sinks=[])
    assert not (tmp_path / "branch").exists()
