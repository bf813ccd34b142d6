"""benchmarks/structured.py: compacted residual networks reach their FLOP reductions through dependency groups."""

import pytest
import torch

from benchmarks.structured import DEFAULT_DENSITIES, DEFAULT_VARIANTS, bench_model, neuron_masks
from lth.models import build_model
from lth.structured import compact, flops


@pytest.mark.parametrize("density", [0.5, 0.25])
def test_resnet_channel_masks_reach_the_flop_reduction_through_groups(density):
    model = build_model("resnet20", (3, 32, 32), 10).eval()
    x = torch.randn(2, 3, 32, 32)
    masks, achieved = neuron_masks(model, x, density)
    small = compact(model, masks, x[:1])
    ratio = flops(model, x[:1])["flops_dense"] / flops(small, x[:1])["flops_dense"]
    assert abs(achieved - density) < 0.02 and abs(ratio - 1 / density) < 0.1 * (1 / density)
    # the residual channels shrink with the rest: the stem (16), its stage's second convs, the last stage's (64)
    assert small.conv.out_channels < 16 and small.blocks[0].conv2.out_channels == small.conv.out_channels
    assert small.output.in_features < 64 == model.output.in_features
    with torch.no_grad():
        masked = build_model("resnet20", (3, 32, 32), 10).eval()
        masked.load_state_dict(model.state_dict())
        for n, m in masks.items():
            masked.get_parameter(n).mul_(m)
        assert torch.allclose(small(x), masked(x), atol=1e-4)


def test_residual_defaults_and_rows():
    assert DEFAULT_DENSITIES["resnet56"] == (1.0, 0.5, 0.25) and DEFAULT_VARIANTS["resnet20"] == ("compacted",)
    rows = bench_model("resnet20", [1.0, 0.5], [1], repeats=1, warmup=0, device=torch.device("cpu"), seed=0,
                       kinds=("compacted",))
    assert [(r["density"], r["variant"]) for r in rows] == [(1.0, "dense"), (0.5, "compacted")]
    assert rows[0]["flop_ratio"] == 1.0 and abs(rows[1]["flop_ratio"] - 2.0) < 0.1
    assert rows[0]["speedup"] == 1.0 and rows[1]["latency_ms"] > 0


def test_update_keeps_the_other_models_rows(tmp_path):
    import json

    from benchmarks.structured import main

    out = tmp_path / "bench.json"
    old_row = {"model": "lenet_300_100", "batch": 1, "density": 1.0, "variant": "dense", "mflops": 0.27,
               "flop_ratio": 1.0, "latency_ms": 1.0, "speedup": 1.0, "speedup_per_flop_ratio": 1.0}
    out.write_text(json.dumps({"meta": {"clock": "wall"}, "rows": [old_row], "markdown": ""}))
    main(["--models", "resnet20", "--densities", "1.0", "0.5", "--batches", "1", "--repeats", "1", "--warmup", "0",
          "--update", "--json", str(out)])
    r = json.loads(out.read_text())
    assert r["rows"][0] == old_row and [(x["model"], x["variant"]) for x in r["rows"][1:]] == [
        ("resnet20", "dense"), ("resnet20", "compacted")]
    assert [(m["models"], m["clock"]) for m in r["runs"]] == [(["lenet_300_100"], "wall"),
                                                              (["resnet20"], "process CPU time")]
    main(["--models", "resnet20", "--densities", "1.0", "--batches", "1", "--repeats", "1", "--json", str(out)])
    assert [x["model"] for x in json.loads(out.read_text())["rows"]] == ["resnet20"]  # without --update: this run only
