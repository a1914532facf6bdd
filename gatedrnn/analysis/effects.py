"""What each swept key does: matched-pair effects, two-way interactions, and the share of the
between-configuration variance each explains (DESIGN.md, "Replicates and effects"). No torch.

The grid is a (nearly) full factorial run with common random numbers: with our seeding a seed
fixes the data order, so runs of different configurations with the same seed share part of their
noise. Every comparison here is therefore made within the seeds two configurations share
(blocking); runs whose seed did not fix their data (the original study's ``training`` index) are
unblocked replicates, compared by their means.

- :func:`effects`: for each swept key and each step of its values (from -> to), the pairs of
  configurations identical except for that key. A pair's difference is to − from (the mean of
  its within-seed differences). Over the pairs: the median with an exact order-statistic 95 %
  interval (none exists below 6 pairs), the mean with a 95 % t interval, the share improved,
  the number of contexts (settings of the other keys) and ``heterogeneous``: an F test at 5 %
  of whether the pair differences vary between contexts more than one common effect allows
  (against seed-to-seed noise where there are replicates, against the higher-order residual of
  the two-way factorial model where there are not).
- :func:`interactions`: every two-way interaction, the difference of differences averaged over
  the settings of the other keys, with a 95 % t interval over those settings.
- :func:`variance_shares`: the type-II sum of squares of each main effect and each two-way
  interaction as a share of the between-configuration variance of the configurations' seed-
  blocked means, with percentile intervals from resampling seeds where there are replicates.
- :func:`explain`: a flagged key's pair differences in words ("helps when …, hurts when …").

The quantiles come from scipy; the sums of squares are least-squares projections computed here
because the seed resampling refits one design hundreds of times (tests check them against
statsmodels' ``anova_lm``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from .stats import blocks, config_columns, mean_interval

__all__ = ["effects", "interactions", "variance_shares", "explain", "median_interval", "context_seed_interval", "Cells",
           "EFFECT_COLUMNS",
           "INTERACTION_COLUMNS", "VARIANCE_COLUMNS"]

EFFECT_COLUMNS = ["hyperparameter", "from", "to", "pairs", "median difference", "ci low", "ci high", "share improved",
                  "mean difference", "mean ci low", "mean ci high", "contexts", "heterogeneous"]
INTERACTION_COLUMNS = ["a", "b", "a from", "a to", "b from", "b to", "contexts", "interaction", "ci low", "ci high"]
VARIANCE_COLUMNS = ["term", "df", "share", "ci low", "ci high"]
RESIDUAL_TERM = "residual (higher order, noise)"


def median_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The exact distribution-free interval of a median: order statistics k and n + 1 - k, with
    k the largest for which P(Binomial(n, 1/2) < k) <= (1 - level) / 2. Its coverage is at least
    ``level`` for any continuous distribution; (NaN, NaN) where none exists (n < 6 at 95 %)."""
    x = np.sort(np.asarray(values, dtype=float))
    n = len(x)
    if n == 0:
        return math.nan, math.nan
    k = int(sps.binom.ppf((1 - level) / 2, n, 0.5))  # smallest k with P(B <= k) >= alpha / 2
    if sps.binom.cdf(k, n, 0.5) > (1 - level) / 2:
        k -= 1  # now P(B <= k) <= alpha / 2: the interval [x_(k+1), x_(n-k)] (1-based)
    if k < 0:
        return math.nan, math.nan
    return float(x[k]), float(x[n - 1 - k])


def context_seed_interval(per_seed: Sequence[np.ndarray], means: np.ndarray, level: float = 0.95
                          ) -> tuple[float, float, float]:
    """The mean of a contrast over contexts and seeds, with an interval that allows it to vary
    from context to context *and* from seed to seed: (mean, low, high).

    ``per_seed``: each context's contrast at every seed (NaN where missing; empty where unblocked),
    ``means``: each context's contrast over its seeds. On the contexts that have every seed of
    the most common complete set (two or more seeds), a two-way (context × seed) decomposition:
    the mean's variance ``(MS_context + MS_seed - MS_residual) / (C S)`` (each component's share
    of the mean's variance; at least the larger of the two main mean squares over C S), on
    Satterthwaite's degrees of freedom. A switch whose effect moves with the seed (a data order
    that suits it) then widens the interval, where a t interval over the contexts alone would
    count the contexts as independent. Without two shared seeds, the t interval over the
    contexts' means (:func:`gatedrnn.analysis.stats.mean_interval`)."""
    rows = [p for p in per_seed if len(p)]
    if len(rows) == len(means) and len(rows) >= 2:
        d = np.vstack(rows)
        have = ~np.isnan(d)
        full = have.all(axis=0)
        if full.sum() < 2:  # the seeds most contexts have: drop the contexts that lack one of them
            counts = have.sum(axis=0)
            full = counts >= np.sort(counts)[-2] if len(counts) >= 2 else full
        d = d[:, full]
        d = d[~np.isnan(d).any(axis=1)]
        c, n = d.shape
        if c >= 2 and n >= 2:
            grand = float(d.mean())
            rows_m, cols_m = d.mean(axis=1), d.mean(axis=0)
            ms_a = n * float(((rows_m - grand) ** 2).sum()) / (c - 1)
            ms_b = c * float(((cols_m - grand) ** 2).sum()) / (n - 1)
            resid = d - rows_m[:, None] - cols_m[None, :] + grand
            ms_e = float((resid ** 2).sum()) / ((c - 1) * (n - 1))
            combined = ms_a + ms_b - ms_e
            if combined >= max(ms_a, ms_b):
                top, dof = combined, combined ** 2 / (ms_a ** 2 / (c - 1) + ms_b ** 2 / (n - 1)
                                                      + ms_e ** 2 / ((c - 1) * (n - 1)))
            else:
                top, dof = (ms_a, c - 1) if ms_a >= ms_b else (ms_b, n - 1)
            if top <= 0:
                return grand, grand, grand
            half = float(sps.t.ppf(0.5 + level / 2, dof)) * math.sqrt(top / (c * n))
            return grand, grand - half, grand + half
    mean, _, lo, hi = mean_interval(means)
    return mean, lo, hi


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _steps(values: list) -> list[tuple[Any, Any]]:
    """The comparisons of a key's values: False -> True; a categorical's first (``gated``; for
    ``input_init``, ``normal``, so that its effect is the original study's map against ours
    before it) against each other; numbers in order, each with the next."""
    if all(isinstance(v, (bool, np.bool_)) for v in values):
        return [(False, True)] if set(values) == {False, True} else []
    if all(isinstance(v, str) for v in values):
        first = sorted(values, key=lambda v: (v not in ("gated", "normal"), v))[0]
        return [(first, v) for v in sorted(values) if v != first]
    ordered = sorted(values)
    return list(zip(ordered, ordered[1:]))


@dataclass
class Cells:
    """The finished runs of a sweep as configurations: each one's swept keys (``keys``, indexed by
    config id), its metric by seed (``table``, NaN where it has no run of a seed; duplicate runs of
    one seed averaged, never counted twice), whether seeds block (``blocked``) and each
    configuration's runs (``runs``, what unblocked replicates are compared by)."""
    keys: pd.DataFrame
    table: pd.DataFrame
    blocked: bool
    runs: dict[str, np.ndarray]

    def __post_init__(self):
        self._columns = list(self.keys.columns)
        frame = self.keys.astype(object).where(self.keys.notna(), None)
        self._settings = [(cid, tuple(_plain(v) for v in row)) for cid, row in
                          zip(self.keys.index, frame.itertuples(index=False))]
        self._row = {cid: i for i, cid in enumerate(self.table.index)}
        self._values = self.table.to_numpy(float)
        self._means = {cid: float(np.mean(v)) for cid, v in self.runs.items()}

    @classmethod
    def of(cls, df: pd.DataFrame, metric: str) -> "Cells":
        done = df[(df["status"] == "done") & df[metric].notna()]
        first = done.drop_duplicates("config id").set_index("config id")
        keys = first[[c for c in config_columns(done) if first[c].nunique(dropna=True) > 1]]
        table, blocked = blocks(done, metric)
        ids, which = np.unique(done["config id"].to_numpy(str), return_inverse=True)
        order = np.argsort(which, kind="stable")
        split = np.split(done[metric].to_numpy(float)[order], np.cumsum(np.bincount(which))[:-1])
        return cls(keys, table.reindex(keys.index), blocked, dict(zip(ids, split)))

    def swept(self) -> list[str]:
        return list(self.keys.columns)

    def where(self, fixed: dict[str, Any], exclude: Sequence[str]) -> dict[tuple, str]:
        """Config ids by their setting of the keys not in ``exclude``, among those with ``fixed``."""
        at = [(self._columns.index(k), v) for k, v in fixed.items()]
        others = [i for i, c in enumerate(self._columns) if c not in exclude]
        return {tuple(row[i] for i in others): cid for cid, row in self._settings if all(row[i] == v for i, v in at)}

    def contrast(self, plus: Sequence[str], minus: Sequence[str]) -> tuple[float, np.ndarray]:
        """sum(plus) - sum(minus) of the configurations' values: the mean of the within-seed
        contrasts over the seeds all of them have, and the contrast at every seed of the table
        (NaN where one of them lacks it); or the contrast of their means where they share no seed
        or are unblocked (no per-seed values: an empty array)."""
        if self.blocked:
            rows = self._values[[self._row[c] for c in (*plus, *minus)]]
            per_seed = rows[:len(plus)].sum(axis=0) - rows[len(plus):].sum(axis=0)  # NaN where one lacks it
            if (~np.isnan(per_seed)).any():
                return float(np.nanmean(per_seed)), per_seed
        return sum(self._means[c] for c in plus) - sum(self._means[c] for c in minus), np.empty(0)


# ---------------------------------------------------------------------------- effects
def effects(df: pd.DataFrame, metric: str, keys: Sequence[str] | None = None
            ) -> tuple[pd.DataFrame, dict[tuple[str, Any, Any], pd.DataFrame]]:
    """Matched-pair effects of ``keys`` (default: every swept key) on ``metric`` over the
    finished runs. Returns the table (``EFFECT_COLUMNS``) and, for each row (key, from, to),
    its pairs: the other keys' values (the context) and ``difference``."""
    cells = Cells.of(df, metric)
    swept = cells.swept()
    factorial: list[_Factorial] = []  # built once, where a key needs it
    rows, pairs = [], {}
    for key in keys if keys is not None else swept:
        if key not in swept:
            continue
        for lo, hi in _steps([_plain(v) for v in cells.keys[key].dropna().unique()]):
            frame, ids, per_seed = _pairs(cells, key, lo, hi)
            if not len(frame):
                continue
            d = frame["difference"].to_numpy(float)
            mean, mlo, mhi = context_seed_interval(per_seed, d)
            clo, chi = median_interval(d)
            p = _p_against_seeds(per_seed) if cells.blocked else _p_against_runs(cells, ids, d)
            if p is None and len(d) >= 2:
                factorial = factorial or [_Factorial.of(cells)]
                p = factorial[0].p_interactions(key)
            rows.append({"hyperparameter": key, "from": lo, "to": hi, "pairs": len(d),
                         "median difference": float(np.median(d)), "ci low": clo, "ci high": chi,
                         "share improved": float((d < 0).mean()), "mean difference": mean, "mean ci low": mlo,
                         "mean ci high": mhi,
                         "contexts": len(set(map(tuple, frame.drop(columns="difference").itertuples(index=False)))),
                         "heterogeneous": None if p is None else bool(p < 0.05)})
            pairs[(key, lo, hi)] = frame
    return pd.DataFrame(rows, columns=EFFECT_COLUMNS), pairs


def _pairs(cells: Cells, key: str, lo: Any, hi: Any
           ) -> tuple[pd.DataFrame, list[tuple[str, str]], list[np.ndarray]]:
    """One step of ``key``: its pairs' contexts and differences, their (from, to) config ids and
    each pair's per-seed differences (empty where unblocked or sharing no seed)."""
    low, high = cells.where({key: lo}, [key]), cells.where({key: hi}, [key])
    others = [c for c in cells.swept() if c != key]
    rows, ids, per_seed = [], [], []
    for context, a in low.items():
        if context in high:
            diff, seeds = cells.contrast([high[context]], [a])
            rows.append({**dict(zip(others, context)), "difference": diff})
            ids.append((a, high[context]))
            per_seed.append(seeds)
    return pd.DataFrame(rows, columns=[*others, "difference"]), ids, per_seed


def _p_against_seeds(per_seed: list[np.ndarray]) -> float | None:
    """One-way ANOVA of the per-seed pair differences with the pairs as groups: do the pairs'
    mean differences differ by more than their seed-to-seed variation allows? None without
    replicates (no seed-to-seed variation to judge by)."""
    groups = [g[~np.isnan(g)] for g in per_seed if len(g)]
    groups = [g for g in groups if len(g)]
    error_df = sum(len(g) - 1 for g in groups)
    if len(groups) < 2 or error_df < 1:
        return None
    within = sum(float(((g - g.mean()) ** 2).sum()) for g in groups) / error_df
    n = np.array([len(g) for g in groups], float)
    means = np.array([g.mean() for g in groups])
    between = float((n * (means - (n * means).sum() / n.sum()) ** 2).sum()) / (len(groups) - 1)
    return float(sps.f.sf(between / within, len(groups) - 1, error_df)) if within > 0 else None


def _p_against_runs(cells: Cells, ids: list[tuple[str, str]], d: np.ndarray) -> float | None:
    """Unblocked replicates: the pair differences (differences of means) weighted by their
    precision, against the pooled within-configuration variance of the runs."""
    used = {c for pair in ids for c in pair}
    dof = sum(len(cells.runs[c]) - 1 for c in used)
    if len(d) < 2 or dof < 1:
        return None
    pooled = sum(float(((cells.runs[c] - cells.runs[c].mean()) ** 2).sum()) for c in used) / dof
    if pooled <= 0:
        return None
    w = np.array([1.0 / (1.0 / len(cells.runs[a]) + 1.0 / len(cells.runs[b])) for a, b in ids])
    centre = float((w * d).sum() / w.sum())
    statistic = float((w * (d - centre) ** 2).sum()) / (len(d) - 1) / pooled
    return float(sps.f.sf(statistic, len(d) - 1, dof))


def explain(key: str, pairs: pd.DataFrame, min_contexts: int = 2) -> str | None:
    """A key's pair differences in words: the other key whose values split them most, and the
    mean difference at each of its values ("helps when use_old_state=True (−0.21, 24 contexts),
    hurts when use_old_state=False (+0.12, 24)"). None when no other key splits them."""
    best, spread = None, 0.0
    for other in pairs.columns.drop("difference"):
        means = pairs.groupby(other, dropna=True)["difference"].agg(["mean", "size"])
        means = means[means["size"] >= min_contexts]
        if len(means) >= 2 and means["mean"].max() - means["mean"].min() > spread:
            best, spread = (other, means.sort_values("mean")), float(means["mean"].max() - means["mean"].min())
    if best is None:
        return None
    other, means = best
    parts = [f"{other}={_plain(v)} ({m:+.4f}, {int(n)} contexts)" for v, (m, n) in means.iterrows()]
    lo, hi = means["mean"].iloc[0], means["mean"].iloc[-1]
    if lo < 0 < hi:
        return f"{key} helps when {parts[0]}, hurts when {parts[-1]}"
    if hi <= 0:
        return f"{key} helps most when {parts[0]}, least when {parts[-1]}"
    return f"{key} hurts least when {parts[0]}, most when {parts[-1]}"


# ---------------------------------------------------------------------------- interactions
def interactions(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Every two-way interaction of the swept keys, one row per pair of steps (a from -> to,
    b from -> to): the difference of differences (a's effect where b is at ``b to`` minus its
    effect where b is at ``b from``; within seeds), averaged over the settings of the other keys
    where all four configurations exist, with a 95 % interval over those settings and the seeds
    (:func:`context_seed_interval`)."""
    cells = Cells.of(df, metric)
    swept, rows = cells.swept(), []
    for a, b in itertools.combinations(swept, 2):
        for a0, a1 in _steps([_plain(v) for v in cells.keys[a].dropna().unique()]):
            for b0, b1 in _steps([_plain(v) for v in cells.keys[b].dropna().unique()]):
                corners = [cells.where({a: x, b: y}, [a, b]) for x, y in ((a1, b1), (a0, b0), (a0, b1), (a1, b0))]
                shared = set(corners[0]).intersection(*corners[1:])
                both = [cells.contrast([corners[0][c], corners[1][c]], [corners[2][c], corners[3][c]])
                        for c in sorted(shared, key=repr)]
                if not both:
                    continue
                dd = [v for v, _ in both]
                mean, lo, hi = context_seed_interval([per for _, per in both], np.asarray(dd, float))
                rows.append({"a": a, "b": b, "a from": a0, "a to": a1, "b from": b0, "b to": b1,
                             "contexts": len(dd), "interaction": mean, "ci low": lo, "ci high": hi})
    return pd.DataFrame(rows, columns=INTERACTION_COLUMNS)


# ---------------------------------------------------------------------------- variance
def variance_shares(df: pd.DataFrame, metric: str, n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """The share of the between-configuration variance of ``metric`` explained by each main
    effect and each two-way interaction of the swept keys (type-II sums of squares of the
    configurations' means over the seeds they all share), and what is left (higher-order
    interactions and noise). Intervals: 2.5 and 97.5 percentiles over ``n_boot`` resamplings of
    those seeds (with replacement), where there are two or more; NaN otherwise."""
    cells = Cells.of(df, metric)
    if len(cells.keys) < 3 or not cells.swept():
        return pd.DataFrame(columns=VARIANCE_COLUMNS)
    fac = _Factorial.of(cells)
    Y = fac.y[:, None]
    if fac.values.shape[1] >= 2:
        rng = np.random.default_rng(seed)
        pick = rng.integers(0, fac.values.shape[1], (n_boot, fac.values.shape[1]))
        Y = np.column_stack([fac.y, *(fac.values[:, p].mean(axis=1) for p in pick)])
    shares, dfs = fac.shares(Y)
    rows = []
    for term, s in shares.items():
        boot = s[1:]
        lo, hi = (float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))) if len(boot) else (math.nan,) * 2
        rows.append({"term": term, "df": dfs[term], "share": float(s[0]), "ci low": lo, "ci high": hi})
    out = pd.DataFrame(rows, columns=VARIANCE_COLUMNS)
    residual = out["term"] == RESIDUAL_TERM
    return pd.concat([out[~residual].sort_values("share", ascending=False, kind="stable"), out[residual]],
                     ignore_index=True)


class _Factorial:
    """The two-way factorial model of the configurations' values: each swept key as a term
    (one indicator per value but the first), each pair of keys as the products of their
    indicators. ``values``: the configurations (rows) by the seeds they all share (columns; the
    configurations' means where they share none or are unblocked), ``y`` their row means."""

    def __init__(self, keys: pd.DataFrame, values: np.ndarray):
        self.values, self.y = values, values.mean(axis=1)
        main = {}
        for k in keys.columns:
            levels = sorted(keys[k].map(_plain).dropna().unique(), key=repr)
            main[k] = np.column_stack([(keys[k].map(_plain) == v).to_numpy(float) for v in levels[1:]])
        inter = {f"{a} × {b}": np.column_stack([main[a][:, [i]] * main[b][:, [j]] for i in range(main[a].shape[1])
                                               for j in range(main[b].shape[1])])
                 for a, b in itertools.combinations(keys.columns, 2)}
        self.terms = {**main, **inter}
        self.parts = {t: set(t.split(" × ")) for t in self.terms}

    @classmethod
    def of(cls, cells: Cells) -> "_Factorial":
        table = cells.table
        if cells.blocked:
            counts = table.notna().sum(axis=0)
            full = table.columns[counts == counts.max()] if len(table.columns) else table.columns
            complete = table[full].dropna()
            if len(complete) >= 0.5 * len(table) and len(full):
                return cls(cells.keys.loc[complete.index], complete.to_numpy(float))
        means = np.array([cells.runs[c].mean() for c in cells.keys.index])[:, None]
        return cls(cells.keys, means)

    def _fit(self, terms: Sequence[str], Y: np.ndarray) -> tuple[np.ndarray, int]:
        X = np.column_stack([np.ones(len(Y)), *(self.terms[t] for t in terms)])
        coef, _, rank, _ = np.linalg.lstsq(X, Y, rcond=None)
        return ((Y - X @ coef) ** 2).sum(axis=0), int(rank)

    def shares(self, Y: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """Each estimable term's type-II sum of squares as a share of the total, for every
        column of ``Y``; the residual's share last."""
        total = ((Y - Y.mean(axis=0)) ** 2).sum(axis=0)
        total = np.where(total > 0, total, np.nan)
        names = list(self.terms)
        shares, dfs = {}, {}
        for t in names:
            base = [u for u in names if not self.parts[t] <= self.parts[u]]
            rss_base, r_base = self._fit(base, Y)
            rss_with, r_with = self._fit([*base, t], Y)
            if r_with > r_base:  # a term the grid cannot separate from the others is not listed
                shares[t], dfs[t] = (rss_base - rss_with) / total, r_with - r_base
        rss_full, r_full = self._fit(names, Y)
        shares[RESIDUAL_TERM], dfs[RESIDUAL_TERM] = rss_full / total, len(Y) - r_full
        return shares, dfs

    def p_interactions(self, key: str) -> float | None:
        """The F test of every two-way interaction with ``key`` together, against the residual of
        the full two-way model (the higher-order interactions); None where that has no degree of
        freedom or ``key`` has no estimable interaction."""
        names = list(self.terms)
        reduced = [t for t in names if not (key in self.parts[t] and len(self.parts[t]) == 2)]
        Y = self.y[:, None]
        rss_red, r_red = self._fit(reduced, Y)
        rss_full, r_full = self._fit(names, Y)
        df1, df2 = r_full - r_red, len(Y) - r_full
        if df1 < 1 or df2 < 1 or rss_full[0] <= 0:
            return None
        return float(sps.f.sf(((rss_red[0] - rss_full[0]) / df1) / (rss_full[0] / df2), df1, df2))
