"""Loggers that mirror a lineage: a Lightning logger wrapper whose failures warn instead of stopping training, and the
W&B mirror's start-up. The local record is what counts."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from argparse import Namespace
from collections.abc import Iterator
from typing import Any

from pytorch_lightning.loggers import Logger


class SafeLogger(Logger):
    """Forwards everything to `inner` (CSV, W&B, ...); an exception in it becomes one warning per method, and
    training and the run's rounds.jsonl carry on."""

    def __init__(self, inner: Logger) -> None:
        super().__init__()
        self.inner = inner
        self.failures: dict[str, int] = {}

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self.inner, method)(*args, **kwargs)
        except Exception as e:  # noqa: BLE001  a logger must never cost the run
            self.failures[method] = self.failures.get(method, 0) + 1
            if self.failures[method] == 1:
                warnings.warn(
                    f"logger {type(self.inner).__name__} failed in {method} ({type(e).__name__}: {e}); training "
                    "continues and the local record (rounds.jsonl) is unaffected; further failures of this call "
                    "are counted silently",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return None

    @property
    def name(self) -> str | None:
        return self.inner.name

    @property
    def version(self) -> int | str | None:
        return self.inner.version

    @property
    def root_dir(self) -> str | None:
        return self.inner.root_dir

    @property
    def log_dir(self) -> str | None:
        return self.inner.log_dir

    @property
    def save_dir(self) -> str | None:
        return self.inner.save_dir

    @property
    def group_separator(self) -> str:
        return self.inner.group_separator

    @property
    def experiment(self) -> Any:
        return self.inner.experiment

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._call("log_metrics", metrics, step)

    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        self._call("log_hyperparams", params, *args, **kwargs)

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        self._call("log_graph", model, input_array)

    def save(self) -> None:
        self._call("save")

    def finalize(self, status: str) -> None:
        self._call("finalize", status)

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        self._call("after_save_checkpoint", checkpoint_callback)


def wandb_sinks(cfg: Any, folder: str | os.PathLike, config: dict[str, Any], kind: str) -> list[Any]:
    """The W&B mirror of a lineage (`logger.*` of config `cfg`) of experiment kind `kind` (its `job_type`; `group`:
    the experiment name, shared by a sweep's lineages), or none with a warning if W&B cannot start."""
    lg = cfg.logger
    try:
        from lth.wandb_sink import WandbSink

        return [WandbSink(folder, config, project=lg.project, entity=lg.entity, mode=lg.mode,
                          group=lg.group or cfg.name, job_type=kind, name=lg.run_name,
                          tags=list(lg.tags), log_masks=lg.log_masks, sync_hook=lg.sync_hook, sync_dir=lg.sync_dir)]
    except Exception as e:  # noqa: BLE001  W&B is a mirror: without it the local record still completes
        warnings.warn(f"W&B could not start ({type(e).__name__}: {e}); continuing with the local record only",
                      RuntimeWarning, stacklevel=3)
        return []


# Third-party messages that say nothing about a run (each one printed once per round before)
QUIET_WARNINGS = (
    r".*Total length of .* across ranks is zero.*",  # replicated evaluation under DDP
    r".*sync_dist=True.*",  # evaluation is replicated, not sharded: per-rank values are the values
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",  # Lightning's pytree use under a newer torch
    r".*weights_only=False.*",  # torch.load's FutureWarning (Lightning loads its own checkpoints)
    r".*does not have many workers.*",  # in-memory tensors need none
    r".*Previous log files in this directory will be deleted.*",
)
QUIET_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric")  # tips, summaries


@contextlib.contextmanager
def quiet_third_party() -> Iterator[None]:
    """During a run: Lightning's info messages (tips, e.g. `litlogger`'s) and the warnings in QUIET_WARNINGS off."""
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for pattern in QUIET_WARNINGS:
                warnings.filterwarnings("ignore", pattern)
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
