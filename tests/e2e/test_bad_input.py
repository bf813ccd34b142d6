"""Bad input is one clear error before training; a folder is never overwritten silently; logging never loses data."""

import json
import warnings

import pytest
import torch

from lth import masks as masks_lib
from lth.cli import compose_config
from lth.record import RunFolder
from lth.runner import run


def records(path):
    return [json.loads(line) for line in (path / "rounds.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_root, smoke_config):
    """A finished 2-round smoke lineage (mlp 64-32-10 on digits)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    torch.set_num_threads(1)
    run(smoke_config(), out, sinks=[])
    return out


# ----- bad input: one clear error, nothing written


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["pruning.fraction=0"], r"pruning.fraction must be in \(0, 1\), got 0"),
        (["pruning.fraction=-0.2"], r"pruning.fraction must be in \(0, 1\), got -0.2"),
        (["pruning.target_density=1.5"], r"pruning.target_density must be in \(0, 1\), got 1.5"),
        # fraction 0.9999: the hidden layer's 2048 weights lose round(2047.8) = 2048 in round 1
        (["pruning.target_density=0.0001"],
         r"density unreachable: pruning 0.9999 .* leave layer 'hidden.0.weight' \(2048 weights\) with none by round 1"),
        # 0.9 per round: output 320 -> 32 -> 3 (29 removed) -> 0 (round(2.7) = 3 removed); hidden lasts to round 4
        (["pruning.fraction=0.9", "ticket.rounds=4"],
         r"density unreachable: .* layer 'output.weight' \(320 weights\) with none by round 3 of 4"),
        # global pool 2048 + 320 = 2368 -> 24 (2344 removed) -> 0 (round(23.76) = 24 removed)
        (["pruning.scope=global", "pruning.fraction=0.99", "ticket.rounds=3"],
         r"density unreachable: .* the global pool \(2368 weights\) with none by round 2 of 3"),
        (["ticket.rewind_epoch=1"],  # digits: 1257 training examples / 32 = 40 steps per epoch = max_steps
         r"ticket.rewind_epoch=1 is step 40, not before the round's end trainer.max_steps=40"),
        (["ticket.rewind_step=50"], "ticket.rewind_step=50 must be smaller than the round's length trainer.max_steps=40"),
        (["pruning.include=[conv.*]"], r"the model has no prunable parameters .*include=\['conv.\*'\]"),
        (["pruning.exclude=[.*]"], "the model has no prunable parameters"),
        (["+pruning.overrides.conv1=0.1"], r"override keys \['conv1'\] match no layer; layers: hidden.0.weight, "),
        # neuron granularity counts units: smoke's 32 hidden units lose round(28.8) = 29, then all 3 (round(2.7))
        (["pruning.granularity=neuron", "pruning.fraction=0.9", "ticket.rounds=2"],
         (r"pruning 0.9 of the remaining units per round would leave layer 'hidden.0.weight' \(32 units\) with none by "
         r"round 2 of 2; every pruned layer must keep at least 1 unit")),
        (["trainer.threads=0"], r"trainer.threads must be a positive number of threads or null .*, got 0"),
        (["trainer=ddp_cpu", "data.batch_size=33"],
         r"data.batch_size=33 must be divisible by the 2 processes \(trainer.devices=2 x trainer.num_nodes=1\)"),
    ],
)
def test_bad_input_is_one_clear_error_before_training(tmp_path, data_root, overrides, message, smoke_config):
    with pytest.raises(ValueError, match=message):
        run(smoke_config(*overrides), tmp_path / "run", sinks=[])
    assert not (tmp_path / "run").exists()  # not even config.yaml


@pytest.mark.parametrize(
    "key,registry",
    [("ticket.reset", "lth.reset:RESETS"), ("pruning.criterion", "lth.pruning:ALL_CRITERIA"),
     ("model.name", "lth.models:MODELS"), ("data.name", "lth.data:DATASETS")],
)
def test_unknown_names_list_every_valid_choice(tmp_path, data_root, key, registry, smoke_config):
    import importlib

    module, attr = registry.split(":")
    names = sorted(getattr(importlib.import_module(module), attr))
    assert len(names) >= 4
    message = f"{key}: unknown {{}} 'nonsense'; valid choices: {', '.join(names)}"
    with pytest.raises(ValueError) as e:
        run(smoke_config(f"{key}=nonsense"), tmp_path / "run", sinks=[])
    kind = {"ticket.reset": "reset", "pruning.criterion": "criterion", "model.name": "model", "data.name": "dataset"}
    assert str(e.value) == message.format(kind[key])
    assert not (tmp_path / "run").exists()


def test_missing_dataset_files_offline_are_named(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"mnist: missing from .*empty/MNIST/raw: train-images-idx3-ubyte, "
                                                r"train-labels-idx1-ubyte, t10k-images-idx3-ubyte"):
        run(compose_config(["experiment=smoke", "data=mnist", f"data.root={empty}"]), tmp_path / "run", sinks=[])
    assert not (tmp_path / "run").exists()


def test_branch_from_a_run_of_another_model_is_refused(tmp_path, data_root, finished, smoke_config):
    cfg = smoke_config(f"branch.from={finished}", "branch.round=1", "model.args.hidden=[16]")
    with pytest.raises(ValueError, match=r"branch.from=.* does not match this model \(model=mlp \{'hidden': \[16\]\}\)"
                                         r".*'hidden.0.weight' has shape \(32, 64\), the model's has \(16, 64\)"):
        run(cfg, tmp_path / "branch", sinks=[])
    assert not (tmp_path / "branch" / "round_01").exists()


def test_branch_from_a_damaged_mask_is_refused(tmp_path, data_root, finished, smoke_config):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("config.yaml", "rounds.jsonl", "snapshots.pt", "round_00/mask.pt", "round_00/trained.pt",
                 "round_01/mask.pt"):
        (src / name).parent.mkdir(exist_ok=True)
        (src / name).write_bytes((finished / name).read_bytes())
    data = (src / "round_01/mask.pt").read_bytes()
    (src / "round_01/mask.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"branch.from=.* does not match this model .*cannot read mask file"):
        run(smoke_config(f"branch.from={src}", "branch.round=1"), tmp_path / "branch", sinks=[])


def test_a_mask_of_another_shape_is_refused_by_the_mask_manager(finished):
    from lth.masks import MaskManager

    model = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.Linear(16, 10))
    manager = MaskManager(model)
    masks = masks_lib.load(finished / "round_01/mask.pt")
    with pytest.raises(ValueError, match=r"mask does not match the model's prunables: missing \['0.weight', "):
        manager.set_masks(masks)


def test_nonfinite_loss_stops_the_round_records_it_and_stops_the_lineage(tmp_path, data_root, smoke_config):
    cfg = smoke_config("optimizer=sgd", "optimizer.lr=1e30", "ticket.rounds=2")
    with pytest.warns(RuntimeWarning) as caught:
        recs = run(cfg, tmp_path / "run", sinks=[])
    messages = [str(w.message) for w in caught]
    assert "round 0: non-finite loss at step 20; the round was stopped there and recorded with status " \
           "'nonfinite_loss'" in messages
    assert any("round 0 ended with status 'nonfinite_loss'" in m and "the lineage stops" in m for m in messages)
    assert len(recs) == 1 and recs[0]["status"] == "nonfinite_loss" and recs[0]["nonfinite_step"] == 20
    assert recs[0]["train_steps"] == 20 and recs[0]["test_loss"] is None  # NaN is written as null
    assert not (tmp_path / "run" / "round_01").exists()
    # a rerun is idempotent: the same record, the same stop
    with pytest.warns(RuntimeWarning, match="the lineage stops"):
        again = run(cfg, tmp_path / "run", sinks=[])
    assert [r["status"] for r in again] == ["nonfinite_loss"]


# ----- never overwrite silently


def test_a_different_lineage_into_the_same_folder_is_refused_naming_both(tmp_path, data_root, finished):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("config.yaml", "rounds.jsonl"):
        (out / name).write_bytes((finished / name).read_bytes())
    before = (out / "rounds.jsonl").read_text()
    for overrides, diff in [
        (["seed=1"], "seed: existing=0 new=1"),
        (["pruning.criterion=random"], "pruning.criterion: existing='large_final' new='random'"),
        (["experiment=lth_mnist1d"], "data.name: existing='digits' new='mnist1d'"),
        ([f"branch.from={finished}", "branch.round=1"], f"branch.from: existing=None new='{finished}'"),
    ]:
        cfg = compose_config(["experiment=smoke", f"data.root={data_root}", *overrides])
        with pytest.raises(ValueError) as e:
            run(cfg, out, sinks=[])
        text = str(e.value)
        assert "holds a run with a different config; refusing to mix results" in text
        assert f"existing config: {out / 'config.yaml'} (name='smoke')" in text
        assert f"new config: name='{cfg.name}'" in text
        assert diff in text, text
    assert (out / "rounds.jsonl").read_text() == before
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "rounds.jsonl"]


def test_results_without_a_config_or_with_a_damaged_one_are_refused(tmp_path, data_root, finished, smoke_config):
    out = tmp_path / "run"
    (out / "round_00").mkdir(parents=True)
    (out / "round_00" / "mask.pt").write_bytes((finished / "round_00/mask.pt").read_bytes())
    with pytest.raises(ValueError, match=r"holds results \(round_00\) but no config.yaml"):
        run(smoke_config(), out, sinks=[])
    (out / "config.yaml").write_text("name: smoke\nseed: [0\n")
    with pytest.raises(ValueError, match=r"(?s)config.yaml is damaged .*cannot check that this folder holds the same run"):
        run(smoke_config(), out, sinks=[])


def test_two_processes_cannot_write_one_folder(tmp_path, data_root, smoke_config):
    out = tmp_path / "run"
    holder = RunFolder(out)
    holder.claim({"name": "smoke"})  # another lineage working in this folder right now (same config is not enough)
    cfg = smoke_config()
    from lth.runner import config_dict

    (out / "config.yaml").write_text(__import__("yaml").safe_dump(config_dict(cfg), sort_keys=False))
    try:
        with pytest.raises(ValueError, match=r"is in use by another lth process \(pid \d+\)"):
            run(cfg, out, sinks=[])
    finally:
        holder.release()
    run(cfg, out, sinks=[])  # free again: the run proceeds
    assert [r["round"] for r in records(out)] == [0, 1]


# ----- logging never loses data


def test_a_failing_csv_logger_warns_and_the_run_completes(tmp_path, data_root, monkeypatch, smoke_config):
    from pytorch_lightning.loggers import CSVLogger

    def broken(self, *args, **kwargs):
        raise OSError("disk quota exceeded")

    monkeypatch.setattr(CSVLogger, "log_metrics", broken)
    monkeypatch.setattr(CSVLogger, "save", broken)
    with pytest.warns(RuntimeWarning) as caught:
        recs = run(smoke_config(), tmp_path / "run", sinks=[])
    messages = [str(w.message) for w in caught]
    for method in ("log_metrics", "save"):  # the CSV log is lth's resumable subclass of Lightning's CSVLogger
        assert any(f"logger ResumableCSVLogger failed in {method} (OSError: disk quota exceeded); training continues "
                   "and the local record (rounds.jsonl) is unaffected" in m for m in messages), messages
    assert [r["round"] for r in records(tmp_path / "run")] == [0, 1] == [r["round"] for r in recs]
    assert all(r["status"] == "ok" and r["train_steps"] == 40 for r in recs)
    monkeypatch.undo()
    ref = run(smoke_config(), tmp_path / "ref", sinks=[])
    assert [{k: v for k, v in r.items() if k != "wall_seconds"} for r in recs] == \
           [{k: v for k, v in r.items() if k != "wall_seconds"} for r in ref]


class BrokenSink:
    def __init__(self):
        self.calls = 0

    def on_round(self, record):
        self.calls += 1
        raise ConnectionError("W&B unreachable")

    def close(self):
        raise ConnectionError("W&B unreachable at finish")


def test_a_failing_sink_warns_and_the_local_record_completes(tmp_path, data_root, smoke_config):
    sink = BrokenSink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recs = run(smoke_config(), tmp_path / "run", sinks=[sink])
    messages = [str(w.message) for w in caught]
    assert "BrokenSink failed on round 0: W&B unreachable" in messages
    assert "BrokenSink failed on round 1: W&B unreachable" in messages
    assert "BrokenSink failed to close: W&B unreachable at finish" in messages
    assert sink.calls == 2 and [r["round"] for r in records(tmp_path / "run")] == [0, 1] == [r["round"] for r in recs]
