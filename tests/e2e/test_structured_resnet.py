"""Structured IMP on the residual MNIST-1D CNN through the runner and the CLI: exact channel counts per round, and each
round's compacted network (compact.json + compact.pt) reloads from the registry with the masked model's outputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lth import masks as masks_lib
from lth.models import build_model
from lth.pruning import alive_units
from lth.structured import load_compact

WIDTHS = [8, 8, 16]
TINY = ("experiment=structured_resnet1d_mnist1d", "debug=fast", "ticket.rounds=2", "trainer.max_steps=6",
        "trainer.eval_every=3", "trainer.checkpoint_every=0", f"model.args.widths=[{','.join(map(str, WIDTHS))}]")
# 20% of the remaining channels of every dependency group per round, round-half-even: 8 → 8 − round(1.6) = 6 →
# 6 − round(1.2) = 5; 16 → 16 − round(3.2) = 13 → 13 − round(2.6) = 10. Groups: the stem with the two identity blocks'
# second convs (they add into its channels), each block's inner conv, and the third block's second conv with its
# projection shortcut; the output layer keeps its 10 units.
GROUPS = {"stem": (["conv.weight", "blocks.0.conv2.weight", "blocks.1.conv2.weight"], [8, 6, 5]),
          "inner": (["blocks.0.conv1.weight", "blocks.1.conv1.weight"], [8, 6, 5]),
          "inner wide": (["blocks.2.conv1.weight"], [16, 13, 10]),
          "projection": (["blocks.2.conv2.weight", "blocks.2.shortcut.0.weight"], [16, 13, 10])}


def expected(r: int) -> dict[str, int]:
    return {"output.weight": 10, **{w: counts[r] for ws, counts in GROUPS.values() for w in ws}}


def check_lineage(out: Path) -> None:
    """Exact alive channels per round; the compacted files reload with the masked trained model's outputs."""
    x = torch.randn(6, 1, 40, generator=torch.Generator().manual_seed(0))
    for r in range(3):
        folder = out / f"round_{r:02d}"
        masks = masks_lib.load(folder / "mask.pt")
        alive = {n: int(a.sum()) for n, a in alive_units(masks).items()}
        assert alive == expected(r), f"round {r}"
        model = build_model("resnet1d", (1, 40), 10, widths=WIDTHS)
        model.load_state_dict(torch.load(folder / "trained.pt", weights_only=True))
        model.eval()
        small = load_compact(folder)
        stem, inner, wide, proj = (counts[r] for _, counts in GROUPS.values())
        assert (small.conv.out_channels, small.bn.num_features, small.output.in_features) == (stem, stem, proj)
        assert [(b.conv1.in_channels, b.conv1.out_channels, b.conv2.out_channels) for b in small.blocks] == [
            (stem, inner, stem), (stem, inner, stem), (stem, wide, proj)]
        assert (small.blocks[2].shortcut[0].in_channels, small.blocks[2].shortcut[1].num_features) == (stem, proj)
        with torch.no_grad():
            masked = model
            for n, m in masks.items():
                masked.get_parameter(n).mul_(m)
            assert torch.allclose(small(x), masked(x), atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # three rounds in process: ~30 s on 2 loaded cores
def test_runner_lineage_saves_reloadable_compacted_rounds(tmp_path, data_root):
    from lth.cli import compose_config
    from lth.runner import run

    records = run(compose_config([*TINY, f"data.root={data_root}"]), tmp_path / "run", sinks=[])
    assert [r["round"] for r in records] == [0, 1, 2] and records[2]["granularity"] == "neuron"
    check_lineage(tmp_path / "run")
    # the record's compacted counts are the reloaded network's
    small = load_compact(tmp_path / "run" / "round_02")
    assert records[2]["params_compact"] == sum(p.numel() for p in small.parameters())


@pytest.mark.slow  # a CLI subprocess: ~40 s on 2 loaded cores
def test_cli_structured_resnet_lineage(tmp_path, data_root):
    out = tmp_path / "cli"
    cmd = [str(Path(sys.executable).with_name("lth-run")), *TINY, f"data.root={data_root}", f"hydra.run.dir={out}"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check_lineage(out)


def test_residual_presets_compose():
    from lth.cli import compose_config

    cfg = compose_config(["experiment=structured_resnet1d_mnist1d"])
    assert (cfg.model.name, list(cfg.model.args["widths"]), cfg.data.name) == ("resnet1d", [32, 32, 64, 64], "mnist1d")
    assert (cfg.pruning.granularity.value, cfg.pruning.structured_norm, cfg.pruning.fraction) == ("neuron", "l1", 0.2)
    assert (cfg.ticket.rounds, cfg.ticket.reset, cfg.trainer.max_steps) == (4, "rewind", 500)
    cfg = compose_config(["experiment=structured_resnet20_cifar10"])
    assert (cfg.model.name, cfg.data.name, cfg.optimizer["_target_"], cfg.optimizer["lr"]) == (
        "resnet20", "cifar10", "torch.optim.SGD", 0.1)
    assert (cfg.pruning.granularity.value, cfg.ticket.rewind_step, cfg.trainer.max_steps) == ("neuron", 500, 30000)
