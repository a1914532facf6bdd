"""Claiming packs (DESIGN.md, "Packs"): several configurations of one group claimed together, all
or none, under one hold of the queue lock; an interrupted pack re-formed from its record and
resumed from its checkpoint; the records of packs of no further use dropped.

:class:`PackClaims` is a part of :class:`gatedrnn.store.queue.Queue` (a mixin: it uses the
queue's lock, records and claim rule), kept apart because packs are a responsibility of their own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .folder import Claim, pack_id_of, pack_order

__all__ = ["PackClaims", "PackClaim"]


@dataclass
class PackClaim:
    """The claims of one pack's members, taken together; ``resume_from``: the pack whose
    checkpoint holds the members' saved state (None for a new pack)."""

    id: str
    claims: list["Claim"]
    resume_from: str | None


class PackClaims:
    """Pack claiming for :class:`gatedrnn.store.queue.Queue` (which supplies ``locked``,
    ``folder``, ``finished_ids``, ``is_live``, ``_free`` and ``_write_claim``)."""

    def claim_pack(self, configs: Iterable[Mapping[str, Any]], worker: str, limit: int,
                   group: Callable[[Mapping[str, Any]], Any],
                   rungs: Callable[[list[str]], Mapping[str, int]] | None = None) -> "PackClaim | None":
        """Take up to ``limit`` configurations to train as one pack, all or none, under one
        hold of the lock; None when no pack of two or more can be formed now.

        First an interrupted pack: the members of the newest pack record whose checkpoint
        exists, that are free (no result, no live claim, no failed attempt, no solo checkpoint
        of their own) and for which no newer pack holds a state; they resume from that
        checkpoint. Else a new pack: free configurations with ``group(config)`` equal to the
        first one's (``group`` returns None for one that is never packed), in file order, that
        no pack holds a state of. Each member's claim record names the pack. ``rungs``: as for
        :meth:`claim`; a pack's members all train to the same rung.
        """
        self.watching = False
        with self.locked():
            finished = self.finished_ids()
            claims = self.folder.claim_records()
            now = time.time()
            configs = self.unfinished(configs, finished)
            by_id = {c["id"]: c for c in configs}
            if rungs is not None:
                target = rungs(list(by_id))
                by_id = {cid: c for cid, c in by_id.items() if cid in target}
                configs = [c for c in configs if c["id"] in target]
                plain = group
                group = lambda c: None if plain(c) is None else (plain(c), target[c["id"]])  # noqa: E731
            records = self._live_pack_records(claims, now)
            latest: dict[str, tuple[tuple, str]] = {}  # member -> (order, pack) of its newest saved state
            for pid, rec in records.items():
                if self.folder.pack_checkpoint(pid).exists():
                    for cid in rec["members"]:
                        if cid not in latest or pack_order(rec) > latest[cid][0]:
                            latest[cid] = (pack_order(rec), pid)

            def packable(cid: str):
                config = by_id.get(cid)
                if config is None or cid in finished or group(config) is None or self.folder.checkpoint(cid).exists():
                    return None
                free = self._free(cid, finished, claims, now)
                if free is None or free[1] != 1:  # one that raised is retried alone
                    return None
                return free

            for pid, rec in sorted(records.items(), key=lambda item: pack_order(item[1]), reverse=True):
                if not self.folder.pack_checkpoint(pid).exists():
                    continue
                members, key = [], None
                for cid in rec["members"]:
                    if latest.get(cid, (0, ""))[1] == pid and len(members) < limit:
                        free = packable(cid)
                        if free is not None and key in (None, group(by_id[cid])):
                            key = group(by_id[cid])
                            members.append((by_id[cid], free))
                if members:
                    return self._write_pack(members, worker, now, resume_from=pid,
                                            rung=None if rungs is None else key[1])
            first, members = None, []
            for config in configs:
                if config["id"] in latest:
                    continue
                key = group(config)
                if key is None or (first is not None and key != first):
                    continue
                free = packable(config["id"])
                if free is None:
                    continue
                first = key
                members.append((config, free))
                if len(members) == limit:
                    break
            if len(members) >= 2:
                return self._write_pack(members, worker, now, resume_from=None,
                                        rung=None if rungs is None else first[1])
        return None

    def _write_pack(self, members, worker: str, now: float, resume_from: str | None,
                    rung: int | None = None) -> "PackClaim":
        ids = [config["id"] for config, _ in members]
        pid = pack_id_of(ids)
        seq = 1 + max([pack_order(r)[0] for r in self.folder.pack_records().values()] + [self.folder.kept_max_seq()])
        self.folder.write_pack_record(pid, ids, now, resume_from, worker, seq)
        extra = {} if rung is None else {"rung": rung}
        claims = [self._write_claim(config, worker, now, old, attempt, pack=pid, **extra)
                  for config, (old, attempt) in members]
        return PackClaim(pid, claims, resume_from)

    def _live_pack_records(self, claims: dict[str, Any], now: float) -> dict[str, dict[str, Any]]:
        """The pack records still of use; drops (with their checkpoints) those whose members all
        have results, and those that never saved a checkpoint and that no live claim names; sets
        aside (:meth:`ResultsFolder.keep_pack`) those kept only for runs paused at a rung, so that
        the next claims read only the live ones. Call under the lock."""
        finished = self.finished_ids()
        packs = self.folder.pack_records()
        kept = self._holding_paused(packs)
        out = {}
        for pid, rec in packs.items():
            if self._pack_running(pid, rec, claims):
                out[pid] = rec
            elif not self.folder.pack_checkpoint(pid).exists():
                if self.folder.pack_checkpoint(pid, kept=True).exists():  # set aside, killed before its record
                    self.folder.keep_pack(pid, pack_order(rec)[0])
                else:
                    self.folder.drop_pack(pid)
            elif all(cid in finished for cid in rec["members"]):
                if pid in kept:
                    self.folder.keep_pack(pid, pack_order(rec)[0])
                else:
                    self.folder.drop_pack(pid)
            else:
                out[pid] = rec
        return out

    def _pack_running(self, pid: str, rec: Mapping[str, Any], claims: Mapping[str, Any]) -> bool:
        """Whether a live claim trains a member of pack ``pid`` in it."""
        return any(isinstance(claims.get(cid), dict) and claims[cid].get("pack") == pid
                   and self.is_live(cid, claims[cid]) for cid in rec["members"])

    def _holding_paused(self, packs: Mapping[str, Mapping[str, Any]]) -> set[str]:
        """The packs whose checkpoint holds the newest state of a run paused at a rung of
        successive halving (kept, so that it can continue; ``gatedrnn prune --stopped`` frees them)."""
        paused = self.folder.paused_ids(self.index.continued if self.index is not None else None)
        if not paused:
            return set()
        newest: dict[str, tuple[tuple, str]] = {}
        for pid, rec in packs.items():
            if not self.folder.pack_checkpoint(pid).exists():
                continue
            for cid in rec["members"]:
                if cid in paused and (cid not in newest or pack_order(rec) > newest[cid][0]):
                    newest[cid] = (pack_order(rec), pid)
        return {pid for _, pid in newest.values()}

    def prune_stopped(self) -> tuple[int, int]:
        """``gatedrnn prune --stopped``: remove the checkpoints kept for runs paused at a rung (their
        own, and the pack checkpoints that hold nothing else of use). Returns (files, bytes) freed."""
        files = freed = 0
        with self.locked():
            paused = self.folder.paused_ids(self.index.continued if self.index is not None else None)
            for cid in sorted(paused):
                for path in (self.folder.kept_checkpoint(cid), self.folder.checkpoint(cid)):  # the latter: older folders
                    if path.exists():
                        freed += path.stat().st_size
                        path.unlink()
                        files += 1
            finished, claims = self.finished_ids(), self.folder.claim_records()
            records = [(pid, rec, False) for pid, rec in self.folder.pack_records().items()]
            records += [(pid, rec, True) for pid, rec in self.folder.pack_records(kept=True).items()]
            for pid, rec, kept in records:
                path = self.folder.pack_checkpoint(pid, kept=kept)
                if path.exists() and not self._pack_running(pid, rec, claims) and all(cid in finished for cid in rec["members"]):
                    freed += path.stat().st_size
                    self.folder.drop_pack(pid)
                    files += 1
        return files, freed

    def tidy_packs(self) -> None:
        """Drop the records and checkpoints of packs that are of no further use."""
        with self.locked():
            self._live_pack_records(self.folder.claim_records(), time.time())

    def pack_source(self, config_id: str) -> Path | None:
        """The checkpoint of the newest pack holding a saved state of ``config_id`` (to finish
        it alone), or None. Read without the lock: a claimant's hint."""
        return self.folder.newest_pack_checkpoint(config_id)

