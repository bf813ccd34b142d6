import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test gets its own W&B folder and a single torch thread (stable timings, no oversubscription)."""
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """A data folder shared by the session (MNIST-1D is generated once and cached there)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def smoke_config(data_root):
    """`smoke_config(*overrides)`: the typed config of `lth-run experiment=smoke data.root=<data_root> <overrides>`."""
    from lth.cli import compose_config

    def compose(*overrides):
        return compose_config(["experiment=smoke", f"data.root={data_root}", *overrides])

    return compose
