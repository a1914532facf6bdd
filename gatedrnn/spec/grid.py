"""Enumerate the sweep's grid and merge it into ``rnn_configs.json``.

The default grid (DESIGN.md): every combination of the seven switches except those with neither
``use_new_state`` nor ``use_old_state``, times ``n_layers`` in {1, 2, 3}, times ``state_size`` in
{32, 256}, leaving out ``state_size`` < 256 without ``use_residual``: 432 configurations.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import filelock

from .._version import __version__
from .atomic import atomic_write_bytes, atomic_write_json
from .config import CELLS, READOUTS, SWITCHES, TASK_KEYS, TASKS, RNNConfig, config_id

__all__ = [
    "ConfigFileError",
    "default_grid",
    "numbered_configs",
    "read_configs",
    "checked_path",
    "merge_configs",
    "DEFAULT_STATE_SIZES",
    "DEFAULT_LAYERS",
]

DEFAULT_STATE_SIZES = (32, 256)
DEFAULT_LAYERS = (1, 2, 3)
VOCAB = 256


class ConfigFileError(ValueError):
    """``rnn_configs.json`` cannot be used as it is; the message names the file and the entry."""


def default_grid(
    state_sizes: Sequence[int] = DEFAULT_STATE_SIZES,
    layers: Sequence[int] = DEFAULT_LAYERS,
    seeds: Sequence[int] | None = None,
    cells: Sequence[str] = ("gated",),
    bptt: Sequence[int] = (1,),
    tasks: Sequence[str] = ("bytes",),
    task_keys: dict[str, Sequence[int]] | None = None,
    lrs: Sequence[float] | None = None,
    input_inits: Sequence[str] | None = None,
) -> list[RNNConfig]:
    """The grid, in a fixed order: seeds outermost, then learning rates (``lrs``: each
    configuration's ``lr`` key; None: no key, the training setting applies), then input maps
    (``input_inits``: each configuration's ``input_init`` key where it applies, see
    :attr:`RNNConfig.has_input_map_choice`; a configuration it does not apply to enters once,
    without the key), then tasks (each
    crossed with the values of its keys in ``task_keys``, its defaults for the others),
    truncation, cells, switches, layers, state sizes. The gated cell's rule (a state smaller than the vocabulary needs the residual
    path) applies to it alone, and to every task, so that each task sweeps the same
    architectures; ``esn`` enters once per readout (sgd, ridge; the ridge readout only with
    ``bptt`` 1, as nothing in it is trained by gradient). A configuration that a task refuses
    (a delay not shorter than the sequence) raises ValueError naming it."""
    unknown = [c for c in cells if c not in CELLS]
    if unknown:
        raise ValueError(f"unknown cell {unknown[0]!r}; cells are {', '.join(CELLS)}")
    task_variants = _task_variants(tasks, task_keys or {})
    out: list[RNNConfig] = []
    for seed, lr, init, task, k in itertools.product(seeds if seeds else [None], lrs if lrs else [None],
                                                     input_inits if input_inits else [None], task_variants, bptt):
        for cell in cells:
            if cell == "gated":
                for flags in itertools.product((False, True), repeat=len(SWITCHES)):
                    sw = dict(zip(SWITCHES, flags))
                    if not (sw["use_new_state"] or sw["use_old_state"]):
                        continue
                    for n_layers in layers:
                        for size in state_sizes:
                            if size < VOCAB and not sw["use_residual"]:
                                continue  # a state smaller than the vocabulary needs the residual path
                            _add(out, dict(**sw, n_layers=n_layers, state_size=size, seed=seed, lr=lr, bptt=k,
                                           **task), init)
                continue
            variants = [{"readout": r} for r in READOUTS if not (r == "ridge" and k != 1)] if cell == "esn" else [{}]
            for variant in variants:
                for n_layers in layers:
                    for size in state_sizes:
                        _add(out, dict(cell=cell, n_layers=n_layers, state_size=size, seed=seed, lr=lr,
                                       bptt=k, **variant, **task), init)
    seen: set[str] = set()
    return [c for c in out if not (c.id in seen or seen.add(c.id))]  # an input map that does not apply: once


def _add(out: list[RNNConfig], keys: dict[str, Any], input_init: str | None) -> None:
    config = RNNConfig(**keys)
    out.append(RNNConfig(**keys, input_init=input_init) if input_init and config.has_input_map_choice else config)


def _task_variants(tasks: Sequence[str], task_keys: dict[str, Sequence[int]]) -> list[dict[str, Any]]:
    """Each task once per combination of the values given for its keys (``task_keys``; a key
    not given keeps the task's default), as RNNConfig keyword arguments. ValueError for an
    unknown task, a key no listed task has, or a combination the task refuses."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task {unknown[0]!r}; tasks are {', '.join(TASKS)}")
    for key, values in task_keys.items():
        if not any(key in TASK_KEYS[t] for t in tasks):
            owners = [t for t in TASKS if key in TASK_KEYS[t]]
            raise ValueError(f"--task-keys {key}: no listed task has it"
                             + (f" (it is a key of {', '.join(owners)})" if owners else ""))
        if not values:
            raise ValueError(f"--task-keys {key}: no values")
    out = []
    for task in dict.fromkeys(tasks):
        own = [key for key in TASK_KEYS[task] if key in task_keys]
        for values in itertools.product(*(task_keys[key] for key in own)):
            variant = {"task": task, **dict(zip(own, values))}
            try:
                RNNConfig(cell="gru", **variant)
            except (TypeError, ValueError) as e:
                given = ", ".join(f"{key}={value}" for key, value in zip(own, values)) or "its defaults"
                raise ValueError(f"task {task} with {given}: {e}") from None
            out.append(variant)
    return out


def numbered_configs(n: int) -> list[dict[str, Any]]:
    """``n`` distinct configurations (each with its id): the default grid's in order, then again
    with a ``seed`` key 1, 2, ... (for measuring the queue at sizes beyond the grid)."""
    grid = [c.to_dict() for c in default_grid()]
    out = []
    for i in range(n):
        d = dict(grid[i % len(grid)], seed=i // len(grid))
        out.append({**d, "id": config_id(d)})
    return out


_READ: dict[str, tuple[tuple, list[dict[str, Any]]]] = {}  # path -> (its stat, its entries) as last read
_CHECKED_FORMAT = 1


def checked_path(path: str | os.PathLike) -> Path:
    """Where the digest of ``path``'s last fully checked contents is kept: beside it,
    ``<name>.checked``. A later reader whose bytes have that digest (under the same gatedrnn
    version) skips checking every entry again: at 100,000 configurations the check is most of
    ``gatedrnn status``'s time (issue 41). It is a cache: missing, damaged or stale, the file is
    checked whole, as before."""
    path = Path(path)
    return path.with_name(path.name + ".checked")


def _was_checked(path: Path, digest: str) -> bool:
    try:
        rec = json.loads(checked_path(path).read_bytes())
    except (OSError, ValueError):
        return False
    return (isinstance(rec, dict) and rec.get("format") == _CHECKED_FORMAT and rec.get("sha256") == digest
            and rec.get("gatedrnn") == __version__)


def _remember_checked(path: Path, digest: str) -> None:
    try:
        atomic_write_json(checked_path(path), {"format": _CHECKED_FORMAT, "sha256": digest, "gatedrnn": __version__})
    except OSError:
        pass  # a folder this user cannot write: the next reader checks the file again


def _check_entries(path: Path, entries: list[Any]) -> None:
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        try:
            cid = RNNConfig.from_dict(entry).id
        except (TypeError, ValueError) as e:
            raise ConfigFileError(f"{path}: entry {i}: {e}") from None
        if "id" not in entry:
            raise ConfigFileError(f"{path}: entry {i}: missing 'id' (expected {cid})")
        if cid in seen:
            raise ConfigFileError(f"{path}: entry {i} repeats entry {seen[cid]} (id {cid})")
        seen[cid] = i


def read_configs(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read and validate a configuration list; raises :class:`ConfigFileError` naming the
    file and the entry at fault. Returns the entries as written (each with its ``id``).

    Each entry is checked once per content: the same file as last read in this process (by its
    stat) is not read again, and bytes whose digest :func:`checked_path` holds were checked by an
    earlier reader (this one records it after a full check)."""
    path = Path(path)
    try:
        st = path.stat()
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = _READ.get(str(path.resolve()))
        if cached is not None and cached[0] == key:
            return list(cached[1])  # the same file as last read here (by its stat): already checked
        data = path.read_bytes()
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ConfigFileError(f"{path}: no such configuration file (create it with init_experiments.py)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigFileError(f"{path}: cannot read ({e})") from None
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigFileError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if not isinstance(entries, list):
        raise ConfigFileError(f"{path}: expected a JSON list of configurations, got {type(entries).__name__}")
    digest = hashlib.sha256(data).hexdigest()
    if not _was_checked(path, digest):
        _check_entries(path, entries)
        _remember_checked(path, digest)
    _READ[str(path.resolve())] = (key, entries)
    return list(entries)


def _render(entries: list[dict[str, Any]]) -> bytes:
    # one configuration per line: diffable, and the same bytes for the same list
    lines = [json.dumps(e, sort_keys=False) for e in entries]
    return ("[\n" + ",\n".join(lines) + "\n]\n").encode("utf-8")


def merge_configs(path: str | os.PathLike, configs: Iterable[RNNConfig], lock_timeout: float = 60) -> tuple[int, int]:
    """Append the configurations not yet in ``path`` (creating it if absent), never reordering or
    dropping existing ones. Safe against concurrent writers (a lock beside the file) and against
    readers (atomic replace). A file already up to date is not rewritten. Returns (added, total)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(path) + ".lock", timeout=lock_timeout):
        entries = read_configs(path) if path.exists() else []
        known = {e["id"] for e in entries}
        added = 0
        for config in configs:
            d = config.to_dict(with_id=True)
            if d["id"] not in known:
                entries.append(d)
                known.add(d["id"])
                added += 1
        if added or not path.exists():
            data = _render(entries)
            atomic_write_bytes(path, data)
            _remember_checked(path, hashlib.sha256(data).hexdigest())  # its old entries checked, the new made here
    return added, len(entries)
