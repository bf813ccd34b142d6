"""lth.models.mlp: MLP sizes, residual skips only where widths match, activations by name, LeNet-300-100."""

import pytest
import torch

from lth.models import build_model


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_by_hand():
    # (2, 3) flattened to 6 → 5 → 4: 6·5 + 5 + 5·4 + 4
    assert count(build_model("mlp", (2, 3), 4, hidden=[5])) == 59
    assert count(build_model("mlp", (7,), 2, hidden=[])) == 7 * 2 + 2  # logistic regression
    # LeNet on 1×4×4: 16·300 + 300 + 300·100 + 100 + 100·3 + 3
    assert count(build_model("lenet_300_100", (1, 4, 4), 3)) == 5_100 + 30_100 + 303 == 35_503


def test_residual_skips_only_where_the_width_is_kept():
    model = build_model("mlp", (6,), 3, hidden=[6, 4, 4], residual=True)
    assert model.skips == [True, False, True]
    assert build_model("mlp", (6,), 3, hidden=[6, 4, 4]).skips == [False, False, False]


def test_residual_with_zeroed_hidden_layers_passes_the_input_through():
    x = torch.randn(5, 6)
    for residual, expected_input in ((True, x), (False, torch.zeros(5, 6))):
        model = build_model("mlp", (6,), 3, hidden=[6, 6], residual=residual)
        with torch.no_grad():
            for layer in model.hidden:
                layer.weight.zero_()
                layer.bias.zero_()
        assert torch.allclose(model(x), model.output(expected_input))


def test_activation_by_name():
    model = build_model("mlp", (3,), 2, hidden=[4], activation="identity")
    with torch.no_grad():
        model.hidden[0].bias.fill_(-100.0)  # a ReLU would output zeros; identity keeps the negative values
    x = torch.randn(2, 3)
    expected = model.output(model.hidden[0](x))
    assert torch.allclose(model(x), expected)
    with pytest.raises(ValueError, match="unknown activation 'swish'; valid choices: gelu, identity, relu"):
        build_model("mlp", (3,), 2, activation="swish")
