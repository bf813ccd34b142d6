"""Results store → DataFrame, tables, plots, `lth-plot`, and the notebooks executed on a small fixture sweep."""

import json
import os

import nbformat
import pandas as pd
import pytest
import yaml
from nbclient import NotebookClient

from lth import analysis
from lth.analysis import grid, mean_std
from lth.cli import compose_config
from lth.flat import flatten
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


def test_mean_std_is_the_sample_std_in_percent_and_skips_missing_values():
    assert mean_std([0.5, 0.7]) == "60.0 ± 14.1"  # sample std of 50, 70 = 14.142
    assert mean_std([0.25]) == "25.0"
    assert mean_std([None, float("nan")]) == "–"
    assert mean_std([200, 300], scale=1, digits=0) == "250 ± 71"


def test_grid_puts_mean_and_std_in_each_cell_densest_row_first():
    import pandas as pd

    df = pd.DataFrame({"d": [100.0, 100.0, 50.0, 50.0, 50.0], "v": ["a", "a", "a", "b", "b"],
                       "acc": [0.6, 0.8, 0.5, 0.1, 0.3]})
    assert grid(df, "d", "v", "acc", cols=["a", "b"]).splitlines() == [
        "| d | a | b |", "|---|---:|---:|", "| 100.0 | 70.0 ± 14.1 | – |", "| 50.0 | 50.0 | 20.0 ± 14.1 |"]


def test_markdown_table_layout():
    assert analysis.markdown(["density %", "a", "b"], [["50.0", "1.0 ± 0.5", 2]]).splitlines() == [
        "| density % | a | b |", "|---|---:|---:|", "| 50.0 | 1.0 ± 0.5 | 2 |"]


def test_flatten_and_config_columns():
    cfg = {"a": {"b": 1, "c": [1, 2], "d": {}}, "e": None}
    assert flatten(cfg) == {"a.b": 1, "a.c": [1, 2], "a.d": {}, "e": None}
    assert flatten({"x": 1}, prefix="cfg.") == {"cfg.x": 1}
    assert analysis.config_columns(cfg) == {"a.b": 1, "a.c": "[1, 2]", "a.d": "{}", "e": None}


def _old_lineage(folder, config, accs):
    """A lineage folder as older versions wrote it: config.yaml and hand-written rounds.jsonl lines."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    lines = [json.dumps({"round": r, "density": 0.5 ** r, "test_acc": a, "layer_density": {"fc.weight": 0.5 ** r}})
             for r, a in enumerate(accs)]
    (folder / "rounds.jsonl").write_text("\n".join(lines) + "\n\n")


RESETS = ("rewind", "random_reinit", "signed_constant")


@pytest.fixture
def cli_sweep(tmp_path):
    """`lth-run -m ticket.reset=rewind,random_reinit,signed_constant seed=0,1,2`: 3 resets × 3 seeds, each with its
    own run name, out_dir, derived seeds and source path; test_acc = 0.5 + 0.1·seed (round 0), 0.1·i + 0.1·seed (1)."""
    root = tmp_path / "multirun"
    for i, reset in enumerate(RESETS):
        for seed in (0, 1, 2):
            job = f"seed={seed},ticket.reset={reset}"
            cfg = {"name": "lth_mnist1d", "seed": seed, "out_dir": str(root / job),
                   "data": {"name": "mnist1d", "root": "data"},
                   "pruning": {"fraction": 0.5, "seed": seed, "overrides": {}},
                   "ticket": {"rounds": 1, "reset": reset, "reset_seed": 100 + seed},
                   "trainer": {"threads": 1, "max_steps": 10},
                   "branch": {"from": f"/runs/source/seed{seed}"},
                   "logger": {"run_name": job, "tags": [reset, f"s{seed}"]}}
            _old_lineage(root / job, cfg, [0.5 + 0.1 * seed, 0.1 * i + 0.1 * seed])
    return root


def test_a_cli_sweep_of_resets_and_seeds_groups_by_reset_only(cli_sweep):
    df = analysis.load(cli_sweep)
    assert len(df) == 18 and df["lineage"].nunique() == 9
    assert {"cfg.seed", "cfg.out_dir", "cfg.logger.run_name", "cfg.pruning.seed", "cfg.branch.from"} <= set(df.columns)
    assert analysis.group_columns(df) == ["cfg.ticket.reset"]
    assert df["layer_density.fc.weight"].tolist() == [1.0, 0.5] * 9
    s = analysis.summarize(df, "test_acc")
    assert len(s) == 6 and (s["n"] == 3).all()  # 3 groups × 2 rounds, each over the 3 seeds
    for i, reset in enumerate(RESETS):
        r0, r1 = (s[(s["cfg.ticket.reset"] == reset) & (s["round"] == r)].iloc[0] for r in (0, 1))
        assert r0["mean"] == pytest.approx(0.6) and r0["std"] == pytest.approx(0.1) and r0["density"] == 1.0
        assert r1["mean"] == pytest.approx(0.1 * i + 0.1) and r1["std"] == pytest.approx(0.1)


def test_plot_vs_density_draws_a_mean_line_and_std_band_per_group(cli_sweep):
    df = analysis.load(cli_sweep)
    fig, (ax,) = analysis.subplots(1)
    analysis.plot_vs_density(ax, df, "test_acc", legend=True)
    # one line per reset (first-appearance order of the sorted folders), not per seed × reset
    assert [line.get_label() for line in ax.get_lines()] == ["reset=random_reinit", "reset=rewind",
                                                              "reset=signed_constant"]
    line, band = ax.get_lines()[0], ax.collections[0]  # random_reinit: 0.6 ± 0.1 at density 1, 0.2 ± 0.1 at 0.5
    assert list(line.get_xdata()) == [0.5, 1.0] and list(line.get_ydata()) == pytest.approx([0.2, 0.6])
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(0.1) and ys.max() == pytest.approx(0.7)  # ±1 std of the 3 seeds
    assert len(ax.collections) == 3 and list(band.get_facecolor()[0][:3]) == pytest.approx(_rgb(line.get_color()))
    assert ax.get_xscale() == "log" and ax.xaxis_inverted()
    analysis.save_figure(fig, cli_sweep / "f.png")
    assert (cli_sweep / "f.png").stat().st_size > 1000


def _rgb(color):
    from matplotlib.colors import to_rgb

    return list(to_rgb(color))


def test_summarize_per_density_with_scale_and_the_plot_s_order_labels_and_bands():
    df = pd.DataFrame({"v": ["a", "a", "b", "b"], "density": [0.5000001, 0.5, 0.5, 1.0], "round": [1, 2, 1, 0],
                       "acc": [0.2, 0.4, 0.9, 0.8]})
    s = analysis.summarize(df, "acc", by="v", at="density", scale=100)
    assert s.to_dict("records")[:2] == [
        {"v": "a", "density": 0.5, "mean": pytest.approx(30.0), "std": pytest.approx(14.1421356), "n": 2},
        {"v": "b", "density": 0.5, "mean": pytest.approx(90.0), "std": pytest.approx(float("nan"), nan_ok=True),
         "n": 1}]
    _, (ax,) = analysis.subplots(1)
    analysis.plot_vs_density(ax, df, "acc", by="v", order=["b", "a", "missing"], band=None, at="density")
    assert [line.get_label() for line in ax.get_lines()] == ["b", "a"] and not ax.collections
    assert list(ax.get_lines()[0].get_xdata()) == [0.5, 1.0]
    with pytest.raises(ValueError, match="band"):
        analysis.plot_vs_density(ax, df, "acc", by="v", band="sem")
    ax2 = analysis.plot_vs(None, df.assign(k=[0.1, 0.1, 0.3, 0.3]), "k", "acc", by=["v", "round"])
    assert [line.get_label() for line in ax2.get_lines()] == ["v=a, round=1", "v=a, round=2", "v=b, round=1",
                                                              "v=b, round=0"]
    assert not ax2.xaxis_inverted() and ax2.get_xlabel() == "k"


def test_density_report_tables_and_figure():
    df = pd.DataFrame({"variant": ["a", "a", "a", "b", "b"], "seed": [0, 1, 0, 0, 1],
                       "density": [1.0, 1.0, 0.5, 0.5, 0.5], "test_acc": [0.6, 0.8, 0.5, 0.1, 0.3],
                       "early_stop_test_acc": [0.6, 0.7, 0.5, 0.2, 0.2], "early_stop_step": [10, 20, 10, 30, 40]})
    body, fig = analysis.density_report(df, "variant", ["a", "b"], "T")
    assert body.split("\n\n") == [
        "### Test accuracy at the end of training (%)",
        "| density % | a | b |\n|---|---:|---:|\n| 100.0 | 70.0 ± 14.1 | – |\n| 50.0 | 50.0 | 20.0 ± 14.1 |",
        "### Test accuracy at the early-stop step (minimum validation loss) (%)",
        "| density % | a | b |\n|---|---:|---:|\n| 100.0 | 65.0 ± 7.1 | – |\n| 50.0 | 50.0 | 20.0 ± 0.0 |",
        "### Early-stop step",
        "| density % | a | b |\n|---|---:|---:|\n| 100.0 | 15 ± 7 | – |\n| 50.0 | 10 | 35 ± 7 |"]
    axes = fig.axes
    assert len(axes) == 3 and axes[0].get_legend() is not None and axes[1].get_legend() is None
    assert list(axes[0].get_lines()[0].get_ydata()) == pytest.approx([50.0, 70.0])  # a, percent, by density
    assert fig._suptitle.get_text() == "T (mean ± std over seeds)"


@pytest.mark.parametrize("name", ["lottery_tickets", "criteria_and_signs", "supermask_and_structured"])
def test_notebooks_execute_on_the_fixture_sweep(sweep, name, monkeypatch):
    monkeypatch.setenv("LTH_RESULTS", str(sweep))
    path = os.path.join(NOTEBOOKS, f"{name}.ipynb")
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks with outputs stripped"
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(sweep)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
