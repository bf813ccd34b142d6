"""The benchmark suite: a quick run writes every figure and meets the structural targets; the target and timing logic."""

import json
import math
from dataclasses import replace

import pytest
import torch

from benchmarks import common, harness, memory, pruning, startup, step

CONTENDERS = {"raw", "lightning", "lth"}
STEP_FIELDS = ("ms_per_step", "cpu_ms_per_step", "round_seconds", "step_ratio", "cpu_step_ratio", "round_ratio",
               "judged_ratio")


def test_quick_benchmark_writes_every_figure_and_meets_structural_targets(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert harness.main(["--quick", "--threads", "1", "--skip", "startup", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert list(r) == ["meta", "step", "pruning", "memory", "imports", "targets"]
    assert r["meta"]["quick"] is True and r["meta"]["device"] == "cpu" and r["meta"]["torch_threads"] == 1

    for name, case in step.QUICK_STEP_CASES.items():
        s = r["step"][name]
        for field in STEP_FIELDS:
            assert set(s[field]) == set(case.contenders), field
            assert all(math.isfinite(v) and v > 0 for v in s[field].values()), field
        base = "lth" if name == "lenet_300_100_distill" else "raw"  # distillation is judged against the plain round
        assert s["step_ratio"][base] == s["judged_ratio"][base] == 1.0
        assert s["density"] == 0.2 and s["judged_clock"] == "cpu"
        assert s["timed_steps"] == case.steps - case.eval_every
        assert all(len(t["total"]) == 3 and len(t["step_cpu"]) == 3 for t in s["times"].values())  # 3 quick repeats
        # lth over the bare LightningModule, where the case times it (the distillation case does not)
        assert s["floor"] == ({} if name == "lenet_300_100_distill" else {"lth": "lightning"})
        assert all(math.isfinite(v) and v > 0 for v in s["floor_ratio"].values()) and set(s["floor_ratio"]) == set(s["floor"])
        for field in ("judged_ratio", "floor_ratio"):  # 3 repeats: the interval is the range of the per-repeat ratios
            ratios = {n: [a / b for a, b in zip(s["times"][n]["step_cpu"], s["times"][f]["step_cpu"])]
                      for n, f in (s["floor"] if field == "floor_ratio" else s["baseline"]).items()}
            expected = {n: pytest.approx([min(r), max(r)], rel=1e-3) for n, r in ratios.items()}  # times: 6 digits
            assert s[f"{field}_interval"] == expected, field

    p = r["pruning"]
    assert p["params"] == sum(math.prod(s) for s in pruning.resnet50_shapes(0.125).values())
    assert set(p["seconds"]) == {"naive_global", "select_global", "select_layerwise", "prune_reset"}
    assert set(p["prune_reset_parts"]) == {"score", "select", "reset"}

    m = r["memory"]
    hidden = 256
    assert m["params"] == 2 * (hidden * hidden + hidden) + hidden * 10 + 10
    for mode, snapshots in (("masks", 4.0), ("masks_rewind", 8.0)):  # θ0 (and θk): one float32 per parameter each
        assert m["per_param"][mode]["mask_bytes_per_param"] == 1.0
        assert m["per_param"][mode]["snapshot_bytes_per_param"] == snapshots
    f = m["mask_file"]
    assert f["payload_bits_per_param"] == 1.0 and f["round_trip"] is True  # 133,632 weights = 16,704 bytes exactly
    assert f["payload_bytes"] == (2 * hidden * hidden + 10 * hidden) // 8
    assert 0 < f["header_bytes"] <= 64 * 1024

    assert r["imports"]["loaded"] == []
    verdicts = {c["key"]: c["pass"] for c in r["targets"]}
    assert verdicts == {
        "step_overhead/lenet_300_100": None,  # timings are not judged in quick mode
        "step_overhead/conv4": None,
        "floor_overhead/lenet_300_100": None,
        "floor_overhead/conv4": None,
        "distill_step/lenet_300_100_distill": None,
        "global_select": None,
        "mask_bytes": True,
        "other_bytes": True,
        "mask_file_bits": True,
        "mask_file_header": True,
        "lazy_imports": True,
    }
    printed = capsys.readouterr().out
    assert "| step lenet_300_100: lth |" in printed and "5/5 judged targets met" in printed
    assert "| step lenet_300_100: lth / Lightning's floor |" in printed


def test_resnet50_shapes_have_resnet50s_weight_count():
    # torchvision's resnet50 has 25,557,032 parameters: minus 53,120 in BatchNorm and the fc bias of 1,000
    shapes = pruning.resnet50_shapes()
    assert sum(math.prod(s) for s in shapes.values()) == 25_502_912
    assert len(shapes) == 54 and shapes["fc"] == (1000, 2048) and shapes["layer4_0_downsample"] == (2048, 1024, 1, 1)


def test_paired_ratio_is_the_median_of_per_repeat_ratios():
    assert common.paired_ratio([2.0, 3.0, 10.0], [1.0, 2.0, 4.0]) == 2.0  # ratios 2, 1.5, 2.5


def test_contenders_take_turns_forward_then_backward():
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    times = common.time_interleaved(fns, repeats=3, warmup=1, device=torch.device("cpu"))
    assert "".join(calls) == "abc" + "abc" + "cba" + "abc"  # warm-up, then neighbours stay neighbours
    assert {k: len(v["total"]) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}


def test_every_repeat_trains_from_the_same_weights():
    model = torch.nn.Linear(3, 2)
    weight, seen = model.weight, []

    def train():  # a contender's run: it moves the weights
        seen.append(model.weight.detach().clone())
        with torch.no_grad():
            model.weight.add_(1.0)
        return {"step": 1.0}

    run = step.from_start(model, train)
    assert run() == {"step": 1.0} and run() == {"step": 1.0}
    assert torch.equal(seen[0], seen[1]) and model.weight is weight  # restored in place: optimizers keep their tensors
    assert torch.equal(model.weight, seen[0] + 1.0)


def test_median_interval_is_the_binomial_order_statistic_interval():
    xs = [float(i) for i in range(1, 42)]  # n = 41: x_(14) and x_(28) cover the median with 95.6% (x_(15): 94.1%)
    assert common.median_interval(xs[::-1]) == (14.0, 28.0)
    assert common.median_interval(xs[:9]) == (2.0, 8.0)  # n = 9: 96.1%
    assert common.median_interval(xs[:20]) == (6.0, 15.0)  # n = 20: 95.9%
    assert common.median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0)  # too few for 95%: the whole range
    assert common.paired_interval([2.0, 3.0, 10.0], [1.0, 2.0, 4.0]) == (1.5, 2.5)


def test_step_contenders_can_be_chosen(tmp_path, monkeypatch):
    chosen = step.choose_contenders(step.STEP_CASES, ["lth", "lightning"])
    assert {k: c.contenders for k, c in chosen.items()} == {
        "lenet_300_100": ("lightning", "lth"), "lenet_300_100_distill": ("lth",), "conv4": ("lightning", "lth")}
    with pytest.raises(ValueError, match=r"unknown step contender\(s\) \['lth\[fast\]'\]; valid choices: raw, "):
        step.choose_contenders(step.STEP_CASES, ["lth[fast]"])
    with pytest.raises(ValueError, match="step case conv4 times none of.*valid choices for it: raw, lightning, lth"):
        step.choose_contenders({"conv4": step.STEP_CASES["conv4"]}, ["lth[unfused]"])
    seen = {}
    monkeypatch.setattr(harness, "step_suite", lambda cases, *a: seen.setdefault("cases", dict(cases)) and {})
    monkeypatch.setattr(harness, "check_targets", lambda results: [])
    harness.main(["--quick", "--only", "step", "--cases", "lenet_300_100", "--contenders", "lightning,lth",
                  "--out", str(tmp_path / "b.json")])
    assert {k: c.contenders for k, c in seen["cases"].items()} == {"lenet_300_100": ("lightning", "lth")}


def _results(quick, lth_ratio, other=0.2, loaded=(), floor_ratio=1.04):
    return {
        "meta": {"quick": quick},
        "step": {"lenet_300_100": {"judged_clock": "cpu", "judged_ratio": {"raw": 1.0, "lth": lth_ratio},
                                   "floor": {"lth": "lightning"}, "floor_ratio": {"lth": floor_ratio}}},
        "memory": {
            "params": 2**20,
            "per_param": {"masks": {"mask_bytes_per_param": 1.0, "other_bytes_per_param": other}},
            "mask_file": {"payload_bits_per_param": 1.0, "round_trip": True, "header_bytes": 2145},
        },
        "imports": {"loaded": list(loaded)},
    }


def test_targets_are_judged_outside_quick_mode_only():
    passed = {c["key"]: c["pass"] for c in harness.check_targets(_results(False, 1.2))}
    assert passed == {"step_overhead/lenet_300_100": True, "floor_overhead/lenet_300_100": True, "mask_bytes": True,
                      "other_bytes": True, "mask_file_bits": True, "mask_file_header": True, "lazy_imports": True}
    failed = {c["key"]: c for c in harness.check_targets(_results(False, 1.3, other=4.6, loaded=["sklearn"],
                                                                  floor_ratio=1.06))}
    assert failed["step_overhead/lenet_300_100"]["pass"] is False
    assert failed["floor_overhead/lenet_300_100"]["pass"] is False and failed["floor_overhead/lenet_300_100"]["limit"] == 1.05
    assert failed["other_bytes"]["limit"] == 4.5 and failed["other_bytes"]["pass"] is False  # 0.5 + 4 MiB / 1 Mi
    assert failed["lazy_imports"]["pass"] is False and failed["lazy_imports"]["value"] == ["sklearn"]
    quick = {c["key"]: c["pass"] for c in harness.check_targets(_results(True, 1.3))}
    assert quick["step_overhead/lenet_300_100"] is None and quick["mask_bytes"] is True


def test_memory_worker_counts_masks_and_snapshots_exactly():
    report = memory.memory_worker("masks_rewind", 32, 1, "cpu")
    assert report["params"] == 2 * (32 * 32 + 32) + 32 * 10 + 10 == 2442
    assert report["prunable"] == report["mask_bytes"] == 2 * 32 * 32 + 32 * 10 == 2368  # one byte per weight
    assert report["snapshot_bytes"] == 2 * 4 * 2442  # θ0 and θk of every parameter, float32
    assert memory.memory_worker("dense", 32, 1, "cpu")["mask_bytes"] == 0
    with pytest.raises(ValueError, match="valid choices: dense, masks, masks_rewind"):
        memory.memory_worker("sparse", 32, 1, "cpu")


def test_bad_section_and_device_are_rejected():
    with pytest.raises(ValueError, match="valid choices: step, pruning, memory, imports, startup"):
        harness.run(sections=["steps"])
    for device in ("tpu", "mps"):
        with pytest.raises(ValueError, match="valid choices: cpu, cuda"):
            harness.run(device=device, sections=[])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch.cuda.is_available"):
            harness.run(device="cuda", sections=[])
    with pytest.raises(ValueError, match="unknown step case.*'lenet'.*valid choices: lenet_300_100, lenet_300_100_distill, conv4"):
        harness.run(sections=["step"], cases=["lenet"])


def test_step_cases_can_be_chosen(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(harness, "step_suite", lambda cases, *a: seen.setdefault("cases", list(cases)) and {})
    monkeypatch.setattr(harness, "check_targets", lambda results: [])
    harness.main(["--quick", "--only", "step", "--cases", "conv4", "--out", str(tmp_path / "b.json")])
    assert seen["cases"] == ["conv4"]


@pytest.mark.slow
def test_startup_section_times_lth_run_against_import_torch():
    s = startup.startup_suite(repeats=1, warmup=0, threads=1)
    assert set(s["seconds"]) == {"import_torch", "import_lth", "lth_run_smoke"}
    assert s["ratio"]["import_torch"] == 1.0
    assert s["seconds"]["lth_run_smoke"] > s["seconds"]["import_torch"] > 0


@pytest.mark.slow
def test_step_overhead_guard():
    # A loose bound on a short run: catches an accidental per-step sync, copy or log call; the real figure (and the
    # 1.25x target) is the benchmark's. CPU time of one thread: other jobs on the machine barely move it.
    torch.set_num_threads(1)
    case = replace(step.STEP_CASES["lenet_300_100"], steps=300, eval_every=100, num_train=3000, num_eval=500,
                         contenders=("raw", "lightning", "lth"))
    r = step.step_suite({"lenet": case}, torch.device("cpu"), repeats=5, warmup=1)["lenet"]
    assert r["judged_clock"] == "cpu"
    assert r["judged_ratio"]["lth"] <= 2.0, r["judged_ratio"]
    assert r["judged_ratio"]["lth"] / r["judged_ratio"]["lightning"] <= 1.6, r["judged_ratio"]


@pytest.mark.parametrize("deterministic", [True, False])
def test_every_step_contender_runs_under_the_same_determinism_flag(tmp_path, deterministic):
    case = step.QUICK_STEP_CASES["lenet_300_100"]
    fns = step.step_contenders(case, torch.device("cpu"), tmp_path, deterministic)
    timed = {n: f.__wrapped__ for n, f in fns.items()}  # each run from the same weights (`step.from_start`)
    assert timed["raw"].args[-1] is deterministic and timed["lightning"].args[-1] is deterministic
    assert timed["lth"].args[0].cfg.trainer.deterministic is deterministic


def test_full_cases_time_enough_steps_and_each_device_has_its_own_file():
    for name, case in step.STEP_CASES.items():
        assert case.steps - case.warm_steps >= step.MIN_TIMED_STEPS, name
    assert harness.default_out("cuda").name == "bench_cuda.json"
    assert harness.default_out("cuda:1").name == "bench_cuda.json"
    assert harness.default_out("cpu").name == "bench_cpu.json"


def test_lth_and_the_lightning_floor_both_show_the_progress_display(tmp_path, monkeypatch):
    from lth.lit import ProgressCallback

    made = []
    real = step.progress
    monkeypatch.setattr(step, "progress", lambda: made.append(real()) or made[-1])
    case = step.QUICK_STEP_CASES["lenet_300_100"]
    fns = step.step_contenders(case, torch.device("cpu"), tmp_path)
    assert made and made[-1] in fns["lth"].__wrapped__.args[0].extra_callbacks  # the lineage's round carries it, as a run does
    fns["lightning"]()
    assert len(made) == 2 and all(isinstance(p, ProgressCallback) and p.bar for p in made)
    assert made[1]._start[0] > 0  # the floor's Trainer ran it: its training start was noted
    assert made[1].on_before_backward is None  # leaned as lth's Trainer leans it: the same display costs the same
    assert step.CONTENDERS["lth[unfused]"].floor == "lightning[unfused]" and step.CONTENDERS["lth"].floor == "lightning"
