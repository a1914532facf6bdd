"""What a worker is told (no torch): :class:`WorkerOptions`, the settings a results folder
records, and the exit statuses of workers and launchers.

The launcher, the command line and Slurm tasks build and pass these as data
(:meth:`WorkerOptions.to_dict`); keeping them apart from :mod:`gatedrnn.running.worker` lets the parent
process (:mod:`gatedrnn.running.launcher`) check and start a sweep without importing torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..spec.config import TrainSettings
from ..data.corpus import DataError
from ..store.folder import FolderError
from ..spec.grid import ConfigFileError

__all__ = ["WorkerOptions", "recorded_settings", "BAD_INPUT", "EXIT_OK", "EXIT_FAILED", "EXIT_BAD_INPUT",
           "EXIT_STOPPED", "EXIT_FAULT", "EXIT_CRASH"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_STOPPED = 0, 1, 2, 3
# a worker process's own ends, which the launcher reports and turns into EXIT_STOPPED
EXIT_FAULT, EXIT_CRASH = 4, 5
# what is reported as bad input (one line, exit 2) rather than as a crash; a checkpoint made
# under other settings (gatedrnn.training.checkpoints.CheckpointMismatch) is a ValueError
BAD_INPUT = (ConfigFileError, DataError, FolderError, ValueError, TypeError)


@dataclass
class WorkerOptions:
    """Everything a worker needs, as plain data (:meth:`to_dict` / :meth:`from_dict` for JSON)."""

    config_file: str
    results_dir: str
    settings: TrainSettings
    lease_seconds: float = 120.0
    lock: str = "file"
    max_runs: int | None = None
    threads: int | None = None
    name: str | None = None
    retry_delay: float = 30.0  # before a configuration that raised is tried again (doubling)
    fault_retries: int = 5  # waits after environment faults before the worker gives up
    fault_backoff: float = 10.0  # the first such wait, in seconds (doubling)
    keep_weights: bool = True  # write each finished run's final weights under the results folder
    pack: int | None = None  # members per pack (1: no packing); None: the device's default
    workers: int = 1  # how many workers share the sweep (the default pack size splits groups among them)
    stop: Any = None  # a threading.Event that asks the worker to stop (not data: never serialised)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "stop"}
        d["settings"] = self.settings.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "WorkerOptions":
        if not isinstance(d, Mapping):
            raise TypeError(f"worker options must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)} - {"stop"}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown worker option {unknown[0]!r}")
        return cls(**{**d, "settings": TrainSettings.from_dict(d["settings"])})

    def resolved(self, **changes: Any) -> "WorkerOptions":
        """A copy with absolute paths, so that a worker started elsewhere (a Slurm task, another
        working directory) finds the same files."""
        st = self.settings
        if st.data is not None and not st.data.startswith("builtin:"):
            st = st.replace(data=str(Path(st.data).resolve()))
        return dataclasses.replace(self, config_file=str(Path(self.config_file).resolve()),
                                   results_dir=str(Path(self.results_dir).resolve()), settings=st, **changes)


def recorded_settings(settings: TrainSettings, dataset_sha256: str) -> dict[str, Any]:
    """The settings a results folder records on first use (``Queue.record_settings``)."""
    d = settings.to_dict()
    d["dataset sha256"] = dataset_sha256
    return d
