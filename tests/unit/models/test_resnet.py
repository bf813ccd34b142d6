"""lth.models.resnet: block structure and parameter counts at tiny widths, by hand."""

import pytest
import torch

from lth.models import build_model
from lth.models.resnet import BasicBlock


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_basic_block_projects_only_when_the_shape_changes():
    assert len(BasicBlock(4, 4, 1).shortcut) == 0
    assert len(BasicBlock(4, 8, 2).shortcut) == 2 and len(BasicBlock(4, 8, 1).shortcut) == 2
    assert len(BasicBlock(4, 4, 2).shortcut) == 2


def test_resnet20_width_1_parameter_count_by_hand():
    # stem 9 + BN 2; stage 1 (width 1): 3 × (9 + 2 + 9 + 2) = 66;
    # stage 2 (width 2): 18+4+36+4 + projection 2+4 = 68, then 2 × (36+4+36+4) = 160;
    # stage 3 (width 4): 72+8+144+8 + projection 8+8 = 248, then 2 × (144+8+144+8) = 608; fc 4·2 + 2
    model = build_model("resnet20", (1, 4, 4), 2, width=1)
    assert len(model.blocks) == 9
    assert count(model) == 11 + 66 + 228 + 856 + 10 == 1_171
    assert model(torch.randn(2, 1, 4, 4)).shape == (2, 2)


def test_resnet56_has_nine_blocks_per_stage():
    model = build_model("resnet56", (3, 8, 8), 10, width=1)
    assert len(model.blocks) == 27
    assert [b.conv1.stride for b in model.blocks].count((2, 2)) == 2


def test_width_must_be_positive():
    with pytest.raises(ValueError, match="model 'resnet20': width must be a positive int, got 0"):
        build_model("resnet20", (3, 8, 8), 10, width=0)
