"""Tests for lth.data: TensorBatches, resumable Lightning training, dataset modules and their files."""

from __future__ import annotations

import gzip
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lth.data import DATASETS, TensorBatches, TensorDataModule, build_datamodule
from lth.data.memory import seeded_generator
from lth.data.vision import random_crop_flip, read_idx


def test_import_does_not_load_heavy_packages() -> None:
    code = (
        "import lth.data, sys; bad = [m for m in ('sklearn', 'mnist1d', 'torchvision', 'wandb') if m in sys.modules];"
        " assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[3])


def test_registry_and_build_errors() -> None:
    assert DATASETS.names() == ["cifar10", "digits", "fashion_mnist", "mnist", "mnist1d"]
    with pytest.raises(ValueError, match="valid choices: cifar10, digits, fashion_mnist, mnist, mnist1d"):
        build_datamodule("imagenet")
    with pytest.raises(ValueError, match=r"unknown argument\(s\) augment for dataset 'mnist'.*download"):
        build_datamodule("mnist", augment=True)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        build_datamodule("digits", batch_size=0)
    dm = build_datamodule("cifar10", root="x", augment=True, batch_size=7)
    assert (dm.name, dm.input_shape, dm.num_classes) == ("cifar10", (3, 32, 32), 10)
    assert (dm.batch_size, dm.eval_batch_size, dm.val_size, dm.augment, dm.download) == (7, 1000, 5000, True, False)


# ---------------------------------------------------------------- TensorBatches


def _ids(n: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.arange(n, dtype=torch.float32)[:, None], torch.arange(n)


def _epoch(loader: TensorBatches) -> torch.Tensor:
    return torch.cat([y for _, y in loader])


def test_batches_lengths_and_coverage() -> None:
    x, y = _ids(50)
    loader = TensorBatches(x, y, 8, shuffle=True, seed=1)
    assert len(loader) == 7
    assert [len(b) for b, _ in loader] == [8, 8, 8, 8, 8, 8, 2]
    dropped = TensorBatches(x, y, 8, shuffle=True, seed=1, drop_last=True)
    assert len(dropped) == 6 and [len(b) for b, _ in dropped] == [8] * 6
    assert len(TensorBatches(x[:48], y[:48], 8, shuffle=True, drop_last=True)) == 6
    e0, e1 = _epoch(loader), _epoch(loader)
    assert torch.equal(e0.sort().values, torch.arange(50)) and torch.equal(e1.sort().values, torch.arange(50))
    assert not torch.equal(e0, e1)
    for xb, yb in loader:  # inputs and labels stay paired
        assert torch.equal(xb[:, 0].long(), yb)
    assert len(set(_epoch(dropped).tolist())) == 48


def test_batches_order_is_a_function_of_seed_and_epoch() -> None:
    x, y = _ids(50)
    a, b = TensorBatches(x, y, 8, shuffle=True, seed=3), TensorBatches(x, y, 8, shuffle=True, seed=3)
    first_a = [_epoch(a) for _ in range(3)]
    assert all(torch.equal(ea, _epoch(b)) for ea in first_a)
    assert torch.equal(first_a[2], torch.randperm(50, generator=seeded_generator(3, 0, 2)))
    assert not torch.equal(first_a[0], _epoch(TensorBatches(x, y, 8, shuffle=True, seed=4)))
    plain = TensorBatches(x, y, 8, shuffle=False)
    assert torch.equal(_epoch(plain), torch.arange(50)) and torch.equal(_epoch(plain), torch.arange(50))
    assert next(iter(plain))[0].data_ptr() == x.data_ptr()  # unshuffled batches are views


def test_batches_epoch_starts_at_first_batch_not_at_iter() -> None:
    x, y = _ids(50)
    loader = TensorBatches(x, y, 8, shuffle=True, seed=3)
    iter(loader)
    iter(loader)
    assert torch.equal(_epoch(loader), torch.randperm(50, generator=seeded_generator(3, 0, 0)))
    assert loader.epoch == 0


def test_batches_state_dict_resumes_inside_and_after_an_epoch() -> None:
    x, y = _ids(50)
    ref = TensorBatches(x, y, 8, shuffle=True, seed=5)
    epochs = [_epoch(ref) for _ in range(3)]
    loader = TensorBatches(x, y, 8, shuffle=True, seed=5)
    it = iter(loader)
    seen = [next(it)[1] for _ in range(3)]
    state = loader.state_dict()
    assert (state["epoch"], state["consumed"]) == (0, 3)
    resumed = TensorBatches(x, y, 8, shuffle=True, seed=5)
    resumed.load_state_dict(state)
    assert torch.equal(torch.cat(seen + [_epoch(resumed)]), epochs[0])
    assert torch.equal(_epoch(resumed), epochs[1])
    full = TensorBatches(x, y, 8, shuffle=True, seed=5)
    full.load_state_dict({"epoch": 1, "consumed": 7})  # epoch 1 complete: next is epoch 2
    assert torch.equal(_epoch(full), epochs[2])
    with pytest.raises(ValueError, match="saved seed=5 but this one has seed=6"):
        TensorBatches(x, y, 8, shuffle=True, seed=6).load_state_dict(state)


def test_batches_transform_is_seeded_per_epoch_and_batch() -> None:
    x, y = _ids(20)

    def noise(xb: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return xb + torch.rand(xb.shape, generator=g)

    a = [xb for xb, _ in TensorBatches(x, y, 5, shuffle=True, seed=2, transform=noise)]
    b = [xb for xb, _ in TensorBatches(x, y, 5, shuffle=True, seed=2, transform=noise)]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert all(0 < (p - p.floor()).min() for p in a)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        TensorBatches(x, y, 0, shuffle=True)


# ---------------------------------------------------------------- resumable Lightning training


class RandomData(TensorDataModule):
    """60 random 3-feature points, 10 held out: 50 train = 7 batches of 8 (last one 2)."""

    name, input_shape, num_classes, default_val_size = "random", (3,), 2, 10

    def load_pool(self):  # type: ignore[no-untyped-def]
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(60, 3, generator=g), torch.randint(0, 2, (60,), generator=g)
        return x, y, x[:20].clone(), y[:20].clone()


def _lit_module(own_loader: bool = False):  # type: ignore[no-untyped-def]
    """Linear classifier recording a checksum of every training batch; `own_loader`: it serves TensorBatches itself."""
    import pytorch_lightning as pl

    class Linear(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(3, 2)
            with torch.no_grad():
                self.lin.weight.copy_(torch.linspace(-1, 1, 6).view(2, 3))
                self.lin.bias.zero_()
            self.seen: list[float] = []

        def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
            x, y = batch
            self.seen.append(float(x.sum() + 1000 * y.sum()))
            return torch.nn.functional.cross_entropy(self.lin(x), y)

        def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
            self.log("val_loss", torch.nn.functional.cross_entropy(self.lin(batch[0]), batch[1]))

        test_step = validation_step

        def configure_optimizers(self):  # type: ignore[no-untyped-def]
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    class LinearWithLoader(Linear):
        def train_dataloader(self) -> TensorBatches:
            return RandomData(batch_size=8).train_dataloader()

    return LinearWithLoader() if own_loader else Linear()


def _fit(folder: Path, stop: dict, ckpt: dict, resume: bool = False, own_loader: bool = False):  # type: ignore[no-untyped-def]
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    model = _lit_module(own_loader)
    trainer = pl.Trainer(
        **stop,
        callbacks=[ModelCheckpoint(dirpath=folder, save_last=True, save_top_k=0, **ckpt)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0 if own_loader else 1.0,
        accelerator="cpu",
    )
    datamodule = None if own_loader else RandomData(batch_size=8)
    trainer.fit(model, datamodule=datamodule, ckpt_path=folder / "last.ckpt" if resume else None)
    return model


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize(
    ("stop_at", "total", "kind", "ckpt", "own_loader"),
    [
        (3, 18, "max_steps", {"every_n_train_steps": 1}, False),  # mid-epoch 0
        (10, 18, "max_steps", {"every_n_train_steps": 1}, False),  # mid-epoch 1
        (7, 18, "max_steps", {"every_n_train_steps": 1}, False),  # epoch boundary, step-based checkpoint
        (1, 3, "max_epochs", {"every_n_epochs": 1, "save_on_train_epoch_end": True}, False),  # epoch end
        (10, 18, "max_steps", {"every_n_train_steps": 1}, True),  # mid-epoch, loader state alone (no datamodule)
        (7, 18, "max_steps", {"every_n_train_steps": 1}, True),  # epoch boundary, loader state alone
    ],
)
def test_lightning_resume_equals_uninterrupted(
    tmp_path: Path, stop_at: int, total: int, kind: str, ckpt: dict, own_loader: bool
) -> None:
    full = _fit(tmp_path / "full", {kind: total}, ckpt, own_loader=own_loader)
    first = _fit(tmp_path / "cut", {kind: stop_at}, ckpt, own_loader=own_loader)
    rest = _fit(tmp_path / "cut", {kind: total}, ckpt, resume=True, own_loader=own_loader)
    steps = total if kind == "max_steps" else total * 7
    assert len(full.seen) == steps and len(first.seen) == (stop_at if kind == "max_steps" else stop_at * 7)
    assert first.seen + rest.seen == full.seen
    assert torch.equal(full.lin.weight, rest.lin.weight) and torch.equal(full.lin.bias, rest.lin.bias)
    # Lightning's epoch e is the loader's epoch e
    loader = RandomData(batch_size=8).train_dataloader()
    expected = [float(x.sum() + 1000 * y.sum()) for _ in range(3) for x, y in loader]
    assert full.seen == expected[:steps]


@pytest.mark.filterwarnings("ignore")
def test_checkpoint_position_is_dropped_after_a_test_run(tmp_path: Path) -> None:
    import pytorch_lightning as pl

    _fit(tmp_path, {"max_steps": 3}, {"every_n_train_steps": 1})
    dm = RandomData(batch_size=8)
    kw = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False, "accelerator": "cpu"}
    pl.Trainer(**kw).test(_lit_module(), datamodule=dm, ckpt_path=tmp_path / "last.ckpt", verbose=False)
    fresh = _lit_module()
    pl.Trainer(max_steps=3, enable_checkpointing=False, num_sanity_val_steps=0, **kw).fit(fresh, datamodule=dm)
    first3 = list(RandomData(batch_size=8).train_dataloader())[:3]
    assert fresh.seen == [float(x.sum() + 1000 * y.sum()) for x, y in first3]


# ---------------------------------------------------------------- datamodule basics


def test_datamodule_split_standardise_and_validation() -> None:
    dm = RandomData(batch_size=8, val_size=12, num_train=40, seed=1)
    x, y = dm.train  # loads lazily
    assert x.shape == (40, 3) and dm.val[0].shape == (12, 3) and dm.test[0].shape == (20, 3)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.allclose(x.mean(0), torch.zeros(3), atol=1e-6)
    assert torch.allclose(x.std(0, unbiased=False), torch.ones(3))
    assert dm.steps_per_epoch == 5 and len(dm.val_dataloader()) == 1
    with pytest.raises(ValueError, match="val_size=60 leaves no training data"):
        RandomData(val_size=60).setup()
    with pytest.raises(ValueError, match="num_train must be a positive int, got 0"):
        RandomData(num_train=0)


# ---------------------------------------------------------------- mnist1d


@pytest.fixture(scope="session")
def mnist1d_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mnist1d_root")
    state = np.random.get_state()[1].copy()
    build_datamodule("mnist1d", root=str(root)).prepare_data()
    assert np.array_equal(np.random.get_state()[1], state)  # generation leaves the global RNG alone
    return root


def test_mnist1d_shapes_and_cache(mnist1d_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mnist1d.data

    files = list((mnist1d_root / "mnist1d").iterdir())
    assert len(files) == 1 and files[0].name.startswith("mnist1d_") and files[0].suffix == ".npz"

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("regenerated despite the cache")

    monkeypatch.setattr(mnist1d.data, "make_dataset", refuse)
    dm = build_datamodule("mnist1d", root=str(mnist1d_root))
    dm.setup("fit")
    (x, y), (xv, _), (xt, yt) = dm.train, dm.val, dm.test
    assert x.shape == (3500, 1, 40) and xv.shape == (500, 1, 40) and xt.shape == (1000, 1, 40)
    assert dm.input_shape == (1, 40) and dm.num_classes == 10 and dm.steps_per_epoch == 59
    assert set(y.tolist()) == set(range(10)) and yt.min() >= 0 and yt.max() <= 9
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std()) - 1) < 1e-3
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (60, 1, 40) and yb.dtype == torch.int64
    assert build_datamodule("mnist1d", root=str(mnist1d_root), num_train=100).train[0].shape == (100, 1, 40)
    with pytest.raises(ValueError, match="unknown mnist1d dataset_args colour"):
        build_datamodule("mnist1d", root=str(mnist1d_root), dataset_args={"colour": 1}).setup()


# ---------------------------------------------------------------- digits


def test_digits_split_is_an_exact_partition() -> None:
    from sklearn.datasets import load_digits

    dm = build_datamodule("digits", seed=0)
    sizes = [len(dm.train[0]), len(dm.val[0]), len(dm.test[0])]
    assert sizes == [1257, 180, 360] and dm.input_shape == (1, 8, 8)
    raw = [torch.round(x * dm.std + dm.mean).flatten(1) for x, _ in (dm.train, dm.val, dm.test)]
    rows = torch.cat(raw)
    full = torch.from_numpy(load_digits().data).float()
    labels = torch.cat([dm.train[1], dm.val[1], dm.test[1]])
    pairs = sorted(zip(map(tuple, rows.tolist()), labels.tolist()))
    assert pairs == sorted(zip(map(tuple, full.tolist()), load_digits().target.tolist()))
    other = build_datamodule("digits", seed=1)
    assert torch.equal(other.test[1], dm.test[1])  # test split is fixed
    assert not torch.equal(other.val[1], dm.val[1])  # val split follows the seed


# ---------------------------------------------------------------- torchvision-format files


def _idx(array: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _images(n: int, shape: tuple[int, ...], offset: int) -> np.ndarray:
    return ((np.arange(n * int(np.prod(shape))).reshape(n, *shape) * 7 + offset) % 256).astype(np.uint8)


def _write_mnist(folder: Path, gz: bool) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir(parents=True)
    train_x, test_x = _images(30, (28, 28), 0), _images(10, (28, 28), 3)
    train_y, test_y = (np.arange(30) % 10).astype(np.uint8), (np.arange(10)[::-1] % 10).astype(np.uint8)
    arrays = {"train-images-idx3-ubyte": train_x, "train-labels-idx1-ubyte": train_y}
    arrays |= {"t10k-images-idx3-ubyte": test_x, "t10k-labels-idx1-ubyte": test_y}
    for name, array in arrays.items():
        if gz:
            with gzip.open(folder / f"{name}.gz", "wb") as f:
                f.write(_idx(array))
        else:
            (folder / name).write_bytes(_idx(array))
    return test_x, test_y


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_datasets(tmp_path: Path, name: str, folder: str, gz: bool) -> None:
    test_x, _ = _write_mnist(tmp_path / folder / "raw", gz)
    dm = build_datamodule(name, root=str(tmp_path), val_size=5, batch_size=10, eval_batch_size=4)
    dm.setup("fit")
    (x, y), (xv, _), (xt, yt) = dm.train, dm.val, dm.test
    assert x.shape == (25, 1, 28, 28) and xv.shape == (5, 1, 28, 28) and xt.shape == (10, 1, 28, 28)
    assert sorted(torch.cat([y, dm.val[1]]).tolist()) == sorted((np.arange(30) % 10).tolist())
    assert yt.tolist() == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0] and yt.dtype == torch.int64
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std(unbiased=False)) - 1) < 1e-5
    assert torch.equal(torch.round(xt * dm.std + dm.mean).squeeze(1), torch.from_numpy(test_x).float())
    assert [len(b) for b, _ in dm.test_dataloader()] == [4, 4, 2] and dm.steps_per_epoch == 3


def test_idx_reader_rejects_other_files(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01abcd")
    with pytest.raises(ValueError, match="not an unsigned-byte IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(_idx(np.zeros((2, 3), np.uint8))[:-1])
    with pytest.raises(ValueError, match=r"header says shape \(2, 3\) but holds 5 bytes"):
        read_idx(tmp_path / "short")


def _write_cifar(folder: Path) -> None:
    folder.mkdir(parents=True)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        n = 10 if name == "test_batch" else 6
        batch = {b"data": _images(n, (3072,), i), b"labels": [(j + i) % 10 for j in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch))


def test_cifar10(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "cifar-10-batches-py")
    dm = build_datamodule("cifar10", root=str(tmp_path), val_size=6)
    (x, _), (xv, _), (xt, yt) = dm.train, dm.val, dm.test
    assert x.shape == (24, 3, 32, 32) and xv.shape == (6, 3, 32, 32) and xt.shape == (10, 3, 32, 32)
    assert yt.tolist() == [5, 6, 7, 8, 9, 0, 1, 2, 3, 4]
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(x.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-5)
    expected = torch.from_numpy(_images(10, (3072,), 5)).float().view(10, 3, 32, 32)
    assert torch.equal(torch.round(xt * dm.std + dm.mean), expected)


def test_cifar10_augment_is_seeded_and_matches_a_reference(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "cifar-10-batches-py")
    a = build_datamodule("cifar10", root=str(tmp_path), val_size=6, batch_size=8, augment=True)
    b = build_datamodule("cifar10", root=str(tmp_path), val_size=6, batch_size=8, augment=True)
    batches_a, batches_b = list(a.train_dataloader()), list(b.train_dataloader())
    assert all(torch.equal(p[0], q[0]) for p, q in zip(batches_a, batches_b))
    assert batches_a[0][0].shape == (8, 3, 32, 32)
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32)
    out = random_crop_flip(x, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    dy, dx = torch.randint(0, 9, (2, 1), generator=g), torch.randint(0, 9, (2, 1), generator=g)
    flip = torch.rand(2, 1, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(2):
        crop = padded[i, :, dy[i, 0] : dy[i, 0] + 32, dx[i, 0] : dx[i, 0] + 32]
        assert torch.equal(out[i], crop.flip(2) if flip[i, 0] else crop)


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST/raw"), ("cifar10", "cifar-10-batches-py")])
def test_missing_files_error_names_the_folder(tmp_path: Path, name: str, folder: str) -> None:
    dm = build_datamodule(name, root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=f"missing from {tmp_path / folder}: .*download=True"):
        dm.setup("fit")


def test_download_without_torchvision_says_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` fail
    with pytest.raises(ValueError, match="download=True needs torchvision"):
        build_datamodule("fashion_mnist", root=str(tmp_path), download=True).prepare_data()
