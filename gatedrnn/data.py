"""Byte corpora, their splits, and batches of parallel streams.

The first 90 % of a corpus is the training split. The held-out 10 % is divided by a split rule
(:data:`SPLIT_RULES`): ``blocks`` (the default) cuts it into blocks of :data:`HELDOUT_BLOCK`
bytes (smaller where it holds fewer than two) and gives the even-numbered blocks to validation,
the odd-numbered ones to test, so that neither is one contiguous topical slice; ``tail`` (results
made before the rule existed) uses the whole held-out part for validation and has no test split.

A corpus is any file (plain, .gz, .bz2, .xz, or a .zip with one member) read as raw bytes, or
the built-in corpus: the English text of the Python documentation topics that ships with every
CPython (``pydoc_data.topics``, about 465 KB).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "BUILTIN",
    "DataError",
    "Corpus",
    "load_corpus",
    "validation_streams",
    "ngram_cross_entropies",
    "SPLIT_RULES",
    "HELDOUT_BLOCK",
    "sweep_data",
]

BUILTIN = "builtin:pydoc_topics"
VAL_FRACTION = 0.1
SPLIT_RULES = ("blocks", "tail")
HELDOUT_BLOCK = 4096


class DataError(ValueError):
    """A corpus that cannot be used: missing, unreadable, empty or too short."""


@dataclass(frozen=True)
class Corpus:
    name: str  # the file's name, or BUILTIN
    path: str | None
    sha256: str
    data: np.ndarray  # uint8, the whole corpus

    def __len__(self) -> int:
        return int(self.data.shape[0])

    @property
    def n_train(self) -> int:
        return int(len(self) * (1 - VAL_FRACTION))

    @property
    def train(self) -> np.ndarray:
        return self.data[: self.n_train]

    @property
    def val(self) -> np.ndarray:
        """The whole held-out part (the n-gram references' data)."""
        return self.data[self.n_train :]

    def heldout(self, part: str, rule: str = "blocks") -> np.ndarray | None:
        """The ``val`` or ``test`` split of the held-out part under ``rule`` (None: ``tail`` has
        no test split)."""
        if rule not in SPLIT_RULES:
            raise ValueError(f"split rule must be one of {', '.join(SPLIT_RULES)}, got {rule!r}")
        held = self.val
        if rule == "tail":
            return held if part == "val" else None
        block = max(1, min(HELDOUT_BLOCK, len(held) // 2))
        starts = range(0 if part == "val" else block, len(held), 2 * block)
        return np.concatenate([held[s : s + block] for s in starts])

    def describe(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "bytes": len(self)}


def _builtin_bytes() -> bytes:
    from pydoc_data.topics import topics

    return "".join(topics[k] for k in sorted(topics)).encode("utf-8")


def _read_file(path: Path) -> tuple[np.ndarray, str]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        elif suffix == ".bz2":
            with bz2.open(path, "rb") as f:
                raw = f.read()
        elif suffix in (".xz", ".lzma"):
            with lzma.open(path, "rb") as f:
                raw = f.read()
        elif suffix == ".zip":
            with zipfile.ZipFile(path) as z:
                members = [m for m in z.infolist() if not m.is_dir()]
                if len(members) != 1:
                    raise DataError(f"{path}: a zip corpus must hold exactly one file, found {len(members)}")
                raw = z.read(members[0])
        else:
            if path.stat().st_size == 0:
                raise DataError(f"{path}: the corpus file is empty")
            data = np.memmap(path, dtype=np.uint8, mode="r")
            digest = hashlib.sha256()
            for start in range(0, len(data), 1 << 24):
                digest.update(data[start : start + (1 << 24)])
            return data, digest.hexdigest()
    except DataError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, lzma.LZMAError) as e:
        raise DataError(f"{path}: cannot read the corpus ({e.__class__.__name__}: {e})") from None
    return np.frombuffer(raw, dtype=np.uint8), hashlib.sha256(raw).hexdigest()


def load_corpus(path: str | os.PathLike | None = None) -> Corpus:
    """Load a corpus file (or the built-in corpus when ``path`` is None) as uint8 bytes."""
    if path is None or str(path) == BUILTIN:
        raw = _builtin_bytes()
        return Corpus(BUILTIN, None, hashlib.sha256(raw).hexdigest(), np.frombuffer(raw, dtype=np.uint8))
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such corpus file")
    if not p.is_file():
        raise DataError(f"{p}: the corpus is not a file")
    data, sha = _read_file(p)
    if len(data) == 0:
        raise DataError(f"{p}: the corpus is empty")
    return Corpus(p.name, str(p.resolve()), sha, data)


def check_length(corpus: Corpus, history: int) -> None:
    """Both splits must hold at least one window of ``history`` + 1 bytes."""
    need = history + 1
    where = corpus.path or corpus.name
    if corpus.n_train < need or len(corpus.val) < 4:
        raise DataError(
            f"{where}: {len(corpus)} bytes is too short for history {history}: the training split "
            f"(90 %) needs at least {need} bytes, i.e. a corpus of at least {int(np.ceil(need / 0.9)) + 1} bytes"
        )


def validation_streams(val: np.ndarray, history: int, max_streams: int) -> np.ndarray:
    """Fixed validation windows: up to ``max_streams`` non-overlapping streams of ``history`` + 1
    bytes, spread evenly over the held-out split. Returns (length + 1, streams) uint8."""
    length = min(history, len(val) - 1)
    streams = max(1, min(max_streams, (len(val) - 1) // length))
    last_start = len(val) - 1 - length
    starts = np.linspace(0, last_start, streams).astype(np.int64) if streams > 1 else np.zeros(1, np.int64)
    idx = starts[None, :] + np.arange(length + 1)[:, None]
    return np.asarray(val)[idx]


def ngram_cross_entropies(corpus: Corpus, orders=(1, 2, 3), prior: float = 1.0) -> dict[int, float]:
    """Held-out cross-entropy (nats per byte) of byte n-gram models fitted on the training split.

    Order k predicts a byte from the k - 1 bytes before it. Each order is smoothed towards the
    order below with a Dirichlet prior of strength ``prior`` (order 1 towards uniform):
    ``p_k(c | ctx) = (count(ctx c) + prior * p_{k-1}(c | ctx')) / (count(ctx) + prior)``.
    """
    train = np.asarray(corpus.train, dtype=np.int64)
    val = np.asarray(corpus.val, dtype=np.int64)
    top = max(orders)
    out: dict[int, float] = {}
    # probabilities of each validation byte (from position top-1 on) under each order
    target = val[top - 1 :]
    p_lower = np.full(target.shape, 1.0 / 256)
    for k in range(1, top + 1):
        n_ctx = 256 ** (k - 1)
        grams = np.zeros(len(train) - k + 1, dtype=np.int64)
        for j in range(k):
            grams = grams * 256 + train[j : len(train) - k + 1 + j]
        counts = np.bincount(grams, minlength=n_ctx * 256)
        ctx_counts = counts.reshape(n_ctx, 256).sum(axis=1)
        vgrams = np.zeros(len(target), dtype=np.int64)
        for j in range(k):
            vgrams = vgrams * 256 + val[top - k + j : len(val) - k + 1 + j]  # byte i-k+1+j
        p = (counts[vgrams] + prior * p_lower) / (ctx_counts[vgrams // 256] + prior)
        if k in orders:
            out[k] = float(-np.log(p).mean())
        p_lower = p
    return out


def sweep_data(data: str | None, tasks: set[str], history: int) -> tuple[Corpus | None, str]:
    """What a sweep reads from ``--data``, and its identity (recorded with the folder's settings):
    the corpus (checked for ``history``) for next-byte prediction and the generated tasks, or
    MNIST (:mod:`gatedrnn.mnist`) for a sweep of ``smnist``, whose corpus is then None. One
    folder's sweep cannot be both: DataError."""
    if "smnist" in tasks:
        from .mnist import MnistError, load_mnist

        if "bytes" in tasks:
            raise DataError(f"{data or BUILTIN}: one --data cannot serve smnist (MNIST) and next-byte prediction (a "
                            "corpus); sweep them in separate results folders")
        try:
            return None, load_mnist(data).sha256
        except MnistError as e:
            raise DataError(str(e)) from None
    corpus = load_corpus(data)
    check_length(corpus, history)
    return corpus, corpus.sha256
