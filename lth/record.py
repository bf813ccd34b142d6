"""The results store of one lineage folder: config.yaml, rounds.jsonl, round_XX/{mask.pt, trained.pt}, sinks."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any, Protocol

import torch
import yaml
from torch import Tensor

from lth import masks as masks_io
from lth.config import canonical_config
from lth.io import atomic_torch_save, atomic_write_text, read_jsonl, remove_stale_temp_files, write_jsonl

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
RESULT_FILES = ("rounds.jsonl", "snapshots.pt")
# where this folder's writers leave temp files if killed (only these: other runs' folders may be nested inside)
TEMP_FILES = (".*.tmp", "round_*/.*.tmp", "round_*/checkpoints/.*.tmp")  # besides round_XX folders: a folder holding these holds results


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


def config_differences(
    a: Mapping[str, Any], b: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
) -> list[str]:
    """Dotted keys whose values differ between two configs, ignoring NON_SEMANTIC_KEYS; a key one side lacks (a run
    written before that option existed) takes its value from `defaults`."""
    fd = _flatten(defaults or {})  # enum aliases (an old `scope: global_`) compare as their canonical name
    fa, fb = {**fd, **_flatten(canonical_config(a))}, {**fd, **_flatten(canonical_config(b))}

    def ignored(k: str) -> bool:
        return any(k == n or k.startswith(n + ".") for n in NON_SEMANTIC_KEYS)

    return sorted(k for k in set(fa) | set(fb) if not ignored(k) and fa.get(k) != fb.get(k))


class RunFolder:
    """One lineage's folder: the record of truth of its rounds.

    `writer=False` is the read-only view of a non-zero rank in a multi-process launch: it reads the folder, but its
    writes (files, records, sinks) are skipped, so every file is written once, by rank 0.
    """

    def __init__(self, path: str | os.PathLike, sinks: Iterable[RoundSink] = (), writer: bool = True) -> None:
        self.path = Path(path)
        self.sinks = list(sinks) if writer else []
        self.writer = writer
        self._lock: IO[str] | None = None

    # ----- config
    def existing_config(self) -> dict[str, Any] | None:
        """The config of the run this folder holds, or None for a folder without results."""
        path = self.path / "config.yaml"
        if not path.exists():
            held = [n for n in RESULT_FILES if (self.path / n).exists()] + sorted(
                p.name for p in self.path.glob("round_*") if p.is_dir() and any(p.iterdir())
            )
            if held:
                raise ValueError(
                    f"{self.path} holds results ({', '.join(held[:4])}) but no config.yaml, so it cannot be checked "
                    "that they belong to this config; refusing to mix results. Use another out_dir."
                )
            return None
        try:
            old = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is damaged ({e}); cannot check that this folder holds the same run") from None
        if not isinstance(old, dict):
            raise ValueError(  # noqa: TRY004  a damaged file, not a caller's wrong type
                f"{path} is damaged (not a mapping); cannot check that this folder holds the same run"
            )
        return old

    def check_config(self, config: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> None:
        """Raise ValueError if the folder holds a run of another config, naming both and their differences."""
        old = self.existing_config()
        if old is None:
            return
        diff = config_differences(old, config, defaults)
        if diff:
            fa, fb = _flatten(old), _flatten(config)
            lines = "\n".join(f"  {k}: existing={fa.get(k)!r} new={fb.get(k)!r}" for k in diff)
            raise ValueError(
                f"{self.path} holds a run with a different config; refusing to mix results.\n"
                f"  existing config: {self.path / 'config.yaml'} (name={fa.get('name')!r})\n"
                f"  new config: name={fb.get('name')!r}\n"
                f"Use another out_dir (or another override). Differences:\n{lines}"
            )

    def claim(self, config: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> None:
        """Check the config (never mix results), lock the folder against a second writer, then write config.yaml."""
        self.check_config(config, defaults)
        if not self.writer:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        for tmp in remove_stale_temp_files(self.path, TEMP_FILES):
            warnings.warn(f"removed {tmp}, a half-written file left by an interrupted run", stacklevel=2)
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(dict(config), sort_keys=False))

    def _acquire_lock(self) -> None:
        if self._lock is not None:
            return
        try:
            import fcntl
        except ImportError:  # no advisory locks on this platform
            return
        f = open(self.path / ".lock", "a+")  # noqa: SIM115  held open for the run's lifetime
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise ValueError(
                f"{self.path} is in use by another lth process (pid {holder}); two runs must not write one folder"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._lock = f

    def release(self) -> None:
        """Release the folder lock (also released when the process dies)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # ----- rounds
    def round_dir(self, r: int) -> Path:
        return self.path / f"round_{r:02d}"

    def rounds(self) -> list[dict[str, Any]]:
        """The finished rounds' records, in order (a damaged line warns and its round counts as unfinished)."""
        rows = read_jsonl(self.path / "rounds.jsonl", skip_damaged=True)
        return [x for x in rows if isinstance(x.get("round"), int)]

    def record(self, r: int) -> dict[str, Any] | None:
        """The record of round `r`, if finished."""
        return next((x for x in self.rounds() if x["round"] == r), None)

    def add(self, record: Mapping[str, Any]) -> None:
        """Append (or replace) a round's record atomically, then mirror it to the sinks."""
        if not self.writer:
            return
        rows = [x for x in self.rounds() if x["round"] != record["round"]] + [dict(record)]
        write_jsonl(self.path / "rounds.jsonl", sorted(rows, key=lambda x: x["round"]))
        for sink in self.sinks:
            try:
                sink.on_round(record)
            except Exception as e:  # noqa: BLE001  a mirror must never lose the local record
                warnings.warn(f"{type(sink).__name__} failed on round {record['round']}: {e}", stacklevel=2)

    def drop_rounds(self, first: int) -> list[int]:
        """Remove the records of rounds >= `first` (their results are redone); returns the dropped rounds."""
        rows = self.rounds()
        dropped = [x["round"] for x in rows if x["round"] >= first]
        if dropped and self.writer:
            write_jsonl(self.path / "rounds.jsonl", [x for x in rows if x["round"] < first])
        return dropped

    def close(self) -> None:
        """Close the sinks (failures warn) and release the folder."""
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as e:  # noqa: BLE001
                warnings.warn(f"{type(sink).__name__} failed to close: {e}", stacklevel=2)
        self.release()

    # ----- per-round files
    def save_mask(self, r: int, masks: Mapping[str, Tensor]) -> None:
        if self.writer:
            masks_io.save(masks, self.round_dir(r) / "mask.pt")

    def load_mask(self, r: int) -> dict[str, Tensor]:
        return masks_io.load(self.round_dir(r) / "mask.pt")

    def has_mask(self, r: int) -> bool:
        return (self.round_dir(r) / "mask.pt").exists()

    def save_trained(self, r: int, state: Mapping[str, Tensor]) -> None:
        if self.writer:
            atomic_torch_save({k: v.detach().cpu() for k, v in state.items()}, self.round_dir(r) / "trained.pt")

    def load_trained(self, r: int) -> dict[str, Tensor]:
        return _load_state(self.round_dir(r) / "trained.pt")

    def checkpoint(self, r: int) -> Path:
        return self.round_dir(r) / "checkpoints" / "last.ckpt"

    def save_snapshots(self, state: Mapping[str, Any]) -> None:
        if self.writer:
            atomic_torch_save(dict(state), self.path / "snapshots.pt")

    def load_snapshots(self) -> dict[str, Any]:
        return _load_state(self.path / "snapshots.pt")


def _load_state(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the run folder is incomplete")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read {path} (damaged?): {e}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path} is damaged: it holds a {type(obj).__name__}, not a state dict")  # noqa: TRY004
    return obj
