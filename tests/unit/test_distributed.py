"""lth.distributed without a process group: world sizes, spawn strategies, fingerprints, agreement checks."""

import pytest
import torch
from torch import nn

from lth import distributed as dist
from lth.masks import MaskManager


@pytest.mark.parametrize("devices, num_nodes, expected", [
    (1, 1, 1), (3, 1, 3), (2, 4, 8),
    ([0, 1], 1, 2), ((0, 1, 2, 3), 2, 8),
    ("2", 1, 2), (" 4 ", 1, 4), ("0,1", 1, 2), ("0,1,", 3, 6), ("0, 2 ,5", 1, 3),
    ("auto", 1, 1), ("auto", 3, 3), (-1, 1, 1), (0, 1, 1), (2, 0, 2),
])
def test_world_size(devices, num_nodes, expected):
    assert dist.world_size(devices, num_nodes) == expected


def test_spawn_strategies():
    assert [dist.is_spawn(s) for s in ("ddp_spawn", "ddp_fork", "ddp_notebook", "ddp", "auto", None)] == [
        True, True, True, False, False, False]
    assert dist.strategy_for("ddp") == "ddp" and dist.strategy_for("auto") == "auto"
    spawn = dist.strategy_for("ddp_fork")
    assert isinstance(spawn, dist.SpawnStrategy) and spawn._start_method == "fork"


def test_mask_digest_sees_every_flag_and_the_shape():
    g = torch.Generator().manual_seed(0)
    masks = {"a": torch.rand(4, 5, generator=g) > 0.5, "b": torch.ones(3, dtype=torch.bool)}
    digest = dist.mask_digest(masks)
    assert len(digest) == 16 and digest == dist.mask_digest({n: m.clone() for n, m in masks.items()})
    flipped = {**masks, "a": masks["a"].clone()}
    flipped["a"][3, 4] = ~flipped["a"][3, 4]
    reshaped = {**masks, "a": masks["a"].reshape(5, 4)}
    renamed = {"c" if n == "b" else n: m for n, m in masks.items()}
    assert len({digest, dist.mask_digest(flipped), dist.mask_digest(reshaped), dist.mask_digest(renamed)}) == 4


def test_weights_digest_changes_with_any_weight():
    torch.manual_seed(0)
    manager = MaskManager(nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2)))
    before = dist.weights_digest(manager)
    assert before == dist.weights_digest(manager)
    with torch.no_grad():
        manager.params[1][0, 0] += 1e-6
    assert dist.weights_digest(manager) != before


def test_agree_without_a_process_group_returns_the_masks_unchanged():
    masks = {"w": torch.tensor([True, False])}
    assert dist.agree(masks) is masks


def test_is_writer_with_one_process_ignores_the_rank_variables(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    assert dist.is_writer("ddp", 1) is True
    assert dist.is_writer("ddp", "auto") is True
    assert dist.is_writer("ddp", [0, 1]) is False


def test_mask_agreement_state_round_trips():
    torch.manual_seed(0)
    callback = dist.MaskAgreement(MaskManager(nn.Sequential(nn.Linear(3, 2))))
    callback.digests = {"fit_start": [{"masks": "m", "weights": "w"}]}
    other = dist.MaskAgreement(callback.manager)
    other.load_state_dict(callback.state_dict())
    assert other.digests == callback.digests
    other.load_state_dict({})
    assert other.digests == {}
