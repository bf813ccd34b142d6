"""Weights & Biases mirror of a lineage: one run, per-round metrics on a `round` axis, curves, a round table, masks."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers.logger import Logger
from pytorch_lightning.utilities import rank_zero_only

# Per-round metrics, logged against the `round` step metric.
ROUND_METRICS = (
    "density",
    "test_acc",
    "test_loss",
    "val_acc",
    "val_loss",
    "early_stop_step",
    "early_stop_test_acc",
    "early_stop_val_loss",
    "train_steps",
    "wall_seconds",
)
TABLE_COLUMNS = ("round", "density", "test_acc", "early_stop_step", "early_stop_test_acc", "status")
CURVE_STEP = "train/global_step"  # cumulative over rounds, so curves of all rounds share one axis


def run_id(folder: str | os.PathLike) -> str:
    """A stable W&B run id for a lineage folder, so a resumed lineage continues its run."""
    return hashlib.sha1(str(Path(folder).resolve()).encode()).hexdigest()[:16]


class WandbSink:
    """A RoundSink that mirrors every finished round to one W&B run (offline unless told otherwise)."""

    def __init__(
        self,
        folder: str | os.PathLike,
        config: Mapping[str, Any],
        *,
        project: str = "lth",
        entity: str | None = None,
        group: str | None = None,
        job_type: str | None = None,
        name: str | None = None,
        mode: str = "offline",
        tags: list[str] | None = None,
        log_masks: bool = True,
    ) -> None:
        import wandb

        self.folder = Path(folder)
        self.log_masks = log_masks
        self._wandb = wandb
        self.run = wandb.init(
            project=project,
            entity=entity,
            group=group,
            job_type=job_type,
            name=name,
            tags=tags,
            config=dict(config),
            mode=os.environ.get("WANDB_MODE", mode),
            dir=os.environ.get("WANDB_DIR", str(self.folder)),
            id=run_id(self.folder),
            resume="allow",
        )
        self.run.define_metric("round")
        for key in ROUND_METRICS:
            self.run.define_metric(key, step_metric="round")
        self.run.define_metric("layer_density/*", step_metric="round")
        self.run.define_metric(CURVE_STEP)
        self.run.define_metric("train/*", step_metric=CURVE_STEP)
        self.run.define_metric("val/*", step_metric=CURVE_STEP)
        self.run.define_metric("test/*", step_metric=CURVE_STEP)
        self.table = wandb.Table(columns=list(TABLE_COLUMNS), log_mode="INCREMENTAL")

    def on_round(self, record: Mapping[str, Any]) -> None:
        """Log a round's metrics, its table row and (optionally) its mask as an artifact."""
        r = record["round"]
        data: dict[str, Any] = {"round": r}
        data.update({k: record[k] for k in ROUND_METRICS if record.get(k) is not None})
        data.update({f"layer_density/{n}": d for n, d in record.get("layer_density", {}).items()})
        self.table.add_data(*(record.get(c) for c in TABLE_COLUMNS))
        data["rounds"] = self.table
        self.run.log(data)
        mask = self.folder / f"round_{r:02d}" / "mask.pt"
        if self.log_masks and mask.exists():
            art = self._wandb.Artifact(f"mask-{self.run.id}-round{r:02d}", type="mask", metadata={"round": r})
            art.add_file(str(mask))
            self.run.log_artifact(art)

    def curve_logger(self, step_offset: int) -> CurveLogger:
        """A Lightning logger writing a round's training curves into this run."""
        return CurveLogger(self.run, step_offset)

    def close(self) -> None:
        """Finish the run."""
        self.run.finish()


class CurveLogger(Logger):
    """Lightning logger forwarding step metrics to an open W&B run, on a cumulative step axis."""

    def __init__(self, run: Any, step_offset: int) -> None:
        super().__init__()
        self._run = run
        self.step_offset = step_offset

    @property
    def name(self) -> str:
        return "wandb_curves"

    @property
    def version(self) -> str:
        return str(self._run.id)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # the lineage's config is logged once, at wandb.init

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._run.log({**metrics, CURVE_STEP: self.step_offset + (step or 0)})  # the runner wraps it in SafeLogger
