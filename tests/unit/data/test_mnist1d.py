"""lth.data.mnist1d: generation arguments, the cache name, atomic cache writes (no generation here)."""

import numpy as np
import pytest

from lth.data.mnist1d import args_hash, mnist1d_args, save_npz_atomic


def test_args_drop_the_download_url_and_reject_unknown_keys():
    args = mnist1d_args()
    assert "url" not in args and "num_samples" in args
    assert mnist1d_args({"num_samples": 100})["num_samples"] == 100
    with pytest.raises(ValueError, match="unknown mnist1d dataset_args colour, size; valid: "):
        mnist1d_args({"size": 1, "colour": 2})


def test_args_hash_is_stable_order_free_and_sensitive():
    args = mnist1d_args()
    shuffled = dict(reversed(list(args.items())))
    assert args_hash(args) == args_hash(shuffled) and len(args_hash(args)) == 12
    assert args_hash(args) != args_hash(mnist1d_args({"seed": args["seed"] + 1}))


def test_save_npz_atomic(tmp_path, monkeypatch):
    path = tmp_path / "cache" / "m.npz"
    save_npz_atomic(path, {"x": np.arange(6).reshape(2, 3), "y": np.array([1, 0])})
    with np.load(path) as data:
        assert data["x"].tolist() == [[0, 1, 2], [3, 4, 5]] and data["y"].tolist() == [1, 0]
    assert [p.name for p in path.parent.iterdir()] == ["m.npz"]
    import os

    def full(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError, match="disk full"):
        save_npz_atomic(path, {"x": np.zeros(3)})
    assert [p.name for p in path.parent.iterdir()] == ["m.npz"]  # the temp file is gone, the old file kept
