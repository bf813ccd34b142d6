"""Benchmarks of lth's overheads (training step, pruning, memory, start-up), each a ratio to a baseline run alongside.

Every timed figure is measured in one process against a baseline that process runs itself, the contenders taking turns
(warm-up, then a median of `repeats`), so a noisy machine shifts both alike. Absolute times are reported too.
Heavy imports (Lightning, the runner) happen inside the functions that need them: the memory worker subprocesses
import only torch and `lth.masks`. This module joins the sections (`benchmarks.step`, `.pruning`, `.memory`,
`.startup`), judges the targets and prints the table; `python scripts/bench.py --help` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import torch_threads
from benchmarks.memory import MEMORY_STEPS, memory_results, start_memory_workers
from benchmarks.pruning import pruning_suite
from benchmarks.startup import HEAVY_MODULES, IMPORTED, imports_results, start_import_probe, startup_suite
from benchmarks.step import CONTENDERS, QUICK_STEP_CASES, STEP_CASES, choose_contenders, step_suite

SECTIONS = ("step", "pruning", "memory", "imports", "startup")
TARGETS = {
    "step_overhead": 1.25,  # lth's masked round vs a raw PyTorch loop, per step
    "floor_overhead": 1.05,  # lth's masked round vs Lightning's floor (a bare LightningModule), per step
    "distill_step": 1.3,  # a distilled round with cached teacher outputs vs the plain lth round, per step
    "global_select_seconds": 1.0,  # one global select over a ResNet-50-sized model
    "mask_bytes_per_param": 1.0,  # masks in memory
    "mask_file_bits_per_param": 1.0,  # a saved mask file, not counting its fixed header
    "mask_file_header_bytes": 64 * 1024,  # that header
    "other_bytes_per_param": 0.5,  # peak RSS growth per parameter beyond masks and snapshots ...
    "other_bytes_fixed": 4 * 2**20,  # ... plus this much in all (allocator and page granularity)
}
def default_out(device: str) -> Path:
    """The results file of a device type: docs/bench_<cpu|cuda>.json (one device's figures never replace another's)."""
    return Path("docs") / f"bench_{torch.device(device).type}.json"


# ------------------------------------------------------------------------------------------------- targets and table
def check_targets(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each target of the performance issue: key, label, measured value, limit and pass (True/False; None for a timing
    target in quick mode, which is not judged). Sections not run are left out."""
    judge_time = not results.get("meta", {}).get("quick", False)
    checks: list[dict[str, Any]] = []

    def add(key: str, label: str, value: Any, limit: Any, ok: bool, timing: bool = False) -> None:
        verdict = bool(ok) if judge_time or not timing else None
        checks.append({"key": key, "target": label, "value": value, "limit": limit, "pass": verdict})

    for case_key, case in results.get("step", {}).items():
        if "lth" in case.get("judged_ratio", {}) and case.get("baseline", {}).get("lth") != "lth":
            r = case["judged_ratio"]["lth"]
            add(f"step_overhead/{case_key}", f"step overhead {case_key}: lth round / raw loop ({case['judged_clock']})", r,
                TARGETS["step_overhead"], r <= TARGETS["step_overhead"], timing=True)
        if "lth" in case.get("floor_ratio", {}):
            r = case["floor_ratio"]["lth"]
            add(f"floor_overhead/{case_key}", f"step overhead {case_key}: lth round / Lightning's floor "
                f"({case['judged_clock']})", r, TARGETS["floor_overhead"], r <= TARGETS["floor_overhead"], timing=True)
            if "lth" in case.get("floor_ratio_interval", {}):  # where the median lies (95%), for whoever judges it
                checks[-1]["interval"] = list(case["floor_ratio_interval"]["lth"])
        if "lth[distill]" in case.get("judged_ratio", {}):
            r = case["judged_ratio"]["lth[distill]"]
            add(f"distill_step/{case_key}", f"distillation {case_key}: cached teacher / plain lth round "
                f"({case['judged_clock']})", r, TARGETS["distill_step"], r <= TARGETS["distill_step"], timing=True)
    if "pruning" in results:
        p = results["pruning"]
        sec = p["seconds"]["select_global"]
        add("global_select", f"global select over {p['params'] / 1e6:.1f}M parameters (s)", sec,
            TARGETS["global_select_seconds"], sec <= TARGETS["global_select_seconds"], timing=True)
    if "memory" in results:
        mem = results["memory"]
        per = mem["per_param"].values()
        b = max(v["mask_bytes_per_param"] for v in per)
        add("mask_bytes", "masks in memory (bytes/param)", b, TARGETS["mask_bytes_per_param"],
            b <= TARGETS["mask_bytes_per_param"])
        other = max(v["other_bytes_per_param"] for v in per)
        limit = TARGETS["other_bytes_per_param"] + TARGETS["other_bytes_fixed"] / mem["params"]
        add("other_bytes", "peak RSS beyond masks + snapshots (bytes/param)", other, limit, other <= limit)
        f = mem["mask_file"]
        add("mask_file_bits", "mask file payload (bits/param)", f["payload_bits_per_param"],
            TARGETS["mask_file_bits_per_param"],
            f["payload_bits_per_param"] <= TARGETS["mask_file_bits_per_param"] and f["round_trip"])
        add("mask_file_header", "mask file fixed header (bytes)", f["header_bytes"],
            TARGETS["mask_file_header_bytes"], f["header_bytes"] <= TARGETS["mask_file_header_bytes"])
    if "imports" in results:
        loaded = results["imports"]["loaded"]
        add("lazy_imports", f"`import {', '.join(IMPORTED)}` loads none of {', '.join(HEAVY_MODULES)}", loaded, [],
            not loaded)
    return checks


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    if isinstance(x, list):
        return "[" + ", ".join(map(str, x)) + "]"
    return str(x)


def _verdict(check: Mapping[str, Any] | None) -> str:
    if check is None:
        return ""
    state = {True: "PASS", False: "FAIL", None: "not judged (quick)"}[check["pass"]]
    limit = "none" if check["limit"] == [] else f"≤ {_fmt(check['limit'])}"
    return f"{limit}: {state}"


def _interval(case: Mapping[str, Any], field: str, name: str) -> str:
    lo, hi = case.get(field, {}).get(name, (float("nan"), float("nan")))
    return f"[{lo:.3f}, {hi:.3f}]"


def table(results: Mapping[str, Any]) -> str:
    """The results as a markdown table: figure, value, baseline, ratio, target."""
    rows: list[tuple[str, ...]] = []
    checks = {c["key"]: c for c in results.get("targets", [])}
    for key, case in results.get("step", {}).items():
        ms, cpu = case["ms_per_step"], case["cpu_ms_per_step"]
        for n in ms:
            base = case["baseline"][n]
            if n == base:
                rows.append((f"step {key}: {n}", f"{ms[n]:.3f} ms/step (cpu {cpu[n]:.3f})", "", "1.00×",
                             f"round {case['round_seconds'][n]:.2f} s"))
                continue
            rows.append((f"step {key}: {n}", f"{ms[n]:.3f} ms/step (cpu {cpu[n]:.3f})", f"{base} {ms[base]:.3f} ms",
                         (f"{case['step_ratio'][n]:.3f}× (cpu {case['cpu_step_ratio'][n]:.3f}×, "
                          f"round {case['round_ratio'][n]:.2f}×; {case['judged_clock']} 95% "
                          f"{_interval(case, 'judged_ratio_interval', n)})"),
                         _verdict(checks.get(f"step_overhead/{key}")) if n == "lth" else
                         _verdict(checks.get(f"distill_step/{key}")) if n == "lth[distill]" else ""))
        for n, f in case.get("floor", {}).items():
            rows.append((f"step {key}: {n} / Lightning's floor", f"{ms[n]:.3f} ms/step (cpu {cpu[n]:.3f})",
                         f"{f} {ms[f]:.3f} ms", (f"{case['floor_ratio'][n]:.3f}× ({case['judged_clock']}; "
                                                 f"95% {_interval(case, 'floor_ratio_interval', n)})"),
                         _verdict(checks.get(f"floor_overhead/{key}")) if n == "lth" else ""))
    if "pruning" in results:
        p = results["pruning"]
        base = p["seconds"]["naive_global"]
        for n, sec in p["seconds"].items():
            rows.append((f"pruning {p['params'] / 1e6:.1f}M params: {n}", f"{sec:.3f} s",
                         "" if n == "naive_global" else f"naive {base:.3f} s", f"{p['ratio'][n]:.2f}×",
                         _verdict(checks.get("global_select")) if n == "select_global" else ""))
    if "memory" in results:
        m = results["memory"]
        for mode, v in m["per_param"].items():
            rows.append((f"memory {m['params'] / 1e6:.1f}M params: {mode}",
                         f"+{v['extra_rss_bytes_per_param']:.2f} B/param", "dense run's peak RSS",
                         f"{v['peak_rss_ratio']:.3f}×",
                         (f"masks {v['mask_bytes_per_param']:.2f} + snapshots {v['snapshot_bytes_per_param']:.2f} "
                          f"+ other {v['other_bytes_per_param']:.2f} B/param")))
        for key in ("mask_bytes", "other_bytes"):
            c = checks[key]
            rows.append((c["target"], f"{c['value']:.2f}", "", "", _verdict(c)))
        f = m["mask_file"]
        rows.append(("mask file on disk", f"{f['payload_bits_per_param']:.3f} bits/param + {f['header_bytes']} B",
                     f"{f['bytes']:,} B for {f['params']:,} weights", f"{f['bits_per_param']:.3f} bits/param in all",
                     f"payload {_verdict(checks['mask_file_bits'])}; header {_verdict(checks['mask_file_header'])}"))
    if "imports" in results:
        i = results["imports"]
        rows.append((f"import {', '.join(IMPORTED)}", f"loads {_fmt(i['loaded'])} of {', '.join(HEAVY_MODULES)}",
                     f"{i['import_seconds']:.2f} s", "", _verdict(checks.get("lazy_imports"))))
    if "startup" in results:
        s = results["startup"]
        base = s["seconds"]["import_torch"]
        for n, sec in s["seconds"].items():
            rows.append((f"start-up: {n}", f"{sec:.2f} s", "" if n == "import_torch" else f"import torch {base:.2f} s",
                         f"{s['ratio'][n]:.2f}×", ""))
    head = ("figure", "value", "baseline", "ratio", "target")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------------------- run
def meta(device: torch.device, quick: bool, repeats: int, warmup: int) -> dict[str, Any]:
    """Where and how the figures were measured."""
    import pytorch_lightning as pl

    info = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "pytorch_lightning": pl.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "quick": quick,
        "repeats": repeats,
        "warmup": warmup,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return info


def run(
    quick: bool = False,
    device: str = "cpu",
    sections: Sequence[str] = SECTIONS,
    repeats: int | None = None,
    warmup: int = 1,
    threads: int | None = None,
    pruning_threads: int | None = None,
    deterministic: bool = True,
    cases: Sequence[str] | None = None,
    contenders: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run the chosen sections (the step section: only `cases` and `contenders`, when given) and return the results
    (with `targets`)."""
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown benchmark section(s) {unknown}; valid choices: {', '.join(SECTIONS)}")
    step_cases = QUICK_STEP_CASES if quick else STEP_CASES
    unknown = sorted(set(cases or ()) - set(step_cases))
    if unknown:
        raise ValueError(f"unknown step case(s) {unknown}; valid choices: {', '.join(step_cases)}")
    if cases:
        step_cases = {k: v for k, v in step_cases.items() if k in cases}
    if contenders:
        step_cases = choose_contenders(step_cases, contenders)
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device '{device}'; valid choices: cpu, cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for but torch.cuda.is_available() is False; valid choices here: cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unknown device '{device}'; valid choices: cpu, cuda")
    if dev.type == "cuda":  # the runner's deterministic=True needs it before cuBLAS starts
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if threads:
        torch.set_num_threads(threads)
    repeats = repeats if repeats is not None else (3 if quick else 5)
    results: dict[str, Any] = {"meta": meta(dev, quick, repeats, warmup)}
    pruning_threads = pruning_threads or torch.get_num_threads()
    results["meta"]["pruning_threads"] = pruning_threads
    hidden = 256 if quick else 3536  # the memory benchmark's MLP: 0.13M or 25M parameters
    # Quick mode overlaps the subprocess-only sections with the timed ones (its timings are not judged).
    early = {}
    if quick and "memory" in sections:
        early["memory"] = start_memory_workers(hidden, MEMORY_STEPS, dev, threads, separate=False)
    if quick and "imports" in sections:
        early["imports"] = start_import_probe(threads)
    if "step" in sections:
        results["step"] = step_suite(step_cases, dev, repeats, warmup, deterministic)
    if "pruning" in sections:
        with torch_threads(pruning_threads):
            results["pruning"] = pruning_suite(0.125 if quick else 1.0, dev, repeats, warmup)
    if "memory" in sections:
        procs = early.get("memory") or start_memory_workers(hidden, MEMORY_STEPS, dev, threads)
        results["memory"] = memory_results(procs, hidden, MEMORY_STEPS)
    if "imports" in sections:
        results["imports"] = imports_results(early.get("imports") or start_import_probe(threads))
    if "startup" in sections:
        results["startup"] = startup_suite(1 if quick else repeats, 0 if quick else warmup, threads)
    results["meta"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results["targets"] = check_targets(results)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """`python scripts/bench.py [--quick] [--out FILE] [--device cpu|cuda] ...`: print the table, write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes and step counts (seconds; for tests)")
    ap.add_argument("--out", type=Path, default=None, help="JSON file to write (default docs/bench_<device>.json)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (synchronised timers)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {', '.join(SECTIONS)}")
    ap.add_argument("--skip", default="", help="comma-separated sections to leave out")
    ap.add_argument("--cases", default="", help=f"comma-separated step cases (default all: {', '.join(STEP_CASES)})")
    ap.add_argument("--contenders", default="",
                    help=f"comma-separated step contenders (default each case's own; of {', '.join(CONTENDERS)})")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per figure (median; default 5, quick 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs per figure")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (OMP_NUM_THREADS in subprocesses); default 1: step figures are then judged on "
                         "CPU time, which other jobs on the machine barely move")
    ap.add_argument("--deterministic", choices=("true", "false"), default="true",
                    help="torch determinism for every step contender alike (default true: lth's trainer default)")
    ap.add_argument("--pruning-threads", type=int, default=None, help="torch threads for pruning (default: --threads)")
    args = ap.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    sections = [s for s in args.only.split(",") if s and s not in skip]
    try:
        results = run(args.quick, args.device, sections, args.repeats, args.warmup, args.threads, args.pruning_threads,
                      args.deterministic == "true", [c for c in args.cases.split(",") if c],
                      [c for c in args.contenders.split(",") if c])
    except ValueError as e:
        ap.error(str(e))
    if args.out is None:
        args.out = default_out(args.device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    print(table(results))
    judged = [c for c in results["targets"] if c["pass"] is not None]
    failed = [c["target"] for c in judged if not c["pass"]]
    print(f"\n{len(judged) - len(failed)}/{len(judged)} judged targets met; JSON: {args.out}")
    for name in failed:
        print(f"FAIL: {name}")
    return 0
