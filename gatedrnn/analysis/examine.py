"""The sweep's plots and summary: what it found, and how far along it is.

``examine(results_dir, out_dir, ...)`` writes
  results_01_all.png                              loss curves against training step (a configuration
                                                  with replicates: its mean curve and a band)
  results_01_all_hyperparameters.png              the metric by each hyperparameter's value, and
                                                  each key's matched-pair effect with its interval
  filtered_results_01_loss_below_<threshold>.png  the same, for the runs below the threshold
  summary.csv                                     one row per configuration: runs, mean, std, 95 % interval,
                                                  could be best (family-wise 5 %)
  runs.csv                                        one row per run
  effects.csv                                     matched-pair effects per swept key: median and mean with
                                                  their intervals, contexts, heterogeneous (gatedrnn.analysis.effects)
  interactions.csv                                every two-way interaction with its 95 % interval
  variance.csv                                    the share of the between-configuration variance per main
                                                  effect and two-way interaction
  effects_by_lr.csv                               with a swept lr: the effects at each rate alone (the
                                                  other tables then compare each configuration at its
                                                  best rate, gatedrnn.analysis.tuning)
  summary.md                                      status, how sure the ranking is, seed noise against
                                                  spread, effects, reference entropies

The figures are :mod:`gatedrnn.analysis.plots`', the words :mod:`gatedrnn.analysis.report`'s, the numbers
:mod:`gatedrnn.analysis.stats`'; this module reads the folder and puts them together. No torch.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..spec.atomic import atomic_write_bytes
from ..spec.config import ALL_CELL_KEYS, ALL_TASK_KEYS, CONFIG_KEYS, EXTRA_KEYS, LEGACY_SPLIT, config_id
from .rungs import halving_lines, halving_table, saving_line, verdict
from .references import reference_entropies
from .plots import plot_curves, plot_hyperparameters, save
from .report import TASK_METRICS, Report, summary_document, task_section
from .results import hyperparameters, label
from .sweep import Sweep
from .effects import (EFFECT_COLUMNS, INTERACTION_COLUMNS, VARIANCE_COLUMNS, effects as matched_effects, explain,
                      interactions, variance_shares)
from .stats import (could_be_best, duplicates, linear_model, ranking_metric, seed_noise, seed_table, summarise,
                    value_means)
from .tuning import Tuned, effects_by_rate, tune

__all__ = ["examine", "Report", "hyperparameters", "plot_curves", "plot_hyperparameters", "value_means",
           "linear_model", "reference_entropies", "filtered_name", "METRICS"]

METRICS = ("min loss", "val loss", "min val loss")
SUMMARY_METRICS = ("val loss", "val bpb", "test loss", "test bpb", "min val loss", "min val step", "generalisation gap",
                   "train split loss", "test bpb (whole split)", "min loss", "convergence step",
                   "inference ms per step (batch 1)", "inference ms per step (training batch)")
CURVES_PNG = "results_01_all.png"
HYPER_PNG = "results_01_all_hyperparameters.png"


def filtered_name(threshold: float) -> str:
    return f"filtered_results_01_loss_below_{threshold:g}.png"


# ---------------------------------------------------------------------------- examine
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
    out_dir = Path(out_dir)
    _check_arguments(metric, threshold, out_dir)
    sweep = Sweep.open(results_dir, config_file)  # the folder, read once
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = sweep.analysed()
    keys = _keys(runs, sweep.configs)
    summary = _summary_table(runs, sweep.configs, sweep.running, keys)
    groups = _task_groups(runs)
    reports, sections, found = {}, [], {name: [] for name in TABLE_COLUMNS if name != "summary.csv"}
    for task, sub in groups:
        level = 3 if len(groups) > 1 or task != "bytes" else 2
        reports[task], md, tables = _examine_task(sweep, sub, task, metric, summary, threshold, out_dir, data_path,
                                                  level)
        sections.append((task, md))
        for name, table in zip(found, tables):
            if table is not None and len(table):
                found[name].append(table.assign(task=task))
    report = _sweep_report(sweep, reports, runs, metric)
    if sweep.rungs is not None:
        report.halving = saving_line(sweep.rungs, sweep.runs)
        report.verdict = verdict(sweep.rungs, sweep.runs, report.metric)
        sections[0] = (sections[0][0], sections[0][1] + "\n"
                       + "\n".join(halving_lines(sweep.rungs, sweep.runs, report.metric, "##")))
        atomic_write_bytes(out_dir / "halving.csv", halving_table(sweep.rungs, report.metric).to_csv(index=False).encode())
        report.written.append(out_dir / "halving.csv")
    _write_tables(report, out_dir, summary, _runs_table(sweep.runs, keys), found, several=len(groups) > 1 or
                  groups[0][0] != "bytes")
    atomic_write_bytes(out_dir / "summary.md", summary_document(sweep.folder.root, report, sections).encode())
    report.written.append(out_dir / "summary.md")
    return report


TABLE_COLUMNS = {"summary.csv": None, "effects.csv": EFFECT_COLUMNS, "interactions.csv": INTERACTION_COLUMNS,
                 "variance.csv": VARIANCE_COLUMNS, "effects_by_lr.csv": [*EFFECT_COLUMNS, "lr"]}


def _check_arguments(metric: str, threshold: float, out_dir: Path) -> None:
    if metric not in ("auto", *METRICS):
        raise ValueError(f"--metric must be one of auto, {', '.join(repr(m) for m in METRICS)}, got {metric!r}")
    if not math.isfinite(threshold):
        raise ValueError(f"--threshold must be a finite number, got {threshold!r}")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir}: exists and is not a folder")


def _sweep_report(sweep: Sweep, reports: dict[str, Report], runs: pd.DataFrame, metric: str) -> Report:
    """The report that the command prints: next-byte prediction's, with the memory tasks' own."""
    report = reports.get("bytes") or Report(runs=len(runs), status=sweep.counts, best=None, below=0,
                                            metric=metric if metric != "auto" else "val loss",
                                            messages=sweep.messages)
    report.tasks = {t: r for t, r in reports.items() if t != "bytes"}
    report.written = [w for r in reports.values() for w in r.written]
    return report


def _write_tables(report: Report, out_dir: Path, summary: pd.DataFrame, runs_table: pd.DataFrame,
                  found: dict[str, list[pd.DataFrame]], several: bool) -> None:
    """summary.csv, runs.csv and each task's rows of the effects tables (effects_by_lr.csv only
    where lr is swept: a stale one from an earlier call is removed)."""
    if not found["effects_by_lr.csv"]:
        del found["effects_by_lr.csv"]
        (out_dir / "effects_by_lr.csv").unlink(missing_ok=True)
    tables = {"summary.csv": summary, "runs.csv": runs_table,
              **{name: _task_table(rows, TABLE_COLUMNS[name], several) for name, rows in found.items()}}
    written = []
    for name, table in tables.items():
        atomic_write_bytes(out_dir / name, table.to_csv(index=False).encode())
        written.append(out_dir / name)
    report.written = written + report.written


def _task_table(tables: list[pd.DataFrame], columns: list[str], several: bool) -> pd.DataFrame:
    """effects.csv, interactions.csv or variance.csv: every task's rows, with a leading ``task``
    column when there are several."""
    if not tables:
        return pd.DataFrame(columns=(["task"] if several else []) + columns)
    out = pd.concat(tables, ignore_index=True)
    if not several:
        return out.drop(columns="task")
    return out[["task", *[c for c in out.columns if c != "task"]]]


def _metric_note(report: Report, df: pd.DataFrame, asked: str, task: str) -> None:
    """Say which metric ranks, why, and which configurations it leaves out (never silently);
    say when replicates are unblocked and when runs of one seed are duplicates."""
    metric, prefix = report.metric, "" if task == "bytes" else f"{task}: "
    done = df[df["status"] == "done"] if len(df) else df
    if not len(done):
        return
    if "test loss" not in done or done["test loss"].isna().all():
        report.messages.append(f"{prefix}no run has test metrics (they were made before the validation/test "
                               "split): val loss both selects and reports here, so the best's is biased low")
    elif done["test loss"].isna().any():
        report.messages.append(f"{prefix}{int(done['test loss'].isna().sum())} of {len(done)} finished runs have no "
                               "test metrics (made before the validation/test split)")
    if asked == "auto" and metric == "min loss":
        report.messages.append(f"{prefix}ranked by min loss: no finished run records val loss (the original "
                               "study's files)")
    lacking = done.groupby("config id")[metric].apply(lambda v: v.isna().all()) if metric in done else None
    if lacking is not None and lacking.any():
        names = [label(done[done["config id"] == c].iloc[0]) + f" ({c[:8]})" for c in lacking[lacking].index]
        report.messages.append(f"{prefix}{len(names)} configuration(s) have no finished run with {metric} and are "
                               f"left out of the ranking by it: {', '.join(names[:10])}" + (" ..." if len(names) > 10 else ""))
    if "seed blocks" in done and not done["seed blocks"].fillna(False).astype(bool).all() and done[
            "config id"].duplicated().any():
        report.messages.append(f"{prefix}runs in the original study's format: their training index did not fix "
                               "their data, so their replicates are unblocked (compared by their means, not within "
                               "seeds)")
    dup = duplicates(done)
    if len(dup):
        listed = "; ".join(f"{r['config id'][:8]} seed {r['seed']}: {r['files']}" for _, r in dup.head(5).iterrows())
        report.messages.append(f"{prefix}{len(dup)} (configuration, seed) pair(s) have more than one run; each "
                               f"counts once (their mean), never as independent replicates: {listed}"
                               + (" ..." if len(dup) > 5 else ""))


# ---------------------------------------------------------------------------- one task
def _examine_task(sweep: Sweep, df: pd.DataFrame, task: str, asked: str, summary: pd.DataFrame, threshold: float,
                  out_dir: Path, data_path: str | None, level: int
                  ) -> tuple[Report, str, tuple[pd.DataFrame | None, ...]]:
    """One task's ranking, effects, plots and summary section: its report (and the task's ``could
    be best`` column of ``summary``), the section's markdown and the effects, interactions,
    variance and per-rate tables."""
    report = Report(runs=len(df), status=sweep.counts, best=None, below=0,
                    metric=ranking_metric(df) if asked == "auto" else asked,
                    messages=sweep.messages if task == "bytes" else [], stage=sweep.stage)
    _metric_note(report, df, asked, task)
    metric, memory = report.metric, task != "bytes"
    # ranked: finished runs only; a diverged run's min loss is from before it diverged
    scored = df[(df["status"] == "done") & df[metric].notna()].sort_values(metric, kind="stable")
    diverged = df[df["status"] == "diverged"]
    if len(diverged):
        report.messages.append(f"{len(diverged)} diverged run(s) are listed as diverged and left out of every "
                               "ranking and threshold")
    tuned = tune(df, metric)  # a swept lr: each configuration at its own best rate, cross-fitted over seeds
    view = tuned.runs.sort_values(metric, kind="stable") if tuned is not None else scored
    eff, inter, var = _effects_of(view, metric, report)
    by_rate = None
    if tuned is not None:
        by_rate = effects_by_rate(scored, metric, hyperparameters(scored), eff)
        report.tuned, report.by_rate = tuned, by_rate
        _tuned_columns(summary, df, tuned, view, metric)
    refs, ref_lines, line = _references(df, task, metric, threshold, sweep, data_path)
    report.chance = line if memory and math.isfinite(line) else None
    below = scored[scored[metric] < line] if math.isfinite(line) else scored.iloc[:0]
    report.below = len(below)
    ranked = _ranked(summary, df, metric, tuned, view)
    report.configurations = len(ranked)
    if len(ranked):
        _rank_report(report, view, ranked, metric)
        _mark_could_be_best(summary, report, tuned)
        ranked = _ranked(summary, df, metric, tuned, view, report)
    _epochs_note(report, df, task, metric)
    _plot_task(df, view, below, eff, inter, task, report, threshold, ref_lines, sweep.folder.root, out_dir)
    md = task_section(df, view, ranked, below, report, threshold, refs, diverged, eff, task, level, inter, var)
    return report, md, (eff, inter, var, by_rate)


def _effects_of(scored: pd.DataFrame, metric: str, report: Report) -> tuple[pd.DataFrame | None, ...]:
    """Matched-pair effects (and the flagged keys in words), interactions and variance shares."""
    if not len(scored):
        return None, None, None
    eff, pairs = matched_effects(scored, metric, hyperparameters(scored))
    for _, row in eff[eff["heterogeneous"].fillna(False).astype(bool)].iterrows():
        words = explain(row["hyperparameter"], pairs[(row["hyperparameter"], row["from"], row["to"])])
        step = f" ({row['from']} → {row['to']})" if not isinstance(row["from"], (bool, np.bool_)) else ""
        if words:
            report.heterogeneity.append(words + step)
    return eff, interactions(scored, metric), variance_shares(scored, metric)


def _mark_could_be_best(summary: pd.DataFrame, report: Report, tuned: Tuned | None) -> None:
    """summary.csv's ``could be best`` for the task's judged configurations (empty for the others;
    with a swept lr, on the row of each configuration's chosen rate)."""
    if report.could_be_best is None:
        return
    if "could be best" not in summary:
        summary["could be best"] = pd.Series([None] * len(summary), dtype=object)
    row = (lambda i: tuned.row_of.get(i, i)) if tuned is not None else (lambda i: i)  # noqa: E731
    judged = summary["id"].isin({row(i) for i in report.judged_ids})
    summary.loc[judged, "could be best"] = summary.loc[judged, "id"].isin({row(i) for i in report.could_be_best})


def _tuned_columns(summary: pd.DataFrame, df: pd.DataFrame, tuned: Tuned, view: pd.DataFrame, metric: str) -> None:
    """summary.csv with a swept lr: ``tuned`` marks each configuration's rate chosen on all its
    seeds, and that row carries the tuned estimate (``tuned <metric> mean|ci low|ci high``: each
    seed's value from the rate chosen on the other seeds)."""
    summary.loc[summary["id"].isin(set(df["config id"])), "tuned"] = summary["id"].isin(set(tuned.chosen))
    estimates = summarise(view, [metric])
    if not len(estimates):
        return
    by_arch = estimates.set_index("config id")
    for part in ("mean", "ci low", "ci high"):
        column = f"tuned {metric} {part}"
        summary[column] = np.nan
        for arch, cid in tuned.row_of.items():
            if arch in by_arch.index:
                summary.loc[summary["id"] == cid, column] = by_arch.loc[arch, f"{metric} {part}"]


def _references(df: pd.DataFrame, task: str, metric: str, threshold: float, sweep: Sweep,
                data_path: str | None) -> tuple[dict[str, Any] | None, dict[str, float], float]:
    """The corpus's n-gram entropies (bytes) or the task's chance level, as lines for the plots,
    and the level that runs are counted below (the threshold, or the chance level)."""
    if task == "bytes":
        refs = reference_entropies(df, sweep.folder, data_path) if len(df) else None
        where = "held out" if not refs or refs.get("split", LEGACY_SPLIT) == LEGACY_SPLIT else "validation"
        return refs, {f"{name} ({where})": v for name, v in (refs or {}).get("nats per byte", {}).items()}, threshold
    values = df["chance loss"].dropna() if "chance loss" in df else pd.Series(dtype=float)
    chance = float(values.iloc[0]) if len(values) and metric == "val loss" else None
    name = "persistence" if task.startswith("mackey-glass") else "chance"
    return None, ({name: chance} if chance is not None else {}), (chance if chance is not None else math.nan)


def _ranked(summary: pd.DataFrame, df: pd.DataFrame, metric: str, tuned: Tuned | None = None,
            view: pd.DataFrame | None = None, report: Report | None = None) -> pd.DataFrame:
    """The task's configurations with finished runs, by their mean metric. With a swept lr: the
    tuned view's configurations (``id`` the configuration without lr), by their cross-fitted
    means, with the rate chosen on all seeds (``lr``) and ``could be best`` from ``report``."""
    if tuned is not None and view is not None and len(view):
        metrics = [m for m in (*SUMMARY_METRICS, *TASK_METRICS, "test loss", "test bpb")
                   if m in view and view[m].notna().any()]
        table = summarise(view, list(dict.fromkeys(metrics))).rename(columns={"config id": "id"})
        table["tuned lr"] = [tuned.chosen.get(tuned.row_of.get(i, ""), math.nan) for i in table["id"]]
        if report is not None and report.could_be_best is not None:
            judged = set(report.judged_ids)
            table["could be best"] = [(i in set(report.could_be_best)) if i in judged else None for i in table["id"]]
        return table.dropna(subset=[f"{metric} mean"]).sort_values(f"{metric} mean", kind="stable")
    ids = set(df["config id"])
    ranked_from = summary[summary["id"].isin(ids)] if "id" in summary else summary
    if f"{metric} mean" not in ranked_from:
        return ranked_from.iloc[:0]
    return ranked_from[ranked_from["runs"] > 0].dropna(subset=[f"{metric} mean"]).sort_values(
        f"{metric} mean", kind="stable")


def _rank_report(report: Report, scored: pd.DataFrame, ranked: pd.DataFrame, metric: str) -> None:
    """The best configuration, the configurations that could be best and the seed noise, into
    ``report``."""
    top = ranked.iloc[0]
    row = scored[scored["config id"] == top["id"]].iloc[0]
    report.best = {**{k: top[k] for k in CONFIG_KEYS}, "id": top["id"], metric: float(top[f"{metric} mean"]),
                   "ci low": float(top[f"{metric} ci low"]), "ci high": float(top[f"{metric} ci high"]),
                   "runs": int(top["runs"]), "label": label(row) + _at_rate(top)}
    table = seed_table(scored, metric)
    cbb = could_be_best(scored, metric)
    if cbb is not None:
        kept = cbb["table"][cbb["table"]["could be best"]]
        report.could_be_best = list(kept["config id"])
        report.could_be_best_labels = [label(scored[scored["config id"] == c].iloc[0]) for c in report.could_be_best]
        report.judged, report.seeds_judged = cbb["judged"], cbb["seeds"]
        report.judged_ids = list(cbb["table"]["config id"])
        report.not_judged = [label(scored[scored["config id"] == c].iloc[0]) for c in cbb["not judged"]]
        report.one_noise_level = not math.isfinite(cbb["prior dof"])
    report.noise = seed_noise(table)


def _at_rate(row: Any) -> str:
    rate = row.get("tuned lr") if hasattr(row, "get") else None
    return f" at lr {rate:g}" if isinstance(rate, float) and math.isfinite(rate) else ""


def _epochs_note(report: Report, df: pd.DataFrame, task: str, metric: str) -> None:
    epochs = df["epochs"].dropna() if "epochs" in df else pd.Series(dtype=float)
    if len(epochs) and epochs.max() > 1:
        report.messages.append(
            f"{'' if task == 'bytes' else task + ': '}runs read the training split up to {epochs.max():.1f} times: "
            "the training curve (and min loss) then measures memorising too; held-out val loss is the measure "
            "to trust" + ("" if metric in ("val loss", "min val loss") else " (rank with --metric 'val loss')")
            + (", and the end of training and the validation curve's minimum can disagree (the Memorisation "
               "section)" if "min val loss" in df and df["min val loss"].notna().any() else ""))


def _plot_task(df: pd.DataFrame, scored: pd.DataFrame, below: pd.DataFrame, eff: pd.DataFrame | None,
               inter: pd.DataFrame | None, task: str,
               report: Report, threshold: float, ref_lines: dict[str, float], results_dir: Path,
               out_dir: Path) -> None:
    """The task's curves and hyperparameter figures (file names with the task), and for bytes
    the figure of the runs below the threshold."""
    metric, memory, messages = report.metric, task != "bytes", report.messages
    suffix = "" if not memory else "_" + _slug(task)
    title = f"{task}: " if memory else ""
    curves_png = out_dir / CURVES_PNG.replace(".png", f"{suffix}.png")
    hyper_png = out_dir / HYPER_PNG.replace("_hyperparameters", f"{suffix}_hyperparameters")
    if len(df):
        save(plot_curves(df, metric, None if memory else threshold, ref_lines, title=title), curves_png)
        report.written.append(curves_png)
    else:
        messages.append(f"{results_dir}: no results yet; no plots written")
    if len(scored):
        save(plot_hyperparameters(scored, metric, f"{title}{metric} by hyperparameter", eff, reference=ref_lines,
                                  interactions=inter), hyper_png)
        report.written.append(hyper_png)
    elif len(df):
        messages.append(f"{title}no finished run has a {metric!r}; no hyperparameter plot written")
    if memory:
        return
    filtered = out_dir / filtered_name(threshold)
    if len(below):
        save(plot_hyperparameters(below, metric, f"runs with {metric} below {threshold:g}"), filtered)
        report.written.append(filtered)
    else:
        filtered.unlink(missing_ok=True)  # a stale plot from an earlier call would mislead
        if len(scored):
            messages.append(f"no run has {metric} below {threshold:g} (best: {scored.iloc[0][metric]:.4f}); "
                            f"{filtered.name} not written")


def _task_groups(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The results by task (its label: the task with its keys), next-byte prediction first."""
    if not len(df) or "task label" not in df or set(df["task label"].dropna()) <= {"bytes"}:
        return [("bytes", df)]
    labels = sorted(df["task label"].fillna("bytes").unique(), key=lambda t: (t != "bytes", t))
    return [(t, df[df["task label"].fillna("bytes") == t]) for t in labels]


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text).strip("_").replace("__", "_")


# ---------------------------------------------------------------------------- tables
def _keys(df: pd.DataFrame, configs: list[dict] | None) -> list[str]:
    optional = [*EXTRA_KEYS, *ALL_CELL_KEYS, *ALL_TASK_KEYS]
    return [*CONFIG_KEYS, *[k for k in optional if k != "seed" and (k in df or (configs and any(k in c for c in configs)))]]


def _runs_table(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """runs.csv: one row per run."""
    metrics = ["status", "seed", "min loss", "val loss", "val bpb", "test loss", "test bpb", "min val loss", "min val step",
               "train split loss", "generalisation gap", "test bpb (whole split)", "final loss", "epochs", "training steps",
               "parameters", "steps per second", "resumes", "attempts", "error", "config id", "file"]
    out = df.reindex(columns=[*keys, "id", *[m for m in metrics if m != "final loss"]]).copy()
    out.insert(out.columns.get_loc("min loss"), "final loss",
               [r[-1] if isinstance(r, list) and r else None for r in df["loss"]])
    return out


def _summary_table(df: pd.DataFrame, configs: list[dict] | None, running: set[str], keys: list[str]) -> pd.DataFrame:
    """summary.csv: one row per configuration (replicates together), pending ones included."""
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
