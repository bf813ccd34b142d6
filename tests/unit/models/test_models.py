"""Tests for the model registry, init schemes and seeded re-initialisation."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from lth.models import INITS, MODELS, build_model, reinitialize

MNIST1D, DIGITS, MNIST, CIFAR10 = (1, 40), (1, 8, 8), (1, 28, 28), (3, 32, 32)


def prunable_weights(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name, weight) of every Linear/Conv weight, in named_parameters order."""
    layers = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))}
    return [(n, p) for n, p in model.named_parameters() if n in layers]


def weight_count(model: nn.Module) -> int:
    return sum(p.numel() for _, p in prunable_weights(model))


def conv3x3(*channels: int) -> int:
    """Weights of a chain of 3x3 convs through `channels`."""
    return sum(9 * a * b for a, b in itertools.pairwise(channels))


FORWARD_CASES = [
    *[("mlp", s) for s in (MNIST1D, DIGITS, MNIST, CIFAR10)],
    *[("lenet_300_100", s) for s in (MNIST1D, DIGITS, MNIST, CIFAR10)],
    *[(c, s) for c in ("conv2", "conv4", "conv6") for s in (DIGITS, MNIST, CIFAR10)],
    ("cnn1d", MNIST1D),
    ("cnn1d", (40,)),
    ("vgg16", CIFAR10),
    ("resnet20", CIFAR10),
    ("resnet1d", MNIST1D),
    ("resnet1d", (40,)),
]


@pytest.mark.parametrize(("name", "shape"), FORWARD_CASES)
def test_forward_shape(name: str, shape: tuple[int, ...]) -> None:
    model = build_model(name, shape, 10)
    assert model(torch.randn(2, *shape)).shape == (2, 10)


def test_cnn1d_reads_unbatched_channel() -> None:
    model = build_model("cnn1d", MNIST1D, 7)
    x = torch.randn(3, 40)
    assert torch.equal(model(x), model(x.unsqueeze(1)))
    # lengths 40 → 19 → 10 → 5, 25 channels: 125 features into the output layer
    assert model.output.in_features == 125
    assert sum(p.numel() for p in model.parameters()) == (125 + 25) + 2 * (1875 + 25) + (125 * 7 + 7)


def test_resnet1d_counts_and_blocks() -> None:
    model = build_model("resnet1d", MNIST1D, 10)
    x = torch.randn(3, 40)
    assert torch.equal(model(x), model(x.unsqueeze(1)))
    # stem k5 1→32; blocks 32→32, 32→32 (identity), 32→64 strided with a 1x1 projection, 64→64 (identity); fc 64·10
    weights = 5 * 32 + 2 * 2 * (3 * 32 * 32) + (3 * 32 * 64 + 3 * 64 * 64 + 32 * 64) + 2 * (3 * 64 * 64) + 64 * 10
    assert weight_count(model) == weights == 58_144
    # 10 BatchNorms: stem 32, 2·32 twice, 2·64 + projection 64, 2·64 — weight and bias each; fc bias 10
    assert sum(p.numel() for p in model.parameters()) == weights + 2 * (32 + 4 * 32 + 3 * 64 + 2 * 64) + 10
    assert [len(b.shortcut) for b in model.blocks] == [0, 0, 2, 0]
    assert [b.conv1.stride[0] for b in model.blocks] == [1, 1, 2, 1]
    # lengths: 40 → stem stride 2 → 20 → third block stride 2 → 10, then the average over positions
    assert model.blocks(model.bn(model.conv(x.unsqueeze(1)))).shape == (3, 64, 10)
    assert build_model("resnet1d", (2, 12), 3, widths=[4, 8]).output.in_features == 8
    for bad in ([], [4, 0]):
        with pytest.raises(ValueError, match="widths must be positive"):
            build_model("resnet1d", MNIST1D, 3, widths=bad)
    with pytest.raises(ValueError, match="needs input_shape"):
        build_model("resnet1d", CIFAR10, 3)


def test_lenet_weight_count() -> None:
    model = build_model("lenet_300_100", MNIST, 10)
    assert weight_count(model) == 784 * 300 + 300 * 100 + 100 * 10 == 266_200


@pytest.mark.parametrize(
    ("name", "expected", "paper_millions"),
    [
        ("conv2", conv3x3(3, 64, 64) + 16 * 16 * 64 * 256 + 256 * 256 + 256 * 10, 4.3),
        ("conv4", conv3x3(3, 64, 64, 128, 128) + 8 * 8 * 128 * 256 + 256 * 256 + 256 * 10, 2.4),
        # Frankle & Carbin's table lists 1.7M for Conv-6, but the architecture it describes has 2.26M weights.
        ("conv6", conv3x3(3, 64, 64, 128, 128, 256, 256) + 4 * 4 * 256 * 256 + 256 * 256 + 256 * 10, 2.3),
    ],
)
def test_conv_weight_counts(name: str, expected: int, paper_millions: float) -> None:
    count = weight_count(build_model(name, CIFAR10, 10))
    assert count == expected
    assert round(count / 1e6, 1) == paper_millions


def test_conv_exact_counts() -> None:
    assert [weight_count(build_model(n, CIFAR10, 10)) for n in ("conv2", "conv4", "conv6")] == [
        4_300_992,
        2_425_024,
        2_261_184,
    ]


def test_resnet20_and_vgg16_counts() -> None:
    resnet = build_model("resnet20", CIFAR10, 10)
    # stem 432; stage 1: 6 convs 16→16; stage 2: 16→32 + 5 convs 32→32 + 1x1 16·32; stage 3 likewise at 64; fc 640
    weights = 432 + 6 * 2304 + (4608 + 5 * 9216 + 512) + (18432 + 5 * 36864 + 2048) + 640
    assert weight_count(resnet) == weights == 270_896
    # 19 BatchNorms (stem, 2 per block, 2 projections): 2·(16 + 6·16 + 7·32 + 7·64) = 1568; fc bias 10
    assert sum(p.numel() for p in resnet.parameters()) == weights + 1568 + 10 == 272_474
    vgg = build_model("vgg16", CIFAR10, 10)
    convs = conv3x3(3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
    assert weight_count(vgg) == convs + 512 * 10 == 14_715_584


@pytest.mark.parametrize("name", MODELS.names())
def test_output_layer_is_last_prunable(name: str) -> None:
    shape = {"cnn1d": MNIST1D, "resnet1d": MNIST1D, "mlp": DIGITS, "lenet_300_100": DIGITS}.get(name, CIFAR10)
    model = build_model(name, shape, 6)
    last_name, last = prunable_weights(model)[-1]
    assert last_name == "output.weight"
    assert isinstance(model.output, nn.Linear) and last.shape[0] == 6


def test_residual_mlp_matches_formula() -> None:
    model = build_model("mlp", MNIST1D, 10, hidden=[500, 500], residual=True)
    assert model.skips == [False, True]
    x = torch.randn(4, 1, 40)
    w1, w2 = model.hidden
    h1 = torch.relu(w1(x.flatten(1)))
    h2 = torch.relu(w2(h1)) + h1
    torch.testing.assert_close(model(x), model.output(h2))
    plain = build_model("mlp", MNIST1D, 10, hidden=[500, 500])
    plain.load_state_dict(model.state_dict())
    assert not torch.allclose(plain(x), model(x))


def test_glorot_normal_std() -> None:
    layer = build_model("lenet_300_100", MNIST, 10).hidden[0]
    assert layer.weight.shape == (300, 784)
    expected = math.sqrt(2 / (784 + 300))  # 0.04296
    assert abs(layer.weight.std().item() / expected - 1) < 0.05
    assert abs(layer.weight.mean().item()) < 0.05 * expected
    assert torch.count_nonzero(layer.bias) == 0


def test_kaiming_schemes() -> None:
    layer = nn.Linear(784, 300)
    INITS["kaiming_normal"](layer)
    assert abs(layer.weight.std().item() / math.sqrt(2 / 784) - 1) < 0.05
    assert torch.count_nonzero(layer.bias) == 0
    INITS["kaiming_uniform"](layer)  # PyTorch default: U(±1/sqrt(fan_in)) for weight and bias
    bound = 1 / math.sqrt(784)
    assert layer.weight.abs().max().item() <= bound
    assert abs(layer.weight.std().item() / (bound / math.sqrt(3)) - 1) < 0.05
    assert torch.count_nonzero(layer.bias) == 300 and layer.bias.abs().max().item() <= bound


def test_batchnorm_init() -> None:
    model = build_model("resnet20", CIFAR10, 10)
    with torch.no_grad():
        model.bn.weight.fill_(3.0)
        model.bn.running_mean.fill_(5.0)
    reinitialize(model, 0)
    assert torch.equal(model.bn.weight, torch.ones(16))
    assert torch.equal(model.bn.bias, torch.zeros(16))
    assert torch.equal(model.bn.running_mean, torch.zeros(16))
    std = model.conv.weight.std().item()
    assert abs(std / math.sqrt(2 / 27) - 1) < 0.1  # kaiming_normal, fan_in 3·3·3


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(("name", "shape"), [("lenet_300_100", MNIST), ("conv2", DIGITS), ("cnn1d", MNIST1D)])
def test_reinitialize_is_seeded_and_keeps_rng(name: str, shape: tuple[int, ...]) -> None:
    model = build_model(name, shape, 10)
    before = _state(model)
    rng = torch.get_rng_state()
    reinitialize(model, 7)
    assert torch.equal(torch.get_rng_state(), rng)
    first = _state(model)
    torch.manual_seed(123)  # global state must not matter
    reinitialize(model, 7)
    assert all(torch.equal(first[k], v) for k, v in model.state_dict().items())
    reinitialize(model, 8)
    weights = [k for k in first if k.endswith("weight")]
    assert all(not torch.equal(first[k], model.state_dict()[k]) for k in weights)
    assert all(not torch.equal(first[k], before[k]) for k in weights)


def test_reinitialize_uses_model_scheme() -> None:
    model = build_model("mlp", DIGITS, 10, hidden=[32])
    with torch.no_grad():
        model.output.bias.fill_(1.0)
    reinitialize(model, 3)
    # glorot_normal zeroes biases; nn.Linear's own reset would not
    assert torch.count_nonzero(model.output.bias) == 0
    torch.manual_seed(3)
    model.reset_parameters()
    seeded = _state(model)
    reinitialize(model, 3)
    assert all(torch.equal(seeded[k], v) for k, v in model.state_dict().items())


def test_reinitialize_plain_sequential() -> None:
    net = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Sequential(nn.Linear(20, 5), nn.BatchNorm1d(5)))
    rng = torch.get_rng_state()
    reinitialize(net, 1)
    a = _state(net)
    reinitialize(net, 1)
    b = _state(net)
    reinitialize(net, 2)
    c = _state(net)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["0.weight"], c["0.weight"]) and not torch.equal(a["2.0.bias"], c["2.0.bias"])
    assert a["0.weight"].abs().max().item() <= 1 / math.sqrt(10)  # nn.Linear's own default init


def test_build_model_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown model 'lenet5'") as err:
        build_model("lenet5", MNIST, 10)
    for valid in ("mlp", "lenet_300_100", "conv2", "conv4", "conv6", "vgg16", "resnet20", "cnn1d"):
        assert valid in str(err.value)


def test_build_model_bad_kwarg() -> None:
    with pytest.raises(ValueError, match="no option 'hiden'") as err:
        build_model("mlp", MNIST, 10, hiden=[10])
    assert "hidden" in str(err.value) and "residual" in str(err.value)


@pytest.mark.parametrize(
    ("name", "shape", "kwargs", "message"),
    [
        ("mlp", MNIST, {"init": "xavier"}, "unknown init 'xavier'; valid choices: .*glorot_normal"),
        ("mlp", MNIST, {"activation": "swish"}, "unknown activation 'swish'; valid choices: gelu"),
        ("conv2", MNIST1D, {}, r"needs an image input_shape \(C, H, W\); got \(1, 40\)"),
        ("vgg16", DIGITS, {}, "too small"),
        ("cnn1d", CIFAR10, {}, "cnn1d"),
        ("mlp", MNIST, {}, None),
    ],
)
def test_build_model_bad_values(name: str, shape: tuple[int, ...], kwargs: dict, message: str | None) -> None:
    if message is None:
        with pytest.raises(ValueError, match="num_classes"):
            build_model(name, shape, 0, **kwargs)
        return
    with pytest.raises(ValueError, match=message):
        build_model(name, shape, 10, **kwargs)


def test_hydra_list_options() -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"hidden": [64, 32]})
    model = build_model("mlp", [1, 8, 8], 10, hidden=cfg.hidden, init="kaiming_normal")
    assert [layer.out_features for layer in model.hidden] == [64, 32]
    assert weight_count(model) == 64 * 64 + 64 * 32 + 32 * 10


def test_width_options() -> None:
    assert weight_count(build_model("resnet20", CIFAR10, 10, width=8)) < 270_896 / 3
    assert build_model("vgg16", CIFAR10, 10, width=16).output.in_features == 128


def test_import_is_light() -> None:
    code = "import sys, lth.models; print(sorted(m for m in ('wandb', 'torchvision', 'sklearn', 'mnist1d') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
