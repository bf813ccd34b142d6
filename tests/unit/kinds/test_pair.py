"""The pair of copies behind every instability: seeds, data order, checks, and per-round stability of IMP lineages."""

import json

import pytest
import torch

from lth import masks as masks_lib
from lth.kinds import kind_for
from lth.kinds.pair import check_stability, copy_seeds, with_order
from lth.runner import run
from lth.seeds import derive_seed

TINY = ("trainer.max_steps=10", "trainer.eval_every=5", "trainer.checkpoint_every=5", "trainer.checkpoint_min_interval_s=0", "stability.alphas=3")


@pytest.mark.parametrize(("override", "message"), [
    ("stability.alphas=1", r"stability.alphas must be an integer >= 2 .* got 1"),
    ("stability.batchnorm=sometimes", "stability.batchnorm must be one of true, false, auto; got 'sometimes'"),
    ("stability.bn_batches=0", "stability.bn_batches must be a positive number or null"),
    ("stability.train_examples=-3", "stability.train_examples must be a positive number or null"),
])
def test_bad_stability_values_are_refused_by_both_kinds(smoke_config, override, message):
    for switch in ("stability.pair=true", "stability.every_round=true"):
        cfg = smoke_config(switch, override)
        with pytest.raises(ValueError, match=message):
            kind_for(cfg).check(cfg)
    check_stability(smoke_config())  # the defaults pass


def test_a_bad_value_leaves_no_folder(tmp_path, smoke_config):
    with pytest.raises(ValueError, match="stability.alphas"):
        run(smoke_config("stability.every_round=true", "stability.alphas=0"), tmp_path / "x", sinks=[])
    assert not (tmp_path / "x").exists()


def test_copy_seeds_come_from_the_lineage_seed_and_differ():
    a, b = copy_seeds(3, 2)
    assert (a, b) == (derive_seed(3, "stability", 2, "a"), derive_seed(3, "stability", 2, "b"))
    assert a != b and copy_seeds(3, 2) == (a, b)
    assert copy_seeds(4, 2) != (a, b) and copy_seeds(3, 1) != (a, b)


def test_with_order_changes_only_the_training_order(smoke_config):
    from lth.data import build_datamodule

    cfg = smoke_config()
    data = build_datamodule(cfg.data.name, **cfg.data.options(cfg.seed))
    other = with_order(data, 12345)
    assert other.seed == 12345 and data.seed == cfg.seed
    for split in ("train", "val", "test"):  # the very same tensors: splits and standardisation unchanged
        assert getattr(other, split)[0] is getattr(data, split)[0]
    xa, _ = next(iter(data.train_dataloader()))
    xb, _ = next(iter(other.train_dataloader()))
    assert xa.shape == xb.shape and not torch.equal(xa, xb)
    assert torch.equal(next(iter(with_order(data, cfg.seed).train_dataloader()))[0], xa)


@pytest.mark.slow
def test_every_round_adds_instability_and_leaves_the_lineage_unchanged(tmp_path, smoke_config):
    plain = run(smoke_config(*TINY), tmp_path / "plain", sinks=[])
    recs = run(smoke_config(*TINY, "stability.every_round=true"), tmp_path / "stab", sinks=[])
    for p, s in zip(plain, recs):  # the lineage's own rounds: bit for bit the same
        assert p["test_acc"] == s["test_acc"] and p["density"] == s["density"]
        r = f"round_{p['round']:02d}"
        a, b = torch.load(tmp_path / "plain" / r / "trained.pt"), torch.load(tmp_path / "stab" / r / "trained.pt")
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert all(torch.equal(m, n) for m, n in zip(masks_lib.load(tmp_path / "plain" / r / "mask.pt").values(),
                                                        masks_lib.load(tmp_path / "stab" / r / "mask.pt").values()))
    for rec in recs:
        r = tmp_path / "stab" / f"round_{rec['round']:02d}"
        curve = [json.loads(x) for x in (r / "stability.jsonl").read_text().splitlines()]
        assert [c["alpha"] for c in curve] == [0.0, 0.5, 1.0]
        assert rec["instability_test"] == max(c["test_error"] for c in curve) - (
            curve[0]["test_error"] + curve[-1]["test_error"]) / 2
        assert rec["stability_seeds"] == list(copy_seeds(0, rec["round"])) and rec["stability_steps"] == 10
        masks = masks_lib.load(r / "mask.pt")
        for c in ("a", "b"):  # the copies are trained under the round's mask
            state = torch.load(r / "stability" / f"copy_{c}" / "trained.pt")
            assert all(torch.all(state[n][~m] == 0) for n, m in masks.items())
            assert not (r / "stability" / f"copy_{c}" / "checkpoints" / "last.ckpt").exists()
    assert recs[1]["density"] == 0.5


@pytest.mark.slow
def test_round_0_from_theta_k_equals_the_instability_kind_of_that_point(tmp_path, smoke_config):
    lineage = run(smoke_config(*TINY, "ticket.rounds=0", "ticket.rewind_step=3", "stability.every_round=true"),
                  tmp_path / "imp", sinks=[])
    pair = run(smoke_config(*TINY, "ticket.rewind_step=3", "stability.pair=true"), tmp_path / "pair", sinks=[])
    keys = ("instability_test", "instability_train", "pair_test_error", "stability_seeds", "stability_steps")
    assert {k: lineage[0][k] for k in keys} == {k: pair[0][k] for k in keys}
    assert pair[0]["stability_steps"] == 7  # the copies train the round's remaining 10 − 3 steps
    theta_k = [torch.load(p / "snapshots.pt")["snapshots"]["rewind"] for p in (tmp_path / "imp", tmp_path / "pair")]
    assert all(torch.equal(theta_k[0][k], theta_k[1][k]) for k in theta_k[0])
