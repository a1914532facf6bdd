"""The results folder's journal: what changed, so that a claim costs the same at 400 and at
100,000 configurations (DESIGN.md, "The queue's scale"; issue 41). No torch.

The per-configuration files stay the truth (``<id>.json``, ``rungs/<k>/<id>.json``, the history
files); the journal is derived from them and rebuilt from them whenever it is missing, damaged,
or older than the folder. It lives in ``.queue/journal/``:

``head.json``         ``{"format", "generation", "segment", "seq", "root mtime"}``: the newest
                      event's number, the segment it is in, and the results folder's modification
                      time (ns) when it was written
``<gen>-<k>.json``    segment k of generation gen: ``{"events": [[seq, kind, id, value], ...]}``,
                      at most :data:`SEGMENT` events; the last one grows

An event says that a file of the folder appeared or went: ``["r", id, status]`` a result,
``["g", id, why]`` a result moved aside (``failed``/``stopped`` history, ``corrupt``),
``["k", id, k]`` a record at rung k. Every write is atomic (a segment, then the head, each
replaced whole: an append from several hosts is not atomic on NFS, a replaced file is), and only
under the queue's lock. A reader keeps what it has read and reads, per look, the head and the
segments after its cursor (usually one): bounded, whatever the folder's size. A segment written
past the head (a writer killed between the two) is ignored to the head's ``seq``.

The journal is current when the folder's modification time is the one the head recorded: every
result lands in the folder by a rename, so a result written or deleted by anything that did not
journal it (a hand, a version before the journal, a writer killed between the rename and the
journal) changes it, and the next look rebuilds the journal from the folder (a new generation).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..spec.atomic import atomic_write_json

__all__ = ["Journal", "Index", "FORMAT", "SEGMENT", "FormatError"]

FORMAT = 2  # the results folder's format: 1 before the journal, 2 with it
SEGMENT = 512  # events per segment
_SEGMENT_NAME = re.compile(r"^(\d+)-(\d+)\.json$")


class FormatError(ValueError):
    """A results folder written by a newer gatedrnn, in a format this one does not read."""


@dataclass
class Index:
    """What the journal says of the folder: each finished configuration's status, the rung each
    reached, the ones whose stopped result was continued by hand; and where its reader is."""

    status: dict[str, str] = field(default_factory=dict)
    rung: dict[str, int] = field(default_factory=dict)  # the highest rung with a record
    rungs: dict[int, set[str]] = field(default_factory=dict)  # the ids with a record at each rung
    continued: set[str] = field(default_factory=set)
    generation: int = -1
    seq: int = 0
    segment: int = 0
    rebuilt: bool = False  # the last look rebuilt it from the folder
    changed: set[str] = field(default_factory=set)  # ids whose events the last look applied

    def apply(self, kind: str, cid: str, value: Any) -> None:
        self.changed.add(cid)
        if kind == "r":
            self.status[cid] = value
        elif kind == "g":
            self.status.pop(cid, None)
            if value == "stopped":
                self.continued.add(cid)
        elif kind == "k":
            self.rung[cid] = max(self.rung.get(cid, 0), int(value))
            self.rungs.setdefault(int(value), set()).add(cid)


class Journal:
    """The journal of one results folder (:class:`gatedrnn.store.folder.ResultsFolder`)."""

    def __init__(self, folder: Any) -> None:
        self.folder = folder
        self.dir = folder.journal_dir
        self.head_path = self.dir / "head.json"
        self.index = Index()
        self._pending: list[list[Any]] = []
        self._stale = False
        self._segment_events: list[list[Any]] = []  # the head segment as last read
        self._disk_generation = -1  # the generation the head on disk last named
        self._local = False  # the index was read from the folder itself, not from the journal

    # ------------------------------------------------------------------ reading
    def _root_mtime(self) -> int | None:
        try:
            return os.stat(self.folder.root).st_mtime_ns
        except OSError:
            return None

    def _read(self, path: Path) -> Any:
        try:
            with open(path, "rb") as f:
                return json.loads(f.read())
        except (OSError, ValueError):
            return None

    def _head(self) -> dict[str, Any] | None:
        head = self._read(self.head_path)
        ok = (isinstance(head, dict) and all(isinstance(head.get(k), int) and not isinstance(head.get(k), bool)
                                             for k in ("format", "generation", "segment", "seq")))
        if ok and head["format"] > FORMAT:
            raise FormatError(f"{self.folder.root}: this results folder was written by a newer gatedrnn (format "
                              f"{head['format']}; this one reads format {FORMAT}): upgrade gatedrnn to use it")
        return head if ok and head["format"] == FORMAT else None

    def look(self) -> Index:
        """Bring the index up to date: the events after this reader's cursor, or (a new
        generation, a damaged head, a folder changed behind the journal's back) the folder read
        afresh. Marks the journal stale for :meth:`flush` to rebuild it where the folder moved."""
        self.index.changed = set()
        self.index.rebuilt = False
        self._pending = []  # events added outside the lock are never written: the folder's mtime tells
        head = self._head()
        self._disk_generation = head["generation"] if head is not None else self._disk_generation
        mtime = self._root_mtime()
        self._stale = head is None or head.get("root mtime") != mtime
        if self._stale:
            self._rebuild_index()
            return self.index
        if head["generation"] != self.index.generation or head["seq"] < self.index.seq or self._local:
            self.index = Index(generation=head["generation"])
            self.index.changed = set()
            start = 0
        else:
            start = self.index.segment
        for k in range(start, head["segment"] + 1):
            rec = self._read(self.dir / f"{head['generation']}-{k}.json")
            events = rec.get("events") if isinstance(rec, dict) else None
            if not isinstance(events, list):
                self._stale = True  # a segment lost or damaged: rebuild
                self._rebuild_index()
                return self.index
            for event in events:
                if self.index.seq < event[0] <= head["seq"]:
                    self.index.apply(event[1], event[2], event[3])
                    self.index.seq = event[0]
            if k == head["segment"]:
                self._segment_events = [e for e in events if e[0] <= head["seq"]]
        self.index.segment = head["segment"]
        self._local = False
        return self.index

    def _rebuild_index(self) -> None:
        """The index from the folder itself (results, rung records, continued history)."""
        index = Index(generation=max(self.index.generation, self._disk_generation) + 1, rebuilt=True)
        for cid in self.folder.finished_ids():
            status = self.folder.result_status(cid)
            if status is not None:
                index.status[cid] = status
        for k in self.folder.rung_numbers():
            for cid in self.folder.rung_ids(k):
                index.apply("k", cid, k)
        index.continued = self.folder.stopped_history_ids()
        index.changed = set(index.status) | set(index.rung) | index.continued
        self.index = index
        self._local = True  # read from the folder, not from a generation on disk (until flush writes it)

    # ------------------------------------------------------------------ writing (under the queue lock)
    def add(self, kind: str, cid: str, value: Any) -> None:
        """An event of the folder's change just made; written by :meth:`flush`."""
        self._pending.append([kind, cid, value])
        self.index.apply(kind, cid, value)

    def flush(self) -> None:
        """Write the events added since the last look (or, where the journal was stale, the
        whole journal anew, as a new generation, from the folder as it is now)."""
        empty = not (self.index.status or self.index.rungs or self.index.continued)
        if not self._pending and (not self._stale or empty):
            return  # nothing changed; or a folder with nothing to journal yet (a failed start writes nothing)
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._stale:  # the look read the folder afresh; the changes since are in the index too
            self._write_generation()
            self._local = False
        else:
            self._append(self._pending)
        self._pending = []
        self._stale = False

    def _append(self, events: list[list[Any]]) -> None:
        idx = self.index
        segment, current = idx.segment, list(self._segment_events)
        for kind, cid, value in events:
            if len(current) >= SEGMENT:
                atomic_write_json(self.dir / f"{idx.generation}-{segment}.json", {"events": current})
                segment, current = segment + 1, []
            idx.seq += 1
            current.append([idx.seq, kind, cid, value])
        atomic_write_json(self.dir / f"{idx.generation}-{segment}.json", {"events": current})
        idx.segment, self._segment_events = segment, current
        self._write_head()

    def _write_generation(self) -> None:
        """The index as the events of a new generation (older generations' segments removed)."""
        idx = self.index
        events = [["r", cid, status] for cid, status in sorted(idx.status.items())]
        events += [["k", cid, k] for k in sorted(idx.rungs) for cid in sorted(idx.rungs[k])]
        events += [["g", cid, "stopped"] for cid in sorted(idx.continued)]
        idx.seq, idx.segment, self._segment_events = 0, 0, []
        for name in os.listdir(self.dir):
            m = _SEGMENT_NAME.match(name)
            if m and int(m.group(1)) != idx.generation:
                try:
                    os.unlink(self.dir / name)
                except OSError:
                    pass
        chunks = [events[i:i + SEGMENT] for i in range(0, len(events), SEGMENT)] or [[]]
        for k, chunk in enumerate(chunks):
            numbered = [[idx.seq + i + 1, *e] for i, e in enumerate(chunk)]
            idx.seq += len(chunk)
            atomic_write_json(self.dir / f"{idx.generation}-{k}.json", {"events": numbered})
            idx.segment, self._segment_events = k, numbered
        self._write_head()

    def _write_head(self) -> None:
        idx = self.index
        atomic_write_json(self.head_path, {"format": FORMAT, "generation": idx.generation, "segment": idx.segment,
                                           "seq": idx.seq, "root mtime": self._root_mtime()})
