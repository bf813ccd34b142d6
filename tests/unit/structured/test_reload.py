"""lth.structured.reload: a compacted network saved as compact.json + compact.pt and rebuilt from the model registry
gives the in-memory compacted model's outputs and the masked model's."""

import json

import pytest
import torch

from lth.models import build_model
from lth.structured import compact, compact_config, load_compact, save_compact
from tests.unit.structured.test_groups import group_masks
from tests.unit.structured.test_structured import masked_copy, randomize

MODELS = {  # name → (input shape, model options): small widths keep the test fast
    "resnet1d": ((1, 40), {"widths": [8, 8, 16]}),
    "resnet20": ((3, 8, 8), {"width": 4}),
    "mlp": ((1, 8, 8), {"hidden": [24, 16]}),
    "cnn1d": ((40,), {"channels": 12}),
    "conv4": ((3, 8, 8), {"fc": [32, 16]}),
    "vgg16": ((3, 16, 16), {"width": 8}),
}


def randomized(name, shape, opts):
    """The model with non-zero biases and BatchNorm statistics (a wrongly sliced bias or BN entry would show)."""
    torch.manual_seed(0)
    return randomize(build_model(name, shape, 10, **opts)).eval()


def half_units(model, x):
    """Masks removing half the channels of every dependency group by L1 norm (one round)."""
    return group_masks(model, x[:1], fraction=0.5, rounds=1)[1]


@pytest.mark.parametrize("name", list(MODELS))
def test_reload_gives_the_compacted_and_the_masked_outputs(tmp_path, name):
    shape, opts = MODELS[name]
    model = randomized(name, shape, opts)
    x = torch.randn(4, *shape)
    masks = half_units(model, x)
    small = compact(model, masks, x[:1]).eval()
    save_compact(tmp_path, small, compact_config(small, name, opts, shape, 10))
    rng = torch.get_rng_state()
    again = load_compact(tmp_path)
    assert torch.equal(torch.get_rng_state(), rng)  # rebuilt on the meta device: no draw from the global RNG
    assert type(again) is type(small) and not again.training
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in small.state_dict().items()}
    with torch.no_grad():
        out = again(x)
        assert torch.allclose(out, small(x), atol=1e-6, rtol=0)
        assert torch.allclose(out, masked_copy(model, masks)(x), atol=1e-5, rtol=1e-5)
    assert sum(p.numel() for p in again.parameters()) < sum(p.numel() for p in model.parameters())


def test_config_is_plain_json_with_the_width_map(tmp_path):
    shape, opts = MODELS["resnet1d"]
    model = randomized("resnet1d", shape, opts)
    x = torch.randn(2, *shape)
    small = compact(model, half_units(model, x), x[:1])
    config = compact_config(small, "resnet1d", opts, shape, 10)
    save_compact(tmp_path, small, config)
    assert json.loads((tmp_path / "compact.json").read_text()) == config
    assert (config["model"], config["args"], config["input_shape"], config["num_classes"]) == (
        "resnet1d", {"widths": [8, 8, 16]}, [1, 40], 10)
    # half of every group: the stem's group (stem, both identity blocks' second convs) 8 → 4, the inner convs
    # 8, 8, 16 → 4, 4, 8, the projection stage's group (third block's second conv and shortcut) 16 → 8
    assert config["widths"] == {
        "conv": {"rows": 4}, "bn": {"rows": 4},
        **{f"blocks.{i}.{m}": {"rows": 4, "cols": 4} for i in (0, 1) for m in ("conv1", "conv2")},
        **{f"blocks.{i}.{m}": {"rows": 4} for i in (0, 1) for m in ("bn1", "bn2")},
        "blocks.2.conv1": {"rows": 8, "cols": 4}, "blocks.2.bn1": {"rows": 8},
        "blocks.2.conv2": {"rows": 8, "cols": 8}, "blocks.2.bn2": {"rows": 8},
        "blocks.2.shortcut.0": {"rows": 8, "cols": 4}, "blocks.2.shortcut.1": {"rows": 8}, "output": {"cols": 8},
    }
    assert config["shapes"]["blocks.2.conv2.weight"] == list(small.blocks[2].conv2.weight.shape)
    state = torch.load(tmp_path / "compact.pt", weights_only=True)  # tensors only, no pickled module
    assert set(state) == set(small.state_dict()) and all(isinstance(v, torch.Tensor) for v in state.values())


def test_damaged_or_missing_files_are_refused(tmp_path):
    shape, opts = MODELS["mlp"]
    model = randomized("mlp", shape, opts)
    x = torch.randn(2, *shape)
    small = compact(model, half_units(model, x), x[:1])
    with pytest.raises(FileNotFoundError, match="compact.json or compact.pt"):
        load_compact(tmp_path)
    config = compact_config(small, "mlp", opts, shape, 10)
    save_compact(tmp_path, small, config)
    wrong = {**config, "shapes": {**config["shapes"], "hidden.0.weight": [5, 64]}}
    (tmp_path / "compact.json").write_text(json.dumps(wrong))
    with pytest.raises(ValueError, match=r"shapes differ from the config's at \['hidden.0.weight'\]"):
        load_compact(tmp_path)
    (tmp_path / "compact.json").write_text(json.dumps({**config, "version": 99}))
    with pytest.raises(ValueError, match="version 99"):
        load_compact(tmp_path)
    with pytest.raises(ValueError, match="not in model 'cnn1d'"):
        compact_config(small, "cnn1d", {}, (40,), 10)
