"""The file-lock job queue over a results folder (DESIGN.md, "The results folder and the queue").

The files it reads and writes (results, checkpoints, the lock, claims, attempts) are named by
:class:`gatedrnn.store.folder.ResultsFolder`. Every operation takes the queue lock only to read and write these small records, never while
training. Whether a claim is live is :class:`gatedrnn.store.status.Liveness`'s rule (no other
host's clock is trusted); on the claimant's own host a claim whose process is gone is stale at
once. A stale claim's configuration is claimed
again and resumes from its checkpoint. Every mutation by a claimant first checks that its token
still owns the claim, so a worker that lost its claim can neither complete nor release it.

The lock (two kinds, file and soft) is :mod:`gatedrnn.store.lock`'s; claiming packs,
:mod:`gatedrnn.store.packs`'.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from .folder import (RECORDED_SETTINGS, Claim, FolderError, ResultsFolder, attempts_problem, claim_problem,
                     claim_record, failed_record, finished_record, read_json, result_problem, set_aside)
from .lock import LOCK_KINDS, SOFT_LIFETIME, QueueError, QueueLock
from .packs import PackClaim, PackClaims
from .status import HOST, STALE, WATCHING, Liveness, heartbeat_interval, process_start, sweep_status

__all__ = ["Queue", "Claim", "PackClaim", "QueueError", "SettingsMismatch", "LOCK_KINDS"]

MAX_ATTEMPTS = 3


class SettingsMismatch(ValueError):
    """A launcher's settings differ from those the results folder recorded on first use."""


class Queue(PackClaims):
    """Claim, heartbeat, release, complete and fail configurations in a results folder (packs:
    :class:`gatedrnn.store.packs.PackClaims`; the lock: :class:`gatedrnn.store.lock.QueueLock`)."""

    def __init__(
        self,
        results_dir: str | os.PathLike,
        lease_seconds: float = 120.0,
        lock: str = "file",
        lock_timeout: float = 120.0,
        lock_lifetime: float = SOFT_LIFETIME,
        retry_delay: float = 30.0,
        report=None,
    ) -> None:
        """``retry_delay``: seconds before a configuration that raised is tried again (doubling
        with each failure), so that its attempts are spread over time. ``report(line)``: where
        damaged records found in the folder are reported (default: stderr)."""
        if not (isinstance(lease_seconds, (int, float)) and 0 < lease_seconds < float("inf")):
            raise ValueError(f"lease_seconds must be a positive finite number, got {lease_seconds!r}")
        self.folder = ResultsFolder(results_dir)
        self.dir = self.folder.root
        self.lease = float(lease_seconds)
        self.lock_kind = lock
        self.retry_delay = float(retry_delay)
        self._report = report or (lambda line: print(line, file=sys.stderr, flush=True))
        self._checked: dict[str, tuple] = {}  # result files found sound, by (inode, size, mtime)
        self._seen_generation: int | None = None  # the journal generation whose results were all checked
        self._suspect: set[str] = set()  # results found damaged before the lock was taken: looked at again under it
        self.index = None  # the journal's view of the folder, brought up to date under the lock
        self._unfinished: list[Mapping[str, Any]] = []
        self._unfinished_key: tuple | None = None
        self.liveness = Liveness(self.lease)  # what this process has seen of other hosts' heartbeats
        self.watching = False  # the last claim found claims not yet watched for a lease (maybe dead)
        self._retries: dict[tuple[str, int], float] = {}  # (id, failures) -> monotonic time first seen
        try:
            self.folder.prepare()
        except FolderError as e:
            raise QueueError(str(e)) from None
        self._lock = QueueLock(self.folder, lock, lock_timeout, lock_lifetime)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The queue lock, held for the ``with`` block (:class:`gatedrnn.store.lock.QueueLock`).
        Taken after a wait longer than a heartbeat's interval, the lock had stalled: claims that
        fell silent meanwhile are given a lease to beat again (:meth:`Liveness.stalled`)."""
        if self._seen_generation is None:
            self._first_look()
        with self._lock.held():
            if self._lock.waited > heartbeat_interval(self.lease):
                self.liveness.stalled()
            self.index = self.folder.journal.look()
            try:
                yield
            finally:
                self.folder.journal.flush()

    # ------------------------------------------------------------------ records
    def finished_ids(self):
        """The configurations with a result (a set-like view), as the journal says (call under the lock, which
        brings it up to date: :mod:`gatedrnn.store.journal`). On this process's first look, and
        for each result the journal reports new, the result file is checked whole; a damaged
        one is set aside and no longer counts."""
        index = self.index
        fresh = index.changed if self._seen_generation == index.generation else set(index.status)
        fresh, self._suspect = fresh | self._suspect, set()
        self._seen_generation = index.generation
        for cid in [c for c in fresh if c in index.status]:
            self._result_sound(cid)
        return index.status.keys()  # a view, not a copy: a claim does not copy 100,000 ids

    def claims(self) -> dict[str, dict[str, Any]]:
        """The readable claim records, by id."""
        return {k: v for k, v in self.folder.claim_records().items() if isinstance(v, dict)}

    def is_live(self, cid: str, rec: Mapping[str, Any]) -> bool:
        """Not known to be stale (:class:`gatedrnn.store.status.Liveness`): live, or another host's claim
        not yet watched unchanged for its lease."""
        state = self.liveness.judge(cid, rec)
        self.watching |= state == WATCHING
        return state != STALE

    def attempts(self, config_id: str) -> dict[str, Any]:
        """The failed attempts so far (a damaged record is set aside and counts as none).
        Call under the lock."""
        path = self.folder.attempt(config_id)
        if not path.exists():
            return {"failures": 0, "errors": []}
        rec = self.folder.read_attempts(config_id)
        if attempts_problem(rec) is not None:
            self._set_aside(path, "a damaged attempts record")
            return {"failures": 0, "errors": []}
        return rec

    def _set_aside(self, path: Path, what: str, problem: str | None = None) -> None:
        try:
            moved = set_aside(path)
        except FileNotFoundError:
            return
        self._report(f"warning: {path}: {what}{f' ({problem})' if problem else ''}; set aside as {moved.name}")

    def _first_look(self) -> None:
        """This process's first look, before it first takes the lock: the journal read and every
        result checked whole (at 100,000 configurations about ten seconds, which under the lock
        would hold back every other worker, and 32 workers starting together past the lock's
        timeout). Under the lock only what changed since, and what was found damaged here, are
        looked at again."""
        index = self.folder.journal.look()
        for cid in list(index.status):
            if self._result_problem(cid) not in (None, "gone"):
                self._suspect.add(cid)
        self._seen_generation = index.generation

    def _result_problem(self, config_id: str) -> str | None:
        """What is wrong with the result file of ``config_id`` (``gone``: no file), or None for a
        whole, valid record, remembered by its stat so that it is read only once."""
        path = self.folder.result(config_id)
        try:
            st = path.stat()
        except OSError:
            return "gone"
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._checked.get(config_id) == key:
            return None
        problem = result_problem(read_json(path), config_id)
        if problem is None:
            self._checked[config_id] = key
        return problem

    def _result_sound(self, config_id: str) -> bool:
        """Whether the result file of ``config_id`` is a whole, valid record; a damaged one is
        reported, set aside and so no longer counts as finished. Call under the lock."""
        problem = self._result_problem(config_id)
        if problem is None or problem == "gone":
            return problem is None
        path = self.folder.result(config_id)
        self._set_aside(path, "a damaged result", problem)
        self.folder.journal.add("g", config_id, "corrupt")
        return False

    def _owns(self, claim: Claim) -> bool:
        rec = self.folder.read_claim(claim.id)
        return isinstance(rec, dict) and rec.get("token") == claim.token

    # ------------------------------------------------------------------ operations
    def _free(self, cid: str, finished: set[str], claims: dict[str, Any], now: float):
        """Whether ``cid`` may be claimed now: no sound result, no live claim, no pending retry.
        Returns (the stale claim it replaces or None, its attempt number), or None. Damaged
        claim records are set aside. Call under the lock."""
        if cid in finished:
            return None
        if self.folder.result(cid).exists():  # written behind the journal's back (it is rebuilt at the next look)
            if self._result_sound(cid):
                self.folder.journal.add("r", cid, self.folder.result_status(cid))
                return None
        old = claims.get(cid, _NONE)
        if old is not _NONE:
            problem = claim_problem(old, cid)
            if problem is not None:
                self._set_aside(self.folder.claim(cid), "a damaged claim record", problem)
                claims.pop(cid, None)
                old = None
            elif self.is_live(cid, old):
                return None
        else:
            old = None
        tries = self.attempts(cid)
        if self._retry_wait(cid, tries) > 0:
            return None  # it raised recently: its next attempt waits (next_retry says how long)
        return old, tries["failures"] + 1

    def _retry_wait(self, cid: str, tries: Mapping[str, Any]) -> float:
        """Seconds before a configuration that raised may be tried again, on this process's own
        clock: the record's delay (``retry in``) from when this process first saw that failure
        (a record made on this host before ``retry in``: its ``retry after``, this host's clock)."""
        failures = tries.get("failures") or 0
        if not failures:
            return 0.0
        delay = tries.get("retry in")
        if not isinstance(delay, (int, float)):
            legacy = tries.get("retry after")
            errors = tries.get("errors") or [{}]
            if isinstance(legacy, (int, float)) and isinstance(errors[-1], dict) and errors[-1].get("host") == HOST:
                return max(0.0, legacy - time.time())
            delay = self.retry_delay * 2 ** (failures - 1)
        first = self._retries.setdefault((cid, failures), time.monotonic())
        return max(0.0, first + float(delay) - time.monotonic())

    def _write_claim(self, config: Mapping[str, Any], worker: str, now: float, old, attempt: int,
                     **extra: Any) -> Claim:
        cid = config["id"]
        rec = claim_record(cid, worker, HOST, os.getpid(), process_start(os.getpid()), secrets.token_hex(16), now,
                           self.lease, attempt, **extra)
        self.folder.write_claim(rec)
        return Claim(cid, dict(config), rec["token"], attempt, worker, took_over=old, record=rec)

    def claim(self, configs: Iterable[Mapping[str, Any]], worker: str,
              rungs: Callable[[list[str]], Mapping[str, int]] | None = None) -> Claim | None:
        """Take the first configuration with no result and no live claim, or return None.
        ``rungs(ids)`` (successive halving, called under the lock): the configurations that may be
        trained now, with the rung each trains to (recorded in the claim as ``rung``)."""
        self.watching = False
        with self.locked():
            finished = self.finished_ids()
            claims = self.folder.claim_records()
            now = time.time()
            candidates = self.unfinished(configs, finished)
            target = rungs([c["id"] for c in candidates]) if rungs is not None else None
            for config in candidates:
                if target is not None and config["id"] not in target:
                    continue
                free = self._free(config["id"], finished, claims, now)
                if free is not None:
                    extra = {} if target is None else {"rung": target[config["id"]]}
                    return self._write_claim(config, worker, now, *free, **extra)
        return None

    def unfinished(self, configs: Iterable[Mapping[str, Any]], finished: set[str]) -> list[Mapping[str, Any]]:
        """``configs`` without the finished ones, in their order. Kept between calls for the same
        configuration list (an object the caller keeps: the worker's, re-read only when the file
        changes), and brought up to date from what the journal's last look changed, so that a
        claim does not walk every finished configuration again."""
        index = self.index
        key = (id(configs), index.generation if index is not None else None)
        changed = index.changed if index is not None else set()
        reopened = any(cid not in finished for cid in changed)
        if key != self._unfinished_key or reopened or not isinstance(configs, list):
            self._unfinished = [c for c in configs if c["id"] not in finished]
            self._unfinished_key = key if isinstance(configs, list) else None
        elif changed:
            self._unfinished = [c for c in self._unfinished if c["id"] not in finished]
        return self._unfinished

    def next_retry(self, configs: Iterable[Mapping[str, Any]]) -> float | None:
        """Seconds until the first configuration that raised may be tried again (on this
        process's clock), or None when none waits (read without the lock: a hint for a worker with
        nothing to claim)."""
        finished = set(self.index.status) if self.index is not None else self.folder.finished_ids()
        waits = []
        for config in configs:
            if config["id"] in finished:
                continue
            rec = self.folder.read_attempts(config["id"])
            if attempts_problem(rec) is None and rec["failures"] and rec["failures"] < MAX_ATTEMPTS:
                waits.append(self._retry_wait(config["id"], rec))
        return min(waits) if waits else None

    def reopen_failed(self, configs: Iterable[Mapping[str, Any]]) -> int:
        """Make the failed configurations among ``configs`` pending again: each failed result is
        kept beside it as ``<id>.failed-<n>.json``. Returns how many were reopened."""
        n = 0
        with self.locked():
            for config in configs:
                path = self.folder.result(config["id"])
                rec = read_json(path)
                if isinstance(rec, dict) and rec.get("status") == "failed":
                    self.folder.move_result(config["id"], self.folder.old_failure(config["id"]), "failed")
                    self.folder.attempt(config["id"]).unlink(missing_ok=True)
                    n += 1
        return n

    def reopen_stopped(self, configs: Iterable[Mapping[str, Any]], ids: Iterable[str] | None) -> dict[str, list[str]]:
        """Continue configurations stopped at a rung of successive halving to the full budget
        (``ids``; None: every stopped one among ``configs``): each stopped result is kept beside it
        as ``<id>.stopped-<n>.json`` and the run trains on from its checkpoint. Returns the ids
        ``continued``, those of them with ``no checkpoint`` (stopped before pauses kept one: they
        train from the start), and ``not stopped`` (asked for, but with no stopped result)."""
        known = {c["id"] for c in configs}
        wanted = known if ids is None else set(ids)
        out: dict[str, list[str]] = {"continued": [], "no checkpoint": [], "not stopped": []}
        with self.locked():
            stopped = []
            for cid in sorted(wanted):
                rec = read_json(self.folder.result(cid))
                if cid in known and isinstance(rec, dict) and rec.get("stopped at rung") is True:
                    stopped.append(cid)
                elif ids is not None:
                    out["not stopped"].append(cid)
            if out["not stopped"]:
                return out  # bad input changes nothing
            self.folder.restore_kept_packs(set(stopped))  # their pack's state, among the live records again
            for cid in stopped:
                self.folder.restore_checkpoint(cid)
                if not self.folder.checkpoint(cid).exists() and self.folder.newest_pack_checkpoint(cid) is None:
                    out["no checkpoint"].append(cid)
                self.folder.move_result(cid, self.folder.old_stopped(cid), "stopped")
                out["continued"].append(cid)
        return out

    def record_config_file(self, path: str | os.PathLike) -> None:
        """Remember the sweep's configuration file (its absolute path), the one whose status the
        analysis reports for this folder; the latest launcher's wins."""
        if self.folder.read_config_file_record() != Path(path).resolve():
            with self.locked():
                self.folder.write_config_file_record(path)

    def record_settings(self, settings: Mapping[str, Any]) -> None:
        """Record the sweep's settings on first use; raise :class:`SettingsMismatch`, naming the
        setting and both values, when they differ from those recorded. A damaged settings file
        is reported, set aside, and recorded anew."""
        mine = {k: settings.get(k) for k in (*RECORDED_SETTINGS, "data")}
        path = self.folder.settings_file
        with self.locked():
            if path.exists():
                saved = self.folder.read_settings()
                if isinstance(saved, dict) and all(k in saved for k in RECORDED_SETTINGS):
                    for key in RECORDED_SETTINGS:
                        if key == "dataset sha256" and saved[key] != mine[key]:
                            corpus = mine.get("data") or "the built-in corpus"
                            raise SettingsMismatch(
                                f"{self.dir}: this results folder's runs read {corpus} with sha256 {saved[key]}, but "
                                f"{corpus} here has sha256 {mine[key]}; rerun where it has the recorded bytes (for "
                                "builtin:pydoc_topics, the Python build that made the folder), or use another "
                                "--results-dir")
                        if saved[key] != mine[key]:
                            flag = "--data" if key == "dataset sha256" else "--" + key.replace("_", "-")
                            raise SettingsMismatch(
                                f"{self.dir}: this results folder's runs use {key}={saved[key]!r}, this launcher "
                                f"{key}={mine[key]!r}; rerun with {flag} as recorded, or use another --results-dir")
                    return
                self._set_aside(path, "a damaged settings record")
            self.folder.write_settings(mine)

    def heartbeat(self, claim: "Claim | list[Claim]", progress: Mapping[str, Any] | None = None) -> bool:
        """Refresh the heartbeat (and progress) of a claim, or of every claim of a pack under one
        hold of the lock; False if any of them is no longer ours."""
        claims = claim if isinstance(claim, list) else [claim]
        ok = True
        with self.locked():
            now = time.time()
            for c in claims:
                rec = self.folder.read_claim(c.id)
                if not isinstance(rec, dict) or rec.get("token") != c.token:
                    ok = False
                    continue
                rec["heartbeat"] = now  # this host's clock: for display, and for observers on this host
                rec["beat"] = (rec.get("beat") if isinstance(rec.get("beat"), int) else 0) + 1  # what others watch
                if progress is not None:
                    mine = progress.get(c.id, progress) if isinstance(progress.get(c.id), Mapping) else progress
                    rec["progress"] = {k: v for k, v in mine.items() if not isinstance(v, Mapping)}
                self.folder.write_claim(rec)
        return ok

    def release(self, claim: Claim) -> bool:
        """Give the claim back (the checkpoint stays for whoever claims it next)."""
        with self.locked():
            if not self._owns(claim):
                return False
            self.folder.drop_claim(claim.id)
            return True

    def complete(self, claim: Claim, result: Mapping[str, Any], rung: int | None = None) -> bool:
        """Write the result (with the claim's attempt and worker) and drop the claim and
        checkpoint; False (and nothing written) if the claim is no longer ours or a result
        already exists. ``rung``: the last rung of successive halving, whose record it also is."""
        f = self.folder
        with self.locked():
            if not self._owns(claim) or f.result(claim.id).exists():
                return False
            record = finished_record(result, attempts=claim.attempt, worker=claim.worker)
            if rung is not None and result.get("status") == "done":
                f.write_rung_result(rung, record)
            f.write_result(record)
            f.drop_run(claim.id)
            return True

    def complete_rung(self, claim: Claim, record: Mapping[str, Any], rung: int) -> bool:
        """Successive halving: write the run's record at ``rung`` (with the claim's attempt and
        worker) and drop the claim, keeping the checkpoint it continues from if promoted; False
        (nothing written) if the claim is no longer ours or a result exists."""
        f = self.folder
        with self.locked():
            if not self._owns(claim) or f.result(claim.id).exists():
                return False
            f.write_rung_result(rung, finished_record(record, attempts=claim.attempt, worker=claim.worker))
            f.drop_claim(claim.id)
            return True

    def fail(self, claim: Claim, error: str, max_attempts: int = MAX_ATTEMPTS) -> str | None:
        """Record a failed attempt. After ``max_attempts`` the configuration gets a result with
        ``status: failed``. Returns "retry", "failed", or None if the claim was not ours."""
        f = self.folder
        with self.locked():
            if not self._owns(claim):
                return None
            rec = self.attempts(claim.id)
            rec["failures"] += 1
            now = time.time()
            rec["errors"].append({"time": now, "worker": claim.worker, "host": HOST, "error": error})
            rec["retry in"] = self.retry_delay * 2 ** (rec["failures"] - 1)  # from when each observer sees it
            rec["retry after"] = now + rec["retry in"]  # this host's clock: for display
            self._retries[(claim.id, rec["failures"])] = time.monotonic()
            if rec["failures"] >= max_attempts and not f.result(claim.id).exists():
                f.write_result(failed_record(claim.config, rec["errors"]))
                f.drop_run(claim.id)
                outcome = "failed"
            else:
                f.write_attempts(claim.id, rec)
                f.drop_claim(claim.id)
                outcome = "retry"
            return outcome

    # ------------------------------------------------------------------ status
    def status(self, configs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        return sweep_status(self.dir, configs, self.lease)


_NONE = object()
