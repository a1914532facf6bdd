"""Enumerate the sweep's grid and merge it into ``rnn_configs.json``.

The default grid (DESIGN.md): every combination of the seven switches except those with neither
``use_new_state`` nor ``use_old_state``, times ``n_layers`` in {1, 2, 3}, times ``state_size`` in
{32, 256}, leaving out ``state_size`` < 256 without ``use_residual``: 432 configurations.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import filelock

from ._atomic import atomic_write_bytes
from .config import CELLS, READOUTS, SWITCHES, TASK_KEYS, TASKS, RNNConfig

__all__ = [
    "ConfigFileError",
    "default_grid",
    "read_configs",
    "merge_configs",
    "refine",
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


def read_configs(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read and validate a configuration list; raises :class:`ConfigFileError` naming the
    file and the entry at fault. Returns the entries as written (each with its ``id``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
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
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        try:
            config = RNNConfig.from_dict(entry)
        except (TypeError, ValueError) as e:
            raise ConfigFileError(f"{path}: entry {i}: {e}") from None
        if "id" not in entry:
            raise ConfigFileError(f"{path}: entry {i}: missing 'id' (expected {config.id})")
        if config.id in seen:
            raise ConfigFileError(f"{path}: entry {i} repeats entry {seen[config.id]} (id {config.id})")
        seen[config.id] = i
    return entries


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
            atomic_write_bytes(path, _render(entries))
    return added, len(entries)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _best(results: "Any", metric: str) -> "Any":
    df = results
    if "status" in df:
        df = df[df["status"].isna() | (df["status"] == "done")]
    return df[df[metric].notna()].sort_values(metric, kind="stable")


def _architecture(row: "Any", **changes: Any) -> RNNConfig:
    """The configuration of a results row without its seed (a first stage's swept seed is not
    carried over), with ``changes``."""
    from .results import config_of

    config = {k: v for k, v in config_of(row).items() if not _missing(v)}
    return RNNConfig.from_dict({**config, **changes})


def refine(results: "Any", top: float, state_size: int = 512, min_layers: int = 3,
           metric: str = "min loss") -> list[RNNConfig]:
    """Second-stage configurations: the best ``top`` fraction of the rows of ``results`` (finished
    runs, or configurations with their mean, by ``metric``), each with ``state_size`` and at
    least ``min_layers`` layers."""
    if not 0 < top <= 1:
        raise ValueError(f"--top must be in (0, 1], got {top}")
    df = _best(results, metric)
    if df.empty:
        return []
    out, seen = [], set()
    for _, row in df.head(max(1, math.ceil(top * len(df)))).iterrows():
        config = _architecture(row, n_layers=max(int(row["n_layers"]), min_layers), state_size=state_size)
        if config.id not in seen:
            seen.add(config.id)
            out.append(config)
    return out


def replicate(results: "Any", top: int, seeds: Sequence[int], metric: str = "min loss") -> list[RNNConfig]:
    """The original study's third stage: the ``top`` best configurations of ``results`` (rows
    of configurations, or of runs, by ``metric``; a configuration counts once), each once per
    seed of ``seeds``."""
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"--top must be a whole number of configurations >= 1 with --replicate-from, got {top}")
    if not seeds:
        raise ValueError("--replicate-from needs --seeds")
    out, seen = [], []
    for _, row in _best(results, metric).iterrows():
        config = _architecture(row)
        if config.id in seen:
            continue
        seen.append(config.id)
        out += [_architecture(row, seed=int(s)) for s in seeds]
        if len(seen) == top:
            break
    return out


def replicate_seeds(results: "Any", seeds: Sequence[int] | None, replicates: int, allow_reuse: bool,
                    source: str) -> dict[str, Any]:
    """The replicate stage's seeds: ``seeds`` (ValueError, naming them, where the selecting
    stage's runs ``results`` used one, unless ``allow_reuse``), or the ``replicates`` smallest
    seeds that none of its runs used. Returns ``seeds``, ``selection seeds`` and ``reused``."""
    used = sorted({int(s) for s in results["seed"].dropna()}) if "seed" in results else []
    if not used and len(results):
        used = [0]  # results without a seed trained with the default one
    if seeds is None:
        if replicates < 1:
            raise ValueError(f"--replicates must be at least 1, got {replicates}")
        seeds = [s for s in range(max(used, default=0) + replicates + 1) if s not in used][:replicates]
    else:
        seeds = list(dict.fromkeys(seeds))
    reused = [s for s in seeds if s in used]
    if reused and not allow_reuse:
        raise ValueError(f"--seeds {' '.join(map(str, reused))}: used by the selecting stage in {source} (its runs "
                         f"have seeds {' '.join(map(str, used))}); an estimate on a seed that selected is biased: "
                         "choose others (omit --seeds for fresh ones) or pass --allow-seed-reuse")
    return {"selection seeds": used, "seeds": seeds, "reused": reused}


def next_stage(source: str, refining: bool, top: float | None, seeds: Sequence[int] | None, replicates: int,
               allow_reuse: bool) -> tuple[list[RNNConfig], dict[str, Any] | None, int, str]:
    """A stage chosen from the results in ``source`` by mean val loss (with a swept lr, each
    configuration at its best rate, :func:`gatedrnn.tuning.tune`): ``refine`` (``top``: the
    fraction, 0.1) or ``replicate`` (``top``: how many, 10; on :func:`replicate_seeds`). Returns
    the configurations, the replicate stage's record (None for refine), how many configurations
    were ranked, and the metric."""
    from .folder import ResultsFolder
    from .results import load
    from .stats import rank_configurations

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = load(source)
    ranked, metric = rank_configurations(df)
    if len(ranked):  # a swept lr: each configuration once, at its best rate
        from .tuning import tune

        tuned = tune(df[(df["status"] == "done") & df[metric].notna()], metric)
        if tuned is not None:
            ranked = ranked[ranked["config id"].isin(set(tuned.chosen))].reset_index(drop=True)
    stage = None
    if refining:
        configs = refine(ranked, 0.1 if top is None else top, metric=metric) if len(ranked) else []
    else:
        top = 10 if top is None else top
        if top != int(top):
            raise ValueError(f"--top must be a whole number of configurations with --replicate-from, got {top:g}")
        stage = replicate_seeds(df, seeds, replicates, allow_reuse, source)
        configs = replicate(ranked, int(top), stage["seeds"], metric=metric) if len(ranked) else []
        earlier = ResultsFolder(source).read_stage()
        stage.update({"stage": "replicate", "selected from": str(Path(source).resolve()), "selected by": metric,
                      "selected in": (earlier or {}).get("selected from"),
                      "configurations": len(configs) // max(1, len(stage["seeds"]))})
    if not configs:
        raise ValueError(f"{source}: no finished runs to take configurations from")
    return configs, stage, len(ranked), metric
