"""Weights & Biases mirror of a lineage: one run, per-round metrics on a `round` axis, curves, a round table, masks."""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator, Mapping
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


# ----- reading an offline run back (its .wandb file: a LevelDB-style log of protobuf records)

_BLOCK = 32768
_HEADER = 7  # record header: crc32 (4) length (2) type (1); the file starts with a 7-byte header too
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(path: str | os.PathLike) -> Iterator[bytes]:
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log")
    pos, parts = _HEADER, []
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # block trailer
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        payload = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind == 0 and length == 0:
            pos += _BLOCK - pos % _BLOCK if pos % _BLOCK else 0
            continue
        if kind == _FULL:
            yield payload
        elif kind == _FIRST:
            parts = [payload]
        elif kind == _MIDDLE:
            parts.append(payload)
        elif kind == _LAST:
            parts.append(payload)
            yield b"".join(parts)
            parts = []


def _typed_records(path: str | os.PathLike, kind: str) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2

    for raw in _records(path):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(raw)
        if rec.WhichOneof("record_type") == kind:
            yield getattr(rec, kind)


def _items(items: Any) -> dict[str, Any]:
    import json

    return {(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in items}


def read_history(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The `history` rows logged in an offline run's .wandb file, as dicts of decoded JSON values."""
    return [_items(h.item) for h in _typed_records(path, "history")]


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The run config recorded in an offline run's .wandb file (later updates win)."""
    config: dict[str, Any] = {}
    for run in _typed_records(path, "run"):
        config.update(_items(run.config.update))
    for c in _typed_records(path, "config"):
        config.update(_items(c.update))
    config.pop("_wandb", None)
    return config


def find_run_file(wandb_dir: str | os.PathLike) -> Path:
    """The newest offline run's .wandb file under a W&B folder."""
    files = sorted(Path(wandb_dir).rglob("run-*.wandb"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise FileNotFoundError(f"no offline W&B run under {wandb_dir}")
    return files[-1]
