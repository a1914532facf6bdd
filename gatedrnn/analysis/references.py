"""The n-gram references a loss is read against: the corpus's unigram, bigram and trigram
cross-entropies on the split the runs are measured on (DESIGN.md, "Training without BPTT"). No
torch."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from ..spec.atomic import atomic_write_json
from ..spec.config import LEGACY_SPLIT
from ..data.corpus import Corpus, DataError, load_corpus, ngram_cross_entropies, validation_streams
from ..store.folder import ResultsFolder

__all__ = ["reference_entropies", "NGRAM_NAMES"]

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
