"""Supermask experiments end to end: heuristic masks on θ0, edge-popup and Bernoulli runs, branches from them."""

import os

import pytest
import torch
from omegaconf import OmegaConf

from lth import masks as masks_lib
from lth.cli import compose_config
from lth.runner import run
from lth.supermask.topk import kept_count


def cfg(data_root, *overrides):
    return compose_config([f"data.root={data_root}", *overrides])


@pytest.fixture(scope="module")
def source(tmp_path_factory, data_root):
    """A dense MLP 64-32-10 trained 300 steps on digits (round 0 only)."""
    out = tmp_path_factory.mktemp("source") / "run"
    run(cfg(data_root, "experiment=smoke", "ticket.rounds=0", "trainer.max_steps=300", "trainer.eval_every=100"),
        out, sinks=[])
    return out


def heuristic(data_root, source, *overrides):
    return cfg(data_root, "experiment=smoke", "supermask=heuristic", f"supermask.from={source}", *overrides)


def test_heuristic_supermask_at_init_is_far_above_chance(tmp_path, data_root, source):
    out = tmp_path / "h"
    records = run(heuristic(data_root, source, "supermask.density=[0.3,0.5]"), out, sinks=[])
    assert [r["round"] for r in records] == [0, 1]
    # measured: 82% and 87% test accuracy (10 classes: chance is 10%); the trained source scores 95%
    assert all(r["test_acc"] > 0.6 for r in records), [r["test_acc"] for r in records]
    assert all(r["trained"] is False and r["train_steps"] == 0 and r["supermask"] == "heuristic" for r in records)
    assert records[0]["criterion"] == "large_final_same_sign" and records[0]["source_round"] == 0
    # exact per-layer counts: 64x32 and 32x10 at 0.3 -> 614 (614.4) and 96; at 0.5 -> 1024 and 160
    assert records[0]["layer_density"] == {"hidden.0.weight": 614 / 2048, "output.weight": 96 / 320}
    assert records[1]["density"] == 0.5
    # the evaluated weights are σ_l·sign(θ0) under the mask, θ0 being the source's
    theta0 = torch.load(source / "snapshots.pt", weights_only=True)["snapshots"]["init"]["hidden.0.weight"]
    mask = masks_lib.load(out / "round_01/mask.pt")["hidden.0.weight"]
    w = torch.load(out / "round_01/trained.pt", weights_only=True)["hidden.0.weight"]
    sigma = theta0.std(correction=0)
    assert torch.equal(w, torch.where(mask, sigma * torch.where(theta0 >= 0, 1.0, -1.0), torch.zeros(())))


def test_heuristic_random_criterion_is_near_chance_and_reruns_are_idempotent(tmp_path, data_root, source):
    out = tmp_path / "h"
    conf = heuristic(data_root, source, "supermask.density=0.3", "supermask.criterion=random")
    (rec,) = run(conf, out, sinks=[])
    assert rec["test_acc"] < 0.3  # measured 10%: a random mask of random weights does not classify
    mtime = os.stat(out / "round_00/trained.pt").st_mtime_ns
    assert run(conf, out, sinks=[]) == [rec]
    assert os.stat(out / "round_00/trained.pt").st_mtime_ns == mtime


def learned(data_root, *overrides):
    return cfg(data_root, "experiment=supermask_digits", "model.args.hidden=[32]", "trainer.max_steps=60",
               "trainer.eval_every=30", *overrides)


@pytest.fixture(scope="module")
def learned_base(data_root):
    return learned(data_root)


def test_edge_popup_run_trains_only_scores_and_exports_an_exact_mask(tmp_path, data_root):
    out = tmp_path / "ep"
    (rec,) = run(learned(data_root, "supermask.k=0.3"), out, sinks=[])
    assert rec["supermask"] == "edge_popup" and rec["k"] == 0.3 and rec["train_steps"] == 60 and not rec["trained"]
    assert rec["layer_density"] == {"hidden.0.weight": 614 / 2048, "output.weight": 96 / 320}
    mask = masks_lib.load(out / "round_00/mask.pt")
    assert {n: int(m.sum()) for n, m in mask.items()} == {"hidden.0.weight": 614, "output.weight": 96}
    trained = torch.load(out / "round_00/trained.pt", weights_only=True)
    init = torch.load(out / "snapshots.pt", weights_only=True)["snapshots"]["init"]
    assert sorted(init) == ["hidden.0.bias", "hidden.0.weight", "output.bias", "output.weight"]
    assert all(torch.equal(trained[k], init[k]) for k in init)  # weights and biases bit-identical to init
    # the exported mask is the top 30% of |scores| the run ended with
    for n in mask:
        scores = trained[n.replace("weight", "scores")].abs()
        assert torch.equal(mask[n], scores >= scores.flatten().kthvalue(scores.numel() - int(mask[n].sum()) + 1).values)
    assert rec["test_acc"] > 0.5  # measured 75%: 60 steps of score training on a random MLP


def test_bernoulli_run_is_deterministic_and_exports_the_expected_mask(tmp_path, data_root):
    conf = learned(data_root, "supermask=bernoulli", "supermask.weights=signed_constant")
    assert conf.optimizer["lr"] == 100.0 and conf.optimizer["momentum"] == 0.9 and conf.scheduler is None
    (a,) = run(conf, tmp_path / "a", sinks=[])
    (b,) = run(conf, tmp_path / "b", sinks=[])
    assert {k: v for k, v in a.items() if k != "wall_seconds"} == {k: v for k, v in b.items() if k != "wall_seconds"}
    trained = torch.load(tmp_path / "a/round_00/trained.pt", weights_only=True)
    mask = masks_lib.load(tmp_path / "a/round_00/mask.pt")
    assert all(torch.equal(mask[n], torch.sigmoid(trained[n.replace("weight", "scores")]) > 0.5) for n in mask)
    init = torch.load(tmp_path / "a/snapshots.pt", weights_only=True)["snapshots"]["init"]["output.weight"]
    assert len(init.abs().unique()) == 1  # signed constant weights: one magnitude per layer
    assert torch.equal(trained["output.weight"], init)
    assert a["rescale"] is False and a["eval_mask"] == "expected" and 0.4 < a["density"] < 0.6  # measured 0.517
    assert a["test_acc"] > 0.7  # measured 87.5% after 60 steps


def test_a_branch_trains_a_learned_supermask_as_a_ticket(tmp_path, data_root):
    src = tmp_path / "ep"
    run(learned(data_root, "supermask.k=0.5"), src, sinks=[])
    out = tmp_path / "branch"
    (rec,) = run(cfg(data_root, "experiment=supermask_digits", "supermask=none", "model.args.hidden=[32]",
                     "trainer.max_steps=30", "trainer.eval_every=30", f"branch.from={src}", "branch.round=0"),
                 out, sinks=[])
    assert rec["round"] == 0 and rec["branch_from"] == str(src) and rec["density"] == 0.5
    a, b = masks_lib.load(src / "round_00/mask.pt"), masks_lib.load(out / "round_00/mask.pt")
    assert all(torch.equal(a[n], b[n]) for n in a)
    trained = torch.load(out / "round_00/trained.pt", weights_only=True)
    assert torch.all(trained["hidden.0.weight"][~a["hidden.0.weight"]] == 0)  # pruned weights stay 0 in training


def test_a_branch_from_a_heuristic_supermask_round(tmp_path, data_root, source):
    src = tmp_path / "h"
    run(heuristic(data_root, source, "supermask.density=[0.5,0.2]"), src, sinks=[])
    (rec,) = run(cfg(data_root, "experiment=smoke", "trainer.max_steps=20", "trainer.eval_every=20",
                     f"branch.from={src}", "branch.round=1"), tmp_path / "branch", sinks=[])
    assert rec["density"] == (kept_count(0.2, 2048) + kept_count(0.2, 320)) / 2368


def test_the_issue_command_composes():
    conf = compose_config(["experiment=supermask_mnist1d", "supermask.method=edge_popup", "supermask.k=0.5"])
    assert (conf.supermask.method, conf.supermask.k, conf.data.name, conf.model.args["hidden"]) == (
        "edge_popup", 0.5, "mnist1d", [500, 500])
    assert conf.optimizer == {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1, "momentum": 0.9,
                              "weight_decay": 1e-4}
    assert conf.scheduler["_target_"] == "torch.optim.lr_scheduler.CosineAnnealingLR"
    assert conf.scheduler["T_max"] == conf.trainer.max_steps == 3000
    assert compose_config([]).supermask.method is None  # the default is an ordinary lineage


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["supermask.method=popup"], "supermask.method: unknown supermask method 'popup'; valid choices: bernoulli, "),
        (["supermask.k=0"], r"supermask.k \(the fraction of weights kept\) must be in \(0, 1\], got 0"),
        (["supermask.weights=ones"], "supermask.weights: unknown supermask weights 'ones'; valid choices: init,"),
        (["supermask.eval_mask=mean"], "supermask.eval_mask: unknown 'mean'; valid choices: expected, sampled"),
        (["supermask.method=bernoulli", "supermask.scale_fan=true"], "scale_fan .* applies to supermask.method=edge_popup"),
        (["supermask.from=/nowhere"], "supermask.from is read by supermask.method=heuristic only"),
        (["supermask.method=heuristic"], "supermask.method=heuristic needs supermask.from=<a finished run's folder>"),
        (["supermask.method=heuristic", "supermask.from=/nowhere"], r"supermask.from=/nowhere is not a run folder"),
        (["supermask.method=heuristic", "supermask.from=SRC", "supermask.round=3"], r"no finished round 3; finished: \[0\]"),
        (["supermask.method=heuristic", "supermask.from=SRC", "supermask.density=[0.5,1.5]"], r"values must be in \(0, 1\]"),
        (["supermask.method=heuristic", "supermask.from=SRC", "supermask.criterion=biggest"], "unknown criterion 'biggest'"),
        (["branch.from=SRC", "branch.round=0"], "run the branch without a supermask"),
    ],
)
def test_bad_supermask_configs_are_rejected_before_anything_is_written(tmp_path, learned_base, source, overrides,
                                                                      message):
    overrides = [o.replace("SRC", str(source)) for o in overrides]
    conf = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(learned_base), OmegaConf.from_dotlist(overrides)))
    with pytest.raises(ValueError, match=message):
        run(conf, tmp_path / "run", sinks=[])
    assert not (tmp_path / "run").exists()


def test_supermask_configs_select_their_kinds(data_root, source):
    from lth.kinds import kind_for

    assert kind_for(learned(data_root)).name == "learned_supermask"
    assert kind_for(heuristic(data_root, source)).name == "heuristic_supermask"
    assert kind_for(cfg(data_root, "experiment=smoke")).name == "lineage"
    assert kind_for(cfg(data_root, "experiment=smoke", f"branch.from={source}", "branch.round=0")).name == "branch"
