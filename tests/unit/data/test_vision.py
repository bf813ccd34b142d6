"""lth.data.vision: the IDX reader on hand-made bytes and the crop/flip augmentation's geometry."""

import gzip
import struct

import numpy as np
import pytest
import torch

from lth.data.vision import random_crop_flip, read_idx


def idx_bytes(array):
    return b"\0\0\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def test_read_idx_plain_and_gzipped(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a-idx3-ubyte").write_bytes(idx_bytes(array))
    (tmp_path / "a-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(array)))
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        assert np.array_equal(read_idx(tmp_path / name), array)


def test_read_idx_refuses_wrong_type_and_truncated_data(tmp_path):
    (tmp_path / "float").write_bytes(b"\0\0\x0d\x01" + struct.pack(">I", 1) + b"\0\0\0\0")
    with pytest.raises(ValueError, match="is not an unsigned-byte IDX file"):
        read_idx(tmp_path / "float")
    (tmp_path / "short").write_bytes(idx_bytes(np.zeros((2, 3), np.uint8))[:-1])
    with pytest.raises(ValueError, match=r"header says shape \(2, 3\) but holds 5 bytes"):
        read_idx(tmp_path / "short")


def test_crop_flip_without_padding_only_flips():
    x = torch.arange(2 * 1 * 3 * 4, dtype=torch.float32).reshape(2, 1, 3, 4).repeat(50, 1, 1, 1)
    out = random_crop_flip(x, torch.Generator().manual_seed(0), padding=0)
    flipped = torch.all(out == x.flip(-1), dim=(1, 2, 3))
    same = torch.all(out == x, dim=(1, 2, 3))
    assert torch.all(flipped ^ same)  # each sample is either kept or mirrored
    assert 20 < int(flipped.sum()) < 80


def test_crop_flip_shifts_within_the_padding_and_is_seeded():
    x = torch.ones(64, 3, 5, 5)
    out = random_crop_flip(x, torch.Generator().manual_seed(1), padding=2)
    assert out.shape == x.shape
    kept = out.sum(dim=(1, 2, 3)) / 3  # ones still inside the window
    assert kept.min() >= 9 and kept.max() == 25  # at worst a 3×3 corner of the 5×5 image stays
    again = random_crop_flip(x, torch.Generator().manual_seed(1), padding=2)
    assert torch.equal(out, again)
