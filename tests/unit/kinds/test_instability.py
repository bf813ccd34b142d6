"""The instability kind: two copies from θ0, θk or a saved round's mask, their path, resumable."""

import os

import pytest
import torch

from lth import masks as masks_lib
from lth.kinds import kind_for
from lth.runner import run

TINY = ("trainer.max_steps=10", "trainer.eval_every=5", "trainer.checkpoint_every=5", "trainer.checkpoint_min_interval_s=0", "stability.alphas=3")


def test_the_kind_applies_to_stability_pair_even_with_a_branch_source(smoke_config):
    assert kind_for(smoke_config("stability.pair=true")).name == "instability"
    assert kind_for(smoke_config("stability.pair=true", "branch.from=/x", "branch.round=1")).name == "instability"
    assert kind_for(smoke_config("branch.from=/x", "branch.round=1")).name == "branch"
    cfg = smoke_config("stability.pair=true", "stability.every_round=true")
    with pytest.raises(ValueError, match="Set one of them, not both"):
        kind_for(cfg).check(cfg)


@pytest.mark.slow
def test_copies_differ_only_in_their_seeds(tmp_path, smoke_config, monkeypatch):
    rec = run(smoke_config(*TINY, "stability.pair=true"), tmp_path / "pair", sinks=[])[0]
    a = torch.load(tmp_path / "pair/round_00/stability/copy_a/trained.pt")
    b = torch.load(tmp_path / "pair/round_00/stability/copy_b/trained.pt")
    assert not all(torch.equal(a[k], b[k]) for k in a)
    assert rec["density"] == 1.0 and rec["reset"] == "none" and rec["train_steps"] == 10
    assert rec["test_acc"] == pytest.approx(1 - sum(rec["pair_test_error"]) / 2)
    # give copy b copy a's seed: same start, same mask, same steps → the very same network, no barrier at all
    from lth.kinds import pair

    seed_a = rec["stability_seeds"][0]
    monkeypatch.setattr(pair, "copy_seeds", lambda seed, r: (seed_a, seed_a))
    same = run(smoke_config(*TINY, "stability.pair=true"), tmp_path / "same", sinks=[])[0]
    a2 = torch.load(tmp_path / "same/round_00/stability/copy_a/trained.pt")
    b2 = torch.load(tmp_path / "same/round_00/stability/copy_b/trained.pt")
    assert all(torch.equal(a[k], a2[k]) and torch.equal(a[k], b2[k]) for k in a)
    assert same["instability_test"] == 0.0 and same["instability_train"] == 0.0


@pytest.mark.slow
def test_a_sparse_start_from_a_lineage_round_keeps_its_mask_and_resumes(tmp_path, smoke_config):
    src = tmp_path / "src"
    run(smoke_config(*TINY), src, sinks=[])
    out = tmp_path / "pair"
    cfg = smoke_config(*TINY, "stability.pair=true", f"branch.from={src}", "branch.round=1")
    rec = run(cfg, out, sinks=[])[0]
    assert rec["round"] == 1 and rec["density"] == 0.5 and rec["branch_from"] == str(src) and rec["reset"] == "rewind"
    masks = masks_lib.load(src / "round_01/mask.pt")
    for c in ("a", "b"):
        state = torch.load(out / f"round_01/stability/copy_{c}/trained.pt")
        assert all(torch.all(state[n][~m] == 0) for n, m in masks.items())
    # a run killed after copy a: copy a is kept, copy b and the path are redone, the same numbers come out
    done_a = out / "round_01/stability/copy_a/trained.pt"
    before = os.stat(done_a).st_mtime_ns
    (out / "round_01/stability/copy_b/trained.pt").unlink()
    (out / "rounds.jsonl").unlink()
    again = run(cfg, out, sinks=[])[0]
    assert os.stat(done_a).st_mtime_ns == before
    assert again["instability_test"] == rec["instability_test"] and again["pair_test_error"] == rec["pair_test_error"]
    with pytest.raises(ValueError, match="give the same rewind point"):
        run(smoke_config(*TINY, "stability.pair=true", f"branch.from={src}", "branch.round=1",
                         "ticket.rewind_step=2"), tmp_path / "other", sinks=[])
    assert not (tmp_path / "other").exists()


def lrs_of(schedule, lr):
    """The lr of each of a schedule's steps (its optimizer and scheduler stepped on a dummy parameter)."""
    opt = schedule.optimizer([torch.nn.Parameter(torch.zeros(1))])
    sched = schedule.scheduler(opt) if schedule.scheduler is not None else None
    out = []
    for _ in range(schedule.steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    return out


@pytest.mark.slow
def test_copies_from_theta_k_resume_the_lr_schedule_at_k(tmp_path, smoke_config, monkeypatch):
    import lth.kinds.instability as kind
    from lth.kinds import pair

    step_decay = "scheduler={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true,step_size:7,gamma:0.5}"
    seen = []
    real = pair.measure_pair

    def spy(lineage, r, start, masks, schedule):
        seen.append((r, schedule))
        return real(lineage, r, start, masks, schedule)

    monkeypatch.setattr(kind, "measure_pair", spy)
    monkeypatch.setattr(pair, "measure_pair", spy)
    cfg = smoke_config("trainer.max_steps=20", "trainer.eval_every=10", "stability.alphas=3", "ticket.rewind_step=6",
                       step_decay, "stability.pair=true")
    lr = cfg.optimizer["lr"]
    rec = run(cfg, tmp_path / "dense", sinks=[])[0]
    (r, schedule), = seen
    assert (r, schedule.steps, schedule.start) == (0, 14, 6) and rec["stability_schedule_start"] == 6
    assert lrs_of(schedule, lr) == pytest.approx([lr * 0.5 ** (s // 7) for s in range(6, 20)], abs=1e-15)
    # an IMP lineage's every-round pairs: round 0's from θk continues round 0; round 1's trains as round 1 did
    seen.clear()
    recs = run(smoke_config("trainer.max_steps=20", "trainer.eval_every=10", "stability.alphas=3",
                            "ticket.rewind_step=6", step_decay, "ticket.rounds=1", "stability.every_round=true"),
               tmp_path / "imp", sinks=[])
    assert [(r, s.steps, s.start) for r, s in seen] == [(0, 14, 6), (1, 14, 6)]
    assert [x["stability_steps"] for x in recs] == [14, 14] and recs[1]["train_steps"] == 14
    assert lrs_of(seen[1][1], lr) == pytest.approx([lr * 0.5 ** (s // 7) for s in range(6, 20)], abs=1e-15)
