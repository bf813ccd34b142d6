"""experiment=lth_mnist1d_notebook through the CLI: one fast round of the MNIST-1D notebook's own setup."""

import subprocess
import sys

import pytest
import torch

from lth.record import RunFolder

pytestmark = pytest.mark.slow


def test_notebook_preset_runs_a_fast_round_with_biases_pruned_and_all_training_data(tmp_path, data_root):
    out = tmp_path / "nb"
    proc = subprocess.run([sys.executable, "-m", "lth", "experiment=lth_mnist1d_notebook", "debug=fast",
                           f"data.root={data_root}", f"out_dir={out}", "logger=none"],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = RunFolder(out, writer=False)
    rec = {r["round"]: r for r in run.rounds()}
    masks = run.load_mask(1)
    assert list(masks) == ["hidden.0.weight", "hidden.0.bias", "hidden.1.weight", "hidden.1.bias",
                           "output.weight", "output.bias"]
    # 20% of every layer's weights + bias, the output layer too: 40·500 + 500 = 20,500 → 4,100 go;
    # 500·500 + 500 = 250,500 → 50,100 go; 500·10 + 10 = 5,010 → 1,002 go
    for layer, total in (("hidden.0", 20_500), ("hidden.1", 250_500), ("output", 5_010)):
        assert int(masks[f"{layer}.weight"].sum() + masks[f"{layer}.bias"].sum()) == total - total // 5
    assert rec[1]["density"] == 0.8
    init = run.load_snapshots()["snapshots"]["init"]
    bound = 1 / 40 ** 0.5  # PyTorch's default init: U(±1/sqrt(fan_in)) for the weights and the bias
    assert bool((init["hidden.0.bias"] != 0).all()) and float(init["hidden.0.bias"].abs().max()) <= bound
    assert float(init["hidden.0.weight"].abs().max()) <= bound
    assert rec[0]["early_stop_step"] is None  # no validation split: all 4,000 examples train
    assert torch.equal(run.load_trained(1)["output.bias"][~masks["output.bias"]],
                       torch.zeros(int((~masks["output.bias"]).sum())))
