"""The file-lock job queue over a results folder (DESIGN.md, "The results folder and the queue").

```
<results>/<id>.json            the result of a finished configuration (written once, atomically)
<results>/checkpoints/<id>.pt  the latest checkpoint of an unfinished run
<results>/.queue/lock          the queue lock (filelock)
<results>/.queue/claims/<id>.json    who trains <id>: worker, host, pid, token, heartbeat, progress
<results>/.queue/attempts/<id>.json  failed attempts so far, with their tracebacks
```

Every operation takes the queue lock only to read and write these small records, never while
training. A claim is live while its heartbeat is fresher than the lease; on the claimant's own
host a claim whose process is gone is stale at once. A stale claim's configuration is claimed
again and resumes from its checkpoint. Every mutation by a claimant first checks that its token
still owns the claim, so a worker that lost its claim can neither complete nor release it.

Two lock kinds: ``file`` (flock through ``filelock.FileLock``; local disks, and network file
systems whose locks work across clients) and ``soft`` (``filelock.SoftFileLease``: an
exclusively created marker file holding pid and host, refreshed while held; it needs nothing
of the file system but atomic exclusive create, so it is the choice for NFS and several hosts).
A soft lock left by a killed holder is cleared by the next contender on the same host at once,
and from any host after ``lock_lifetime`` seconds without a refresh.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import filelock

from ._atomic import atomic_write_json

__all__ = ["Queue", "Claim", "QueueError", "LOCK_KINDS", "HOST", "pid_alive", "claim_is_live", "sweep_status"]

LOCK_KINDS = ("file", "soft")
HOST = socket.gethostname()
MAX_ATTEMPTS = 3
_ID = re.compile(r"^[0-9a-f]{64}$")


class QueueError(RuntimeError):
    """The results folder cannot be used as a queue (not writable, lock not obtainable, ...)."""


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (to tell a reused pid from the original), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def _process_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[0]


def pid_alive(pid: int, start: str | None = None) -> bool:
    """Whether process ``pid`` on this host is running (a zombie is not; a reused pid is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if _process_state(pid) in ("Z", "X"):
        return False
    if start is not None:
        now = _process_start(pid)
        if now is not None and now != start:
            return False
    return True


@dataclass
class Claim:
    id: str
    config: dict[str, Any]
    token: str
    attempt: int  # 1 for the first try, 2 after one failure, ...
    worker: str
    took_over: dict[str, Any] | None = None  # the stale claim this one replaced
    record: dict[str, Any] = field(default_factory=dict)


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _finished_ids(folder: Path) -> set[str]:
    """Ids with a result file in ``folder``."""
    if not folder.is_dir():
        return set()
    return {p[:-5] for p in os.listdir(folder) if p.endswith(".json") and _ID.match(p[:-5])}


def _read_claims(claims_dir: Path) -> dict[str, dict[str, Any]]:
    """The readable claim records in ``claims_dir``, by id."""
    out: dict[str, dict[str, Any]] = {}
    if claims_dir.is_dir():
        for name in os.listdir(claims_dir):
            rec = _read_json(claims_dir / name) if name.endswith(".json") else None
            if isinstance(rec, dict):
                out[name[:-5]] = rec
    return out


class Queue:
    """Claim, heartbeat, release, complete and fail configurations in a results folder."""

    def __init__(
        self,
        results_dir: str | os.PathLike,
        lease_seconds: float = 120.0,
        lock: str = "file",
        lock_timeout: float = 120.0,
        lock_lifetime: float = 60.0,
    ) -> None:
        if lock not in LOCK_KINDS:
            raise ValueError(f"lock must be one of {', '.join(LOCK_KINDS)}, got {lock!r}")
        if not lease_seconds > 0:
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds!r}")
        self.dir = Path(results_dir)
        self.lease = float(lease_seconds)
        self.lock_kind = lock
        self.qdir = self.dir / ".queue"
        self.claims_dir = self.qdir / "claims"
        self.attempts_dir = self.qdir / "attempts"
        self.checkpoints_dir = self.dir / "checkpoints"
        self.logs_dir = self.qdir / "logs"
        self._lock_timeout = lock_timeout
        self._prepare()
        lock_path = str(self.qdir / "lock")
        if lock == "soft":
            # a marker file (O_EXCL) with the holder's pid and host, refreshed while held; a dead
            # holder on this host is cleared at once, one elsewhere after lock_lifetime seconds
            self._lock = filelock.SoftFileLease(lock_path, lease_duration=lock_lifetime, timeout=lock_timeout)
        else:
            self._lock = filelock.FileLock(lock_path, timeout=lock_timeout)

    def _prepare(self) -> None:
        if self.dir.exists() and not self.dir.is_dir():
            raise QueueError(f"{self.dir}: the results folder is not a directory")
        if not self.dir.exists():
            raise QueueError(f"{self.dir}: no such results folder (create it with init_experiments.py)")
        try:
            for d in (self.qdir, self.claims_dir, self.attempts_dir, self.checkpoints_dir, self.logs_dir):
                d.mkdir(exist_ok=True)
            probe = self.qdir / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise QueueError(f"{self.dir}: the results folder is not writable ({e.strerror or e})") from None

    # ------------------------------------------------------------------ locking
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        try:
            self._lock.acquire()
        except filelock.Timeout:
            holder = _read_json(self.qdir / "lock.holder") or {}
            who = f"{holder.get('host', '?')}:{holder.get('pid', '?')}" if holder else "an unknown process"
            raise QueueError(
                f"{self.qdir / 'lock'}: could not take the queue lock in {self._lock_timeout:.0f} s; "
                f"last taken by {who} at {time.ctime(holder.get('time', 0)) if holder else '?'}"
            ) from None
        try:
            try:
                (self.qdir / "lock.holder").write_text(json.dumps({"host": HOST, "pid": os.getpid(), "time": time.time()}))
            except OSError:
                pass
            yield
        finally:
            self._lock.release()

    # ------------------------------------------------------------------ paths and records
    def result_path(self, config_id: str) -> Path:
        return self.dir / f"{config_id}.json"

    def checkpoint_path(self, config_id: str) -> Path:
        return self.checkpoints_dir / f"{config_id}.pt"

    def _claim_path(self, config_id: str) -> Path:
        return self.claims_dir / f"{config_id}.json"

    def finished_ids(self) -> set[str]:
        return _finished_ids(self.dir)

    def claims(self) -> dict[str, dict[str, Any]]:
        return _read_claims(self.claims_dir)

    def is_live(self, rec: Mapping[str, Any], now: float | None = None) -> bool:
        return claim_is_live(rec, self.lease, now)

    def attempts(self, config_id: str) -> dict[str, Any]:
        rec = _read_json(self.attempts_dir / f"{config_id}.json")
        return rec if isinstance(rec, dict) else {"failures": 0, "errors": []}

    def _owns(self, claim: Claim) -> bool:
        rec = _read_json(self._claim_path(claim.id))
        return isinstance(rec, dict) and rec.get("token") == claim.token

    # ------------------------------------------------------------------ operations
    def claim(self, configs: Iterable[Mapping[str, Any]], worker: str) -> Claim | None:
        """Take the first configuration with no result and no live claim, or return None."""
        with self.locked():
            finished = self.finished_ids()
            claims = self.claims()
            now = time.time()
            for config in configs:
                cid = config["id"]
                if cid in finished:
                    continue
                old = claims.get(cid)
                if old is not None and self.is_live(old, now):
                    continue
                attempt = self.attempts(cid)["failures"] + 1
                rec = {
                    "id": cid, "worker": worker, "host": HOST, "pid": os.getpid(),
                    "pid start": _process_start(os.getpid()), "token": secrets.token_hex(16),
                    "claimed": now, "heartbeat": now, "lease": self.lease, "attempt": attempt, "progress": {},
                }
                atomic_write_json(self._claim_path(cid), rec)
                return Claim(cid, dict(config), rec["token"], attempt, worker, took_over=old, record=rec)
        return None

    def heartbeat(self, claim: Claim, progress: Mapping[str, Any] | None = None) -> bool:
        """Refresh the claim's heartbeat (and progress); False if the claim is no longer ours."""
        with self.locked():
            rec = _read_json(self._claim_path(claim.id))
            if not isinstance(rec, dict) or rec.get("token") != claim.token:
                return False
            rec["heartbeat"] = time.time()
            if progress is not None:
                rec["progress"] = dict(progress)
            atomic_write_json(self._claim_path(claim.id), rec)
            return True

    def release(self, claim: Claim) -> bool:
        """Give the claim back (the checkpoint stays for whoever claims it next)."""
        with self.locked():
            if not self._owns(claim):
                return False
            self._claim_path(claim.id).unlink(missing_ok=True)
            return True

    def complete(self, claim: Claim, result: Mapping[str, Any]) -> bool:
        """Write the result and drop the claim and checkpoint; False (and nothing written) if
        the claim is no longer ours or a result already exists."""
        with self.locked():
            if not self._owns(claim) or self.result_path(claim.id).exists():
                return False
            atomic_write_json(self.result_path(claim.id), result)
            self._claim_path(claim.id).unlink(missing_ok=True)
            self.checkpoint_path(claim.id).unlink(missing_ok=True)
            (self.attempts_dir / f"{claim.id}.json").unlink(missing_ok=True)
            return True

    def fail(self, claim: Claim, error: str, max_attempts: int = MAX_ATTEMPTS) -> str | None:
        """Record a failed attempt. After ``max_attempts`` the configuration gets a result with
        ``status: failed``. Returns "retry", "failed", or None if the claim was not ours."""
        with self.locked():
            if not self._owns(claim):
                return None
            rec = self.attempts(claim.id)
            rec["failures"] += 1
            rec["errors"].append({"time": time.time(), "worker": claim.worker, "host": HOST, "error": error})
            if rec["failures"] >= max_attempts and not self.result_path(claim.id).exists():
                last_line = error.strip().splitlines()[-1] if error.strip() else "unknown error"
                result = dict(claim.config)
                result.update({"status": "failed", "error": last_line, "traceback": error,
                               "attempts": rec["failures"], "loss": [], "min loss": None,
                               "end time": time.time(), "errors": rec["errors"]})
                atomic_write_json(self.result_path(claim.id), result)
                (self.attempts_dir / f"{claim.id}.json").unlink(missing_ok=True)
                self.checkpoint_path(claim.id).unlink(missing_ok=True)
                outcome = "failed"
            else:
                atomic_write_json(self.attempts_dir / f"{claim.id}.json", rec)
                outcome = "retry"
            self._claim_path(claim.id).unlink(missing_ok=True)
            return outcome

    # ------------------------------------------------------------------ status
    def status(self, configs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        return sweep_status(self.dir, configs, self.lease)


def claim_is_live(rec: Mapping[str, Any], lease: float, now: float | None = None) -> bool:
    """Live while the heartbeat is fresher than the claimant's lease (``lease`` for records
    that do not state theirs); on this host, only while its process runs."""
    now = time.time() if now is None else now
    if now - float(rec.get("heartbeat", 0)) > float(rec.get("lease", lease)):
        return False
    if rec.get("host") == HOST and not pid_alive(int(rec.get("pid", -1)), rec.get("pid start")):
        return False
    return True


def sweep_status(results_dir: str | os.PathLike, configs: Iterable[Mapping[str, Any]],
                 lease: float = 120.0) -> dict[str, Any]:
    """Counts (done, diverged, failed, running, pending) over ``configs`` and the live claims.
    Reads the folder without the lock and writes nothing: a snapshot for display and analysis."""
    folder = Path(results_dir)
    ids = [c["id"] for c in configs]
    finished = _finished_ids(folder)
    claims = _read_claims(folder / ".queue" / "claims")
    now = time.time()
    counts = {"done": 0, "diverged": 0, "failed": 0, "running": 0, "pending": 0}
    running = []
    for cid in ids:
        if cid in finished:
            status = _result_status(folder / f"{cid}.json")
            counts[status if status in counts else "done"] += 1
        elif cid in claims and claim_is_live(claims[cid], lease, now):
            counts["running"] += 1
            running.append(claims[cid])
        else:
            counts["pending"] += 1
    return {"total": len(ids), "counts": counts, "running": running}


_STATUS_CACHE: dict[tuple[str, int], str] = {}


def _result_status(path: Path) -> str:
    """A result's status; results never change once written, so each file is read once."""
    try:
        key = (str(path), path.stat().st_ino)
    except OSError:
        return "done"
    if key not in _STATUS_CACHE:
        rec = _read_json(path)
        _STATUS_CACHE[key] = rec.get("status", "done") if isinstance(rec, dict) else "done"
    return _STATUS_CACHE[key]
