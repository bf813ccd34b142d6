"""lth.stability: the linear path between two states, BatchNorm re-estimation along it, masks on it, instability."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lth.stability import (
    evaluate,
    evenly_spaced,
    has_batchnorm,
    instabilities,
    instability,
    interpolate,
    interpolated_state,
    is_stable,
    reestimate_batchnorm,
)


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _data(n: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


class AbsLogit(nn.Module):
    """One parameter w: logits [|w·x|, 0.5]. Class 0 is right while |w| > 0.5: w = ±1 are right, w = 0 is wrong."""

    def __init__(self, w: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([w]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x * self.w).abs()
        return torch.cat([z, torch.full_like(z, 0.5)], dim=1)


def test_evenly_spaced_has_both_ends():
    a = evenly_spaced()
    assert len(a) == 30 and a[0] == 0.0 and a[-1] == 1.0 and a[1] == pytest.approx(1 / 29)
    assert evenly_spaced(3) == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="stability.alphas must be >= 2"):
        evenly_spaced(1)


def test_instability_is_the_barrier_over_the_mean_of_the_ends():
    assert instability([0.1, 0.3, 0.2]) == pytest.approx(0.3 - 0.15)
    assert instability([0.2, 0.1, 0.4]) == pytest.approx(0.4 - 0.3)  # the max may be an end
    assert instability([0.25, 0.25]) == 0.0
    curve = [{"test_error": 0.1, "train_error": 0.0}, {"test_error": 0.5, "train_error": 0.2},
             {"test_error": 0.3, "train_error": 0.0}]
    assert instabilities(curve) == pytest.approx({"instability_test": 0.3, "instability_train": 0.2})
    assert is_stable(0.0199) and not is_stable(0.02)
    with pytest.raises(ValueError, match="at least its two ends"):
        instability([0.1])


def test_ends_of_the_path_evaluate_exactly_as_the_endpoint_models():
    a, b, (x, y) = _mlp(0), _mlp(1), _data()
    curve = interpolate(a, a.state_dict(), b.state_dict(), 7, {"test": (x, y)})
    assert [r["alpha"] for r in curve] == evenly_spaced(7)
    assert (curve[0]["test_loss"], curve[0]["test_error"]) == evaluate(_mlp(0), x, y)
    assert (curve[-1]["test_loss"], curve[-1]["test_error"]) == evaluate(_mlp(1), x, y)
    assert all(torch.equal(v, _mlp(0).state_dict()[k]) for k, v in a.state_dict().items())  # left holding a


def test_identical_endpoints_have_zero_instability():
    m, (x, y) = _mlp(3), _data()
    curve = interpolate(m, m.state_dict(), {k: v.clone() for k, v in m.state_dict().items()}, 5,
                        {"test": (x, y), "train": _data(20, 1)})
    assert len({(r["test_loss"], r["test_error"]) for r in curve}) == 1
    assert instabilities(curve) == {"instability_test": 0.0, "instability_train": 0.0}


def test_a_one_parameter_barrier_has_the_hand_computed_sign_and_size():
    model = AbsLogit(1.0)
    x, y = torch.ones(4, 1), torch.zeros(4, dtype=torch.long)
    curve = interpolate(model, {"w": torch.tensor([1.0])}, {"w": torch.tensor([-1.0])}, [0.0, 0.5, 1.0],
                        {"test": (x, y)})
    assert [r["test_error"] for r in curve] == [0.0, 1.0, 0.0]  # w = 1, 0, -1
    assert curve[0]["test_loss"] == pytest.approx(math.log(1 + math.exp(-0.5)), abs=1e-6)
    assert curve[1]["test_loss"] == pytest.approx(math.log(1 + math.exp(0.5)), abs=1e-6)
    assert instabilities(curve) == {"instability_test": 1.0}
    # the same pair on one side of 0 is linearly connected: no barrier
    flat = interpolate(model, {"w": torch.tensor([1.0])}, {"w": torch.tensor([3.0])}, 11, {"test": (x, y)})
    assert instabilities(flat) == {"instability_test": 0.0}


def test_permuted_hidden_units_are_equal_functions_but_not_linearly_connected():
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    with torch.no_grad():  # a sharp classifier of sign(x0): its units matter, so averaging two orders breaks it
        a[0].weight.copy_(torch.cat([torch.eye(2)[:1].repeat(8, 1), -torch.eye(2)[:1].repeat(8, 1)]) * 5)
        a[0].bias.zero_()
        a[2].weight.copy_(torch.cat([torch.tensor([[1.0] * 8 + [-1.0] * 8]), torch.tensor([[-1.0] * 8 + [1.0] * 8])]))
        a[2].bias.zero_()
    perm = torch.arange(16).roll(8)  # the two halves swap places
    sa = a.state_dict()
    sb = {"0.weight": sa["0.weight"][perm], "0.bias": sa["0.bias"][perm],
          "2.weight": sa["2.weight"][:, perm], "2.bias": sa["2.bias"]}
    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(1))
    y = (x[:, 0] < 0).long()
    curve = interpolate(a, sa, sb, 3, {"test": (x, y)})
    assert curve[0]["test_error"] == curve[-1]["test_error"] == 0.0  # the same function
    # at α = 0.5 the hidden layer is the average of +x0 and -x0 units: all zero, logits tie, class 0 is chosen
    assert curve[1]["test_error"] == pytest.approx(float((y == 1).float().mean()))
    assert instabilities(curve)["instability_test"] == pytest.approx(float((y == 1).float().mean()))


def test_masked_weights_stay_masked_along_the_path():
    a, b = _mlp(0), _mlp(1)
    masks = {"0.weight": torch.rand(8, 6, generator=torch.Generator().manual_seed(2)) > 0.5}
    for alpha in (0.0, 0.3, 0.5, 1.0):
        s = interpolated_state(a.state_dict(), b.state_dict(), alpha, masks)
        assert torch.all(s["0.weight"][~masks["0.weight"]] == 0)
        assert torch.equal(s["0.weight"][masks["0.weight"]],
                           ((1 - alpha) * a.state_dict()["0.weight"] + alpha * b.state_dict()["0.weight"])[
                               masks["0.weight"]] if alpha not in (0.0, 1.0) else
                           (a if alpha == 0 else b).state_dict()["0.weight"][masks["0.weight"]])
    x, y = _data()
    curve = interpolate(a, a.state_dict(), b.state_dict(), [0.5], {"test": (x, y)}, masks=masks)
    ref = _mlp(0)
    ref.load_state_dict(interpolated_state(_mlp(0).state_dict(), b.state_dict(), 0.5, masks))
    assert (curve[0]["test_loss"], curve[0]["test_error"]) == evaluate(ref, x, y)


def _bn_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def test_batchnorm_reestimation_equals_a_manual_recomputation():
    m = _bn_model(0)
    assert has_batchnorm(m) and not has_batchnorm(_mlp(0))
    g = torch.Generator().manual_seed(5)
    batches = [torch.randn(5, 3, generator=g) for _ in range(3)]
    m[1].running_mean.fill_(7.0)
    reestimate_batchnorm(m, batches)
    with torch.no_grad():
        h = [m[0](x) for x in batches]
    mean = torch.stack([z.mean(0) for z in h]).mean(0)  # equal batch sizes: the mean of the batch means
    var = torch.stack([z.var(0, unbiased=True) for z in h]).mean(0)
    assert torch.allclose(m[1].running_mean, mean, atol=1e-6) and torch.allclose(m[1].running_var, var, atol=1e-6)
    assert not m.training and m[1].momentum == 0.1  # eval mode, momentum restored


def test_interpolate_reestimates_batchnorm_at_every_alpha():
    a, b, (x, y) = _bn_model(0), _bn_model(1), _data(30)
    x, y = x[:, :3], y % 2
    g = torch.Generator().manual_seed(6)
    batches = [torch.randn(10, 3, generator=g) for _ in range(2)]
    curve = interpolate(a, a.state_dict(), b.state_dict(), [0.0, 0.5], {"test": (x, y)}, bn_batches=batches)
    for row, alpha in zip(curve, (0.0, 0.5)):
        ref = _bn_model(0)
        ref.load_state_dict(interpolated_state(_bn_model(0).state_dict(), _bn_model(1).state_dict(), alpha))
        with torch.no_grad():
            h = torch.cat([ref[0](xb) for xb in batches])
        ref[1].running_mean.copy_(h.mean(0))
        ref[1].running_var.copy_(torch.stack([ref[0](xb).var(0) for xb in batches]).mean(0).detach())
        assert row["test_loss"] == pytest.approx(evaluate(ref, x, y)[0], abs=1e-6)
    # without re-estimation the statistics are interpolated like the weights: the end is the stored model
    plain = interpolate(a, _bn_model(0).state_dict(), _bn_model(1).state_dict(), [0.0], {"test": (x, y)})
    assert plain[0]["test_loss"] == evaluate(_bn_model(0), x, y)[0]


def test_interpolate_restores_the_training_mode_and_refuses_mismatched_states():
    m = _mlp(0)
    m.train()
    interpolate(m, m.state_dict(), _mlp(1).state_dict(), 2, {"test": _data()})
    assert m.training
    with pytest.raises(ValueError, match="differ in keys"):
        interpolated_state({"a": torch.zeros(1)}, {"b": torch.zeros(1)}, 0.5)
    with pytest.raises(ValueError, match="needs data"):
        interpolate(m, m.state_dict(), m.state_dict(), 2, {})
