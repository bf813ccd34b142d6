"""Caches on the prunables' device: θ0 for `mask0=freeze_init` (copied once, not once per step) and the masks'
multiplication factors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lth.masks import MaskManager


def _manager() -> MaskManager:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    manager = MaskManager(model, mask0="freeze_init")
    manager.set_masks({n: torch.rand(p.shape) < 0.5 for n, p in zip(manager.names, manager.params)})
    return manager


def _count_to(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    original = torch.Tensor.to

    def counting(self: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        calls[0] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", counting)
    return calls


def test_freeze_init_apply_copies_theta0_once_and_keeps_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    manager = _manager()
    init = manager.weights("init")
    with torch.no_grad():
        for p in manager.params:
            p.add_(1.0)
    manager.apply()  # fills the cache
    calls = _count_to(monkeypatch)
    for _ in range(3):
        with torch.no_grad():
            for p in manager.params:
                p.add_(1.0)
        manager.apply()
    assert calls[0] == 0  # no per-step copy of θ0
    for n, p in zip(manager.names, manager.params):
        m = manager.masks[n]
        assert torch.equal(p.detach()[~m], init[n][~m])  # pruned weights are exactly θ0
        assert not torch.equal(p.detach()[m], init[n][m])


def test_the_cache_follows_a_new_snapshot_and_a_model_move() -> None:
    manager = _manager()
    manager.apply()
    first = manager._init_list()
    assert all(a is b for a, b in zip(first, manager._init_list()))
    with torch.no_grad():
        for p in manager.params:
            p.mul_(3.0)
    manager.snapshot("init")  # a new θ0 (e.g. restored from a checkpoint) replaces the cached one
    manager.apply()
    for n, p in zip(manager.names, manager.params):
        assert torch.equal(p.detach(), manager.weights("init")[n])
    # the prunables move to another device (emulated with "meta": CPU parameters cannot change device in place)
    manager.params = [nn.Parameter(p.detach().to("meta")) for p in manager.params]
    manager.apply()
    assert {v.device.type for v in manager._init_list()} == {"meta"}


def test_mask_factors_are_cached_in_the_weights_dtype_and_follow_an_in_place_edit() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    manager = MaskManager(model)
    masks = {n: torch.rand(m.shape) < 0.5 for n, m in manager.masks.items()}
    manager.set_masks(masks)
    first = manager.mask_factors()
    assert [f.dtype for f in first] == [torch.float32, torch.float32]
    assert all(torch.equal(f, manager.masks[n].float()) for f, n in zip(first, manager.names))
    assert manager.mask_factors() is first  # cached: no copy per step
    manager.masks["0.weight"][0, 0] = not bool(manager.masks["0.weight"][0, 0])  # edited in place
    second = manager.mask_factors()
    assert second is not first and torch.equal(second[0], manager.masks["0.weight"].float())
    for p in manager.params:
        p.grad = torch.ones_like(p)
    manager.mask_grads()
    assert all(torch.equal(p.grad, manager.masks[n].float()) for p, n in zip(manager.params, manager.names))


def test_mask_factors_are_uint8_views_beyond_the_float_copy_budget(monkeypatch) -> None:
    import lth.masks

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))  # 18 float32 weights: 72 bytes of copies
    manager = MaskManager(model)
    manager.set_masks({n: torch.rand(m.shape) < 0.5 for n, m in manager.masks.items()})
    monkeypatch.setattr(lth.masks, "FLOAT_FACTORS_MAX_BYTES", 72)
    manager._factors = ([], [])
    assert [f.dtype for f in manager.mask_factors()] == [torch.float32, torch.float32]  # at the budget: copies
    monkeypatch.setattr(lth.masks, "FLOAT_FACTORS_MAX_BYTES", 71)
    manager._factors = ([], [])
    views = manager.mask_factors()
    assert [f.dtype for f in views] == [torch.uint8, torch.uint8]
    assert all(f.data_ptr() == manager.masks[n].data_ptr() for f, n in zip(views, manager.names))  # no memory
    before = {n: p.detach().clone() for n, p in zip(manager.names, manager.params)}
    for p in manager.params:
        p.grad = torch.full_like(p, 2.5)
    manager.mask_grads()
    manager.apply()
    for n, p in zip(manager.names, manager.params):
        assert torch.equal(p.grad, 2.5 * manager.masks[n].float())
        assert torch.equal(p.detach(), before[n] * manager.masks[n])
