"""Reads an offline W&B run back (its .wandb file: a LevelDB-style log of protobuf records), for tests that compare
what a lineage logged with its `rounds.jsonl`."""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_BLOCK = 32768
_HEADER = 7  # record header: crc32 (4) length (2) type (1); the file starts with a 7-byte header too
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(path: str | os.PathLike, timeout: float = 60.0) -> list[bytes]:
    """The log's records once its `exit` record is on disk: W&B's service may still be writing the log for a moment
    after `wandb.finish()` returns (seen on a loaded machine: a file read back without even its `run` record)."""
    from wandb.proto import wandb_internal_pb2

    deadline = time.monotonic() + timeout
    while True:
        data = Path(path).read_bytes()
        if len(data) >= 4 and data[:4] != b":W&B":
            raise ValueError(f"{path} is not a W&B transaction log")
        records = list(_parse(data))
        for raw in reversed(records):  # the exit record sits at the end: usually one parse
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(raw)
            if rec.WhichOneof("record_type") == "exit":
                return records
        if time.monotonic() > deadline:
            raise ValueError(f"{path}: no exit record after {timeout:.0f} s: the run was not finished")
        time.sleep(0.2)


def _parse(data: bytes) -> Iterator[bytes]:
    """The payloads of a W&B transaction log's bytes (a LevelDB-style log; a torn last record is left out)."""
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
