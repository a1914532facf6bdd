"""The sweep's figures (DESIGN.md, "Layout"): loss curves, and the metric by each hyperparameter
beside its matched-pair effects. Functions take a results table (:func:`gatedrnn.analysis.results.load`)
and return a matplotlib figure; :func:`save` writes one atomically. No torch.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; works without a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ..spec.atomic import atomic_write  # noqa: E402
from ..spec.config import SWITCHES  # noqa: E402
from .results import hyperparameters, label  # noqa: E402

__all__ = ["plot_curves", "plot_hyperparameters", "save"]


def save(fig: plt.Figure, path: Path) -> None:
    """Write ``fig`` as a PNG, atomically, and close it."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def span(values: np.ndarray, margin: float = 0.05) -> tuple[float, float]:
    """A value axis that spans ``values`` with a margin of ``margin`` of their range on each side."""
    lo, hi = float(np.min(values)), float(np.max(values))
    pad = max((hi - lo) * margin, 1e-3 * max(abs(lo), abs(hi), 1.0))
    return lo - pad, hi + pad


def reference_line(ax, name: str, value: float, lo: float, hi: float, order: int = 0, **style) -> None:
    """A labelled horizontal reference at ``value``; outside the axis (``lo``..``hi``, which
    span the runs) a labelled mark on the edge it lies beyond, so that the references never
    squeeze the data the figure is about. ``order`` stacks several marks on one edge."""
    if lo <= value <= hi:
        ax.axhline(value, **{"color": "black", "ls": ":", "lw": 1.0, "zorder": 2, **style})
        ax.annotate(f"{name} {value:.3f}", xy=(1.0, value), xycoords=("axes fraction", "data"), xytext=(-4, 2),
                    textcoords="offset points", ha="right", va="bottom", fontsize=8)
        return
    above = value > hi
    ax.annotate(f"{'▲' if above else '▼'} {name} {value:.3f}", xy=(1.0, 1.0 if above else 0.0),
                xycoords="axes fraction", xytext=(-4, (-3 - 11 * order) if above else (3 + 11 * order)),
                textcoords="offset points", ha="right", va="top" if above else "bottom", fontsize=8,
                color=style.get("color", "0.25"), zorder=6,
                bbox=dict(boxstyle="square,pad=0.15", fc="white", ec="none", alpha=0.8))


def _reference_lines(ax, references: dict[str, float], lo: float, hi: float, **style) -> None:
    above = below = 0
    for name, value in references.items():
        order = above if value > hi else below
        reference_line(ax, name, value, lo, hi, order, **style)
        above, below = above + (value > hi), below + (value < lo)


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
    if len(points):
        # the axis spans the runs; the moving average starts at 3.0 and may first climb: all but
        # the extreme 1 %
        lo, hi = span(np.array([points.min(), np.percentile(points, 99)]))
        ax.set_ylim(lo, hi)
    else:
        lo, hi = -math.inf, math.inf
    if threshold is not None:
        if lo <= threshold <= hi:
            ax.axhline(threshold, color="crimson", ls="--", lw=1.2, zorder=2, label=f"threshold {threshold:g}")
        else:
            reference_line(ax, "threshold", threshold, lo, hi, color="crimson")
    _reference_lines(ax, references or {}, lo, hi)
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


def _show(v) -> str:
    """A hyperparameter's value as an axis label: on/off for a switch."""
    if isinstance(v, (bool, np.bool_)):
        return "on" if v else "off"
    if isinstance(v, str):
        return v
    return str(int(v)) if float(v).is_integer() else f"{float(v):g}"  # a learning rate: 0.0003


def _strip_panel(ax, data: pd.DataFrame, key: str, metric: str, biggest: int,
                 reference: dict[str, float] | None) -> None:
    """Each run's metric by the key's value (a jittered strip), the mean per value marked."""
    sub = data[data[key].notna()]  # a switch exists for the gated cell only
    values = sub[key]
    if key in SWITCHES:
        order = [False, True]
        values = values.astype(bool)
    elif key == "cell":
        order = sorted(values.unique().tolist(), key=lambda c: (c != "gated", c))
    else:
        order = sorted(values.unique().tolist())
    order = [_show(v) for v in order]
    plot_df = pd.DataFrame({"value": pd.Categorical(values.map(_show), categories=order),
                            metric: sub[metric].to_numpy()})
    size = float(np.clip(60 / max(biggest, 1) ** 0.5, 2.0, 6))
    sns.stripplot(data=plot_df, x="value", y=metric, order=order, ax=ax, size=size, jitter=0.3,
                  alpha=0.85 if biggest < 50 else 0.55, color="tab:blue")
    means = plot_df.groupby("value", observed=False)[metric].mean()
    for i, v in enumerate(order):
        if pd.notna(means.get(v)):
            ax.hlines(means[v], i - 0.35, i + 0.35, color="crimson", lw=2.2, zorder=5)
            ax.annotate(f"mean {means[v]:.3f}", xy=(i, means[v]), xytext=(0, 3), textcoords="offset points",
                        fontsize=7, color="crimson", ha="center", va="bottom", zorder=6,
                        bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none", alpha=0.7))
    if len(data):  # the shared axis spans the runs; a chance line outside it is a mark on the edge
        lo, hi = span(data[metric].to_numpy(dtype=float))
        ax.set_ylim(lo, hi)
        _reference_lines(ax, reference or {}, lo, hi, zorder=4)
    note = f" ({len(sub)} gated runs)" if key in SWITCHES and len(sub) < len(data) else ""
    ax.set_title(key.replace("use_", "").replace("_", " ") + note, fontsize=10)
    ax.set_xlabel("")
    ax.set_ylabel(metric)
    ax.grid(axis="y", alpha=0.3)


def _effect_panel(ax, rows: pd.DataFrame, metric: str) -> None:
    """A key's matched-pair effects per step: the median difference (circle) and the mean
    (diamond, just below), each with its 95 % interval; a heterogeneous step is marked."""
    for i, (_, r) in enumerate(rows.iterrows()):
        for offset, centre, lo, hi, marker in ((0.0, r["median difference"], r["ci low"], r["ci high"], "o"),
                                               (-0.25, r.get("mean difference", math.nan), r.get("mean ci low", math.nan),
                                                r.get("mean ci high", math.nan), "D")):
            if not math.isfinite(centre):
                continue
            err = None if not (math.isfinite(lo) and math.isfinite(hi)) else [[centre - lo], [hi - centre]]
            colour = ("tab:green" if math.isfinite(hi) and hi < 0 else "tab:red" if math.isfinite(lo) and lo > 0
                      else "0.3")
            ax.errorbar(centre, i + offset, xerr=err, fmt=marker, color=colour, capsize=3, lw=1.6, ms=5)
    if not len(rows):
        ax.text(0.5, 0.5, "no matched pairs\n(one value swept)", ha="center", va="center",
                transform=ax.transAxes, fontsize=9, color="0.4")
        ax.set_xticks([])
    ax.axvline(0, color="black", lw=0.8, ls=":")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{_show(r['from'])}→{_show(r['to'])}  ({int(r['pairs'])} pairs)"
                        + ("\nheterogeneous" if r.get("heterogeneous") in (True,) else "") for _, r in rows.iterrows()],
                       fontsize=8)
    ax.set_ylim(-0.7, max(len(rows), 1) - 0.3)
    ax.set_xlabel(f"Δ {metric} (to − from): ● median, ◆ mean", fontsize=8)
    ax.set_title("matched-pair effect, 95 % CI", fontsize=9)
    ax.grid(axis="x", alpha=0.3)


def plot_hyperparameters(df: pd.DataFrame, metric: str, title: str,
                         effects_table: pd.DataFrame | None = None,
                         reference: dict[str, float] | None = None,
                         interactions: pd.DataFrame | None = None) -> plt.Figure:
    """One panel per hyperparameter: each run's metric by the hyperparameter's value (a jittered
    strip: seaborn's swarm redraws the whole figure once per panel, seconds at this size), the
    mean per value marked. With ``effects_table`` (:func:`gatedrnn.analysis.effects.effects`), each
    panel is followed by one of the key's matched-pair effects: the median and the mean difference
    with their 95 % intervals per step of the key (from -> to), zero marked. With ``interactions``
    (:func:`gatedrnn.analysis.effects.interactions`), a last panel maps the two-way interactions."""
    keys = hyperparameters(df)
    data = df[df[metric].notna()].copy()
    with_effects = effects_table is not None and len(effects_table) > 0
    with_map = interactions is not None and len(interactions) > 0
    per_key = 2 if with_effects else 1
    ncols = (4 if len(keys) > 9 else 3) if not with_effects else 4
    panels = math.ceil(len(keys) * per_key / ncols)
    nrows = panels + (2 if with_map else 0)
    fig, grid = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), layout="constrained",
                             squeeze=False)
    if with_map:
        for ax in grid[panels:].flat:
            ax.remove()
        _interaction_panel(fig.add_subplot(grid[0, 0].get_gridspec()[panels:, :min(ncols, 3)]), interactions)
        grid = grid[:panels]
    flat = list(grid.flat)
    axes_strip = flat[0:len(keys) * per_key:per_key]
    for ax in axes_strip[1:]:
        ax.sharey(axes_strip[0])
    biggest = max((data[k].value_counts().max() for k in keys if len(data)), default=0)
    for ax, key in zip(axes_strip, keys):
        _strip_panel(ax, data, key, metric, biggest, reference)
    if with_effects:
        for ax, key in zip(flat[1:len(keys) * per_key:per_key], keys):
            _effect_panel(ax, effects_table[effects_table["hyperparameter"] == key], metric)
    for ax in flat[len(keys) * per_key:]:
        ax.set_visible(False)
    extra = "; right of each: matched-pair effect (green lowers the loss)" if with_effects else ""
    fig.suptitle(f"{title} — {len(data)} runs; red bar: mean per value{extra}", fontsize=12)
    return fig


def _interaction_panel(ax, interactions: pd.DataFrame) -> None:
    """A heat map of the two-way interactions (each pair of keys at its first steps): the
    difference of differences, blue where the combination lowers the loss, * where the 95 %
    interval excludes zero."""
    first = interactions.drop_duplicates(["a", "b"])
    keys = list(dict.fromkeys([*first["a"], *first["b"]]))
    matrix = np.full((len(keys), len(keys)), np.nan)
    stars = {}
    for _, r in first.iterrows():
        i, j = keys.index(r["a"]), keys.index(r["b"])
        matrix[j, i] = r["interaction"]
        stars[(j, i)] = r["ci low"] > 0 or r["ci high"] < 0
    limit = float(np.nanmax(np.abs(matrix))) if np.isfinite(matrix).any() else 1.0
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit)
    for (j, i), star in stars.items():
        ax.text(i, j, f"{matrix[j, i]:+.3f}{'*' if star else ''}", ha="center", va="center", fontsize=7)
    short = [k.replace("use_", "").replace("_", " ") for k in keys]
    ax.set_xticks(range(len(keys)), short, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(keys)), short, fontsize=8)
    ax.set_title("two-way interactions (difference of differences; * 95 % interval excludes 0)", fontsize=9)
    ax.figure.colorbar(image, ax=ax, shrink=0.8)
