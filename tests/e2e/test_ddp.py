"""DDP: sharded batches, masks agreeing across ranks, results of 2 processes equal to one (ddp_fork / ddp_spawn)."""

import json
import multiprocessing as mp
import os
import warnings

import pytest
import torch

from lth import masks as masks_lib
from lth.cli import compose_config
from lth.data.memory import TensorBatches
from lth.distributed import MaskAgreement, agree, check_agreement, is_writer, mask_digest, world_size
from lth.runner import Lineage, run


def test_sharded_batches_are_disjoint_slices_of_the_single_process_batches():
    x = torch.arange(23, dtype=torch.float32).unsqueeze(1)  # 23 samples, batches of 6: 6, 6, 6, 5
    y = torch.arange(23)
    one = TensorBatches(x, y, 6, shuffle=True, seed=3, shard=True)
    ranks = []
    for rank in (0, 1):
        b = TensorBatches(x, y, 6, shuffle=True, seed=3, shard=True)
        b.replica = (rank, 2)
        ranks.append(list(b))
    whole = list(one)
    assert len(ranks[0]) == len(ranks[1]) == len(whole) == 4
    order = one.order(0)
    for i, (xb, yb) in enumerate(whole):
        a, b = ranks[0][i][1], ranks[1][i][1]
        assert len(a) == len(b) == 3  # the last batch of 5 is padded to 6: 3 + 3
        if i < 3:  # a full batch: rank 0 takes its first half, rank 1 the second
            assert torch.equal(torch.cat([a, b]), yb)
            assert not set(a.tolist()) & set(b.tolist())
        else:  # 5 items + the epoch's first item as padding
            assert torch.equal(torch.cat([a, b]), torch.cat([yb, order[:1]]))
    # every sample of the epoch is seen once (plus the one pad)
    seen = torch.cat([t[1] for r in ranks for t in r])
    assert sorted(seen.tolist()) == sorted(list(range(23)) + [int(order[0])])


def test_sharded_batches_resume_mid_epoch_and_reject_odd_batches():
    x, y = torch.randn(40, 2), torch.arange(40)
    b = TensorBatches(x, y, 8, shuffle=True, seed=0, shard=True)
    b.replica = (1, 2)
    it = iter(b)
    first = [next(it)[1] for _ in range(2)]
    state = b.state_dict()
    c = TensorBatches(x, y, 8, shuffle=True, seed=0, shard=True)
    c.replica = (1, 2)
    c.load_state_dict(state)
    rest = [t[1] for t in c]
    full = TensorBatches(x, y, 8, shuffle=True, seed=0, shard=True)
    full.replica = (1, 2)
    assert [t.tolist() for t in first + rest] == [t[1].tolist() for t in full]
    odd = TensorBatches(x, y, 7, shuffle=True, shard=True)
    odd.replica = (0, 2)
    with pytest.raises(ValueError, match="batch_size=7 is not divisible by the 2 ranks"):
        next(iter(odd))


def test_world_size_and_writer_rank(monkeypatch):
    assert world_size(2) == 2 and world_size([0, 1, 2]) == 3 and world_size("auto") == 1 and world_size(4, 2) == 8
    keys = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "SLURM_NTASKS")
    cases = [({}, True), ({"RANK": "1"}, False), ({"LOCAL_RANK": "1"}, False), ({"LOCAL_RANK": "0"}, True),
             ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, False), ({"SLURM_NTASKS": "2", "SLURM_PROCID": "1"}, False),
             ({"SLURM_NTASKS": "2", "SLURM_PROCID": "0"}, True), ({"SLURM_NTASKS": "1", "SLURM_PROCID": "3"}, True)]
    for extra, expected in cases:
        for k in keys:
            monkeypatch.delenv(k, raising=False)
        for k, v in extra.items():
            monkeypatch.setenv(k, v)
        assert is_writer("ddp", 2) is expected, extra
        assert is_writer("ddp_spawn", 2) is True  # only the main process runs the lineage
        assert is_writer("ddp", 1) is True  # one process: always the writer


def test_check_agreement_rejects_ranks_with_different_masks():
    check_agreement([{"masks": "a", "weights": "w"}, {"masks": "a", "weights": "w"}], "fit_start")
    with pytest.raises(RuntimeError, match=r"ranks hold different masks at fit_start: \['a', 'b'\]"):
        check_agreement([{"masks": "a", "weights": "w"}, {"masks": "b", "weights": "w"}], "fit_start")
    with pytest.warns(UserWarning, match="ranks hold different weights at train_end"):
        check_agreement([{"masks": "a", "weights": "w"}, {"masks": "a", "weights": "v"}], "train_end")


def _agree_worker(rank, path, out):
    torch.distributed.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=2)
    g = torch.Generator().manual_seed(rank)  # each rank "prunes" differently
    masks = {"w": torch.rand(5, 7, generator=g) > 0.5}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = agree(masks)
    torch.save({"masks": got, "warned": [str(w.message) for w in caught]}, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_agree_gives_every_rank_rank0s_masks(tmp_path):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_agree_worker, args=(r, tmp_path / "store", tmp_path)) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    expected = torch.rand(5, 7, generator=torch.Generator().manual_seed(0)) > 0.5
    assert torch.equal(r0["masks"]["w"], expected) and torch.equal(r1["masks"]["w"], expected)
    assert r0["warned"] == [] and any("pruned differently from rank 0" in m for m in r1["warned"])


# ----- a 2-round lineage on 2 processes


def _records(path):
    return [json.loads(line) for line in (path / "rounds.jsonl").read_text().splitlines()]


def _ddp_lineage(tmp_path, data_root, monkeypatch, trainer_args):
    args = ["experiment=smoke", f"data.root={data_root}", "ticket.rewind_step=10"]
    trainers = []
    make = Lineage.trainer

    def capture(self, r, steps, callbacks, single_process=False, **kwargs):
        t = make(self, r, steps, callbacks, single_process, **kwargs)
        trainers.append((r, t))
        return t

    monkeypatch.setattr(Lineage, "trainer", capture)
    ddp = run(compose_config([*args, *trainer_args]), tmp_path / "ddp", sinks=[])
    single = run(compose_config(args), tmp_path / "single", sinks=[])
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"

    # records written once, by one process; the same files as a single-process run
    assert [r["round"] for r in _records(ddp_dir)] == [0, 1] == [r["round"] for r in ddp]
    files = sorted(str(p.relative_to(ddp_dir)) for p in ddp_dir.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(single_dir)) for p in single_dir.rglob("*") if p.is_file())
    assert [len((ddp_dir / f"round_{r:02d}/evals.jsonl").read_text().splitlines()) for r in (0, 1)] == [2, 2]

    # every rank held the round's masks (the ones recorded) at the start and the end of training
    agreements = [(r, cb) for r, t in trainers for cb in t.callbacks if isinstance(cb, MaskAgreement)]
    assert [r for r, _ in agreements] == [0, 1]
    for r, cb in agreements:
        recorded = mask_digest(masks_lib.load(ddp_dir / f"round_{r:02d}/mask.pt"))
        for when in ("fit_start", "train_end"):
            assert [d["masks"] for d in cb.digests[when]] == [recorded, recorded], (r, when)
        assert len({d["weights"] for d in cb.digests["train_end"]}) == 1

    # what came back from the workers: steps, history, θk
    assert [a["train_steps"] for a in ddp] == [b["train_steps"] for b in single] == [40, 30]  # θk round: T − k steps
    for a, b in zip(ddp, single):
        assert a["early_stop_step"] == b["early_stop_step"]
        assert a["density"] == b["density"] and a["layer_density"] == b["layer_density"]
        assert a["test_acc"] == pytest.approx(b["test_acc"], abs=0.02)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-3)
    snaps = torch.load(ddp_dir / "snapshots.pt", weights_only=True)["snapshots"]
    ref = torch.load(single_dir / "snapshots.pt", weights_only=True)["snapshots"]
    assert set(snaps) == {"init", "rewind"}
    assert torch.allclose(snaps["rewind"]["hidden.0.weight"], ref["rewind"]["hidden.0.weight"], atol=1e-6)
    # full batches give the single-process gradients exactly: the first evaluation (step 20) matches to rounding
    e_ddp = json.loads((ddp_dir / "round_00/evals.jsonl").read_text().splitlines()[0])
    e_one = json.loads((single_dir / "round_00/evals.jsonl").read_text().splitlines()[0])
    assert e_ddp["val_loss"] == pytest.approx(e_one["val_loss"], rel=1e-5)
    m_ddp, m_one = (masks_lib.load(d / "round_01/mask.pt") for d in (ddp_dir, single_dir))
    agree_frac = sum(int((m_ddp[n] == m_one[n]).sum()) for n in m_one) / sum(m.numel() for m in m_one.values())
    assert agree_frac > 0.99
    w = torch.load(ddp_dir / "round_01/trained.pt", weights_only=True)
    assert torch.all(w["hidden.0.weight"][~m_ddp["hidden.0.weight"]] == 0)


def test_ddp_fork_two_round_lineage_matches_single_process(tmp_path, data_root, monkeypatch):
    _ddp_lineage(tmp_path, data_root, monkeypatch, ["trainer=ddp_cpu", "trainer.strategy=ddp_fork"])


@pytest.mark.slow
def test_ddp_spawn_two_round_lineage_matches_single_process(tmp_path, data_root, monkeypatch):
    _ddp_lineage(tmp_path, data_root, monkeypatch, ["trainer=ddp_cpu"])


def _whole_lineage_rank(rank, port, cfg, out):
    """One rank of a launch that runs the whole program on every rank (Lightning's ddp, torchrun, SLURM tasks)."""
    os.environ.update({"LOCAL_RANK": str(rank), "NODE_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    import lth.io

    writes = []
    original = lth.io.atomic_write_bytes
    lth.io.atomic_write_bytes = lambda path, data: (writes.append(str(path)), original(path, data))[1]
    run(cfg, out, sinks=[])
    with open(f"{out}.rank{rank}.writes", "w") as f:
        f.write("\n".join(writes))


@pytest.mark.slow
def test_ddp_every_rank_runs_the_lineage_and_only_rank0_writes(tmp_path, data_root):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["experiment=smoke", f"data.root={data_root}"]
    cfg = compose_config([*args, "trainer=ddp_cpu", "trainer.strategy=ddp"])
    out = tmp_path / "ddp"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_whole_lineage_rank, args=(r, port, cfg, out)) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert (tmp_path / "ddp.rank1.writes").read_text() == ""  # rank 1 wrote nothing
    assert "rounds.jsonl" in (tmp_path / "ddp.rank0.writes").read_text()
    assert (out / ".lock").read_text() == str(procs[0].pid)
    single = run(compose_config(args), tmp_path / "single", sinks=[])
    ddp = _records(out)
    assert [r["round"] for r in ddp] == [0, 1]
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(tmp_path / "single")) for p in (tmp_path / "single").rglob("*")
                           if p.is_file())
    for a, b in zip(ddp, single):
        assert a["train_steps"] == b["train_steps"] == 40 and a["layer_density"] == b["layer_density"]
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-3)
