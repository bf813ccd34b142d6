"""Reproduction studies: many lineages (variants × seeds, branches after their sources) run in worker processes, their
round records gathered into one frame, and a results page with the tables and figure a study's report draws with
`lth.analysis`."""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import logging
import multiprocessing
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lth.analysis import records, save_figure
from lth.io import atomic_write_text

START, END = "<!-- results:start -->", "<!-- results:end -->"


@dataclass(frozen=True)
class Job:
    """One lineage of a study: its folder (under the study's out dir), Hydra overrides and the labels of its rows."""

    folder: str
    overrides: tuple[str, ...]
    labels: Mapping[str, Any] = field(default_factory=dict)
    after: tuple[str, ...] = ()  # folders of jobs that must finish first (the sources of a branch)


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _run_one(overrides: Sequence[str], folder: str) -> tuple[str | None, float]:
    """Run one lineage in this process; (error or None, seconds)."""
    from lth.cli import compose_config
    from lth.runner import run

    _quiet()
    t0 = time.perf_counter()
    try:
        run(compose_config(list(overrides)), folder, sinks=[])
    except Exception as e:  # noqa: BLE001  (one failed lineage must not lose the others)
        return f"{type(e).__name__}: {e}", time.perf_counter() - t0
    return None, time.perf_counter() - t0


def run_jobs(jobs: Sequence[Job], out: str | Path, common: Sequence[str] = (), workers: int = 2,
             log: Callable[[str], None] = print) -> None:
    """Run every job (finished lineages are skipped by the runner) with `workers` processes of one torch thread each."""
    out = Path(out)
    folders = [j.folder for j in jobs]
    if len(set(folders)) != len(folders):
        raise ValueError("two jobs of a study share a folder")
    unknown = {a for j in jobs for a in j.after} - set(folders)
    if unknown:
        raise ValueError(f"jobs wait for folders no job writes: {sorted(unknown)}")
    _check_acyclic(jobs)
    # trainer.threads=1 always (not only with several workers): equal timings whatever --workers says
    args = {j.folder: ([*common, *j.overrides, "trainer.threads=1"], str(out / j.folder)) for j in jobs}
    pending, settled, failed = list(jobs), set(), {}

    def finish(folder: str, error: str | None, seconds: float) -> None:
        settled.add(folder)
        if error:
            failed[folder] = error
        log(f"{'FAILED' if error else 'done'} {folder} ({seconds:.0f} s){': ' + error if error else ''}")

    pool = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if workers > 1 else None
    running: dict[Any, str] = {}
    try:
        while pending or running:
            for j in [j for j in pending if settled.issuperset(j.after)]:
                pending.remove(j)
                if any(a in failed for a in j.after):
                    finish(j.folder, f"its source failed: {[a for a in j.after if a in failed]}", 0.0)
                elif pool is None:
                    finish(j.folder, *_run_one(*args[j.folder]))
                else:
                    running[pool.submit(_run_one, *args[j.folder])] = j.folder
            if running:
                completed, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for fut in completed:
                    finish(running.pop(fut), *fut.result())
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(jobs)} lineages failed: " +
                           "; ".join(f"{k}: {v}" for k, v in failed.items()))


def _check_acyclic(jobs: Sequence[Job]) -> None:
    """Refuse jobs that wait on each other in a cycle (they could never start)."""
    left = {j.folder: set(j.after) for j in jobs}
    while left:
        free = {f for f, after in left.items() if not after & left.keys()}
        if not free:
            raise ValueError(f"jobs wait on each other in a cycle: {sorted(left)}")
        for f in free:
            del left[f]


def frame(jobs: Sequence[Job], out: str | Path) -> Any:
    """One row per job × round record (pandas.DataFrame): the job's labels, `folder`, and the record's fields
    (as `lth.analysis.records` reads them)."""
    import pandas as pd

    return pd.DataFrame([{**j.labels, "folder": j.folder, **row} for j in jobs for row in records(Path(out) / j.folder)])


def unclean_rounds(df: Any) -> list[str]:
    """A report's warning naming every round of the frame that did not train cleanly (status other than "ok"): one
    paragraph, or none."""
    bad = df[df["status"] != "ok"] if "status" in df else df.iloc[:0]
    if bad.empty:
        return []
    return ["**Not every round trained cleanly:** " + ", ".join(
        f"{f} round {r}: {st}" for f, r, st in zip(bad["folder"], bad["round"], bad["status"])) + "."]


def write_page(path: str | Path, title: str, body: str) -> Path:
    """Write `body` between the page's results markers, keeping the hand-written text around them."""
    path = Path(path)
    block = f"{START}\n{body.strip()}\n{END}"
    if path.exists():
        text = path.read_text()
        if START in text and END in text:
            text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, count=1, flags=re.DOTALL)
        else:
            raise ValueError(f"{path} exists without results markers: refusing to overwrite it")
    else:
        text = f"# {title}\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path


# options that say where and how fast a study runs, not what it computes
WHERE_OPTIONS = ("out", "page", "figure", "workers", "data_root")


DEFAULT_SEEDS = 5  # a study's seeds unless --seeds says otherwise (95% interval: t_{0.975,4} = 2.78; 3 seeds: 4.30)


def parser(name: str, doc: str, seeds: int = DEFAULT_SEEDS) -> argparse.ArgumentParser:
    """The options every reproduction script shares (its own are added by the script)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(seeds)))
    ap.add_argument("--out", default=f"runs/repro/{name}",
                    help="the study's lineage folders (--quick: this folder's name + '-quick')")
    ap.add_argument("--page", default=None,
                    help=f"results page, text outside its markers kept (default docs/results/{name}.md at the "
                         f"default sizes; <out>/{name}.md for --quick or any other option or override changed)")
    ap.add_argument("--figure", default=None, help="PNG figure (default: next to the page, <page name>.png)")
    ap.add_argument("--workers", type=int, default=2, help="lineages trained at once (one torch thread each)")
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the pipeline in seconds, not the claim")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for every lineage (e.g. experiment=lth_lenet_mnist)")
    return ap


def resolve_outputs(ap: argparse.ArgumentParser, args: argparse.Namespace, name: str) -> None:
    """Set `args.out` and `args.page`: a study at its default sizes writes docs/results/<name>.md; any other run
    (--quick, other seeds, options or overrides) writes <out>/<name>.md unless --page is given, so the committed page
    and its reading are never overwritten by other numbers; --quick's lineages go to <default out>-quick."""
    if args.quick and args.out == ap.get_default("out"):
        args.out = f"{args.out.rstrip('/')}-quick"
    if args.page is None:
        changed = changed_options(ap, args, WHERE_OPTIONS)
        args.page = str(Path(args.out) / f"{name}.md") if changed else f"docs/results/{name}.md"
    args.command_options = command_options(ap, args)


def changed_options(ap: argparse.ArgumentParser, args: argparse.Namespace, skip: Sequence[str] = ()) -> list[str]:
    """The names of the options (outside `skip`) whose value is not their default (an empty value for a None
    default, or the reverse, counts as unchanged)."""
    return [k for k, v in vars(args).items()
            if k not in skip and v != ap.get_default(k) and (v or ap.get_default(k))]


# options the "Generated by" line shows elsewhere (seeds, overrides) or that change no number
NOT_IN_COMMAND = (*WHERE_OPTIONS, "seeds", "quick", "overrides", "experiment")


def command_options(ap: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The study's own options given other values than their defaults, as command-line words (`--rounds 18`)."""
    changed = set(changed_options(ap, args, NOT_IN_COMMAND))
    words = []
    for action in ap._actions:
        if action.dest not in changed or not action.option_strings:
            continue
        value = getattr(args, action.dest)
        flag = max(action.option_strings, key=len)
        if isinstance(value, bool):
            words.append(flag if value else f"--no-{flag[2:]}")
        else:
            words.append(" ".join([flag, *(map(str, value) if isinstance(value, (list, tuple)) else [str(value)])]))
    return words


def figure_path(args: argparse.Namespace) -> Path:
    """The figure's path: --figure, else the page's with .png."""
    return Path(args.figure) if args.figure else Path(args.page).with_suffix(".png")


def describe(args: argparse.Namespace, script: str, common: Sequence[str]) -> str:
    """The command and settings line that heads a generated results block."""
    extra = " ".join([*getattr(args, "command_options", ()), *args.overrides])
    return (f"Generated by `python scripts/repro_{script}.py{' --quick' if args.quick else ''}"
            f"{' ' + extra if extra else ''}` — seeds {args.seeds}; every lineage: `{' '.join(common)}`.")


def study_main(name: str, title: str, doc: str, jobs: Callable[[argparse.Namespace, Path], list[Job]],
               report: Callable[[Any, argparse.Namespace], tuple[str, Any]], experiment: str = "lth_mnist1d",
               quick: Sequence[str] = ("trainer.max_steps=20", "trainer.eval_every=10", "trainer.checkpoint_every=0"),
               add_args: Callable[[argparse.ArgumentParser], None] | None = None,
               argv: Sequence[str] | None = None) -> Any:
    """A reproduction script's main: parse options, run the study's lineages, write its page and figure; the frame."""
    ap = parser(name, doc)
    ap.add_argument("--experiment", default=None,
                    help=f"base preset of every lineage (default {experiment}; --quick: smoke)")
    if add_args:
        add_args(ap)
    args = ap.parse_args(argv)
    resolve_outputs(ap, args, name)
    args.experiment = args.experiment or ("smoke" if args.quick else experiment)
    common = [f"experiment={args.experiment}", f"data.root={args.data_root}", *(quick if args.quick else ()),
              *args.overrides]
    return run_study(name, title, args, common, jobs, report)


def run_study(name: str, title: str, args: argparse.Namespace, common: Sequence[str],
              jobs: Callable[[argparse.Namespace, Path], list[Job]],
              report: Callable[[Any, argparse.Namespace], tuple[str, Any]],
              note: Callable[[Any], str] | None = None) -> Any:
    """Run a study's lineages with the `common` overrides, then write its page (headed by the command line and
    `note(frame)`) and figure; the frame of all records."""
    out = Path(args.out).resolve()
    study = jobs(args, out)
    _quiet()
    print(f"{name}: {len(study)} lineages into {out} with {args.workers} worker(s)", flush=True)
    run_jobs(study, out, common, args.workers, log=lambda s: print(s, flush=True))
    df = frame(study, out)
    body, fig = report(df, args)
    png = save_figure(fig, figure_path(args))
    page = Path(args.page)
    rel = Path(png).resolve().relative_to(page.resolve().parent) if png.resolve().is_relative_to(
        page.resolve().parent) else png.resolve()
    header = describe(args, name, common) + (note(df) if note else "")
    write_page(page, title, f"{header}\n\n{body.strip()}\n\n![{title}]({rel.as_posix()})")
    print(body, flush=True)
    print(f"wrote {page.resolve()}\nwrote {Path(png).resolve()}", flush=True)
    return df
