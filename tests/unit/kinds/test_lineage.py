"""The lineage kind (IMP): schedule checks before anything is written, θ0/θk snapshots, damaged rounds redone."""

import pytest
import torch

from lth import masks as masks_lib
from lth.kinds.lineage import finished_round
from lth.runner import Lineage, run


def test_an_unreachable_schedule_is_refused_before_anything_is_written(tmp_path, smoke_config):
    # the output layer (320 weights) at fraction 0.9: 320 → 32 → 3 → 0 by round 3
    with pytest.raises(ValueError, match="density unreachable"):
        run(smoke_config("pruning.fraction=0.9", "ticket.rounds=3"), tmp_path / "run", sinks=[])
    assert not (tmp_path / "run").exists()


def test_snapshots_hold_theta0_and_the_rewind_point(tmp_path, smoke_config):
    out = tmp_path / "run"
    run(smoke_config("ticket.rewind_step=10", "trainer.max_steps=20", "trainer.eval_every=10"), out, sinks=[])
    snaps = torch.load(out / "snapshots.pt", weights_only=True)["snapshots"]
    assert set(snaps) == {"init", "rewind"}
    assert not torch.equal(snaps["init"]["hidden.0.weight"], snaps["rewind"]["hidden.0.weight"])


def test_a_damaged_mask_makes_its_round_unfinished(tmp_path, smoke_config):
    out = tmp_path / "run"
    run(smoke_config(), out, sinks=[])
    lineage = Lineage(smoke_config(), out, sinks=[])
    masks, trained, status = finished_round(lineage, 1)
    assert status == "ok" and masks_lib.density(masks) == 0.5 and "hidden.0.weight" in trained
    (out / "round_01" / "mask.pt").write_bytes(b"not a mask")
    with pytest.warns(UserWarning, match="round 1 is recorded but its files are damaged"):
        assert finished_round(lineage, 1) is None
    lineage.folder.release()
