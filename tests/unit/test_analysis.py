"""Results store → DataFrame, plots, `lth-plot`, and the notebooks executed on a small fixture sweep."""

import json
import os

import nbformat
import pytest
from nbclient import NotebookClient

from lth import analysis
from lth.cli import compose_config
from lth.runner import run

NOTEBOOKS = os.path.join(os.path.dirname(__file__), "..", "..", "notebooks")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, data_root):
    """2 resets × 2 seeds of the smoke lineage, laid out like a Hydra multirun."""
    root = tmp_path_factory.mktemp("sweep")
    for reset in ("rewind", "random_reinit"):
        for seed in (0, 1):
            cfg = compose_config(["experiment=smoke", f"data.root={data_root}", f"ticket.reset={reset}", f"seed={seed}"])
            run(cfg, root / f"seed={seed},ticket.reset={reset}", sinks=[])
    return root


def test_load_gives_one_row_per_lineage_and_round_with_varying_config(sweep):
    df = analysis.load(sweep)
    assert len(df) == 8 and df["lineage"].nunique() == 4
    assert set(analysis.group_columns(df)) == {"cfg.ticket.reset"}
    assert {"cfg.seed", "cfg.ticket.reset", "layer_density.hidden.0.weight", "early_stop_step"} <= set(df.columns)
    one = df[(df["cfg.seed"] == 1) & (df["cfg.ticket.reset"] == "random_reinit") & (df["round"] == 1)].iloc[0]
    rec = [json.loads(x) for x in (sweep / "seed=1,ticket.reset=random_reinit" / "rounds.jsonl").read_text().splitlines()]
    assert one["test_acc"] == rec[1]["test_acc"] and one["density"] == 0.5


def test_summarize_mean_and_std_over_seeds(sweep):
    df = analysis.load(sweep)
    s = analysis.summarize(df, "test_acc")
    row = s[(s["cfg.ticket.reset"] == "rewind") & (s["round"] == 1)].iloc[0]
    accs = df[(df["cfg.ticket.reset"] == "rewind") & (df["round"] == 1)]["test_acc"]
    assert row["n"] == 2 and row["mean"] == pytest.approx(accs.mean()) and row["std"] == pytest.approx(accs.std())


def test_lth_plot_writes_figures(sweep, tmp_path):
    analysis.plot_main([str(sweep), "--out", str(tmp_path), "--format", "png", "svg"])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "accuracy_vs_density.png" in names and "accuracy_vs_density.svg" in names
    assert (tmp_path / "accuracy_vs_density.png").stat().st_size > 5000


def test_load_errors_clearly_on_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results at"):
        analysis.load(tmp_path / "nothing")


@pytest.mark.parametrize("name", ["lottery_tickets", "criteria_and_signs", "supermask_and_structured"])
def test_notebooks_execute_on_the_fixture_sweep(sweep, name, monkeypatch):
    monkeypatch.setenv("LTH_RESULTS", str(sweep))
    path = os.path.join(NOTEBOOKS, f"{name}.ipynb")
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks with outputs stripped"
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(sweep)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
