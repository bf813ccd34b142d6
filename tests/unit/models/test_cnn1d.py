"""lth.models.cnn1d: three strided Conv1d layers; sizes by hand for small inputs; too-short inputs refused."""

import pytest
import torch

from lth.models import build_model


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_parameter_count_one_channel():
    # lengths 40 → 19 → 10 → 5; convs 1·4·5+4, 4·4·3+4, 4·4·3+4; output 4·5·3 + 3
    model = build_model("cnn1d", (40,), 3, channels=4)
    assert model.output.in_features == 20
    assert count(model) == 24 + 52 + 52 + 63 == 191


def test_parameter_count_with_input_channels():
    # (2, 12): lengths 12 → 5 → 3 → 2; convs 2·3·5+3, 3·3·3+3 (twice); output 3·2·2 + 2
    model = build_model("cnn1d", (2, 12), 2, channels=3)
    assert count(model) == 33 + 30 + 30 + 14 == 107
    assert model(torch.randn(4, 2, 12)).shape == (4, 2)


def test_shortest_input_and_refusals():
    assert build_model("cnn1d", (3,), 2, channels=1).output.in_features == 1  # 3 → 1 → 1 → 1
    with pytest.raises(ValueError, match="input length 2 is too short for its 3 strided convs"):
        build_model("cnn1d", (2,), 2)
    with pytest.raises(ValueError, match=r"needs input_shape \(C, L\) or \(L,\); got \(1, 8, 8\)"):
        build_model("cnn1d", (1, 8, 8), 2)
