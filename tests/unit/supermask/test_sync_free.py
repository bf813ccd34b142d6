"""Edge-popup masks are computed without host syncs and equal the pruning selection's exact top-k."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from lth.pruning.select import remove_lowest
from lth.supermask import to_supermask
from lth.supermask.topk import top_mask


def reference_top_mask(scores: torch.Tensor, kept: int) -> torch.Tensor:
    """The selection rule of `lth.pruning.select` (remove the n − kept lowest, lower index first)."""
    return remove_lowest([scores.reshape(-1)], scores.numel() - kept)[0].reshape(scores.shape)


def _refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("host sync in the forward")


@contextlib.contextmanager
def no_host_syncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make every tensor → host value conversion (and data-dependent `nonzero`) raise inside the block."""
    with monkeypatch.context() as m:
        for name in ("item", "tolist", "__int__", "__bool__", "__float__", "__index__", "nonzero"):
            m.setattr(torch.Tensor, name, _refuse)
        m.setattr(torch, "nonzero", _refuse)
        m.setattr(torch, "masked_select", _refuse)
        yield


@pytest.mark.parametrize("seed", range(6))
def test_top_mask_equals_the_pruning_selection_on_scores_with_many_ties(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for shape in [(1,), (7,), (13, 11), (4, 3, 3, 3)]:
        n = torch.Size(shape).numel()
        scores = torch.randint(0, 4, shape, generator=g).float()  # a handful of values: ties everywhere
        for kept in {0, 1, n // 3, n // 2, n - 1, n}:
            got = top_mask(scores, kept)
            assert got.dtype == torch.bool and int(got.sum()) == kept
            assert torch.equal(got, reference_top_mask(scores, kept)), (shape, kept)


def test_edge_popup_forward_and_backward_never_sync_with_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    model = to_supermask(nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)), "edge_popup",
                         k=0.3, seed=0)
    for layer in (model[0], model[2]):  # ties in the scores, so the tie rule is exercised too
        layer.scores.data.copy_(torch.randint(-3, 4, layer.scores.shape).float())
    x = torch.randn(3, 2, 8, 8)
    expected = [reference_top_mask(layer.scores.detach().abs(), round(0.3 * layer.scores.numel()))
                for layer in (model[0], model[2])]
    with no_host_syncs(monkeypatch):
        out = model(x)
        out.sum().backward()
        masks = [layer.hard_mask() for layer in (model[0], model[2])]
    for got, want in zip(masks, expected):
        assert torch.equal(got, want)
    assert model[0].scores.grad is not None


def test_the_guard_catches_a_host_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    with no_host_syncs(monkeypatch), pytest.raises(AssertionError, match="host sync"):
        reference_top_mask(torch.tensor([1.0, 1.0, 2.0]), 2)
