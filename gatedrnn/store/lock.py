"""The queue's lock (DESIGN.md, "The results folder and the queue"; STYLE 9): held only to read and
write the small claim records, never while training, always released, and a waiter that times
out says who took it last.

Two kinds: ``file`` (flock through ``filelock.FileLock``; local disks, and network file systems
whose locks work across clients) and ``soft`` (``filelock.SoftFileLease``: an exclusively created
marker file holding pid and host, refreshed while held; it needs nothing of the file system but
atomic exclusive create, so it is the choice for NFS and several hosts). A soft lock left by a
killed holder is cleared by the next contender on the same host at once, and from any host once
it has seen the marker unchanged for ``lifetime`` seconds on its own monotonic clock.

The two kinds use two files (``.queue/lock`` and ``.queue/lock.soft``): the file kind's is never
removed (removing a flock file races), and a soft contender that found it would take it for a
marker whose holder it cannot know, and wait for ever. gatedrnn before the journal (the folder's
format 1) put the soft marker at ``.queue/lock``: a soft lock finding one there refuses to start
(an older version's worker holds it now, or was killed holding it).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Iterator

import filelock

from .folder import FolderError, ResultsFolder
from .status import HOST

__all__ = ["QueueLock", "QueueError", "LOCK_KINDS", "SOFT_LIFETIME"]

LOCK_KINDS = ("file", "soft")
SOFT_LIFETIME = 60.0  # seconds another host watches a soft lock's marker unchanged before clearing it


class QueueError(FolderError):
    """The results folder cannot be used as a queue (not writable, lock not obtainable, ...)."""


class QueueLock:
    """The lock of one results folder's queue: :meth:`held` is a context manager."""

    def __init__(self, folder: ResultsFolder, kind: str = "file", timeout: float = 120.0, lifetime: float = SOFT_LIFETIME) -> None:
        if kind not in LOCK_KINDS:
            raise ValueError(f"lock must be one of {', '.join(LOCK_KINDS)}, got {kind!r}")
        self.folder, self.kind, self.timeout = folder, kind, timeout
        self.waited = 0.0
        self.path = folder.soft_lock if kind == "soft" else folder.lock
        if kind == "soft":
            self._refuse_an_older_soft_marker()
            self._lock = filelock.SoftFileLease(str(self.path), lease_duration=lifetime, timeout=timeout)
        else:
            self._lock = filelock.FileLock(str(self.path), timeout=timeout)

    def _refuse_an_older_soft_marker(self) -> None:
        """A soft marker at the file kind's path is an older gatedrnn's soft lock (the file kind's
        file is empty): two versions taking the lock at two paths would not exclude each other."""
        try:
            text = self.folder.lock.read_text(errors="replace") if self.folder.lock.stat().st_size else ""
        except OSError:
            return
        if "pid=" in text or "host" in text:
            raise QueueError(f"{self.folder.lock}: a soft queue lock taken by an older gatedrnn (this one takes it at "
                             f"{self.path.name}); stop that version's workers, or, if none runs, remove the file")

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """The lock, held for the ``with`` block; ``waited`` is then how long taking it took."""
        start = time.monotonic()
        try:
            self._lock.acquire()
        except filelock.Timeout:
            holder = self.folder.read_lock_holder()
            holder = holder if isinstance(holder, dict) else {}
            who = f"{holder.get('host', '?')}:{holder.get('pid', '?')}" if holder else "an unknown process"
            when = holder.get("time")  # the holder's clock: shown, never compared
            when = time.ctime(when) if isinstance(when, (int, float)) and 0 <= when < 1e11 else "?"
            raise QueueError(
                f"{self.path}: could not take the queue lock in {self.timeout:.0f} s; "
                f"last taken by {who} at {when}"
            ) from None
        except OSError as e:  # (after Timeout, itself an OSError) a folder where the lock file belongs, a read-only disk, ...
            raise QueueError(f"{self.path}: cannot take the queue lock ({e.strerror or e})") from None
        self.waited = time.monotonic() - start
        try:
            try:
                self.folder.write_lock_holder({"host": HOST, "pid": os.getpid(), "time": time.time()})
            except OSError:
                pass
            yield
        finally:
            self._lock.release()
