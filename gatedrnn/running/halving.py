"""Successive halving over a results folder (DESIGN.md, "Successive halving"; issue 32). No torch.

With ``--halving ETA --rungs R`` every configuration trains to the first rung (``steps / ETA **
(R - 1)`` steps); at each rung the best 1/ETA of the configurations (rounded up), and every one
that could be best there, continue **from their checkpoints** to the next rung; the others stop
there, their record at the rung becoming their result. The last rung is ``steps``.

A configuration's state is read from the folder alone:

- no record at any rung: it trains to rung 1;
- a record at rung k (``rungs/<k>/<id>.json``, the result it would have if it ended there) and no
  decision for rung k yet: it waits;
- rung k decided (``.queue/promotions/<k>.json``): promoted, it trains to rung k + 1; stopped,
  its rung-k record is written as its result (``status: done``, ``rung`` k, ``stopped at rung``).

Rung k is decided once every configuration that entered it has a record there or a result
(one that diverged or failed on the way has a result and drops out). The decision is a function
of the rung-k records alone (:func:`decide`): configurations are ranked as ``examine`` ranks
them, over their seeds, and with a swept ``lr`` each architecture at its tuned rate, cross-fitted
over seeds (:mod:`gatedrnn.analysis.tuning`); the unit promoted is the architecture with all its seeds and
rates. It is written once, under the queue lock, so two workers never promote twice; a worker
killed after writing it leaves results to write, which the next one writes (:meth:`Halving.advance`
is idempotent). Kills and reruns therefore promote the same configurations.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import pandas as pd

from ..store.folder import ResultsFolder, read_json
from ..analysis.results import load
from ..analysis.stats import could_be_best, ranking_metric, summarise
from ..analysis.tuning import tune

__all__ = ["Halving", "decide", "TRAIN", "WAIT", "STOP", "FINISHED"]

TRAIN, WAIT, STOP, FINISHED = "train", "wait", "stop", "finished"


def decide(records: pd.DataFrame, eta: int) -> dict[str, Any]:
    """Who continues past a rung: ``records`` are the rung's records (one row per run, as
    :func:`gatedrnn.analysis.results.load` reads them). The units (architectures: a configuration without
    its seed and, where it is swept, its lr) are ranked by their mean ranking metric, each at its
    tuned rate where lr is swept; the best ceil(units / eta) and every unit that could be best
    continue, with all their runs. Returns ``promoted`` and ``stopped`` (run ids, sorted),
    ``ranking`` (unit ids best first), ``kept for could be best`` and ``metric``."""
    done = records[records["status"] == "done"]
    metric = ranking_metric(done) if len(done) else "val loss"
    tuned = tune(records, metric)
    if tuned is not None:
        view = tuned.runs
        unit_of = dict(zip(records["id"], tuned.architecture.reindex(records.index)))
    else:
        view = done[done[metric].notna()]
        unit_of = dict(zip(records["id"], records["config id"]))
    table = summarise(view, [metric]) if len(view) else pd.DataFrame()
    if len(table):
        table = table.dropna(subset=[f"{metric} mean"]).sort_values([f"{metric} mean", "config id"], kind="stable")
    ranking = list(table["config id"]) if len(table) else []
    top = set(ranking[: math.ceil(len(ranking) / eta)])
    cbb = could_be_best(view, metric) if len(view) else None
    protected = set(cbb["table"].loc[cbb["table"]["could be best"], "config id"]) if cbb is not None else set()
    units = top | protected
    promoted = sorted(rid for rid in records["id"] if unit_of.get(rid) in units)
    return {"promoted": promoted, "stopped": sorted(set(records["id"]) - set(promoted)), "ranking": ranking,
            "kept for could be best": sorted(protected - top), "metric": metric, "units": len(ranking)}


class Halving:
    """The rungs of one results folder under its settings (``halving`` ETA, ``rungs``, ``steps``)."""

    def __init__(self, folder: ResultsFolder, eta: int, rung_steps: list[int]) -> None:
        self.folder, self.eta, self.steps = folder, eta, list(rung_steps)
        self.rungs = len(self.steps)

    def states(self, ids: Iterable[str]) -> dict[str, tuple[str, int]]:
        """Each configuration's (state, rung): (TRAIN, k) to train to rung k; (WAIT, k) at rung k
        until it is decided; (STOP, k) stopped at rung k, its result not yet written; (FINISHED, k)
        with a result (k 0 where it ended before a rung: diverged or failed)."""
        finished = self.folder.finished_ids()
        reached = {}
        for k in range(1, self.rungs + 1):
            for cid in self.folder.rung_ids(k):
                reached[cid] = k
        decisions = {k: self.folder.read_promotion(k) for k in range(1, self.rungs)}
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
            else:
                out[cid] = (TRAIN, k + 1) if cid in set(decisions[k]["promoted"]) else (STOP, k)
        return out

    def trainable(self, ids: Iterable[str]) -> dict[str, int]:
        """The configurations that may be trained now, with the rung each trains to."""
        return {cid: k for cid, (state, k) in self.states(ids).items() if state == TRAIN}

    def advance(self, configs: Iterable[Mapping[str, Any]]) -> list[int]:
        """Decide every rung that can be decided and write the results of the configurations
        stopped at a decided rung. Call under the queue lock. Returns the rungs decided now."""
        ids = [c["id"] for c in configs]
        decided = []
        entrants = set(ids)
        for k in range(1, self.rungs):
            decision = self.folder.read_promotion(k)
            if decision is None:
                at_rung = self.folder.rung_ids(k) & entrants
                finished = self.folder.finished_ids()
                if not entrants or any(cid not in at_rung and cid not in finished for cid in entrants):
                    break  # some entrant is still on its way to rung k
                decision = self._decide(k, at_rung)
                decided.append(k)
            for cid in decision["stopped"]:
                self._stop(k, cid)
            entrants = set(decision["promoted"])
        return decided

    def _decide(self, k: int, at_rung: set[str]) -> dict[str, Any]:
        records = load(self.folder.rung_dir(k))
        records = records[records["id"].isin(at_rung)].reset_index(drop=True)
        decision = {"rung": k, "steps": self.steps[k - 1], "eta": self.eta, **decide(records, self.eta)}
        self.folder.write_promotion(k, decision)
        return decision

    def _stop(self, k: int, cid: str) -> None:
        """Write ``cid``'s rung-k record as its result, once; drop what it no longer needs."""
        if self.folder.result(cid).exists():
            return
        record = read_json(self.folder.rung_result(k, cid))
        if not isinstance(record, dict):
            return
        self.folder.write_result({**record, "stopped at rung": True})
        self.folder.drop_run(cid)

    def rung_of(self, step: int) -> int:
        """The rung a run that trained to ``step`` has reached (0: none)."""
        return sum(step >= s for s in self.steps)

    def result_fields(self, rung: int, stopped: bool) -> dict[str, Any]:
        return {"rung": rung, "rungs": self.rungs, "rung steps": self.steps, "halving": self.eta,
                "stopped at rung": stopped}
