"""MNIST-1D (Greydanus & Kobak), generated offline and cached as .npz."""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lth.data.base import DATASETS, TensorDataModule

_NOT_GENERATION_ARGS = ("url",)  # where the package would download from: irrelevant to generated data


def mnist1d_args(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The package's default generation arguments updated with `overrides` (unknown keys rejected)."""
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    unknown = sorted(set(overrides or {}) - set(args))
    if unknown:
        raise ValueError(f"unknown mnist1d dataset_args {', '.join(unknown)}; valid: {', '.join(sorted(args))}")
    args.update(overrides or {})
    return {k: v for k, v in args.items() if k not in _NOT_GENERATION_ARGS}


def args_hash(args: dict[str, Any]) -> str:
    """Short stable hash of generation arguments (names the cache file)."""
    return hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:12]


def generate(args: dict[str, Any]) -> dict[str, np.ndarray]:
    """Run `mnist1d.data.make_dataset` offline, leaving the global `random`/`numpy` RNG states untouched."""
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(ObjectView(dict(args)))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write `arrays` to `path` via a temporary file in the same folder and `os.replace` (readers never see half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@DATASETS.register("mnist1d")
class MNIST1D(TensorDataModule):
    """MNIST-1D: 4000 train / 1000 test sequences of length 40, 10 classes; 500 of train held out for validation.

    Generated with `mnist1d.data.make_dataset` (never downloaded) and cached in
    `<root>/mnist1d/mnist1d_<hash of args>.npz`. `dataset_args` overrides the package's generation arguments.
    """

    name = "mnist1d"
    input_shape = (1, 40)
    num_classes = 10
    default_val_size = 500

    def __init__(
        self,
        root: str = "data",
        batch_size: int = 60,
        eval_batch_size: int = 1000,
        val_size: int | None = None,
        seed: int = 0,
        num_train: int | None = None,
        dataset_args: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(root, batch_size, eval_batch_size, val_size, seed, num_train)
        self.dataset_args = dict(dataset_args or {})
        self.input_shape = (1, int(self.dataset_args.get("final_seq_length", 40)))

    @property
    def cache_path(self) -> Path:
        """Where the generated arrays are cached."""
        return Path(self.root) / "mnist1d" / f"mnist1d_{args_hash(mnist1d_args(self.dataset_args))}.npz"

    def prepare_data(self) -> None:
        """Generate and cache the arrays if no cache exists."""
        self._arrays()

    def _arrays(self) -> dict[str, np.ndarray]:
        path = self.cache_path
        if path.exists():
            with np.load(path) as f:
                return {k: f[k] for k in f.files}
        arrays = generate(mnist1d_args(self.dataset_args))
        save_npz_atomic(path, arrays)
        return arrays

    def load_pool(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        a = self._arrays()
        x, x_test = (torch.from_numpy(a[k]).float().unsqueeze(1) for k in ("x", "x_test"))
        return x, torch.from_numpy(a["y"]).long(), x_test, torch.from_numpy(a["y_test"]).long()
