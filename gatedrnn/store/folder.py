"""The results folder: every path under it, and the result record (DESIGN.md, "The results folder").

```
<results>/<id>.json                   the result of a finished configuration (written once, atomically)
<results>/<id>.failed-<n>.json        an earlier failed result, kept as history by --retry-failed
<results>/<id>.stopped-<n>.json       a result stopped at a rung of successive halving, kept as history
                                    when --continue-stopped took the run to the end
<results>/checkpoints/<id>.pt         the latest checkpoint of an unfinished run
<results>/checkpoints/pack-<pack>.pt  the latest checkpoint of a pack: one solo checkpoint per member
<results>/weights/<id>.safetensors    the final weights of a finished run (.pt before)
<results>/rungs/<k>/<id>.json        successive halving: the record of <id> at rung k (a result's form)
<results>/.queue/ngram-<sha256>.json  cached n-gram entropies of a corpus (analysis)
<results>/.queue/journal/             what changed in the folder, for claims that cost the same at any
                                    size (gatedrnn.store.journal; derived, rebuilt from the folder)
<results>/.queue/lock                 the queue lock (--lock file: flock); lock.soft: --lock soft's marker,
                                    there while held; lock.holder: who took it last
<results>/.queue/claims/<id>.json     who trains <id>: worker, host, pid, token, heartbeat, progress
<results>/.queue/attempts/<id>.json   failed attempts so far, with their tracebacks
<results>/.queue/packs/<pack>.json    a pack: its members, when it was formed, the pack it resumed
<results>/.queue/logs/                the launcher's worker logs
<results>/.queue/slurm/               submitit's job folders
<results>/.queue/promotions/<k>.json  successive halving: who continues past rung k, and who stops there
<results>/.queue/settings.json        the sweep's settings, as first recorded
<results>/.queue/configs.json         the path of the sweep's configuration file, as first recorded
```

This module is the only one that spells these paths, and the only one that builds a result
record: everyone else asks a :class:`ResultsFolder`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from ..spec.atomic import atomic_write_json, fsync_dir, remove
from .records import (STATUSES, Claim, _is_number, attempts_problem, claim_problem, claim_record, failed_record,
                      finished_record, result_problem, result_record, set_aside)
from ..spec.config import LEGACY_SETTINGS
from typing import Any, Iterator, Mapping

__all__ = ["ResultsFolder", "FolderError", "read_json", "is_config_id", "result_record", "failed_record",
           "finished_record", "claim_record", "pack_id_of", "claim_problem", "result_problem", "attempts_problem",
           "set_aside", "STATUSES", "RECORDED_SETTINGS", "pack_order", "Claim"]

# the settings that shape what a run computes: one value each per results folder
RECORDED_SETTINGS = ("steps", "batch_size", "history", "lr", "log_every", "eval_every", "seed", "val_streams",
                     "split", "input_init", "halving", "rungs", "halving_rule", "audit", "dataset sha256")
_ID = re.compile(r"^[0-9a-f]{64}$")
_HISTORY = re.compile(r"^[0-9a-f]{64}\.(failed|stopped)-\d+\.json$")
_STOPPED = re.compile(r"^([0-9a-f]{64})\.stopped-\d+\.json$")


class FolderError(RuntimeError):
    """The results folder cannot be used (missing, not a folder, not writable)."""


def pack_order(rec: Mapping[str, Any]) -> tuple:
    """A pack record's place among packs, newest last: its ``seq``, then (records made before it,
    all on one host then) its creation time."""
    seq = rec.get("seq")
    return (seq if isinstance(seq, int) and not isinstance(seq, bool) else 0, rec.get("created") or 0)


def pack_id_of(ids: list[str]) -> str:
    """A pack's id: the sha256 of its members' ids, sorted, one per line."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def _listing(path: Path) -> list[str]:
    """The names in a folder ([] where it is missing or unreadable)."""
    try:
        return os.listdir(path)
    except OSError:
        return []


def _move(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` (its folder made), durably; nothing when ``src`` is gone."""
    if not src.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dst)
    except FileNotFoundError:  # moved meanwhile by another (under the lock: never)
        return
    fsync_dir(dst.parent)
    if src.parent != dst.parent:
        fsync_dir(src.parent)


def is_config_id(text: str) -> bool:
    return bool(_ID.match(text))


def read_json(path: str | os.PathLike) -> Any | None:
    """The JSON in ``path``, or None when it is missing, unreadable or not JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class ResultsFolder:
    """The paths of one results folder. Creating the object touches nothing on disk."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.checkpoints = self.root / "checkpoints"
        self.kept_checkpoints = self.checkpoints / "kept"  # the states of runs paused at a rung
        self.weights_dir = self.root / "weights"
        self.queue = self.root / ".queue"
        self.claims = self.queue / "claims"
        self.attempts = self.queue / "attempts"
        self.packs = self.queue / "packs"
        self.kept_packs = self.packs / "kept"  # records of packs kept only for runs paused at a rung
        self.logs = self.queue / "logs"
        self.slurm = self.queue / "slurm"
        self.lock = self.queue / "lock"  # --lock file: flock on it (the empty file stays)
        self.soft_lock = self.queue / "lock.soft"  # --lock soft: the marker, there while held
        self.lock_holder = self.queue / "lock.holder"
        self.settings_file = self.queue / "settings.json"
        self.configs_file = self.queue / "configs.json"
        self.stage_file = self.queue / "stage.json"
        self.rungs_dir = self.root / "rungs"
        self.promotions = self.queue / "promotions"
        self.journal_dir = self.queue / "journal"  # its files: gatedrnn.store.journal
        self._journal = None
        self._stopped_at: dict[str, tuple[tuple, set[str]]] = {}  # promotion file -> (its stat, who paused there)

    def __repr__(self) -> str:
        return f"ResultsFolder({str(self.root)!r})"

    # ------------------------------------------------------------------ one configuration
    def result(self, config_id: str) -> Path:
        return self.root / f"{config_id}.json"

    def old_stopped(self, config_id: str) -> Path:
        """Where a stopped result continued by hand is kept (``<id>.stopped-<n>.json``, the next n)."""
        return self._next_history(config_id, "stopped")

    def _next_history(self, config_id: str, kind: str) -> Path:
        n = 1
        while (self.root / f"{config_id}.{kind}-{n}.json").exists():
            n += 1
        return self.root / f"{config_id}.{kind}-{n}.json"

    def stopped_history_ids(self) -> set[str]:
        """The configurations whose stopped result was continued by hand (kept aside)."""
        return {m.group(1) for name in _listing(self.root) if (m := _STOPPED.match(name))}

    def paused_ids(self, continued: set[str] | None = None) -> set[str]:
        """The runs stopped at a rung of successive halving whose state is kept so that they can
        continue (not audited, not continued by hand): from the rung decisions (each read again
        only when its file changed, by its stat). ``continued``: the ones continued by hand, as
        the journal knows them (else the folder is listed for them)."""
        out: set[str] = set()
        for name in _listing(self.promotions):
            if not (name[:-5].isdigit() and name.endswith(".json")):
                continue
            try:
                st = os.stat(self.promotions / name)
            except OSError:
                continue
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
            cached = self._stopped_at.get(name)
            if cached is None or cached[0] != key:
                rec = self.read_promotion(int(name[:-5]))
                stopped = (set(rec["stopped"]) - set(rec.get("audited") or [])
                           if rec is not None and isinstance(rec.get("stopped"), list) else set())
                cached = self._stopped_at[name] = (key, stopped)
            out |= cached[1]
        if not out:
            return out
        return out - (self.stopped_history_ids() if continued is None else continued)

    def old_failure(self, config_id: str) -> Path:
        """A free name for an earlier failed result of ``config_id``, kept as history."""
        return self._next_history(config_id, "failed")

    def checkpoint(self, config_id: str) -> Path:
        return self.checkpoints / f"{config_id}.pt"

    def pack_checkpoint(self, pack_id: str, kept: bool = False) -> Path:
        return (self.kept_checkpoints if kept else self.checkpoints) / f"pack-{pack_id}.pt"

    def kept_checkpoint(self, config_id: str) -> Path:
        """Where the checkpoint of a run paused at a rung is kept: out of ``checkpoints/``, whose
        listing a finished run's clean-up reads (its temp files), so that it stays as short as
        the runs in flight (issue 41). Folders paused before keep it at :meth:`checkpoint`."""
        return self.kept_checkpoints / f"{config_id}.pt"

    def pack_record(self, pack_id: str) -> Path:
        return self.packs / f"{pack_id}.json"

    def weights(self, config_id: str) -> Path:
        return self.weights_dir / f"{config_id}.safetensors"

    def existing_weights(self, config_id: str) -> Path | None:
        """The weights file of ``config_id``: safetensors, or the ``.pt`` of earlier versions."""
        for path in (self.weights(config_id), self.weights_dir / f"{config_id}.pt"):
            if path.exists():
                return path
        return None

    def claim(self, config_id: str) -> Path:
        return self.claims / f"{config_id}.json"

    def attempt(self, config_id: str) -> Path:
        return self.attempts / f"{config_id}.json"

    def log(self, stamp: str, worker: str) -> Path:
        return self.logs / f"{stamp}-{worker}.log"

    def rung_dir(self, rung: int) -> Path:
        return self.rungs_dir / str(rung)

    def rung_result(self, rung: int, config_id: str) -> Path:
        return self.rung_dir(rung) / f"{config_id}.json"

    def promotion(self, rung: int) -> Path:
        return self.promotions / f"{rung}.json"

    def ngram_cache(self, sha256: str) -> Path:
        # in .queue/, not beside the results: a write there would make the journal look stale
        return self.queue / f"ngram-{sha256}.json"

    # ------------------------------------------------------------------ listing
    def finished_ids(self) -> set[str]:
        """Ids with a result file (whatever its content)."""
        return {n[:-5] for n in _listing(self.root) if n.endswith(".json") and _ID.match(n[:-5])}

    def result_files(self) -> Iterator[Path]:
        """Every visible ``*.json`` directly in the folder (ours and the original study's), sorted;
        hidden files (caches, temp files of atomic writes) are not results."""
        for path in sorted(self.root.glob("*.json")):
            if not path.name.startswith(".") and not _HISTORY.match(path.name):
                yield path

    def rung_numbers(self) -> list[int]:
        """The rungs with a folder of records (successive halving)."""
        return sorted(int(n) for n in _listing(self.rungs_dir) if n.isdigit())

    def rung_ids(self, rung: int) -> set[str]:
        """Ids with a record at ``rung`` (successive halving)."""
        return {n[:-5] for n in _listing(self.rung_dir(rung)) if n.endswith(".json") and _ID.match(n[:-5])}

    def claim_records(self) -> dict[str, Any]:
        """The claim files' contents by id (None for a file that is not readable JSON)."""
        out: dict[str, Any] = {}
        try:
            names = os.listdir(self.claims)
        except OSError:
            return out
        for name in names:
            if name.endswith(".json") and not name.startswith("."):
                out[name[:-5]] = read_json(self.claims / name)
        return out

    def pack_records(self, kept: bool = False) -> dict[str, dict[str, Any]]:
        """The pack records of a sound shape (id, member ids, creation time), by pack id; others
        are ignored (a pack whose record is damaged is simply not resumed as a pack). ``kept``:
        those set aside (:meth:`keep_pack`) instead of the live ones."""
        out: dict[str, dict[str, Any]] = {}
        where = self.kept_packs if kept else self.packs
        try:
            names = os.listdir(where)
        except OSError:
            return out
        for name in names:
            if not (name.endswith(".json") and _ID.match(name[:-5])):
                continue
            rec = read_json(where / name)
            if (isinstance(rec, dict) and rec.get("id") == name[:-5] and isinstance(rec.get("members"), list)
                    and all(isinstance(m, str) and _ID.match(m) for m in rec["members"])
                    and _is_number(rec.get("created"))):
                out[name[:-5]] = rec
        return out

    def keep_pack(self, pack_id: str, seq: int) -> None:
        """Set aside the record of a pack whose members all have results but whose checkpoint
        holds the state of runs paused at a rung: a claim reads only the live records, so that it
        costs the same however many packs successive halving paused (issue 41). ``seq``: the
        record's, remembered so that a new pack is still numbered after every one."""
        self.kept_packs.mkdir(parents=True, exist_ok=True)
        if seq > self.kept_max_seq():
            atomic_write_json(self.kept_packs / "max-seq.json", {"seq": seq})
        _move(self.pack_checkpoint(pack_id), self.pack_checkpoint(pack_id, kept=True))
        _move(self.pack_record(pack_id), self.kept_packs / f"{pack_id}.json")

    def kept_max_seq(self) -> int:
        rec = read_json(self.kept_packs / "max-seq.json")
        seq = rec.get("seq") if isinstance(rec, dict) else None
        return seq if isinstance(seq, int) and not isinstance(seq, bool) else 0

    def restore_kept_packs(self, ids: set[str]) -> int:
        """Put back among the live records the kept packs holding a state of any of ``ids`` (runs
        continued after a pause: ``--continue-stopped``). Returns how many."""
        n = 0
        for pid, rec in self.pack_records(kept=True).items():
            if ids.intersection(rec["members"]):
                _move(self.pack_checkpoint(pid, kept=True), self.pack_checkpoint(pid))
                _move(self.kept_packs / f"{pid}.json", self.pack_record(pid))
                n += 1
        return n

    def newest_pack_checkpoint(self, config_id: str, kept: bool = False) -> Path | None:
        """The checkpoint of the newest pack holding a saved state of ``config_id``, or None;
        ``kept``: the kept packs' too (a paused run's state, for ``gatedrnn inspect``)."""
        best = None
        records = [(pid, rec, False) for pid, rec in self.pack_records().items()]
        records += [(pid, rec, True) for pid, rec in self.pack_records(kept=True).items()] if kept else []
        for pid, rec, aside in records:
            path = self.pack_checkpoint(pid, kept=aside)
            if config_id in rec["members"] and path.exists() and (best is None or pack_order(rec) > best[0]):
                best = (pack_order(rec), path)
        return None if best is None else best[1]

    # ------------------------------------------------------------------ records
    # Every record of the folder is read and written here; the queue decides when (under its
    # lock), the snapshot reads without it. Writes are atomic.
    @property
    def journal(self) -> Any:
        """What changed in this folder (:mod:`gatedrnn.store.journal`): every write of a result
        or a rung record, and every move of a result, adds its event; the queue writes them."""
        if self._journal is None:
            from .journal import Journal

            self._journal = Journal(self)
        return self._journal

    def result_status(self, config_id: str) -> str | None:
        """A result's status, or None where it is missing or damaged."""
        rec = read_json(self.result(config_id))
        return None if result_problem(rec, config_id) else rec["status"]

    def write_result(self, record: Mapping[str, Any]) -> None:
        atomic_write_json(self.result(record["id"]), record)
        self.journal.add("r", record["id"], record.get("status"))

    def move_result(self, config_id: str, to: Path, why: str) -> None:
        """Move a result aside (history, or a damaged one): it is no longer finished."""
        self.result(config_id).replace(to)
        self.journal.add("g", config_id, why)

    def write_rung_result(self, rung: int, record: Mapping[str, Any]) -> None:
        self.rung_dir(rung).mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.rung_result(rung, record["id"]), record)
        self.journal.add("k", record["id"], rung)

    def read_rung_result(self, rung: int, config_id: str) -> Any | None:
        return read_json(self.rung_result(rung, config_id))

    def read_promotion(self, rung: int) -> Any | None:
        """Who continues past ``rung`` (``promoted``) and who stops there (``stopped``), or None
        while it is undecided."""
        rec = read_json(self.promotion(rung))
        return rec if isinstance(rec, dict) and isinstance(rec.get("promoted"), list) else None

    def write_promotion(self, rung: int, record: Mapping[str, Any]) -> None:
        self.promotions.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.promotion(rung), dict(record))

    def read_claim(self, config_id: str) -> Any | None:
        return read_json(self.claim(config_id))

    def write_claim(self, record: Mapping[str, Any]) -> None:
        atomic_write_json(self.claim(record["id"]), record)

    def drop_claim(self, config_id: str) -> None:
        self.claim(config_id).unlink(missing_ok=True)

    def read_attempts(self, config_id: str) -> Any | None:
        """The failed attempts of ``config_id`` (None when there are none, or unreadable)."""
        return read_json(self.attempt(config_id))

    def write_attempts(self, config_id: str, record: Mapping[str, Any]) -> None:
        atomic_write_json(self.attempt(config_id), record)

    def drop_run(self, config_id: str, keep_checkpoint: bool = False) -> None:
        """A configuration's claim, checkpoint and attempts: what a finished one no longer needs,
        with the temp files that a worker killed while writing them left. ``keep_checkpoint``: a
        run paused at a rung of successive halving keeps its checkpoint (set aside, at
        :meth:`kept_checkpoint`), to continue later."""
        for path in (self.claim(config_id), None if keep_checkpoint else self.checkpoint(config_id),
                     self.attempt(config_id)):
            if path is not None:
                remove(path)
        if keep_checkpoint:
            _move(self.checkpoint(config_id), self.kept_checkpoint(config_id))

    def restore_checkpoint(self, config_id: str) -> None:
        """A paused run's kept checkpoint back where its worker resumes from (it continues)."""
        if not self.checkpoint(config_id).exists():
            _move(self.kept_checkpoint(config_id), self.checkpoint(config_id))

    def write_pack_record(self, pack_id: str, members: list[str], created: float, resumed_from: str | None,
                          worker: str, seq: int = 0) -> None:
        """``seq``: the pack's place in the order packs were formed (one more than every pack
        record there, under the queue lock): what says which pack is newest. ``created`` (the
        forming host's clock) is for display; records made before ``seq`` read as 0."""
        atomic_write_json(self.pack_record(pack_id), {"id": pack_id, "members": sorted(members), "created": created,
                                                      "seq": seq, "resumed from": resumed_from, "worker": worker})

    def drop_pack(self, pack_id: str) -> None:
        """A pack's checkpoint and record, with the temp files that a killed write of them left."""
        remove(self.pack_checkpoint(pack_id))
        remove(self.pack_record(pack_id))
        (self.kept_packs / f"{pack_id}.json").unlink(missing_ok=True)
        self.pack_checkpoint(pack_id, kept=True).unlink(missing_ok=True)

    def read_lock_holder(self) -> Any | None:
        return read_json(self.lock_holder)

    def write_lock_holder(self, holder: Mapping[str, Any]) -> None:
        """Who took the lock last (a plain write: a hint for a waiter's message, not a record)."""
        self.lock_holder.write_text(json.dumps(dict(holder)))

    def read_settings(self) -> Any | None:
        """The sweep's settings as first recorded (``RECORDED_SETTINGS``), or None. A record
        made before the split rule existed has ``split`` ``tail`` (its runs have no test split;
        its later runs keep that rule, so that one folder's runs are never mixed)."""
        record = read_json(self.settings_file)
        if isinstance(record, dict) and "steps" in record:
            record = {**LEGACY_SETTINGS, **record}
        return record

    def write_settings(self, settings: Mapping[str, Any]) -> None:
        """The recorded settings, and the corpus file they were given (a rerun without --data uses it)."""
        atomic_write_json(self.settings_file, {**{k: settings.get(k) for k in RECORDED_SETTINGS},
                                               "data": settings.get("data")})

    def read_config_file_record(self) -> Path | None:
        """The sweep's configuration file as its latest launcher recorded it, or None."""
        rec = read_json(self.configs_file)
        path = rec.get("config file") if isinstance(rec, dict) else None
        return Path(path) if isinstance(path, str) else None

    def write_config_file_record(self, path: str | os.PathLike) -> bool:
        """Record the sweep's configuration file (absolute); False when it was recorded already."""
        rec = {"config file": str(Path(path).resolve())}
        if read_json(self.configs_file) == rec:
            return False
        atomic_write_json(self.configs_file, rec)
        return True

    def read_stage(self) -> dict[str, Any] | None:
        """How this folder's configurations were chosen (init_experiments.py --replicate-from
        records it: the folder selected from, the metric, the seeds that selected and the seeds
        given here), or None for a grid."""
        rec = read_json(self.stage_file)
        return rec if isinstance(rec, dict) else None

    def write_stage(self, record: Mapping[str, Any]) -> None:
        self.queue.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.stage_file, dict(record))

    # ------------------------------------------------------------------ set-up
    def check_exists(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise FolderError(f"{self.root}: the results folder is not a directory")
        if not self.root.exists():
            raise FolderError(f"{self.root}: no such results folder (create it with init_experiments.py)")

    def prepare(self) -> None:
        """Create the queue's folders and check that the folder is writable; FolderError if not."""
        self.check_exists()
        try:
            for d in (self.queue, self.claims, self.attempts, self.packs, self.checkpoints, self.logs,
                      self.weights_dir):
                d.mkdir(exist_ok=True)
            probe = self.queue / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise FolderError(f"{self.root}: the results folder is not writable ({e.strerror or e})") from None
