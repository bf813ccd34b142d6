"""MNIST, FashionMNIST and CIFAR-10 read from torchvision's on-disk format (torchvision only to download)."""

from __future__ import annotations

import contextlib
import gzip
import os
import pickle
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lth.data.base import DATASETS, TensorDataModule
from lth.data.memory import BatchTransform

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


def read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte IDX array (MNIST format), plain or gzipped."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {array.size} bytes")
    return array.reshape(shape)


def random_crop_flip(
    x: Tensor, generator: torch.Generator, padding: int = 4, *, offset: int = 0, total: int | None = None
) -> Tensor:
    """Per-sample random crop of the zero-padded batch `(N, C, H, W)` and horizontal flip with p=0.5, vectorised.

    The random numbers are drawn on the CPU from `generator` for a batch of `total` samples (default N), of which `x`
    is rows [offset, offset + N): a slice transforms exactly as it would within the whole batch. The crop runs on
    `x`'s device.
    """
    n, c, h, w = x.shape
    total = n if total is None else total
    if not 0 <= offset <= total - n:
        raise ValueError(f"rows [{offset}, {offset + n}) are not within a batch of {total}")
    dy = torch.randint(0, 2 * padding + 1, (total, 1), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (total, 1), generator=generator)
    flip = torch.rand(total, 1, generator=generator) < 0.5
    drawn = torch.cat([dy, dx, flip.long()], 1)[offset : offset + n]
    drawn = drawn.to(x.device, non_blocking=True)  # one small copy; no-op on the CPU
    dy, dx, flip = drawn[:, :1], drawn[:, 1:2], drawn[:, 2:].bool()
    padded = F.pad(x, (padding,) * 4)
    rows = dy + torch.arange(h, device=x.device)
    cols = dx + torch.arange(w, device=x.device)
    cols = torch.where(flip, cols.flip(1), cols)  # reading columns right to left = flipping the crop
    return padded[
        torch.arange(n, device=x.device)[:, None, None, None],
        torch.arange(c, device=x.device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


random_crop_flip.shardable = True  # type: ignore[attr-defined]


@contextlib.contextmanager
def download_lock(root: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on `<root>/.lth-download.lock` (fcntl; other processes block until it is released)."""
    import fcntl

    Path(root).mkdir(parents=True, exist_ok=True)
    with open(Path(root) / ".lth-download.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def download_with_torchvision(class_name: str, root: str, folder: Path, files: list[str]) -> None:
    """Download train and test splits with `torchvision.datasets.<class_name>(root, download=True)`."""
    try:
        import torchvision.datasets as tvd
    except (ImportError, RuntimeError) as e:
        raise ValueError(
            f"download=True needs torchvision (pip install torchvision, or lth[vision]); "
            f"or place {', '.join(files)} in {folder}"
        ) from e
    for train in (True, False):
        getattr(tvd, class_name)(root, train=train, download=True)


class _DiskDataModule(TensorDataModule):
    """A dataset read from files in torchvision's layout under `<root>/<folder>`; downloads if asked."""

    folder: str = ""
    torchvision_class: str = ""

    def __init__(
        self,
        root: str = "data",
        batch_size: int = 60,
        eval_batch_size: int = 1000,
        val_size: int | None = None,
        seed: int = 0,
        num_train: int | None = None,
        download: bool = False,
    ) -> None:
        super().__init__(root, batch_size, eval_batch_size, val_size, seed, num_train)
        self.download = download

    def expected_files(self) -> list[str]:
        """File names expected in the folder."""
        raise NotImplementedError

    def missing_files(self) -> list[str]:
        """Expected files found neither plain nor gzipped."""
        return [name for name in self.expected_files() if self._find(name) is None]

    def _find(self, name: str) -> Path | None:
        for candidate in (self.data_dir / name, self.data_dir / f"{name}.gz"):
            if candidate.is_file():
                return candidate
        return None

    @property
    def data_dir(self) -> Path:
        """The folder holding the files."""
        return Path(self.root) / self.folder

    def prepare_data(self) -> None:
        """Download the files if they are missing and `download=True`; otherwise complain once, clearly."""
        missing = self.missing_files()
        if not missing:
            return
        if self.download:
            with download_lock(self.root):  # one process downloads; the others (ranks, sweep jobs) wait, then read
                missing = self.missing_files()
                if missing:
                    download_with_torchvision(self.torchvision_class, self.root, self.data_dir, missing)
                    missing = self.missing_files()
            if not missing:
                return
        raise FileNotFoundError(
            f"{self.name}: missing from {self.data_dir}: {', '.join(missing)} (plain or .gz). Get them with "
            f"download=True (needs torchvision) or copy torchvision's {self.torchvision_class} files there."
        )

    def path(self, name: str) -> Path:
        """Path of an expected file (plain or .gz)."""
        found = self._find(name)
        if found is None:
            self.prepare_data()
            found = self._find(name)
        assert found is not None
        return found


class _IdxDataModule(_DiskDataModule):
    """MNIST-format (IDX ubyte) 28x28 grey images, 60k train / 10k test; 5,000 of train held out for validation."""

    input_shape = (1, 28, 28)
    num_classes = 10
    default_val_size = 5000

    def expected_files(self) -> list[str]:
        return [name for pair in IDX_FILES.values() for name in pair]

    def _split_arrays(self, split: str) -> tuple[Tensor, Tensor]:
        images, labels = (read_idx(self.path(name)) for name in IDX_FILES[split])
        if images.ndim != 3 or len(images) != len(labels):
            raise ValueError(f"{self.name} {split}: images {images.shape} and labels {labels.shape} do not match")
        return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))

    def load_pool(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return *self._split_arrays("train"), *self._split_arrays("test")


@DATASETS.register("mnist")
class MNIST(_IdxDataModule):
    """MNIST from `<root>/MNIST/raw/`."""

    name = "mnist"
    folder = "MNIST/raw"
    torchvision_class = "MNIST"


@DATASETS.register("fashion_mnist")
class FashionMNIST(_IdxDataModule):
    """Fashion-MNIST from `<root>/FashionMNIST/raw/`."""

    name = "fashion_mnist"
    folder = "FashionMNIST/raw"
    torchvision_class = "FashionMNIST"


def _get(batch: dict[Any, Any], key: str) -> Any:
    """A CIFAR pickle entry by str or bytes key (pickles from Python 2 load with bytes keys)."""
    return batch[key] if key in batch else batch[key.encode()]


@DATASETS.register("cifar10")
class CIFAR10(_DiskDataModule):
    """CIFAR-10 from `<root>/cifar-10-batches-py/`: 50k train / 10k test 32x32 RGB; 5,000 of train held out for
    validation. `augment=True` adds random crop (zero padding 4, after standardisation) and horizontal flip to training
    batches, seeded by (seed, epoch, batch)."""

    name = "cifar10"
    folder = "cifar-10-batches-py"
    torchvision_class = "CIFAR10"
    input_shape = (3, 32, 32)
    num_classes = 10
    default_val_size = 5000

    def __init__(
        self,
        root: str = "data",
        batch_size: int = 60,
        eval_batch_size: int = 1000,
        val_size: int | None = None,
        seed: int = 0,
        num_train: int | None = None,
        download: bool = False,
        augment: bool = False,
    ) -> None:
        super().__init__(root, batch_size, eval_batch_size, val_size, seed, num_train, download)
        self.augment = augment

    def expected_files(self) -> list[str]:
        return list(CIFAR_FILES)

    def _read(self, names: tuple[str, ...]) -> tuple[Tensor, Tensor]:
        xs, ys = [], []
        for name in names:
            with open(self.path(name), "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            xs.append(np.asarray(_get(batch, "data"), dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(_get(batch, "labels"), dtype=np.int64))
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    def load_pool(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return *self._read(CIFAR_FILES[:-1]), *self._read(CIFAR_FILES[-1:])

    def train_transform(self) -> BatchTransform | None:
        return random_crop_flip if self.augment else None
