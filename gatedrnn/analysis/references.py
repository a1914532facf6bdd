"""The n-gram references a loss is read against: the corpus's unigram, bigram and trigram
cross-entropies on the split the runs are measured on (DESIGN.md, "Training without BPTT"); and
memorisation in sight (issue 39): how far each run's validation curve fell before its end, the
gap between what it scores on held-out text and on text it trained on (read against what the
n-gram models say of the two texts), and whether ranking by the end of training (the original's,
the default) and by the curve's minimum agree. No torch.

A result records ``min val loss`` and ``min val step`` (the validation curve's lowest point and
its step), ``train split loss`` (fixed streams of the training split, by the same held-out
procedure as ``val loss``) and ``generalisation gap`` (``val loss`` minus it, at the end).
Ranking by ``min val loss`` picks each run's best point on the validation curve itself: a
selection on validation, so the best's value is optimistic, as the tuned view's is.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from ..spec.atomic import atomic_write_json
from ..spec.config import LEGACY_SPLIT
from ..data.corpus import Corpus, DataError, load_corpus, ngram_cross_entropies, validation_streams
from ..store.folder import ResultsFolder
from .results import label
from .rungs import rank_agreement

__all__ = ["reference_entropies", "NGRAM_NAMES", "memorisation_lines", "RANK_ON", "TOP"]

NGRAM_NAMES = {1: "unigram", 2: "bigram", 3: "trigram"}


def reference_entropies(df: pd.DataFrame, folder: ResultsFolder, data_path: str | None = None) -> dict[str, Any] | None:
    """Unigram/bigram/trigram cross-entropies of the results' corpus on the splits its runs are
    measured on, when the corpus is at hand (the built-in corpus, the file the results name, or
    ``data_path``) and its SHA-256 matches: ``nats per byte`` on the validation split (what a
    ``val loss`` is drawn against; the whole held-out part under the ``tail`` rule and for files
    without settings) and ``test`` on the test split (None without one). Cached beside the results
    as ``.ngram-<sha256>.json``."""
    if "dataset sha256" not in df or df["dataset sha256"].dropna().empty:
        return None
    shas = df["dataset sha256"].dropna()
    sha = shas.mode().iloc[0]
    rows = df[df["dataset sha256"] == sha]
    rule, history, streams = _split_of(rows)
    cache = folder.ngram_cache(sha)
    try:
        cached = json.loads(cache.read_text())
        if (cached.get("sha256"), cached.get("split"), cached.get("history"), cached.get("streams")) == (
                sha, rule, history, streams):
            return cached
    except (OSError, ValueError):
        pass
    candidates = [data_path] if data_path else []
    name = rows["dataset"].dropna().iloc[0] if "dataset" in rows and rows["dataset"].notna().any() else None
    if isinstance(name, str) and name.startswith("builtin:"):
        candidates.append(name)
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
        val, test = ((corpus.val, None) if rule == "tail" else
                     (corpus.heldout("val", rule, history), corpus.heldout("test", rule, history)))
        named = lambda h: {NGRAM_NAMES[k]: v for k, v in h.items()}  # noqa: E731
        out = {"sha256": sha, "dataset": corpus.name, "bytes": len(corpus), "split": rule, "history": history,
               "streams": streams, "nats per byte": named(ngram_cross_entropies(corpus, heldout=val)),
               "test": None if test is None else named(ngram_cross_entropies(corpus, heldout=test)),
               "train streams": _train_streams(corpus, val, history, streams)}
        try:
            cache.parent.mkdir(exist_ok=True)
            atomic_write_json(cache, out)
        except OSError:
            pass  # a read-only results folder: recompute next time
        return out
    return None


def _train_streams(corpus: Corpus, val: Any, history: int | None, streams: int | None) -> dict[str, float] | None:
    """The unigram's and bigram's cross-entropy on the streams of the training split that a run's
    ``train split loss`` is measured on, minus theirs on the validation streams' (the models that
    memorise next to nothing of megabytes: how much harder the held-out text is, the share of a
    run's generalisation gap that is the text's, not memorising)."""
    if history is None or streams is None:
        return None
    held = validation_streams(val, history, streams).T
    train = validation_streams(corpus.train, history, streams).T
    on_val, on_train = (ngram_cross_entropies(corpus, (1, 2), heldout=x) for x in (held, train))
    return {NGRAM_NAMES[k]: {"nats per byte": on_train[k], "val - train": on_val[k] - on_train[k]} for k in (1, 2)}


def _split_of(rows: pd.DataFrame) -> tuple[str, int | None, int | None]:
    """The split rule, history and streams the runs were measured with (their recorded settings;
    ``tail`` for files without them, such as the original study's)."""
    for settings in rows["settings"].dropna() if "settings" in rows else []:
        if isinstance(settings, dict) and "history" in settings:
            streams = settings.get("val_streams")
            return settings.get("split", LEGACY_SPLIT), int(settings["history"]), streams
    return LEGACY_SPLIT, None, None

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
