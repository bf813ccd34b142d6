"""Atomic file writes (temp file, fsync, rename — never a half-written result) and the crash-test fault hook."""

from __future__ import annotations

import io
import json
import os
import signal
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import torch

FAULT_ENV = "LTH_FAULT"
_fault_hits: Counter[str] = Counter()


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL if `$LTH_FAULT` names this point (`<name>` or `<name>@<n>`: its n-th passage).

    Crash-resume tests use it to stop a run at an exact moment: `write:<file>` (the temp file half written),
    `written:<file>` (the file complete, nothing after it done), `step:<round>:<step>` (after an optimizer step).
    Unset, it costs one environment lookup.
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    point, _, nth = spec.partition("@")
    if point != name:
        return
    _fault_hits[name] += 1
    if _fault_hits[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if os.environ.get(FAULT_ENV):
                f.write(data[: len(data) // 2])
                f.flush()
                fault_point(f"write:{path.name}")
                f.write(data[len(data) // 2 :])
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)  # the rename itself survives a power cut
    fault_point(f"written:{path.name}")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """Atomically `torch.save` an object."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def remove_stale_temp_files(folder: str | os.PathLike, patterns: tuple[str, ...] = (".*.tmp",)) -> list[Path]:
    """Delete temp files a killed writer left in `folder` (patterns relative to it); returns what was removed."""
    removed = []
    for pattern in patterns:
        for tmp in Path(folder).glob(pattern):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


def read_jsonl(path: str | os.PathLike, skip_damaged: bool = False) -> list[dict]:
    """Read a JSON-lines file (a missing file is empty). A damaged line is a ValueError naming it, or, with
    `skip_damaged`, skipped with a warning."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                problem = None if isinstance(row, dict) else f"a {type(row).__name__}, not an object"
            except ValueError as e:
                problem = str(e)
            if problem is not None:
                msg = f"{path} line {i} is damaged ({problem}): {line[:80]!r}"
                if not skip_damaged:
                    raise ValueError(msg) from None
                warnings.warn(f"{msg}; ignoring it", stacklevel=2)
                continue
            rows.append(row)
    return rows


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    """Atomically (re)write a JSON-lines file."""
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
