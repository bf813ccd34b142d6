"""The results store of one lineage folder: config.yaml, rounds.jsonl, round_XX/{mask.pt, trained.pt}, sinks."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
import yaml
from torch import Tensor

from lth import masks as masks_io
from lth.io import atomic_torch_save, atomic_write_text, read_jsonl, write_jsonl

# Config keys that may change between invocations of one lineage without changing its results.
NON_SEMANTIC_KEYS = (
    "out_dir",
    "name",
    "ticket.rounds",
    "trainer.checkpoint_every",
    "trainer.log_every_n_steps",
    "logger",
    "data.root",
    "data.download",
)


class RoundSink(Protocol):
    """Something that mirrors each finished round (a W&B run, a console line)."""

    def on_round(self, record: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two configs, ignoring NON_SEMANTIC_KEYS."""
    fa, fb = _flatten(a), _flatten(b)

    def ignored(k: str) -> bool:
        return any(k == n or k.startswith(n + ".") for n in NON_SEMANTIC_KEYS)

    return sorted(k for k in set(fa) | set(fb) if not ignored(k) and fa.get(k) != fb.get(k))


class RunFolder:
    """One lineage's folder: the record of truth of its rounds."""

    def __init__(self, path: str | os.PathLike, sinks: Iterable[RoundSink] = ()) -> None:
        self.path = Path(path)
        self.sinks = list(sinks)

    # ----- config
    def claim(self, config: Mapping[str, Any]) -> None:
        """Write config.yaml, or check that the folder's existing run has the same config (never mix results)."""
        path = self.path / "config.yaml"
        if path.exists():
            old = yaml.safe_load(path.read_text()) or {}
            diff = config_differences(old, config)
            if diff:
                fa, fb = _flatten(old), _flatten(config)
                lines = "\n".join(f"  {k}: existing={fa.get(k)!r} new={fb.get(k)!r}" for k in diff)
                raise ValueError(
                    f"{self.path} holds a run with a different config; refusing to mix results. "
                    f"Use another out_dir (or another override). Differences:\n{lines}"
                )
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, yaml.safe_dump(dict(config), sort_keys=False))

    # ----- rounds
    def round_dir(self, r: int) -> Path:
        return self.path / f"round_{r:02d}"

    def rounds(self) -> list[dict[str, Any]]:
        """The finished rounds' records, in order."""
        return read_jsonl(self.path / "rounds.jsonl")

    def record(self, r: int) -> dict[str, Any] | None:
        """The record of round `r`, if finished."""
        return next((x for x in self.rounds() if x["round"] == r), None)

    def add(self, record: Mapping[str, Any]) -> None:
        """Append (or replace) a round's record atomically, then mirror it to the sinks."""
        rows = [x for x in self.rounds() if x["round"] != record["round"]] + [dict(record)]
        write_jsonl(self.path / "rounds.jsonl", sorted(rows, key=lambda x: x["round"]))
        for sink in self.sinks:
            try:
                sink.on_round(record)
            except Exception as e:  # noqa: BLE001  a mirror must never lose the local record
                warnings.warn(f"{type(sink).__name__} failed on round {record['round']}: {e}", stacklevel=2)

    def close(self) -> None:
        """Close the sinks (failures warn)."""
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as e:  # noqa: BLE001
                warnings.warn(f"{type(sink).__name__} failed to close: {e}", stacklevel=2)

    # ----- per-round files
    def save_mask(self, r: int, masks: Mapping[str, Tensor]) -> None:
        masks_io.save(masks, self.round_dir(r) / "mask.pt")

    def load_mask(self, r: int) -> dict[str, Tensor]:
        return masks_io.load(self.round_dir(r) / "mask.pt")

    def has_mask(self, r: int) -> bool:
        return (self.round_dir(r) / "mask.pt").exists()

    def save_trained(self, r: int, state: Mapping[str, Tensor]) -> None:
        atomic_torch_save({k: v.detach().cpu() for k, v in state.items()}, self.round_dir(r) / "trained.pt")

    def load_trained(self, r: int) -> dict[str, Tensor]:
        return _load_state(self.round_dir(r) / "trained.pt")

    def checkpoint(self, r: int) -> Path:
        return self.round_dir(r) / "checkpoints" / "last.ckpt"

    def save_snapshots(self, state: Mapping[str, Any]) -> None:
        atomic_torch_save(dict(state), self.path / "snapshots.pt")

    def load_snapshots(self) -> dict[str, Any]:
        return _load_state(self.path / "snapshots.pt")


def _load_state(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the run folder is incomplete")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read {path} (damaged?): {e}") from e
