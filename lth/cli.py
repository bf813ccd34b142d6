"""`lth-run`: composes the Hydra config, validates it, and runs one lineage into the job's output folder.

Configs are searched in the packaged `lth/conf/` first, then in `./conf` of the working directory (the user's overlay:
`hydra.searchpath` in `lth/conf/config.yaml`), then in any `--config-dir`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lth.config import Config

ConfigStore.instance().store(name="lth_schema", node=Config)


def _run_dir_name(override_dirname: str) -> str:
    return override_dirname or "defaults"


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
        config.logger.run_name = HydraConfig.get().job.override_dirname or config.name
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
