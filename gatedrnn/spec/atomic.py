"""Atomic file writes: temp file in the same folder, flush, fsync, os.replace."""

from __future__ import annotations

import glob
import json
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, IO


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process's umask (Linux tells it in /proc; elsewhere it is read by setting it back)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _mode_for(path: Path) -> int:
    """The mode a rewritten file keeps, or that a new file gets under the umask (as open() does)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


_TEMP_SUFFIX = ".tmp"


def _temp_prefix(path: Path) -> str:
    """How the names of ``path``'s temp files begin (hidden, beside it): :func:`remove` finds them."""
    return f".{path.name}."


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(f)`` so that readers see the old file or the new one, never
    a part of it, even if this process is killed mid-write. A new file's mode follows the umask;
    a rewritten file keeps its mode (mkstemp's private 0600 is not left behind)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=_TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, _mode_for(path))
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def remove(path: str | os.PathLike) -> None:
    """Remove ``path`` and every temp file that a write of it by :func:`atomic_write` left (a
    process killed mid-write cannot remove its own). For a file that no one should write any more
    (a finished run's checkpoint and claim): a writer that still does (a worker that lost its
    claim) then fails to replace it, as it should."""
    path = Path(path)
    path.unlink(missing_ok=True)
    for tmp in path.parent.glob(f"{glob.escape(_temp_prefix(path))}*{_TEMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def _finite(obj: Any) -> Any:
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def dumps_json(obj: Any, indent: int | None = 1) -> str:
    return json.dumps(_finite(obj), indent=indent, allow_nan=False) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> None:
    atomic_write_bytes(path, dumps_json(obj, indent).encode("utf-8"))
