"""The lock-free snapshot of a sweep (DESIGN.md, "Layout"): what the live display, ``gatedrnn
status`` and the analysis all show.

It reads the results folder without the queue's lock and writes nothing: counts by status
(done, diverged, failed, running, pending) over a configuration file, the live and the stale
claims with their progress, the failed configurations with their reason, the ETA, and the
formatted lines.

Liveness (:class:`Liveness`, the rule the queue claims by too; STYLE 21): no time written by one
host is compared with another host's clock. A claim of *this* host is live while its process runs
and its heartbeat (written by this host's clock) is fresher than its lease. A claim of another
host is live while its heartbeat *changes*: every heartbeat increments its ``beat``, and the
observer remembers what it saw and when, on its own monotonic clock; a claim it has watched
unchanged for the lease is stale, and one it has not yet watched that long is ``watching`` (not
claimable yet, not known to be dead). A one-shot observer (``gatedrnn status``) has seen another
host's claim once, so it can say no more than that unless it watches (``--watch``).
"""

from __future__ import annotations

import math
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..spec.config import RNNConfig
from .folder import ResultsFolder, claim_problem, read_json, result_problem

__all__ = ["HOST", "pid_alive", "process_start", "process_gone", "claim_is_live", "heartbeat_interval", "Liveness", "LIVE", "STALE", "WATCHING",
           "sweep_status", "snapshot", "eta_seconds",
           "duration", "by_pack", "pack_label", "labels_of", "format_live", "format_snapshot",
           "recorded_config_file"]

HOST = socket.gethostname()


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (to tell a reused pid from the original), or None."""
    fields = _stat_fields(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def pid_alive(pid: int, start: str | None = None) -> bool:
    """Whether process ``pid`` on this host is running (a zombie is not; a reused pid is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _stat_fields(pid)
    if fields is not None and fields[0] in ("Z", "X"):
        return False
    if start is not None:
        now = process_start(pid)
        if now is not None and now != start:
            return False
    return True


def _number(value: Any) -> float | None:
    """A finite number, or None (for a field of the wrong type: null, a string, 1e400 read as inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


LIVE, STALE, WATCHING = "live", "stale", "watching"


def heartbeat_interval(lease: float) -> float:
    """Seconds between a worker's heartbeats under ``lease``: at least four in a lease."""
    return min(5.0, lease / 4)


def _own_lease(rec: Mapping[str, Any], lease: float) -> float:
    own = _number(rec.get("lease"))
    return own if own is not None and own > 0 else lease


class Liveness:
    """One observer's view of claims' heartbeats (see the module's docstring): :meth:`judge` says
    whether a claim is ``live``, ``stale`` or still being ``watching``-ed, :meth:`age` how long ago
    this observer saw its heartbeat change. Keep one object for as long as the observer lives (a
    worker's queue, the launcher's display, a follower): what it remembers is what it saw."""

    def __init__(self, lease: float) -> None:
        self.lease = lease
        # claim id -> ((token, beat) as last seen, monotonic time it was first seen so, seen changing)
        self._seen: dict[str, tuple[tuple, float, bool]] = {}
        self._stall_ended: float | None = None  # monotonic time the last stall of the queue lock ended

    def stalled(self, now: float | None = None) -> None:
        """The queue's lock was just taken after a long wait (a holder killed with the soft lock
        held, a file system that hung): no one could heartbeat meanwhile, so for a lease from now
        no claim is judged stale by its silence, only one of this host whose process is gone."""
        self._stall_ended = time.monotonic() if now is None else now

    def _after_stall(self, rec: Mapping[str, Any], now: float) -> bool:
        return self._stall_ended is not None and now - self._stall_ended < _own_lease(rec, self.lease)

    def judge(self, cid: str, rec: Any, now: float | None = None) -> str:
        if not isinstance(rec, Mapping) or _number(rec.get("heartbeat")) is None:
            return STALE  # a record of the wrong shape
        now = time.monotonic() if now is None else now
        if rec.get("host") == HOST:  # this host's clock on both sides
            if claim_is_live(rec, self.lease):
                return LIVE
            return WATCHING if self._after_stall(rec, now) and not process_gone(rec) else STALE
        key = (rec.get("token"), rec.get("beat", rec.get("heartbeat")))
        seen = self._seen.get(cid)
        if seen is None or seen[0] != key:
            self._seen[cid] = (key, now, seen is not None)
            return LIVE if seen is not None else WATCHING
        _, since, changed = seen
        if now - since >= _own_lease(rec, self.lease) and not self._after_stall(rec, now):
            return STALE
        return LIVE if changed else WATCHING

    def age(self, cid: str, rec: Any, now: float | None = None) -> tuple[float | None, bool]:
        """Seconds since this observer saw the claim's heartbeat change (or first saw it), and
        whether it has watched it change; for this host's claims, the heartbeat's own age."""
        if not isinstance(rec, Mapping):
            return None, False
        if rec.get("host") == HOST:
            hb = _number(rec.get("heartbeat"))
            return (None if hb is None else time.time() - hb), True
        self.judge(cid, rec, now)
        key, since, changed = self._seen[cid]
        return (time.monotonic() if now is None else now) - since, changed

    def forget(self, keep: Iterable[str]) -> None:
        """Drop what was seen of claims no longer there."""
        keep = set(keep)
        for cid in [c for c in self._seen if c not in keep]:
            del self._seen[cid]


def process_gone(rec: Mapping[str, Any]) -> bool:
    """Whether a claim was made on this host by a process that no longer runs (or by no valid
    pid): the one certain sign of a dead claimant."""
    if rec.get("host") != HOST:
        return False
    pid, start = rec.get("pid"), rec.get("pid start")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return True
    return not pid_alive(pid, start if isinstance(start, str) else None)


def claim_is_live(rec: Any, lease: float, now: float | None = None) -> bool:
    """This host's rule, for a claim made on this host: live while its process runs and its
    heartbeat is fresher than the claimant's lease (``lease`` for records that do not state a
    valid one). A record of the wrong shape (not an object, a heartbeat that is not a number,
    ...) is stale. Another host's claims are judged by :class:`Liveness`."""
    if not isinstance(rec, Mapping):
        return False
    now = time.time() if now is None else now
    heartbeat = _number(rec.get("heartbeat"))
    own = _number(rec.get("lease"))
    if heartbeat is None:
        return False
    if now - heartbeat > (own if own is not None and own > 0 else lease):
        return False
    return not process_gone(rec)


# ---------------------------------------------------------------------- counts
_JOURNALS: dict[str, Any] = {}  # a long-lived observer (the launcher, the MLflow follower) reads what changed


def folder_index(folder: ResultsFolder):
    """The folder's journal index, up to date (:mod:`gatedrnn.store.journal`): this process keeps
    one journal per folder, so that each look reads what changed since the last; where the
    journal is older than the folder, the index is read from the folder afresh (``rebuilt``)."""
    return journal_of(folder).look()


def journal_of(folder: ResultsFolder):
    """This process's journal reader of ``folder`` (one per folder, kept across looks)."""
    key = str(folder.root.resolve())
    if key not in _JOURNALS:
        _JOURNALS[key] = folder.journal
    return _JOURNALS[key]


def sweep_status(results_dir: str | os.PathLike | ResultsFolder, configs: Iterable[Mapping[str, Any]],
                 lease: float = 120.0, liveness: Liveness | None = None) -> dict[str, Any]:
    """Counts (done, diverged, failed, running, pending) over ``configs`` and the records of the
    claims not known to be stale (``running``): live ones, and another host's that this observer
    (``liveness``, which a long-lived caller keeps across calls) has not watched for a lease."""
    folder = results_dir if isinstance(results_dir, ResultsFolder) else ResultsFolder(results_dir)
    liveness = liveness or Liveness(lease)
    ids = [c["id"] for c in configs]
    index = folder_index(folder)
    claims = folder.claim_records()
    counts = {"done": 0, "diverged": 0, "failed": 0, "running": 0, "pending": 0}
    running = []
    for cid in ids:
        status = index.status.get(cid)
        if status is not None:
            counts[status] += 1
        elif cid in claims and claim_problem(claims[cid], cid) is None and liveness.judge(cid, claims[cid]) != STALE:
            counts["running"] += 1
            running.append(claims[cid])
        else:
            counts["pending"] += 1
    return {"total": len(ids), "counts": counts, "running": running, "rungs": rung_counts(folder, ids, index),
            "index rebuilt": index.rebuilt}


def eta_seconds(counts: Mapping[str, int], progress: Iterable[Mapping[str, Any]], steps: int | None) -> float | None:
    """Seconds left at the running workers' summed speed: 0 when nothing is left, None when no
    running worker reports its speed (or the steps per run are unknown)."""
    if not counts["pending"] and not counts["running"]:
        return 0.0
    progress = list(progress)
    rate = sum(p.get("steps per second") or 0 for p in progress)
    if not steps or not rate:
        return None
    left = counts["pending"] * steps + sum(max(0, steps - (p.get("step") or 0)) for p in progress)
    return left / rate


def snapshot(results_dir: str | os.PathLike, configs: list[Mapping[str, Any]], lease: float = 120.0,
             steps: int | None = None, watch: float = 0.0, liveness: Liveness | None = None) -> dict[str, Any]:
    """The sweep's state: counts, the claims not known to be stale and the stale ones
    (``running``, ``stale``: rows with worker, host, step, loss, speed, ``heartbeat age`` as this
    host saw it and ``watched``), the failed configurations with their reason, and the ETA.
    ``steps``: steps per run (default: the folder's recorded settings). ``watch``: look, wait that
    many seconds, and look again, so that another host's claims are judged by whether their
    heartbeat changed meanwhile (a claim unchanged for its whole lease is stale)."""
    folder = ResultsFolder(results_dir)
    if steps is None:
        settings = read_json(folder.settings_file)
        steps = settings.get("steps") if isinstance(settings, dict) else None
    liveness = liveness or Liveness(lease)
    if watch > 0:
        sweep_status(folder.root, configs, lease, liveness)
        time.sleep(watch)
    snap = sweep_status(folder.root, configs, lease, liveness)
    live = {r.get("id") for r in snap["running"]}
    ids = {c["id"] for c in configs}
    running, stale = [], []
    for cid, rec in folder.claim_records().items():
        if cid not in ids or not isinstance(rec, dict):
            continue
        progress = rec.get("progress") if isinstance(rec.get("progress"), dict) else {}
        age, watched = liveness.age(cid, rec)
        entry = {"id": cid, "pack": rec.get("pack"), "worker": rec.get("worker"), "host": rec.get("host"),
                 "step": progress.get("step"), "loss": progress.get("loss"),
                 "steps per second": progress.get("steps per second"), "heartbeat age": age, "watched": watched}
        (running if cid in live else stale).append(entry)
    failed = []
    index = folder_index(folder)
    for cid in sorted(cid for cid in ids if index.status.get(cid) == "failed"):
        rec = read_json(folder.result(cid))
        if result_problem(rec, cid) is None and rec.get("status") == "failed":
            failed.append({"id": cid, "error": rec.get("error"), "attempts": rec.get("attempts")})
    c = snap["counts"]
    return {"results dir": str(folder.root), "total": snap["total"], "counts": c, "running": running,
            "stale": stale, "failed": failed, "steps per run": steps, "rungs": snap["rungs"],
            "index rebuilt": snap["index rebuilt"],
            "eta seconds": eta_seconds(c, running, steps), "work left": bool(c["pending"] or c["running"])}


def rung_counts(folder: ResultsFolder, ids: Iterable[str], index: Any = None) -> list[dict[str, Any]]:
    """Successive halving (gatedrnn/halving.py): per rung, its step, how many configurations have
    reached it, and once it is decided how many continue and how many stopped there ([] when the
    folder's sweep does not halve)."""
    settings = read_json(folder.settings_file)
    eta = settings.get("halving") if isinstance(settings, dict) else None
    if not isinstance(eta, int) or eta < 2 or not isinstance(settings.get("steps"), int):
        return []
    rungs = settings.get("rungs", 3)
    ids = set(ids)
    out = []
    index = index if index is not None else folder_index(folder)
    finished, continued = set(index.status), index.continued & ids
    audited_all: set[str] = set()
    for k in range(1, rungs + 1):
        decision = folder.read_promotion(k) if k < rungs else None
        audited = set(decision.get("audited") or []) & ids if decision else set()
        audited_all |= audited
        row = {"rung": k, "steps": settings["steps"] // eta ** (rungs - k),
               "reached": len(index.rungs.get(k, set()) & ids), "decided": decision is not None,
               "continue": len(decision["promoted"]) if decision else None,
               "stopped": len(decision.get("stopped", [])) if decision else None,
               "audited": len(audited) if decision else None}
        if k == rungs:  # the runs stopped earlier that reached the end: pauses kept, samples, by hand
            row.update({"paused": len(folder.paused_ids(index.continued) & ids & finished), "audited so far": len(audited_all),
                        "audited finished": len(audited_all & finished), "continued": len(continued),
                        "continued finished": len(continued & finished)})
        out.append(row)
    return out


def rung_line(rungs: list[Mapping[str, Any]]) -> str | None:
    """One line for the rungs of successive halving: ``rung 1 (200 steps): 48 reached, 16
    continue, 7 audited``; then the stopped runs: paused (checkpoint kept), audited, continued."""
    if not rungs:
        return None
    parts = []
    for r in rungs:
        text = f"rung {r['rung']} ({r['steps']} steps): {r['reached']} reached"
        if r["decided"]:
            text += f", {r['continue']} continue" + (f", {r['audited']} audited" if r.get("audited") else "")
        parts.append(text)
    last = rungs[-1]
    line = "successive halving: " + "; ".join(parts)
    if last.get("audited so far") or last.get("paused") or last.get("continued"):
        line += (f"; stopped runs: {last['paused']} paused (checkpoint kept: --continue-stopped), "
                 f"{last['audited finished']} of {last['audited so far']} audited at the end, "
                 f"{last['continued finished']} of {last['continued']} continued by hand at the end")
    return line


def recorded_config_file(results_dir: str | os.PathLike) -> Path | None:
    """The sweep's configuration file as its latest launcher recorded it, or None."""
    return ResultsFolder(results_dir).read_config_file_record()


# ---------------------------------------------------------------------- lines
def duration(seconds: float | None, unknown: str = "?") -> str:
    if seconds is None or not math.isfinite(seconds):
        return unknown
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def by_pack(records: Iterable[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """Claim records (or rows made from them) grouped for display: a pack's members together,
    in the order first seen; a record without a ``pack`` alone."""
    out: list[list[Mapping[str, Any]]] = []
    packs: dict[str, list[Mapping[str, Any]]] = {}
    for rec in records:
        pid = rec.get("pack")
        if isinstance(pid, str) and pid in packs:
            packs[pid].append(rec)
            continue
        out.append([rec])
        if isinstance(pid, str):
            packs[pid] = out[-1]
    return out


def pack_label(members: list[Mapping[str, Any]], labels: Mapping[str, str]) -> str:
    """A display label: the configuration's, or ``pack of N (L.. d..)`` for a pack's members."""
    first = labels.get(members[0].get("id"), str(members[0].get("id", "?"))[:12])
    if len(members) == 1:
        return first
    return f"pack of {len(members)} ({first.split(' ', 1)[-1]})"


def labels_of(configs: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Each configuration's short label (``IFOSNPR L1 d32``), by id."""
    out = {}
    for c in configs:
        try:
            out[c["id"]] = RNNConfig.from_dict(c).short()
        except (TypeError, ValueError, KeyError):
            continue
    return out


def _best_loss(members: list[Mapping[str, Any]]) -> float | None:
    losses = [m.get("loss") for m in members]
    losses = [x for x in losses if isinstance(x, (int, float))]
    return min(losses) if losses else None


def _counts_line(c: Mapping[str, int], total: int) -> str:
    return (f"done {c['done']} · diverged {c['diverged']} · failed {c['failed']} · running {c['running']} · "
            f"pending {c['pending']} (of {total})")


def format_live(status: dict[str, Any], steps: int, labels: dict[str, str]) -> list[str]:
    """The launcher's live display of :func:`sweep_status`: the counts with the ETA, then a
    line per live worker (a pack as one line, with its best member's loss)."""
    running = status["running"]
    progress = [r.get("progress") or {} for r in running]
    lines = [f"{_counts_line(status['counts'], status['total'])} · ETA {duration(eta_seconds(status['counts'], progress, steps))}"]
    if rung_line(status.get("rungs") or []):
        lines.append("  " + rung_line(status["rungs"]))
    for members in by_pack(sorted(running, key=lambda r: r.get("worker", ""))):
        p = members[0].get("progress") or {}
        loss = _best_loss([m.get("progress") or {} for m in members])
        sps = p.get("steps per second")
        lines.append(f"  {members[0].get('worker', '?'):<24} {pack_label(members, labels):<22} "
                     f"step {p.get('step', 0):>7}/{steps:<7} {'best ' if len(members) > 1 else ''}loss "
                     f"{loss if loss is None else f'{loss:.4f}'}  "
                     f"{'?' if not sps else f'{sps:.0f}'} steps/s")
    return lines


def format_snapshot(r: dict[str, Any], config_file: str, labels: dict[str, str] | None = None) -> str:
    """``gatedrnn status``'s text for a :func:`snapshot`."""
    labels = labels or {}
    eta = duration(r["eta seconds"], "? (no running worker reports its speed)")
    lines = [f"{r['results dir']} ({config_file}): {_counts_line(r['counts'], r['total'])} · ETA {eta}"]
    if r.get("index rebuilt"):
        lines.append("(journal rebuilt: it was missing or older than the folder, so every result was read; the next "
                     "worker's claim writes it anew)")
    for title, rows in (("running", r["running"]), ("stale claims (their runs resume from their checkpoints)",
                                                     r["stale"])):
        if rows:
            lines.append(f"{title}:")
            for members in by_pack(rows):
                x = members[0]
                loss = _best_loss(members)
                sps = "?" if not x["steps per second"] else f"{x['steps per second']:.0f}"
                if x["heartbeat age"] is None:
                    age = "heartbeat ?"
                elif x.get("watched", True):
                    age = f"heartbeat {x['heartbeat age']:.0f} s ago (as this host saw it)"
                else:
                    age = (f"heartbeat unchanged for the {x['heartbeat age']:.0f} s this host watched (another host's "
                           "claim: --watch SECONDS to see it change)")
                lines.append(f"  {x['worker']} on {x['host']}: {pack_label(members, labels)} step {x['step']} "
                             f"{'best ' if len(members) > 1 else ''}loss {'?' if loss is None else f'{loss:.4f}'} "
                             f"{sps} steps/s, {age}")
    if rung_line(r.get("rungs") or []):
        lines.append(rung_line(r["rungs"]))
    if r["failed"]:
        lines.append("failed (gatedrnn train --retry-failed runs them again):")
        for x in r["failed"]:
            lines.append(f"  {labels.get(x['id'], x['id'][:12])} {x['id'][:12]}: {x['error']}")
    return "\n".join(lines)
