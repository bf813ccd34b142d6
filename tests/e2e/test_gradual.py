"""Gradual magnitude pruning as users type it: `lth-run experiment=gmp_mlp_mnist1d ...` on tiny settings, its files and
record, `lth-plot` on its folder, and a bad schedule refused with one error line and no folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lth import masks as masks_lib


def lth(program: str, *args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """A console script of this environment (`lth-run`, `lth-plot`) as a user runs it."""
    script = Path(sys.executable).parent / program
    fallback = {"lth-run": ["-m", "lth"], "lth-plot": ["-c", "from lth.analysis import plot_main; plot_main()"]}
    cmd = [str(script)] if script.exists() else [sys.executable, *fallback[program]]
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.run([*cmd, *args], check=False, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_lth_run_gmp_mlp_mnist1d_on_tiny_settings(tmp_path, data_root):
    # pruning steps 8, 12, 16, 20 at s_t = 0.05 + 0.95 (1 − (t − 4)/16)³; MLP 40-500-500-10: 20000 + 250000 + 5000
    p = lth("lth-run", "experiment=gmp_mlp_mnist1d", "trainer.max_steps=24", "trainer.eval_every=12",
            "gradual.final_density=0.05", "gradual.start_step=4", "gradual.every=4", "gradual.prunings=4",
            f"data.root={data_root}", "data.num_train=500", "trainer.threads=1", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    (folder,) = [f.parent for f in tmp_path.rglob("rounds.jsonl")]
    assert folder.parent.name == "gmp_mlp_mnist1d"
    (rec,) = [json.loads(x) for x in (folder / "rounds.jsonl").read_text().splitlines()]
    assert rec["kind"] == "gradual" and rec["train_steps"] == 24 and 0 <= rec["test_acc"] <= 1
    assert [e["step"] for e in rec["gradual_schedule"]] == [8, 12, 16, 20]
    # s_t = 0.45078125, 0.16875, 0.06484375, 0.05; layerwise: round_half_even(s_t × n) for n = 20000, 250000, 5000:
    # 9015.625, 112695.3125, 2253.90625 | 3375, 42187.5 (→ even 42188), 843.75 | 1296.875, 16210.9375, 324.21875 |
    # 1000, 12500, 250
    sizes = {"hidden.0.weight": 20000, "hidden.1.weight": 250000, "output.weight": 5000}
    expected = [{"hidden.0.weight": 9016, "hidden.1.weight": 112695, "output.weight": 2254},
                {"hidden.0.weight": 3375, "hidden.1.weight": 42188, "output.weight": 844},
                {"hidden.0.weight": 1297, "hidden.1.weight": 16211, "output.weight": 324},
                {"hidden.0.weight": 1000, "hidden.1.weight": 12500, "output.weight": 250}]
    assert [{n: round(d * sizes[n]) for n, d in e["layer_density"].items()} for e in rec["gradual_schedule"]] \
        == expected
    assert rec["density"] == 13750 / 275000
    for t, kept in zip((8, 12, 16, 20), expected):
        mask = masks_lib.load(folder / "round_00" / "masks" / f"step_{t:06d}.pt")
        assert {n: int(m.sum()) for n, m in mask.items()} == kept
    plot = lth("lth-plot", str(folder.parent), cwd=tmp_path)
    assert plot.returncode == 0, plot.stderr[-3000:]
    assert (folder.parent / "plots" / "density_vs_step.png").exists()


@pytest.mark.slow  # a subprocess start-up (~10 s)
def test_a_bad_schedule_is_one_error_line_and_no_folder(tmp_path):
    p = lth("lth-run", "experiment=gmp_digits", "gradual.start_step=300", cwd=tmp_path)
    assert p.returncode != 0
    assert ("lth-run: error: gradual schedule ends at step 500 = gradual.start_step 300 + gradual.prunings 10 × "
            "gradual.every 20, not before the end of training trainer.max_steps=400") in p.stderr
    assert not list(tmp_path.rglob("config.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp_fork", "ddp_spawn"])
def test_a_gradual_run_in_two_processes_records_what_one_process_does(tmp_path, data_root, strategy):
    from lth.cli import compose_config
    from lth.runner import run

    args = ["experiment=smoke", f"data.root={data_root}", "ticket.rounds=0", "trainer.max_steps=40",
            "gradual.final_density=0.1", "gradual.start_step=10", "gradual.every=5", "gradual.prunings=4"]
    (ddp,) = run(compose_config([*args, "trainer=ddp_cpu", f"trainer.strategy={strategy}"]), tmp_path / "ddp",
                 sinks=[])
    (one,) = run(compose_config(args), tmp_path / "one", sinks=[])
    # the workers' schedule, masks and evaluations came back to the process that writes the record
    assert [(e["step"], e["kept"]) for e in ddp["gradual_schedule"]] == \
        [(e["step"], e["kept"]) for e in one["gradual_schedule"]] == [(15, 1136), (20, 503), (25, 270), (30, 237)]
    assert ddp["density"] == one["density"] == 237 / 2368 and ddp["early_stop_step"] == one["early_stop_step"] == 40
    files = sorted(str(p.relative_to(tmp_path / "ddp")) for p in (tmp_path / "ddp").rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(tmp_path / "one")) for p in (tmp_path / "one").rglob("*") if p.is_file())
    final = masks_lib.load(tmp_path / "ddp" / "round_00" / "mask.pt")
    last = masks_lib.load(tmp_path / "ddp" / "round_00" / "masks" / "step_000030.pt")
    assert all(torch.equal(final[n], last[n]) for n in final)
    w = torch.load(tmp_path / "ddp" / "round_00" / "trained.pt", weights_only=True)
    assert all(torch.all(w[n][~final[n]] == 0) for n in final)
