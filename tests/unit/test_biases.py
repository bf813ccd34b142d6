"""pruning.biases: every Linear/Conv bias prunable, ranked with its layer's weights (the MNIST-1D notebook's pruning)."""

import pytest
import torch
from torch import nn

from lth.masks import MaskManager, find_prunables, layer_groups
from lth.pruning.collapse import empty_layers
from lth.record import RunFolder
from lth.runner import run


def test_find_prunables_adds_every_layers_bias_in_parameter_order():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2, bias=False), nn.BatchNorm1d(2))
    assert find_prunables(model) == ["0.weight", "2.weight"]
    assert find_prunables(model, biases=True) == ["0.weight", "0.bias", "2.weight"]  # no BatchNorm, no missing bias
    assert layer_groups(find_prunables(model, biases=True)) == {"0": ["0.weight", "0.bias"], "2": ["2.weight"]}
    assert MaskManager(model, biases=True).numel() == 12 + 4 + 8


def test_an_empty_bias_is_no_layer_collapse():
    masks = {"fc.weight": torch.tensor([True, False]), "fc.bias": torch.tensor([False]),
             "out.weight": torch.tensor([False, False])}
    assert empty_layers(masks) == ["out.weight"]


def test_a_lineage_prunes_each_layers_weight_and_bias_as_one_pool(tmp_path, smoke_config):
    """smoke: digits 64 → 32 → 10. Round 1 removes half of each layer's pool: hidden 2048 + 32 → 1040 go;
    output 320 + 10 → 165 go. With pruning.output_fraction=0.25 the output pool loses round_half_even(82.5) = 82."""
    rec = run(smoke_config("pruning.biases=true"), tmp_path / "a", sinks=[])
    masks = RunFolder(tmp_path / "a", writer=False).load_mask(1)
    assert list(masks) == ["hidden.0.weight", "hidden.0.bias", "output.weight", "output.bias"]
    assert int(masks["hidden.0.weight"].sum() + masks["hidden.0.bias"].sum()) == 2080 - 1040
    assert int(masks["output.weight"].sum() + masks["output.bias"].sum()) == 330 - 165
    assert rec[1]["density"] == (1040 + 165) / 2410
    run(smoke_config("pruning.biases=true", "pruning.output_fraction=0.25"), tmp_path / "b", sinks=[])
    masks = RunFolder(tmp_path / "b", writer=False).load_mask(1)
    assert int(masks["output.weight"].sum() + masks["output.bias"].sum()) == 330 - 82
    assert int(masks["hidden.0.weight"].sum() + masks["hidden.0.bias"].sum()) == 1040
    trained = RunFolder(tmp_path / "b", writer=False).load_trained(1)
    assert torch.equal(trained["output.bias"][~masks["output.bias"]], torch.zeros(int((~masks["output.bias"]).sum())))


@pytest.mark.parametrize("other", ["pruning.at_init=true", "gradual.final_density=0.5",
                                   "pruning.granularity=neuron"])
def test_biases_with_another_kind_is_refused_before_anything_is_written(tmp_path, smoke_config, other):
    with pytest.raises(ValueError, match="pruning.biases=true"):
        run(smoke_config("pruning.biases=true", other), tmp_path / "x", sinks=[])
    assert not (tmp_path / "x").exists()
