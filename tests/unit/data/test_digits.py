"""lth.data.digits: the fixed test split, seeded validation split and sizes."""

import torch

from lth.data import build_datamodule


def raw(dm, split):
    x, _ = getattr(dm, split)
    return (x * dm.std + dm.mean).round()


def test_test_split_is_the_same_for_every_seed_and_val_is_not():
    a, b = build_datamodule("digits", seed=0), build_datamodule("digits", seed=1)
    assert torch.equal(raw(a, "test"), raw(b, "test")) and torch.equal(a.test[1], b.test[1])
    assert not torch.equal(raw(a, "val"), raw(b, "val"))
    assert torch.equal(raw(a, "val"), raw(build_datamodule("digits", seed=0), "val"))


def test_sizes_follow_val_size_and_num_train():
    dm = build_datamodule("digits", val_size=437, num_train=100, batch_size=32)
    assert [len(dm.train[0]), len(dm.val[0]), len(dm.test[0])] == [100, 437, 360]
    assert dm.steps_per_epoch == 4  # ceil(100 / 32)
    assert dm.input_shape == (1, 8, 8) and dm.num_classes == 10
    assert raw(dm, "train").min() >= 0 and raw(dm, "train").max() <= 16  # pixel values 0..16
