"""scikit-learn's 8x8 handwritten digits (1797 images, bundled with the package: no download)."""

from __future__ import annotations

import torch
from torch import Tensor

from lth.data.base import DATASETS, TensorDataModule
from lth.data.memory import SPLIT_STREAM, seeded_generator

TEST_SPLIT_SEED = 0


@DATASETS.register("digits")
class Digits(TensorDataModule):
    """sklearn digits (pixel values 0..16): a fixed test split of 360 images (the same for every `seed`, so all seeds
    are scored on the same images), then `val_size` (default 180) held out by `seed`, 1257 left for training."""

    name = "digits"
    input_shape = (1, 8, 8)
    num_classes = 10
    default_val_size = 180
    test_size = 360

    def load_pool(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.from_numpy(digits.images).float().unsqueeze(1)
        y = torch.from_numpy(digits.target).long()
        order = torch.randperm(len(x), generator=seeded_generator(TEST_SPLIT_SEED, SPLIT_STREAM, 1))
        test, pool = order[: self.test_size], order[self.test_size :]
        return x[pool], y[pool], x[test], y[test]
