"""The README and docs are tests: every command their code blocks show composes, runs or answers `--help`.

What counts as a command: a line of a fenced code block in README.md or docs/**/*.md (backslash continuations joined,
`&&` chains split, `# comments` dropped) whose program is `lth-run`, `python -m lth`, `lth-plot` or
`python scripts/<name>.py`. A command added to a page later is picked up by these rules with no change here.

- Every `lth-run` / `python -m lth` command composes (Hydra's compose API, as `--cfg job` does). A multirun (`-m`)
  composes every job of its sweep: comma-separated values and the `sweep=` preset's parameters are expanded.
- Compose only, never run: commands whose data are torchvision's files (`mnist`, `fashion_mnist`, `cifar10`: not
  available offline), `launcher=slurm` (needs a SLURM cluster) and `trainer=gpu` (needs a GPU).
- Every other command runs for real (slow tests) at `debug=fast` size, in-process, into its own run folder under a
  temporary working folder (`runs/<name>/<overrides>` or its `out_dir`), data from a shared temporary `data.root`.
  A multirun runs its first job. A command that rewinds at or past debug=fast's 20 steps trains for
  `ticket.rewind_step + 10` steps.
- A `runs/...` folder a command reads (`branch.from`, `supermask.from`) must be the run folder of another documented
  command: that one runs first (at `debug=fast`, with `ticket.rounds` raised to the round read); a path no documented
  command writes fails the test.
- `lth-plot <folder>` runs (slow) after the documented commands that write under that folder.
- `python scripts/<name>.py` (any script named anywhere in the pages): `--help` works and lists every option the
  pages' commands pass it. The scripts' own runs are the slow tests of tests/e2e/test_repro_*.py and test_bench.py.
- Real command-line subprocesses, one per shape: the set-up line's `lth-run`, `lth-run ... --cfg job` against
  `python -m lth ... --cfg job`, a README multirun (slow) and `lth-plot` (slow).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shlex
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf, open_dict

import lth.cli  # noqa: F401  registers the config schema

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
CONF = REPO / "lth" / "conf"
FILE_DATA = ("mnist", "fashion_mnist", "cifar10")  # torchvision's files under data.root: not available offline
FAST_STEPS = 20  # debug=fast's trainer.max_steps
READS = ("branch.from", "supermask.from")
ROUND_READ = {"branch.from": "branch.round", "supermask.from": "supermask.round"}
LTH_RUN = ("lth-run", "python -m lth")


VALUED_FLAGS = ("--cfg", "-c", "--config-dir", "-cd", "--package", "-p", "--info")  # Hydra flags with a value


@dataclass(frozen=True)
class Command:
    """One documented command: where it is shown, its program and its arguments."""

    page: str
    line: int
    program: str  # lth-run | lth-plot | script | analysis (`python -m lth.analysis`)
    args: tuple[str, ...]
    text: str

    @property
    def id(self) -> str:
        """A short test id: page and line."""
        return f"{self.page}:{self.line}"

    @property
    def multirun(self) -> bool:
        """A `-m` sweep."""
        return "-m" in self.args or "--multirun" in self.args

    @property
    def overrides(self) -> list[str]:
        """The Hydra overrides (flags left out; `--config-dir <...>/conf` becomes the repository's conf/ on the search
        path, as the README's example checkout)."""
        out, args = [], list(self.args)
        while args:
            a = args.pop(0)
            if a in ("-m", "--multirun"):
                continue
            if a in VALUED_FLAGS:
                value = args.pop(0)
                if a in ("--config-dir", "-cd"):
                    assert Path(value).name == "conf", f"{self.id}: --config-dir {value} is not a conf/ folder"
                    out.append(f"hydra.searchpath=[file://{REPO / 'conf'}]")
                continue
            out.append(a)
        return out


def _code_lines(page: Path) -> Iterator[tuple[int, str]]:
    """(line number, logical line) of every fenced code block of a page; backslash continuations joined."""
    inside, pending, start = False, "", 0
    for no, raw in enumerate(page.read_text().splitlines(), 1):
        if raw.lstrip().startswith("```"):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        if not pending:
            start = no
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        yield start, pending + raw
        pending = ""


def _parse(page: Path, no: int, line: str) -> list[Command]:
    """The commands of one code line (none for Python code, other programs or output)."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return []  # not shell (Python code with an unmatched quote, say)
    out: list[Command] = []
    name = str(page.relative_to(REPO))
    parts: list[list[str]] = [[]]
    for w in words:
        if w in ("&&", "||", ";"):
            parts.append([])
        else:
            parts[-1].append(w)
    for p in parts:
        while p and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", p[0]):
            p = p[1:]  # leading environment assignments
        if not p:
            continue
        if p[0] == "lth-run":
            out.append(Command(name, no, "lth-run", tuple(p[1:]), line))
        elif p[:3] == ["python", "-m", "lth"]:
            out.append(Command(name, no, "lth-run", tuple(p[3:]), line))
        elif p[:3] == ["python", "-m", "lth.analysis"]:
            out.append(Command(name, no, "analysis", tuple(p[3:]), line))
        elif p[0] == "lth-plot":
            out.append(Command(name, no, "lth-plot", tuple(p[1:]), line))
        elif p[0] == "python" and len(p) > 1 and p[1].startswith("scripts/") and p[1].endswith(".py"):
            out.append(Command(name, no, "script", tuple(p[1:]), line))
    return out


@cache
def documented() -> tuple[Command, ...]:
    """Every command of every page, in page order."""
    return tuple(c for page in PAGES for no, line in _code_lines(page) for c in _parse(page, no, line))


def _by(program: str) -> list[Command]:
    return [c for c in documented() if c.program == program]


def referenced_scripts() -> list[str]:
    """Every `scripts/<name>.py` named anywhere in the pages (code blocks and prose)."""
    names = {m for page in PAGES for m in re.findall(r"scripts/(\w+)\.py", page.read_text())}
    return sorted(names)


# ----------------------------------------------------------------------------------------------- composing


def compose_hydra(overrides: list[str] | tuple[str, ...]) -> DictConfig:
    """The config `lth-run <overrides> --cfg all` prints (Hydra's node included); a copy of a cached one."""
    return _compose(tuple(overrides)).copy()


@cache
def _compose(overrides: tuple[str, ...]) -> DictConfig:
    from hydra import compose, initialize_config_module

    with initialize_config_module("lth.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def typed(cfg: DictConfig) -> Any:
    """The schema object of a composed config (what `lth-run` runs): type errors raise here."""
    cfg = cfg.copy()
    with open_dict(cfg):
        del cfg["hydra"]
    return OmegaConf.to_object(cfg)


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The override lists of every job of `lth-run -m <overrides>` (sweep presets and comma lists expanded)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    (batch,) = BasicSweeper.split_arguments(_sweep_overrides(overrides), None)
    return batch


def _sweep_overrides(overrides: list[str]) -> list[Any]:
    """The parsed overrides of a multirun: the `sweep=` preset's parameters, then the command line's."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed = parser.parse_overrides(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    params = compose_hydra(fixed).hydra.sweeper.params or {}
    return parser.parse_overrides([f"{k}={v}" for k, v in params.items()]) + parsed


def each_value_jobs(overrides: list[str]) -> list[list[str]]:
    """Jobs of a sweep in which every swept value occurs at least once (the others at their first value)."""
    axes: dict[str, list[str]] = {}
    for o in _sweep_overrides(overrides):
        key = o.get_key_element()
        axes[key] = [f"{key}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override() else [o.input_line]
    first = [v[0] for v in axes.values()]
    out = [first]
    for i, values in enumerate(axes.values()):
        out += [first[:i] + [v] + first[i + 1:] for v in values[1:]]
    return out


def jobs(cmd: Command) -> list[list[str]]:
    """The override lists a command runs: one, or every job of its sweep."""
    return sweep_jobs(cmd.overrides) if cmd.multirun else [cmd.overrides]


def run_folder(cfg: DictConfig) -> str:
    """Where `lth-run` writes this composed job, relative to the working folder (out_dir, else Hydra's run dir)."""
    from hydra.core.hydra_config import HydraConfig

    if cfg.out_dir:
        return str(cfg.out_dir)
    HydraConfig.instance().set_config(cfg)
    return str(cfg.hydra.run.dir)


def compose_only_reason(cfg: DictConfig) -> str | None:
    """Why a composed job is not run here, or None."""
    choices = cfg.hydra.runtime.choices
    if cfg.data.name in FILE_DATA:
        return f"data={cfg.data.name} needs torchvision's files"
    if str(choices.get("launcher") or "").startswith("slurm"):
        return f"launcher={choices.get('launcher')} needs a SLURM cluster"
    if choices.get("trainer") == "gpu":
        return "trainer=gpu needs a GPU"
    return None


def test_the_pages_show_the_commands_users_type() -> None:
    cmds = documented()
    texts = [" ".join(c.args) for c in cmds if c.program == "lth-run"]
    assert "pruning.scope=global pruning.fraction=0.2 ticket.rewind_step=200" in texts
    assert "" in texts  # the set-up line's plain `lth-run`
    assert any(c.multirun for c in cmds) and _by("lth-plot") and _by("script")
    assert {c.page for c in cmds} >= {"README.md", "docs/supermask.md", "docs/structured.md", "docs/performance.md"}
    # every code line that names a program of lth is understood as a command of it
    for page in PAGES:
        for no, line in _code_lines(page):
            if re.search(r"(^|\s)(lth-run|lth-plot|python -m lth|python scripts/)", line.split("#")[0]):
                assert _parse(page, no, line), f"{page.name}:{no} not understood: {line}"
    # no placeholder where a real value belongs
    for c in cmds:
        assert not any(re.search(r"<[^>]*>|^\.\.\.$", a) for a in c.args), f"{c.id}: placeholder in `{c.text}`"


@pytest.mark.parametrize("cmd", _by("lth-run"), ids=lambda c: c.id)
def test_documented_command_composes(cmd: Command) -> None:
    all_jobs = jobs(cmd)
    if cmd.multirun:  # each combination of swept values is one job; every swept value composes
        assert len(all_jobs) > 1 and len({tuple(sorted(j)) for j in all_jobs}) == len(all_jobs)
        some = each_value_jobs(cmd.overrides)
        assert {o for j in some for o in j} == {o for j in all_jobs for o in j} and all(j in all_jobs for j in some)
        all_jobs = some
    for job in all_jobs:
        cfg = compose_hydra(job)
        config = typed(cfg)
        for o in job:  # every plain key=value the command sets is in the config
            key, _, value = o.lstrip("+").partition("=")
            if key.startswith("hydra.") or "/" in key or key in cfg.hydra.runtime.choices:
                continue
            got = OmegaConf.select(cfg, key)
            assert got is not None or value == "null", f"{cmd.id}: {key} missing from the composed config"
        assert config.name and run_folder(cfg)
        for key in READS:  # a runs/... folder it reads is written by a documented command
            src = OmegaConf.select(cfg, key.replace(".from", "")).get("from")
            if src and not Path(src).is_absolute():
                assert source_of(src) is not None, f"{cmd.id}: no documented command writes {src}"


# --------------------------------------------------------------------------------------- config groups


def _group_options() -> list[tuple[str, str]]:
    return sorted((p.parent.name, p.stem) for p in CONF.glob("*/*.yaml"))


def test_config_groups_have_options() -> None:
    groups = {g for g, _ in _group_options()}
    assert groups >= {"model", "data", "pruning", "ticket", "optimizer", "trainer", "logger", "experiment",
                      "supermask", "sweep", "launcher", "debug"}


@pytest.mark.parametrize(("group", "option"), _group_options(), ids=lambda x: x)
def test_every_group_option_composes_on_its_own(group: str, option: str) -> None:
    cfg = compose_hydra([f"{group}={option}"])
    assert cfg.hydra.runtime.choices[group] == option
    config = typed(cfg)
    if group == "pruning":
        assert config.pruning.scope.name == option if option == "global" else config.pruning.scope.name == "layerwise"
    if group == "experiment":
        assert config.name == option
    if group == "sweep":
        assert cfg.hydra.sweeper.params and len(sweep_jobs([f"sweep={option}"])) > 1


# ------------------------------------------------------------------------------------- real command lines


def _env() -> dict[str, str]:
    wandb_dir = os.environ.get("WANDB_DIR") or "wandb"  # the test's own temporary folder (tests/conftest.py)
    return {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": wandb_dir, "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _bin(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    return str(exe) if exe.exists() else name


def _sub(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False)


def test_setup_lth_run_runs_the_default_lineage(tmp_path: Path, data_root: Path) -> None:
    (setup,) = [c for c in _by("lth-run") if c.page == "README.md" and not c.args]
    work = tmp_path / "work"
    work.mkdir()
    args = [*setup.args, "debug=fast", f"data.root={data_root}"]
    p = _sub([_bin("lth-run"), *args], work)
    assert p.returncode == 0, p.stderr[-3000:]
    folder = work / run_folder(compose_hydra(args))  # a debug run has a folder of its own
    records = [json.loads(x) for x in (folder / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [0, 1] and records[1]["density"] < 1
    assert sorted(p.name for p in work.iterdir()) == ["runs"]  # nothing else written into the working folder


def test_lth_run_and_python_m_lth_print_the_same_config(tmp_path: Path) -> None:
    args = ["pruning.scope=global", "pruning.fraction=0.2", "ticket.rewind_step=200", "--cfg", "job"]
    a = _sub([_bin("lth-run"), *args], tmp_path)
    b = _sub([sys.executable, "-m", "lth", *args], tmp_path)
    assert a.returncode == 0 and b.returncode == 0, a.stderr[-2000:] + b.stderr[-2000:]
    assert a.stdout == b.stdout and "scope: global\n" in a.stdout and "rewind_step: 200" in a.stdout
    for old in (["pruning.scope=global_"], ["pruning=global"]):  # the old spelling and the preset: the same scope
        assert typed(compose_hydra(old)).pruning.scope.name == "global"


def _help_in_process(name: str) -> tuple[int, str]:
    """Exit status and output of `python scripts/<name>.py --help`, run in this process (torch is loaded once)."""
    import contextlib
    import io
    import runpy

    out, argv, path = io.StringIO(), sys.argv, list(sys.path)
    sys.argv, sys.path[:0] = [str(REPO / "scripts" / f"{name}.py"), "--help"], [str(REPO / "scripts")]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv, sys.path[:] = argv, path
    return code, out.getvalue()


@pytest.fixture(scope="module")
def script_help(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str]]:
    """`--help` of every referenced script: the first as a real subprocess, the others in this process."""
    names = referenced_scripts()
    p = _sub([sys.executable, str(REPO / "scripts" / f"{names[0]}.py"), "--help"], tmp_path_factory.mktemp("help"),
             timeout=300)
    return {names[0]: (p.returncode, p.stdout + p.stderr)} | {n: _help_in_process(n) for n in names[1:]}


def test_the_pages_name_the_scripts_that_exist() -> None:
    names = referenced_scripts()
    assert "repro_tickets" in names and "bench" in names
    assert all((REPO / "scripts" / f"{n}.py").exists() for n in names), names


@pytest.mark.parametrize("name", referenced_scripts())
def test_referenced_script_help(script_help: dict[str, tuple[int, str]], name: str) -> None:
    code, text = script_help[name]
    assert code == 0 and "usage:" in text, text[-2000:]
    for cmd in _by("script"):  # every option a page passes this script is one it has
        if cmd.args[0] == f"scripts/{name}.py":
            for flag in (a.split("=")[0] for a in cmd.args[1:] if a.startswith("--")):
                assert re.search(rf"{re.escape(flag)}\b", text), f"{cmd.id}: {name}.py has no option {flag}"


@pytest.mark.parametrize("cmd", _by("analysis"), ids=lambda c: c.id)
def test_documented_analysis_command_has_its_options(cmd: Command, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m lth.analysis <command> ...`: the command exists and has every option the page passes it."""
    from lth.analysis import COMMANDS

    assert cmd.args and cmd.args[0] in COMMANDS, f"{cmd.id}: no analysis command {cmd.args[:1]}"
    with pytest.raises(SystemExit) as e:
        COMMANDS[cmd.args[0]](["--help"])
    text = capsys.readouterr().out
    assert e.value.code == 0 and "usage:" in text
    for flag in (a.split("=")[0] for a in cmd.args[1:] if a.startswith("--")):
        assert re.search(rf"{re.escape(flag)}\b", text), f"{cmd.id}: lth.analysis {cmd.args[0]} has no option {flag}"


# -------------------------------------------------------------------------------- documented runs (slow)


def source_of(folder: str) -> Command | None:
    """The documented, runnable command whose run folder is `folder`."""
    for cmd in _by("lth-run"):
        if not cmd.multirun:
            cfg = compose_hydra(cmd.overrides)
            if compose_only_reason(cfg) is None and os.path.normpath(run_folder(cfg)) == os.path.normpath(folder):
                return cmd
    return None


def _reads(cfg: DictConfig) -> list[tuple[str, int]]:
    """(runs/... folder, round) pairs a composed job reads from another run."""
    out = []
    for key in READS:
        node, _, _ = key.partition(".")
        src = cfg[node].get("from")
        if src and not Path(src).is_absolute():
            out.append((str(src), int(OmegaConf.select(cfg, ROUND_READ[key]) or 0)))
    return out


class Workspace:
    """A temporary working folder where documented commands run once each (in-process, at debug=fast)."""

    def __init__(self, root: Path, data_root: Path) -> None:
        self.root, self.data_root = root, data_root
        self.done: dict[str, list[dict[str, Any]]] = {}
        self.rounds_needed: dict[str, int] = {}
        for cmd in _by("lth-run"):
            for job in jobs(cmd)[:1]:
                for src, r in _reads(compose_hydra(job)):
                    self.rounds_needed[src] = max(self.rounds_needed.get(src, 0), r)

    def run(self, job: list[str]) -> list[dict[str, Any]]:
        """Run one job (its sources first) into its run folder; the round records."""
        from lth.runner import run

        cfg = compose_hydra(job)
        folder = run_folder(cfg)
        if folder in self.done:
            return self.done[folder]
        for src, _ in _reads(cfg):
            source = source_of(src)
            assert source is not None, f"no documented command writes {src}"
            self.run(source.overrides)
        extra = ["debug=fast", f"data.root={self.data_root}"]
        if folder in self.rounds_needed:
            extra.append(f"ticket.rounds={max(self.rounds_needed[folder], int(cfg.ticket.rounds))}")
        if cfg.ticket.rewind_step >= FAST_STEPS:
            extra.append(f"trainer.max_steps={cfg.ticket.rewind_step + 10}")
        config = typed(compose_hydra([*job, *extra]))
        config.out_dir = None
        cwd = os.getcwd()
        os.chdir(self.root)  # relative paths (branch.from=runs/...) as the user's shell sees them
        try:
            run(config, self.root / folder)
        finally:
            os.chdir(cwd)
        path = self.root / folder / "rounds.jsonl"
        self.done[folder] = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        return self.done[folder]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Workspace:
    """The shared working folder of the documented runs."""
    return Workspace(tmp_path_factory.mktemp("docs_runs"), data_root)


@pytest.mark.slow
@pytest.mark.parametrize("cmd", _by("lth-run"), ids=lambda c: c.id)
def test_documented_command_runs(workspace: Workspace, cmd: Command) -> None:
    job = jobs(cmd)[0]
    cfg = compose_hydra(job)
    reason = compose_only_reason(cfg)
    if reason:
        pytest.skip(f"composed only: {reason}")
    records = workspace.run(job)
    assert records and all(r.get("status", "ok") == "ok" for r in records)
    assert all(math.isfinite(r["test_acc"]) for r in records)
    if cfg.pruning.target_density is not None and not cfg.supermask.method:
        assert records[-1]["density"] == pytest.approx(cfg.pruning.target_density, abs=0.01)


@pytest.mark.slow
def test_readme_multirun_runs_every_job(tmp_path: Path, data_root: Path) -> None:
    cmd = next(c for c in _by("lth-run") if c.page == "README.md" and c.multirun and "sweep=" not in c.text)
    expected = {run_folder(compose_hydra([*job, "debug=fast"])) for job in jobs(cmd)}  # debug runs: own folders
    p = _sub([_bin("lth-run"), *cmd.args, "debug=fast", f"data.root={data_root}"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    found = {str(f.parent.relative_to(tmp_path)) for f in tmp_path.rglob("rounds.jsonl")}
    assert found == expected and len(found) == len(jobs(cmd))


@pytest.mark.slow
@pytest.mark.parametrize("cmd", _by("lth-plot"), ids=lambda c: c.id)
def test_documented_lth_plot(workspace: Workspace, cmd: Command) -> None:
    target = os.path.normpath(cmd.args[0])
    for other in _by("lth-run"):  # the documented runs it plots
        job = jobs(other)[0]
        cfg = compose_hydra(job)
        if compose_only_reason(cfg) is None and os.path.normpath(run_folder(cfg)).startswith(target + os.sep):
            workspace.run(job)
    assert list((workspace.root / target).rglob("rounds.jsonl")), f"no documented run writes under {target}"
    p = _sub([_bin("lth-plot"), *cmd.args], workspace.root)
    assert p.returncode == 0, p.stderr[-3000:]
    assert list((workspace.root / target / "plots").glob("*.png"))


# -------------------------------------------------------------------------- every experiment preset (slow)


def _write_idx(path: Path, array: np.ndarray) -> None:
    path.write_bytes(bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


def _tiny_torchvision_files(root: Path) -> None:
    """MNIST / Fashion-MNIST in torchvision's IDX format and CIFAR-10 in its pickled batches: 120 train, 40 test images
    of noise."""
    rng = np.random.default_rng(0)
    for folder in ("MNIST/raw", "FashionMNIST/raw"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for split, n in (("train", 120), ("t10k", 40)):
            _write_idx(root / folder / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), np.uint8))
            _write_idx(root / folder / f"{split}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))
    cifar = root / "cifar-10-batches-py"
    cifar.mkdir(parents=True, exist_ok=True)
    for name, n in [*((f"data_batch_{k}", 24) for k in range(1, 6)), ("test_batch", 40)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), np.uint8), b"labels": [j % 10 for j in range(n)]}
        (cifar / name).write_bytes(pickle.dumps(batch))


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_experiment_preset_runs_one_fast_round(tmp_path: Path, data_root: Path, preset: str) -> None:
    from lth.runner import run

    overrides = [f"experiment={preset}", "debug=fast", f"data.root={data_root}"]
    if compose_hydra(overrides).data.name in FILE_DATA:  # tiny stand-ins for torchvision's files
        _tiny_torchvision_files(tmp_path / "files")
        overrides += [f"data.root={tmp_path / 'files'}", "data.val_size=20", "data.batch_size=20"]
    if compose_hydra(overrides).ticket.rewind_step >= FAST_STEPS:  # a late rewind point past debug=fast's round
        overrides += [f"ticket.rewind_step={FAST_STEPS // 4}"]
    config = typed(compose_hydra(overrides))
    run(config, tmp_path / "run")
    records = [json.loads(x) for x in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    assert records and all(math.isfinite(r["test_acc"]) for r in records)
    assert records[0]["train_steps"] <= FAST_STEPS
