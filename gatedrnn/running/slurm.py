"""Run the sweep's workers as a Slurm job array, through submitit.

Every array task runs the ordinary worker loop (:func:`gatedrnn.running.worker.serve`) over the
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
the main thread, never interrupt a training step half-way. This module imports the worker (and
so torch) only when a task runs, not when submitit unpickles the task: submitit installs its
signal handler after the unpickling, and a USR2 that Slurm sends during a slow import would
kill the task instead of requeueing it.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from typing import TYPE_CHECKING

from ..store.folder import ResultsFolder

if TYPE_CHECKING:
    from .options import WorkerOptions

__all__ = ["SlurmWorker", "SlurmParams", "submit", "run_array", "parse_extra", "ArrayWatch"]

MAX_REQUEUES = 1000


@dataclass
class SlurmParams:
    """What each array task asks Slurm for."""

    partition: str | None = None
    gpus_per_worker: int = 0
    cpus_per_worker: int = 1
    mem_per_worker_gb: float | None = None
    time_minutes: int = 60
    signal_delay_seconds: int = 90
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cpus_per_worker < 1 or self.time_minutes < 1:
            raise ValueError("--cpus-per-worker and --time-minutes must be >= 1")
        if self.gpus_per_worker < 0 or self.signal_delay_seconds < 0:
            raise ValueError("--gpus-per-worker and --signal-delay-seconds must be >= 0")


class SlurmWorker:
    """The callable each array task runs: pickled by submitit with the worker's options as data
    (:meth:`WorkerOptions.to_dict`), never as an argument list."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = dict(options)
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._code: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["options"])

    def __call__(self, task: int) -> int:
        job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID", "?")
        name = f"{os.uname().nodename}-slurm{job}_{os.environ.get('SLURM_ARRAY_TASK_ID', task)}"
        self._stop = threading.Event()
        stop = self._stop

        def on_term(signum, _frame):  # scancel: checkpoint, release, exit (submitit ignores SIGTERM)
            print(f"{signal.Signals(signum).name}: stopping the worker", flush=True)
            stop.set()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        from .options import WorkerOptions

        options = dataclasses.replace(WorkerOptions.from_dict(self.options), name=name, stop=stop)

        def body():
            from .worker import serve

            self._code = serve(options)

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
        return submitit.helpers.DelayedSubmission(SlurmWorker(self.options), *args, **kwargs)


def parse_extra(items: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` pairs of ``--slurm-extra`` into sbatch options."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--slurm-extra expects KEY=VALUE, got {item!r}")
        out[key.strip().lstrip("-").replace("-", "_")] = value
    return out


def submit(options: "WorkerOptions", workers: int, params: SlurmParams) -> list:
    """Submit ``workers`` array tasks running the worker loop; returns submitit's jobs."""
    try:
        import submitit
    except ImportError:
        raise ValueError("--slurm needs submitit: pip install 'gatedrnn[slurm]'") from None
    folder = ResultsFolder(options.results_dir).slurm.resolve() / "%j"
    # a worker checkpoints and resumes any number of times: no cap on requeues after time-outs
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=MAX_REQUEUES)
    kw: dict[str, Any] = dict(timeout_min=params.time_minutes, cpus_per_task=params.cpus_per_worker, nodes=1,
                              tasks_per_node=1, name="gatedrnn", slurm_array_parallelism=workers,
                              slurm_signal_delay_s=params.signal_delay_seconds)
    if params.partition:
        kw["slurm_partition"] = params.partition
    if params.gpus_per_worker:
        kw["gpus_per_node"] = params.gpus_per_worker
    if params.mem_per_worker_gb:
        kw["mem_gb"] = params.mem_per_worker_gb
    if params.extra:
        kw["slurm_additional_parameters"] = dict(params.extra)
    executor.update_parameters(**kw)
    # each task carries the same worker options; the task index names it
    return executor.map_array(SlurmWorker(options.resolved(stop=None).to_dict()), list(range(workers)))


def run_array(options: "WorkerOptions", workers: int, params: SlurmParams, wait: bool = False) -> int:
    """Submit the array, say where its logs go, and (``wait``) show progress until it ends."""
    from .launcher import exit_status, watch
    from .options import EXIT_BAD_INPUT, EXIT_OK

    options = dataclasses.replace(options, workers=workers,
                                  threads=options.threads if options.threads is not None else params.cpus_per_worker)
    try:
        jobs = submit(options, workers, params)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:  # sbatch refused: say what it said, on one line
        print(f"error: Slurm submission failed: {' '.join(str(e).split())[:500]}", file=sys.stderr)
        return EXIT_BAD_INPUT
    array = jobs[0].job_id.split("_")[0]
    print(f"submitted Slurm job array {array} with {len(jobs)} worker(s); logs in "
          f"{ResultsFolder(options.results_dir).slurm.resolve()}", flush=True)
    if not wait:
        print(f"follow it with: squeue -j {array}   or rerun with --wait", flush=True)
        return EXIT_OK
    return exit_status(watch(options, ArrayWatch(jobs)))


class ArrayWatch:
    """``watch()`` is True while any task of the array is pending, running or being requeued.

    It asks squeue (submitit's cached job state can stay UNKNOWN or stale across requeues), and
    calls the array ended only after it has been absent from squeue, with no task that
    accounting (sacct, latest instance of each task) calls alive, for ``grace`` seconds: a task
    being requeued leaves the queue for a moment between completing and pending again.
    """

    def __init__(self, jobs: list, grace: float = 10.0) -> None:
        self.arrays = sorted({str(job.job_id).split("_")[0] for job in jobs})
        self.grace = grace
        self.last_seen = time.monotonic()

    def __call__(self) -> bool:
        if self._in_squeue() or self._requeued():
            self.last_seen = time.monotonic()
        return time.monotonic() - self.last_seen < self.grace

    def _in_squeue(self) -> bool:
        try:
            out = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(self.arrays)], capture_output=True,
                                 text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return True  # cannot tell: keep watching
        return out.returncode != 0 and "Invalid job id" not in out.stderr or bool(out.stdout.strip())

    def _requeued(self) -> bool:
        """Whether accounting still sees a task of the array alive (a requeued task can be absent
        from squeue for a moment, or held there under another state)."""
        try:
            out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", ",".join(self.arrays)],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return False
        alive = ("PENDING", "REQUEUED", "RUNNING", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED",
                 "CONFIGURING", "COMPLETING")
        return out.returncode == 0 and any(line.split()[0] in alive for line in out.stdout.splitlines() if line.split())

