"""MNIST from the user's own copy, for the sequential-MNIST task ``smnist`` (:mod:`gatedrnn.data.tasks`).

Never downloaded: ``--data`` names either a folder holding the four IDX files as distributed
(``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``, each gzipped (``.gz``) or not; ``-idx3-ubyte`` or ``.idx3-ubyte``), or
the ``.npz`` that Keras writes (``x_train``, ``y_train``, ``x_test``, ``y_test``). Anything
missing or malformed is one :class:`MnistError` line naming the path. numpy only.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Mnist", "MnistError", "load_mnist", "IDX_NAMES"]

IDX_NAMES = {"train images": "train-images-idx3-ubyte", "train labels": "train-labels-idx1-ubyte",
             "test images": "t10k-images-idx3-ubyte", "test labels": "t10k-labels-idx1-ubyte"}
_MAGIC = {3: 0x00000803, 1: 0x00000801}  # unsigned bytes, 3 dimensions (images) or 1 (labels)


class MnistError(ValueError):
    """MNIST cannot be read from the path given: missing, of another format, or malformed."""


@dataclass(frozen=True)
class Mnist:
    train_images: np.ndarray  # (N, 784) uint8
    train_labels: np.ndarray  # (N,) uint8, 0..9
    test_images: np.ndarray
    test_labels: np.ndarray
    sha256: str  # of the arrays: the same data in either format has one identity


def _idx(path: Path, dims: int) -> np.ndarray:
    """One IDX file (gzipped or not) as an array of ``dims`` dimensions."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise MnistError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from None
    header = 4 + 4 * dims
    if len(raw) < header or int.from_bytes(raw[:4], "big") != _MAGIC[dims]:
        raise MnistError(f"{path}: not an IDX file of {dims}-dimensional unsigned bytes")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    if len(raw) != header + int(np.prod(shape)):
        raise MnistError(f"{path}: {len(raw) - header} bytes of data, its header says {int(np.prod(shape))}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(folder: Path, name: str) -> Path:
    for candidate in (name, name + ".gz", name.replace("-idx", ".idx"), name.replace("-idx", ".idx") + ".gz"):
        if (folder / candidate).is_file():
            return folder / candidate
    raise MnistError(f"{folder}: no {name} (or {name}.gz) in this folder")


def _from_folder(folder: Path) -> tuple[np.ndarray, ...]:
    return tuple(_idx(_find(folder, IDX_NAMES[part]), 3 if "images" in part else 1) for part in IDX_NAMES)


def _from_npz(path: Path) -> tuple[np.ndarray, ...]:
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in f.files]
            if missing:
                raise MnistError(f"{path}: no {missing[0]!r} in this .npz (Keras's mnist.npz has x_train, y_train, "
                                 "x_test, y_test)")
            return tuple(np.asarray(f[k]) for k in ("x_train", "y_train", "x_test", "y_test"))
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        if isinstance(e, MnistError):
            raise
        raise MnistError(f"{path}: cannot read as .npz ({e.__class__.__name__}: {e})") from None


def load_mnist(path: str | os.PathLike | None) -> Mnist:
    """MNIST from ``path`` (a folder of IDX files or a Keras .npz); MnistError otherwise."""
    if path is None:
        raise MnistError("the smnist task reads MNIST from --data (a folder with the four IDX files, or Keras's "
                         "mnist.npz); none was given, and nothing is ever downloaded")
    p = Path(path).resolve()
    if not p.exists():
        raise MnistError(f"{path}: no such file or folder (smnist reads MNIST from a local copy)")
    return _load(str(p), p.stat().st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _load(path: str, mtime: int) -> Mnist:
    p = Path(path)
    parts = _from_folder(p) if p.is_dir() else _from_npz(p)
    x_train, y_train, x_test, y_test = parts
    for name, x, y in (("training", x_train, y_train), ("test", x_test, y_test)):
        if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype != np.uint8:
            raise MnistError(f"{path}: the {name} images are {x.dtype} {x.shape}, not N x 28 x 28 unsigned bytes")
        if y.ndim != 1 or len(y) != len(x) or len(y) == 0 or y.min() < 0 or y.max() > 9:
            raise MnistError(f"{path}: the {name} labels do not match the images ({len(y)} labels, {len(x)} images, "
                             "classes 0-9)")
    if len(x_train) < 2:
        raise MnistError(f"{path}: {len(x_train)} training image(s): at least 2 are needed (one to train, one held out)")
    digest = hashlib.sha256()
    for a in parts:
        digest.update(np.ascontiguousarray(a, dtype=np.uint8).tobytes())
    return Mnist(x_train.reshape(len(x_train), 784), y_train.astype(np.uint8), x_test.reshape(len(x_test), 784),
                 y_test.astype(np.uint8), digest.hexdigest())
