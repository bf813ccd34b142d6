"""The in-memory LightningDataModule every dataset builds on, and the dataset registry."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from lth.data.memory import SPLIT_STREAM, BatchTransform, TensorBatches, check_on_device, place, seeded_generator
from lth.registry import Registry

DATASETS: Registry[Callable[..., TensorDataModule]] = Registry("dataset")


def build_datamodule(name: str, on_device: bool | str = "auto", **kwargs: Any) -> TensorDataModule:
    """Build the registered dataset `name` with `kwargs`, rejecting unknown names and arguments.

    `on_device` (true, false, auto; every dataset has it) says where the data lives when training on an accelerator:
    moved there once, or kept on the host (see `lth.data.memory.place`).
    """
    on_device = check_on_device(on_device)
    DATASETS.check(name)
    builder = DATASETS[name]
    params = inspect.signature(builder).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise ValueError(
                f"unknown argument(s) {', '.join(unknown)} for dataset '{name}'; valid: {', '.join(params)}"
            )
    module = builder(**kwargs)
    module.on_device = on_device
    return module


def _positive_int(name: str, value: object, allow_zero: bool = False) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if allow_zero else 1):
        kind = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{name} must be {kind} int, got {value!r}")


def channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std (dim 1) of `x`, shaped to broadcast against it; std 0 becomes 1."""
    dims = [d for d in range(x.dim()) if d != 1]
    var, mean = torch.var_mean(x, dim=dims, keepdim=True, correction=0)
    std = var.sqrt()
    return mean, torch.where(std > 0, std, torch.ones_like(std))


class TensorDataModule(pl.LightningDataModule):
    """Train/val/test tensors held in memory (float32 inputs standardised per channel with train statistics, int64
    labels) served by `TensorBatches`.

    Subclasses set `name`, `input_shape` (per sample, channels first), `num_classes`, `default_val_size` and
    implement `load_pool()`. `val_size` examples of the pool (seeded by `seed`) are held out for validation; the rest,
    in that seeded order and cut to `num_train` if given, is the training split. Data loads on `setup()` or on first
    access, so the module also works without a Trainer. Every `train_dataloader()` call returns a fresh loader whose
    epoch 0 starts over, so each `Trainer.fit` (e.g. each round) sees the same data order for the same seed.

    On an accelerator the loaders yield device batches (`TensorBatches.to_device`); each split is placed once per
    device (`on_device`: moved there, or kept on the host pinned) and the copy is shared by all later loaders.
    """

    name: str = ""
    input_shape: tuple[int, ...] = ()
    num_classes: int = 0
    default_val_size: int = 0

    def __init__(
        self,
        root: str = "data",
        batch_size: int = 60,
        eval_batch_size: int = 1000,
        val_size: int | None = None,
        seed: int = 0,
        num_train: int | None = None,
    ) -> None:
        super().__init__()
        _positive_int("batch_size", batch_size)
        _positive_int("eval_batch_size", eval_batch_size)
        _positive_int("seed", seed, allow_zero=True)
        if val_size is not None:
            _positive_int("val_size", val_size, allow_zero=True)
        if num_train is not None:
            _positive_int("num_train", num_train)
        self.root = str(root)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.val_size = self.default_val_size if val_size is None else val_size
        self.seed = seed
        self.num_train = num_train
        self._data: dict[str, tuple[Tensor, Tensor]] | None = None
        self._train_loader: TensorBatches | None = None
        self._pending_train_state: dict[str, Any] | None = None
        self.on_device: bool | str = "auto"
        self._placed: dict[str, tuple[torch.device, tuple[Tensor, Tensor]]] = {}  # split → (device, its tensors)
        self.mean: Tensor | None = None
        self.std: Tensor | None = None

    def load_pool(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Fresh `(x_pool, y_pool, x_test, y_test)`: inputs `(N, *input_shape)` (any real dtype), integer labels."""
        raise NotImplementedError

    def train_transform(self) -> BatchTransform | None:
        """Seeded per-batch transform applied to training batches (augmentation); None by default."""
        return None

    def setup(self, stage: str | None = None) -> None:
        """Load, split and standardise the data (once)."""
        if self._data is not None:
            return
        x_pool, y_pool, x_test, y_test = self.load_pool()
        if self.val_size >= len(x_pool):
            raise ValueError(
                f"val_size={self.val_size} leaves no training data for {self.name} ({len(x_pool)} examples)"
            )
        order = torch.randperm(len(x_pool), generator=seeded_generator(self.seed, SPLIT_STREAM))
        val_idx, train_idx = order[: self.val_size], order[self.val_size :][: self.num_train]
        x_train = x_pool[train_idx].float()
        self.mean, self.std = channel_stats(x_train)
        splits = {
            "train": (x_train, y_pool[train_idx]),
            "val": (x_pool[val_idx].float(), y_pool[val_idx]),
            "test": (x_test.float(), y_test),
        }
        for split, (x, _) in splits.items():
            if tuple(x.shape[1:]) != tuple(self.input_shape):
                raise ValueError(
                    f"{self.name} {split} inputs have shape {tuple(x.shape[1:])}, expected {self.input_shape}"
                )
        self._data = {split: (x.sub_(self.mean).div_(self.std), y.long()) for split, (x, y) in splits.items()}

    def placed(self, split: str, device: torch.device) -> tuple[Tensor, Tensor]:
        """`split`'s `(x, y)` placed for batches on `device` (see `lth.data.memory.place`), once per device."""
        x, y = self._split(split)
        if device.type == "cpu":
            return x, y
        cached = self._placed.get(split)
        if cached is None or cached[0] != device:
            cached = (device, place((x, y), device, self.on_device))  # type: ignore[arg-type]
            self._placed[split] = cached
        return cached[1]

    def _loader(self, split: str, batch_size: int, **kwargs: Any) -> TensorBatches:
        return TensorBatches(*self._split(split), batch_size, on_device=self.on_device,
                             placer=functools.partial(self.placed, split), **kwargs)

    def _split(self, split: str) -> tuple[Tensor, Tensor]:
        self.setup()
        assert self._data is not None
        return self._data[split]

    @property
    def train(self) -> tuple[Tensor, Tensor]:
        """Standardised training `(x, y)`."""
        return self._split("train")

    @property
    def val(self) -> tuple[Tensor, Tensor]:
        """Standardised validation `(x, y)`."""
        return self._split("val")

    @property
    def test(self) -> tuple[Tensor, Tensor]:
        """Standardised test `(x, y)`."""
        return self._split("test")

    @property
    def steps_per_epoch(self) -> int:
        """Training batches per epoch."""
        return math.ceil(len(self.train[0]) / self.batch_size)

    def train_dataloader(self) -> TensorBatches:
        """Shuffled, seeded, resumable training batches (continuing a checkpoint's position if one was loaded)."""
        loader = self._loader("train", self.batch_size, shuffle=True, seed=self.seed, transform=self.train_transform(),
                              shard=True)
        if self._pending_train_state is not None:
            loader.load_state_dict(self._pending_train_state)
            self._pending_train_state = None
        self._train_loader = loader
        return loader

    def state_dict(self) -> dict[str, Any]:
        """Position of the training batches, saved by Lightning in every checkpoint."""
        return {} if self._train_loader is None else {"train_batches": self._train_loader.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Hand a checkpoint's training position to the next `train_dataloader()` of this Trainer call.

        Lightning restores the loader's own state only when it restarts inside an epoch; a checkpoint taken at an
        epoch end (e.g. `max_epochs` reached) would otherwise replay epoch 0. Lightning calls this hook on every
        `ckpt_path=` restore, so the epoch sequence continues in both cases.
        """
        self._pending_train_state = state_dict.get("train_batches")

    def teardown(self, stage: str) -> None:
        """Forget an unused checkpoint position (e.g. from `trainer.test(ckpt_path=...)`) so the next fit starts fresh."""
        self._pending_train_state = None

    def val_dataloader(self) -> TensorBatches:
        """Validation batches in fixed order."""
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> TensorBatches:
        """Test batches in fixed order."""
        return self._loader("test", self.eval_batch_size, shuffle=False)
