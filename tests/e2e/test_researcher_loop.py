"""The researcher's loop as the README shows it: a sweep from the command line, `lth-plot`, the notebook.

The three commands are read from the README's "Sweeps, W&B and analysis" block and typed into a shell in a temporary
folder, unchanged but for a tiny size (overrides appended to the sweep) and the notebook's path (the repository's
`notebooks/`, since the shell is not in the repository).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from lth import analysis

REPO = Path(__file__).resolve().parents[2]
TINY = ["trainer.max_steps=20", "trainer.eval_every=10", "trainer.checkpoint_every=0", "ticket.rounds=1"]
RESETS = ("rewind", "random_reinit", "reshuffle", "signed_constant", "signed_reinit", "rand_signed_constant")


def readme_commands() -> dict[str, str]:
    """The README's sweep preset, `lth-plot` and notebook commands (comments dropped)."""
    text = (REPO / "README.md").read_text()
    block = text.split("## Sweeps, W&B and analysis", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines()]
    pick = {"sweep": lambda c: c.startswith("lth-run -m sweep=reset_controls"),
            "plot": lambda c: c.startswith("lth-plot "),
            "notebook": lambda c: "jupyter nbconvert" in c}
    return {k: next(c for c in lines if f(c)) for k, f in pick.items()}


def shell(command: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """`command` typed into bash in `cwd`, with this Python's scripts first on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "WANDB_MODE": "offline"}
    env.pop("PWD", None)  # bash sets it to `cwd`, as a terminal would
    return subprocess.run(["bash", "-c", command], check=False, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def git_status() -> str:
    """`git status --porcelain` of the repository (untracked files included)."""
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout


@pytest.mark.slow
def test_readme_sweep_then_lth_plot_then_the_notebook(tmp_path, data_root):
    before = git_status()
    cmd = readme_commands()
    results = Path(shlex.split(cmd["plot"])[1])
    assert results == Path("runs/lth_mnist1d") and f"LTH_RESULTS={results}" in cmd["notebook"]

    sweep = shell(" ".join([cmd["sweep"], *TINY, f"data.root={data_root}"]), tmp_path)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    df = analysis.load(tmp_path / results)
    assert df["lineage"].nunique() == 18 and len(df) == 36
    assert {"cfg.seed", "cfg.logger.run_name", "cfg.ticket.reset"} <= set(df.columns)
    assert analysis.group_columns(df) == ["cfg.ticket.reset"]  # not the seeds, not the run names

    plot = shell(cmd["plot"], tmp_path)
    assert plot.returncode == 0 and not plot.stderr.strip().startswith("Traceback"), plot.stderr[-3000:]
    plots = tmp_path / results / "plots"
    for name in ("accuracy_vs_density", "early_stop_acc_vs_density", "early_stop_step_vs_density"):
        assert (plots / f"{name}.png").stat().st_size > 10_000
    assert len(list((plots / "layer_density").glob("*.png"))) == 18  # one per lineage
    svg = shell(f"{cmd['plot']} --out svg --format svg", tmp_path)
    assert svg.returncode == 0, svg.stderr[-3000:]
    texts = re.findall(r"<!-- (.*?) -->", (tmp_path / "svg" / "accuracy_vs_density.svg").read_text())
    assert sorted(t for t in texts if t.startswith("reset=")) == sorted(f"reset={r}" for r in RESETS)
    assert not [t for t in texts if "nan" in t or "run_name" in t or "seed=" in t]
    assert "test accuracy (%)" in texts and "weights remaining (%)" in texts
    assert any("mean ± std over 3 seeds" in t for t in texts)
    ax = analysis.plot_vs_density(None, df, "test_acc", scale=100, legend=True)
    assert len(ax.get_lines()) == 6 and len(ax.collections) == 6  # 6 mean lines, 6 std bands
    assert (analysis.summarize(df, "test_acc")["n"] == 3).all()
    assert any(p.get_extents().height > 0 for band in ax.collections for p in band.get_paths())

    notebook = cmd["notebook"].replace("notebooks/", f"{REPO / 'notebooks'}/")
    run = shell(notebook, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    nb = nbformat.read(tmp_path / results / "lottery_tickets.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "36 rows; 18 lineages; lines grouped by: ['cfg.ticket.reset']" in printed
    assert git_status() == before
