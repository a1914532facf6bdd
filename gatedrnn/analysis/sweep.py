"""A results folder as ``examine`` reads it, once (issue 34; STYLE 17): its runs and the notes on
files it skipped, its configuration file's configurations with their counts and running claims,
its recorded settings, its stage and the rungs of successive halving. Everything below ``examine``
is handed this object (or what it holds) instead of the folder's path. No torch."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..spec.grid import ConfigFileError, read_configs
from ..store.folder import ResultsFolder
from ..store.status import sweep_status
from .results import ResultsError, load
from .rungs import Rungs, rungs_of

__all__ = ["Sweep"]


@dataclass
class Sweep:
    folder: ResultsFolder
    runs: pd.DataFrame  # every result file, one row per run (where each run ended)
    messages: list[str]  # notes for the summary: files skipped, a configuration file missing
    configs: list[dict[str, Any]] | None  # the sweep's configuration file (None: none readable)
    counts: dict[str, int] | None  # by status, over ``configs``
    running: set[str]  # ids with a claim not known to be stale
    settings: dict[str, Any] | None  # as the folder recorded them on first use
    stage: dict[str, Any] | None  # how its configurations were chosen (a replicate stage)
    rungs: Rungs | None  # successive halving

    @classmethod
    def open(cls, results_dir: str | os.PathLike, config_file: str | os.PathLike | None = None) -> "Sweep":
        """Read the folder (ResultsError if there is none). ``config_file``: the sweep's
        configuration list; None: the one its launcher recorded (never a file that merely sits in
        the working directory)."""
        folder = ResultsFolder(results_dir)
        if not folder.root.is_dir():
            raise ResultsError(f"{folder.root}: no such results folder" if not folder.root.exists()
                               else f"{folder.root}: not a folder")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            runs = load(folder)
        messages = [str(w.message) for w in caught]
        settings = folder.read_settings()
        settings = settings if isinstance(settings, dict) else None
        configs = _configs(folder, config_file, messages)
        counts, running = None, set()
        if configs is not None:
            snap = sweep_status(folder, configs)
            counts, running = snap["counts"], {r["id"] for r in snap["running"]}
        return cls(folder, runs, messages, configs, counts, running, settings, folder.read_stage(),
                   rungs_of(folder, settings))

    def analysed(self) -> pd.DataFrame:
        """The runs the analysis ranks and compares: with successive halving, every configuration
        as it was at the first rung (where they all are); else every run as it ended."""
        return self.rungs.first_rung(self.runs) if self.rungs is not None else self.runs


def _configs(folder: ResultsFolder, config_file: str | os.PathLike | None, messages: list[str]) -> list[dict] | None:
    path = Path(config_file) if config_file is not None else folder.read_config_file_record()
    if path is None:
        return None
    if not path.exists():
        messages.append(f"{path}: no such configuration file (status from it left out)")
        return None
    try:
        return read_configs(path)
    except ConfigFileError as e:
        messages.append(f"{e} (status from the configuration file left out)")
        return None
