"""Run the sweep's workers as a Slurm job array, through submitit.

Every array task runs the ordinary worker loop (:func:`gatedrnn.worker.run_worker`) over the
shared results folder: it claims, trains, checkpoints and completes exactly as on one machine,
so local and Slurm workers can share a results folder. Nothing home-made sits between the queue
and the scheduler: submitit writes the job, submits the array, and handles the time-limit and
preemption signal.

Time limit and preemption: Slurm sends USR2 ``--signal-delay-seconds`` before the time limit
(and on preemption, where the cluster is configured to). submitit's handler calls
:meth:`SlurmWorker.checkpoint`, which asks the worker to stop; the worker checkpoints at its next
step and releases its claim; submitit then requeues the task, and the requeued task claims the
configuration again and resumes from the checkpoint. A sweep longer than the partition's time
limit so finishes by itself (submitit's cap on requeues after time-outs is raised to
``MAX_REQUEUES``).

``scancel``: Slurm sends SIGTERM (the worker checkpoints and releases its claim) and, after
``KillWait``, SIGKILL (the claim goes stale at once on that host's next contender, or after the
lease elsewhere); a later run, local or Slurm, resumes the configurations.

The worker loop runs in a thread of its own so that the signal handlers, which Python runs in
the main thread, never interrupt a training step half-way.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

__all__ = ["SlurmWorker", "submit", "parse_extra", "ArrayWatch"]

MAX_REQUEUES = 1000


class SlurmWorker:
    """The callable each array task runs (pickled by submitit with the worker's arguments)."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._code: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"argv": self.argv}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["argv"])

    def __call__(self, task: int) -> int:
        from .worker import main

        job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID", "?")
        name = f"{os.uname().nodename}-slurm{job}_{os.environ.get('SLURM_ARRAY_TASK_ID', task)}"
        self._stop = threading.Event()
        stop = self._stop

        def on_term(signum, _frame):  # scancel: checkpoint, release, exit (submitit ignores SIGTERM)
            print(f"{signal.Signals(signum).name}: stopping the worker", flush=True)
            stop.set()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)

        def body():
            self._code = main(["--as-worker", "--worker-name", name, *self.argv], stop_event=stop)

        self._thread = threading.Thread(target=body, name="gatedrnn-worker")
        self._thread.start()
        while self._thread.is_alive():
            self._thread.join(0.5)  # wakes up, so that signal handlers run promptly
        if self._code not in (0, 3):
            raise RuntimeError(f"worker {name} exited with status {self._code}")
        return int(self._code)

    def checkpoint(self, *args: Any, **kwargs: Any):
        """submitit's hook on USR2: stop the worker (it checkpoints at the next step and releases
        its claim), then return the same work to be requeued."""
        import submitit

        if self._stop is not None:
            print("time limit or preemption: checkpointing and requeueing", flush=True)
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=300)
        return submitit.helpers.DelayedSubmission(SlurmWorker(self.argv), *args, **kwargs)


def parse_extra(items: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` pairs of ``--slurm-extra`` into sbatch options."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--slurm-extra expects KEY=VALUE, got {item!r}")
        out[key.strip().lstrip("-").replace("-", "_")] = value
    return out


def submit(worker_argv: Sequence[str], results_dir: str, workers: int, *, partition: str | None = None,
           gpus_per_worker: int = 0, cpus_per_worker: int = 1, mem_per_worker_gb: float | None = None,
           time_minutes: int = 60, signal_delay_seconds: int = 90, extra: dict[str, str] | None = None) -> list:
    """Submit ``workers`` array tasks running the worker loop; returns submitit's jobs."""
    try:
        import submitit
    except ImportError:
        raise ValueError("--slurm needs submitit: pip install 'gatedrnn[slurm]'") from None
    folder = Path(results_dir).resolve() / ".queue" / "slurm" / "%j"
    # a worker checkpoints and resumes any number of times: no cap on requeues after time-outs
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=MAX_REQUEUES)
    params: dict[str, Any] = dict(timeout_min=time_minutes, cpus_per_task=cpus_per_worker, nodes=1,
                                  tasks_per_node=1, name="gatedrnn", slurm_array_parallelism=workers,
                                  slurm_signal_delay_s=signal_delay_seconds)
    if partition:
        params["slurm_partition"] = partition
    if gpus_per_worker:
        params["gpus_per_node"] = gpus_per_worker
    if mem_per_worker_gb:
        params["mem_gb"] = mem_per_worker_gb
    if extra:
        params["slurm_additional_parameters"] = dict(extra)
    executor.update_parameters(**params)
    # each task carries the same worker arguments; the task index names it
    return executor.map_array(SlurmWorker(list(worker_argv)), list(range(workers)))


class ArrayWatch:
    """``watch()`` is True while any task of the array is pending, running or being requeued.

    It asks squeue (submitit's cached job state can stay UNKNOWN or stale across requeues), and
    calls the array ended only after it has been absent from squeue for ``grace`` seconds: a
    task being requeued leaves the queue for a moment between completing and pending again.
    """

    def __init__(self, jobs: list, grace: float = 10.0) -> None:
        self.arrays = sorted({str(job.job_id).split("_")[0] for job in jobs})
        self.grace = grace
        self.last_seen = time.monotonic()

    def __call__(self) -> bool:
        import subprocess

        try:
            out = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(self.arrays)], capture_output=True,
                                 text=True, timeout=60)
            seen = out.returncode != 0 and "Invalid job id" not in out.stderr or bool(out.stdout.strip())
        except (OSError, subprocess.TimeoutExpired):
            seen = True  # cannot tell: keep watching
        if seen:
            self.last_seen = time.monotonic()
        return time.monotonic() - self.last_seen < self.grace
