"""Replicates, seed-blocked comparisons and which configurations could be the best (DESIGN.md,
"Replicates and effects"). No torch.

Runs that differ only in their seed are one configuration with n runs (grouped by ``config id``,
the id of the configuration without its seed). With our seeding a seed fixes the data order,
so runs of different configurations with the same seed share part of their noise; comparisons
are therefore made on differences *within* a seed (blocking), which removes that shared part.
Two runs of one configuration with one seed are one unit (averaged), never two. Runs whose seed
did not fix their data (the original study's ``training`` index) are unblocked replicates.

- :func:`summarise`: per configuration, ``runs`` (independent runs) and
  ``<metric> mean|std|ci low|ci high`` (a 95 % t interval of the mean over its runs).
- :func:`compare`: configuration b minus a on the seeds both have (a paired t interval);
  without shared seeds, an unpaired (Welch) interval.
- :func:`could_be_best`: the configurations that cannot be told apart from the best with the
  family-wise error held at 5 % (multiple comparisons with the best, Tukey's studentized range
  as the critical value, on the seeds the configurations share).
- :func:`duplicates`: runs of one configuration and seed beyond the first, with their files.

The matched-pair effects, interactions and variance shares are :mod:`gatedrnn.analysis.effects`'.
"""

from __future__ import annotations

import collections
import functools
import math
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import special as sps_special
from scipy import stats as sps

from ..spec.config import ALL_CELL_KEYS, SWITCHES
from .results import hyperparameters

__all__ = ["value_means", "linear_model", "t_quantile", "mean_interval", "summarise", "rank_configurations",
           "seed_table", "blocks", "compare", "could_be_best", "duplicates", "ranking_metric", "seed_noise",
           "config_columns", "CONFIG_COLUMNS"]

# what makes a configuration, beside its seed (present columns only are used)
CONFIG_COLUMNS = [*SWITCHES, "n_layers", "state_size", "cell", "bptt", "task", "lr", "input_init", *ALL_CELL_KEYS]


def t_quantile(df: float, level: float = 0.95) -> float:
    """The two-sided ``level`` quantile of Student's t with ``df`` degrees of freedom (scipy)."""
    return float(sps.t.ppf(0.5 + level / 2, df)) if df >= 1 else float("nan")


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
    """``val loss`` where any finished run has it (a configuration without it is left out of that
    ranking, and named by the analysis), ``min loss`` only where none has (the original's files)."""
    done = df[df["status"] == "done"] if "status" in df else df
    return "val loss" if "val loss" in done and done["val loss"].notna().any() else "min loss"


def config_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in CONFIG_COLUMNS if c in df]


def _blocked(df: pd.DataFrame) -> bool:
    """Whether the runs' seeds fixed their data (our results; not the original study's)."""
    return bool(len(df)) and "seed blocks" in df and bool(df["seed blocks"].fillna(False).astype(bool).all())


def summarise(df: pd.DataFrame, metrics: Iterable[str]) -> pd.DataFrame:
    """One row per configuration (``config id``) over its finished runs, in order of first
    appearance: the configuration's keys, ``runs`` (independent runs: duplicates of one seed
    count once), ``seeds`` and ``<metric> mean|std|ci low|ci high`` for each metric (the 95 % t
    interval of :func:`mean_interval`, computed for all configurations at once)."""
    done = df[df["status"] == "done"]
    if not len(done):
        return pd.DataFrame()
    blocked = _blocked(done)
    by = done.groupby("config id", sort=False)
    out = by[config_columns(df)].first() if config_columns(df) else pd.DataFrame(index=by.size().index)
    out.insert(len(out.columns), "config id", out.index)
    out["runs"] = by["seed"].nunique() if blocked else by.size()
    out["seeds"] = (by["seed"].agg(lambda v: " ".join(str(int(x)) for x in sorted(v.dropna().unique())))
                    if "seed" in done else "")
    for m in metrics:
        if m not in done:
            continue
        values = done[["config id", "seed", m] if blocked else ["config id", m]]
        values = values[np.isfinite(values[m].astype(float))]
        if blocked:  # one unit per seed: its runs averaged
            values = values.groupby(["config id", "seed"], sort=False)[m].mean().reset_index()
        g = values.groupby("config id", sort=False)[m]
        n, mean, std = g.count(), g.mean(), g.std(ddof=1)
        half = pd.Series(sps.t.ppf(0.975, np.maximum(n - 1, 1)), index=n.index) * std / np.sqrt(n)
        half[n < 2] = np.nan
        std[n < 2] = np.nan
        out[f"{m} mean"], out[f"{m} std"] = mean, std
        out[f"{m} ci low"], out[f"{m} ci high"] = mean - half, mean + half
    return out.reset_index(drop=True)


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
    rows, row_of = np.unique(done["config id"].to_numpy(str), return_inverse=True)
    cols, col_of = np.unique(seeds.to_numpy(), return_inverse=True)
    total, count = np.zeros((len(rows), len(cols))), np.zeros((len(rows), len(cols)))
    np.add.at(total, (row_of, col_of), done[metric].to_numpy(float))
    np.add.at(count, (row_of, col_of), 1)
    with np.errstate(invalid="ignore"):
        mean = total / count  # duplicates of one seed averaged; NaN where none
    return pd.DataFrame(mean, index=pd.Index(rows, name="config id"), columns=pd.Index(cols, name="_seed"))


def blocks(done: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, bool]:
    """:func:`seed_table` of the finished runs, and whether its columns are blocks (the seeds
    fixed the runs' data) or merely run indices (the original study's unblocked replicates)."""
    return seed_table(done, metric), _blocked(done)


def compare(a: pd.Series, b: pd.Series) -> dict[str, Any]:
    """b minus a, each a Series of a configuration's metric by seed. On the seeds both have
    where they share any (the mean paired difference; its t interval from two shared seeds on);
    otherwise Welch's interval of the difference of the means."""
    a, b = a.dropna(), b.dropna()
    shared = a.index.intersection(b.index)
    if len(shared):
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


@functools.lru_cache(maxsize=4096)
def _range_quantile(p: float, k: int, dof: float) -> float:
    """The ``p`` quantile of Tukey's studentized range of ``k`` means with ``dof`` degrees of
    freedom (scipy; a numerical integral of a fraction of a second, so kept)."""
    return float(sps.studentized_range.ppf(p, k, dof))


def _dof_step(dof: float) -> float:
    """Degrees of freedom rounded down to a coarse grid (a smaller dof gives a larger quantile, so
    rounding down is conservative), so that a few quantiles serve every pair."""
    if dof >= 1000:
        return 1000.0
    step = 0.25 if dof < 10 else (1.0 if dof < 100 else 10.0)
    return max(1.0, math.floor(dof / step) * step)


def moderated_variances(variances: np.ndarray, dofs: np.ndarray, pooled_dof: float | None = None
                        ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Each configuration's own noise variance, moderated towards the typical one (empirical
    Bayes, Smyth 2004): the variances ``variances`` on ``dofs`` degrees of freedom are treated as
    draws from a scaled inverse chi-square prior whose scale ``s0²`` and degrees of freedom ``d0``
    are estimated from all of them by moments of their logarithms. Each posterior variance
    ``(d0 s0² + d s²) / (d0 + d)`` has ``d0 + d`` degrees of freedom. Where the variances do not
    spread more than their sampling allows (``d0`` infinite), every configuration gets the pooled
    variance on the pooled degrees of freedom: one noise level for all, as before. A
    configuration without its own variance (``d = 0``) gets the prior. ``pooled_dof``: the pooled
    variance's degrees of freedom where it is less than the sum of ``dofs`` (variances of residuals
    that share estimated effects); no posterior claims more."""
    ok = (dofs > 0) & np.isfinite(variances) & (variances > 0)
    pooled = float((dofs[ok] * variances[ok]).sum() / dofs[ok].sum()) if ok.any() else math.nan
    pooled_dof = float(dofs[ok].sum()) if pooled_dof is None else pooled_dof
    d0 = math.inf
    if ok.sum() >= 3:
        half = dofs[ok] / 2
        e = np.log(variances[ok]) - sps_special.digamma(half) + np.log(half)
        spread = float(e.var(ddof=1) - sps_special.polygamma(1, half).mean())
        if spread > 0:
            d0 = 2 * _inverse_trigamma(spread)
            s0 = math.exp(float(e.mean()) + float(sps_special.digamma(d0 / 2)) - math.log(d0 / 2))
    own = np.where(ok, variances, 0.0)
    if not math.isfinite(d0):
        larger = own > pooled
        return (np.where(larger, own, pooled), np.where(larger, dofs, pooled_dof),
                {"d0": math.inf, "s0": pooled})
    d = np.where(ok, dofs, 0.0)
    posterior = (d0 * s0 + d * own) / (d0 + d)
    larger = own > posterior
    return (np.where(larger, own, posterior), np.where(larger, d, np.minimum(d0 + d, pooled_dof)),
            {"d0": d0, "s0": s0})


def _inverse_trigamma(y: float) -> float:
    """x with trigamma(x) = y (Newton's method on 1/x, as Smyth's limma does)."""
    if y > 1e7:
        return 1 / math.sqrt(y)
    if y < 1e-6:
        return 1 / y
    x = 0.5 + 1 / y
    for _ in range(50):
        tri = float(sps_special.polygamma(1, x))
        step = tri * (1 - tri / y) / float(sps_special.polygamma(2, x))
        x += step
        if -step / x < 1e-8:
            break
    return x


def could_be_best(df: pd.DataFrame, metric: str, level: float = 0.05) -> dict[str, Any] | None:
    """The configurations that cannot be told apart from the best, with the probability of
    excluding any configuration whose true mean is the lowest held to ``level`` (family-wise),
    each configuration with its own noise.

    Seed-blocked runs: the seeds are those of the most common seed set of two or more seeds; each
    configuration is judged on the seeds of that set it has (its values less each seed's shared
    effect, estimated from the configurations that have them all); a configuration with none of
    them is not judged and named (``not judged``). Unblocked replicates (the original study's)
    are compared by their plain values. Each configuration's noise variance comes from its own
    values, moderated towards the typical one (:func:`moderated_variances`): one noise level for
    all where the variances agree, each its own where they do not. Configuration i could be best
    unless some j lies below it by more than ``q(k, ν) / √2 · se``, ``se`` the standard error of
    their difference from the two variances and ``q`` the 1 - level quantile of Tukey's
    studentized range of the k judged means on the pair's Welch degrees of freedom ν (the
    Games-Howell comparison): any truly best configuration is left out only when a pair's error
    exceeds what the range of k errors allows.

    Returns None (cannot tell) with fewer than two configurations or no noise to judge by; else
    ``table`` (config id, ``mean``, ``runs``, ``gap`` to the best, ``margin``, ``could be best``),
    ``judged``, ``not judged``, ``seeds``, ``sigma`` (the typical noise sd), ``dof``, ``q`` (at the
    typical dof) and ``prior dof`` (infinite: one noise level for all)."""
    done = df[(df["status"] == "done") & df[metric].notna()]
    if not len(done):
        return None
    groups, seeds, unjudged = _judged_values(done, metric)
    k = len(groups)
    if k < 2:
        return None
    ids = list(groups)
    n = np.array([len(groups[c]) for c in ids], float)
    means = pd.Series([float(groups[c].mean()) for c in ids], index=ids)
    # blocked: less the seed effects estimated from all k, a row's squares sum to (1 - 1/k) σ² χ²(n - 1)
    scale = (1 - 1 / k) if seeds else 1.0
    raw = np.array([groups[c].var(ddof=1) / scale if len(groups[c]) > 1 else math.nan for c in ids])
    dofs = np.maximum(n - 1, 0)
    var, nu, prior = moderated_variances(raw, dofs, pooled_dof=float(dofs.sum()) * scale)
    if not np.isfinite(var).all() or not (nu > 0).all():
        return None
    a = var / n  # each mean's squared standard error
    m = means.to_numpy()
    best = int(m.argmin())

    def allowed(i: int, j: int) -> float:
        se = math.sqrt(a[i] + a[j])
        # Welch's dof, never more than either variance's own (moderated variances share their prior)
        welch = (a[i] + a[j]) ** 2 / (a[i] ** 2 / nu[i] + a[j] ** 2 / nu[j]) if se > 0 else float(nu[i])
        return _range_quantile(1 - level, k, _dof_step(min(welch, nu[i], nu[j]))) / math.sqrt(2) * se

    keep = np.ones(k, bool)
    margin = np.array([allowed(i, best) if i != best else 0.0 for i in range(k)])
    for i in range(k):
        keep[i] = all(m[i] - m[j] <= allowed(i, j) for j in np.flatnonzero(m < m[i]))
    typical = float(np.median(nu))
    out = pd.DataFrame({"config id": ids, "mean": m, "runs": n.astype(int), "gap": m - m.min(), "margin": margin,
                        "could be best": keep})
    return {"table": out.sort_values("mean", kind="stable").reset_index(drop=True), "judged": k,
            "not judged": unjudged, "seeds": [int(s) for s in seeds], "sigma": math.sqrt(float(np.median(var))),
            "dof": typical, "q": _range_quantile(1 - level, k, _dof_step(typical)), "prior dof": prior["d0"]}


def _judged_values(done: pd.DataFrame, metric: str) -> tuple[dict[str, np.ndarray], tuple, list[str]]:
    """Each judged configuration's values: seed-blocked, on the seeds of the most common set of
    two or more that it has, less each seed's shared effect; unblocked, its runs. Also that seed
    set and the configurations not judged (none of its seeds)."""
    if not _blocked(done):
        return {cid: g[metric].to_numpy(float) for cid, g in done.groupby("config id")}, (), []
    table = seed_table(done, metric)
    present = table.notna().to_numpy()
    sets = collections.Counter(tuple(table.columns[row]) for row in present if row.sum() >= 2)
    if not sets:
        return {}, (), []
    seeds = max(sets, key=lambda s: (sets[s], len(s)))
    values = table[list(seeds)]
    complete = values.dropna()
    effect = complete.mean(axis=0) - complete.to_numpy().mean()  # each seed's shared effect
    adjusted = values - effect
    groups = {cid: row.dropna().to_numpy(float) for cid, row in adjusted.iterrows() if row.notna().any()}
    return groups, seeds, [cid for cid in table.index if cid not in groups]


def duplicates(df: pd.DataFrame) -> pd.DataFrame:
    """Runs of one configuration with one seed, where seeds fix the data (they are one unit,
    not independent replicates): config id, seed, runs, files."""
    columns = ["config id", "seed", "runs", "files"]
    if "seed" not in df or not len(df):
        return pd.DataFrame(columns=columns)
    done = df[(df["status"] == "done") & df["seed"].notna()]
    if "seed blocks" in done:
        done = done[done["seed blocks"].fillna(False).astype(bool)]
    rows = [{"config id": cid, "seed": int(seed), "runs": len(g), "files": " ".join(sorted(map(str, g["file"])))}
            for (cid, seed), g in done.groupby(["config id", "seed"]) if len(g) > 1]
    return pd.DataFrame(rows, columns=columns)


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
    """Least squares of the metric on the standardised hyperparameters, fitted on the runs of
    four fifths of the configurations, with R² on the runs of the held-out fifth (as the original
    study reported; split by configuration, so that no configuration's replicates sit on both
    sides)."""
    data = df[df[metric].notna()]
    keys = [k for k in hyperparameters(df) if data[k].nunique() > 1] if len(data) else []
    if len(data) < 10 or not keys:
        return None
    columns = {}
    for k in keys:
        if k in ("cell", "input_init"):  # categorical: one indicator per value but the first
            for c in sorted(data[k].dropna().unique())[1:]:
                columns[f"{k}={c}"] = (data[k] == c).astype(float)
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
    configs = data["config id"].unique()
    held = set(np.random.default_rng(seed).permutation(configs)[:max(2, len(configs) // 5)])
    in_test = data["config id"].isin(held).to_numpy()
    test, fit = np.flatnonzero(in_test), np.flatnonzero(~in_test)
    A = np.column_stack([np.ones(len(fit)), X[fit]])
    coef, *_ = np.linalg.lstsq(A, y[fit], rcond=None)
    pred = np.column_stack([np.ones(len(test)), X[test]]) @ coef
    ss_res = float(((y[test] - pred) ** 2).sum())
    ss_tot = float(((y[test] - y[test].mean()) ** 2).sum())
    return {"keys": keys, "intercept": float(coef[0]), "coefficients": dict(zip(keys, map(float, coef[1:]))),
            "r2 held out": 1 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
            "fit runs": len(fit), "held-out runs": len(test), "held-out configurations": len(held)}
