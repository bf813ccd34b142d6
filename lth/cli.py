"""`lth-run`: composes the Hydra config, validates it, and runs one lineage into the job's output folder.

Configs are searched in the packaged `lth/conf/` first, then in `./conf` of the working directory (the user's overlay:
`hydra.searchpath` in `lth/conf/config.yaml`), then in any `--config-dir`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import os
import re
import signal
import sys
import typing
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lth.config import Config
from lth.preempt import exits_only

ConfigStore.instance().store(name="lth_schema", node=Config)


# Overrides that only choose Hydra's behaviour or the folder's parent (runs/<name>): never part of a folder's name
HYDRA_ONLY_KEYS = ("experiment", "sweep", "launcher", "hydra")
MAX_PATH_VALUE = 64  # characters; a longer path value (branch.from=/abs/...) is shortened, see _short
MAX_DIRNAME = 160  # bytes; a longer name is cut and ends in a hash of the whole name
_UNSAFE = re.compile(r'[\x00-\x1f\x7f:*?"<>|\\\s]')  # besides "/": not portable or awkward in a path component


def _leaves_name(key: str) -> bool:
    """Whether an override of `key` leaves the folder name unchanged (it does not change results)."""
    from lth.config import NON_SEMANTIC_KEYS

    return any(key == k or key.startswith(k + ".") for k in (*HYDRA_ONLY_KEYS, *NON_SEMANTIC_KEYS))


def _hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _short(line: str) -> str:
    """`k=v` with a long path value `v` shortened to its last two components and a hash of the whole path."""
    key, eq, value = line.partition("=")
    if "/" not in value or len(value) <= MAX_PATH_VALUE:
        return line
    parts = [p for p in value.strip("'\"").split("/") if p]
    return f"{key}{eq}{'/'.join(parts[-2:])}-{_hash(value)}"


def _run_dir_name(overrides: str | Sequence[str]) -> str:
    """A lineage's folder name, one path component: its sorted result-changing overrides `k=v` joined by "," (the
    task overrides of a job; a string is taken as already joined), "defaults" for none. "/" in values becomes "~" (a
    long path value keeps its last two components and a hash), other unsafe characters "_"; a lossy or over-long name
    ends in "-<hash of the exact overrides>"."""
    if isinstance(overrides, str):
        name = overrides
    else:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides([str(o) for o in overrides])
        name = ",".join(sorted(_short(str(o.input_line)) for o in parsed if not _leaves_name(o.key_or_group)))
    if not name:
        return "defaults"
    flat = _UNSAFE.sub("_", name.replace("/", "~"))
    lossy = flat != name.replace("/", "~") or ("/" in name and "~" in name)
    if lossy or len(flat.encode()) > MAX_DIRNAME:
        cut = flat.encode()[: MAX_DIRNAME - 9].decode(errors="ignore")
        flat = f"{cut}-{_hash(name)}"
    return flat


if not OmegaConf.has_resolver("lth_dirname"):
    OmegaConf.register_new_resolver("lth_dirname", _run_dir_name)


@contextlib.contextmanager
def overlay_optional() -> Iterator[None]:
    """Silence Hydra's warning that the `./conf` overlay is not there: most working directories have none."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"provider=hydra\.searchpath in main, path=conf is not available",
                                UserWarning)
        yield


# Schema nodes that take arbitrary keys by design (checked by their own consumers, e.g. validate's branch check)
FREE_FORM = ("model.args", "data.args", "pruning.overrides", "optimizer", "scheduler", "branch")


def schema_keys(cls: type = Config, prefix: str = "") -> dict[str, type | None]:
    """Dotted key → its schema dataclass (None for a leaf), for every key of the schema `cls` (nested ones too)."""
    out: dict[str, type | None] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t = hints.get(f.name)
        key = prefix + f.name
        node = t if isinstance(t, type) and dataclasses.is_dataclass(t) else None
        out[key] = node
        if node is not None:
            out.update(schema_keys(node, key + "."))
    if cls.__name__ == "SupermaskConfig":  # `from` is added outside the class body (a Python keyword)
        out[prefix + "from"] = None
    return out


def check_keys(cfg: Any, prefix: str = "") -> None:
    """Raise ValueError for a key of a composed config outside the schema (e.g. `+ticket.round=5`), naming the
    closest schema key; FREE_FORM nodes accept any key."""
    known = schema_keys()
    if OmegaConf.is_config(cfg):
        cfg = OmegaConf.to_container(cfg, resolve=False)
    for key in cfg:
        dotted = f"{prefix}{key}"
        if dotted in FREE_FORM:
            continue
        if dotted not in known:
            close = difflib.get_close_matches(dotted, list(known), n=1, cutoff=0.6)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            raise ValueError(f"unknown config key `{dotted}`{hint}; `lth-run --help` lists the options")
        value = cfg[key]
        if known[dotted] is not None and isinstance(value, dict):
            check_keys(value, dotted + ".")


def compose_config(overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The typed config `lth-run <overrides>` would run (for scripts, notebooks and tests); `./conf` is searched too."""
    from hydra import compose, initialize_config_module

    with overlay_optional(), initialize_config_module("lth.conf", version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    check_keys(cfg)
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def _remove_empty(folder: Path, stop: Path) -> None:
    """Remove `folder` and its parents below `stop` while they are empty (what Hydra made for a job that wrote
    nothing)."""
    folder, stop = folder.resolve(), stop.resolve()
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty, or gone
            return
        folder = folder.parent


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def app(cfg: DictConfig) -> None:
    """Hydra task: one lineage."""
    hc = HydraConfig.get()
    hydra_dir = Path(hc.runtime.output_dir)
    out_dir = Path(cfg.out_dir) if cfg.out_dir else hydra_dir
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        try:
            check_keys(cfg)
            config: Config = OmegaConf.to_object(cfg)  # type: ignore[assignment]
            dirname = _run_dir_name(hc.overrides.task)  # the lineage's folder name: its overrides that change results
            if config.logger.run_name is None:  # the W&B run: reset/criterion/seed, then the folder's other overrides
                from lth.metrics import run_name

                config.logger.run_name = run_name(config.ticket.reset, config.pruning.criterion, config.seed, dirname)
            from lth.validate import validate

            validate(config)  # before the heavy imports: the values first, then the registries' names
            from lth.runner import run

            label = f"#{hc.job.num} {dirname}" if multirun else ""
            run(config, out_dir, **({"label": label} if label else {}))
        finally:
            _remove_empty(hydra_dir, Path.cwd())  # a refused config (or out_dir elsewhere) leaves no job folder
    except (ValueError, KeyError, FileNotFoundError) as e:
        if multirun:
            raise  # Hydra records the failed job, runs the others, and reports the failure at the end
        raise SystemExit(f"lth-run: error: {e}") from None
    except SystemExit as e:
        from lth.preempt import Interrupted

        if not isinstance(e, Interrupted):
            raise
        where = f"at step {e.step} of round {e.round}" if e.step is not None else (
            f"before round {e.round}" if e.round is not None else "")
        print(f"lth-run: interrupted {where} — rerun the same command to resume".replace("  ", " "),
              file=sys.stderr, flush=True)
        raise SystemExit(128 + e.signum) from None


@exits_only
def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("WANDB_SILENT", "true")  # W&B's banner and summary: the run folder holds the record
    signal.signal(signal.SIGTERM, _terminate)  # until a run installs its own: stop with the message below
    try:
        with overlay_optional():
            app()
    except KeyboardInterrupt:
        print("lth-run: interrupted — rerun the same command to resume", file=sys.stderr, flush=True)
        raise SystemExit(130) from None


if __name__ == "__main__":
    sys.exit(main())
