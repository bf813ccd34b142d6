"""Batches on the training device: data placed once, indexed and augmented there, same batches as the host path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from lth.config import DataConfig
from lth.data import TensorBatches, build_datamodule
from lth.data import memory
from lth.data.memory import TRANSFORM_STREAM, place, seeded_generator
from lth.data.vision import random_crop_flip
from lth.lit import TicketModule

META = torch.device("meta")


def old_random_crop_flip(x: Tensor, generator: torch.Generator, padding: int = 4) -> Tensor:
    """The host-only augmentation this module replaced, kept as the reference."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator)
    flip = torch.rand(n, 1, generator=generator) < 0.5
    rows, cols = dy + torch.arange(h), dx + torch.arange(w)
    cols = torch.where(flip, cols.flip(1), cols)
    return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows[:, None, :, None],
                  cols[:, None, None, :]]


def old_epoch(x: Tensor, y: Tensor, bs: int, seed: int, epoch: int, rank: int, world: int) -> list[tuple[Tensor, Tensor]]:
    """The former batch sequence: whole global batch gathered and augmented on the host, then this rank's slice."""
    order = torch.randperm(len(x), generator=seeded_generator(seed, memory.PERMUTATION_STREAM, epoch))
    out = []
    for i in range(-(-len(x) // bs)):
        idx = order[i * bs : (i + 1) * bs]
        if world > 1 and len(idx) % world:
            idx = torch.cat([idx, order[: world - len(idx) % world]])
        xb = old_random_crop_flip(x[idx], seeded_generator(seed, TRANSFORM_STREAM, epoch, i))
        part = len(xb) // world
        out.append((xb[rank * part : (rank + 1) * part], y[idx][rank * part : (rank + 1) * part]))
    return out


def _data(n: int = 22) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 6, 6, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_batches_and_augmentation_equal_the_former_host_path(world: int) -> None:
    x, y = _data()
    for rank in range(world):
        loader = TensorBatches(x, y, 8, shuffle=True, seed=5, transform=random_crop_flip, shard=True)
        loader.replica = (rank, world)
        for epoch in range(2):
            got = list(loader)
            want = old_epoch(x, y, 8, 5, epoch, rank, world)
            assert len(got) == len(want)
            for (xb, yb), (xw, yw) in zip(got, want):
                assert torch.equal(xb, xw) and torch.equal(yb, yw)


def test_each_rank_augments_only_its_own_shard() -> None:
    x, y = _data(16)
    sizes: list[tuple[int, int, int]] = []

    def recording(xb: Tensor, generator: torch.Generator, *, offset: int = 0, total: int | None = None) -> Tensor:
        sizes.append((len(xb), offset, total or len(xb)))
        return random_crop_flip(xb, generator, offset=offset, total=total)

    recording.shardable = True  # type: ignore[attr-defined]
    loader = TensorBatches(x, y, 8, shuffle=True, seed=1, transform=recording, shard=True)
    loader.replica = (1, 2)
    list(loader)
    assert sizes == [(4, 4, 8), (4, 4, 8)]


def test_a_slice_of_the_crop_equals_the_crop_of_the_whole_batch() -> None:
    x, _ = _data(10)
    whole = random_crop_flip(x, torch.Generator().manual_seed(3))
    part = random_crop_flip(x[4:7], torch.Generator().manual_seed(3), offset=4, total=10)
    assert torch.equal(part, whole[4:7])
    with pytest.raises(ValueError, match="not within"):
        random_crop_flip(x[4:7], torch.Generator().manual_seed(3), offset=8, total=10)


def test_on_device_moves_the_data_once_and_yields_device_batches() -> None:
    x, y = _data()
    loader = TensorBatches(x, y, 8, shuffle=True, seed=0, transform=random_crop_flip, device=META, on_device=True)
    assert loader.x.device == META and loader.y.device == META  # the data stays where it was put
    batches = list(loader)
    assert [xb.device for xb, _ in batches] == [META] * 3 and [yb.device for _, yb in batches] == [META] * 3
    assert [tuple(xb.shape) for xb, _ in batches] == [(8, 3, 6, 6), (8, 3, 6, 6), (6, 3, 6, 6)]
    assert x.device.type == "cpu"  # the caller's tensors are untouched


def test_off_device_keeps_the_data_on_the_host_and_still_yields_device_batches() -> None:
    x, y = _data()
    loader = TensorBatches(x, y, 8, shuffle=False, device=META, on_device=False)
    assert loader.x is x and loader.y is y
    assert {xb.device for xb, _ in loader} == {META}


def test_the_host_copy_is_pinned_when_cuda_is_available(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _data()
    pinned: list[Tensor] = []

    def fake_pin(self: Tensor) -> Tensor:
        pinned.append(self)
        return self

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    assert place((x, y), META, on_device=False) == (x, y)
    assert [t is u for t, u in zip(pinned, (x, y))] == [True, True]
    pinned.clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    place((x, y), META, on_device=False)
    assert pinned == []


def test_auto_moves_what_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _data()
    monkeypatch.setattr(memory, "fits_on_device", lambda nbytes, device: False)
    assert place((x, y), META, "auto")[0].device.type == "cpu"
    monkeypatch.setattr(memory, "fits_on_device", lambda nbytes, device: True)
    assert place((x, y), META, "auto")[0].device == META
    assert place((x, y), "cpu", True) == (x, y)  # already there: no copy


def test_the_datamodule_places_each_split_once_and_its_loaders_share_it() -> None:
    dm = build_datamodule("digits", batch_size=16, on_device=True)
    first = dm.train_dataloader().to_device(META)
    second = dm.train_dataloader().to_device(META)
    assert first.x.device == META and first.x is second.x  # one device copy for every round's loader
    assert dm.train[0].device.type == "cpu"  # the module's own tensors stay on the host
    val = dm.val_dataloader().to_device(META)
    assert val.x.device == META and next(iter(val))[0].device == META


def test_on_device_option_from_the_config_and_checked() -> None:
    assert "on_device" not in DataConfig().options(0)
    assert DataConfig(on_device=False).options(0)["on_device"] is False
    assert build_datamodule("digits", on_device="false").on_device is False
    with pytest.raises(ValueError, match="on_device"):
        build_datamodule("digits", on_device="sometimes")


def test_ticket_module_points_the_trainers_loaders_at_its_device() -> None:
    dm = build_datamodule("digits", batch_size=16, on_device=True)
    loaders = [dm.val_dataloader(), dm.test_dataloader()]
    module = TicketModule(torch.nn.Linear(64, 10), lambda p: torch.optim.SGD(p, lr=0.1), 10)
    module._place_batches(loaders)  # on the CPU: nothing to do
    assert all(lo.device is None for lo in loaders)
    module._device = META
    module._place_batches(loaders)
    assert all(lo.device == META and lo.x.device == META for lo in loaders)
