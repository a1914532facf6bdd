"""The sweep's plots and summary: what it found, and how far along it is.

``examine(results_dir, out_dir, ...)`` writes
  results_01_all.png                              loss curves against training step (a configuration
                                                  with replicates: its mean curve and a band)
  results_01_all_hyperparameters.png              the metric by each hyperparameter's value, and
                                                  each key's matched-pair effect with its interval
  filtered_results_01_loss_below_<threshold>.png  the same, for the runs below the threshold
  summary.csv                                     one row per configuration: runs, mean, std, 95 % interval
  runs.csv                                        one row per run
  effects.csv                                     matched-pair effects per swept key (gatedrnn.stats)
  summary.md                                      status, how sure the ranking is, seed noise against
                                                  spread, effects, reference entropies
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; works without a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ._atomic import atomic_write, atomic_write_bytes, atomic_write_json  # noqa: E402
from .config import ALL_TASK_KEYS, CONFIG_KEYS, EXTRA_KEYS, SWITCHES, RNNConfig  # noqa: E402
from .data import BUILTIN, DataError, load_corpus, ngram_cross_entropies  # noqa: E402
from .folder import ResultsFolder  # noqa: E402
from .grid import ConfigFileError, read_configs  # noqa: E402
from .queue import sweep_status  # noqa: E402
from .results import config_of, load  # noqa: E402
from .stats import (EFFECT_COLUMNS, effects as matched_effects, ranking_metric, seed_noise,  # noqa: E402
                    seed_table, summarise, ties_with_best)

__all__ = ["examine", "Report", "hyperparameters", "plot_curves", "plot_hyperparameters",
           "value_means", "linear_model", "reference_entropies", "filtered_name", "METRICS"]

METRICS = ("min loss", "val loss")
TASK_METRICS = ("cross-entropy", "accuracy", "recall accuracy", "mse", "nrmse")  # gatedrnn.tasks
SUMMARY_METRICS = ("val loss", "val bpb", "min loss", "convergence step", "inference ms per step (batch 1)",
                   "inference ms per step (training batch)")
CURVES_PNG = "results_01_all.png"
HYPER_PNG = "results_01_all_hyperparameters.png"
NGRAM_NAMES = {1: "unigram", 2: "bigram", 3: "trigram"}


def filtered_name(threshold: float) -> str:
    return f"filtered_results_01_loss_below_{threshold:g}.png"


def label(row: Any) -> str:
    """A compact label: the switches' letters (I F O S N P R, '.' when off), depth, size."""
    try:
        cfg = RNNConfig.from_dict(config_of(row))
    except (TypeError, ValueError, KeyError):
        return str(row.get("id", "?"))[:12]
    text = cfg.short()
    if row.get("seed swept") is True and pd.notna(row.get("seed")):
        text += f" s{int(row['seed'])}"
    return text


def hyperparameters(df: pd.DataFrame) -> list[str]:
    """The seven switches, n_layers, state_size, and any swept extra key (seed, cell, bptt) with
    several values."""
    keys = list(CONFIG_KEYS)
    for key in ("cell", "bptt"):
        if key in df and df[key].nunique(dropna=True) > 1:
            keys.append(key)
    swept = df[df["seed swept"] == True] if "seed swept" in df else df.iloc[:0]  # noqa: E712
    for key in (k for k in EXTRA_KEYS if k != "task"):  # tasks are analysed one at a time
        if key != "seed" and key in swept and swept[key].nunique(dropna=True) > 1 and key not in keys:
            keys.append(key)
    return keys


def _steps_axis(row: pd.Series) -> np.ndarray:
    n = len(row["loss"])
    every = row.get("log every")
    if every is None or (isinstance(every, float) and math.isnan(every)):
        steps = row.get("training steps")
        every = steps / n if steps and n and not pd.isna(steps) else 50
    start = row.get("curve start")  # a memory task's curve starts at its first log point after a target
    if start is None or (isinstance(start, float) and math.isnan(start)):
        start = every
    return float(start) + np.arange(n) * float(every)


# ---------------------------------------------------------------------------- plots
def _mean_curve(group: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps, mean and std of a configuration's curves (cut to the shortest)."""
    curves = [np.asarray([np.nan if v is None else v for v in c], dtype=float) for c in group["loss"]]
    n = min(len(c) for c in curves)
    stack = np.stack([c[:n] for c in curves])
    std = stack.std(axis=0, ddof=1) if len(stack) > 1 else np.zeros(n)
    return _steps_axis(group.iloc[0])[:n], stack.mean(axis=0), std


def plot_curves(df: pd.DataFrame, metric: str, threshold: float | None, references: dict[str, float] | None = None,
                highlight: int = 10, title: str = "") -> plt.Figure:
    """Every configuration's moving-average loss against training step: one line per run, or
    for a configuration with replicates its mean curve with a band of one standard deviation
    across seeds. The best ``highlight`` configurations (by mean ``metric`` over finished runs)
    in colour with a legend, the rest in grey; the threshold and reference lines."""
    fig, ax = plt.subplots(figsize=(13, 7), layout="constrained")
    runs = df[df["loss"].map(lambda v: isinstance(v, list) and len(v) > 0)]
    # only finished runs are ranked: a diverged run's min loss is from before it diverged
    done = runs[(runs["status"] == "done") & runs[metric].notna()]
    order = done.groupby("config id", sort=False)[metric].mean().sort_values(kind="stable")
    best_ids = list(order.index[:highlight])
    groups = {cid: g for cid, g in runs.groupby("config id", sort=False)}
    rest = [cid for cid in groups if cid not in best_ids]
    alpha = 0.6 if len(rest) < 20 else max(0.08, 6 / len(rest))
    for cid in rest:
        steps, mean, _ = _mean_curve(groups[cid])
        ax.plot(steps, mean, color="0.55", lw=0.7, alpha=alpha, zorder=1)
    colours = sns.color_palette("viridis", n_colors=max(1, len(best_ids)))
    replicated = False
    for colour, cid in zip(colours, best_ids):
        group = groups[cid]
        finished = group[group["status"] == "done"]
        steps, mean, std = _mean_curve(finished if len(finished) else group)
        n = len(finished)
        text = f"{label(group.iloc[0])}  {metric} {order[cid]:.3f}" + (f" (mean of {n})" if n > 1 else "")
        ax.plot(steps, mean, color=colour, lw=1.6, zorder=3, label=text)
        if n > 1:
            replicated = True
            ax.fill_between(steps, mean - std, mean + std, color=colour, alpha=0.2, lw=0, zorder=2)
    points = np.array([v for r in runs["loss"] for v in r if v is not None and math.isfinite(v)])
    if threshold is not None:
        ax.axhline(threshold, color="crimson", ls="--", lw=1.2, zorder=2, label=f"threshold {threshold:g}")
    for name, value in (references or {}).items():
        ax.axhline(value, color="black", ls=":", lw=1.0, zorder=2)
        ax.annotate(f"{name} {value:.3f}", xy=(1.0, value), xycoords=("axes fraction", "data"),
                    xytext=(-4, 2), textcoords="offset points", ha="right", va="bottom", fontsize=8)
    if len(points):
        # the moving average starts at 3.0 and may first climb: show all but the extreme 1 %
        marks = [*([threshold] if threshold is not None else []), *(references or {}).values()]
        top = max(float(np.percentile(points, 99)), *marks) + 0.1
        bottom = min(float(points.min()), *marks) - 0.1
        ax.set_ylim(bottom, top)
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (moving average, nats per byte)" if not title else "training loss (moving average)")
    shown = f"best {len(best_ids)} in colour" if rest else "all configurations"
    band = "; band: ±1 std across seeds" if replicated else ""
    ax.set_title(f"{title}{len(runs)} runs of {len(groups)} configurations, {shown} (ranked by mean {metric}){band}")
    if best_ids:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False,
                  title="configuration  (I F O S gates, N new / P previous state, R residual)",
                  title_fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_hyperparameters(df: pd.DataFrame, metric: str, title: str,
                         effects_table: pd.DataFrame | None = None,
                         reference: dict[str, float] | None = None) -> plt.Figure:
    """One panel per hyperparameter: each run's metric by the hyperparameter's value (a jittered
    strip: seaborn's swarm redraws the whole figure once per panel, seconds at this size), the
    mean per value marked. With ``effects_table`` (:func:`gatedrnn.stats.effects`), each
    panel is followed by one of the key's matched-pair effects: median difference and its 95 %
    bootstrap interval per step of the key (from -> to), zero marked."""
    keys = hyperparameters(df)
    data = df[df[metric].notna()].copy()
    with_effects = effects_table is not None and len(effects_table) > 0
    per_key = 2 if with_effects else 1
    ncols = (4 if len(keys) > 9 else 3) if not with_effects else 4
    nrows = math.ceil(len(keys) * per_key / ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), layout="constrained",
                             squeeze=False)
    flat = list(grid.flat)
    axes_strip = flat[0:len(keys) * per_key:per_key]
    axes_effect = flat[1:len(keys) * per_key:per_key] if with_effects else []
    for ax in axes_strip[1:]:
        ax.sharey(axes_strip[0])
    biggest = max((data[k].value_counts().max() for k in keys if len(data)), default=0)
    size = float(np.clip(60 / max(biggest, 1) ** 0.5, 2.0, 6))
    def show(v):
        if isinstance(v, (bool, np.bool_)):
            return "on" if v else "off"
        return v if isinstance(v, str) else str(int(v))

    for ax, key in zip(axes_strip, keys):
        sub = data[data[key].notna()]  # a switch exists for the gated cell only
        values = sub[key]
        if key in SWITCHES:
            order = [False, True]
            values = values.astype(bool)
        elif key == "cell":
            order = sorted(values.unique().tolist(), key=lambda c: (c != "gated", c))
        else:
            order = sorted(values.unique().tolist())
        order = [show(v) for v in order]
        plot_df = pd.DataFrame({"value": pd.Categorical(values.map(show), categories=order),
                                metric: sub[metric].to_numpy()})
        sns.stripplot(data=plot_df, x="value", y=metric, order=order, ax=ax, size=size, jitter=0.3,
                      alpha=0.85 if biggest < 50 else 0.55, color="tab:blue")
        means = plot_df.groupby("value", observed=False)[metric].mean()
        for i, v in enumerate(order):
            if pd.notna(means.get(v)):
                ax.hlines(means[v], i - 0.35, i + 0.35, color="crimson", lw=2.2, zorder=5)
                ax.annotate(f"mean {means[v]:.3f}", xy=(i, means[v]), xytext=(0, 3), textcoords="offset points",
                            fontsize=7, color="crimson", ha="center", va="bottom", zorder=6,
                            bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none", alpha=0.7))
        for name, value in (reference or {}).items():  # a memory task's chance line
            ax.axhline(value, color="black", ls=":", lw=1.0, zorder=4)
            ax.annotate(f"{name} {value:.3f}", xy=(1.0, value), xycoords=("axes fraction", "data"), xytext=(-3, 2),
                        textcoords="offset points", ha="right", va="bottom", fontsize=7)
        note = f" ({len(sub)} gated runs)" if key in SWITCHES and len(sub) < len(data) else ""
        ax.set_title(key.replace("use_", "").replace("_", " ") + note, fontsize=10)
        ax.set_xlabel("")
        ax.set_ylabel(metric)
        ax.grid(axis="y", alpha=0.3)
    for ax, key in zip(axes_effect, keys):
        rows = effects_table[effects_table["hyperparameter"] == key]
        for i, (_, r) in enumerate(rows.iterrows()):
            lo, hi = r["ci low"], r["ci high"]
            err = None if not (math.isfinite(lo) and math.isfinite(hi)) else [[r["median difference"] - lo],
                                                                              [hi - r["median difference"]]]
            colour = "tab:green" if math.isfinite(hi) and hi < 0 else "tab:red" if math.isfinite(lo) and lo > 0 else "0.3"
            ax.errorbar(r["median difference"], i, xerr=err, fmt="o", color=colour, capsize=4, lw=1.8)
        if not len(rows):
            ax.text(0.5, 0.5, "no matched pairs\n(one value swept)", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9, color="0.4")
            ax.set_xticks([])
        ax.axvline(0, color="black", lw=0.8, ls=":")
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([f"{show(r['from'])}→{show(r['to'])}  ({int(r['pairs'])} pairs)"
                            for _, r in rows.iterrows()], fontsize=8)
        ax.set_ylim(-0.7, max(len(rows), 1) - 0.3)
        ax.set_xlabel(f"median Δ {metric} (to − from)", fontsize=8)
        ax.set_title("matched-pair effect, 95 % CI", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    for ax in flat[len(keys) * per_key:]:
        ax.set_visible(False)
    extra = "; right of each: matched-pair effect (green lowers the loss)" if with_effects else ""
    fig.suptitle(f"{title} — {len(data)} runs; red bar: mean per value{extra}", fontsize=12)
    return fig


# ---------------------------------------------------------------------------- numbers
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


def reference_entropies(df: pd.DataFrame, results_dir: Path, data_path: str | None = None) -> dict[str, Any] | None:
    """Held-out unigram/bigram/trigram cross-entropies of the results' corpus, when it is at hand
    (the built-in corpus, the file the results name, or ``data_path``) and its SHA-256 matches.
    Cached beside the results as ``.ngram-<sha256>.json``."""
    if "dataset sha256" not in df or df["dataset sha256"].dropna().empty:
        return None
    shas = df["dataset sha256"].dropna()
    sha = shas.mode().iloc[0]
    cache = ResultsFolder(results_dir).ngram_cache(sha)
    try:
        cached = json.loads(cache.read_text())
        if cached.get("sha256") == sha:
            return cached
    except (OSError, ValueError):
        pass
    rows = df[df["dataset sha256"] == sha]
    candidates = [data_path] if data_path else []
    name = rows["dataset"].dropna().iloc[0] if "dataset" in rows and rows["dataset"].notna().any() else None
    if name == BUILTIN:
        candidates.append(None)
    if "settings" in rows:
        for s in rows["settings"].dropna():
            if isinstance(s, dict) and s.get("data"):
                candidates.append(s["data"])
                break
    for candidate in candidates:
        try:
            corpus = load_corpus(candidate)
        except DataError:
            continue
        if corpus.sha256 != sha:
            continue
        h = ngram_cross_entropies(corpus)
        out = {"sha256": sha, "dataset": corpus.name, "bytes": len(corpus),
               "nats per byte": {NGRAM_NAMES[k]: v for k, v in h.items()}}
        try:
            atomic_write_json(cache, out)
        except OSError:
            pass  # a read-only results folder: recompute next time
        return out
    return None


# ---------------------------------------------------------------------------- report
@dataclass
class Report:
    runs: int
    status: dict[str, int] | None
    best: dict[str, Any] | None
    below: int
    metric: str = "min loss"
    configurations: int = 0
    ties: int | None = None  # configurations statistically tied with the best (None: cannot tell)
    compared: int = 0
    noise: dict[str, float] | None = None
    written: list[Path] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    chance: float | None = None  # a memory task's chance (or persistence) level of the metric
    tasks: dict[str, "Report"] = field(default_factory=dict)  # each memory task's, by its label

    def status_line(self) -> str:
        if self.status is None:
            return f"{self.runs} result files (no configuration file to compare with)"
        c = self.status
        total = sum(c.values())
        return (f"done {c['done']} · diverged {c['diverged']} · failed {c['failed']} · running {c['running']} · "
                f"pending {c['pending']} (of {total})")

    def best_line(self) -> str | None:
        if not self.best:
            return None
        b = self.best
        ci = (f" [95 % CI {b['ci low']:.4f}, {b['ci high']:.4f}]" if math.isfinite(b.get("ci low", math.nan))
              else "")
        return (f"{b['label']}  {self.metric} {b[self.metric]:.4f}{ci} over {b['runs']} run(s)  id {b['id']}")

    def ties_line(self) -> str:
        if self.ties is None:
            return ("tied with the best: cannot tell: no configuration has two or more runs "
                    "(replicate the best with init_experiments.py --replicate-from)")
        return (f"tied with the best: {self.ties} of {self.compared} other configurations "
                "(their seed-blocked 95 % interval of the difference reaches zero)")


def _save(fig: plt.Figure, path: Path) -> None:
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def _fmt(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if not math.isfinite(v) else f"{v:.4f}"
    return str(v)


def _md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines)


def _keys(df: pd.DataFrame, configs: list[dict] | None) -> list[str]:
    optional = [*EXTRA_KEYS, "density", "spectral_radius", "input_scaling", "leak", "readout", *ALL_TASK_KEYS]
    return [*CONFIG_KEYS, *[k for k in optional if k != "seed" and (k in df or (configs and any(k in c for c in configs)))]]


def _runs_table(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """runs.csv: one row per run."""
    metrics = ["status", "seed", "min loss", "val loss", "val bpb", "final loss", "epochs", "training steps",
               "parameters", "steps per second", "resumes", "attempts", "error", "config id", "file"]
    out = df.reindex(columns=[*keys, "id", *[m for m in metrics if m != "final loss"]]).copy()
    out.insert(out.columns.get_loc("min loss"), "final loss",
               [r[-1] if isinstance(r, list) and r else None for r in df["loss"]])
    return out


def _summary_table(df: pd.DataFrame, configs: list[dict] | None, running: set[str], keys: list[str]) -> pd.DataFrame:
    """summary.csv: one row per configuration (replicates together), pending ones included."""
    from .config import config_id

    stats_rows = summarise(df, [m for m in (*SUMMARY_METRICS, *TASK_METRICS) if m in df and df[m].notna().any()])
    by_config = {r["config id"]: r for _, r in stats_rows.iterrows()} if len(stats_rows) else {}
    counts = df.groupby(["config id", "status"]).size().unstack(fill_value=0) if len(df) else pd.DataFrame()
    # the configuration file's entries by their id without seed (its seeds' entries together),
    # in file order, then configurations that have results but are not in the file
    cfg_of: dict[str, dict] = {}
    seed_ids: dict[str, set[str]] = {}
    for c in configs or []:
        cid = config_id({k: v for k, v in c.items() if k not in ("id", "seed")})
        cfg_of.setdefault(cid, c)
        seed_ids.setdefault(cid, set()).add(c["id"])
    order = list(cfg_of) + [cid for cid in dict.fromkeys(df["config id"]) if cid not in cfg_of]
    rows = []
    first = df.drop_duplicates("config id").set_index("config id") if len(df) else df
    for cid in order:
        src = first.loc[cid] if cid in first.index else cfg_of[cid]
        row = {k: src.get(k) for k in keys}
        row["id"] = cid
        n = {st: int(counts.loc[cid, st]) if cid in counts.index and st in counts.columns else 0
             for st in ("done", "diverged", "failed")}
        if n["done"]:
            status = "done"
        elif n["diverged"] or n["failed"]:
            status = "diverged" if n["diverged"] else "failed"
        elif seed_ids.get(cid, set()) & running:
            status = "running"
        else:
            status = "pending"
        row.update({"status": status, "runs": n["done"], "diverged": n["diverged"], "failed": n["failed"]})
        if cid in by_config:
            r = by_config[cid]
            row["seeds"] = r["seeds"]
            for m in (*SUMMARY_METRICS, *TASK_METRICS):
                for part in ("mean", "std", "ci low", "ci high"):
                    if f"{m} {part}" in r:
                        row[f"{m} {part}"] = r[f"{m} {part}"]
        rows.append(row)
    return pd.DataFrame(rows)


def _recorded_config_file(results_dir: Path) -> Path | None:
    from .folder import read_json

    rec = read_json(ResultsFolder(results_dir).configs_file)
    path = rec.get("config file") if isinstance(rec, dict) else None
    return Path(path) if isinstance(path, str) else None


def _task_groups(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The results by task (its label: the task with its keys), next-byte prediction first."""
    if not len(df) or "task label" not in df or set(df["task label"].dropna()) <= {"bytes"}:
        return [("bytes", df)]
    labels = sorted(df["task label"].fillna("bytes").unique(), key=lambda t: (t != "bytes", t))
    return [(t, df[df["task label"].fillna("bytes") == t]) for t in labels]


def _slug(label: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in label).strip("_").replace("__", "_")


def examine(results_dir: str | os.PathLike, out_dir: str | os.PathLike = ".", threshold: float = 1.9,
            metric: str = "auto", config_file: str | os.PathLike | None = None,
            data_path: str | None = None) -> Report:
    """Write the plots and the summaries; returns what was found. ``metric``: ``auto`` ranks by
    ``val loss`` where the finished runs have it, else ``min loss``. ``config_file``: the
    sweep's configuration list for the status line; None uses the one recorded for this results
    folder by the training launcher (never a file that merely sits in the working directory).
    Raises ResultsError for a missing folder and ValueError for a bad metric, threshold or out.

    A sweep of several tasks (``task``) is analysed one task at a time: rankings, replicates and
    effects never compare runs of different tasks. Next-byte prediction keeps the file names
    above; each memory task gets ``results_01_all_<task>.png`` and
    ``results_01_all_<task>_hyperparameters.png`` with its chance line, a section of
    ``summary.md``, and its rows of ``effects.csv`` (column ``task``); the report of each memory
    task is in ``Report.tasks``."""
    if metric not in ("auto", *METRICS):
        raise ValueError(f"--metric must be one of auto, {', '.join(repr(m) for m in METRICS)}, got {metric!r}")
    if not math.isfinite(threshold):
        raise ValueError(f"--threshold must be a finite number, got {threshold!r}")
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir}: exists and is not a folder")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        df = load(results_dir)
    messages = [str(w.message) for w in caught]
    out_dir.mkdir(parents=True, exist_ok=True)

    if config_file is None:
        config_file = _recorded_config_file(results_dir)
    configs = None
    if config_file is not None:
        if Path(config_file).exists():
            try:
                configs = read_configs(config_file)
            except ConfigFileError as e:
                messages.append(f"{e} (status from the configuration file left out)")
        else:
            messages.append(f"{config_file}: no such configuration file (status from it left out)")
    running: set[str] = set()
    counts = None
    if configs is not None:
        snap = sweep_status(results_dir, configs)
        counts = snap["counts"]
        running = {r["id"] for r in snap["running"]}

    keys = _keys(df, configs)
    summary = _summary_table(df, configs, running, keys)
    groups = _task_groups(df)
    several = len(groups) > 1 or groups[0][0] != "bytes"
    reports, sections, effect_tables = {}, [], []
    for task, sub in groups:
        task_metric = ranking_metric(sub) if metric == "auto" else metric
        rep = Report(runs=len(sub), status=counts, best=None, below=0, metric=task_metric,
                     messages=messages if task == "bytes" else [])
        suffix = "" if task == "bytes" else "_" + _slug(task)
        md, eff = _examine_task(sub, task, suffix, rep, summary, threshold, results_dir, out_dir, data_path,
                                level=3 if several else 2)
        reports[task] = rep
        sections.append((task, md))
        if eff is not None and len(eff):
            effect_tables.append(eff.assign(task=task) if several else eff)
    report = reports.get("bytes") or Report(runs=len(df), status=counts, best=None, below=0,
                                            metric=metric if metric != "auto" else "val loss", messages=messages)
    report.tasks = {t: r for t, r in reports.items() if t != "bytes"}
    written = [w for r in reports.values() for w in r.written]
    report.written = []

    effects_out = pd.concat(effect_tables, ignore_index=True) if effect_tables else pd.DataFrame(
        columns=(["task"] if several else []) + EFFECT_COLUMNS)
    if several and "task" in effects_out:
        effects_out = effects_out[["task", *[c for c in effects_out.columns if c != "task"]]]
    runs_table = _runs_table(df, keys)
    for name, table in (("summary.csv", summary), ("runs.csv", runs_table), ("effects.csv", effects_out)):
        atomic_write_bytes(out_dir / name, table.to_csv(index=False).encode())
        report.written.append(out_dir / name)
    report.written += written

    out = [f"# Sweep summary: {results_dir}", "", f"**Status:** {report.status_line()}", ""]
    if report.messages:
        out += ["Notes:", *[f"- {m}" for m in report.messages], ""]
    if several:
        out += [f"The sweep has {len(groups)} tasks; each is ranked and analysed on its own (its runs are "
                "never compared with another task's).", ""]
        for task, md in sections:
            out += [f"## Task: {task}", "", md]
    else:
        out.append(sections[0][1])
    atomic_write_bytes(out_dir / "summary.md", "\n".join(out).encode())
    report.written.append(out_dir / "summary.md")
    return report


def _examine_task(df: pd.DataFrame, task: str, suffix: str, report: Report, summary: pd.DataFrame,
                  threshold: float, results_dir: Path, out_dir: Path, data_path: str | None,
                  level: int) -> tuple[str, pd.DataFrame | None]:
    """One task's ranking, effects, plots (file names with ``suffix``) and summary section;
    fills ``report`` and returns the section's markdown and the effects table."""
    metric, messages = report.metric, report.messages
    memory = task != "bytes"
    # ranked: finished runs only; a diverged run's min loss is from before it diverged
    scored = df[(df["status"] == "done") & df[metric].notna()].sort_values(metric, kind="stable")
    diverged = df[df["status"] == "diverged"]
    if len(diverged):
        messages.append(f"{len(diverged)} diverged run(s) are listed as diverged and left out of every ranking "
                        "and threshold")
    eff, _ = matched_effects(scored, metric, hyperparameters(scored)) if len(scored) else (None, None)

    chance = None
    if memory:
        refs = None
        values = df["chance loss"].dropna() if "chance loss" in df else pd.Series(dtype=float)
        chance = float(values.iloc[0]) if len(values) and metric == "val loss" else None
        name = "persistence" if task.startswith("mackey-glass") else "chance"
        ref_lines = {name: chance} if chance is not None else {}
        line = chance if chance is not None else math.nan
    else:
        refs = reference_entropies(df, results_dir, data_path) if len(df) else None
        ref_lines = {f"{name} (held out)": v for name, v in (refs or {}).get("nats per byte", {}).items()}
        line = threshold
    below = scored[scored[metric] < line] if math.isfinite(line) else scored.iloc[:0]
    report.below = len(below)
    ids = set(df["config id"])
    ranked_from = summary[summary["id"].isin(ids)] if "id" in summary else summary
    if f"{metric} mean" in ranked_from:
        ranked = ranked_from[ranked_from["runs"] > 0].dropna(subset=[f"{metric} mean"]).sort_values(
            f"{metric} mean", kind="stable")
    else:
        ranked = ranked_from.iloc[:0]
    report.configurations = len(ranked)
    table = seed_table(scored, metric) if len(scored) else None
    if len(ranked):
        top = ranked.iloc[0]
        row = df[df["config id"] == top["id"]].iloc[0]
        report.best = {**{k: top[k] for k in CONFIG_KEYS}, "id": top["id"], metric: float(top[f"{metric} mean"]),
                       "ci low": float(top[f"{metric} ci low"]), "ci high": float(top[f"{metric} ci high"]),
                       "runs": int(top["runs"]), "label": label(row)}
        ties = ties_with_best(table, top["id"])
        if ties is not None:
            report.ties = int(ties["tied"].fillna(False).sum())
            report.compared = int(ties["tied"].notna().sum())
        report.noise = seed_noise(table)
    report.chance = chance
    epochs = df["epochs"].dropna() if "epochs" in df else pd.Series(dtype=float)
    if len(epochs) and epochs.max() > 1:
        messages.append(f"{'' if not memory else task + ': '}runs read the training split up to "
                        f"{epochs.max():.1f} times: the training curve (and min loss) then measures memorising too; "
                        "held-out val loss is the measure to trust"
                        + ("" if metric == "val loss" else " (rank with --metric 'val loss')"))

    curves_png = out_dir / CURVES_PNG.replace(".png", f"{suffix}.png")
    hyper_png = out_dir / HYPER_PNG.replace("_hyperparameters", f"{suffix}_hyperparameters")
    title = f"{task}: " if memory else ""
    if len(df):
        _save(plot_curves(df, metric, None if memory else threshold, ref_lines, title=title), curves_png)
        report.written.append(curves_png)
    else:
        messages.append(f"{results_dir}: no results yet; no plots written")
    if len(scored):
        _save(plot_hyperparameters(scored, metric, f"{title}{metric} by hyperparameter", eff,
                                   reference=ref_lines), hyper_png)
        report.written.append(hyper_png)
    elif len(df):
        messages.append(f"{title}no finished run has a {metric!r}; no hyperparameter plot written")
    if not memory:
        filtered = out_dir / filtered_name(threshold)
        if len(below):
            _save(plot_hyperparameters(below, metric, f"runs with {metric} below {threshold:g}"), filtered)
            report.written.append(filtered)
        else:
            filtered.unlink(missing_ok=True)  # a stale plot from an earlier call would mislead
            if len(scored):
                messages.append(f"no run has {metric} below {threshold:g} (best: {scored.iloc[0][metric]:.4f}); "
                                f"{filtered.name} not written")
    md = _markdown(df, scored, ranked, below, report, metric, threshold, refs, diverged, eff, task, level)
    return md, eff


def _markdown(df, scored, ranked, below, report: Report, metric, threshold, refs, diverged, eff,
              task: str = "bytes", level: int = 2) -> str:
    h = "#" * level
    memory = task != "bytes"
    out = []
    if refs:
        out += [f"{h} Reference: byte n-gram cross-entropies of the corpus ({refs['dataset']}, held-out 10 %)", "",
                "A loss means little without these: a run above the trigram line has learned less than "
                "counting byte triples does.", ""]
        out += [f"- {name}: {v:.4f} nats/byte ({v / math.log(2):.3f} bits/byte)" for name, v in refs["nats per byte"].items()]
        out.append("")
    task_metrics = []
    if memory:
        task_metrics = [m for m in TASK_METRICS if m in df and df[m].notna().any()]
        levels = {m: df[f"chance {m}"].dropna().iloc[0] for m in task_metrics if f"chance {m}" in df
                  and df[f"chance {m}"].notna().any()}
        which = "persistence (predict the current value)" if task.startswith("mackey-glass") else "chance"
        out += [f"{h} Reference: {which}", "",
                f"The loss is the task's {df['loss kind'].dropna().iloc[0] if 'loss kind' in df and df['loss kind'].notna().any() else 'loss'} "
                "on the fixed held-out test set (val loss). A configuration has learned something only where "
                "its interval lies on the right side of this level.", ""]
        out += [f"- {m}: {v:.4f}" for m, v in levels.items()]
        updates = df["optimizer updates"].dropna() if "optimizer updates" in df else pd.Series(dtype=float)
        steps = df["time steps"].dropna() if "time steps" in df else pd.Series(dtype=float)
        if len(updates) and len(steps):
            out.append(f"- time steps per run: {int(steps.median())} (median); optimizer updates per run: "
                       f"{int(updates.min())}–{int(updates.max())}")
        out.append("")
    if not len(scored):
        out += [f"No finished run with a {metric!r} yet.", ""]
        return "\n".join(out)
    out += [f"{h} How sure is the ranking", "",
            f"Configurations are ranked by the mean **{metric}** of their finished runs "
            f"({'held-out loss' if metric == 'val loss' else 'the minimum of the training moving average: the original study’s metric'}).",
            "", f"- Best: **{report.best_line()}**", f"- {report.ties_line()[0].upper()}{report.ties_line()[1:]}."]
    if memory and report.chance is not None and len(ranked):
        lower = ranked[f"{metric} ci high"] < report.chance
        better = ranked[f"{metric} mean"] < report.chance
        out.append(f"- Below the {('persistence' if task.startswith('mackey-glass') else 'chance')} level "
                   f"({report.chance:.4f}): {int(better.sum())} of {len(ranked)} configurations by their mean; "
                   f"{int(lower.sum())} with the whole 95 % interval below it (configurations with two or more "
                   "runs only; one run gives no interval).")
    if report.noise:
        n = report.noise
        out.append(f"- Seed noise: a configuration's {metric} moves by **{n['seed std']:.4f}** (std across its seeds, "
                   f"{n['configurations']} configurations with replicates, {n['runs per configuration']:.1f} runs "
                   f"each); the configurations' means spread by **{n['between std']:.4f}** (std across "
                   f"configurations). " + ("Differences smaller than the seed noise are not findings."
                                           if n["seed std"] > 0.25 * n["between std"] else ""))
    else:
        out.append("- Seed noise: unknown (every configuration has one run). A difference between two "
                   "configurations may be one seed's luck; the replicate stage measures it.")
    out.append("")
    top = ranked.head(10).copy()
    top.insert(0, "rank", range(1, len(top) + 1))
    top.insert(1, "configuration", [label(df[df["config id"] == i].iloc[0]) for i in top["id"]])
    top["id"] = top["id"].str[:12]
    shown = [m for m in ("val loss", "val bpb", "min loss") if not (memory and m == "val bpb")]
    cols = ["rank", "configuration", "runs", f"{metric} mean", f"{metric} ci low", f"{metric} ci high",
            *[f"{m} mean" for m in shown if m != metric and f"{m} mean" in top],
            *[f"{m} mean" for m in task_metrics if f"{m} mean" in top and m not in ("cross-entropy", "mse")], "id"]
    out += [f"{h} The ten best configurations (by mean {metric}, 95 % t interval over seeds)", "",
            "Letters: I input gate, F forget gate, O output gate, S state gate, N new state, P previous (old) "
            "state, R residual ('.' = off), then layers and state size.", "",
            _md_table(top[[c for c in cols if c in top]]), ""]
    if eff is not None and len(eff):
        out += [f"{h} Matched-pair effects on {metric} (effects.csv)", "",
                "Each pair: two configurations identical except for one key; its difference is to − from "
                "(negative lowers the loss), the mean of its within-seed differences where the two share seeds. "
                "The interval is a 95 % bootstrap interval of the median over pairs; an interval that reaches "
                "zero does not show an effect.", "", _md_table(eff), ""]
    lm = linear_model(scored, metric)
    if lm is None:
        out += ["Linear model: too few runs (needs 10) or nothing varies.", ""]
    else:
        coef = pd.DataFrame({"hyperparameter": list(lm["coefficients"]), "coefficient": list(lm["coefficients"].values())})
        coef = coef.reindex(coef["coefficient"].abs().sort_values(ascending=False).index)
        out += [f"{h} Linear model of {metric} on the standardised hyperparameters", "",
                f"Fitted on {lm['fit runs']} runs; R² on the {lm['held-out runs']} held-out runs: "
                f"**{lm['r2 held out']:.3f}**. A negative coefficient lowers the loss.", "",
                _md_table(coef), ""]
    out += [f"{h} Mean {metric} per value of each hyperparameter (over runs)", "", _md_table(value_means(scored, metric)), ""]
    if len(diverged):
        d = diverged.copy()
        d["configuration"] = [label(r) for _, r in d.iterrows()]
        d["id"] = d["id"].str[:12]
        cols = ["configuration", *[c for c in ("diverged at step",) if c in d], "id"]
        out += [f"{h} Diverged runs: {len(d)} (never ranked, never below the threshold)", "",
                _md_table(d[cols]), ""]
    if memory:
        return "\n".join(out)
    out += [f"{h} Runs with {metric} below {threshold:g}: {len(below)}", ""]
    if len(below):
        b = below.copy()
        b["configuration"] = [label(r) for _, r in b.iterrows()]
        b["id"] = b["id"].str[:12]
        out += [_md_table(b[["configuration", metric, "id"]]), ""]
    return "\n".join(out)
