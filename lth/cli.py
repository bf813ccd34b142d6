"""`lth-run`: composes the Hydra config, validates it, and runs one lineage into the job's output folder.

Configs are searched in the packaged `lth/conf/` first, then in `./conf` of the working directory (the user's overlay:
`hydra.searchpath` in `lth/conf/config.yaml`), then in any `--config-dir`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lth.config import Config

ConfigStore.instance().store(name="lth_schema", node=Config)


# Overrides that only choose Hydra's behaviour or the folder's parent (runs/<name>): never part of a folder's name
HYDRA_ONLY_KEYS = ("experiment", "sweep", "launcher", "hydra")
MAX_PATH_VALUE = 64  # characters; a longer path value (branch.from=/abs/...) is shortened, see _short
MAX_DIRNAME = 160  # bytes; a longer name is cut and ends in a hash of the whole name
_UNSAFE = re.compile(r'[\x00-\x1f\x7f:*?"<>|\\\s]')  # besides "/": not portable or awkward in a path component


def _leaves_name(key: str) -> bool:
    """Whether an override of `key` leaves the folder name unchanged (it does not change results)."""
    from lth.record import NON_SEMANTIC_KEYS

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


def compose_config(overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The typed config `lth-run <overrides>` would run (for scripts, notebooks and tests); `./conf` is searched too."""
    from hydra import compose, initialize_config_module

    with overlay_optional(), initialize_config_module("lth.conf", version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def app(cfg: DictConfig) -> None:
    """Hydra task: one lineage."""
    from lth.runner import run

    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.WARNING)

    out_dir = Path(cfg.out_dir) if cfg.out_dir else Path(HydraConfig.get().runtime.output_dir)
    config: Config = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    if config.logger.run_name is None:
        dirname = _run_dir_name(HydraConfig.get().overrides.task)  # the W&B run is named like the lineage's folder
        config.logger.run_name = config.name if dirname == "defaults" else dirname
    try:
        run(config, out_dir)
    except (ValueError, KeyError, FileNotFoundError) as e:
        logging.getLogger("lth").error("%s", e)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # Hydra records the failed job, runs the others, and reports the failure at the end
        raise SystemExit(f"lth-run: error: {e}") from None


def main() -> None:
    """Console-script entry point."""
    with overlay_optional():
        app()


if __name__ == "__main__":
    sys.exit(main())
