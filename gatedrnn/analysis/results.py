"""Read a results folder into pandas: ours, and the original study's result files.

A result file is any ``*.json`` in the folder holding the nine configuration keys and ``loss``.
Files that are half-written, foreign JSON or not JSON at all are skipped with a warning that
names them, so the folder can be read while workers are still writing to it.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from ..spec.config import CELL_KEYS, CELLS, CONFIG_KEYS, EXTRA_KEYS, SWITCHES, TASK_KEYS, TASKS, RNNConfig, config_id
from ..store.folder import ResultsFolder, result_problem

__all__ = ["load", "config_of", "label", "hyperparameters", "ResultsError", "SKIPPED"]

SKIPPED = "skipped"


class ResultsError(ValueError):
    """The results folder cannot be read (missing, not a folder)."""


def config_of(rec: Any) -> dict[str, Any]:
    """The configuration part of a result record (or a DataFrame row): its cell's keys."""
    get = rec.get
    cell = get("cell")
    cell = cell if isinstance(cell, str) else "gated"
    keys = (list(SWITCHES) if cell == "gated" else []) + ["n_layers", "state_size", *CELL_KEYS.get(cell, {})]
    d: dict[str, Any] = {} if cell == "gated" else {"cell": cell}
    for k in keys:
        v = get(k)
        if k in SWITCHES:
            v = bool(v)
        elif k in ("n_layers", "state_size"):
            v = int(v)
        elif hasattr(v, "item"):  # numpy scalars from a DataFrame
            v = v.item()
        d[k] = v
    task = get("task")
    if isinstance(task, str) and task != "bytes":
        d["task"] = task
        for k in TASK_KEYS.get(task, {}):
            v = get(k)
            d[k] = int(v) if v is not None else v
    bptt = get("bptt")
    if bptt is not None and not (isinstance(bptt, float) and math.isnan(bptt)) and int(bptt) != 1:
        d["bptt"] = int(bptt)
    lr = get("lr")  # a swept learning rate (the training setting's is under "settings")
    if isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr):
        d["lr"] = float(lr)
    init = get("input_init")  # a swept input map (the training setting's is under "settings")
    if isinstance(init, str):
        d["input_init"] = init
    return d


def label(row: Any) -> str:
    """A compact label: the switches' letters (I F O S N P R, '.' when off), depth, size."""
    try:
        cfg = RNNConfig.from_dict(config_of(row))
    except (TypeError, ValueError, KeyError):
        return str(row.get("id", "?"))[:12]
    text = cfg.short()
    if row.get("seed swept") is True and pd.notna(row.get("seed")):
        text += f" s{int(row['seed'])}"
    return text


def hyperparameters(df: pd.DataFrame) -> list[str]:
    """The seven switches, n_layers, state_size, and any swept extra key (seed, cell, bptt) with
    several values."""
    # a switch only where some run has the gated cell (a sweep of other cells has none)
    keys = [k for k in CONFIG_KEYS if k not in SWITCHES or (k in df and df[k].notna().any())]
    for key in ("cell", "bptt", "lr", "input_init"):
        if key in df and df[key].nunique(dropna=True) > 1:
            keys.append(key)
    swept = df[df["seed swept"] == True] if "seed swept" in df else df.iloc[:0]  # noqa: E712
    for key in (k for k in EXTRA_KEYS if k != "task"):  # tasks are analysed one at a time
        if key != "seed" and key in swept and swept[key].nunique(dropna=True) > 1 and key not in keys:
            keys.append(key)
    return keys


def _row(path: Path) -> dict[str, Any] | str:
    """The record of a result file, or the reason it is skipped."""
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except json.JSONDecodeError as e:
        return f"not valid JSON (half-written?): {e.msg} at line {e.lineno}"
    except OSError as e:
        return f"unreadable: {e.strerror or e}"
    if not isinstance(rec, dict):
        return "not a JSON object"
    cell = rec.get("cell", "gated")
    if cell not in CELLS:
        return f"unknown cell {cell!r}"
    if rec.get("task", "bytes") not in TASKS:
        return f"unknown task {rec.get('task')!r}"
    required = (*(CONFIG_KEYS if cell == "gated" else ("n_layers", "state_size")), "loss")
    missing = [k for k in required if k not in rec]
    if missing:
        return f"not a result file (no {missing[0]!r})"
    problem = result_problem(rec)
    if problem is not None:
        return problem
    rec = dict(rec)
    rec.setdefault("status", "done")  # the original study wrote only finished runs
    try:
        config = config_of(rec)
    except (TypeError, ValueError) as e:
        return f"bad configuration keys ({e})"
    # the original study's third stage: trainings 0..9 of one configuration under a "common id"
    third_stage = "common id" in rec and isinstance(rec.get("training"), int) and "seed" not in rec
    if third_stage:
        rec["seed"] = rec["training"]
    if "id" not in rec:
        rec["id"] = config_id({**config, "seed": rec["seed"]} if third_stage else config)
    # our results record the training seed always; it is a swept key only when the id includes it
    rec["seed swept"] = third_stage or ("seed" in rec and rec["id"] == config_id({**config, "seed": rec["seed"]}))
    rec["config id"] = config_id(config)  # runs that differ only in their seed share it
    # our seed fixes the data order (a block shared by every configuration); the original's
    # training index did not, so its replicates are unblocked
    rec["seed blocks"] = "seed" in rec and not third_stage
    rec["cell"] = cell
    rec.setdefault("bptt", 1)
    rec.setdefault("task", "bytes")
    rec.setdefault("task label", "bytes")
    # a memory task's held-out metrics and their chance levels, one column each
    chance = rec.get("chance") if isinstance(rec.get("chance"), dict) else {}
    for name, value in (rec.get("test metrics") or {}).items() if isinstance(rec.get("test metrics"), dict) else ():
        rec[name] = value
    for name, value in chance.items():
        rec[f"chance {name}"] = value
    if rec.get("loss kind") in chance:
        rec["chance loss"] = chance[rec["loss kind"]]
    if rec.get("min loss") is None and rec["loss"] and rec["status"] != "failed":
        finite = [v for v in rec["loss"] if isinstance(v, (int, float)) and math.isfinite(v)]
        rec["min loss"] = min(finite) if finite else None
    rec["file"] = path.name
    return rec


def load(results_dir: str | os.PathLike | ResultsFolder) -> pd.DataFrame:
    """One row per result file (one run), with the configuration keys, ``id``, ``config id``
    (the configuration without its seed: replicates share it), ``status``, ``min loss``,
    ``val loss`` (NaN where absent), ``loss`` (the curve, a list), ``seed swept`` (whether ``seed``
    is part of the configuration), ``seed blocks`` (whether the seed fixed the run's data order,
    so that runs of one seed share it) and every other key found. The original study's third-stage
    files (``common id``, ``training``) are read with ``training`` as their seed."""
    folder = results_dir.root if isinstance(results_dir, ResultsFolder) else Path(results_dir)
    if not folder.exists():
        raise ResultsError(f"{folder}: no such results folder")
    if not folder.is_dir():
        raise ResultsError(f"{folder}: not a folder")
    rows = []
    for path in (results_dir if isinstance(results_dir, ResultsFolder) else ResultsFolder(folder)).result_files():
        rec = _row(path)
        if isinstance(rec, str):
            warnings.warn(f"{path}: {SKIPPED}, {rec}", RuntimeWarning, stacklevel=2)
            continue
        rows.append(rec)
    columns = [*CONFIG_KEYS, "id", "config id", "status", "min loss", "val loss", "loss", "file"]
    df = pd.DataFrame(rows)
    for col in columns:
        if col not in df:
            df[col] = pd.Series(dtype=object if col in ("loss", "status", "id", "config id", "file") else float)
    for col in ("min loss", "val loss"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    rest = [c for c in df.columns if c not in columns]
    return df[columns + rest].reset_index(drop=True)
