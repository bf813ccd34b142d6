"""lth.data.memory: seeded generators and TensorBatches lengths, order, argument checks, sharding checks."""

import pytest
import torch

from lth.data.memory import TensorBatches, seeded_generator


def draw(*keys):
    return torch.randint(0, 2**30, (4,), generator=seeded_generator(*keys)).tolist()


def test_seeded_generator_is_a_pure_function_of_its_keys():
    assert draw(1, 2) == draw(1, 2)
    assert len({tuple(draw(*k)) for k in [(1,), (1, 0), (0, 1), (1, 2), (2, 1)]}) == 5  # trailing 0 matters too
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    draw(3)
    assert torch.equal(torch.rand(1), before)  # the global RNG is untouched


def test_lengths_and_last_batch():
    x, y = torch.arange(10.0), torch.arange(10)
    assert len(TensorBatches(x, y, 4, shuffle=False)) == 3
    assert len(TensorBatches(x, y, 4, shuffle=False, drop_last=True)) == 2
    batches = [yb.tolist() for _, yb in TensorBatches(x, y, 4, shuffle=False)]
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [len(yb) for _, yb in TensorBatches(x, y, 4, shuffle=True, drop_last=True)] == [4, 4]


def test_shuffled_epochs_are_permutations_and_differ():
    loader = TensorBatches(torch.zeros(12), torch.arange(12), 5, shuffle=True, seed=7)
    first = torch.cat([yb for _, yb in loader])
    second = torch.cat([yb for _, yb in loader])
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(12))
    assert not torch.equal(first, second) and torch.equal(first, loader.order(0))
    assert loader.epoch == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"y": torch.arange(3)}, "x and y must have the same length, got 4 and 3"),
    ({"batch_size": 0}, "batch_size must be a positive int, got 0"),
    ({"seed": -2}, "seed must be a non-negative int, got -2"),
])
def test_argument_checks(kwargs, message):
    args = {"x": torch.zeros(4), "y": torch.arange(4), "batch_size": 2, "shuffle": True, **kwargs}
    with pytest.raises(ValueError, match=message):
        TensorBatches(**args)


def test_ranks():
    loader = TensorBatches(torch.zeros(8), torch.arange(8), 4, shuffle=False, shard=True)
    assert loader.ranks() == (0, 1)  # no process group
    loader.replica = (1, 2)
    assert loader.ranks() == (1, 2)
    assert [yb.tolist() for _, yb in loader] == [[2, 3], [6, 7]]
    loader.replica = (2, 2)
    with pytest.raises(ValueError, match=r"rank 2 is not in \[0, 2\)"):
        loader.ranks()
    unsharded = TensorBatches(torch.zeros(8), torch.arange(8), 4, shuffle=False)
    unsharded.replica = (1, 2)
    assert unsharded.ranks() == (0, 1)


def test_extras_travel_with_their_examples_in_every_order_and_shard():
    x = torch.arange(10.0) * 10
    y = torch.arange(10)
    extra = torch.arange(10.0).unsqueeze(1) + 0.5  # one row per example: its index + 0.5
    for shuffle, replica in ((False, None), (True, None), (True, (1, 2))):
        loader = TensorBatches(x, y, 4, shuffle=shuffle, seed=7, shard=replica is not None)
        plain = TensorBatches(x, y, 4, shuffle=shuffle, seed=7, shard=replica is not None)
        loader.replica = plain.replica = replica
        loader.extra = extra
        batches = list(loader)
        assert all(len(b) == 3 for b in batches)
        for (xb, yb, eb), (xp, yp) in zip(batches, plain):
            assert torch.equal(xb, xp) and torch.equal(yb, yp)  # the same order: extras draw no random numbers
            assert eb[:, 0].tolist() == [i + 0.5 for i in yb.tolist()]
    loader = TensorBatches(x, y, 4, shuffle=True)
    loader.extra = extra[:3]
    with pytest.raises(ValueError, match="extra has 3 rows for 10 examples"):
        next(iter(loader))
