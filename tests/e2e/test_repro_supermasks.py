"""scripts/repro_supermasks.py end to end in its quick mode: lineages, records, page and figure."""

import importlib.util
from pathlib import Path

import pytest
import torch

from lth.record import RunFolder
from lth.supermask import heuristic_masks

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "repro_supermasks.py"
SEEDS, DENSITIES, KS = (0, 1), (0.1, 0.5), (0.3, 1.0)


def _script():
    spec = importlib.util.spec_from_file_location("repro_supermasks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def study(tmp_path_factory, data_root):
    """The quick study, run once for every test of this file: (script module, frame, out dir, page)."""
    tmp = tmp_path_factory.mktemp("supermasks")
    script = _script()
    out, page = tmp / "out", tmp / "supermasks.md"
    torch.set_num_threads(1)
    df = script.main(["--quick", "--workers", "1", "--out", str(out), "--page", str(page),
                      "--data-root", str(data_root), "--seeds", *map(str, SEEDS)])
    return script, df, out, page


@pytest.mark.slow
def test_page_and_figure(study):
    script, _, _, page = study
    text = page.read_text()
    assert "<!-- results:start -->" in text and "<!-- results:end -->" in text
    assert "| density | " + " | ".join(script.HEURISTICS) + " |" in text
    assert "| k | " + " | ".join(script.EDGE_POPUP) + " |" in text
    assert "| weights | test accuracy (%) | learned density (%) |" in text
    for name in script.BERNOULLI:
        assert f"| {name} | " in text
    for d in DENSITIES:
        assert f"\n| {d:g} | " in text
    for k in KS:
        assert f"\n| {k:g} | " in text
    assert "Dense source" in text and "![" in text
    png = page.with_suffix(".png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


@pytest.mark.slow
def test_lineages(study):
    _, df, _, _ = study
    assert set(df["seed"]) == set(SEEDS)
    lineages = df.groupby("method")["folder"].nunique().to_dict()
    # per seed: 1 dense, 4 heuristics, 3 inits × 2 ks less the scaled k = 1 (the unscaled one), 4 Bernoulli
    assert lineages == {"dense": 2, "heuristic": 8, "edge_popup": 10, "bernoulli": 8}
    # one round per lineage, except the heuristics: one per density
    assert df["method"].value_counts().to_dict() == {"dense": 2, "heuristic": 16, "edge_popup": 10, "bernoulli": 8}
    assert (df["status"] == "ok").all()
    assert set(df[df["method"] == "dense"]["train_steps"]) == {20}
    learned = df[df["method"].isin(["edge_popup", "bernoulli"])]
    assert set(learned["train_steps"]) == {20} and not learned["trained"].any()
    bern = df[df["method"] == "bernoulli"]
    assert (bern["supermask"] == "bernoulli").all() and bern["density"].between(0.05, 0.95).all()
    for (_, variant), g in bern.groupby(["seed", "variant"]):
        assert bool(g["rescale"].iloc[0]) == variant.endswith("rescaled")


@pytest.mark.slow
def test_heuristic_densities_and_source(study):
    script, df, out, _ = study
    h = df[df["method"] == "heuristic"]
    assert not h["trained"].any() and h["early_stop_step"].isna().all()
    for folder, g in h.groupby("folder"):
        g = g.sort_values("round")
        assert list(g["round"]) == list(range(len(DENSITIES)))
        # the record's density is the realised one: the requested density to one weight per layer
        assert g["density"].tolist() == pytest.approx(list(DENSITIES), abs=1e-3)
        seed = int(g["seed"].iloc[0])
        assert set(g["source"]) == {str(out / f"seed{seed}" / "dense")} and set(g["source_round"]) == {0}
    for seed in SEEDS:
        source = RunFolder(out / f"seed{seed}" / "dense", writer=False)
        w0 = source.load_snapshots()["snapshots"]["init"]
        wf = source.load_trained(0)
        for name, extra in script.HEURISTICS.items():
            criterion = extra[0].split("=")[1]
            if criterion == "random":
                continue
            run = RunFolder(out / f"seed{seed}" / "heuristic" / script._slug(name), writer=False)
            names = list(run.load_mask(0))
            for r, d in enumerate(DENSITIES):
                expected = heuristic_masks(criterion, {n: w0[n] for n in names}, {n: wf[n] for n in names}, d)
                mask = run.load_mask(r)
                assert all(torch.equal(mask[n], expected[n]) for n in names), (name, d)
            if "θ0" in name:  # the frozen weights are the source's θ0 itself
                frozen = run.load_snapshots()["snapshots"]["init"]
                assert all(torch.equal(frozen[n], w0[n]) for n in names)


@pytest.mark.slow
def test_edge_popup_density_is_k(study):
    script, df, _, _ = study
    e = df[df["method"] == "edge_popup"]
    assert sorted(set(e["k"])) == sorted(KS)
    for _, row in e.iterrows():
        assert row["density"] == pytest.approx(row["k"], abs=1e-3)
    assert (e[e["k"] == 1.0]["density"] == 1.0).all()
    assert set(e[e["k"] == 1.0]["variant"]) == {"Kaiming normal", "signed Kaiming constant"}
    assert (e["scale_fan"] == (e["variant"] == script.SCALED)).all()
    # the report shows the unscaled k = 1 lineages in the scaled column too
    shown = script.edge_popup_frame(df)
    assert len(shown[(shown["variant"] == script.SCALED) & (shown["k"] == 1.0)]) == len(SEEDS)
