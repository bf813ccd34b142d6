"""Pruning criteria on hand-computed tensors."""

import pytest
import torch

from lth.pruning import CRITERIA, score, select
from lth.pruning.criteria import large_init_large_final

WI = torch.tensor([1.0, -2.0, 3.0, -0.5])
WF = torch.tensor([-2.0, 1.0, 0.5, 3.0])


def test_registered_names():
    assert set(CRITERIA) == {
        "large_final", "small_final", "large_init", "small_init", "large_init_large_final", "small_init_small_final",
        "magnitude_increase", "movement", "random", "large_final_same_sign",
    }


@pytest.mark.parametrize(
    "name, expected",
    [
        ("large_final", [2.0, 1.0, 0.5, 3.0]),
        ("small_final", [-2.0, -1.0, -0.5, -3.0]),
        ("large_init", [1.0, 2.0, 3.0, 0.5]),
        ("small_init", [-1.0, -2.0, -3.0, -0.5]),
        ("magnitude_increase", [1.0, -1.0, -2.5, 2.5]),
        ("movement", [3.0, 3.0, 2.5, 3.5]),
        # |wi| ranks [2,3,4,1], |wf| ranks [3,2,1,4] → min [2,2,1,1] / 4
        ("large_init_large_final", [0.5, 0.5, 0.25, 0.25]),
        # −|wi| ranks [3,2,1,4], −|wf| ranks [2,3,4,1] → min [2,2,1,1] / 4
        ("small_init_small_final", [0.5, 0.5, 0.25, 0.25]),
        # signs flipped at 0, 1, 3 → −1/(1+|wf|); same sign at 2 → |wf|
        ("large_final_same_sign", [-1 / 3, -0.5, 0.5, -0.25]),
    ],
)
def test_criterion_values(name, expected):
    out = CRITERIA[name](WI, WF)
    assert out.shape == WI.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor(expected))


def test_same_sign_orders_flipped_below_all_same_sign():
    wi = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0, 0.0])
    wf = torch.tensor([0.01, 5.0, 2.0, 0.0, -0.3, -0.2])
    # same sign: 0 (0.01), 2 (2.0), 3 (wf 0 is no flip), 4 (0.3), 5 (wi 0 is no flip, 0.2); flipped: 1 (|wf| 5)
    out = CRITERIA["large_final_same_sign"](wi, wf)
    assert torch.argsort(out, descending=True).tolist() == [2, 4, 5, 0, 3, 1]
    assert out[1] == pytest.approx(-1 / 6)


def test_same_sign_select_drops_flipped_first():
    masks = {"w": torch.ones(4, dtype=torch.bool)}
    scores = score("large_final_same_sign", {"w": WI}, {"w": WF})
    # remove 3 of 4: the three flipped weights go, the same-sign one (index 2, smallest |wf|) stays
    assert select(scores, masks, 0.75)["w"].tolist() == [False, False, True, False]


def test_large_init_large_final_ten_weights():
    wi = torch.tensor([0.1, -0.9, 0.5, -0.3, 0.7, 0.2, -1.0, 0.4, -0.6, 0.8])
    wf = torch.tensor([-0.95, 0.15, 0.85, -0.25, 0.65, 0.75, -0.55, 0.35, 0.45, -0.05])
    # rank|wi| = [1,9,5,3,7,2,10,4,6,8], rank|wf| = [10,2,9,3,7,8,6,4,5,1], min = [1,2,5,3,7,2,6,4,5,1]
    s = score("large_init_large_final", {"w": wi}, {"w": wf})
    torch.testing.assert_close(s["w"], torch.tensor([1, 2, 5, 3, 7, 2, 6, 4, 5, 1]) / 10)
    masks = {"w": torch.ones(10, dtype=torch.bool)}
    # keep 4: both ranks >= 5 (top 60% by |wi| and by |wf|) holds for exactly 2, 4, 6, 8
    assert torch.nonzero(select(s, masks, 0.6)["w"]).flatten().tolist() == [2, 4, 6, 8]
    # keep 2: both ranks >= 6 → 4 (7, 7) and 6 (10, 6)
    assert torch.nonzero(select(s, masks, 0.8)["w"]).flatten().tolist() == [4, 6]


def test_small_init_small_final_ten_weights():
    wi = torch.tensor([0.1, -0.9, 0.5, -0.3, 0.7, 0.2, -1.0, 0.4, -0.6, 0.8])
    wf = torch.tensor([-0.95, 0.15, 0.85, -0.25, 0.65, 0.75, -0.55, 0.35, 0.45, -0.05])
    # rank−|wi| = 11 − rank|wi| = [10,2,6,8,4,9,1,7,5,3]; rank−|wf| = [1,9,2,8,4,3,5,7,6,10]
    # min = [1,2,2,8,4,3,1,7,5,3]: keep 3 → 3 (8,8), 7 (7,7), 8 (5,6)
    s = score("small_init_small_final", {"w": wi}, {"w": wf})
    torch.testing.assert_close(s["w"], torch.tensor([1, 2, 2, 8, 4, 3, 1, 7, 5, 3]) / 10)
    masks = {"w": torch.ones(10, dtype=torch.bool)}
    assert torch.nonzero(select(s, masks, 0.7)["w"]).flatten().tolist() == [3, 7, 8]


def test_rank_criteria_rank_among_kept_weights():
    mask = torch.tensor([True, True, False, True])
    # kept 0, 1, 3: |wi| [1, 2, 0.5] → ranks [2, 3, 1]; |wf| [2, 1, 3] → [2, 1, 3]; min / 3
    out = large_init_large_final(WI, WF, mask=mask)
    torch.testing.assert_close(out, torch.tensor([2 / 3, 1 / 3, 0.0, 1 / 3]))
    via_score = score("large_init_large_final", {"w": WI}, {"w": WF}, masks={"w": mask})
    torch.testing.assert_close(via_score["w"], out)


def test_rank_ties_lower_index_ranks_lower():
    wi = torch.tensor([1.0, 1.0, 1.0])
    out = CRITERIA["large_init_large_final"](wi, wi.clone())
    torch.testing.assert_close(out, torch.tensor([1.0, 2.0, 3.0]) / 3)


def test_random_reproducible_and_uniform():
    w = {"a": torch.zeros(3, 4), "b": torch.zeros(5)}
    s1 = score("random", w, w, generator=torch.Generator().manual_seed(7))
    s2 = score("random", w, w, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    expected_a, expected_b = torch.rand(3, 4, generator=g), torch.rand(5, generator=g)
    torch.testing.assert_close(s1["a"], expected_a)
    torch.testing.assert_close(s1["b"], expected_b)
    torch.testing.assert_close(s1["a"], s2["a"])
    s3 = score("random", w, w, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(s1["a"], s3["a"])
    assert float(s1["a"].min()) >= 0.0 and float(s1["a"].max()) < 1.0


def test_score_all_layers_and_inputs_untouched():
    wi = {"fc1.weight": WI.clone(), "fc2.weight": WI.reshape(2, 2).clone()}
    wf = {"fc1.weight": WF.clone(), "fc2.weight": WF.reshape(2, 2).clone()}
    out = score("movement", wi, wf)
    assert list(out) == ["fc1.weight", "fc2.weight"]
    torch.testing.assert_close(out["fc2.weight"], torch.tensor([[3.0, 3.0], [2.5, 3.5]]))
    assert torch.equal(wi["fc1.weight"], WI) and torch.equal(wf["fc1.weight"], WF)
    params = {"w": torch.nn.Parameter(WF.clone())}
    assert not score("large_final", params, params)["w"].requires_grad


def test_score_errors():
    w = {"a": WI}
    with pytest.raises(ValueError, match="unknown criterion 'biggest'.*large_final.*movement"):
        score("biggest", w, w)
    with pytest.raises(ValueError, match="different layers"):
        score("large_final", w, {"b": WF})
    with pytest.raises(ValueError, match="layer 'a'.*shape"):
        score("large_final", w, {"a": WF.reshape(2, 2)})
    with pytest.raises(ValueError, match=r"mask 'a' has shape \(2, 2\), the parameter has \(4,\)"):
        score("large_final", w, w, masks={"a": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"missing \['a'\], unexpected \['b'\]"):
        score("large_final", w, w, masks={"b": torch.ones(4, dtype=torch.bool)})
