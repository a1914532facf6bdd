"""Byte corpora, their splits, and batches of parallel streams.

The first 90 % of a corpus is the training split. The held-out 10 % is divided by a split rule
(:data:`SPLIT_RULES`):

* ``windows`` (the default): the held-out part is cut into consecutive windows of ``history`` + 1
  bytes (one evaluation stream each; half the held-out part where it holds fewer than two), and
  the windows into consecutive pairs (0, 1), (2, 3), ... (a last odd window and the bytes after
  the last whole window are left out). One window of each pair goes to validation and the other
  to test: in pair order, the one that keeps the two splits' running unigram and bigram
  cross-entropies (the models of :func:`ngram_cross_entropies`, fitted on the training split)
  closest together goes to validation (the first window on a tie). Neighbouring windows are
  alike (the same topic), so the two splits are samples of the same text, matched on how hard
  their bytes are for simple models; nothing of a trained network enters the rule. Deterministic:
  a function of the corpus and the history alone.
* ``contiguous`` (the literature's rule, enwik8's and text8's 90/5/5; by request, and the default
  for a new folder on enwik8 or text8 as shipped): the first half of the held-out part validates,
  the second half tests. The two are different stretches of text, not exchangeable: a gap
  between them is the text's as much as the model's.
* ``blocks`` (folders made between issues 23 and 30): blocks of :data:`HELDOUT_BLOCK` bytes,
  even-numbered ones validation, odd-numbered ones test. On the built-in corpus's 12 blocks the
  two splits were different text (a bigram model: 2.52 against 2.20 nats per byte).
* ``tail`` (results made before either) uses the whole held-out part for validation and has no
  test split.

A corpus is any file (plain, .gz, .bz2, .xz, or a .zip with one member) read as raw bytes, or
a built-in corpus:

* ``builtin:python-docs`` (:data:`BUILTIN`, the default): the reStructuredText sources of the
  Python 3.11 documentation (11.0 MB, PSF License Version 2), shipped with the package as
  ``builtin/python-docs-3.11.txt.gz`` (made by tools/make_builtin_corpus.py from Debian's
  python3.11-doc) and checked against its pinned SHA-256 on load: the same bytes on every
  machine, and a training split (9.9 MB) that the original's settings (10,000 steps x 256
  streams = 2.56 MB) read a quarter of.
* ``builtin:pydoc_topics`` (:data:`PYDOC_TOPICS`, the default before issue 39): the documentation
  topics of the running interpreter (``pydoc_data.topics``, about 465 KB). Its bytes change with
  the CPython build; a folder made on it resumes only where the interpreter gives the same bytes.
"""

from __future__ import annotations

import bz2
import functools
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
    "BUILTIN_SHA256",
    "PYDOC_TOPICS",
    "builtin_bytes",
    "folder_data",
    "literature_split",
    "VOCAB",
    "DataError",
    "Corpus",
    "load_corpus",
    "validation_streams",
    "ngram_cross_entropies",
    "SPLIT_RULES",
    "HELDOUT_BLOCK",
    "sweep_data",
]

BUILTIN = "builtin:python-docs"
BUILTIN_SHA256 = "9277fb7e4b616857af7c74cdba14fe10b58cace2daae21fd5c7a270f8dcde106"
_BUILTIN_FILE = Path(__file__).with_name("builtin") / "python-docs-3.11.txt.gz"
PYDOC_TOPICS = "builtin:pydoc_topics"
# the names --data accepts for the built-in corpora (the spelling of the old one too)
_BUILTIN_NAMES = {BUILTIN: BUILTIN, PYDOC_TOPICS: PYDOC_TOPICS, "builtin:pydoc-topics": PYDOC_TOPICS}
VOCAB = 256  # bytes: the byte model's input and output width
VAL_FRACTION = 0.1
SPLIT_RULES = ("windows", "contiguous", "blocks", "tail")
# the literature's byte corpora as shipped, recognised by their name and size (100,000,000 bytes
# each); where a published SHA-256 is known it must match too. Their rule is ``contiguous``.
_LITERATURE = {"enwik8": None, "text8": "6e890197040d37d85beb962ae1f041ff1d9a9ca8d20c7d99c85027eebf51dca7"}
_LITERATURE_BYTES = 100_000_000
HELDOUT_BLOCK = 4096
_BALANCE_ORDERS = (1, 2)  # the n-gram orders the ``windows`` rule matches the two splits on


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

    def heldout(self, part: str, rule: str = "windows", history: int | None = None) -> np.ndarray | None:
        """The ``val`` or ``test`` split of the held-out part under ``rule`` (None: ``tail`` has
        no test split). ``windows`` gives its windows as rows, (windows, ``history`` + 1) bytes, and
        needs ``history``; the other rules a 1-D array."""
        if rule not in SPLIT_RULES:
            raise ValueError(f"split rule must be one of {', '.join(SPLIT_RULES)}, got {rule!r}")
        if part not in ("val", "test"):
            raise ValueError(f"part must be val or test, got {part!r}")
        held = self.val
        if rule == "tail":
            return held if part == "val" else None
        if rule == "contiguous":
            half = len(held) // 2
            return held[:half] if part == "val" else held[half:]
        if rule == "windows":
            if history is None:
                raise ValueError("the windows rule needs the history (the windows are history + 1 bytes)")
            windows, to_val = self.matched_windows(history)
            return windows[to_val if part == "val" else ~to_val]
        block = max(1, min(HELDOUT_BLOCK, len(held) // 2))
        starts = range(0 if part == "val" else block, len(held), 2 * block)
        return np.concatenate([held[s : s + block] for s in starts])

    def matched_windows(self, history: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``windows`` rule: the held-out windows (2 * pairs, length) and, per window, whether
        it goes to validation (exactly one of each pair does). Cached per corpus and history."""
        key = (self.sha256, len(self), history)
        if key not in _MATCHED:
            held = np.asarray(self.val)
            length = history + 1 if len(held) >= 2 * (history + 1) else max(2, len(held) // 2)
            pairs = len(held) // length // 2
            windows = held[: 2 * pairs * length].reshape(2 * pairs, length)
            scores = np.stack([nll.mean(axis=1) for nll in _ngram_nll(self.train, windows, _BALANCE_ORDERS).values()])
            _MATCHED[key] = windows, _match_pairs(scores)
        return _MATCHED[key]

    def describe(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "bytes": len(self)}


_MATCHED: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _match_pairs(scores: np.ndarray) -> np.ndarray:
    """For windows scored (orders, 2 * pairs), whether each goes to validation: in pair order,
    the assignment that keeps the running sum of (test - validation) scores nearest zero."""
    running = np.zeros(scores.shape[0])
    to_val = np.zeros(scores.shape[1], dtype=bool)
    for j in range(scores.shape[1] // 2):
        d = scores[:, 2 * j + 1] - scores[:, 2 * j]  # test - val if the first window validates
        first = np.sum((running + d) ** 2) <= np.sum((running - d) ** 2)
        running += d if first else -d
        to_val[2 * j if first else 2 * j + 1] = True
    return to_val


@functools.lru_cache(maxsize=1)
def builtin_bytes() -> bytes:
    """The built-in corpus's bytes (:data:`BUILTIN`), checked against :data:`BUILTIN_SHA256`;
    read once per process (about 50 ms: gzip and the digest)."""
    try:
        raw = gzip.decompress(_BUILTIN_FILE.read_bytes())
    except (OSError, EOFError) as e:
        raise DataError(f"{_BUILTIN_FILE}: cannot read the built-in corpus ({e.__class__.__name__}: {e}); "
                        "reinstall gatedrnn") from None
    sha = hashlib.sha256(raw).hexdigest()
    if sha != BUILTIN_SHA256:
        raise DataError(f"{_BUILTIN_FILE}: the built-in corpus is damaged (sha256 {sha}, expected "
                        f"{BUILTIN_SHA256}); reinstall gatedrnn")
    return raw


def _pydoc_topics_bytes() -> bytes:
    """:data:`PYDOC_TOPICS`: the running interpreter's documentation topics (they differ
    between CPython builds)."""
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
    """Load a corpus file, or a built-in corpus by its name (``builtin:python-docs``, the
    default when ``path`` is None; ``builtin:pydoc_topics``), as uint8 bytes."""
    name = BUILTIN if path is None else _BUILTIN_NAMES.get(str(path))
    if name == BUILTIN:
        return Corpus(BUILTIN, None, BUILTIN_SHA256, np.frombuffer(builtin_bytes(), dtype=np.uint8))
    if name == PYDOC_TOPICS:
        raw = _pydoc_topics_bytes()
        return Corpus(PYDOC_TOPICS, None, hashlib.sha256(raw).hexdigest(), np.frombuffer(raw, dtype=np.uint8))
    if str(path).startswith("builtin:"):
        raise DataError(f"{path}: no such built-in corpus (the built-in corpora: {BUILTIN}, {PYDOC_TOPICS})")
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such corpus file")
    if not p.is_file():
        raise DataError(f"{p}: the corpus is not a file")
    data, sha = _read_file(p)
    if len(data) == 0:
        raise DataError(f"{p}: the corpus is empty")
    return Corpus(p.name, str(p.resolve()), sha, data)


def folder_data(data: str | None, sha256: str | None) -> str | None:
    """The ``--data`` a results folder's runs read, from its recorded ``data`` and ``dataset
    sha256``: a folder that recorded no ``data`` and a digest other than the built-in corpus's
    was made on :data:`PYDOC_TOPICS` (the default before issue 39)."""
    if data is None and isinstance(sha256, str) and sha256 != BUILTIN_SHA256:
        return PYDOC_TOPICS
    return data


def literature_split(corpus: Corpus) -> str | None:
    """``contiguous`` for enwik8 or text8 as shipped (their name and 100,000,000 bytes, and the
    published SHA-256 where one is known), else None."""
    stem = corpus.name.split(".")[0]
    if stem in _LITERATURE and len(corpus) == _LITERATURE_BYTES and _LITERATURE[stem] in (None, corpus.sha256):
        return "contiguous"
    return None


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
    bytes, spread evenly over the held-out split: a split of windows (2-D, one per row: the
    ``windows`` rule) gives whole rows, a 1-D split slices of it. Returns (length + 1, streams)
    uint8."""
    if val.ndim == 2:
        rows = val.shape[0]
        streams = max(1, min(max_streams, rows))
        pick = np.linspace(0, rows - 1, streams).round().astype(np.int64) if streams > 1 else np.zeros(1, np.int64)
        return np.ascontiguousarray(np.asarray(val)[pick, : history + 1].T)
    length = min(history, len(val) - 1)
    streams = max(1, min(max_streams, (len(val) - 1) // length))
    last_start = len(val) - 1 - length
    starts = np.linspace(0, last_start, streams).astype(np.int64) if streams > 1 else np.zeros(1, np.int64)
    idx = starts[None, :] + np.arange(length + 1)[:, None]
    return np.asarray(val)[idx]


def ngram_cross_entropies(corpus: Corpus, orders=(1, 2, 3), prior: float = 1.0,
                          heldout: np.ndarray | None = None) -> dict[int, float]:
    """Held-out cross-entropy (nats per byte) of byte n-gram models fitted on the training split.

    Order k predicts a byte from the k - 1 bytes before it. Each order is smoothed towards the
    order below with a Dirichlet prior of strength ``prior`` (order 1 towards uniform):
    ``p_k(c | ctx) = (count(ctx c) + prior * p_{k-1}(c | ctx')) / (count(ctx) + prior)``.
    ``heldout``: the bytes scored (default: the whole held-out part), 1-D or one window per row
    (no context crosses from one row to the next), e.g. ``corpus.heldout("val", rule, history)``.
    """
    held = np.asarray(corpus.val if heldout is None else heldout)
    rows = held.reshape(1, -1) if held.ndim == 1 else held
    return {k: float(nll.mean()) for k, nll in _ngram_nll(corpus.train, rows, orders, prior).items()}


def _ngram_nll(train: np.ndarray, rows: np.ndarray, orders=(1, 2, 3), prior: float = 1.0) -> dict[int, np.ndarray]:
    """-log p of every byte of ``rows`` (R, L) from position max(orders) - 1 of its row on,
    under each order of :func:`ngram_cross_entropies`' models: {order: (R, L - max + 1)}."""
    train = np.asarray(train)
    rows = np.asarray(rows, dtype=np.int64)
    top = max(orders)
    length = rows.shape[1]
    out: dict[int, np.ndarray] = {}
    p_lower = np.full((rows.shape[0], length - top + 1), 1.0 / 256)
    for k in range(1, top + 1):
        counts = _gram_counts(train, k)
        ctx_counts = counts.reshape(256 ** (k - 1), 256).sum(axis=1)
        grams = np.zeros(p_lower.shape, dtype=np.int64)
        for j in range(k):  # byte i - k + 1 + j of each target position i
            grams = grams * 256 + rows[:, top - k + j: length - k + 1 + j]
        p = (counts[grams] + prior * p_lower) / (ctx_counts[grams // 256] + prior)
        if k in orders:
            out[k] = -np.log(p)
        p_lower = p
    return out


def _gram_counts(train: np.ndarray, k: int, chunk: int = 1 << 24) -> np.ndarray:
    """Counts of every k-gram of ``train`` (256 ** k bins), in chunks so that a corpus of
    hundreds of MB needs no gram array of its own size."""
    counts = np.zeros(256 ** k, dtype=np.int64)
    n = len(train) - k + 1
    for start in range(0, max(n, 0), chunk):
        stop = min(n, start + chunk)
        grams = np.zeros(stop - start, dtype=np.int64)
        for j in range(k):
            grams = grams * 256 + train[start + j: stop + j]
        counts += np.bincount(grams, minlength=256 ** k)
    return counts


def sweep_data(data: str | None, tasks: set[str], history: int) -> tuple[Corpus | None, str]:
    """What a sweep reads from ``--data``, and its identity (recorded with the folder's settings):
    the corpus (checked for ``history``) for next-byte prediction and the generated tasks, or
    MNIST (:mod:`gatedrnn.data.mnist`) for a sweep of ``smnist``, whose corpus is then None. One
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
