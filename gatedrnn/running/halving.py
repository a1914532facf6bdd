"""Successive halving over a results folder (DESIGN.md, "Successive halving"; issues 32 and 40).
No torch.

With ``--halving ETA --rungs R`` every configuration trains to the first rung (``steps / ETA **
(R - 1)`` steps); at each rung the best 1/ETA of the units (rounded up; :mod:`gatedrnn.analysis.audit`)
continue **from their checkpoints** to the next rung, and a seeded **audit** sample of the others
continues to the full budget at once; the rest stop there, *paused*: their record at the rung
becomes their result and their checkpoint stays, so that ``--continue-stopped`` can take them to
the end as if they had been promoted. The last rung is ``steps``.

The rule (``halving_rule``, recorded with the folder): ``top`` (the default) promotes the best
1/ETA by their mean over seeds and nothing else. A decision can use only what has reached it, and
at rung 1 nothing has reached the end; a rung-level "could be best" protection (``protect``, the
rule before issue 40) asks whether a configuration could be best *at the rung*, which with three
seeds nearly all can (the quick study kept 47 of 48), so it saved nearly nothing while not
protecting what matters, the end. ``top`` stops more, and the audit measures what that loses.

A configuration's state is read from the folder alone:

- no record at any rung: it trains to rung 1;
- a record at rung k (``rungs/<k>/<id>.json``, the result it would have if it ended there) and no
  decision for rung k yet: it waits;
- rung k decided (``.queue/promotions/<k>.json``): promoted, it trains to rung k + 1; audited, or
  stopped and continued by hand (its stopped result kept aside as ``<id>.stopped-<n>.json``), it
  trains to the last rung; stopped, its rung-k record is written as its result (``status: done``,
  ``rung`` k, ``stopped at rung``), its checkpoint kept.

Rung k is decided once every configuration that entered it has a record there or a result
(one that diverged or failed on the way has a result and drops out). The decision, the audit
draw included, is a function of the rung-k records and the sweep's seed alone (:func:`decide`),
written once under the queue lock, so two workers never promote twice; a worker killed after
writing it leaves results to write, which the next one writes (:meth:`Halving.advance` is
idempotent). Kills and reruns therefore promote and audit the same configurations.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import pandas as pd

from ..store.folder import ResultsFolder, read_json
from ..analysis.audit import draw_audit, rank_units
from ..analysis.results import load
from ..analysis.stats import could_be_best

__all__ = ["Halving", "decide", "TRAIN", "WAIT", "STOP", "FINISHED", "AUDIT_BUDGET"]

TRAIN, WAIT, STOP, FINISHED = "train", "wait", "stop", "finished"
# the audit's size gives way (never below two per stratum) where halving and its audit together
# would pass this share of training every run to the full budget
AUDIT_BUDGET = 0.5


def decide(records: pd.DataFrame, eta: int, rule: str = "top", audit: float = 0.0, seed: int = 0,
           rung: int = 1, cap: int | None = None) -> dict[str, Any]:
    """Who continues past a rung: ``records`` are the rung's records (one row per run, as
    :func:`gatedrnn.analysis.results.load` reads them). The units are ranked by their mean ranking
    metric, each at its tuned rate where lr is swept; the best ceil(units / eta) continue with all
    their runs (``rule`` ``protect``: and every unit that could be best at the rung); of the
    others an ``audit`` share (at most ``cap`` units) is drawn to continue to the end. Returns
    ``promoted``, ``stopped`` (the audited among them) and ``audited`` (run ids, sorted),
    ``ranking`` (unit ids best first), ``kept for could be best``, ``metric``, ``rule`` and the
    audit's draw (``audit``: its strata, the units drawn from each, their inclusion probability)."""
    ranking, unit_of, metric = rank_units(records)
    top = set(ranking[: math.ceil(len(ranking) / eta)])
    protected = set()
    if rule == "protect":
        done = records[records["status"] == "done"]
        cbb = could_be_best(done[done[metric].notna()], metric) if len(done) else None
        protected = set(cbb["table"].loc[cbb["table"]["could be best"], "config id"]) if cbb is not None else set()
    units = top | protected
    stopped_units = [u for u in ranking if u not in units]
    key = f"seed {seed}, rung {rung}: " + ",".join(ranking)
    draw = draw_audit(stopped_units, len(units), audit, key, cap)
    drawn = {u for stratum in draw["strata"] for u in stratum["drawn"]}
    promoted = sorted(rid for rid in records["id"] if unit_of.get(rid) in units)
    return {"promoted": promoted, "stopped": sorted(set(records["id"]) - set(promoted)),
            "audited": sorted(rid for rid in records["id"] if unit_of.get(rid) in drawn), "ranking": ranking,
            "kept for could be best": sorted(protected - top), "metric": metric, "units": len(ranking), "rule": rule,
            "audit": draw}


class Halving:
    """The rungs of one results folder under its settings (``halving`` ETA, ``rungs``, ``steps``)."""

    def __init__(self, folder: ResultsFolder, eta: int, rung_steps: list[int], rule: str = "top",
                 audit: float = 0.0, seed: int = 0) -> None:
        self.folder, self.eta, self.steps = folder, eta, list(rung_steps)
        self.rungs = len(self.steps)
        self.rule, self.audit, self.seed = rule, audit, seed
        self._decisions: dict[int, dict[str, Any] | None] = {}
        self._settled: set[int] = set()  # decided rungs whose stopped runs all have their results

    @classmethod
    def of(cls, folder: ResultsFolder, settings: Any) -> "Halving":
        """The halving of a sweep under its settings (a TrainSettings)."""
        return cls(folder, settings.halving, settings.rung_steps(), settings.halving_rule, settings.audit,
                   settings.seed)

    def decisions(self) -> dict[int, dict[str, Any] | None]:
        """Each rung's decision, or None while undecided; a decision, once written, never changes,
        so it is read once."""
        for k in range(1, self.rungs):
            if self._decisions.get(k) is None:
                self._decisions[k] = self.folder.read_promotion(k)
        return dict(self._decisions)

    def _index(self):
        """The folder's journal index (:mod:`gatedrnn.store.journal`): brought up to date by the
        queue's lock; looked at here when no lock has been held yet."""
        journal = self.folder.journal
        return journal.index if journal.index.generation >= 0 else journal.look()

    def states(self, ids: Iterable[str]) -> dict[str, tuple[str, int]]:
        """Each configuration's (state, rung): (TRAIN, k) to train to rung k; (WAIT, k) at rung k
        until it is decided; (STOP, k) stopped at rung k, its result not yet written; (FINISHED, k)
        with a result (k 0 where it ended before a rung: diverged or failed). An audited
        configuration, and a stopped one continued by hand, trains to the last rung."""
        index = self._index()
        finished, continued, reached = index.status, index.continued, index.rung
        decisions = self.decisions()
        promoted = {k: set(d["promoted"]) for k, d in decisions.items() if d is not None}
        audited = {k: set(d.get("audited", [])) for k, d in decisions.items() if d is not None}
        out = {}
        for cid in ids:
            k = reached.get(cid, 0)
            if cid in finished:
                out[cid] = (FINISHED, k)
            elif k == 0:
                out[cid] = (TRAIN, 1)
            elif k == self.rungs:
                out[cid] = (WAIT, k)  # at the top: its result follows its rung record at once
            elif decisions[k] is None:
                out[cid] = (WAIT, k)
            elif cid in promoted[k]:
                out[cid] = (TRAIN, k + 1)
            elif cid in audited[k] or cid in continued:
                out[cid] = (TRAIN, self.rungs)
            else:
                out[cid] = (STOP, k)
        return out

    def run_kind(self, cid: str) -> dict[str, Any]:
        """What a run trained to the last rung past a stop is: ``audited`` (drawn at a rung: a
        sample, for the estimates) or ``continued`` (by hand: never in the estimates); empty for
        a survivor."""
        for k, d in self.decisions().items():
            if d is not None and cid in d.get("audited", []):
                return {"audited": True, "audited at rung": k}
            if d is not None and cid in d["stopped"]:
                return {"continued": True, "continued from rung": k}
        return {}

    def trainable(self, ids: Iterable[str]) -> dict[str, int]:
        """The configurations that may be trained now, with the rung each trains to."""
        return {cid: k for cid, (state, k) in self.states(ids).items() if state == TRAIN}

    def advance(self, configs: Iterable[Mapping[str, Any]]) -> list[int]:
        """Decide every rung that can be decided and write the results of the configurations
        stopped at a decided rung. Call under the queue lock. Returns the rungs decided now."""
        index = self._index()
        if index.rebuilt or any(cid not in index.status for cid in index.changed):
            self._settled = set()  # the folder was read afresh, or a result went: check the stops again
        ids = [c["id"] for c in configs]
        self._finish_top(ids, index)
        decided = []
        entrants = set(ids)
        decisions = self.decisions()
        for k in range(1, self.rungs):
            decision = decisions[k]
            if decision is None:
                at_rung = {cid for cid in entrants if index.rung.get(cid, 0) >= k}
                if not entrants or any(cid not in at_rung and cid not in index.status for cid in entrants):
                    break  # some entrant is still on its way to rung k
                decision = self._decide(k, at_rung)
                self._decisions[k] = decision
                decided.append(k)
            if k not in self._settled:
                audited = set(decision.get("audited", []))
                for cid in decision["stopped"]:
                    if cid not in audited and cid not in index.continued and cid not in index.status:
                        self._stop(k, cid)
                self._settled.add(k)
            entrants = set(decision["promoted"])
        return decided

    def _decide(self, k: int, at_rung: set[str]) -> dict[str, Any]:
        records = load(self.folder.rung_dir(k))
        records = records[records["id"].isin(at_rung)].reset_index(drop=True)
        decision = {"rung": k, "steps": self.steps[k - 1], "eta": self.eta,
                    **decide(records, self.eta, self.rule, self.audit, self.seed, k, self._audit_cap(k, records))}
        self.folder.write_promotion(k, decision)
        return decision

    def _finish_top(self, ids: list[str], index: Any) -> None:
        """A run with a record at the last rung and no result (its worker was killed between
        writing the two) gets its result from that record, which is the same."""
        fresh = set(index.rung) if index.rebuilt or not self._settled else index.changed
        for cid in {c for c in fresh if index.rung.get(c) == self.rungs and c not in index.status} & set(ids):
            record = read_json(self.folder.rung_result(self.rungs, cid))
            if isinstance(record, dict) and record.get("id") == cid:
                self.folder.write_result(record)
                self.folder.drop_run(cid)

    def _audit_cap(self, k: int, records: pd.DataFrame) -> int | None:
        """How many units rung k may audit within :data:`AUDIT_BUDGET` of the flat sweep's
        configuration-steps: the halving's own steps (its rung sizes as the rule makes them), the
        audits of earlier rungs, and this rung's, each audited unit running to the end."""
        if not self.audit:
            return None
        units = len(rank_units(records)[0]) if len(records) else 0
        if not units:
            return None
        per_unit = len(records) / units  # runs per unit (seeds, rates)
        first = self.folder.read_promotion(1) if k > 1 else None
        entered = first["units"] if first is not None else units  # the units that entered rung 1
        flat = entered * per_unit * self.steps[-1]
        spent, n = 0.0, entered
        for j in range(1, self.rungs + 1):
            spent += n * per_unit * (self.steps[j - 1] - (self.steps[j - 2] if j > 1 else 0))
            n = math.ceil(n / self.eta)
        for j, d in self.decisions().items():
            if d is not None and j < k:
                spent += len(d.get("audited", [])) * (self.steps[-1] - self.steps[j - 1])
        left = AUDIT_BUDGET * flat - spent
        return max(0, int(left // (per_unit * (self.steps[-1] - self.steps[k - 1]))))

    def _stop(self, k: int, cid: str) -> None:
        """Write ``cid``'s rung-k record as its result, once: paused, its checkpoint kept (a
        claim and failed attempts it no longer needs are dropped)."""
        if self.folder.result(cid).exists():
            return
        record = read_json(self.folder.rung_result(k, cid))
        if not isinstance(record, dict):
            return
        self.folder.write_result({**record, "stopped at rung": True})
        self.folder.drop_run(cid, keep_checkpoint=True)

    def rung_of(self, step: int) -> int:
        """The rung a run that trained to ``step`` has reached (0: none)."""
        return sum(step >= s for s in self.steps)

    def result_fields(self, rung: int, stopped: bool) -> dict[str, Any]:
        return {"rung": rung, "rungs": self.rungs, "rung steps": self.steps, "halving": self.eta,
                "stopped at rung": stopped}
