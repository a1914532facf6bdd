"""A swept learning rate: compare each configuration at its own best rate (DESIGN.md,
"Replicates and effects"). No torch.

When ``lr`` is a swept key (``init_experiments.py --lrs``), a switch that "helps" at one rate may
only move the configuration's best rate. :func:`tune` therefore picks, for each configuration
(every key but ``lr`` and the seed), the rate with the lowest mean validation loss, and returns
those runs as the *tuned* sweep: the ranking, the "could be best" set, the effects, interactions
and variance shares are computed on it (with ``lr`` no longer a key: two configurations that
differ in one switch are a pair whatever their best rates). :func:`effects_by_rate` gives the
effects at each rate alone, and whether each keeps its sign across the rates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .config import config_id
from .effects import effects
from .stats import config_columns

__all__ = ["Tuned", "tune", "effects_by_rate"]


@dataclass
class Tuned:
    runs: pd.DataFrame  # the runs at each configuration's best rate, without the lr column
    chosen: dict[str, float]  # config id (with its best lr) -> that lr
    rates: list[float]
    by_rate: pd.DataFrame  # the mean metric of each configuration (rows: architecture ids) at each rate
    architecture: pd.Series  # each scored run's architecture id (its configuration without lr)


def _architecture_ids(done: pd.DataFrame) -> pd.Series:
    """Each run's configuration without ``lr`` (and without its seed), as an id."""
    keys = [c for c in config_columns(done) if c != "lr"]
    frame = done[keys].astype(object).where(done[keys].notna(), None)
    return pd.Series([config_id({k: (v.item() if hasattr(v, "item") else v) for k, v in zip(keys, row)})
                      for row in frame.itertuples(index=False)], index=done.index)


def tune(scored: pd.DataFrame, metric: str) -> Tuned | None:
    """The tuned sweep of the finished runs ``scored`` (None when ``lr`` is not swept): for each
    configuration, the runs of the rate with the lowest mean ``metric``."""
    if "lr" not in scored or scored["lr"].nunique(dropna=True) < 2:
        return None
    done = scored[scored["lr"].notna()].copy()
    done["architecture"] = _architecture_ids(done)
    means = done.groupby(["architecture", "lr"])[metric].mean().reset_index()
    best = means.loc[means.groupby("architecture")[metric].idxmin()]
    keep = set(zip(best["architecture"], best["lr"]))
    chosen_runs = done[[(a, lr) in keep for a, lr in zip(done["architecture"], done["lr"])]]
    chosen = dict(zip(chosen_runs["config id"], chosen_runs["lr"].astype(float)))
    by_rate = means.pivot(index="architecture", columns="lr", values=metric)
    runs = chosen_runs.drop(columns=["lr", "architecture"]).assign(**{"tuned lr": chosen_runs["lr"].astype(float)})
    return Tuned(runs, chosen, sorted(float(r) for r in done["lr"].dropna().unique()), by_rate,
                 done["architecture"].reindex(scored.index))


def effects_by_rate(scored: pd.DataFrame, metric: str, keys: list[str], tuned_effects: pd.DataFrame) -> pd.DataFrame:
    """The matched-pair effects at each rate alone (column ``lr``), and on ``tuned_effects`` the
    column ``same sign at every lr``: whether the mean difference has one sign at every rate."""
    rows = []
    for rate in sorted(scored["lr"].dropna().unique()):
        at = scored[scored["lr"] == rate].drop(columns="lr")
        table, _ = effects(at, metric, [k for k in keys if k != "lr"])
        rows.append(table.assign(lr=float(rate)))
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    if len(out) and len(tuned_effects):
        signs = out.groupby(["hyperparameter", "from", "to"])["mean difference"].apply(
            lambda d: bool(len(set(np.sign(d.dropna()))) == 1))
        tuned_effects["same sign at every lr"] = [signs.get((r["hyperparameter"], r["from"], r["to"]))
                                                  for _, r in tuned_effects.iterrows()]
    return out
