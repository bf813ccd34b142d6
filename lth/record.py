"""The results store of one lineage folder (config.yaml, rounds.jsonl, round_XX/{mask.pt, trained.pt}), the typed
per-round record that every reader uses (console, W&B, lth.analysis, lth.reproduce), and the sinks that mirror it."""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import torch
import yaml
from torch import Tensor

from lth import masks as masks_io
from lth.config import EXTENDING_KEYS, NON_SEMANTIC_KEYS, canonical_config
from lth.early_stop import DEFAULT_RULE, early_stop_fields
from lth.flat import flatten
from lth.io import atomic_torch_save, atomic_write_text, read_jsonl, remove_stale_temp_files, write_jsonl

RESULT_FILES = ("rounds.jsonl", "snapshots.pt")
# where this folder's writers leave temp files if killed (only these: other runs' folders may be nested inside)
# besides round_XX folders: a folder holding these holds results
TEMP_FILES = (".*.tmp", "round_*/.*.tmp", "round_*/checkpoints/.*.tmp", "round_*/masks/.*.tmp")


RECORD_VERSION = 2  # 1: the records written before `record_version` existed (same fields, read the same way)


@dataclass(frozen=True, eq=False)  # equality: Mapping's, so a record equals its dict form
class RoundRecord(Mapping):
    """One finished round: typed fields every kind fills, plus `extra` (kind-specific fields: branch_from, supermask,
    nonfinite_step, ...). A read-only mapping of its flat JSON form, so `rec["test_acc"]` and `dict(rec)` work."""

    round: int
    density: float
    layer_density: dict[str, float] = field(default_factory=dict)
    test_acc: float | None = None  # at the end of training
    test_loss: float | None = None
    val_acc: float | None = None
    val_loss: float | None = None
    # the early-stop evaluation under trainer.early_stop_metric (lth.early_stop; records without it: val_loss)
    early_stop_step: int | None = None
    early_stop_test_acc: float | None = None
    early_stop_val_loss: float | None = None
    early_stop_val_acc: float | None = None
    early_stop_metric: str | None = None
    # under each rule, whichever was chosen: lowest validation loss, highest validation accuracy
    early_stop_by_val_loss_step: int | None = None
    early_stop_by_val_loss_test_acc: float | None = None
    early_stop_by_val_acc_step: int | None = None
    early_stop_by_val_acc_test_acc: float | None = None
    train_steps: int | None = None
    wall_seconds: float | None = None
    criterion: str | None = None
    reset: str | None = None  # "none" for a lineage's dense round 0
    fraction: float | None = None
    scope: str | None = None
    seed: int | None = None
    status: str = "ok"  # or "nonfinite_loss"
    granularity: str | None = None
    flops_dense: int | None = None  # per example
    flops_nonzero: int | None = None
    params_dense: int | None = None
    params_nonzero: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    record_version: int = RECORD_VERSION

    @classmethod
    def build(cls, **values: Any) -> RoundRecord:
        """A record from keyword values: the typed fields by name, every other key into `extra`."""
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "record_version"}
        extra = {**values.pop("extra", {}), **{k: values.pop(k) for k in list(values) if k not in known}}
        return cls(**_json_safe(values), extra=_json_safe(extra))

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> RoundRecord:
        """A record from one line of rounds.jsonl (any version; fields a version lacks are None)."""
        row = dict(row)
        version = int(row.pop("record_version", 1))
        if version > RECORD_VERSION:
            raise ValueError(f"record version {version} is newer than this lth reads ({RECORD_VERSION})")
        record = cls.build(**row)
        return dataclasses.replace(record, record_version=version)

    def replace(self, **values: Any) -> RoundRecord:
        """A copy with some fields (typed or extra) changed."""
        flat = {k: v for k, v in self.as_dict().items() if k != "record_version"}
        return dataclasses.replace(RoundRecord.build(**{**flat, **values}), record_version=self.record_version)

    @functools.cached_property
    def _flat(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("extra", "record_version")}
        out = {k: v for k, v in out.items() if v is not None or k not in _OPTIONAL_FIELDS}
        out.update(self.extra)
        if self.record_version > 1:
            out["record_version"] = self.record_version
        return out

    def as_dict(self) -> dict[str, Any]:
        """The flat JSON form (what rounds.jsonl holds)."""
        return dict(self._flat)

    def __getitem__(self, key: str) -> Any:
        return self._flat[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._flat)

    def __len__(self) -> int:
        return len(self._flat)


_OPTIONAL_COUNTS = ("flops_dense", "flops_nonzero", "params_dense", "params_nonzero")
# fields left out while None, so that a record written before they existed reads and rewrites unchanged
_OPTIONAL_FIELDS = (*_OPTIONAL_COUNTS, "early_stop_metric", "early_stop_by_val_loss_step",
                    "early_stop_by_val_loss_test_acc", "early_stop_by_val_acc_step", "early_stop_by_val_acc_test_acc")


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    return obj


class RoundSink(Protocol):
    """Something that mirrors each finished round (a W&B run, a console line)."""

    def on_round(self, record: RoundRecord) -> None: ...

    def close(self) -> None: ...


class ConsoleSink:
    """Prints one line per finished round, the run's start and end, and (through `progress`) progress within a round;
    `label` prefixes every line (a sweep's job); `bar`: a progress bar (default: when stderr is a terminal)."""

    def __init__(self, total_rounds: int, label: str = "", bar: bool | None = None) -> None:
        import sys

        from rich.console import Console

        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.total = total_rounds
        self.label = label
        self.bar = sys.stderr.isatty() if bar is None else bar

    @property
    def prefix(self) -> str:
        """What every line starts with: `[<label>] ` in a sweep, nothing in a plain run."""
        return f"[{self.label}] " if self.label else ""

    def say(self, text: str) -> None:
        """Print one line (prefixed)."""
        self.console.print(self.prefix + text, markup=False)

    def round_title(self, r: int) -> str:
        """The prefixed `round r/N` of round `r`'s progress lines."""
        return f"{self.prefix}round {r}/{self.total}"

    def on_round(self, record: RoundRecord) -> None:
        from rich.markup import escape

        es = record.get("early_stop_test_acc")
        acc = record.get("test_acc")
        self.console.print(
            f"{escape(self.prefix)}[bold]round {record['round']}/{self.total}[/bold]  density {record['density']:.4f}  "
            f"test acc {float('nan') if acc is None else acc:.4f}  "
            f"early-stop acc {es if es is None else f'{es:.4f}'} @ step {record.get('early_stop_step')}  "
            f"({record['wall_seconds']:.1f}s)"
        )

    def close(self) -> None:
        pass


def config_differences(
    a: Mapping[str, Any], b: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
) -> list[str]:
    """Dotted keys whose values differ between two configs, ignoring NON_SEMANTIC_KEYS; a key one side lacks (a run
    written before that option existed) takes its value from `defaults`; EXTENDING_KEYS are ignored too."""
    fd = flatten(defaults or {})  # enum aliases (an old `scope: global_`) compare as their canonical name
    fa, fb = {**fd, **flatten(canonical_config(a))}, {**fd, **flatten(canonical_config(b))}

    def ignored(k: str) -> bool:
        return any(k == n or k.startswith(n + ".") for n in (*NON_SEMANTIC_KEYS, *EXTENDING_KEYS))

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
            fa, fb = flatten(old), flatten(config)
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

    def rounds(self) -> list[RoundRecord]:
        """The finished rounds' records, in order (a damaged line warns and its round counts as unfinished)."""
        rows = read_jsonl(self.path / "rounds.jsonl", skip_damaged=True)
        return [RoundRecord.from_json(x) for x in rows if isinstance(x.get("round"), int)]

    def record(self, r: int) -> RoundRecord | None:
        """The record of round `r`, if finished."""
        return next((x for x in self.rounds() if x["round"] == r), None)

    def add(self, record: RoundRecord) -> None:
        """Append (or replace) a round's record atomically, then mirror it to the sinks."""
        if not self.writer:
            return
        rows = [x for x in self.rounds() if x["round"] != record["round"]] + [record]
        write_jsonl(self.path / "rounds.jsonl", [x.as_dict() for x in sorted(rows, key=lambda x: x["round"])])
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
            write_jsonl(self.path / "rounds.jsonl", [x.as_dict() for x in rows if x["round"] < first])
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

    def discard_checkpoint(self, r: int) -> None:
        """Remove round `r`'s resume point (its results are in trained.pt)."""
        ckpt = self.checkpoint(r)
        if self.writer and ckpt.exists():
            ckpt.unlink()

    def resume_point(self, r: int, state: Mapping[str, Tensor], names: list[str]) -> Path | None:
        """Round `r`'s last.ckpt if it exists and fits a model with this `state` and prunables `names`; a damaged one
        is set aside with a warning."""
        from lth.masks import check_state

        ckpt = self.checkpoint(r)
        if not ckpt.exists():
            return None
        try:
            saved = torch.load(ckpt, map_location="cpu", weights_only=True)
            if not isinstance(saved, dict) or "state_dict" not in saved:
                raise ValueError("not a Lightning checkpoint")
            expected = {f"model.{k}": v for k, v in state.items()}
            check_state({k: v for k, v in saved["state_dict"].items() if k.startswith("model.")}, expected,
                        "its weights")
            manager = next((s["manager"] for k, s in saved.get("callbacks", {}).items() if "MaskingCallback" in k), None)
            if manager is None or list(manager["names"]) != names:
                raise ValueError(f"its prunables are not {names}")
        except Exception as e:  # noqa: BLE001  whatever is wrong with it, it must not be trusted
            warnings.warn(f"ignoring {ckpt}: it is damaged or belongs to another model ({e}); round {r} restarts "
                          "from its start", stacklevel=3)
            if self.writer:
                os.replace(ckpt, ckpt.with_name("last.ckpt.damaged"))
            return None
        return ckpt

    def save_history(self, r: int, history: list[dict[str, float]]) -> None:
        """Write round `r`'s evaluations (round_XX/evals.jsonl)."""
        if self.writer:
            write_jsonl(self.round_dir(r) / "evals.jsonl", [_json_safe(h) for h in history])

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


def checkpoint_step(path: Path) -> int:
    """The optimizer step a Lightning checkpoint was written at (its tensors are mapped, not read)."""
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])


def measured(r: int, module: Any, manager: Any, steps: int, seconds: float,
             early_stop_metric: str = DEFAULT_RULE) -> dict[str, Any]:
    """The measured fields of round `r`: densities, the last and the early-stop evaluations (under the chosen rule
    and under every rule: lth.early_stop), steps, time and status (a non-finite loss is recorded, logged and warned
    about)."""
    last = module.history[-1] if module.history else {}
    values: dict[str, Any] = {
        "round": r, "density": manager.density(), "layer_density": manager.layer_density(),
        **{k: last.get(k) for k in ("test_acc", "test_loss", "val_acc", "val_loss")},
        **early_stop_fields(module.history, early_stop_metric),
        "train_steps": steps, "wall_seconds": round(seconds, 3), "status": "ok",
    }
    if module.nonfinite_step is not None:
        values.update(status="nonfinite_loss", nonfinite_step=module.nonfinite_step)
        msg = (f"round {r}: non-finite loss at step {module.nonfinite_step}; the round was stopped there and "
               "recorded with status 'nonfinite_loss'")
        logging.getLogger("lth.runner").warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
    return values
