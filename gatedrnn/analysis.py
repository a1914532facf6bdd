"""The sweep's plots and summary: what it found, and how far along it is.

``examine(results_dir, out_dir, ...)`` writes
  results_01_all.png                              every run's loss curve against training step
  results_01_all_hyperparameters.png              the metric by each hyperparameter's value
  filtered_results_01_loss_below_<threshold>.png  the same, for the runs below the threshold
  summary.csv                                     one row per configuration
  summary.md                                      status, best runs, effects, reference entropies
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
from .config import CONFIG_KEYS, EXTRA_KEYS, SWITCHES, RNNConfig  # noqa: E402
from .data import BUILTIN, DataError, load_corpus, ngram_cross_entropies  # noqa: E402
from .folder import ResultsFolder  # noqa: E402
from .grid import ConfigFileError, read_configs  # noqa: E402
from .queue import sweep_status  # noqa: E402
from .results import config_of, load  # noqa: E402

__all__ = ["examine", "Report", "hyperparameters", "plot_curves", "plot_hyperparameters",
           "effects", "linear_model", "reference_entropies", "filtered_name", "METRICS"]

METRICS = ("min loss", "val loss")
CURVES_PNG = "results_01_all.png"
HYPER_PNG = "results_01_all_hyperparameters.png"
NGRAM_NAMES = {1: "unigram", 2: "bigram", 3: "trigram"}


def filtered_name(threshold: float) -> str:
    return f"filtered_results_01_loss_below_{threshold:g}.png"


def label(row: Any) -> str:
    """A compact label: the switches' letters (I F O S N O R, '.' when off), depth, size."""
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
    for key in EXTRA_KEYS:
        if key in swept and swept[key].nunique(dropna=True) > 1 and key not in keys:
            keys.append(key)
    return keys


def _steps_axis(row: pd.Series) -> np.ndarray:
    n = len(row["loss"])
    every = row.get("log every")
    if every is None or (isinstance(every, float) and math.isnan(every)):
        steps = row.get("training steps")
        every = steps / n if steps and n and not pd.isna(steps) else 50
    return (np.arange(n) + 1) * float(every)


# ---------------------------------------------------------------------------- plots
def plot_curves(df: pd.DataFrame, metric: str, threshold: float, references: dict[str, float] | None = None,
                highlight: int = 10) -> plt.Figure:
    """Every run's moving-average loss against training step; the best ``highlight`` runs (by
    ``metric``) in colour with a legend, the rest in grey; the threshold and reference lines."""
    fig, ax = plt.subplots(figsize=(13, 7), layout="constrained")
    runs = df[df["loss"].map(lambda v: isinstance(v, list) and len(v) > 0)]
    # only finished runs are ranked: a diverged run's min loss is from before it diverged
    rank = runs[metric].where(runs["status"] == "done").dropna().sort_values(kind="stable")
    best = runs.loc[rank.index[:highlight]]
    rest = runs.drop(index=best.index)
    alpha = 0.6 if len(rest) < 20 else max(0.08, 6 / len(rest))
    for _, row in rest.iterrows():
        ax.plot(_steps_axis(row), row["loss"], color="0.55", lw=0.7, alpha=alpha, zorder=1)
    colours = sns.color_palette("viridis", n_colors=max(1, len(best)))
    for colour, (_, row) in zip(colours, best.iterrows()):
        value = row[metric]
        ax.plot(_steps_axis(row), row["loss"], color=colour, lw=1.6, zorder=3,
                label=f"{label(row)}  {metric} {value:.3f}" if pd.notna(value) else label(row))
    points = np.array([v for r in runs["loss"] for v in r if v is not None and math.isfinite(v)])
    ax.axhline(threshold, color="crimson", ls="--", lw=1.2, zorder=2, label=f"threshold {threshold:g}")
    for i, (name, value) in enumerate((references or {}).items()):
        ax.axhline(value, color="black", ls=":", lw=1.0, zorder=2)
        ax.annotate(f"{name} {value:.3f}", xy=(1.0, value), xycoords=("axes fraction", "data"),
                    xytext=(-4, 2), textcoords="offset points", ha="right", va="bottom", fontsize=8)
    if len(points):
        # the moving average starts at 3.0 and may first climb: show all but the extreme 1 %
        marks = [threshold, *(references or {}).values()]
        top = max(float(np.percentile(points, 99)), *marks) + 0.1
        bottom = min(float(points.min()), *marks) - 0.1
        ax.set_ylim(bottom, top)
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (moving average, nats per byte)")
    shown = f"best {len(best)} in colour" if len(rest) else "all runs"
    ax.set_title(f"{len(runs)} runs, {shown} (ranked by {metric})")
    if len(best):
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False,
                  title="configuration  (I F O S gates, N O state, R residual)", title_fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_hyperparameters(df: pd.DataFrame, metric: str, title: str) -> plt.Figure:
    """One panel per hyperparameter: each run's metric by the hyperparameter's value (a jittered
    strip: seaborn's swarm redraws the whole figure once per panel, seconds at this size), the
    mean per value marked."""
    keys = hyperparameters(df)
    data = df[df[metric].notna()].copy()
    ncols = 4 if len(keys) > 9 else 3
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), layout="constrained",
                             sharey=True, squeeze=False)
    biggest = max((data[k].value_counts().max() for k in keys if len(data)), default=0)
    size = float(np.clip(60 / max(biggest, 1) ** 0.5, 2.0, 6))
    def show(v):
        if isinstance(v, (bool, np.bool_)):
            return "on" if v else "off"
        return v if isinstance(v, str) else str(int(v))

    for ax, key in zip(axes.flat, keys):
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
        note = f" ({len(sub)} gated runs)" if key in SWITCHES and len(sub) < len(data) else ""
        ax.set_title(key.replace("use_", "").replace("_", " ") + note, fontsize=10)
        ax.set_xlabel("")
        ax.set_ylabel(metric)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    fig.suptitle(f"{title} — {len(data)} runs; red bar: mean per value", fontsize=12)
    return fig


# ---------------------------------------------------------------------------- numbers
def effects(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, count and best of the metric per value of each hyperparameter."""
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
    written: list[Path] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def status_line(self) -> str:
        if self.status is None:
            return f"{self.runs} result files (no configuration file to compare with)"
        c = self.status
        total = sum(c.values())
        return (f"done {c['done']} · diverged {c['diverged']} · failed {c['failed']} · running {c['running']} · "
                f"pending {c['pending']} (of {total})")


def _save(fig: plt.Figure, path: Path) -> None:
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def _md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            cells.append(f"{v:.4f}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _summary_table(df: pd.DataFrame, configs: list[dict] | None, status: dict[str, str]) -> pd.DataFrame:
    optional = [*EXTRA_KEYS, "density", "spectral_radius", "input_scaling", "leak", "readout"]
    keys = [*CONFIG_KEYS, *[k for k in optional if k in df or (configs and any(k in c for c in configs))]]
    metrics = ["status", "min loss", "val loss", "val bpb", "final loss", "training steps", "parameters",
               "steps per second", "resumes", "attempts", "error", "file"]
    rows = []
    by_id = {r["id"]: r for _, r in df.iterrows()}
    order = [c["id"] for c in configs] if configs else []
    order += [i for i in df["id"] if i not in set(order)]
    for cid in order:
        r = by_id.get(cid)
        if r is not None:
            row = {k: r.get(k) for k in keys}
            row.update({"id": cid, **{m: r.get(m) for m in metrics if m != "final loss"}})
            row["final loss"] = r["loss"][-1] if isinstance(r["loss"], list) and r["loss"] else None
        else:
            cfg = next(c for c in configs if c["id"] == cid)
            row = {k: cfg.get(k) for k in keys}
            row.update({"id": cid, "status": status.get(cid, "pending")})
        rows.append(row)
    out = pd.DataFrame(rows)
    for m in [*keys, "id", *metrics]:
        if m not in out:
            out[m] = None
    return out[[*keys, "id", *metrics]]


def examine(results_dir: str | os.PathLike, out_dir: str | os.PathLike = ".", threshold: float = 1.9,
            metric: str = "min loss", config_file: str | os.PathLike | None = None,
            data_path: str | None = None) -> Report:
    """Write the plots and the summary; returns what was found. Raises ResultsError for a
    missing folder and ValueError for a bad metric or threshold."""
    if metric not in METRICS:
        raise ValueError(f"--metric must be one of {', '.join(repr(m) for m in METRICS)}, got {metric!r}")
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

    configs = None
    if config_file is not None and Path(config_file).exists():
        try:
            configs = read_configs(config_file)
        except ConfigFileError as e:
            messages.append(f"{e} (status from the configuration file left out)")
    status_by_id: dict[str, str] = {}
    counts = None
    if configs is not None:
        snap = sweep_status(results_dir, configs)
        counts = snap["counts"]
        status_by_id = {r["id"]: "running" for r in snap["running"]}
    report = Report(runs=len(df), status=counts, best=None, below=0, messages=messages)

    summary = _summary_table(df, configs, status_by_id)
    atomic_write_bytes(out_dir / "summary.csv", summary.to_csv(index=False).encode())
    report.written.append(out_dir / "summary.csv")

    refs = reference_entropies(df, results_dir, data_path) if len(df) else None
    ref_lines = {f"{name} (held out)": v for name, v in (refs or {}).get("nats per byte", {}).items()}

    # ranked: finished runs only; a diverged run's min loss is from before it diverged
    scored = df[(df["status"] == "done") & df[metric].notna()].sort_values(metric, kind="stable")
    diverged = df[df["status"] == "diverged"]
    if len(diverged):
        messages.append(f"{len(diverged)} diverged run(s) are listed as diverged and left out of every ranking "
                        "and threshold")
    below = scored[scored[metric] < threshold]
    report.below = len(below)
    if len(scored):
        report.best = {**{k: scored.iloc[0][k] for k in CONFIG_KEYS}, "id": scored.iloc[0]["id"],
                       metric: float(scored.iloc[0][metric]), "label": label(scored.iloc[0])}

    filtered = out_dir / filtered_name(threshold)
    if len(df):
        _save(plot_curves(df, metric, threshold, ref_lines), out_dir / CURVES_PNG)
        report.written.append(out_dir / CURVES_PNG)
    else:
        report.messages.append(f"{results_dir}: no results yet; no plots written")
    if len(scored):
        _save(plot_hyperparameters(scored, metric, f"{metric} by hyperparameter"), out_dir / HYPER_PNG)
        report.written.append(out_dir / HYPER_PNG)
    elif len(df):
        report.messages.append(f"no run has a {metric!r}; no hyperparameter plot written")
    if len(below):
        _save(plot_hyperparameters(below, metric, f"runs with {metric} below {threshold:g}"), filtered)
        report.written.append(filtered)
    else:
        filtered.unlink(missing_ok=True)  # a stale plot from an earlier call would mislead
        if len(scored):
            report.messages.append(f"no run has {metric} below {threshold:g} (best: {scored.iloc[0][metric]:.4f}); "
                                   f"{filtered.name} not written")

    md = _markdown(df, scored, below, report, metric, threshold, refs, results_dir, diverged)
    atomic_write_bytes(out_dir / "summary.md", md.encode())
    report.written.append(out_dir / "summary.md")
    return report


def _markdown(df, scored, below, report: Report, metric, threshold, refs, results_dir, diverged) -> str:
    out = [f"# Sweep summary: {results_dir}", "", f"**Status:** {report.status_line()}", ""]
    if report.messages:
        out += ["Notes:", *[f"- {m}" for m in report.messages], ""]
    if refs:
        out += [f"## Reference: byte n-gram cross-entropies of the corpus ({refs['dataset']}, held-out 10 %)", "",
                "A loss means little without these: a run above the trigram line has learned less than "
                "counting byte triples does.", ""]
        out += [f"- {name}: {v:.4f} nats/byte ({v / math.log(2):.3f} bits/byte)" for name, v in refs["nats per byte"].items()]
        out.append("")
    if not len(scored):
        out += [f"No run with a {metric!r} yet.", ""]
        return "\n".join(out)
    cols = ["rank", "configuration", metric, *[m for m in ("min loss", "val loss", "val bpb") if m != metric and m in scored],
            "status", "id"]
    top = scored.head(10).copy()
    top["rank"] = range(1, len(top) + 1)
    top["configuration"] = [label(r) for _, r in top.iterrows()]
    top["id"] = top["id"].str[:12]
    out += [f"## The ten best configurations (by {metric})", "",
            "Configuration letters: I input gate, F forget gate, O output gate, S state gate, N new state, "
            "O old state, R residual ('.' = off), then layers and state size.", "",
            _md_table(top[[c for c in cols if c in top]]), ""]
    eff = effects(scored, metric)
    out += [f"## Effect of each hyperparameter (mean {metric} per value)", "", _md_table(eff), ""]
    lm = linear_model(scored, metric)
    if lm is None:
        out += ["Linear model: too few runs (needs 10) or nothing varies.", ""]
    else:
        coef = pd.DataFrame({"hyperparameter": list(lm["coefficients"]), "coefficient": list(lm["coefficients"].values())})
        coef = coef.reindex(coef["coefficient"].abs().sort_values(ascending=False).index)
        out += [f"## Linear model of {metric} on the standardised hyperparameters", "",
                f"Fitted on {lm['fit runs']} runs; R² on the {lm['held-out runs']} held-out runs: "
                f"**{lm['r2 held out']:.3f}**. A negative coefficient lowers the loss.", "",
                _md_table(coef), ""]
    if len(diverged):
        d = diverged.copy()
        d["configuration"] = [label(r) for _, r in d.iterrows()]
        d["id"] = d["id"].str[:12]
        cols = ["configuration", *[c for c in ("diverged at step",) if c in d], "id"]
        out += [f"## Diverged runs: {len(d)} (never ranked, never below the threshold)", "",
                _md_table(d[cols]), ""]
    out += [f"## Runs with {metric} below {threshold:g}: {len(below)}", ""]
    if len(below):
        b = below.copy()
        b["configuration"] = [label(r) for _, r in b.iterrows()]
        b["id"] = b["id"].str[:12]
        out += [_md_table(b[["configuration", metric, "id"]]), ""]
    return "\n".join(out)
