"""Sanity checks of a saved mask: shuffle keeps per-layer counts at new positions, invert keeps the lowest scores,
reinit keeps the mask and asks for fresh weights."""

from __future__ import annotations

import pytest
import torch
import yaml

from lth.kinds.sanity import SANITY_CHECKS, SanityInputs, invert_masks, source_scores
from lth.record import RunFolder


def masks_of(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.rand(20, 10, generator=g) < 0.2, "b.weight": torch.rand(5, 20, generator=g) < 0.5}


def test_shuffle_keeps_per_layer_counts_and_moves_positions():
    masks = masks_of()
    out = SANITY_CHECKS["shuffle"].masks(SanityInputs(None, 0, masks, seed=7, names=list(masks)))
    for n, m in masks.items():
        assert int(out[n].sum()) == int(m.sum()) and out[n].shape == m.shape
        assert not torch.equal(out[n], m)
    again = SANITY_CHECKS["shuffle"].masks(SanityInputs(None, 0, masks, seed=7, names=list(masks)))
    assert all(torch.equal(again[n], out[n]) for n in masks)  # seeded
    assert SANITY_CHECKS["shuffle"].reset is None


def test_invert_keeps_the_lowest_scores_at_the_same_counts():
    scores = {"a.weight": torch.tensor([[5.0, 1.0, 3.0], [2.0, 4.0, 0.0]]), "b.weight": torch.tensor([1.0, 2.0, 3.0])}
    masks = {"a.weight": torch.tensor([[True, False, True], [False, True, False]]),  # keeps 5, 3, 4 (the highest)
             "b.weight": torch.tensor([False, False, True])}
    out = invert_masks(scores, masks)
    assert torch.equal(out["a.weight"], torch.tensor([[False, True, False], [True, False, True]]))  # 1, 2, 0
    assert torch.equal(out["b.weight"], torch.tensor([True, False, False]))
    # within a pool (the previous round's kept weights) only: the lowest of {5, 3, 4, 2} at 2 kept → 3, 2
    pool = {"a.weight": torch.tensor([[True, False, True], [True, True, False]]), "b.weight": torch.ones(3, dtype=bool)}
    two = {"a.weight": torch.tensor([[True, False, False], [False, True, False]]), "b.weight": masks["b.weight"]}
    assert torch.equal(invert_masks(scores, two, pool)["a.weight"],
                       torch.tensor([[False, False, True], [True, False, False]]))
    # ties: the lower position is kept
    assert torch.equal(invert_masks({"x": torch.zeros(4)}, {"x": torch.tensor([1, 1, 0, 0], dtype=bool)})["x"],
                       torch.tensor([True, True, False, False]))
    with pytest.raises(ValueError, match="keeps 3 weights, more than the 2"):
        invert_masks({"x": torch.zeros(3)}, {"x": torch.ones(3, dtype=bool)}, {"x": torch.tensor([1, 1, 0], dtype=bool)})


def test_reinit_keeps_the_mask_and_draws_fresh_weights():
    masks = masks_of()
    check = SANITY_CHECKS["reinit"]
    assert check.reset == "random_reinit"
    out = check.masks(SanityInputs(None, 0, masks, seed=1, names=list(masks)))
    assert all(torch.equal(out[n], masks[n]) for n in masks)


def test_invert_scores_saved_or_recomputed_from_an_imp_round(tmp_path):
    from lth import masks as masks_io
    from lth.kinds.at_init import scores_path

    folder = RunFolder(tmp_path / "pai")
    (folder.path / "round_00").mkdir(parents=True)
    saved = {"a.weight": torch.arange(6.0).reshape(2, 3)}
    torch.save(saved, scores_path(folder, 0))
    scores, pool = source_scores(folder, 0, ["a.weight"])
    assert torch.equal(scores["a.weight"], saved["a.weight"]) and pool is None

    imp = RunFolder(tmp_path / "imp")
    imp.path.mkdir()
    (imp.path / "config.yaml").write_text(yaml.safe_dump({"pruning": {"criterion": "large_final"}}))
    w0 = torch.tensor([[1.0, -2.0, 3.0]])
    wf = torch.tensor([[0.5, -4.0, 0.25]])
    torch.save({"snapshots": {"init": {"a.weight": w0}}}, imp.path / "snapshots.pt")
    torch.save({"a.weight": wf}, imp.path / "round_00" / "trained.pt") if (imp.path / "round_00").mkdir() is None \
        else None
    masks_io.save({"a.weight": torch.tensor([[True, True, False]])}, imp.path / "round_00" / "mask.pt")
    scores, pool = source_scores(imp, 1, ["a.weight"])
    assert torch.equal(scores["a.weight"], wf.abs()) and torch.equal(pool["a.weight"], torch.tensor([[True, True, False]]))
    with pytest.raises(ValueError, match="no saved scores"):
        source_scores(imp, 0, ["a.weight"])
