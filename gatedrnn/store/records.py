"""Every record of a results folder as data: its one builder and its one validator (STYLE 16):
a result, a failed result, a finished record, a claim; what is wrong with a claim, an attempts
record or a result; setting a damaged file aside. Where each lives is
:class:`gatedrnn.store.folder.ResultsFolder`'s. No torch."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

__all__ = ["STATUSES", "result_record", "failed_record", "finished_record", "Claim", "claim_record",
           "attempts_problem", "claim_problem", "result_problem", "set_aside"]

STATUSES = ("done", "diverged", "failed")
_ID = re.compile(r"^[0-9a-f]{64}$")


# ---------------------------------------------------------------------- the result record
_CONFIG_FIRST = ("start time", "end time", "loss", "min loss", "training steps", "batch size", "history size",
                 "dataset")


def result_record(config: Mapping[str, Any], status: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A result: the configuration's keys and ``id``, the original study's keys, then ours.

    ``config`` is the configuration's JSON form with its id; ``fields`` everything the run measured.
    """
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    if not isinstance(config.get("id"), str) or not _ID.match(config["id"]):
        raise ValueError(f"a result record needs the configuration's id, got {config.get('id')!r}")
    record: dict[str, Any] = dict(config)
    for key in _CONFIG_FIRST:
        if key in fields:
            record[key] = fields[key]
    record["status"] = status
    for key, value in fields.items():
        if key not in record:
            record[key] = value
    return record


def failed_record(config: Mapping[str, Any], errors: list[dict[str, Any]]) -> dict[str, Any]:
    """The result of a configuration that raised in every attempt: the last error's line, its
    traceback, and every attempt's error."""
    error = errors[-1]["error"] if errors else ""
    last_line = error.strip().splitlines()[-1] if error.strip() else "unknown error"
    return result_record(config, "failed", {
        "loss": [], "min loss": None, "end time": time.time(), "error": last_line, "traceback": error,
        "attempts": len(errors), "errors": list(errors)})


def finished_record(result: Mapping[str, Any], *, attempts: int, worker: str, **extra: Any) -> dict[str, Any]:
    """A run's result as the queue writes it: with the attempt that made it and its worker."""
    record = dict(result)
    record["attempts"] = attempts
    record["worker"] = worker
    record.update(extra)
    return record


@dataclass
class Claim:
    """A claim as its claimant holds it: the record's id, configuration, token and attempt, the
    worker, the stale claim it replaced (if any) and the record as written."""

    id: str
    config: dict[str, Any]
    token: str
    attempt: int  # 1 for the first try, 2 after one failure, ...
    worker: str
    took_over: dict[str, Any] | None = None  # the stale claim this one replaced
    record: dict[str, Any] = field(default_factory=dict)


def claim_record(config_id: str, worker: str, host: str, pid: int, pid_start: str | None, token: str, now: float,
                 lease: float, attempt: int, **extra: Any) -> dict[str, Any]:
    """A claim: who trains ``config_id`` (worker, host, pid and its start time), the token that
    proves it, when it was claimed, its heartbeat (the claimant's clock: for display, and for
    observers on its own host) and ``beat`` (a counter every heartbeat increments: what observers
    on other hosts watch change), its lease, the attempt, progress so far."""
    return {"id": config_id, "worker": worker, "host": host, "pid": pid, "pid start": pid_start, "token": token,
            "claimed": now, "heartbeat": now, "beat": 0, "lease": lease, "attempt": attempt, "progress": {},
            **extra}


# ---------------------------------------------------------------------- validating records
def attempts_problem(rec: Any) -> str | None:
    """What is wrong with an attempts record, or None."""
    ok = (isinstance(rec, dict) and isinstance(rec.get("failures"), int) and not isinstance(rec["failures"], bool)
          and rec["failures"] >= 0 and isinstance(rec.get("errors"), list)
          and (rec.get("retry after") is None or isinstance(rec["retry after"], (int, float)))
          and (rec.get("retry in") is None or _is_number(rec["retry in"])))
    return None if ok else "not an attempts record"


def _is_number(value: Any, finite: bool = True) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not finite or value == value and value not in (float("inf"), float("-inf"))


def claim_problem(rec: Any, config_id: str) -> str | None:
    """What is wrong with a claim record read from ``claims/<config_id>.json``, or None.
    Every claim the queue writes has these fields with these types; anything else was damaged
    or written by something else."""
    if not isinstance(rec, dict):
        return "not a JSON object" if rec is not None else "not readable JSON"
    if rec.get("id") != config_id:
        return f"its id {rec.get('id')!r} is not the file's"
    for key in ("heartbeat", "lease"):
        if not _is_number(rec.get(key)):
            return f"{key!r} is not a finite number ({rec.get(key)!r})"
    if rec["lease"] <= 0:
        return f"'lease' is not positive ({rec['lease']!r})"
    pid = rec.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return f"'pid' is not a process id ({pid!r})"
    for key in ("host", "token", "worker"):
        if not isinstance(rec.get(key), str):
            return f"{key!r} is not a string ({rec.get(key)!r})"
    return None


# numeric fields of a result, where present: a number (or null where a run may lack it)
_RESULT_NUMBERS = ("min loss", "val loss", "val bpb", "log every", "training steps", "start time", "end time",
                   "steps per second", "batch size", "history size", "parameters", "seed", "min val loss",
                   "min val step", "train split loss", "generalisation gap")


def result_problem(rec: Any, config_id: str | None = None) -> str | None:
    """What is wrong with a result record, or None. ``config_id``: the id its file name says
    (our results); None for a file of another name (the original study's)."""
    if not isinstance(rec, dict):
        return "not a JSON object" if rec is not None else "not readable JSON"
    if config_id is not None:
        if rec.get("id") != config_id:
            return f"its id {rec.get('id')!r} is not the file's"
        if rec.get("status") not in STATUSES:
            return f"'status' is {rec.get('status')!r}, not one of {', '.join(STATUSES)}"
    elif "status" in rec and rec["status"] not in STATUSES:
        return f"'status' is {rec.get('status')!r}, not one of {', '.join(STATUSES)}"
    if "loss" not in rec:
        return "no 'loss'"
    if not isinstance(rec["loss"], list) or not all(v is None or _is_number(v, finite=False) for v in rec["loss"]):
        return "'loss' is not a list of numbers"
    for key in _RESULT_NUMBERS:
        if key in rec and rec[key] is not None and not _is_number(rec[key], finite=False):
            return f"{key!r} is not a number ({rec[key]!r})"
    return None


def set_aside(path: Path) -> Path:
    """Rename a damaged file to ``<name>.corrupt`` (``.corrupt-2``, ... if taken) in the same
    folder, so that nothing reads it again and nothing is lost; returns the new path."""
    target = path.with_name(path.name + ".corrupt")
    n = 2
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{n}")
        n += 1
    path.replace(target)
    return target
