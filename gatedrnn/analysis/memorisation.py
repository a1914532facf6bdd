"""Memorisation in sight (issue 39): how far each run's validation curve fell before its end,
the gap between what it scores on held-out text and on text it trained on, and whether ranking
by the end of training (the original's, the default) and by the curve's minimum agree. No torch.

A result records ``min val loss`` and ``min val step`` (the validation curve's lowest point and
its step), ``train split loss`` (fixed streams of the training split, by the same held-out
procedure as ``val loss``) and ``generalisation gap`` (``val loss`` minus it, at the end).
Ranking by ``min val loss`` picks each run's best point on the validation curve itself: a
selection on validation, so the best's value is optimistic, as the tuned view's is.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from .results import label
from .rungs import rank_agreement

__all__ = ["memorisation_lines", "RANK_ON", "TOP"]

RANK_ON = {"final": "val loss", "min": "min val loss"}  # examine --rank-on
TOP = 5  # the configurations listed from each ranking


def memorisation_lines(df: pd.DataFrame, metric: str, h: str, refs: dict[str, Any] | None = None) -> list[str]:
    """summary.md's section: the gap, where the minima fall, and the two rankings side by side
    (nothing for results that record neither, such as those made before issue 39)."""
    done = df[df["status"] == "done"] if "status" in df else df
    has = [c for c in ("generalisation gap", "min val loss") if c in done and done[c].notna().any()]
    if not has:
        return []
    out = [f"{h} Memorisation: the end of training against the curve's minimum", ""]
    out += _epochs(done) + _gap(done, (refs or {}).get("train streams")) + _minima(done) + [""]
    out += _rankings(done, metric)
    return out


def _epochs(done: pd.DataFrame) -> list[str]:
    epochs = done["epochs"].dropna() if "epochs" in done else pd.Series(dtype=float)
    if not len(epochs):
        return []
    most = float(epochs.max())
    if most > 1:
        return [f"- **The runs read their training text up to {most:.1f} times.** Past once, a falling training "
                "loss is partly memorising: the end of training and the curve's minimum can disagree (below)."]
    return [f"- The runs read at most {most:.2f} times their training split's size: less than one pass, so the "
            "end of training measures modelling, not memorising."]


def _gap(done: pd.DataFrame, text: dict[str, Any] | None) -> list[str]:
    gap = done["generalisation gap"].dropna() if "generalisation gap" in done else pd.Series(dtype=float)
    if not len(gap):
        return []
    line = (f"- **Generalisation gap** (val loss − the training split's loss at the end, both by the held-out "
            f"procedure): median {gap.median():+.3f} nats/byte, from {gap.min():+.3f} to {gap.max():+.3f} over "
            f"{len(gap)} runs")
    if "state_size" in done and done.loc[gap.index, "state_size"].nunique() > 1:
        by = done.loc[gap.index].groupby("state_size")["generalisation gap"].median()
        line += " (median by state size: " + ", ".join(f"{int(k)}: {v:+.3f}" for k, v in by.items()) + ")"
    line += "."
    if text:
        line += (" Part of it is the text, not memorising: on the same streams the unigram and bigram models, which "
                 "memorise next to nothing of megabytes, score " + " and ".join(
                     f"{v['val - train']:+.3f}" for v in text.values()) + " nats/byte (held-out minus training "
                 "text). A gap well above that, and one that grows with epochs, is memorising.")
    return [line]


def _minima(done: pd.DataFrame) -> list[str]:
    if "min val step" not in done or done["min val step"].isna().all():
        return []
    rows = done[done["min val step"].notna() & done["training steps"].notna()]
    early = rows[rows["min val step"] < rows["training steps"]]
    if not len(early):
        return [f"- Every one of the {len(rows)} runs has its lowest validation loss at its last evaluation."]
    rise = (early["val loss"] - early["min val loss"])
    return [f"- {len(early)} of {len(rows)} runs had their lowest validation loss before the end (median step "
            f"{int(early['min val step'].median())} of {int(rows['training steps'].max())}); they ended "
            f"{rise.median():.3f} nats/byte above it (median; at most {rise.max():.3f})."]


def _rankings(done: pd.DataFrame, metric: str) -> list[str]:
    """Spearman's agreement between the two rankings (95 % interval) and the top of each."""
    if "min val loss" not in done or done["min val loss"].isna().all() or "val loss" not in done:
        return []
    by_min = done.assign(**{"val loss": done["min val loss"]})
    agree = rank_agreement(done, by_min, "val loss")
    if agree is None:
        return []
    ci = (f" [{agree['ci low']:+.2f}, {agree['ci high']:+.2f}]" if math.isfinite(agree["ci low"])
          else " (too few configurations for an interval)")
    rho = agree["spearman"]
    tops = [_top(done, col) for col in ("val loss", "min val loss")]
    same = len(set(tops[0]) & set(tops[1]))
    ranked = "min val loss" if metric == "min val loss" else "val loss"
    out = [f"Ranking by the final val loss (the original's: the end of training) and by the minimum of each "
           f"run's validation curve: Spearman {rho:+.2f}{ci} over {agree['configurations']} configurations; "
           f"{same} of the top {len(tops[0])} are the same. This summary ranks by **{ranked}**"
           + (" (`examine --rank-on min`): a selection on validation (each run's best point), so its best "
              "values are optimistic, as the tuned view's are." if ranked == "min val loss" else
              " (`examine --rank-on min` ranks by the minimum: optimistic, a selection on validation)."), "",
           "| # | by final val loss | val loss | by min val loss (optimistic) | min val loss |", "|---|---|---|---|---|"]
    means = [done.groupby("config id")[col].mean() for col in ("val loss", "min val loss")]
    for k in range(max(len(t) for t in tops)):
        cells = []
        for top, m in zip(tops, means):
            cells += [_name(done, top[k]), f"{m[top[k]]:.4f}"] if k < len(top) else ["", ""]
        out.append(f"| {k + 1} | " + " | ".join(cells) + " |")
    return out + [""]


def _top(done: pd.DataFrame, column: str) -> list[str]:
    return list(done.groupby("config id")[column].mean().dropna().sort_values(kind="stable").index[:TOP])


def _name(done: pd.DataFrame, cid: str) -> str:
    return label(done[done["config id"] == cid].iloc[0])
