"""Criteria at initialisation: SNIP, GraSP and SynFlow against hand-computed values, finite differences and closed
forms; the per-tensor criteria applied to θ0; one list of every criterion name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lth.pruning import ALL_CRITERIA, INIT_CRITERIA, at_init_criterion
from lth.pruning.at_init import GraSP, Snip, SynFlow, TensorCriterion, take_batches

NAMES = ["0.weight", "1.weight"]


def chain(w1, w2, dtype=torch.float64) -> nn.Sequential:
    """x → W1 x → W2 (W1 x): two bias-free Linear layers with the given weights."""
    w1, w2 = torch.tensor(w1, dtype=dtype), torch.tensor(w2, dtype=dtype)
    net = nn.Sequential(nn.Linear(w1.shape[1], w1.shape[0], bias=False), nn.Linear(w2.shape[1], w2.shape[0], bias=False))
    with torch.no_grad():
        net[0].weight.copy_(w1)
        net[1].weight.copy_(w2)
    return net.to(dtype)


def ones(net):
    return {n: torch.ones_like(p, dtype=torch.bool) for n, p in net.named_parameters()}


def test_snip_on_one_batch_by_hand():
    # x = (1, 2), W1 = I, W2 = [[2, -1], [4, -2]] → logits (0, 0), p = (½, ½), y = 0: δ = p − e0 = (−½, ½)
    # ∂L/∂W2 = δ hᵀ = [[−½, −1], [½, 1]];  ∂L/∂h = W2ᵀ δ = (1, −½);  ∂L/∂W1 = (1, −½)ᵀ (1, 2) = [[1, 2], [−½, −1]]
    net = chain([[1.0, 0.0], [0.0, 1.0]], [[2.0, -1.0], [4.0, -2.0]])
    batch = [(torch.tensor([[1.0, 2.0]], dtype=torch.float64), torch.tensor([0]))]
    s = Snip().scores(net, NAMES, ones(net), batch)
    assert torch.equal(s["0.weight"], torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64))
    assert torch.equal(s["1.weight"], torch.tensor([[1.0, 1.0], [2.0, 2.0]], dtype=torch.float64))
    # the model itself is untouched (scored on a copy)
    assert net[0].weight.grad is None and torch.equal(net[1].weight, torch.tensor([[2.0, -1.0], [4.0, -2.0]],
                                                                                   dtype=torch.float64))
    # a pruned weight scores 0 and the rest is scored with it at 0
    masks = ones(net)
    masks["1.weight"] = torch.tensor([[True, True], [False, True]])
    s2 = Snip().scores(net, NAMES, masks, batch)
    assert s2["1.weight"][1, 0] == 0


def test_snip_prunes_the_lowest_globally_with_exact_counts():
    net = chain([[1.0, 0.0], [0.0, 1.0]], [[2.0, -1.0], [4.0, -2.0]])
    batch = [(torch.tensor([[1.0, 2.0]], dtype=torch.float64), torch.tensor([0]))]
    masks, _scores = Snip().prune(net, NAMES, ones(net), batch, fraction=0.5, scope="global")
    # scores W1 [[1,0],[0,1]], W2 [[1,1],[2,2]]: the 4 lowest (ties: lower position first) are W1's 0s and 1s…
    assert sum(int(m.sum()) for m in masks.values()) == 4
    assert masks["1.weight"].all() and not masks["0.weight"].any()


def _grad(net, batches, temperature):
    loss = sum(nn.functional.cross_entropy(net(x) / temperature, y) for x, y in batches) / len(batches)
    return torch.autograd.grad(loss, [net[0].weight, net[2].weight])


def test_grasp_hessian_gradient_product_matches_finite_differences():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    names = ["0.weight", "2.weight"]
    batches = [(torch.randn(5, 3, dtype=torch.float64), torch.randint(0, 3, (5,))) for _ in range(2)]
    t = 2.0
    g, hg = GraSP(temperature=t).hessian_gradient(net, names, ones(net), batches)
    v = [g[n] for n in names]
    eps = 1e-5
    params = [net[0].weight, net[2].weight]
    with torch.no_grad():
        for p, d in zip(params, v):
            p.add_(eps * d)
    plus = _grad(net, batches, t)
    with torch.no_grad():
        for p, d in zip(params, v):
            p.sub_(2 * eps * d)
    minus = _grad(net, batches, t)
    with torch.no_grad():
        for p, d in zip(params, v):
            p.add_(eps * d)
    for n, a, b in zip(names, plus, minus):
        fd = (a - b) / (2 * eps)
        assert torch.allclose(hg[n], fd, rtol=1e-5, atol=1e-9), n
    # keep-score θ ⊙ Hg: GraSP's S = −θ ⊙ Hg, whose highest values are removed
    s = GraSP(temperature=t).scores(net, names, {n: torch.ones_like(p, dtype=torch.bool) for n, p in
                                                 zip(names, params)}, batches)
    for n, p in zip(names, params):
        assert torch.allclose(s[n], p.detach() * hg[n])


W1 = [[1.0, -2.0, 3.0], [0.5, 1.0, -1.0]]
W2 = [[2.0, -1.0], [1.0, 3.0]]


def test_synflow_r_and_scores_in_closed_form():
    # |W1| 1 = (6, 2.5); 1ᵀ|W2| = (3, 4); R = 3·6 + 4·2.5 = 28
    # ∂R/∂|W1|_ij = (1ᵀ|W2|)_i, ∂R/∂|W2|_ki = (|W1| 1)_i
    net = chain(W1, W2)
    r, s = SynFlow(iterations=1).flow(net, NAMES, ones(net), [(torch.zeros(1, 3), torch.zeros(1))])
    assert r == 28.0
    assert torch.equal(s["0.weight"], torch.tensor([[3.0, 6.0, 9.0], [2.0, 4.0, 4.0]], dtype=torch.float64))
    assert torch.equal(s["1.weight"], torch.tensor([[12.0, 2.5], [6.0, 7.5]], dtype=torch.float64))
    assert torch.equal(net[0].weight, torch.tensor(W1, dtype=torch.float64))  # the model keeps its signs


def test_synflow_biases_carry_flow_unless_turned_off():
    # layer 1 (2 → 3) with biases b1 = (1, −2, 0.5) and W1's first row fully masked; layer 2 (3 → 1), W2 = (1, 1, 1),
    # b2 = 4. With biases: R = 1ᵀ(|W2|(|W1⊙M1| 1 + |b1|) + |b2|); without: R = 1ᵀ|W2||W1⊙M1| 1.
    net = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[5.0, 5.0], [1.0, -2.0], [0.5, 0.5]]))
        net[0].bias.copy_(torch.tensor([1.0, -2.0, 0.5]))
        net[1].weight.copy_(torch.tensor([[1.0, 1.0, 1.0]]))
        net[1].bias.fill_(4.0)
    names = ["0.weight", "1.weight"]
    masks = {"0.weight": torch.tensor([[0, 0], [1, 1], [1, 1]], dtype=torch.bool),
             "1.weight": torch.ones(1, 3, dtype=torch.bool)}
    batch = [(torch.zeros(1, 2), torch.zeros(1))]
    r, s = SynFlow(iterations=1).flow(net, names, masks, batch)  # |W1⊙M1| 1 = (0, 3, 1): 4 + (1 + 2 + 0.5) + 4
    assert r == 11.5
    assert torch.equal(s["1.weight"], torch.tensor([[1.0, 5.0, 1.5]], dtype=torch.float64))  # unit 0 lives on b1
    r, s = SynFlow(iterations=1, biases=False).flow(net, names, masks, batch)
    assert r == 4.0
    assert torch.equal(s["1.weight"], torch.tensor([[0.0, 3.0, 1.0]], dtype=torch.float64))  # cut-off unit scores 0
    assert torch.equal(net[0].bias, torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))  # the model is untouched

    class Section:
        synflow_iterations, synflow_biases = 3, False
    syn = at_init_criterion("synflow", Section())
    assert (syn.iterations, syn.biases) == (3, False)


def test_synflow_iterations_follow_the_schedule_and_r_is_the_path_sum():
    net = chain(W1, W2, torch.float32)  # scored in float64 whatever the model's dtype
    seen = []
    syn = SynFlow(iterations=3, on_iteration=lambda i, r, m: seen.append((i, r, {n: x.clone() for n, x in m.items()})))
    syn.example = torch.zeros(1, 3)
    masks, first = syn.prune(net, NAMES, ones(net), [], fraction=0.7, scope="global")
    a1, a2 = torch.tensor(W1, dtype=torch.float64).abs(), torch.tensor(W2, dtype=torch.float64).abs()
    # per iteration 1 − 0.3^(1/3) = 0.3306 of the kept weights: 10 → 7 → 5 → 3
    assert [int(sum(m.sum() for m in ms.values())) for _, _, ms in seen] == [10, 7, 5, 3]
    for _, r, ms in seen:  # R after each iteration's pruning = 1ᵀ (|W2|⊙M2)(|W1|⊙M1) 1
        closed = (a2 * ms["1.weight"]) @ (a1 * ms["0.weight"]) @ torch.ones(3, dtype=torch.float64)
        assert r == pytest.approx(float(closed.sum()), rel=1e-12)
    assert seen[0][1] == 28.0 and seen[-1][1] > 0  # SynFlow keeps a path
    assert sum(int(m.sum()) for m in masks.values()) == 3
    assert torch.equal(first["1.weight"], torch.tensor([[12.0, 2.5], [6.0, 7.5]], dtype=torch.float64))


def test_synflow_batchnorm_in_eval_mode_and_model_unchanged():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    names = ["0.weight", "3.weight"]
    syn = SynFlow(iterations=2)
    syn.example = torch.zeros(1, 3)
    masks, _ = syn.prune(net, names, {n: torch.ones_like(dict(net.named_parameters())[n], dtype=torch.bool)
                                      for n in names}, [], fraction=0.5)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # running stats untouched
    assert net.training
    assert sum(int(m.sum()) for m in masks.values()) == 10  # 20 weights, 2 × (1 − 0.5^½) of the kept: 20 → 14 → 10


def test_tensor_criteria_score_theta0_and_random_is_seeded():
    net = chain(W1, W2)
    s = TensorCriterion("large_init").scores(net, NAMES, ones(net))
    assert torch.equal(s["0.weight"], torch.tensor(W1, dtype=torch.float64).abs())
    r1 = at_init_criterion("random", None, torch.Generator().manual_seed(3)).scores(net, NAMES, ones(net))
    r2 = at_init_criterion("random", None, torch.Generator().manual_seed(3)).scores(net, NAMES, ones(net))
    assert all(torch.equal(r1[n], r2[n]) for n in NAMES)


def test_one_list_of_criteria_and_settings_from_config():
    assert set(INIT_CRITERIA) == {"snip", "grasp", "synflow"}
    assert "large_final" in ALL_CRITERIA and "synflow" in ALL_CRITERIA and "nope" not in ALL_CRITERIA
    with pytest.raises(ValueError, match=r"unknown criterion 'nope'; valid choices: grasp, large_final.*synflow"):
        at_init_criterion("nope")

    class P:
        synflow_iterations = 7
        grasp_temperature = 3.0

    assert at_init_criterion("synflow", P()).iterations == 7
    assert at_init_criterion("grasp", P()).temperature == 3.0
    with pytest.raises(ValueError, match="synflow_iterations"):
        SynFlow(iterations=0)
    with pytest.raises(ValueError, match="grasp_temperature"):
        GraSP(temperature=0.0)


def test_take_batches_and_no_batch_is_an_error():
    loader = [(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), "extra")] * 5
    assert len(take_batches(loader, 2)) == 2
    net = chain(W1, W2)
    with pytest.raises(ValueError, match="init_batches"):
        Snip().scores(net, NAMES, ones(net), [])
