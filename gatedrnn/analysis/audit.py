"""Successive halving's units, its ranking at a rung and its audit sample (issue 40). No torch.

A *unit* is what a rung promotes or stops as one: an architecture with all its seeds (and, with
``lr`` swept, all its rates, ranked at its tuned rate, cross-fitted over seeds). At each rung
decision the stopped units are divided into two strata, in the order of the rung's ranking:

* ``near the cut``: the stopped units ranked just below the promoted ones, as many as were
  promoted (the ones most likely to have been stopped wrongly);
* ``rest``: every other stopped unit.

From each stratum a simple random sample without replacement continues to the full budget
(*audited*): together ``ceil(share x stopped)`` units, half from each stratum where both have
room, and at least two from each stratum that has two (what the estimates need to say anything;
fewer only where a stratum is smaller). A unit's inclusion probability is its stratum's sample
size over its size. The draw is seeded by the sweep's seed, the rung and the ranking, so it is a
function of the rung records: kills and reruns draw the same sample.

The estimates that use the sample are in :mod:`gatedrnn.analysis.lost`.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import pandas as pd

from .stats import ranking_metric, summarise
from .tuning import tune

__all__ = ["rank_units", "draw_audit", "STRATA", "MIN_PER_STRATUM"]

STRATA = ("near the cut", "rest")
MIN_PER_STRATUM = 2


def rank_units(records: pd.DataFrame) -> tuple[list[str], dict[str, str], str]:
    """The units of a rung's records, best first by their mean ranking metric (each at its
    tuned rate where lr is swept), each run's unit (run id -> unit id), and the metric."""
    done = records[records["status"] == "done"] if len(records) else records
    metric = ranking_metric(done) if len(done) else "val loss"
    tuned = tune(records, metric) if len(records) else None
    if tuned is not None:
        view = tuned.runs
        unit_of = dict(zip(records["id"], tuned.architecture.reindex(records.index)))
    else:
        view = done[done[metric].notna()] if len(done) else done
        unit_of = dict(zip(records["id"], records["config id"])) if len(records) else {}
    table = summarise(view, [metric]) if len(view) else pd.DataFrame()
    if len(table):
        table = table.dropna(subset=[f"{metric} mean"]).sort_values([f"{metric} mean", "config id"], kind="stable")
    return (list(table["config id"]) if len(table) else []), unit_of, metric


def draw_audit(stopped: list[str], promoted: int, share: float, key: str, cap: int | None = None) -> dict[str, Any]:
    """The audit sample of the stopped units (``stopped`` in rank order, best first):
    ``{"share", "key", "strata": [{"name", "units", "drawn", "inclusion"}, ...]}``. ``promoted``:
    how many units continue (the size of the stratum near the cut); ``key``: what seeds the draw;
    ``cap``: at most this many units in all (the cost budget), never below the minimum per stratum."""
    strata = [stopped[:promoted], stopped[promoted:]]
    n = math.ceil(share * len(stopped)) if share > 0 else 0
    floor = sum(min(len(s), MIN_PER_STRATUM) for s in strata) if share > 0 else 0
    if cap is not None:
        n = min(n, cap)
    n = min(max(n, floor), len(stopped))
    near = min(len(strata[0]), max(min(len(strata[0]), MIN_PER_STRATUM) if n else 0, math.ceil(n / 2)))
    rest = min(len(strata[1]), n - near)
    near = min(len(strata[0]), n - rest)  # room left in the rest goes back near the cut
    rng = np.random.Generator(np.random.PCG64(int(hashlib.sha256(key.encode()).hexdigest()[:16], 16)))
    out = []
    for name, units, size in zip(STRATA, strata, (near, rest)):
        drawn = sorted(units[i] for i in rng.choice(len(units), size, replace=False)) if size else []
        out.append({"name": name, "units": list(units), "drawn": drawn,
                    "inclusion": size / len(units) if units else None})
    return {"share": share, "key": key, "strata": out}
