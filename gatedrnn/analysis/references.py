"""The n-gram references a loss is read against: the corpus's unigram, bigram and trigram
cross-entropies on the split the runs are measured on (DESIGN.md, "Training without BPTT"). No
torch."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from ..spec.atomic import atomic_write_json
from ..spec.config import LEGACY_SPLIT
from ..data.corpus import BUILTIN, DataError, load_corpus, ngram_cross_entropies
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
    rule, history = _split_of(rows)
    cache = folder.ngram_cache(sha)
    try:
        cached = json.loads(cache.read_text())
        if (cached.get("sha256"), cached.get("split"), cached.get("history")) == (sha, rule, history):
            return cached
    except (OSError, ValueError):
        pass
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
        val, test = ((corpus.val, None) if rule == "tail" else
                     (corpus.heldout("val", rule, history), corpus.heldout("test", rule, history)))
        named = lambda h: {NGRAM_NAMES[k]: v for k, v in h.items()}  # noqa: E731
        out = {"sha256": sha, "dataset": corpus.name, "bytes": len(corpus), "split": rule, "history": history,
               "nats per byte": named(ngram_cross_entropies(corpus, heldout=val)),
               "test": None if test is None else named(ngram_cross_entropies(corpus, heldout=test))}
        try:
            atomic_write_json(cache, out)
        except OSError:
            pass  # a read-only results folder: recompute next time
        return out
    return None


def _split_of(rows: pd.DataFrame) -> tuple[str, int | None]:
    """The split rule and history the runs were measured with (their recorded settings; ``tail``
    for files without them, such as the original study's)."""
    for settings in rows["settings"].dropna() if "settings" in rows else []:
        if isinstance(settings, dict) and "history" in settings:
            return settings.get("split", LEGACY_SPLIT), int(settings["history"])
    return LEGACY_SPLIT, None
