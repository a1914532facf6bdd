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

The estimates that use the sample follow (:func:`lost`).

What successive halving's stopping may have lost, estimated from its audit sample (issue 40).
No torch.

Definitions (a *unit* as in :mod:`gatedrnn.analysis.audit`):

- a unit's value at a rung, and its *final* value at the full budget: the mean of the ranking
  metric over its seeds (with lr swept, at its best rate by that mean);
- the *best survivor*: the best final value among the units promoted at every rung (audited
  ones excluded);
- the *stopped* units at a rung: all it stopped, audited ones included (they are the sample).

Runs continued by hand (``--continue-stopped``) are not a sample and never enter an estimate.

Estimates, each a design-based one (the audit is a stratified random sample with known
inclusion probabilities; the values of the units are fixed, the draw is what is random):

- **stopped units better than the best survivor** (and, with replicates, **in the could-be-best
  set** of the survivors and that unit): per stratum ``N_h x_h / n_h``; the 95 % interval adds
  up exact hypergeometric intervals of each sampled stratum's count, each at ``0.05 / m`` for the
  ``m`` strata partly sampled (Bonferroni: the whole interval covers with at least 95 %); a fully
  sampled stratum is known exactly, an unsampled one could hold anything from none to all;
- **each rung's agreement with the final ranking over all the units that entered it**
  (Spearman's correlation, survivors weighted 1 and audited units ``1 / inclusion``; a unit's
  final rank is its weighted rank among the observed), with a 95 % interval from Fisher's z at
  Kish's effective sample size, ``(sum w)^2 / sum w^2``.

Their coverage is simulated in tests/test_audit.py with curves that cross and curves that do not.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from .stats import could_be_best, ranking_metric, summarise
from .tuning import tune

__all__ = ["rank_units", "draw_audit", "STRATA", "MIN_PER_STRATUM", "unit_values", "count_interval", "lost", "LEVEL"]

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

LEVEL = 0.95


def unit_values(records: pd.DataFrame, metric: str) -> tuple[dict[str, float], dict[str, str]]:
    """Each unit's value (mean over seeds, at its best rate by that mean) and each run's unit."""
    if not len(records):
        return {}, {}
    _, unit_of, _ = rank_units(records)
    done = records[(records["status"] == "done") & records[metric].notna()]
    if not len(done):
        return {}, unit_of
    means = done.assign(unit=done["id"].map(unit_of)).groupby(["unit", "config id"])[metric].mean()
    return {u: float(v) for u, v in means.groupby(level=0).min().items()}, unit_of


def count_interval(size: int, drawn: int, hits: int, alpha: float) -> tuple[int, int]:
    """Exact interval for how many of ``size`` units have a property, when ``hits`` of a simple
    random sample of ``drawn`` without replacement have it (hypergeometric; ``alpha`` split
    between the two tails)."""
    if drawn >= size:
        return hits, hits
    if drawn == 0:
        return 0, size
    ks = np.arange(size + 1)
    upper = sps.hypergeom.sf(hits - 1, size, ks, drawn)  # P(X >= hits | K)
    lower = sps.hypergeom.cdf(hits, size, ks, drawn)  # P(X <= hits | K)
    return int(ks[upper > alpha / 2].min()), int(ks[lower > alpha / 2].max())


def _total(strata: list[dict[str, Any]]) -> dict[str, float]:
    """Sum of per-stratum counts: the estimate and its Bonferroni interval."""
    partial = sum(0 < s["drawn"] < s["size"] for s in strata)
    alpha = (1 - LEVEL) / max(partial, 1)
    est = lo = hi = 0.0
    for s in strata:
        a, b = count_interval(s["size"], s["drawn"], s["hits"], alpha)
        lo, hi = lo + a, hi + b
        est += s["size"] * s["hits"] / s["drawn"] if s["drawn"] else math.nan
    return {"estimate": est, "ci low": lo, "ci high": hi, "stopped": sum(s["size"] for s in strata)}


def _agreement(at_rung: dict[str, float], final: dict[str, float], weight: dict[str, float]) -> dict[str, Any]:
    """Spearman's correlation between the rung values (known for every unit that entered it) and
    the final values (known for the weighted ones), Horvitz-Thompson weighted."""
    units = list(at_rung)
    seen = [u for u in units if u in final and weight.get(u, 0) > 0]
    if len(seen) < 3:
        return {"spearman": math.nan, "ci low": math.nan, "ci high": math.nan, "observed": len(seen)}
    rung_rank = pd.Series(at_rung).rank()
    w = np.array([weight[u] for u in seen])
    f = np.array([final[u] for u in seen])
    below = (f[None, :] < f[:, None]) * w[None, :]
    same = (f[None, :] == f[:, None]) * w[None, :]
    final_rank = below.sum(1) + (same.sum(1) + 1) / 2  # its weighted mid-rank among the population
    x = rung_rank[seen].to_numpy()
    mx, my = np.average(x, weights=w), np.average(final_rank, weights=w)
    cov = np.average((x - mx) * (final_rank - my), weights=w)
    sx, sy = math.sqrt(np.average((x - mx) ** 2, weights=w)), math.sqrt(np.average((final_rank - my) ** 2, weights=w))
    rho = cov / (sx * sy) if sx > 0 and sy > 0 else math.nan
    n_eff = w.sum() ** 2 / (w ** 2).sum()
    lo = hi = math.nan
    if math.isfinite(rho) and abs(rho) < 1 and n_eff > 4:
        half = float(sps.norm.ppf(0.5 + LEVEL / 2)) * math.sqrt(1.06 / (n_eff - 3))
        lo, hi = math.tanh(math.atanh(rho) - half), math.tanh(math.atanh(rho) + half)
    return {"spearman": rho, "ci low": lo, "ci high": hi, "observed": len(seen), "effective n": n_eff}


def lost(frames: list[pd.DataFrame], decisions: list[dict[str, Any] | None], metric: str) -> dict[str, Any] | None:
    """The audit's estimates for a halving sweep: ``frames`` its rung records (one frame per
    rung, the last at the full budget), ``decisions`` its rung decisions. None before any
    decision with an audit, or before the last rung has a record."""
    if not frames or not len(frames[-1]) or not any(d and d.get("audit") for d in decisions):
        return None
    end = frames[-1]
    if "continued" in end:
        end = end[~end["continued"].fillna(False).astype(bool)]  # by hand: not a sample
    final, unit_of = unit_values(end, metric)
    audited_units = {unit_of.get(rid) for d in decisions if d for rid in d.get("audited", [])} - {None}
    survivors = {u for u in final if u not in audited_units}
    if not survivors:
        return None
    best = min(final[u] for u in survivors)
    cbb = _could_be_best_with(end, unit_of, survivors, metric)
    rungs, better, in_set, pending = [], [], [], 0
    for k, d in enumerate(decisions, start=1):
        if not d or not d.get("audit"):
            continue
        strata_b, strata_c = [], []
        for s in d["audit"]["strata"]:
            observed = [u for u in s["drawn"] if u in final]
            pending += len(s["drawn"]) - len(observed)
            strata_b.append({"size": len(s["units"]), "drawn": len(observed),
                             "hits": sum(final[u] < best for u in observed)})
            if cbb is not None:
                strata_c.append({"size": len(s["units"]), "drawn": len(observed), "hits": sum(cbb(u) for u in observed)})
        better += strata_b
        in_set += strata_c
        at_rung, _ = unit_values(frames[k - 1], metric)
        rungs.append({"rung": k, "steps": d.get("steps"), "configurations": len(at_rung),
                      "promoted": len(d["ranking"]) - sum(len(s["units"]) for s in d["audit"]["strata"]),
                      "audited": sum(len(s["drawn"]) for s in d["audit"]["strata"]),
                      "agreement": _agreement(at_rung, final, _weights(at_rung, final, decisions, k, audited_units)),
                      "better": _total(strata_b)})
    gains = [best - final[u] for u in audited_units if u in final]
    audited_cbb = sorted(u for u in audited_units if u in final and cbb is not None and cbb(u))
    return {"best survivor": best, "best survivor unit": min(survivors, key=final.get), "survivors": len(survivors),
            "rungs": rungs, "better": _total(better), "in could-be-best": _total(in_set) if cbb is not None else None,
            "largest gain": max(gains) if gains else None, "audited could be best": audited_cbb,
            "audit pending": pending, "final": final}


def _weights(at_rung: dict[str, float], final: dict[str, float], decisions: list[dict[str, Any] | None], k: int,
             audited: set[str]) -> dict[str, float]:
    """Each unit that entered rung k and reached the end: 1 for a survivor, 1 / its inclusion
    probability for an audited one (drawn at rung k or later)."""
    inclusion = {}
    for d in decisions[k - 1:]:
        for s in (d or {}).get("audit", {}).get("strata", []):
            for u in s["drawn"]:
                inclusion[u] = s["inclusion"]
    return {u: (1.0 / inclusion[u] if u in audited else 1.0) for u in at_rung
            if u in final and (u not in audited or inclusion.get(u))}


def _could_be_best_with(end: pd.DataFrame, unit_of: dict[str, str], survivors: set[str], metric: str):
    """u -> whether unit u, with the survivors, could be best at the end (None without replicates)."""
    runs = end[(end["status"] == "done") & end[metric].notna()].assign(unit=lambda x: x["id"].map(unit_of))
    if not len(runs) or runs.groupby("config id").size().max() < 2:
        return None
    best_config = runs.groupby(["unit", "config id"])[metric].mean().groupby(level=0).idxmin()
    keep = runs[runs["config id"].isin({c for _, c in best_config})]
    base = keep[keep["unit"].isin(survivors)]

    def judge(u: str) -> bool:
        both = pd.concat([base, keep[keep["unit"] == u]], ignore_index=True)
        result = could_be_best(both, metric)
        if result is None:
            return False
        table = result["table"]
        ids = set(keep.loc[keep["unit"] == u, "config id"])
        return bool(table.loc[table["config id"].isin(ids), "could be best"].any())
    return judge
