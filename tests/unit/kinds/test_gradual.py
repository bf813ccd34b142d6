"""The gradual kind end to end on digits: exact kept counts at each pruning step, the step masks and the record, bad
schedules refused before anything is written, and a run killed between two pruning steps resumes bit for bit."""

import itertools
import json

import pytest
import torch

from lth import masks as masks_lib
from lth.cli import compose_config
from lth.config import Config
from lth.kinds import kind_for
from lth.runner import run
from tests.faults import crash

# smoke: digits, MLP 64-32-10 (hidden 2048 weights, output 320), 40 steps; pruning steps 15, 20, 25, 30 at
# s_t = 0.1 + 0.9 (1 − (t − 10)/20)³ = 0.4796875, 0.2125, 0.1140625, 0.1
ARGS = ["experiment=smoke", "ticket.rounds=0", "trainer.max_steps=40", "trainer.eval_every=10",
        "gradual.final_density=0.1", "gradual.start_step=10", "gradual.every=5", "gradual.prunings=4"]
STEPS = [15, 20, 25, 30]
# hidden: 2048 × s_t = 982.4, 435.2, 233.6, 204.8 → 982, 435, 234, 205
# output:  320 × s_t = 153.5, 68, 36.5, 32 → 154, 68, 36, 32 (ties to even)
KEPT = [{"hidden.0.weight": 982, "output.weight": 154}, {"hidden.0.weight": 435, "output.weight": 68},
        {"hidden.0.weight": 234, "output.weight": 36}, {"hidden.0.weight": 205, "output.weight": 32}]


def config(data_root, *extra):
    return compose_config([*ARGS, f"data.root={data_root}", *extra])


def records(path):
    return [json.loads(line) for line in (path / "rounds.jsonl").read_text().splitlines()]


def counts(masks):
    return {n: int(m.sum()) for n, m in masks.items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_root):
    """One uninterrupted gradual run."""
    out = tmp_path_factory.mktemp("gradual") / "run"
    torch.set_num_threads(1)
    run(config(data_root), out, sinks=[])
    return out


def test_the_preset_keys_make_a_gradual_run(data_root):
    assert kind_for(config(data_root)).name == "gradual"
    assert kind_for(Config()).name == "lineage"  # gradual.final_density unset
    presets = {p: compose_config([f"experiment={p}"]) for p in ("gmp_mlp_mnist1d", "gmp_cnn1d_mnist1d", "gmp_digits")}
    for preset, cfg in presets.items():
        assert kind_for(cfg).name == "gradual" and cfg.name == preset
        g = cfg.gradual
        assert g.start_step + g.prunings * g.every <= 0.6 * cfg.trainer.max_steps  # ends well before training does
    cnn = presets["gmp_cnn1d_mnist1d"]
    assert (cnn.optimizer["_target_"], cnn.optimizer["momentum"]) == ("torch.optim.SGD", 0.9)


def test_a_gradual_run_keeps_the_hand_computed_counts_at_each_step(reference):
    (rec,) = records(reference)
    assert rec["round"] == 0 and rec["kind"] == "gradual" and rec["fraction"] is None and rec["reset"] == "none"
    assert rec["target_density"] == 0.1 and rec["train_steps"] == 40
    schedule = rec["gradual_schedule"]
    assert [e["step"] for e in schedule] == STEPS
    assert [e["target"] for e in schedule] == [0.4796875, 0.2125, 0.1140625, 0.1]
    assert [e["kept"] for e in schedule] == [sum(k.values()) for k in KEPT] == [1136, 503, 270, 237]
    assert [e["density"] for e in schedule] == [sum(k.values()) / 2368 for k in KEPT]
    assert [{n: round(d * {"hidden.0.weight": 2048, "output.weight": 320}[n]) for n, d in e["layer_density"].items()}
            for e in schedule] == KEPT
    assert rec["density"] == 237 / 2368 and rec["layer_density"] == {"hidden.0.weight": 205 / 2048,
                                                                     "output.weight": 32 / 320}
    assert rec["test_acc"] is not None and rec["early_stop_step"] in (40,)  # evaluations after step 30: 40 only


def test_each_step_mask_is_saved_and_masks_only_shrink(reference):
    folder = reference / "round_00"
    step_masks = [masks_lib.load(folder / "masks" / f"step_{t:06d}.pt") for t in STEPS]
    assert sorted(p.name for p in (folder / "masks").iterdir()) == [f"step_{t:06d}.pt" for t in STEPS]
    assert [counts(m) for m in step_masks] == KEPT
    for before, after in itertools.pairwise(step_masks):
        assert all(not bool((after[n] & ~before[n]).any()) for n in after)
    final = masks_lib.load(folder / "mask.pt")
    assert all(torch.equal(final[n], step_masks[-1][n]) for n in final)
    trained = torch.load(folder / "trained.pt", weights_only=True)
    assert all(torch.all(trained[n][~final[n]] == 0) for n in final)  # pruned weights end at exactly 0
    assert (reference / "snapshots.pt").exists()


def test_a_rerun_of_a_finished_gradual_run_does_nothing(reference, data_root):
    before = (reference / "rounds.jsonl").read_text()
    assert run(config(data_root), reference, sinks=[])[0]["density"] == 237 / 2368
    assert (reference / "rounds.jsonl").read_text() == before


def test_global_scope_prunes_the_pool_to_the_schedule(tmp_path, data_root):
    rec = run(config(data_root, "pruning.scope=global", "trainer.max_steps=32", "trainer.eval_every=16"),
              tmp_path / "g", sinks=[])[0]
    # 2368 × s_t = 1135.9, 503.2, 270.1, 236.8 → 1136, 503, 270, 237
    assert [e["kept"] for e in rec["gradual_schedule"]] == [1136, 503, 270, 237]
    assert rec["density"] == 237 / 2368


@pytest.mark.parametrize(
    "extra,message",
    [
        (["gradual.final_density=0.5", "gradual.initial_density=0.4"],
         "gradual.final_density=0.5 must be below gradual.initial_density=0.4"),
        (["gradual.prunings=0"], r"gradual.prunings \(n, the number of pruning steps\) must be >= 1, got 0"),
        (["gradual.every=0"], r"gradual.every \(Δt, steps between pruning steps\) must be >= 1"),
        (["gradual.start_step=30"], "gradual schedule ends at step 50 = .* trainer.max_steps=40"),
        (["gradual.final_density=1.5"], r"gradual.final_density must be in \(0, 1\), got 1.5"),
        (["gradual.final_density=0.0001"], "keeps no weight of layer 'hidden.0.weight'"),
        (["pruning.target_density=0.1", "ticket.rounds=1"], "pruning.target_density sets the per-round fraction"),
        (["pruning.output_fraction=0.1"], "pruning.overrides / pruning.output_fraction are per-round fractions"),
        (["pruning.granularity=neuron"], "a gradual run prunes single weights"),
        (["ticket.rewind_step=5"], "ticket.rewind_step / rewind_epoch have no meaning in a gradual run"),
        (["supermask=edge_popup"], "several experiment kinds at once: .*gradual"),
    ],
)
def test_bad_gradual_configs_are_refused_before_anything_is_written(tmp_path, data_root, extra, message):
    with pytest.raises(ValueError, match=message):
        run(config(data_root, *extra), tmp_path / "run", sinks=[])
    assert not (tmp_path / "run").exists()




@pytest.mark.parametrize(
    "every,fault,resumed_at",
    [
        ("8", "step:0:27", 24),  # killed after pruning steps 15, 20; resumed between 20 and 25
        pytest.param("5", "step:0:22", 20, marks=pytest.mark.slow),  # resumed at step 20, which is pruned after it
    ],
)
def test_a_run_killed_between_pruning_steps_resumes_bit_for_bit(tmp_path, data_root, reference, every, fault,
                                                                 resumed_at):
    out = tmp_path / "run"
    cfg = config(data_root, f"trainer.checkpoint_every={every}", "trainer.checkpoint_min_interval_s=0")
    crash(cfg, out, fault)
    ckpt = out / "round_00" / "checkpoints" / "last.ckpt"
    assert not (out / "rounds.jsonl").exists() and torch.load(ckpt, weights_only=True)["global_step"] == resumed_at
    run(cfg, out, sinks=[])
    a, b = records(out), records(reference)
    assert [{k: v for k, v in r.items() if k != "wall_seconds"} for r in a] == \
        [{k: v for k, v in r.items() if k != "wall_seconds"} for r in b]
    for name in ["mask.pt", *(f"masks/step_{t:06d}.pt" for t in STEPS)]:
        ma, mb = masks_lib.load(out / "round_00" / name), masks_lib.load(reference / "round_00" / name)
        assert all(torch.equal(ma[n], mb[n]) for n in mb), name
    ta = torch.load(out / "round_00/trained.pt", weights_only=True)
    tb = torch.load(reference / "round_00/trained.pt", weights_only=True)
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in tb)
    assert (out / "round_00/evals.jsonl").read_text() == (reference / "round_00/evals.jsonl").read_text()
    assert not ckpt.exists() and not list(out.rglob(".*.tmp"))


@pytest.mark.slow
def test_a_branch_of_a_gradual_run_trains_its_final_mask_from_init(tmp_path, data_root, reference):
    rec = run(compose_config(["experiment=smoke", f"data.root={data_root}", "trainer.max_steps=20",
                              f"branch.from={reference}", "branch.round=0", "ticket.reset=rewind"]),
              tmp_path / "b", sinks=[])[0]
    assert rec["density"] == 237 / 2368 and rec["branch_round"] == 0
