"""lth.data.base: per-channel statistics, argument checks, the split of a hand-made pool."""

import pytest
import torch

from lth.data.base import DATASETS, TensorDataModule, build_datamodule, channel_stats


class Counting(TensorDataModule):
    """Pool of 10 samples (value i in both of 2 channels, label i % 3) and 4 test samples."""

    name = "counting"
    input_shape = (2, 1)
    num_classes = 3
    default_val_size = 3
    loads = 0

    def load_pool(self):
        Counting.loads += 1
        x = torch.arange(10.0).repeat_interleave(2).reshape(10, 2, 1)
        return x, torch.arange(10) % 3, torch.zeros(4, 2, 1), torch.zeros(4, dtype=torch.int32)


def test_channel_stats_by_hand():
    x = torch.tensor([[[1.0, 3.0], [5.0, 5.0]], [[1.0, 3.0], [5.0, 5.0]]])  # (N=2, C=2, L=2)
    mean, std = channel_stats(x)
    assert mean.shape == (1, 2, 1)
    assert mean.flatten().tolist() == [2.0, 5.0]
    assert std.flatten().tolist() == [1.0, 1.0]  # channel 0: population std 1; channel 1: constant → 1


def test_split_sizes_standardisation_and_loading_once():
    Counting.loads = 0
    dm = Counting(val_size=4, num_train=5, seed=3)
    (x, y), (xv, yv), (xt, yt) = dm.train, dm.val, dm.test
    assert (len(x), len(xv), len(xt)) == (5, 4, 4) and Counting.loads == 1
    assert yt.dtype == torch.int64
    raw_train = x * dm.std + dm.mean
    raw_val = xv * dm.std + dm.mean
    values = sorted(raw_train[:, 0, 0].round().tolist() + raw_val[:, 0, 0].round().tolist())
    assert len(set(values)) == 9 and set(values) <= set(range(10))  # disjoint: 4 + 5 of the 10, one left out
    assert torch.allclose(x.mean(dim=(0, 2)), torch.zeros(2), atol=1e-6)
    assert torch.equal(y, (raw_train[:, 0, 0].round().long() % 3))  # labels follow their samples
    assert dm.steps_per_epoch == 1  # 5 samples, batch 60


def test_the_split_is_a_function_of_the_seed():
    def val_values(seed):
        dm = Counting(seed=seed)
        return (dm.val[0] * dm.std + dm.mean)[:, 0, 0].round().tolist()

    assert val_values(0) == val_values(0)
    assert len({tuple(val_values(s)) for s in range(5)}) > 1


def test_wrong_input_shape_is_refused():
    class Wrong(Counting):
        input_shape = (1, 2)

    with pytest.raises(ValueError, match=r"counting train inputs have shape \(2, 1\), expected \(1, 2\)"):
        Wrong().setup()


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "batch_size must be a positive int, got 0"),
    ({"eval_batch_size": True}, "eval_batch_size must be a positive int, got True"),
    ({"seed": -1}, "seed must be a non-negative int, got -1"),
    ({"val_size": 2.5}, "val_size must be a non-negative int, got 2.5"),
])
def test_argument_checks(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Counting(**kwargs)
    Counting(val_size=0, seed=0)  # zero is allowed for these two


def test_build_datamodule_rejects_unknown_arguments():
    with pytest.raises(ValueError, match=r"unknown argument\(s\) colour for dataset 'digits'; valid: .*batch_size"):
        build_datamodule("digits", colour=1)
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; valid choices: cifar10, digits"):
        build_datamodule("imagenet")
    assert {"digits", "mnist1d", "mnist", "fashion_mnist", "cifar10"} <= set(DATASETS)
