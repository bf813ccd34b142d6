"""Weights & Biases mirror of a lineage: one run, per-round metrics on a `round` axis, curves, a round table, masks."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers.logger import Logger
from pytorch_lightning.utilities import rank_zero_only

from lth.io import atomic_write_text

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
    # train.distill (lth.distill): the teacher's test accuracy, the student's top-1 agreement and KL to it
    "teacher_test_acc",
    "teacher_agreement",
    "teacher_kl",
)
TABLE_COLUMNS = ("round", "density", "test_acc", "early_stop_step", "early_stop_test_acc", "status")
CURVE_STEP = "train/global_step"  # cumulative over rounds, so curves of all rounds share one axis


def run_id(folder: str | os.PathLike) -> str:
    """A stable W&B run id for a lineage folder, so a resumed lineage continues its run."""
    return hashlib.sha1(str(Path(folder).resolve()).encode()).hexdigest()[:16]


MIRRORED = ".wandb_rounds.json"  # in the lineage folder: the rounds its W&B run has logged (so reruns add no rows)


class WandbSink:
    """A RoundSink that mirrors every finished round to one W&B run (offline unless told otherwise).

    The run starts at the first thing to log, so a rerun of a finished, already mirrored lineage opens no run; rounds
    the folder holds but the run lacks (W&B added to a finished lineage) are logged by `catch_up`."""

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
        self._init = dict(project=project, entity=entity, group=group, job_type=job_type, name=name, tags=tags,
                          config=dict(config), mode=os.environ.get("WANDB_MODE", mode),
                          dir=os.environ.get("WANDB_DIR", str(self.folder)), id=run_id(self.folder), resume="allow")
        self._run: Any = None
        self._failed = False
        self.table: Any = None

    @property
    def run(self) -> Any:
        """The W&B run, started (or resumed, by the folder's run id) on first use; None if W&B could not start."""
        if self._run is None and not self._failed:
            try:
                run = self._wandb.init(**self._init)
            except Exception as e:  # noqa: BLE001  W&B is a mirror: without it the local record still completes
                self._failed = True
                warnings.warn(f"W&B could not start ({type(e).__name__}: {e}); continuing with the local record only",
                              RuntimeWarning, stacklevel=2)
                return None
            run.define_metric("round")
            for key in ROUND_METRICS:
                run.define_metric(key, step_metric="round")
            run.define_metric("layer_density/*", step_metric="round")
            run.define_metric(CURVE_STEP)
            run.define_metric("train/*", step_metric=CURVE_STEP)
            run.define_metric("val/*", step_metric=CURVE_STEP)
            run.define_metric("test/*", step_metric=CURVE_STEP)
            self.table = self._wandb.Table(columns=list(TABLE_COLUMNS), log_mode="INCREMENTAL")
            self._run = run
        return self._run

    def mirrored(self) -> set[int]:
        """The rounds this folder's W&B run has logged (an unreadable marker counts as none)."""
        try:
            data = json.loads((self.folder / MIRRORED).read_text())
            return set(data["rounds"]) if data.get("run_id") == self._init["id"] else set()
        except (OSError, ValueError, KeyError, TypeError):
            return set()

    def _mark(self, r: int) -> None:
        data = {"run_id": self._init["id"], "rounds": sorted(self.mirrored() | {r})}
        atomic_write_text(self.folder / MIRRORED, json.dumps(data) + "\n")

    def catch_up(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Log the finished rounds (the folder's records) that this folder's run has not logged yet."""
        done = self.mirrored()
        try:
            for record in records:
                if record["round"] not in done:
                    self.on_round(record)
        except Exception as e:  # noqa: BLE001  a mirror must never cost the run; the next run catches up again
            warnings.warn(f"W&B could not log the finished rounds ({type(e).__name__}: {e})", RuntimeWarning,
                          stacklevel=2)

    def on_round(self, record: Mapping[str, Any]) -> None:
        """Log a round's metrics, its table row and (optionally) its mask as an artifact."""
        r = record["round"]
        run = self.run
        if run is None:
            return
        data: dict[str, Any] = {"round": r}
        data.update({k: record[k] for k in ROUND_METRICS if record.get(k) is not None})
        data.update({f"layer_density/{n}": d for n, d in record.get("layer_density", {}).items()})
        self.table.add_data(*(record.get(c) for c in TABLE_COLUMNS))
        data["rounds"] = self.table
        run.log(data)
        mask = self.folder / f"round_{r:02d}" / "mask.pt"
        if self.log_masks and mask.exists():
            art = self._wandb.Artifact(f"mask-{run.id}-round{r:02d}", type="mask", metadata={"round": r})
            art.add_file(str(mask))
            run.log_artifact(art)
        self._mark(r)

    def curve_logger(self, step_offset: int) -> CurveLogger:
        """A Lightning logger writing a round's training curves into this run."""
        return CurveLogger(self.run, step_offset)

    def close(self) -> None:
        """Finish the run (if one was started)."""
        if self._run is not None:
            self._run.finish()


class CurveLogger(Logger):
    """Lightning logger forwarding step metrics to an open W&B run, on a cumulative step axis."""

    def __init__(self, run: Any, step_offset: int) -> None:  # run None: W&B could not start, nothing is logged
        super().__init__()
        self._run = run
        self.step_offset = step_offset

    @property
    def name(self) -> str:
        return "wandb_curves"

    @property
    def version(self) -> str:
        return str(self._run.id) if self._run is not None else ""

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # the lineage's config is logged once, at wandb.init

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self._run is not None:
            self._run.log({**metrics, CURVE_STEP: self.step_offset + (step or 0)})  # the runner wraps it in SafeLogger
