"""The round loop end to end: files, exact densities, idempotent reruns, resume, determinism, branches."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from lth import masks as masks_lib
from lth.cli import compose_config
from lth.runner import run


def rounds(path):
    return [json.loads(line) for line in (path / "rounds.jsonl").read_text().splitlines()]


def strip_time(records):
    return [{k: v for k, v in r.items() if k != "wall_seconds"} for r in records]


def test_smoke_end_to_end_files_and_exact_densities(tmp_path, data_root, smoke_config):
    out = tmp_path / "run"
    records = run(smoke_config("ticket.rounds=2"), out, sinks=[])
    assert (out / "config.yaml").exists()
    assert [r["round"] for r in records] == [0, 1, 2] == [r["round"] for r in rounds(out)]
    # smoke: mlp 64-32-10 on digits, fraction 0.5 per round, layerwise, half to even
    assert [r["layer_density"] for r in records] == [
        {"hidden.0.weight": 1.0, "output.weight": 1.0},
        {"hidden.0.weight": 0.5, "output.weight": 0.5},
        {"hidden.0.weight": 0.25, "output.weight": 0.25},
    ]
    assert [r["density"] for r in records] == [1.0, 0.5, 0.25]
    prev = None
    for r in range(3):
        m = masks_lib.load(out / f"round_{r:02d}" / "mask.pt")
        assert sum(int(v.sum()) for v in m.values()) == (64 * 32 + 32 * 10) // 2**r
        if prev is not None:  # masks only shrink
            assert all(not torch.any(m[n] & ~prev[n]) for n in m)
        prev = m
    # pruned weights of the trained round are exactly zero
    trained = torch.load(out / "round_02" / "trained.pt", weights_only=True)
    assert torch.all(trained["hidden.0.weight"][~prev["hidden.0.weight"]] == 0)
    for r in records:
        assert 0.0 <= r["test_acc"] <= 1.0 and r["train_steps"] == 40 and r["early_stop_step"] in (20, 40)
        assert r["status"] == "ok"
    assert records[1]["reset"] == "rewind" and records[0]["reset"] == "none"


def test_rerun_is_idempotent_and_extending_rounds_resumes(tmp_path, data_root, smoke_config):
    out = tmp_path / "run"
    run(smoke_config("ticket.rounds=1"), out, sinks=[])
    before = (out / "rounds.jsonl").read_text()
    mtime = os.stat(out / "round_01" / "trained.pt").st_mtime_ns
    run(smoke_config("ticket.rounds=1"), out, sinks=[])
    assert (out / "rounds.jsonl").read_text() == before
    assert os.stat(out / "round_01" / "trained.pt").st_mtime_ns == mtime  # nothing retrained
    # a longer lineage continues from the finished rounds, and equals an uninterrupted 2-round run
    run(smoke_config("ticket.rounds=2"), out, sinks=[])
    full = tmp_path / "full"
    run(smoke_config("ticket.rounds=2"), full, sinks=[])
    assert strip_time(rounds(out)) == strip_time(rounds(full))
    for r in range(3):
        a, b = masks_lib.load(out / f"round_{r:02d}/mask.pt"), masks_lib.load(full / f"round_{r:02d}/mask.pt")
        assert all(torch.equal(a[n], b[n]) for n in a)


def test_same_seed_same_masks_and_metrics_different_seed_differs(tmp_path, data_root, smoke_config):
    a = run(smoke_config("seed=3"), tmp_path / "a", sinks=[])
    b = run(smoke_config("seed=3"), tmp_path / "b", sinks=[])
    run(smoke_config("seed=4"), tmp_path / "c", sinks=[])
    assert strip_time(a) == strip_time(b)
    ma, mb, mc = (masks_lib.load(tmp_path / x / "round_01/mask.pt") for x in "abc")
    assert all(torch.equal(ma[n], mb[n]) for n in ma)
    assert not all(torch.equal(ma[n], mc[n]) for n in ma)


def test_a_different_config_into_the_same_folder_is_refused(tmp_path, data_root, smoke_config):
    out = tmp_path / "run"
    run(smoke_config(), out, sinks=[])
    with pytest.raises(ValueError, match=r"(?s)different config.*pruning.criterion: existing='large_final' new='random'"):
        run(smoke_config("pruning.criterion=random"), out, sinks=[])


@pytest.mark.parametrize(
    "override,message",
    [
        ("pruning.criterion=largest", "unknown criterion 'largest'; valid choices: grasp, large_final"),
        ("ticket.reset=rewinds", "unknown reset 'rewinds'; valid choices: continue"),
        ("model.name=lenet5", "unknown model 'lenet5'"),
        ("data.name=imagenet", "unknown dataset 'imagenet'"),
        ("pruning.fraction=1.0", r"pruning.fraction must be in \(0, 1\)"),
        ("ticket.rewind_step=40", "rewind_step=40 must be smaller than"),
        ("+pruning.overrides.fc9=0.1", r"override keys \['fc9'\] match no layer; layers: hidden.0.weight, output.weight"),
    ],
)
def test_bad_input_is_rejected_before_training(tmp_path, data_root, override, message, smoke_config):
    with pytest.raises(ValueError, match=message):
        run(smoke_config(override), tmp_path / "run", sinks=[])
    assert not (tmp_path / "run" / "round_00").exists()


def test_output_fraction_prunes_the_output_layer_at_its_own_rate(tmp_path, data_root, smoke_config):
    records = run(smoke_config("pruning.fraction=0.2", "pruning.output_fraction=0.1"), tmp_path / "r", sinks=[])
    # hidden 64x32: 2048 -> remove round(409.6)=410; output 32x10: 320 -> remove 32
    assert records[1]["layer_density"] == {"hidden.0.weight": (2048 - 410) / 2048, "output.weight": 288 / 320}


def _lth_run(args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "lth", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow  # the fork-based kill tests in test_reliability.py cover this in the fast suite
def test_resume_after_kill_mid_round_equals_uninterrupted(tmp_path, data_root):
    args = ["experiment=smoke", f"data.root={data_root}", "trainer.max_steps=300", "trainer.eval_every=100",
            "trainer.checkpoint_every=25", "trainer.checkpoint_min_interval_s=0"]
    killed = tmp_path / "killed"
    p = _lth_run([*args, f"out_dir={killed}"], tmp_path)
    ckpt = killed / "round_01" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not ckpt.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert ckpt.exists(), p.stderr.read() if p.poll() is not None else "no checkpoint in time"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert [r["round"] for r in rounds(killed)] == [0]  # killed inside round 1
    p = _lth_run([*args, f"out_dir={killed}"], tmp_path)
    assert p.wait() == 0, p.stderr.read()
    full = tmp_path / "full"
    p = _lth_run([*args, f"out_dir={full}"], tmp_path)
    assert p.wait() == 0, p.stderr.read()
    assert strip_time(rounds(killed)) == strip_time(rounds(full))
    a = torch.load(killed / "round_01/trained.pt", weights_only=True)
    b = torch.load(full / "round_01/trained.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_one_shot_pruning_to_a_target_density(tmp_path, data_root, smoke_config):
    records = run(smoke_config("pruning.target_density=0.1", "ticket.rounds=1"), tmp_path / "r", sinks=[])
    # one round removes 90%: hidden 2048 -> 205 kept (round(1843.2)=1843 removed), output 320 -> 32
    assert records[1]["layer_density"] == {"hidden.0.weight": 205 / 2048, "output.weight": 32 / 320}
    assert records[1]["fraction"] == pytest.approx(0.9)


def test_config_typos_and_wrong_types_are_rejected_by_the_schema():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="ticket.round"):
        compose_config(["ticket.round=5"])
    with pytest.raises(ConfigCompositionException, match="pruning.fraction"):
        compose_config(["pruning.fraction=lots"])
    with pytest.raises(ConfigCompositionException, match="scope"):
        compose_config(["pruning.scope=sideways"])


@pytest.mark.parametrize("experiment", ["smoke", "lth_mnist1d", "lth_lenet_mnist", "lth_mnist1d_notebook"])
def test_presets_compose(experiment):
    cfg = compose_config([f"experiment={experiment}"])
    assert cfg.name == experiment
    if experiment == "lth_mnist1d_notebook":  # the MNIST-1D notebook: biases pruned, output at the hidden rate, ...
        assert (cfg.pruning.biases, cfg.pruning.output_fraction, cfg.pruning.fraction) == (True, None, 0.2)
        assert (cfg.model.args["init"], cfg.data.val_size, cfg.optimizer["lr"], cfg.trainer.max_steps) == (
            "kaiming_uniform", 0, 2e-2, 1500)
    if experiment == "lth_lenet_mnist":  # Frankle & Carbin's LeNet-300-100 hyperparameters
        assert (cfg.optimizer["lr"], cfg.data.batch_size, cfg.trainer.max_steps) == (1.2e-3, 60, 50_000)
        assert (cfg.pruning.fraction, cfg.pruning.output_fraction, cfg.data.val_size) == (0.2, 0.1, 5000)


def test_a_run_written_before_an_option_existed_still_resumes(tmp_path, data_root, smoke_config):
    import yaml

    out = tmp_path / "run"
    run(smoke_config(), out, sinks=[])
    old = yaml.safe_load((out / "config.yaml").read_text())
    del old["pruning"]["target_density"]  # as if written by a version without that option
    (out / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    assert [r["round"] for r in run(smoke_config(), out, sinks=[])] == [0, 1]
    with pytest.raises(ValueError, match="pruning.target_density: existing=None new=0.1"):
        run(smoke_config("pruning.target_density=0.1"), out, sinks=[])


def test_trainer_threads_holds_for_the_run_and_is_restored(tmp_path, data_root, monkeypatch):
    seen = []
    real = torch.optim.Adam

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", spy)
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    run(compose_config(["experiment=smoke", f"data.root={data_root}", f"trainer.threads={target}"]), tmp_path / "r")
    assert seen and set(seen) == {target}  # every round's optimizer was built under the job's thread count
    assert torch.get_num_threads() == before



# ----- the round's lr schedule: late rewinding resumes it at k; lr_rewind replays it; finetune holds its last lr
STEP_DECAY = "scheduler={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true,step_size:7,gamma:0.5}"


def lr_log():
    """A callback that keeps, per training round, the lr of every optimizer step and the weights when training starts."""
    import pytorch_lightning as pl

    class LrLog(pl.Callback):
        def __init__(self):
            self.lrs, self.start = [], []

        def on_train_start(self, trainer, pl_module):
            self.lrs.append([])
            self.start.append({k: v.detach().clone() for k, v in pl_module.model.state_dict().items()})

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.lrs[-1].append(trainer.optimizers[0].param_groups[0]["lr"])

    return LrLog()


def hand_step_decay(start, steps, lr):
    """StepLR(step_size=7, gamma=0.5) by hand: the lr of global steps start, ..., start + steps − 1."""
    return [lr * 0.5 ** (s // 7) for s in range(start, start + steps)]


def test_late_rewinding_resumes_the_schedule_at_k_for_t_minus_k_steps(tmp_path, smoke_config):
    cfg = smoke_config("ticket.rewind_step=10", STEP_DECAY)
    log = lr_log()
    records = run(cfg, tmp_path / "run", sinks=[], callbacks=[log])
    lr = cfg.optimizer["lr"]
    assert [len(x) for x in log.lrs] == [40, 30]
    assert log.lrs[0] == pytest.approx(hand_step_decay(0, 40, lr), abs=1e-15)
    assert log.lrs[1] == log.lrs[0][10:]  # the lr of every step equals round 0's at the same global step
    assert [r.train_steps for r in records] == [40, 30]
    assert "schedule_start" not in records[0].extra and records[1].extra["schedule_start"] == 10
    # θk is the weights after exactly k steps of round 0: a 10-step round 0 ends bit-identical to it
    theta_k = torch.load(tmp_path / "run" / "snapshots.pt", weights_only=True)["snapshots"]["rewind"]
    run(smoke_config("trainer.max_steps=10", "ticket.rounds=0", STEP_DECAY), tmp_path / "ten", sinks=[])
    ten = torch.load(tmp_path / "ten" / "round_00" / "trained.pt", weights_only=True)
    assert theta_k.keys() == ten.keys() and all(torch.equal(theta_k[k], ten[k]) for k in ten)
    # round 1 starts from θk under the new mask
    masks = masks_lib.load(tmp_path / "run" / "round_01" / "mask.pt")
    for k, v in log.start[1].items():
        assert torch.equal(v, theta_k[k] * masks[k] if k in masks else theta_k[k]), k


def test_rewind_schedule_restart_keeps_the_old_schedule_and_length(tmp_path, smoke_config):
    log = lr_log()
    records = run(smoke_config("ticket.rewind_step=10", "ticket.rewind_schedule=restart", STEP_DECAY), tmp_path / "run",
                  sinks=[], callbacks=[log])
    assert log.lrs[1] == log.lrs[0] and len(log.lrs[1]) == 40
    assert [r.train_steps for r in records] == [40, 40] and "schedule_start" not in records[1].extra


@pytest.mark.slow
def test_a_resumed_late_rewinding_round_equals_an_uninterrupted_one(tmp_path, smoke_config):
    from tests.faults import crash

    cfg = smoke_config("ticket.rewind_step=10", STEP_DECAY, "trainer.checkpoint_every=10", "trainer.checkpoint_min_interval_s=0")
    run(cfg, tmp_path / "whole", sinks=[])
    crash(cfg, tmp_path / "cut", "step:1:25")  # round 1 (30 steps) killed after its step-20 checkpoint
    run(cfg, tmp_path / "cut", sinks=[])
    assert strip_time(rounds(tmp_path / "cut")) == strip_time(rounds(tmp_path / "whole"))
    for name in ("trained.pt", "evals.jsonl"):
        a, b = tmp_path / "whole" / "round_01" / name, tmp_path / "cut" / "round_01" / name
        if name.endswith(".pt"):
            a, b = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
            assert all(torch.equal(a[k], b[k]) for k in a)
        else:
            assert a.read_text() == b.read_text()


def test_lr_rewind_and_finetune_keep_the_trained_weights(tmp_path, smoke_config):
    lr = smoke_config().optimizer["lr"]
    for reset, k, steps, expected in (("lr_rewind", 10, 30, hand_step_decay(10, 30, lr)),
                                      ("lr_rewind", 0, 40, hand_step_decay(0, 40, lr)),
                                      ("finetune", 0, 40, [lr * 0.5 ** (39 // 7)] * 40)):
        log, out = lr_log(), tmp_path / f"{reset}_{k}"
        records = run(smoke_config(f"ticket.reset={reset}", f"ticket.rewind_step={k}", STEP_DECAY), out, sinks=[],
                      callbacks=[log])
        assert log.lrs[1] == pytest.approx(expected, abs=1e-15), reset
        assert records[1].reset == reset and records[1].train_steps == steps
        trained = torch.load(out / "round_00" / "trained.pt", weights_only=True)
        masks = masks_lib.load(out / "round_01" / "mask.pt")
        for name, v in log.start[1].items():  # round 1 starts from round 0's trained weights under the new mask
            assert torch.equal(v, trained[name] * masks[name] if name in masks else trained[name]), (reset, name)
