"""A swept learning rate: compare each configuration at its own best rate, estimated on runs that
did not choose it (DESIGN.md, "Replicates and effects"). No torch.

When ``lr`` is a swept key (``init_experiments.py --lrs``), a switch that "helps" at one rate may
only move the configuration's best rate, so configurations are compared each at its best rate
(the *tuned* view). Choosing a rate on some runs and reporting the same runs is biased: the
winner's curse is larger where several rates are equally good, so a configuration with a flat
rate curve looks better than one with a single clear best rate, and effects between them are
biased too. :func:`tune` therefore **cross-fits over seeds** (leave one seed out): each
configuration's value at seed s comes from the rate chosen on its other seeds, so no value
helped choose its own rate. A rate is chosen within seeds (on the seeds every rate of the
configuration has) and a diverged run counts as the worst possible loss, never as a missing one.
The tuned view has one row per (configuration, seed): the ranking, the "could be best" set, the
effects, interactions and variance shares are computed on it, with ``lr`` no longer a key.

With one seed (or replicates that are not seed-blocked) there is nothing to cross-fit: the rate
is chosen on the runs that are reported, and :attr:`Tuned.optimism` bounds how far that view can
be too good (the expected winner's curse of equally good rates, from an overestimate of the noise).

:func:`effects_by_rate` gives the effects at each rate alone and tests whether each holds at
every rate (an intersection-union test: each rate's 95 % interval excludes zero on the same side,
so that a zero effect passes in at most 5 % of sweeps).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..spec.config import config_id
from .effects import effects
from .stats import config_columns

__all__ = ["Tuned", "tune", "effects_by_rate", "winners_curse"]


@dataclass
class Tuned:
    runs: pd.DataFrame  # the tuned view: a row per (configuration, seed), config id = the architecture's id, no lr
    chosen: dict[str, float]  # the config id (with lr) of each configuration's rate chosen on all its seeds -> lr
    rates: list[float]
    by_rate: pd.DataFrame  # the mean metric of each configuration (rows: architecture ids) at each rate
    architecture: pd.Series  # each run's architecture id (its configuration without lr)
    cross_fitted: bool  # every value of ``runs`` from a rate chosen on the other seeds
    row_of: dict[str, str]  # architecture id -> the config id of its rate chosen on all seeds
    optimism: dict[str, Any] | None = None  # without cross-fitting: how optimistic the view can be
    diverged_at_choice: int = 0  # (configuration, seed) values lost to a divergence at the rate chosen


def _architecture_ids(done: pd.DataFrame) -> pd.Series:
    """Each run's configuration without ``lr`` (and without its seed), as an id."""
    keys = [c for c in config_columns(done) if c != "lr"]
    frame = done[keys].astype(object).where(done[keys].notna(), None)
    return pd.Series([config_id({k: (v.item() if hasattr(v, "item") else v) for k, v in zip(keys, row)})
                      for row in frame.itertuples(index=False)], index=done.index)


def _choose(values: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Each configuration's best rate (index) from ``values`` (A, R, S): NaN no run, inf diverged,
    on the seeds ``seeds`` (a mask over S): the lowest mean over the seeds that every rate of the
    configuration has, or over each rate's own seeds where they share none; -1 where no rate has
    a run."""
    v = values[:, :, seeds]
    have = ~np.isnan(v)
    shared = have.all(axis=1)  # (A, S'): seeds every rate of the configuration has
    n_shared = shared.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        on_shared = np.where(shared[:, None, :], v, 0.0).sum(axis=2) / n_shared[:, None]
        own = np.where(have, v, 0.0).sum(axis=2) / have.sum(axis=2)
    mean = np.where(n_shared[:, None] > 0, on_shared, own)
    mean = np.where(np.isnan(mean), np.inf, mean)
    pick = mean.argmin(axis=1)
    none = ~have.any(axis=(1, 2))
    return np.where(none, -1, pick)


def tune(runs: pd.DataFrame, metric: str) -> Tuned | None:
    """The tuned view of ``runs`` (finished runs with ``metric``, and diverged ones, which count as
    the worst loss when a rate is chosen); None when ``lr`` is not swept."""
    if "lr" not in runs or runs["lr"].nunique(dropna=True) < 2:
        return None
    runs = runs[runs["lr"].notna()]
    done = runs[(runs["status"] == "done") & runs[metric].notna()].copy()
    diverged = runs[runs["status"] == "diverged"].copy()
    both = pd.concat([done, diverged])
    both["architecture"] = _architecture_ids(both)
    both["_seed"] = both["seed"].fillna(-1).astype(int) if "seed" in both else -1
    both["_value"] = np.where(both["status"] == "done", both[metric].astype(float), np.inf)
    archs, a_of = np.unique(both["architecture"].to_numpy(str), return_inverse=True)
    rates, r_of = np.unique(both["lr"].to_numpy(float), return_inverse=True)
    seeds, s_of = np.unique(both["_seed"].to_numpy(int), return_inverse=True)
    values = np.full((len(archs), len(rates), len(seeds)), np.nan)
    cell = pd.Series(both["_value"].to_numpy()).groupby([a_of, r_of, s_of]).mean()  # duplicates of a seed: one unit
    values[tuple(np.array(list(cell.index)).T)] = cell.to_numpy()
    blocked = bool(len(done)) and "seed blocks" in done and bool(done["seed blocks"].fillna(False).astype(bool).all())
    cross = blocked and len(seeds) >= 2
    everything = np.ones(len(seeds), bool)
    on_all = _choose(values, everything)
    if cross:  # leave one seed out
        pick = np.stack([_choose(values, everything & (np.arange(len(seeds)) != j)) for j in range(len(seeds))], 1)
    else:
        pick = np.repeat(on_all[:, None], len(seeds), axis=1)
    done["architecture"] = both["architecture"].iloc[: len(done)].to_numpy()
    first = done.assign(_a=a_of[: len(done)], _r=r_of[: len(done)], _s=s_of[: len(done)])
    first = first.drop_duplicates(["_a", "_r", "_s"]).set_index(["_a", "_r", "_s"])
    rows, lost = [], 0
    for a in range(len(archs)):
        for j in range(len(seeds)):
            r = pick[a, j]
            if r < 0 or np.isnan(values[a, :, j]).all():
                continue  # no run of this configuration at this seed
            if not np.isfinite(values[a, r, j]):
                lost += bool(np.isinf(values[a, r, j]))
                continue
            row = first.loc[(a, r, j)].copy()
            row[metric] = values[a, r, j]
            rows.append(row)
    view = pd.DataFrame(rows).reset_index(drop=True)
    if len(view):
        view = view.assign(**{"config id": view["architecture"], "tuned lr": view["lr"].astype(float)})
        view = view.drop(columns=["lr", "architecture"])
    chosen_ids = {}
    for a, r in enumerate(on_all):
        if r >= 0:
            at = done[(done["architecture"] == archs[a]) & (done["lr"] == rates[r])]
            if len(at):
                chosen_ids[archs[a]] = str(at["config id"].iloc[0])
    means = done.groupby(["architecture", "lr"])[metric].mean().reset_index()
    return Tuned(view, {cid: float(rates[on_all[list(archs).index(a)]]) for a, cid in chosen_ids.items()},
                 [float(r) for r in rates], means.pivot(index="architecture", columns="lr", values=metric),
                 both["architecture"].reindex(runs.index), cross, chosen_ids,
                 None if cross else _optimism(values, len(rates)), lost)


@functools.lru_cache(maxsize=32)
def winners_curse(rates: int, draws: int = 200_000) -> float:
    """E[-min of ``rates`` independent standard normals], simulated: how far below its true value
    a configuration's best of ``rates`` equally good rates lands, in noise sds."""
    rng = np.random.default_rng(0)
    return float(-rng.standard_normal((draws, rates)).min(axis=1).mean())


def _optimism(values: np.ndarray, n_rates: int) -> dict[str, Any] | None:
    """How optimistic an in-sample tuned view can be: the winner's curse of ``n_rates`` equally
    good rates times the noise, the noise overestimated by the residual of an additive
    (configuration + rate) model of the mean losses (it holds the rate × configuration
    interaction too)."""
    finite = np.where(np.isfinite(values), values, np.nan)
    with np.errstate(invalid="ignore"):
        table = np.nanmean(finite, axis=2) if finite.shape[2] else finite[..., 0]
    table = table[~np.isnan(table).any(axis=1)]
    if table.shape[0] < 2:
        return None
    resid = table - table.mean(1, keepdims=True) - table.mean(0, keepdims=True) + table.mean()
    noise = float(np.sqrt((resid ** 2).sum() / ((table.shape[0] - 1) * (table.shape[1] - 1))))
    curse = winners_curse(n_rates)
    return {"bound": curse * noise, "noise": noise, "curse": curse, "rates": n_rates}


def effects_by_rate(scored: pd.DataFrame, metric: str, keys: list[str], tuned_effects: pd.DataFrame) -> pd.DataFrame:
    """The matched-pair effects at each rate alone (column ``lr``), and on ``tuned_effects`` the
    column ``holds at every lr``: ``helps`` or ``hurts`` where the mean's 95 % interval excludes
    zero on that side at every rate (an intersection-union test: a zero effect passes in at most
    5 % of sweeps), else ``no``."""
    rows = []
    for rate in sorted(scored["lr"].dropna().unique()):
        at = scored[scored["lr"] == rate].drop(columns="lr")
        table, _ = effects(at, metric, [k for k in keys if k != "lr"])
        rows.append(table.assign(lr=float(rate)))
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    if len(out) and len(tuned_effects):
        n_rates = out["lr"].nunique()

        def verdict(d: pd.DataFrame) -> str:
            if len(d) < n_rates:
                return "no"
            if (d["mean ci high"] < 0).all():
                return "helps"
            return "hurts" if (d["mean ci low"] > 0).all() else "no"

        held = out.groupby(["hyperparameter", "from", "to"]).apply(verdict, include_groups=False)
        tuned_effects["holds at every lr"] = [held.get((r["hyperparameter"], r["from"], r["to"]), "no")
                                              for _, r in tuned_effects.iterrows()]
    return out
