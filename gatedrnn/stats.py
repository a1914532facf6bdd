"""Replicates, seed-blocked comparisons, matched-pair effects and their intervals (DESIGN.md,
"Replicates and effects").

Runs that differ only in their seed are one configuration with n runs (grouped by ``config id``,
the id of the configuration without its seed). With our seeding a seed fixes the data order,
so runs of different configurations with the same seed share part of their noise; comparisons
are therefore made on differences *within* a seed (blocking), which removes that shared part.

- :func:`summarise`: per configuration, ``runs`` and ``<metric> mean|std|ci low|ci high``
  (a 95 % t interval of the mean over the seeds).
- :func:`compare`: configuration b minus a, paired on the seeds both have (a t interval of the
  mean paired difference); without shared seeds, an unpaired (Welch) interval.
- :func:`effects`: for each swept key, the matched pairs of configurations identical except for
  that key, each pair's difference (to - from; the mean of its seed-blocked differences), their
  median, a 95 % bootstrap interval of the median, and the share of pairs improved (lower).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from .config import ALL_CELL_KEYS, SWITCHES
from .results import hyperparameters

__all__ = ["value_means", "linear_model", "t_quantile", "mean_interval", "summarise", "rank_configurations", "seed_table", "compare", "ties_with_best", "effects",
           "ranking_metric", "seed_noise", "EFFECT_COLUMNS", "CONFIG_COLUMNS"]

EFFECT_COLUMNS = ["hyperparameter", "from", "to", "pairs", "median difference", "ci low", "ci high", "share improved"]
# what makes a configuration, beside its seed (present columns only are used)
CONFIG_COLUMNS = [*SWITCHES, "n_layers", "state_size", "cell", "bptt", "task", *ALL_CELL_KEYS]

# two-sided 95 % quantiles of Student's t by degrees of freedom (exact to 3 decimals)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
         20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
         29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t_quantile(df: float) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (linear in 1/df
    between tabulated values; 1.960 in the limit)."""
    if not df >= 1:
        return float("nan")
    if df in _T975:
        return _T975[df]
    keys = sorted(_T975)
    if df > keys[-1]:
        lo, hi, tlo, thi = 1 / keys[-1], 0.0, _T975[keys[-1]], 1.960
    else:
        below = max(k for k in keys if k < df)
        above = min(k for k in keys if k > df)
        lo, hi, tlo, thi = 1 / below, 1 / above, _T975[below], _T975[above]
    x = 1 / df
    return thi + (tlo - thi) * (x - hi) / (lo - hi)


def mean_interval(values: Sequence[float]) -> tuple[float, float, float, float]:
    """(mean, std, ci low, ci high): the sample's mean, standard deviation (n - 1) and the 95 %
    t interval of the mean; NaN where n is too small."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return (math.nan,) * 4
    mean = float(v.mean())
    if len(v) < 2:
        return mean, math.nan, math.nan, math.nan
    std = float(v.std(ddof=1))
    half = t_quantile(len(v) - 1) * std / math.sqrt(len(v))
    return mean, std, mean - half, mean + half


def ranking_metric(df: pd.DataFrame) -> str:
    """``val loss`` where the finished runs have it, else ``min loss`` (the original's files)."""
    done = df[df["status"] == "done"] if "status" in df else df
    if len(done) and "val loss" in done and done["val loss"].notna().all():
        return "val loss"
    return "min loss"


def _config_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in CONFIG_COLUMNS if c in df]


def summarise(df: pd.DataFrame, metrics: Iterable[str]) -> pd.DataFrame:
    """One row per configuration (``config id``) over its finished runs: the configuration's
    keys, ``runs``, ``seeds`` and ``<metric> mean|std|ci low|ci high`` for each metric."""
    done = df[df["status"] == "done"]
    keys = _config_columns(df)
    rows = []
    for cid, group in done.groupby("config id", sort=False):
        row: dict[str, Any] = {k: group[k].iloc[0] for k in keys}
        row["config id"] = cid
        row["runs"] = len(group)
        row["seeds"] = " ".join(str(int(s)) for s in sorted(group["seed"].dropna().unique())) if "seed" in group else ""
        for m in metrics:
            if m in group:
                row[f"{m} mean"], row[f"{m} std"], row[f"{m} ci low"], row[f"{m} ci high"] = mean_interval(
                    group[m].tolist())
        rows.append(row)
    return pd.DataFrame(rows)


def rank_configurations(df: pd.DataFrame, metric: str | None = None) -> tuple[pd.DataFrame, str]:
    """The configurations of the finished runs best first, by the mean of ``metric``
    (:func:`ranking_metric` when None): their keys, ``runs`` and the mean in column ``metric``."""
    metric = metric or ranking_metric(df)
    table = summarise(df, [metric])
    if not len(table):
        return table, metric
    table = table.rename(columns={f"{metric} mean": metric}).dropna(subset=[metric])
    return table.assign(status="done").sort_values(metric, kind="stable").reset_index(drop=True), metric


def seed_table(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Finished runs' ``metric`` as a table: one row per configuration, one column per seed
    (NaN where a configuration has no run of that seed). Runs without a seed share column -1."""
    done = df[(df["status"] == "done") & df[metric].notna()]
    seeds = done["seed"].fillna(-1).astype(int) if "seed" in done else pd.Series(-1, index=done.index)
    return done.assign(_seed=seeds).pivot_table(index="config id", columns="_seed", values=metric, aggfunc="mean")


def compare(a: pd.Series, b: pd.Series) -> dict[str, Any]:
    """b minus a, each a Series of a configuration's metric by seed. Paired on shared seeds
    (two or more): the mean difference and its t interval; otherwise Welch's interval of the
    difference of the means."""
    a, b = a.dropna(), b.dropna()
    shared = a.index.intersection(b.index)
    if len(shared) >= 2:
        mean, _, lo, hi = mean_interval((b[shared] - a[shared]).tolist())
        return {"difference": mean, "ci low": lo, "ci high": hi, "paired seeds": len(shared)}
    diff = float(b.mean() - a.mean()) if len(a) and len(b) else math.nan
    if len(a) < 2 or len(b) < 2:
        return {"difference": diff, "ci low": math.nan, "ci high": math.nan, "paired seeds": len(shared)}
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se > 0 else len(a) + len(b) - 2
    half = t_quantile(dof) * se
    return {"difference": diff, "ci low": diff - half, "ci high": diff + half, "paired seeds": len(shared)}


def ties_with_best(table: pd.DataFrame, best: str) -> pd.DataFrame | None:
    """Every other configuration against ``best`` (:func:`compare`, seed-blocked): difference,
    interval, and ``tied`` (its interval reaches zero: not distinguishable from the best at
    95 %, one comparison at a time). None when no configuration has two or more runs."""
    if best not in table.index or table.notna().sum(axis=1).max() < 2:
        return None
    rows = []
    for cid in table.index:
        if cid == best:
            continue
        c = compare(table.loc[best], table.loc[cid])
        c["config id"] = cid
        c["tied"] = bool(c["ci low"] <= 0) if math.isfinite(c["ci low"]) else None
        rows.append(c)
    return pd.DataFrame(rows)


def seed_noise(table: pd.DataFrame) -> dict[str, float] | None:
    """The typical within-configuration seed std (the root mean of the variances of the
    configurations with two or more runs) against the spread of the configurations' means."""
    counts = table.notna().sum(axis=1)
    multi = table[counts >= 2]
    if len(multi) == 0:
        return None
    within = float(np.sqrt(np.nanmean(multi.var(axis=1, ddof=1))))
    between = float(table.mean(axis=1).std(ddof=1)) if len(table) > 1 else math.nan
    return {"seed std": within, "between std": between, "configurations": int(len(multi)),
            "runs per configuration": float(counts[counts >= 2].mean())}


def _adjacent(values: list) -> list[tuple[Any, Any]]:
    if all(isinstance(v, (bool, np.bool_)) for v in values):
        return [(False, True)] if set(values) == {False, True} else []
    if all(isinstance(v, str) for v in values):  # categorical: the first (gated) against each other
        first = sorted(values, key=lambda v: (v != "gated", v))[0]
        return [(first, v) for v in sorted(values) if v != first]
    ordered = sorted(values)
    return list(zip(ordered, ordered[1:]))


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def effects(df: pd.DataFrame, metric: str, keys: Sequence[str], n_boot: int = 2000,
            seed: int = 0) -> tuple[pd.DataFrame, dict[tuple[str, Any, Any], np.ndarray]]:
    """Matched-pair effects of ``keys`` on ``metric`` over the finished runs.

    Returns the table (``EFFECT_COLUMNS``) and each row's pair differences, keyed by
    (key, from, to). A pair is two configurations identical in every other key; its
    difference is to - from: the mean of the differences within each seed both have, or the
    difference of their means where they share no seed."""
    table = seed_table(df, metric)
    done = df[(df["status"] == "done") & df[metric].notna()].drop_duplicates("config id").set_index("config id")
    columns = _config_columns(done)
    rng = np.random.default_rng(seed)
    rows, diffs = [], {}
    for key in keys:
        if key not in done or done[key].nunique(dropna=True) < 2:
            continue
        others = [c for c in columns if c != key]
        sub = done[done[key].notna()]
        frame = sub[others].astype(object).where(sub[others].notna(), None)
        groups: dict[tuple, dict[Any, str]] = {}
        for cid, rest, value in zip(sub.index, map(tuple, frame.itertuples(index=False)), sub[key]):
            groups.setdefault(rest, {})[_plain(value)] = cid
        values = [_plain(v) for v in sub[key].dropna().unique()]
        for lo, hi in _adjacent(values):
            d = []
            for members in groups.values():
                if lo in members and hi in members:
                    a, b = table.loc[members[lo]].dropna(), table.loc[members[hi]].dropna()
                    shared = a.index.intersection(b.index)
                    d.append(float((b[shared] - a[shared]).mean()) if len(shared) else float(b.mean() - a.mean()))
            if not d:
                continue
            arr = np.asarray(d)
            if len(arr) >= 2:
                boot = np.median(arr[rng.integers(0, len(arr), (n_boot, len(arr)))], axis=1)
                ci = (float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5)))
            else:
                ci = (math.nan, math.nan)
            rows.append({"hyperparameter": key, "from": lo, "to": hi, "pairs": len(arr),
                         "median difference": float(np.median(arr)), "ci low": ci[0], "ci high": ci[1],
                         "share improved": float((arr < 0).mean())})
            diffs[(key, lo, hi)] = arr
    return pd.DataFrame(rows, columns=EFFECT_COLUMNS), diffs


def value_means(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, count and best of the metric per value of each hyperparameter (over runs)."""
    data = df[df[metric].notna()]
    rows = []
    for key in hyperparameters(df):
        for value, group in data.groupby(key):
            rows.append({"hyperparameter": key, "value": value, "runs": len(group),
                         "mean": group[metric].mean(), "best": group[metric].min()})
    return pd.DataFrame(rows)


def linear_model(df: pd.DataFrame, metric: str, seed: int = 0) -> dict[str, Any] | None:
    """Least squares of the metric on the standardised hyperparameters, fitted on four fifths
    of the runs, with R² on the held-out fifth (as the original study reported)."""
    data = df[df[metric].notna()]
    keys = [k for k in hyperparameters(df) if data[k].nunique() > 1] if len(data) else []
    if len(data) < 10 or not keys:
        return None
    columns = {}
    for k in keys:
        if k == "cell":  # categorical: one indicator per cell kind but the first
            for c in sorted(data[k].unique())[1:]:
                columns[f"cell={c}"] = (data[k] == c).astype(float)
        else:  # a switch a cell does not have counts as off
            columns[k] = data[k].astype(float).fillna(0.0)
    frame = pd.DataFrame(columns)
    frame = frame.loc[:, frame.std() > 0]
    keys = list(frame.columns)
    if not keys:
        return None
    X = frame.to_numpy()
    X = (X - X.mean(0)) / X.std(0)
    y = data[metric].to_numpy(dtype=float)
    idx = np.random.default_rng(seed).permutation(len(y))
    n_test = max(2, len(y) // 5)
    test, fit = idx[:n_test], idx[n_test:]
    A = np.column_stack([np.ones(len(fit)), X[fit]])
    coef, *_ = np.linalg.lstsq(A, y[fit], rcond=None)
    pred = np.column_stack([np.ones(len(test)), X[test]]) @ coef
    ss_res = float(((y[test] - pred) ** 2).sum())
    ss_tot = float(((y[test] - y[test].mean()) ** 2).sum())
    return {"keys": keys, "intercept": float(coef[0]), "coefficients": dict(zip(keys, map(float, coef[1:]))),
            "r2 held out": 1 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
            "fit runs": len(fit), "held-out runs": len(test)}
