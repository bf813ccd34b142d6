"""A lineage's pruning step: criterion scores or unit norms, exact selection, a warning on layer collapse."""

from types import SimpleNamespace

import pytest
import torch

from lth.pruning.step import prune_step


def settings(**kw):
    return SimpleNamespace(**{"scope": "layerwise", "criterion": "large_final", "structured_norm": "l1", **kw})


def test_magnitude_step_removes_the_smallest_kept_weights():
    w = {"a": torch.tensor([0.1, -0.5, 0.3, -0.05]), "b": torch.tensor([[1.0, -2.0], [0.5, 0.0]])}
    masks = {"a": torch.tensor([True, True, True, False]), "b": torch.ones(2, 2, dtype=torch.bool)}
    new = prune_step(1, settings(), 0.5, {}, None, masks, w, w, torch.Generator().manual_seed(0))
    # a: 3 kept, round(1.5)=2 removed → |−0.5| stays; b: 4 kept, 2 removed → 1.0 and −2.0 stay
    assert new["a"].tolist() == [False, True, False, False]
    assert new["b"].tolist() == [[True, True], [False, False]]


def test_an_emptied_layer_warns():
    w = {"a": torch.tensor([0.1, 0.2]), "b": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    masks = {"a": torch.tensor([True, False]), "b": torch.ones(4, dtype=torch.bool)}
    with pytest.warns(RuntimeWarning, match=r"round 3: layers \['a'\] keep no weights"):
        new = prune_step(3, settings(), 0.5, {"a": 0.9}, None, masks, w, w, torch.Generator().manual_seed(0))
    assert not new["a"].any() and int(new["b"].sum()) == 2
