"""Results store → DataFrame, tables, plots, `lth-plot`, and the notebooks executed on a small fixture sweep."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml
from nbclient import NotebookClient

from lth import analysis
from lth.analysis import grid, mean_std
from lth.flat import flatten

NOTEBOOKS = os.path.join(os.path.dirname(__file__), "..", "..", "notebooks")


def lth(program: str, *args: str, cwd=None, timeout: int = 600) -> subprocess.CompletedProcess:
    """A console script of this environment (`lth-run`, `lth-plot`) as a user runs it."""
    script = Path(sys.executable).parent / program
    fallback = {"lth-run": ["-m", "lth"], "lth-plot": ["-c", "from lth.analysis import plot_main; plot_main()"]}
    cmd = [str(script)] if script.exists() else [sys.executable, *fallback[program]]
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.run([*cmd, *args], check=False, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, data_root):
    """2 resets × 2 seeds of the smoke lineage, made as users make it: `lth-run -m` (Hydra's basic launcher)."""
    root = tmp_path_factory.mktemp("sweep")
    done = lth("lth-run", "-m", "experiment=smoke", "ticket.reset=rewind,random_reinit", "seed=0,1",
               f"hydra.sweep.dir={root}", "trainer.max_steps=20", "trainer.eval_every=10", f"data.root={data_root}",
               cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def _folder(root: Path, seed: int, reset: str) -> Path:
    """The lineage folder of one job of a multirun."""
    (folder,) = [p.parent for p in root.rglob("rounds.jsonl")
                 if f"seed={seed}," in p.parent.name and f"ticket.reset={reset}," in p.parent.name + ","]
    return folder


def test_load_gives_one_row_per_lineage_and_round_with_varying_config(sweep):
    df = analysis.load(sweep)
    assert len(df) == 8 and df["lineage"].nunique() == 4
    assert analysis.group_columns(df) == ["cfg.ticket.reset"]  # not the seed, not the CLI's run name
    assert {"cfg.seed", "cfg.logger.run_name", "cfg.ticket.reset", "layer_density.hidden.0.weight",
            "early_stop_step"} <= set(df.columns)
    one = df[(df["cfg.seed"] == 1) & (df["cfg.ticket.reset"] == "random_reinit") & (df["round"] == 1)].iloc[0]
    rec = [json.loads(x) for x in (_folder(sweep, 1, "random_reinit") / "rounds.jsonl").read_text().splitlines()]
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


def test_mean_std_is_the_sample_std_and_95_interval_in_percent_and_skips_missing_values():
    # sample std of 50, 70 = 14.142; t_{0.975,1} = 12.706 → half-width 12.706 · 14.142 / √2 = 127.06
    assert mean_std([0.5, 0.7]) == "60.0 ± 14.1 [-67.1, 187.1]"
    assert mean_std([0.5, 0.7], sep="<br>") == "60.0 ± 14.1<br>[-67.1, 187.1]"
    assert mean_std([0.25]) == "25.0"
    assert mean_std([None, float("nan")]) == "–"
    assert mean_std([200, 300], scale=1, digits=0) == "250 ± 71 [-385, 885]"  # half-width 12.706 · 70.71 / √2 = 635.3


def test_grid_puts_mean_std_and_interval_in_each_cell_densest_row_first():
    import pandas as pd

    df = pd.DataFrame({"d": [100.0, 100.0, 50.0, 50.0, 50.0], "v": ["a", "a", "a", "b", "b"],
                       "acc": [0.6, 0.8, 0.5, 0.1, 0.3]})
    assert grid(df, "d", "v", "acc", cols=["a", "b"]).splitlines() == [
        "| d | a | b |", "|---|---:|---:|", "| 100.0 | 70.0 ± 14.1<br>[-57.1, 197.1] | – |",
        "| 50.0 | 50.0 | 20.0 ± 14.1<br>[-107.1, 147.1] |"]


def _ticket_and_reinit():
    """Two densities × ticket and reinit, seeds 0–2 (the ticket also has a seed 3 that no reinit pairs with)."""
    return pd.DataFrame({
        "density %": [50.0] * 7 + [25.0] * 6,
        "variant": ["ticket"] * 4 + ["reinit"] * 3 + ["ticket"] * 3 + ["reinit"] * 3,
        "seed": [0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 0, 1, 2],
        "acc": [0.80, 0.82, 0.84, 0.10, 0.70, 0.71, 0.75, 0.60, 0.58, 0.65, 0.61, 0.60, 0.61]})


def test_paired_grid_differences_by_seed_with_interval_and_verdict():
    df = _ticket_and_reinit()
    # 50%: differences 10, 11, 9 points (seed 3 unpaired): mean 10, std 1, t_{0.975,2} = 4.303 → ± 2.48
    # 25%: differences −1, −2, 4: mean 0.33, std 3.21 → ± 7.99: the interval holds 0
    assert analysis.paired_grid(df, "density %", "variant", "acc", control="reinit", direction=+1).splitlines() == [
        "| density % | ticket − reinit |", "|---|---:|",
        "| 50.0 | +10.0 ± 1.0<br>[+7.5, +12.5]<br>agree |",
        "| 25.0 | +0.3 ± 3.2<br>[-7.7, +8.3]<br>inconclusive |"]
    opposite = analysis.paired_grid(df, "density %", "variant", "acc", control="reinit", direction=-1)
    assert opposite.splitlines()[2].endswith("<br>opposite |")
    no_verdict = analysis.paired_grid(df, "density %", "variant", "acc", control="reinit", direction={})
    assert no_verdict.splitlines()[2] == "| 50.0 | +10.0 ± 1.0<br>[+7.5, +12.5] |"


def test_paired_cells_refuse_two_rows_of_one_seed():
    df = _ticket_and_reinit()
    df.loc[df["density %"] == 25.0, "density %"] = 50.0  # two rounds' rows in one cell
    with pytest.raises(ValueError, match=r"more than one row per seed \(0, 1, 2\) in a cell"):
        analysis.paired_grid(df, "density %", "variant", "acc", control="reinit")


def test_summarize_gives_the_95_interval():
    df = pd.DataFrame({"v": ["a", "a", "b"], "round": [1, 1, 1], "density": [0.5] * 3, "acc": [0.6, 0.8, 0.5]})
    a, b = (row for _, row in analysis.summarize(df, "acc", by="v").iterrows())
    assert a["n"] == 2 and a["mean"] == pytest.approx(0.7)
    assert (a["lo"], a["hi"]) == (pytest.approx(0.7 - 1.270620), pytest.approx(0.7 + 1.270620))  # 12.706 · .1414 / √2
    assert b["n"] == 1 and math.isnan(b["lo"]) and math.isnan(b["hi"])


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
        {"v": "a", "density": 0.5, "mean": pytest.approx(30.0), "std": pytest.approx(14.1421356), "n": 2,
         "lo": pytest.approx(30 - 127.0620474), "hi": pytest.approx(30 + 127.0620474)},  # 12.706 · 14.142 / √2
        {"v": "b", "density": 0.5, "mean": pytest.approx(90.0), "std": pytest.approx(float("nan"), nan_ok=True),
         "n": 1, "lo": pytest.approx(float("nan"), nan_ok=True), "hi": pytest.approx(float("nan"), nan_ok=True)}]
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
    # half-widths t_{0.975,1} · s / √2 = 12.706 · s / √2: 127.06 (s 14.14), 63.53 (s 7.07)
    assert body.split("\n\n") == [
        "### Test accuracy at the end of training (%)",
        "| density % | a | b |\n|---|---:|---:|\n| 100.0 | 70.0 ± 14.1<br>[-57.1, 197.1] | – |\n"
        "| 50.0 | 50.0 | 20.0 ± 14.1<br>[-107.1, 147.1] |",
        "### Test accuracy at the early-stop step (lowest validation loss) (%)",
        "| density % | a | b |\n|---|---:|---:|\n| 100.0 | 65.0 ± 7.1<br>[1.5, 128.5] | – |\n"
        "| 50.0 | 50.0 | 20.0 ± 0.0<br>[20.0, 20.0] |",
        "### Early-stop step",
        "| density % | a | b |\n|---|---:|---:|\n| 100.0 | 15 ± 7<br>[-49, 79] | – |\n| 50.0 | 10 | 35 ± 7<br>[-29, 99] |"]
    axes = fig.axes
    assert len(axes) == 3 and axes[0].get_legend() is not None and axes[1].get_legend() is None
    assert list(axes[0].get_lines()[0].get_ydata()) == pytest.approx([50.0, 70.0])  # a, percent, by density
    assert fig._suptitle.get_text() == "T (mean ± std over seeds)"


def test_density_report_names_the_rule_shows_the_other_and_pairs_with_the_control():
    df = _ticket_and_reinit().rename(columns={"acc": "test_acc"})
    df["density"] = df.pop("density %") / 100
    df["early_stop_test_acc"] = df["test_acc"] - 0.05
    df["early_stop_step"] = 100
    df["early_stop_metric"] = "val_acc"
    df["early_stop_by_val_acc_test_acc"] = df["early_stop_test_acc"]
    df["early_stop_by_val_loss_test_acc"] = df["test_acc"] - 0.10
    body, _ = analysis.density_report(df, "variant", ["ticket", "reinit"], "T", control="reinit")
    parts = body.split("\n\n")
    assert parts[2] == "### Test accuracy at the early-stop step (highest validation accuracy) (%)"
    assert parts[4] == "### Test accuracy at the lowest validation loss (%)"
    # 25%, 10 points below the end: ticket 50, 48, 55 (mean 51, std √13 = 3.61, ± 4.303 · 3.61 / √3 = 8.96),
    # reinit 51, 50, 51 (mean 50.67, std 0.577, ± 1.43)
    assert parts[5].splitlines()[3] == "| 25.0 | 51.0 ± 3.6<br>[42.0, 60.0] | 50.7 ± 0.6<br>[49.2, 52.1] |"
    assert parts[6] == "### Early-stop step"
    assert parts[8].startswith("### Minus reinit at the same density, paired by seed (end of training")
    # every variant shifted alike: the early-stop differences equal the end-of-training ones
    assert parts[9] == parts[11] and parts[9].splitlines()[2] == "| 50.0 | +10.0 ± 1.0<br>[+7.5, +12.5]<br>agree |"


@pytest.mark.parametrize("name", ["lottery_tickets", "criteria_and_signs", "supermask_and_structured"])
def test_notebooks_execute_on_the_fixture_sweep(sweep, name, monkeypatch):
    monkeypatch.setenv("LTH_RESULTS", str(sweep))
    path = os.path.join(NOTEBOOKS, f"{name}.ipynb")
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks with outputs stripped"
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(sweep)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    if name != "supermask_and_structured":  # the sweep has no supermask rounds: that one draws nothing
        assert any("image/png" in o.get("data", {}) for o in outputs), "the executed notebook carries its figures"


@pytest.fixture
def mixed(tmp_path):
    """A folder with two kinds of lineage: 2 seeds of a 3-round IMP lineage (rewind) and a one-round branch of each
    (random_reinit at round 2): `branch.from`/`branch.round` are missing (NaN) for the lineages, set for branches."""
    root = tmp_path / "mixed"
    for seed in (0, 1):
        base = {"name": "lth_mnist1d", "seed": seed, "ticket": {"reset": "rewind"},
                "branch": {"from": None, "round": None}, "logger": {"run_name": f"seed={seed}"}}
        _old_lineage(root / f"seed={seed}", base, [0.6 + 0.1 * seed, 0.62, 0.55])
        branch = {**base, "ticket": {"reset": "random_reinit"}, "branch": {"from": str(root / f"seed={seed}"),
                                                                        "round": 2},
                  "logger": {"run_name": f"branch,seed={seed}"}}
        folder = root / "branches" / f"seed={seed}"
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(yaml.safe_dump(branch))
        (folder / "rounds.jsonl").write_text(json.dumps(
            {"round": 2, "density": 0.25, "test_acc": 0.4, "layer_density": {"fc.weight": 0.25}}) + "\n")
    return root


def test_labels_are_short_names_of_the_varying_keys_without_missing_values(mixed):
    df = analysis.load(mixed)
    assert analysis.group_columns(df) == ["cfg.branch.round", "cfg.ticket.reset"]
    _, (ax,) = analysis.subplots(1)
    analysis.plot_vs_density(ax, df, "test_acc", legend=True)
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["round=2, reset=random_reinit", "reset=rewind"]
    assert analysis.short_names(["cfg.branch.round", "cfg.supermask.round", "cfg.ticket.reset"]) == {
        "cfg.branch.round": "branch.round", "cfg.supermask.round": "supermask.round", "cfg.ticket.reset": "reset"}
    assert analysis._label((None, float("nan")), ["cfg.a.x", "cfg.b.y"]) == "defaults"


def test_legend_sits_below_the_axes_and_their_x_label(cli_sweep):
    df = analysis.load(cli_sweep)
    fig, (ax,) = analysis.subplots(1, 6, 4)
    width = ax.get_position().width
    analysis.plot_vs_density(ax, df, "test_acc", scale=100, legend=True)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend, axes_box = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
    xlabel = ax.xaxis.label.get_window_extent(renderer)
    assert legend.y1 <= xlabel.y0 < axes_box.y0  # under the axes and under the x label: it covers neither
    assert ax.get_position().width == width  # the axes keep their width
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["reset=random_reinit", "reset=rewind",
                                                                    "reset=signed_constant"]
    assert ax.get_xlabel() == "weights remaining (%)" and ax.get_ylabel() == "test accuracy (%)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["100", "50"]


def test_lth_plot_on_a_folder_of_two_kinds_of_lineage(mixed, tmp_path):
    out = tmp_path / "plots"
    done = lth("lth-plot", str(mixed), "--out", str(out), "--format", "png", "svg")
    assert done.returncode == 0, done.stderr
    layer = sorted(p.name for p in (out / "layer_density").iterdir())
    assert layer == ["branches__seed=0.png", "branches__seed=0.svg", "branches__seed=1.png", "branches__seed=1.svg",
                     "seed=0.png", "seed=0.svg", "seed=1.png", "seed=1.svg"]  # one per lineage
    acc = (out / "accuracy_vs_density.svg").read_text()
    assert "<!-- Test accuracy at the end of training — mixed (mean ± std over 2 seeds) -->" in acc
    for text in ("test accuracy (%)", "weights remaining (%)", "round=2, reset=random_reinit", "reset=rewind"):
        assert f"<!-- {text} -->" in acc
    assert "nan" not in " ".join(re.findall(r"<!-- (.*?) -->", acc))
    seed0 = (out / "layer_density" / "seed=0.svg").read_text()
    ticks = re.findall(r"<!-- (.*?) -->", seed0)
    assert "per-layer density: seed=0" in ticks and "weights remaining in the layer (%)" in ticks
    assert {"100", "50", "25"} <= set(ticks) and not [t for t in ticks if "10^" in t or "times" in t]


def test_plot_layer_density_defaults_to_the_longest_lineage(mixed):
    ax = analysis.plot_layer_density(analysis.load(mixed))
    assert list(ax.get_lines()[0].get_xdata()) == [0, 1, 2] and ax.get_title() == "per-layer density: seed=0"


def test_lth_plot_on_a_missing_folder_is_one_error_line(tmp_path):
    done = lth("lth-plot", str(tmp_path / "nothing"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"lth-plot: error: no results at {tmp_path / 'nothing'}\n"
    (tmp_path / "empty").mkdir()
    done = lth("lth-plot", str(tmp_path / "empty"))
    assert done.returncode == 2 and done.stderr == f"lth-plot: error: no finished rounds at {tmp_path / 'empty'}\n"


def test_results_folder_takes_a_relative_path_from_where_the_command_was_typed(tmp_path, monkeypatch):
    (tmp_path / "user" / "runs" / "x").mkdir(parents=True)
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")  # where Jupyter starts the kernel
    monkeypatch.setenv("PWD", str(tmp_path / "user"))  # the shell's folder, inherited by the kernel
    monkeypatch.setenv("LTH_RESULTS", "runs/x")
    assert analysis.results_folder() == (tmp_path / "user" / "runs" / "x").resolve()
    monkeypatch.setenv("LTH_RESULTS", str(tmp_path / "abs"))
    assert analysis.results_folder() == tmp_path / "abs"
    monkeypatch.setenv("LTH_RESULTS", "runs/none")
    with pytest.raises(FileNotFoundError, match="no results at runs/none"):
        analysis.results_folder()


def _gradual_folder(path: Path, final: float, acc: float) -> None:
    """A gradual run's folder as the gradual kind writes it: config.yaml and one record with its schedule."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "gradual": {"final_density": final}}))
    schedule = [{"step": 10, "target": 0.5, "density": 0.5, "kept": 50, "layer_density": {"fc.weight": 0.5}},
                {"step": 20, "target": final, "density": final, "kept": int(100 * final),
                 "layer_density": {"fc.weight": final}}]
    record = {"round": 0, "density": final, "layer_density": {"fc.weight": final}, "test_acc": acc,
              "train_steps": 40, "kind": "gradual", "gradual_schedule": schedule, "record_version": 2}
    (path / "rounds.jsonl").write_text(json.dumps(record) + "\n")


def test_gradual_schedules_as_rows_and_density_against_step(tmp_path):
    _gradual_folder(tmp_path / "runs" / "a", 0.1, 0.8)
    _gradual_folder(tmp_path / "runs" / "b", 0.2, 0.9)
    df = analysis.load(tmp_path / "runs")
    rows = analysis.gradual_schedule(df)
    assert rows[["lineage", "step", "density", "kept", "cfg.gradual.final_density"]].values.tolist() == [
        ["a", 10, 0.5, 50, 0.1], ["a", 20, 0.1, 10, 0.1], ["b", 10, 0.5, 50, 0.2], ["b", 20, 0.2, 20, 0.2]]
    assert rows["final_test_acc"].tolist() == [0.8, 0.8, 0.9, 0.9]
    assert rows["layer_density.fc.weight"].tolist() == [0.5, 0.1, 0.5, 0.2]
    ax = analysis.plot_density_vs_step(None, df, label="cfg.gradual.final_density")
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["0.1", "0.2"]
    assert list(lines[0].get_xdata()) == [0, 10, 20, 40] and list(lines[0].get_ydata()) == [1.0, 0.5, 0.1, 0.1]
    assert analysis.gradual_schedule(df[df["lineage"] == "none"]).empty
    written = analysis.plot_all(tmp_path / "runs", tmp_path / "plots")
    assert tmp_path / "plots" / "density_vs_step.png" in written
# ----- linear mode connectivity


def _stability_frame():
    rows = []
    for seed, (i0, i1) in enumerate(((0.10, 0.01), (0.14, 0.03))):
        for variant, d, acc, ins in (("θ0", 1.0, 0.92, i0), ("θ0", 0.4, 0.88, i0), ("θk", 1.0, 0.92, i1),
                                     ("θk", 0.4, 0.915, i1)):
            rows.append({"variant": variant, "seed": seed, "density": d, "test_acc": acc, "instability_test": ins,
                         "stability_rewind_step": 0 if variant == "θ0" else 75, "round": 0 if d == 1.0 else 1})
    return pd.DataFrame(rows)


def test_path_rows_and_load_paths_read_every_round_s_path(tmp_path):
    for name, rounds in (("a", (0, 1)), ("b", (0,))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "rounds.jsonl").write_text("")
        for r in rounds:
            (tmp_path / name / f"round_{r:02d}").mkdir()
            (tmp_path / name / f"round_{r:02d}" / "stability.jsonl").write_text(
                "".join(json.dumps({"alpha": a, "test_error": r + a}) + "\n" for a in (0.0, 0.5, 1.0)))
    rows = analysis.path_rows(tmp_path / "a")
    assert [(x["round"], x["alpha"], x["test_error"]) for x in rows] == [
        (0, 0.0, 0.0), (0, 0.5, 0.5), (0, 1.0, 1.0), (1, 0.0, 1.0), (1, 0.5, 1.5), (1, 1.0, 2.0)]
    df = analysis.load_paths(tmp_path)
    assert len(df) == 9 and sorted(df["lineage"].unique()) == ["a", "b"]


def test_plot_paths_and_instability_vs_k_draw_the_means_and_the_threshold():
    paths = pd.DataFrame([{"start": s, "seed": seed, "alpha": a, "test_error": e + 0.1 * seed}
                          for s, curve in (("θ0", (0.1, 0.3, 0.1)), ("θk", (0.1, 0.1, 0.1)))
                          for seed in (0, 1) for a, e in zip((0.0, 0.5, 1.0), curve)])
    ax = analysis.plot_paths(None, paths, "start", order=["θ0", "θk"])
    first = ax.get_lines()[0]
    assert list(first.get_xdata()) == [0.0, 0.5, 1.0]
    assert list(first.get_ydata()) == pytest.approx([15.0, 35.0, 15.0])  # mean over seeds, in %
    ax = analysis.plot_instability_vs(None, _stability_frame()[lambda d: d["round"] == 0], by="variant")
    ys = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
    assert ys["θ0"] == pytest.approx([12.0]) and ys["θk"] == pytest.approx([2.0])
    assert ys["stable below 2%"] == [2.0, 2.0]


def test_instability_vs_density_marks_matching_points_filled():
    df = _stability_frame()
    assert list(analysis.matching(df, 0.92, 0.01)) == [True, False, True, True] * 2
    ax = analysis.plot_instability_vs_density(None, df, 0.92, "variant", order=["θ0", "θk"], tolerance=0.01)
    marks = [(round(float(line.get_xdata()[0]), 3), round(float(line.get_ydata()[0]), 3), line.get_markerfacecolor())
             for line in ax.get_lines() if line.get_linestyle() == "None" and len(line.get_xdata()) == 1]
    hollow = {(x, y) for x, y, face in marks if face == "none"}
    assert hollow == {(0.4, 12.0)}  # θ0 at 40%: 88% < 92% − 1 point; every other point matches
    assert len(marks) == 4
