"""`lth-dashboard` as users type it: --help, the README's commands, one error line without an API key, and the
README's offline block (a sweep logged to W&B offline, then the workspace it would save)."""

from __future__ import annotations

import glob
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lth.dashboard import SECTIONS, _parser

REPO = Path(__file__).resolve().parents[2]


def _cmd(program: str) -> list[str]:
    script = Path(sys.executable).with_name(program)
    if script.exists() and program != "lth-dashboard":
        return [str(script)]
    main = {"lth-dashboard": "from lth.dashboard import main; main()", "lth-run": "from lth.cli import main; main()"}
    return [sys.executable, "-c", main[program]]  # this checkout's code, whatever the environment installed


def _run(program: str, *args: str, cwd: Path, env: dict[str, str | None] | None = None,
         timeout: int = 900) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", **(env or {})}.items()
           if v is not None}  # None: unset
    return subprocess.run([*_cmd(program), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


def readme_commands(program: str) -> list[list[str]]:
    """The argument lists of `program`'s lines in the README section "W&B dashboards" code blocks."""
    text = (REPO / "README.md").read_text().split("## W&B dashboards", 1)[1].split("\n## ", 1)[0]
    out, inside = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
        elif inside:
            words = shlex.split(line, comments=True)
            if words and words[0] == program:
                out.append(words[1:])
    return out


def test_help(tmp_path):
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["lth-dashboard"] == "lth.dashboard:main"
    done = _run("lth-dashboard", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "usage: lth-dashboard" in done.stdout and "--dry-run" in done.stdout and "Tickets" in done.stdout


def test_the_readme_commands_are_options_lth_dashboard_takes():
    commands = readme_commands("lth-dashboard")
    assert len(commands) == 4 and any("--dry-run" in c for c in commands)
    for args in commands:
        _parser().parse_args(args)  # an unknown option or a bad value exits here


def test_saving_without_an_api_key_is_one_line(tmp_path):
    env = {"HOME": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path / "cfg"), "NETRC": str(tmp_path / "netrc"),
           "WANDB_API_KEY": ""}
    done = _run("lth-dashboard", "--entity", "team", "--project", "lth", cwd=tmp_path, env=env)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("lth-dashboard: error: no W&B API key") and "--dry-run" in line


@pytest.mark.slow
def test_the_readme_offline_block(tmp_path, data_root):
    (sweep,) = readme_commands("lth-run")[:1]
    env = {"WANDB_DIR": None}  # unset: the runs go into each lineage's folder, as the README says
    done = _run("lth-run", *sweep, "debug=fast", f"data.root={data_root}", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(glob.glob(str(tmp_path / "runs/smoke/*/wandb/offline-run-*"))) == 4  # `wandb sync`'s argument
    (dry,) = [c for c in readme_commands("lth-dashboard") if "--dry-run" in c]
    done = _run("lth-dashboard", *dry, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    spec = json.loads((tmp_path / dry[dry.index("--out") + 1]).read_text())
    assert spec["name"] == "lth: smoke"
    section = spec["spec"]["section"]
    assert [s["name"] for s in section["panelBankConfig"]["sections"]] == list(SECTIONS)
    assert section["runSets"][0]["grouping"] == [{"name": "ticket.value.reset", "section": "config"}]
