"""GPU and cluster launches emulated on CPU: SLURM job sizes, one writer per launch style, device checks, strategies,
per-device RNG restore, one downloader. CUDA and launcher state come from monkeypatched torch.cuda and env vars."""

import multiprocessing as mp
import time
from pathlib import Path

import pytest
import torch

from lth import distributed as dist
from lth.cli import compose_config
from lth.validate import validate

LAUNCH_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "SLURM_NTASKS",
               "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def clean_env(monkeypatch):
    """No launcher variables from the outer environment."""
    for var in LAUNCH_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def fake_gpus(monkeypatch, n):
    """Pretend `n` CUDA devices are visible."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)


def hydra_compose(overrides):
    """The composed config with its `hydra` node (the launcher's settings), as `lth-run` would build it."""
    from hydra import compose, initialize_config_module

    import lth.cli  # noqa: F401  (registers the schema)

    with initialize_config_module("lth.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


# ----- 1: SLURM asks for the GPUs
def test_slurm_launcher_requests_the_trainers_gpus_on_every_node():
    launcher = hydra_compose(["launcher=slurm", "trainer=gpu", "trainer.devices=4", "trainer.num_nodes=2"]).hydra.launcher
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert launcher.cpus_per_task >= 1 and launcher.mem_gb == 64  # 16 GB for each of the node's 4 processes
    listed = hydra_compose(["launcher=slurm", "trainer=gpu", "trainer.devices=[0,1]"]).hydra.launcher
    assert (listed.nodes, listed.tasks_per_node, listed.gpus_per_node) == (1, 2, 2)


def test_slurm_launcher_on_cpu_asks_for_no_gpu():
    launcher = hydra_compose(["launcher=slurm", "trainer=ddp_cpu", "trainer.strategy=ddp"]).hydra.launcher
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.mem_gb) == (2, None, 32)
    assert hydra_compose(["launcher=slurm"]).hydra.launcher.mem_gb == 16


def test_slurm_launcher_runs_a_spawn_strategy_as_one_task_with_all_the_gpus():
    launcher = hydra_compose(["launcher=slurm", "trainer=gpu", "trainer.devices=4", "trainer.strategy=ddp_spawn"]
                             ).hydra.launcher
    assert (launcher.tasks_per_node, launcher.gpus_per_node) == (1, 4)  # tasks=4 would run 4 lineages, each spawning
    assert hydra_compose(["launcher=slurm", "trainer=ddp_cpu"]).hydra.launcher.tasks_per_node == 1


def test_slurm_launcher_refuses_devices_it_cannot_count():
    with pytest.raises(Exception, match="launcher=slurm needs trainer.devices as a number"):
        _ = hydra_compose(["launcher=slurm", "trainer=gpu", "trainer.devices=-1"]).hydra.launcher.tasks_per_node


# ----- 2: fused optimizers under AMP clipping
def test_amp_clipping_turns_fused_into_foreach_and_nothing_else():
    from lth.plan import amp_safe_optimizer

    adam = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3, "fused": True}
    safe = amp_safe_optimizer(adam, "bf16-mixed", 1.0)
    assert safe == {**adam, "fused": False, "foreach": True}
    assert amp_safe_optimizer(adam, "32-true", 1.0) is adam
    assert amp_safe_optimizer(adam, "16-mixed", None) is adam
    sgd = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1}
    assert amp_safe_optimizer(sgd, "16-mixed", 1.0) is sgd


# ----- 3: world size and exactly one writer
@pytest.mark.parametrize("devices", [-1, "auto", "-1"])
def test_all_devices_resolve_to_the_visible_gpus(monkeypatch, devices):
    fake_gpus(monkeypatch, 4)
    assert dist.world_size(devices, 2, "gpu") == 8
    assert dist.world_size(devices, 1, "auto") == 4  # accelerator auto picks CUDA when it is there
    assert dist.world_size("auto", 1, "cpu") == 1


def launch(monkeypatch, env, trainer_args):
    """Whether the process with launcher variables `env` is the writer of trainer settings `trainer_args`."""
    for var in LAUNCH_VARS:
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, str(v))
    return dist.is_writer(*trainer_args)


def test_torchrun_has_one_writer_with_all_devices(clean_env):
    fake_gpus(clean_env, 2)
    writers = [launch(clean_env, {"RANK": node * 2 + local, "LOCAL_RANK": local, "GROUP_RANK": node, "WORLD_SIZE": 4,
                                  "LOCAL_WORLD_SIZE": 2}, ("ddp", -1, 2, "gpu"))
               for node in range(2) for local in range(2)]
    assert writers == [True, False, False, False]


def test_slurm_tasks_have_one_writer(clean_env):
    fake_gpus(clean_env, 4)
    writers = [launch(clean_env, {"SLURM_NTASKS": 8, "SLURM_PROCID": task, "SLURM_LOCALID": task % 4,
                                  "SLURM_NODEID": task // 4}, ("ddp", "auto", 2, "gpu"))
               for task in range(8)]
    assert writers == [True] + [False] * 7


def test_manual_multi_node_launch_has_one_writer(clean_env):
    # Lightning's ddp on 2 nodes started by hand: each node's main process has NODE_RANK and no LOCAL_RANK; the
    # processes it relaunches have LOCAL_RANK=1.. and WORLD_SIZE
    writers = []
    for node in range(2):
        writers.append(launch(clean_env, {"NODE_RANK": node, "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": 29500},
                              ("ddp", 2, 2, "cpu")))
        writers.append(launch(clean_env, {"NODE_RANK": node, "LOCAL_RANK": 1, "WORLD_SIZE": 4},
                              ("ddp", 2, 2, "cpu")))
    assert writers == [True, False, False, False]


def test_a_spawn_launch_writes_from_its_main_process(clean_env):
    assert launch(clean_env, {}, ("ddp_spawn", 2, 1, "cpu"))


def test_batch_split_is_checked_for_all_visible_gpus(monkeypatch, smoke_config):
    fake_gpus(monkeypatch, 4)
    with pytest.raises(ValueError, match="divisible by the 4 processes"):
        validate(smoke_config("trainer=gpu", "trainer.devices=-1", "trainer.strategy=ddp", "data.batch_size=30"))
    validate(smoke_config("trainer=gpu", "trainer.devices=-1", "trainer.strategy=ddp", "data.batch_size=32"))


def test_the_plan_world_counts_a_torchrun_launch(clean_env, smoke_config):
    fake_gpus(clean_env, 2)
    t = smoke_config("trainer=gpu", "trainer.devices=auto", "trainer.strategy=ddp").trainer
    assert dist.launch_world(t) == 2
    clean_env.setenv("WORLD_SIZE", "6")  # 3 nodes of 2
    assert dist.launch_world(t) == 6


# ----- 4: devices that are not there
def test_a_gpu_preset_without_gpus_is_refused_before_anything_is_written(tmp_path, smoke_config, monkeypatch):
    from lth.runner import run

    fake_gpus(monkeypatch, 0)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"trainer.devices=4 asks for 4 CUDA device\(s\); 0 visible"):
        run(smoke_config("trainer=gpu", "trainer.devices=4"), out, sinks=[])
    assert not out.exists()


def test_more_gpus_than_visible_are_refused(monkeypatch, smoke_config):
    fake_gpus(monkeypatch, 2)
    with pytest.raises(ValueError, match=r"asks for 4 CUDA device\(s\); 2 visible"):
        validate(smoke_config("trainer=gpu", "trainer.devices=4", "trainer.strategy=ddp"))
    with pytest.raises(ValueError, match=r"2 visible"):
        validate(smoke_config("trainer=gpu", "trainer.devices=[0,3]", "trainer.strategy=ddp"))
    validate(smoke_config("trainer=gpu", "trainer.devices=2", "trainer.strategy=ddp"))


# ----- 9: fork strategies with CUDA
@pytest.mark.parametrize("strategy", ["ddp_fork", "ddp_notebook"])
def test_fork_strategies_with_a_gpu_are_refused_naming_the_ones_that_work(monkeypatch, smoke_config, strategy):
    fake_gpus(monkeypatch, 2)
    with pytest.raises(ValueError, match=f"trainer.strategy={strategy}.*ddp_spawn.*torchrun"):
        validate(smoke_config("trainer=gpu", "trainer.devices=2", f"trainer.strategy={strategy}"))
    validate(smoke_config("trainer=gpu", "trainer.devices=2", "trainer.strategy=ddp_spawn"))
    validate(smoke_config("trainer=ddp_cpu", f"trainer.strategy={strategy}"))  # CPU forks are fine


# ----- 10: resuming on fewer GPUs
def test_rng_states_of_the_visible_gpus_are_restored(monkeypatch):
    from lth.lit import RNGStateCallback

    fake_gpus(monkeypatch, 1)
    restored = []

    def set_rng_state(state, device="cuda"):
        index = device if isinstance(device, int) else torch.device(device).index or 0
        if index >= torch.cuda.device_count():
            raise RuntimeError(f"invalid device ordinal {index}")
        restored.append((index, state))

    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda.random, "set_rng_state", set_rng_state)
    saved = [torch.full((8,), 1, dtype=torch.uint8), torch.full((8,), 2, dtype=torch.uint8)]  # saved on 2 GPUs
    cpu = torch.get_rng_state()
    RNGStateCallback().load_state_dict({"torch": cpu, "cuda": saved})
    assert [i for i, _ in restored] == [0] and torch.equal(restored[0][1], saved[0])
    assert torch.equal(torch.get_rng_state(), cpu)


# ----- 8: one downloader
def _prepare(root, counter, barrier):
    from lth.data import vision

    def fake_download(class_name, root_, folder, files):
        with open(counter, "a") as f:
            f.write("x")
        time.sleep(0.5)  # a slow download: the other process arrives while it runs
        folder.mkdir(parents=True, exist_ok=True)
        for name in files:
            (folder / name).write_bytes(b"")

    vision.download_with_torchvision = fake_download
    barrier.wait()
    vision.MNIST(root=str(root), download=True).prepare_data()


def test_one_process_downloads_and_the_others_wait(tmp_path):
    ctx = mp.get_context("fork")
    counter = tmp_path / "downloads"
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_prepare, args=(tmp_path / "data", counter, barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]  # the waiting one found the files afterwards
    assert counter.read_text() == "x"
    assert (Path(tmp_path / "data") / ".lth-download.lock").exists()


# ----- 13: the recommended multi-GPU presets
def test_recommended_multi_gpu_presets_keep_their_processes_across_rounds():
    one_node = compose_config(["trainer=ddp_gpu"])  # torchrun --nproc-per-node=N -m lth trainer=ddp_gpu
    assert (one_node.trainer.accelerator, one_node.trainer.devices, one_node.trainer.strategy) == ("gpu", -1, "ddp")
    cluster = hydra_compose(["launcher=slurm", "trainer=ddp_gpu", "trainer.devices=4", "trainer.num_nodes=2"])
    assert cluster.trainer.strategy == "ddp" and cluster.hydra.launcher.gpus_per_node == 4
    assert cluster.hydra.launcher.tasks_per_node == 4  # one SLURM task per GPU: Lightning's SLURM environment
    # ddp keeps the launched processes for the whole lineage; a spawn strategy starts new ones for every round's fit
    assert not dist.is_spawn(one_node.trainer.strategy) and not dist.is_spawn(cluster.trainer.strategy)
    assert dist.is_spawn(compose_config(["trainer=ddp_cpu"]).trainer.strategy)


# ----- 14: offline W&B on compute nodes, uploaded by wandb-osh on a login node
def test_slurm_wandb_sync_is_slurm_with_an_offline_run_and_the_sync_hook():
    cfg = hydra_compose(["launcher=slurm_wandb_sync", "trainer=gpu", "trainer.devices=2", "logger.sync_dir=/shared/osh"])
    slurm = hydra_compose(["launcher=slurm", "trainer=gpu", "trainer.devices=2"])
    assert cfg.hydra.launcher == slurm.hydra.launcher  # the same jobs as launcher=slurm
    assert (cfg.logger.wandb, cfg.logger.mode, cfg.logger.sync_hook, cfg.logger.sync_dir) == (
        True, "offline", True, "/shared/osh")
    assert not compose_config(["launcher=slurm"]).logger.sync_hook  # plain slurm leaves W&B as it was
