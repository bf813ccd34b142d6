"""Mask overlap and per-layer diagnostics on hand-made masks, and `python -m lth.analysis overlap|layers` on a tiny
hand-made lineage."""

import math

import pandas as pd
import pytest
import torch

from lth import analysis
from lth import masks as masks_io
from lth.overlap import ALL, collapsed_layers, layer_report, mask_paths, overlap, overlap_frame

PNG = b"\x89PNG\r\n\x1a\n"


def _m(*rows):
    return torch.tensor(rows, dtype=torch.bool)


# fc1 (10 weights): a keeps 0–3, b keeps 2–5 → shared 2, union 6; fc2 (4 weights): a keeps one, b none
A = {"fc1.weight": _m([1, 1, 1, 1, 0], [0, 0, 0, 0, 0]), "fc2.weight": _m([1, 0, 0, 0])}
B = {"fc1.weight": _m([0, 0, 1, 1, 1], [1, 0, 0, 0, 0]), "fc2.weight": _m([0, 0, 0, 0])}


def test_overlap_per_layer_and_overall_with_the_random_expectation():
    fc1, fc2, total = overlap(A, B)
    assert (fc1.layer, fc1.numel, fc1.kept_a, fc1.kept_b, fc1.shared) == ("fc1.weight", 10, 4, 4, 2)
    assert fc1.jaccard == pytest.approx(2 / 6)
    # independent random masks of densities 0.4 and 0.4 in 10 weights share p·q·n = 1.6
    assert fc1.expected_shared == pytest.approx(1.6) and fc1.expected_jaccard == pytest.approx(1.6 / 6.4)
    assert fc1.over_chance == pytest.approx(2 / 1.6)
    assert (fc2.shared, fc2.jaccard, fc2.expected_shared) == (0, 0.0, 0.0) and math.isnan(fc2.over_chance)
    assert (total.layer, total.numel, total.kept_a, total.kept_b, total.shared) == (ALL, 14, 5, 4, 2)
    assert total.jaccard == pytest.approx(2 / 7) and total.expected_jaccard == pytest.approx(1.6 / 7.4)


def test_a_mask_with_itself_and_with_its_complement():
    comp = {n: ~m for n, m in A.items()}
    same, opposite = overlap(A, A)[-1], overlap(A, comp)[-1]
    assert same.jaccard == 1.0 and same.shared == 5
    assert opposite.jaccard == 0.0 and opposite.shared == 0 and opposite.expected_shared == pytest.approx(
        4 * 6 / 10 + 1 * 3 / 4)


def test_overlap_refuses_masks_of_other_models():
    with pytest.raises(ValueError, match=r"different models: fc2.weight: \(1, 4\) vs \(2, 2\)"):
        overlap(A, {**B, "fc2.weight": _m([0, 1], [1, 0])})
    with pytest.raises(ValueError, match="share no layer"):
        overlap(A, {"conv.weight": _m([1])})


def test_overlap_frame_has_every_pair_and_layer():
    frame = overlap_frame({"a": A, "b": B, "a again": A})
    assert list(zip(frame["a"], frame["b"], frame["layer"])) == [
        (x, y, layer) for x, y in (("a", "b"), ("a", "a again"), ("b", "a again"))
        for layer in ("fc1.weight", "fc2.weight", ALL)]
    assert frame[(frame["a"] == "a") & (frame["b"] == "a again") & (frame["layer"] == ALL)]["jaccard"].item() == 1.0


def test_layer_report_flags_empty_and_nearly_empty_layers():
    report = layer_report(B, nearly_empty=0.5)
    assert report.to_dict("records") == [
        {"layer": "fc1.weight", "numel": 10, "kept": 4, "density": 0.4, "flag": "nearly empty"},
        {"layer": "fc2.weight", "numel": 4, "kept": 0, "density": 0.0, "flag": "empty"},
        {"layer": ALL, "numel": 14, "kept": 4, "density": 4 / 14, "flag": "nearly empty"}]
    assert list(layer_report(A)["flag"]) == ["", "", ""]


def test_collapsed_layers_from_a_results_frame():
    df = pd.DataFrame({"lineage": ["x", "x", "y"], "round": [0, 1, 1], "density": [1.0, 0.1, 0.2],
                       "layer_density.fc1.weight": [1.0, 0.005, 0.2], "layer_density.out.weight": [1.0, 0.0, None]})
    low = collapsed_layers(df)
    assert low[["lineage", "round", "layer", "layer_density", "flag"]].to_dict("records") == [
        {"lineage": "x", "round": 1, "layer": "fc1.weight", "layer_density": 0.005, "flag": "nearly empty"},
        {"lineage": "x", "round": 1, "layer": "out.weight", "layer_density": 0.0, "flag": "empty"}]


@pytest.fixture
def tiny(tmp_path):
    """Two hand-made lineage folders (round_00 dense, round_01 = A or B) and a loose mask file."""
    dense = {n: torch.ones_like(m) for n, m in A.items()}
    for name, last in (("seed0", A), ("seed1", B)):
        for r, m in enumerate((dense, last)):
            (tmp_path / name / f"round_{r:02d}").mkdir(parents=True)
            masks_io.save(m, tmp_path / name / f"round_{r:02d}" / "mask.pt")
    return tmp_path


def test_mask_paths_name_files_rounds_and_lineages(tiny):
    assert mask_paths(tiny / "seed0") == [tiny / "seed0/round_01/mask.pt"]
    assert mask_paths(tiny / "seed0", 0) == [tiny / "seed0/round_00/mask.pt"]
    assert mask_paths(tiny / "seed0", "all") == [tiny / f"seed0/round_0{r}/mask.pt" for r in (0, 1)]
    assert mask_paths(tiny / "seed1/round_00") == [tiny / "seed1/round_00/mask.pt"]
    with pytest.raises(FileNotFoundError, match=r"has no mask of round 5; its rounds with a mask: \[0, 1\]"):
        mask_paths(tiny / "seed0", 5)
    with pytest.raises(FileNotFoundError, match="no mask at"):
        mask_paths(tiny)


def test_overlap_cli_prints_the_table_and_draws_the_heatmap(tiny, capsys):
    out = tiny / "fig" / "overlap.png"
    analysis.main(["overlap", str(tiny / "seed0"), str(tiny / "seed1"), "--out", str(out), "--csv",
                   str(tiny / "o.csv")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("| a | b | layer | weights | kept a | kept b | shared | Jaccard | chance: shared | "
                        "chance: Jaccard | shared / chance |")
    assert lines[2] == ("| seed0/round_01 | seed1/round_01 | fc1.weight | 10 | 4 | 4 | 2 | 0.333 | 1.600 | 0.250 | "
                        "1.250 |")
    assert lines[4] == "| seed0/round_01 | seed1/round_01 | all | 14 | 5 | 4 | 2 | 0.286 | 1.600 | 0.216 | 1.250 |"
    assert lines[5:] == [str(out), str(tiny / "o.csv")]
    assert out.read_bytes()[:8] == PNG
    assert pd.read_csv(tiny / "o.csv")["shared"].tolist() == [2, 0, 2]


def test_overlap_cli_across_rounds_and_its_errors(tiny, capsys):
    analysis.main(["overlap", str(tiny / "seed0"), "--round", "all", "--out", str(tiny / "r.png"),
                   "--layer", "fc1.weight"])
    # round 0 keeps all 10 weights of fc1, round 1 keeps 4: Jaccard 0.4, equal to chance (1 · 0.4 · 10 = 4 shared)
    assert "| round_00 | round_01 | fc1.weight | 10 | 10 | 4 | 4 | 0.400 | 4.000 | 0.400 | 1.000 |" in \
        capsys.readouterr().out
    for args, message in ((["overlap", str(tiny / "seed0")], "overlap needs two masks or more"),
                          (["overlap", str(tiny / "seed0"), str(tiny / "seed1"), "--layer", "nope"],
                           "--layer 'nope': the masks' layers are fc1.weight, fc2.weight, all"),
                          (["overlap", str(tiny / "seed0"), "--round", "last"], "a round number or 'all'"),
                          (["overlap", str(tiny / "seed0"), str(tiny / "seed1"), "--labels", "x"],
                           "--labels: 2 distinct names needed (one per mask), got ['x']")):
        with pytest.raises(SystemExit):
            analysis.main(args)
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        analysis.main(["nothing"])
    assert "usage: python -m lth.analysis {overlap,layers}" in capsys.readouterr().err


def test_layers_cli_tables(tiny, capsys):
    analysis.main(["layers", str(tiny / "seed1"), str(tiny / "seed0/round_00"), "--nearly-empty", "0.5",
                   "--labels", "B", "dense"])
    out = capsys.readouterr().out
    assert "### B\n" in out and "### dense\n" in out
    assert "| fc2.weight | 4 | 0 | 0.0000 | empty |" in out and "| fc1.weight | 10 | 4 | 0.4000 | nearly empty |" in out
    assert "| all | 14 | 14 | 1.0000 |  |" in out
